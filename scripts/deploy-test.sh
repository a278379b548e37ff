#!/usr/bin/env bash
# The distributed topology (deploy/docker-compose.yml) on a real Docker engine, checked end to
# end from the host, then again after each fault:
#
#   kill one presence gateway     its clients move to the other, the count does not change
#   kill one status replica       the other answers the same count; the killed one comes back
#   stop + start PostgreSQL       while events are posted: workers fail, then catch up; every
#                                 202 counted, none twice
#   stop + start NATS             while events are posted: 503s, then 202s again; exact counts
#   cut a tracker worker off      `docker network disconnect` mid-load: the other worker takes
#                                 over; exact counts before and after it reconnects
#
# Prints a table of every check with its result and time, exits non-zero on any failure, and
# tears everything down (volumes included) unless --keep.
#
# Usage: scripts/deploy-test.sh [--no-build] [--keep]
#   --no-build   reuse the images (and target/release/switchboard) from an earlier build
#   --keep       leave the topology running (docker compose -p sbdeploytest … down -v to end it)
set -euo pipefail
cd "$(dirname "$0")/.."

build=1 keep=
for a in "$@"; do
  case "$a" in
    --no-build) build= ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 64 ;;
  esac
done

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
PROJECT=sbdeploytest
SB=target/release/switchboard
# Host ports of this test's project (127.0.0.1 only), away from the defaults a developer's own
# `docker compose up` uses, so both can run at once.
export JOBPROXY_PORT=28080 TRACKER_COLLECTOR_PORT=28090 TRACKER_API_PORT=28091 \
  PRESENCE_STATUS_PORT=25052 PRESENCE_STATUS_PORT_2=25053 CONTROL_PORT=27070
# Reports every 10 s instead of every minute, so the wsserver's verdicts come quickly.
export AGGREGATOR_INTERVAL=10s
CLIENTS=$(sed -n 's/^SWITCHBOARD_COUNT=//p' deploy/env/presence-clients.env)
BATCH=50 # events per tracker request

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f deploy/docker-compose.yml "$@"; }
now_ms() { date +%s%3N; }
since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

RESULTS=$(mktemp)
WORK=$(mktemp -d)
failures=0
teardown() {
  if [ -z "$keep" ]; then
    echo "==> tearing down (containers, network, volumes)"
    compose down -v --remove-orphans -t 30 >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap teardown EXIT

# ---- the table ------------------------------------------------------------------------------
record() { # phase check result seconds detail
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
  printf '    %-20s %-38s %-4s %7ss  %s\n' "$@"
  [ "$3" = ok ] || failures=$((failures + 1))
}
# check PHASE NAME CMD…: runs CMD, records ok/FAIL with its time and the last line it printed.
check() {
  local phase=$1 name=$2 t0 out rc=0
  shift 2
  t0=$(now_ms)
  out=$("$@" 2>&1) || rc=$?
  record "$phase" "$name" "$([ "$rc" = 0 ] && echo ok || echo FAIL)" "$(since "$t0")" \
    "$(printf '%s' "$out" | tail -n 1 | cut -c1-110)"
}
# until_ok SECONDS CMD…: retries CMD every 0.5 s until it succeeds (its output is kept).
until_ok() {
  local deadline=$(($(date +%s) + $1)) out
  shift
  while :; do
    if out=$("$@" 2>&1); then printf '%s\n' "$out"; return 0; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then printf 'timed out: %s\n' "$out"; return 1; fi
    sleep 0.5
  done
}

# ---- containers -----------------------------------------------------------------------------
ids() { compose ps -q "$1"; }
# sed, not head: head would leave `compose ps` writing to a closed pipe (SIGPIPE + pipefail).
first() { ids "$1" | sed -n 1p; }
metric() { # CONTAINER NAME_REGEX: sum of the matching samples of its /metrics
  docker exec "$1" switchboard probe /metrics 2>/dev/null |
    awk -v re="^$2( |\\{)" '$0 ~ re { s += $NF } END { printf "%d\n", s }'
}
all_healthy() {
  local id state bad=()
  for id in $(compose ps -q); do
    state=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
    case "$state" in *" running healthy") ;; *) bad+=("${state#/}") ;; esac
  done
  [ "${#bad[@]}" = 0 ] || { echo "not healthy: ${bad[*]}"; return 1; }
  echo "$(compose ps -q | wc -l) containers healthy"
}

