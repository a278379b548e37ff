#!/usr/bin/env bash
# Throw-away engines for trying distributed mode on one machine, without Docker:
# nats-server with JetStream and PostgreSQL, each in a temp dir on a free loopback port.
# Prints the --bus/--store URLs (as SWITCHBOARD_* exports to paste into other terminals),
# then waits; Ctrl-C (or SIGTERM) stops both and deletes their data.
#
#   ./scripts/dev-engines.sh            # needs nats-server and PostgreSQL (initdb, pg_ctl)
#
# PostgreSQL is found on PATH, else in the newest /usr/lib/postgresql/*/bin (override with
# SWITCHBOARD_PG_BIN). PostgreSQL refuses to run as root: as root, its programs run as the
# `postgres` system user (the one the distribution packages create).
set -euo pipefail

die() { echo "dev-engines: $*" >&2; exit 1; }

command -v nats-server >/dev/null 2>&1 ||
  die "nats-server not found (apt-get install nats-server, or https://nats.io/download)"

pg_bin=${SWITCHBOARD_PG_BIN:-}
if [ -z "$pg_bin" ]; then
  if command -v initdb >/dev/null 2>&1; then
    pg_bin=$(dirname "$(readlink -f "$(command -v initdb)")")
  else
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  fi
fi
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ] ||
  die "PostgreSQL not found (apt-get install postgresql-15, or set SWITCHBOARD_PG_BIN)"

# Runs a PostgreSQL program as a user it accepts.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' user to run PostgreSQL as"
  command -v runuser >/dev/null 2>&1 || die "running as root and runuser (util-linux) is missing"
  as_pg=(runuser -u postgres --)
fi
pg() { "${as_pg[@]}" "$pg_bin/$1" "${@:2}"; }

# A loopback port nothing listens on, below the kernel's ephemeral range (where outgoing
# connections take their ports, so a port free now may be taken a moment later). Another
# process may still win the race for it: callers retry with a new one.
free_port() {
  local low=32768 port
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  for _ in $(seq 1 100); do
    port=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  die "no free port found"
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-engines-XXXXXX")
nats_pid=
pg_started=
stop() {
  trap - INT TERM EXIT
  echo "dev-engines: stopping NATS and PostgreSQL" >&2
  [ -n "$pg_started" ] && pg pg_ctl -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$dir/nats"
for attempt in 1 2 3 4 5; do
  nats_port=$(free_port)
  nats-server -js -sd "$dir/nats" -a 127.0.0.1 -p "$nats_port" -l "$dir/nats.log" &
  nats_pid=$!
  # Up when it accepts connections (within 30 s); exited (port taken meanwhile): another port.
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
    kill -0 "$nats_pid" 2>/dev/null || break
    sleep 0.1
  done
  (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  kill "$nats_pid" 2>/dev/null || true
  nats_pid=
  [ "$attempt" = 5 ] && { cat "$dir/nats.log" >&2; die "nats-server did not start"; }
done

[ -n "${as_pg[*]}" ] && chown postgres: "$dir"
pg initdb -D "$dir/pg" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; die "initdb failed"; }
echo "CREATE DATABASE switchboard;" | pg postgres --single -D "$dir/pg" postgres >"$dir/createdb.log" 2>&1 ||
  { cat "$dir/createdb.log" >&2; die "creating the database failed"; }
for attempt in 1 2 3 4 5; do
  pg_port=$(free_port)
  pg_started=1
  pg pg_ctl -D "$dir/pg" -l "$dir/postgres.log" -w -t 60 start \
    -o "-p $pg_port -h 127.0.0.1 -k $dir -c max_connections=300" >/dev/null && break
  pg_started=
  [ "$attempt" = 5 ] && { cat "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
done

cat <<EOF
NATS JetStream and PostgreSQL are running (data in $dir; Ctrl-C stops both and deletes it).
Paste into the terminals where you run switchboard roles:

export SWITCHBOARD_BUS=nats://127.0.0.1:$nats_port
export SWITCHBOARD_STORE=postgres://postgres@127.0.0.1:$pg_port/switchboard

EOF
wait "$nats_pid"
