//! End-to-end tests of the tracker on the real binary: separate collector and worker
//! processes sharing an embedded SQLite store, killed with SIGKILL mid-work, and the
//! dashboard rendered by headless Chromium.
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const DEADLINE: Duration = Duration::from_secs(60);

mod support;
use support::Proc;

impl Proc {
    /// `switchboard <args>` logging at info into `dir/<name>-<n>.log`.
    fn logged(dir: &Path, name: &str, args: &[&str]) -> Self {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::fs::File::create(dir.join(format!("{name}-{n}.log"))).unwrap();
        Proc::spawn(Proc::command().args(args).env("RUST_LOG", "info").stderr(log))
    }
}

/// One deployment: its bus and store, and the collector's address.
struct Tracker {
    dir: tempfile::TempDir,
    bus: String,
    store: String,
    base: String,
    client: reqwest::Client,
}

impl Tracker {
    /// Embedded mode: memory bus, SQLite file in a temp dir.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("tracker.db").display());
        Self::build(dir, "memory://".into(), store)
    }

    /// Distributed mode.
    fn with_backends(bus: &str, store: &str) -> Self {
        Self::build(tempfile::tempdir().unwrap(), bus.into(), store.into())
    }

    fn build(dir: tempfile::TempDir, bus: String, store: String) -> Self {
        let port = switchboard_testkit::free_port();
        let base = format!("http://127.0.0.1:{port}");
        Self { dir, bus, store, base, client: reqwest::Client::new() }
    }

    fn collector(&self, extra: &[&str]) -> Proc {
        let listen = self.base.trim_start_matches("http://").to_owned();
        let mut args = vec!["tracker", "collector", "--serve-api", "--listen", &listen];
        args.extend(["--bus", &self.bus, "--store", &self.store]);
        args.extend_from_slice(extra);
        Proc::logged(self.dir.path(), "collector", &args)
    }

    fn worker(&self, extra: &[&str]) -> Proc {
        let mut args = vec!["tracker", "worker", "--bus", &self.bus, "--store", &self.store];
        args.extend(["--idle-poll", "5ms"]);
        args.extend_from_slice(extra);
        Proc::logged(self.dir.path(), "worker", &args)
    }

    async fn get(&self, path: &str) -> Value {
        let res = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Vec<u8>, gzip: bool) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).body(body);
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Waits for the collector (and its API) to answer.
    async fn wait_ready(&self) {
        wait_for("the collector to answer", || async {
            self.client.get(format!("{}/api/summary", self.base)).send().await.is_ok()
        })
        .await;
    }

    async fn folded(&self) -> i64 {
        self.get("/api/summary").await["folded"].as_i64().unwrap()
    }

    async fn wait_folded(&self, want: i64) {
        wait_for("every accepted event to be folded", || async { self.folded().await >= want })
            .await;
        assert_eq!(self.folded().await, want, "more events folded than accepted");
    }

    async fn assert_consistent(&self) {
        let audit = self.get("/api/audit").await;
        assert_eq!(audit["consistent"], true, "{audit}");
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

fn event(i: i64) -> Value {
    let action = if i % 2 == 0 { "view" } else { "click" };
    json!({"objectId": i % 97, "objectType": "user", "action": action,
        "subjectId": i % 13, "subjectType": "article", "datetimeStamp": now_ms()})
}

fn batch(from: i64, n: i64) -> Vec<u8> {
    serde_json::to_vec(&(from..from + n).map(event).collect::<Vec<_>>()).unwrap()
}

/// Posts `batches` × `size` events; returns how many were acknowledged with 202.
async fn send(t: &Tracker, batches: i64, size: i64) -> i64 {
    let mut accepted = 0;
    for b in 0..batches {
        let (status, body) = t.post("/track/batch", batch(b * size, size), false).await;
        assert_eq!(status, 202, "{body}");
        accepted += body["accepted"].as_i64().unwrap();
    }
    accepted
}

#[tokio::test]
async fn embedded_pipeline_on_real_processes() {
    let t = Tracker::new();
    let mut collector = t.collector(&["--max-body-bytes", "65536"]);
    let mut worker = t.worker(&[]);
    t.wait_ready().await;

    let mut accepted = send(&t, 20, 100).await;
    let (status, body) = t.post("/track", event(1).to_string().into_bytes(), false).await;
    assert_eq!(status, 202, "{body}");
    accepted += 1;
    let ndjson = (0..10).map(|i| event(i).to_string()).collect::<Vec<_>>().join("\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(ndjson.as_bytes()).unwrap();
    let (status, body) = t.post("/track/batch", gz.finish().unwrap(), true).await;
    assert_eq!(status, 202, "{body}");
    accepted += 10;

    // Rejections change nothing.
    let mut bad = event(1);
    bad["datetimeStamp"] = json!(4_102_444_800i64); // 2100-01-01: beyond --max-clock-skew
    let (status, body) = t.post("/track", bad.to_string().into_bytes(), false).await;
    assert_eq!(status, 400);
    assert_eq!(body["problems"][0]["field"], "datetimeStamp", "{body}");
    let (status, _) = t.post("/track/batch", batch(0, 1000), false).await;
    assert_eq!(status, 413, "a 1000-event body exceeds --max-body-bytes 65536");

    t.wait_folded(accepted).await;
    t.assert_consistent().await;
    let breakdown = t.get("/api/breakdown").await;
    let sum: i64 = breakdown["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, accepted);

    assert!(collector.terminate().success(), "collector exits 0 on SIGTERM");
    assert!(worker.terminate().success(), "worker exits 0 on SIGTERM");
}

#[tokio::test]
async fn killed_worker_and_collector_lose_and_double_count_nothing() {
    let t = Tracker::new();
    let mut collector = t.collector(&[]);
    t.wait_ready().await;
    let mut accepted = send(&t, 300, 100).await;

    // Small transactions so the worker is killed with work both done and still to do.
    let mut worker = t.worker(&["--batch-entries", "4"]);
    wait_for("the worker to start folding", || async { t.folded().await > 0 }).await;
    worker.kill9();
    let folded_at_kill = t.folded().await;
    assert!(folded_at_kill < accepted, "worker finished before it could be killed");

    // The collector dies right after acknowledging: what it acked must survive.
    accepted += send(&t, 5, 100).await;
    collector.kill9();
    let _collector = t.collector(&[]);
    t.wait_ready().await;

    let _worker = t.worker(&[]);
    t.wait_folded(accepted).await;
    t.assert_consistent().await;
}

/// `tracker collector --fold`: one process, no worker. Every acknowledged event is already in
/// the reports when its 202 arrives (read right after each one, no waiting), a batch retried
/// with the same messageIds is counted once, and what was acknowledged survives `kill -9`.
#[tokio::test]
async fn a_folding_collector_needs_no_worker_and_loses_nothing() {
    let t = Tracker::new();
    let mut collector = t.collector(&["--fold"]);
    t.wait_ready().await;
    let mut accepted = 0;
    for b in 0..20 {
        let (status, body) = t.post("/track/batch", batch(b * 100, 100), false).await;
        assert_eq!(status, 202, "{body}");
        accepted += body["accepted"].as_i64().unwrap();
        assert_eq!(t.folded().await, accepted, "an acknowledged batch is already folded");
    }
    let labelled_batch = labelled(0..50, 0);
    for _ in 0..2 {
        let (status, body) = t.post("/track/batch", labelled_batch.clone(), false).await;
        assert_eq!((status, body["accepted"].as_i64()), (202, Some(50)), "{body}");
    }
    accepted += 50;
    assert_eq!(t.folded().await, accepted, "a retried batch is counted once");

    collector.kill9();
    let mut collector = t.collector(&["--fold"]);
    t.wait_ready().await;
    assert_eq!(t.folded().await, accepted, "acknowledged events survive kill -9");
    t.assert_consistent().await;
    assert!(collector.terminate().success(), "collector exits 0 on SIGTERM");

    // Nothing to fold into with a durable bus: a configuration error, before connecting.
    let mut refused = Proc::logged(
        t.dir.path(),
        "refused",
        &[
            "tracker",
            "collector",
            "--fold",
            "--bus",
            "nats://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let status = refused.exit_within(DEADLINE, "--fold with a durable bus kept running");
    assert_eq!(status.code(), Some(64), "--fold with a durable bus is refused as configuration");
}

#[tokio::test]
async fn dashboard_renders_live_reports_in_headless_chromium() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("headless Chromium is required for this test: apt-get install -y chromium");
    let t = Tracker::new();
    let _collector = t.collector(&[]);
    let _worker = t.worker(&[]);
    t.wait_ready().await;
    let accepted = send(&t, 12, 100).await;
    t.wait_folded(accepted).await;

    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            "--virtual-time-budget=10000",
            "--dump-dom",
            &format!("{}/", t.base),
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, out).await.expect("chromium hung").unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let total = format!("id=\"total\">{}</b>", group_thousands(accepted));
    assert!(dom.contains(&total), "dashboard does not show {total}:\n{dom}");
    assert!(dom.contains("live ·"), "dashboard did not reach the live state:\n{dom}");
    assert!(
        dom.contains("data-action=\"view\"") && dom.contains("data-action=\"click\""),
        "no series lines:\n{dom}"
    );
    assert!(dom.contains("article 0"), "no top subjects:\n{dom}");
}

/// `1234` → `1,234`, as the dashboard's `toLocaleString("en")` writes it.
fn group_thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn distributed_pipeline_on_nats_and_postgres_survives_a_killed_worker() {
    let nats = switchboard_testkit::NatsServer::start();
    let pg = switchboard_testkit::PostgresServer::start();
    let t = Tracker::with_backends(&nats.url, &pg.url);
    let mut collector = t.collector(&[]);
    t.wait_ready().await;
    let accepted = send(&t, 200, 100).await;
    // Workers share the durable consumer; a short ack wait makes redelivery of the killed
    // worker's unacked messages quick.
    let mut doomed = t.worker(&["--batch-entries", "4", "--ack-wait", "2s"]);
    wait_for("the worker to start folding", || async { t.folded().await > 0 }).await;
    doomed.kill9();
    assert!(t.folded().await < accepted, "worker finished before it could be killed");
    let mut survivor = t.worker(&["--ack-wait", "2s"]);
    t.wait_folded(accepted).await;
    t.assert_consistent().await;
    assert!(collector.terminate().success());
    assert!(survivor.terminate().success());
}

/// A compact event of exactly [`TINY_EVENT_BYTES`] bytes: default limits let 10,000 of them
/// fit in one 1 MiB body, so both limits can be met at once.
fn tiny_event(i: i64) -> String {
    format!(
        r#"{{"objectId":{},"objectType":"u","action":"v","subjectId":1,"subjectType":"a","datetimeStamp":{}}}"#,
        i % 10,
        now_ms() / 1000
    )
}
const TINY_EVENT_BYTES: usize = 103;

/// A JSON batch of `n` tiny events padded with spaces to exactly `bytes` bytes.
fn batch_of_size(n: usize, bytes: usize) -> Vec<u8> {
    let events: Vec<String> = (0..n as i64).map(tiny_event).collect();
    let mut body = format!("[{}", events.join(","));
    assert!(body.len() < bytes, "{n} events need more than {bytes} bytes");
    body.push_str(&" ".repeat(bytes - body.len() - 1));
    body.push(']');
    body.into_bytes()
}

/// The collector's two request limits (`--max-body-bytes`, `--max-batch-events`, at their
/// defaults) met end to end: limit−1 and limit are stored and folded, limit+1 is refused with
/// 413 and the collector keeps serving. In distributed mode a body at both limits is one
/// journal entry, which must fit in what the bus accepts too.
async fn limits_hold_end_to_end(t: &Tracker) {
    const MAX_BODY: usize = 1 << 20;
    const MAX_EVENTS: usize = 10_000;
    let mut collector = t.collector(&[]);
    let mut worker = t.worker(&[]);
    t.wait_ready().await;
    assert_eq!(tiny_event(1).len(), TINY_EVENT_BYTES);
    let mut accepted = 0;
    // Events: limit−1 and limit pass, limit+1 is refused.
    for n in [MAX_EVENTS - 1, MAX_EVENTS] {
        let (status, body) = t.post("/track/batch", batch_of_size(n, MAX_BODY), false).await;
        assert_eq!(status, 202, "{n} events: {body}");
        accepted += body["accepted"].as_i64().unwrap();
    }
    let (status, body) =
        t.post("/track/batch", batch_of_size(MAX_EVENTS + 1, 2 * MAX_BODY), false).await;
    assert_eq!(status, 413, "{body}");
    // Bytes: limit−1 and limit pass, limit+1 is refused, compressed or not.
    for bytes in [MAX_BODY - 1, MAX_BODY] {
        let (status, body) = t.post("/track/batch", batch_of_size(100, bytes), false).await;
        assert_eq!(status, 202, "{bytes} bytes: {body}");
        accepted += body["accepted"].as_i64().unwrap();
    }
    let (status, body) = t.post("/track/batch", batch_of_size(100, MAX_BODY + 1), false).await;
    assert_eq!(status, 413, "{body}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&batch_of_size(100, MAX_BODY + 1)).unwrap();
    let (status, body) = t.post("/track/batch", gz.finish().unwrap(), true).await;
    assert_eq!(status, 413, "decompressed beyond the limit: {body}");
    // Still serving.
    accepted += send(t, 1, 10).await;
    assert_eq!(accepted, (2 * MAX_EVENTS + 200 + 10 - 1) as i64);
    t.wait_folded(accepted).await;
    t.assert_consistent().await;
    assert!(collector.terminate().success());
    assert!(worker.terminate().success());
}

#[tokio::test]
async fn request_limits_hold_end_to_end_embedded() {
    limits_hold_end_to_end(&Tracker::new()).await;
}

#[tokio::test]
async fn request_limits_hold_end_to_end_on_nats_and_postgres() {
    let nats = switchboard_testkit::NatsServer::start();
    let pg = switchboard_testkit::PostgresServer::start();
    limits_hold_end_to_end(&Tracker::with_backends(&nats.url, &pg.url)).await;
}

/// Events labelled `messageId` `first..last` (and `extra` unlabelled ones after them).
fn labelled(ids: impl IntoIterator<Item = i64>, unlabelled: i64) -> Vec<u8> {
    let mut events: Vec<Value> = ids
        .into_iter()
        .map(|i| {
            let mut e = event(i);
            e["messageId"] = json!(format!("msg-{i}"));
            e
        })
        .collect();
    events.extend((0..unlabelled).map(event));
    serde_json::to_vec(&events).unwrap()
}

/// A client's retries never double count: the same `messageId` sent twice in one batch, in a
/// whole batch retried after its 202 was lost, through another collector, and after the first
/// collector was killed with -9, is stored and counted once; events without one are each
/// counted, as before.
async fn message_ids_are_counted_once(t: &Tracker) {
    let mut a = t.collector(&[]);
    let other =
        Tracker { dir: tempfile::tempdir().unwrap(), ..Tracker::with_backends(&t.bus, &t.store) };
    let mut b = other.collector(&[]);
    let mut worker = t.worker(&[]);
    t.wait_ready().await;
    other.wait_ready().await;
    let post = |t: &Tracker, body: Vec<u8>| {
        let (client, url) = (t.client.clone(), format!("{}/track/batch", t.base));
        async move {
            let res = client.post(url).body(body).send().await.unwrap();
            assert_eq!(res.status(), 202);
            res.json::<Value>().await.unwrap()["accepted"].as_i64().unwrap()
        }
    };
    // One batch with msg-0 twice and 10 unlabelled events; then the same batch again, as a
    // client does whose 202 was lost, through the other collector.
    let first = labelled((0..100).chain([0]), 10);
    assert_eq!(post(t, first.clone()).await, 111);
    assert_eq!(post(&other, first).await, 111);
    // Overlapping ids through the first collector, which is then killed and restarted; the
    // client, unsure, sends that batch once more.
    let second = labelled(50..150, 0);
    assert_eq!(post(t, second.clone()).await, 100);
    a.kill9();
    let mut a = t.collector(&[]);
    t.wait_ready().await;
    assert_eq!(post(t, second).await, 100);
    // Last: one new id. The worker folds the journal in order, so once it is in, all is.
    assert_eq!(post(t, labelled([1_000], 0)).await, 1);
    let unique = 150 + 1 + 2 * 10;
    t.wait_folded(unique).await;
    t.assert_consistent().await;
    let summary = t.get("/api/summary").await;
    assert_eq!(summary["folded"], unique, "{summary}");
    for p in [&mut a, &mut b, &mut worker] {
        assert!(p.terminate().success());
    }
}

#[tokio::test]
async fn message_ids_are_counted_once_embedded() {
    message_ids_are_counted_once(&Tracker::new()).await;
}

#[tokio::test]
async fn message_ids_are_counted_once_on_nats_and_postgres() {
    let nats = switchboard_testkit::NatsServer::start();
    let pg = switchboard_testkit::PostgresServer::start();
    message_ids_are_counted_once(&Tracker::with_backends(&nats.url, &pg.url)).await;
}

/// Runs `switchboard bench tracker` with `args` and returns its JSON line.
fn bench_json(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["bench", "tracker"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"))
}

/// `--workers 1,2` measures one end-to-end phase per worker count, and one with the collector
/// folding (no worker).
#[test]
fn bench_measures_each_worker_count() {
    let json = bench_json(&["--events", "5000", "--workers", "1,2"]);
    let rows = json["results"].as_array().unwrap();
    let e2e: Vec<&Value> =
        rows.iter().filter(|r| r["phase"] == "end to end until queryable").collect();
    let workers: Vec<i64> = e2e.iter().map(|r| r["workers"].as_i64().unwrap()).collect();
    assert_eq!(workers, [1, 2], "{json}");
    assert!(e2e.iter().all(|r| r["events"] == 5000 && r["events_per_s"].as_f64().unwrap() > 0.0));
    let fold = rows.iter().find(|r| r["phase"] == "end to end, the collector folds (--fold)");
    assert!(fold.is_some_and(|r| r["events"] == 5000 && r["workers"] == 0), "{json}");
}

/// `--soak` sends exactly its schedule (rate × duration), samples memory and the store, and
/// folds everything it sent.
#[test]
fn soak_sends_its_schedule_and_samples_memory_and_store() {
    let json = bench_json(&["--soak", "6s", "--soak-rate", "5000", "--concurrency", "4"]);
    let soak = &json["soaks"][0];
    assert_eq!(soak["mode"], "embedded", "{json}");
    // 100-event batches every 20 ms for 6 s.
    assert_eq!(soak["sent_events"], 30_000, "{json}");
    let samples = soak["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "{json}");
    assert!(samples.iter().all(|s| s["rss_bytes"].as_u64().unwrap() > 1_000_000), "{json}");
    assert!(soak["store_end_bytes"].as_u64() > soak["store_start_bytes"].as_u64(), "{json}");
    assert_eq!(samples.last().unwrap()["folded_events"], 30_000, "{json}");
}