# ---- the checks -----------------------------------------------------------------------------
jobs_check() {
  "$SB" jobclient --url "http://127.0.0.1:$JOBPROXY_PORT" --account "deploytest-$1" \
    --jobs 50 --deadline 5s 2>/dev/null | tr '\n' ' '
}
online() { "$SB" presence online --status "http://127.0.0.1:$1" 2>/dev/null; }
presence_count() { # every replica given answers $CLIENTS
  local port n out=()
  for port in "$@"; do
    n=$(online "$port") || { echo "status on :$port unreachable"; return 1; }
    out+=(":$port=$n")
    [ "$n" = "$CLIENTS" ] || { echo "${out[*]} (want $CLIENTS)"; return 1; }
  done
  echo "${out[*]}"
}
gateway_sessions() { # the running gateways hold every client
  local id total=0 per=()
  for id in $(ids presence-gateway); do
    [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] || continue
    n=$(metric "$id" presence_gateway_sessions)
    per+=("$n")
    total=$((total + n))
  done
  [ "$total" = "$CLIENTS" ] || { echo "sessions ${per[*]} = $total (want $CLIENTS)"; return 1; }
  echo "sessions per gateway: ${per[*]}"
}
aggregator_check() { # at least $1 reports matched, none mismatched
  local ws match mismatch
  ws=$(first aggregator-wsserver)
  match=$(metric "$ws" 'wsserver_reports_total\{verdict="match"\}')
  mismatch=$(metric "$ws" 'wsserver_reports_total\{verdict="mismatch"\}')
  [ "$mismatch" = 0 ] || { echo "$mismatch mismatched reports"; return 1; }
  [ "$match" -ge "$1" ] || { echo "$match matching reports (want ≥ $1)"; return 1; }
  echo "$match reports match the ground truth, 0 mismatches"
}
console_pings() { docker logs "$(first control-server)" 2>/dev/null | grep -cE '\] ping #[0-9]+ -> [0-9]{9,}$' || true; }
control_check() { # `all ping` typed into the console reaches both agents
  local server before
  server=$(first control-server)
  before=$(console_pings)
  # The console reads its stdin; `docker attach` is how an operator types into it. attach
  # does not end at EOF, so it is stopped once the lines are written.
  { printf 'all start\nall ping\n'; sleep 1; } |
    timeout -s KILL 2 docker attach --sig-proxy=false "$server" >/dev/null 2>&1 || true
  until_ok 15 pinged_since "$before"
}
pinged_since() { # N: two more ping replies than N in the console's output
  local n
  n=$(console_pings)
  [ $((n - $1)) -ge 2 ] || { echo "$((n - $1)) of 2 agents answered ping"; return 1; }
  docker logs "$(first control-server)" 2>/dev/null | grep -E '\] ping #[0-9]+ -> ' | tail -n 2 | tr '\n' ' '
}

# Tracker load: one background poster per phase, each event tagged with the phase's subject
# type, recording every answer's status code; it stops when its stop file appears.
poster_start() { # TAG
  local tag=$1 ts
  ts=$(date +%s)
  python3 - "$tag" "$ts" "$BATCH" >"$WORK/$tag.json" <<'PY'
import json, sys
tag, ts, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(json.dumps([{"objectId": i, "objectType": "user", "action": "view", "subjectId": i % 7,
                   "subjectType": tag, "datetimeStamp": ts} for i in range(n)]))
PY
  : >"$WORK/$tag.codes"
  (
    while [ ! -e "$WORK/$tag.stop" ]; do
      curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 -H 'content-type: application/json' \
        --data-binary "@$WORK/$tag.json" "http://127.0.0.1:$TRACKER_COLLECTOR_PORT/track/batch" \
        >>"$WORK/$tag.codes" || true
    done
  ) &
  echo $! >"$WORK/$tag.pid"
}
poster_stop() { touch "$WORK/$1.stop"; wait "$(cat "$WORK/$1.pid")" 2>/dev/null || true; }
posted() { grep -c "^$2\$" "$WORK/$1.codes" || true; }
accepted_after() { # TAG N: at least N answers were 202
  local n
  n=$(posted "$1" 202)
  [ "$n" -ge "$2" ] || { echo "$n accepted so far"; return 1; }
  echo "$n requests accepted"
}
counted() { # TAG: events of that subject type in the read model
  local now
  now=$(date +%s)
  curl -fsS "http://127.0.0.1:$TRACKER_API_PORT/api/breakdown?subjectType=$1&from=$(((now - 86400) * 1000))&to=$(((now + 3600) * 1000))" |
    python3 -c 'import json,sys; print(sum(r["count"] for r in json.load(sys.stdin)["breakdown"]))'
}
counted_at_least() { # TAG N
  local n
  n=$(counted "$1") && [ "$n" -ge "$2" ] || { echo "counted ${n:-?} of $2"; return 1; }
}
worker_metric() { # NAME: summed over the workers
  local id total=0
  for id in $(ids tracker-worker); do total=$((total + $(metric "$id" "$1"))); done
  echo "$total"
}
stream_drained() { # no tracker batch pending or unacknowledged in JetStream
  docker exec "$(first nats)" wget -qO- 'http://127.0.0.1:8222/jsz?consumers=true' | python3 -c '
import json, sys
d = json.load(sys.stdin)
c = [c for a in d.get("account_details", []) for s in a.get("stream_detail", [])
     if s["name"] == "TRACKER_EVENTS" for c in (s.get("consumer_detail") or [])]
left = sum(x["num_pending"] + x["num_ack_pending"] for x in c)
print(f"{left} batches pending or unacked"); sys.exit(0 if c and left == 0 else 1)'
}
tracker_exact() { # TAG: every 202 counted; nothing beyond the ambiguous 5xx/timeouts
  local tag=$1 ok amb want n
  ok=$(($(posted "$tag" 202) * BATCH))
  amb=$(($(grep -vc '^202$' "$WORK/$tag.codes" || true) * BATCH))
  until_ok 120 counted_at_least "$tag" "$ok" >/dev/null ||
    { echo "counted $(counted "$tag") of $ok accepted"; return 1; }
  until_ok 60 stream_drained >/dev/null || { stream_drained; return 1; }
  n=$(counted "$tag")
  if [ "$n" -lt "$ok" ] || [ "$n" -gt $((ok + amb)) ]; then
    echo "counted $n, accepted $ok (+$amb unanswered)"
    return 1
  fi
  echo "accepted $ok, counted $n ($((n - ok)) of $amb events in 5xx/timed-out requests stored)"
}
tracker_audit() {
  curl -fsS "http://127.0.0.1:$TRACKER_API_PORT/api/audit" | python3 -c '
import json, sys
d = json.load(sys.stdin); a = d["audit"]
print("consistent=%s raw=%s counted=%s" % (d["consistent"], a["rawEvents"], a["countedEvents"]))
sys.exit(0 if d["consistent"] else 1)'
}

# The same checks after every phase.
steady() { # PHASE
  local phase=$1 tag="t$RANDOM$RANDOM"
  check "$phase" "all containers healthy" until_ok 180 all_healthy
  check "$phase" "jobclient: 50 jobs < 5 s via jobproxy" jobs_check "$phase"
  check "$phase" "gateways hold every client" until_ok 60 gateway_sessions
  check "$phase" "StatusReader = $CLIENTS on both replicas" until_ok 60 presence_count "$PRESENCE_STATUS_PORT" "$PRESENCE_STATUS_PORT_2"
  poster_start "$tag"
  until_ok 30 accepted_after "$tag" 20 >/dev/null || true
  poster_stop "$tag"
  check "$phase" "tracker: every 202 counted once" tracker_exact "$tag"
  check "$phase" "tracker: audit consistent" tracker_audit
  check "$phase" "console 'all ping' reaches 2 agents" control_check
  check "$phase" "wsserver: reports match, 0 mismatch" until_ok 60 aggregator_check "$((++reports_wanted))"
}
reports_wanted=0

# ---- go -------------------------------------------------------------------------------------
t_all=$(now_ms)
printf '    %-20s %-38s %-4s %8s  %s\n' phase check res time detail
if [ -n "$build" ]; then
  check build "images (deploy/build-images.sh)" deploy/build-images.sh
  [ "$failures" = 0 ] || exit 1
fi
[ -x "$SB" ] || { echo "$SB is missing: run without --no-build" >&2; exit 1; }
[ -f deploy/.env ] || { echo "deploy/.env is missing: run deploy/build-images.sh" >&2; exit 1; }
export CONTROL_TOKEN
CONTROL_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
check build "runtime image size ≤ 60 MB" bash -c '
  s=$(docker image inspect -f "{{.Size}}" switchboard:latest)
  echo "$((s / 1000000)) MB"; [ "$s" -le 60000000 ]'

compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
check up "compose up -d" compose up -d
check up "every container healthy" until_ok 240 all_healthy
steady up

# 1. A gateway dies: its clients reconnect to the other one.
gw=$(first presence-gateway)
check gateway-kill "docker kill one gateway" docker kill "$gw"
check gateway-kill "clients moved to the live gateway" until_ok 60 gateway_sessions
check gateway-kill "count unchanged on both replicas" presence_count "$PRESENCE_STATUS_PORT" "$PRESENCE_STATUS_PORT_2"
check gateway-kill "compose up -d brings it back" compose up -d
steady gateway-kill

# 2. A status replica dies: the other answers the same count.
st=$(first presence-status-0)
check status-kill "docker kill status replica 0" docker kill "$st"
check status-kill "replica 1 answers the same count" presence_count "$PRESENCE_STATUS_PORT_2"
check status-kill "compose up -d brings replica 0 back" compose up -d
check status-kill "replica 0 answers again" until_ok 60 presence_count "$PRESENCE_STATUS_PORT"
steady status-kill

# 3 and 4. An engine goes down while events are posted, then comes back.
worker_errors_above() { # N: the workers counted more failed batches than N
  local n
  n=$(worker_metric tracker_worker_errors_total)
  [ "$n" -gt "$1" ] || { echo "worker errors $n"; return 1; }
  echo "worker errors $n"
}
answered() { # TAG CODE: the collector answered CODE at least once
  [ "$(posted "$1" "$2")" -gt 0 ] || { echo "no $2 yet"; return 1; }
  echo "$(posted "$1" "$2") × $2"
}
engine_outage() { # SERVICE PHASE: stop it under load, see the effect, start it again
  local svc=$1 phase=$2 tag="r$RANDOM$RANDOM" id before
  id=$(first "$svc")
  poster_start "$tag"
  check "$phase" "posting events" until_ok 30 accepted_after "$tag" 10
  check "$phase" "docker stop $svc" docker stop -t 30 "$id"
  case "$svc" in
    # Workers fail their batches; the collector only needs NATS and keeps answering 202.
    postgres) check "$phase" "workers fail, collector still 202" until_ok 60 worker_errors_above "$(worker_metric tracker_worker_errors_total)" ;;
    # No JetStream acknowledgement, no 202: the collector says 503 (retry later).
    nats) check "$phase" "collector answers 503" until_ok 60 answered "$tag" 503 ;;
  esac
  check "$phase" "docker start $svc" docker start "$id"
  before=$(posted "$tag" 202)
  check "$phase" "collector accepts again (202)" until_ok 90 accepted_after "$tag" $((before + 20))
  poster_stop "$tag"
  record "$phase" "answers during the outage" ok 0 \
    "$(sort "$WORK/$tag.codes" | uniq -c | awk '{printf "%s×%s ", $1, $2}')"
  check "$phase" "every 202 counted once" tracker_exact "$tag"
  steady "$phase"
}
engine_outage postgres postgres-restart
engine_outage nats nats-restart

# 5. A worker is cut off the network in the middle of the load.
net="${PROJECT}_default"
wk=$(first tracker-worker)
tag="w$RANDOM$RANDOM"
poster_start "$tag"
check worker-partition "posting events" until_ok 30 accepted_after "$tag" 10
check worker-partition "docker network disconnect worker" docker network disconnect "$net" "$wk"
before=$(posted "$tag" 202)
until_ok 30 accepted_after "$tag" $((before + 40)) >/dev/null || true
poster_stop "$tag"
check worker-partition "the other worker counts every 202" tracker_exact "$tag"
check worker-partition "docker network connect worker" docker network connect "$net" "$wk"
check worker-partition "counts exact after it reconnects" tracker_exact "$tag"
record worker-partition "redelivered batches, folded as duplicates" ok 0 \
  "$(worker_metric bus_redelivered_total) redeliveries fetched, $(worker_metric tracker_worker_duplicates_total) duplicate events folded to nothing"
steady worker-partition

# Graceful stop: SIGTERM, every switchboard role drains and exits 0 within its grace (the
# engines follow their own conventions: nats-server exits 1 on SIGTERM).
stopped_cleanly() {
  local id line n=0 bad=()
  for id in $(compose ps -q); do
    line=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.Name}} {{.State.Status}} {{.State.ExitCode}}' "$id")
    case "$line" in nats\ * | postgres\ *) continue ;; esac
    n=$((n + 1))
    case "$line" in *" exited 0") ;; *) bad+=("${line#* /}") ;; esac
  done
  [ "${#bad[@]}" = 0 ] || { echo "not a clean exit: ${bad[*]}"; return 1; }
  echo "$n switchboard containers exited 0"
}
check stop "compose stop (SIGTERM, grace 20 s)" compose stop -t 30
check stop "every role exited 0" stopped_cleanly

checks=$(wc -l <"$RESULTS")
echo "==> deploy test took $(since "$t_all")s"
echo "deploy-test: $((checks - failures)) passed, $failures failed"
[ "$failures" = 0 ]
