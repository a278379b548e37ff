//! End-to-end tests of the aggregator on the real binary: `switchboard sim wsserver` checks
//! every report against its own ground truth, `switchboard aggregator` is the system under
//! test. Windows are 1 s (or 1 h where a window must stay open), so nothing waits a minute.
use std::process::Stdio;
use std::time::Duration;

use switchboard_testkit::free_port;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(40);

/// Each child's log file, by pid: printed when a child does not finish in time.
static LOGS: std::sync::Mutex<Vec<(u32, std::path::PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn switchboard(args: &[&str]) -> Child {
    // A file, not a pipe: nobody reads stderr while the test runs, and a full pipe would
    // stall the child. Under cargo's scratch directory for tests, one per child.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("aggregator-{}-{n}.log", std::process::id());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let file = std::fs::File::create(&path).expect("a log file");
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn switchboard");
    LOGS.lock().unwrap().push((child.id().expect("running"), path));
    child
}

/// The last lines `pid` logged.
fn log_tail(pid: Option<u32>) -> String {
    let logs = LOGS.lock().unwrap();
    let Some((_, path)) = logs.iter().find(|(p, _)| Some(*p) == pid) else { return String::new() };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A wsserver on a free port; returns the process and the aggregator's `--server` URL.
fn wsserver(port: u16, extra: &[&str]) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["sim", "wsserver", "--listen", &listen, "--interval", "1s"];
    args.extend_from_slice(extra);
    switchboard(&args)
}

fn aggregator(port: u16, admin: u16, interval: &str) -> Child {
    let server = format!("ws://127.0.0.1:{port}/ws");
    let admin = format!("127.0.0.1:{admin}");
    switchboard(&[
        "aggregator",
        "--server",
        &server,
        "--interval",
        interval,
        "--admin-addr",
        &admin,
        "--backoff-min",
        "50ms",
        "--backoff-max",
        "300ms",
    ])
}

/// Waits for the simulator to finish; returns its exit success and its summary line.
async fn finish(child: Child) -> (bool, String) {
    let pid = child.id();
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("wsserver did not finish in time; its log:\n{}", log_tail(pid)))
        .expect("wait for wsserver");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `name` (summed over labels) on the aggregator's `/metrics`, if it answers.
async fn metric(admin: u16, name: &str) -> Option<f64> {
    let body =
        reqwest::get(format!("http://127.0.0.1:{admin}/metrics")).await.ok()?.text().await.ok()?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Polls `metric` until `ok` holds or the deadline passes.
async fn wait_metric(admin: u16, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = metric(admin, name).await
            && ok(v)
        {
            return v;
        }
        assert!(Instant::now() < until, "{name} never reached the expected value");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary_field(summary: &str, key: &str) -> u64 {
    let line = summary.lines().find(|l| l.starts_with("wsserver:")).expect("summary line");
    let word = line.split(' ').find_map(|w| w.strip_prefix(&format!("{key}="))).expect(key);
    word.parse().expect("number")
}

async fn terminate(mut child: Child) -> bool {
    let pid = child.id().expect("running").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill -TERM");
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exit in time")
        .expect("wait")
        .success()
}

#[tokio::test]
async fn exact_counts_across_updates_restarts_and_bad_frames() {
    let (port, admin) = (free_port(), free_port());
    let sim = wsserver(
        port,
        &[
            "--rate",
            "3000",
            "--update-every",
            "250ms",
            "--pad",
            "--children-key",
            "--unknown-ratio",
            "0.02",
            "--malformed-every",
            "400",
            "--oversized-every",
            "2500",
            "--drop-every",
            "1300ms",
            "--expect-reports",
            "5",
        ],
    );
    let agg = aggregator(port, admin, "1s");
    let (ok, out) = finish(sim).await;
    assert!(ok, "wsserver reported mismatches:\n{out}");
    assert_eq!(summary_field(&out, "checked"), 5, "{out}");
    assert_eq!(summary_field(&out, "mismatches"), 0, "{out}");

    let malformed = metric(admin, "aggregator_frames_malformed_total").await.unwrap_or(0.0);
    assert!(malformed > 0.0, "malformed frames were sent but none counted");
    let reconnects = metric(admin, "aggregator_connections_total").await.unwrap_or(0.0);
    assert!(reconnects >= 2.0, "the simulated restarts did not force a reconnect");
    assert!(terminate(agg).await, "aggregator did not exit cleanly");
}

#[tokio::test]
async fn report_due_while_disconnected_is_sent_after_the_server_comes_back() {
    let (port, admin) = (free_port(), free_port());
    let mut first = wsserver(port, &["--rate", "500"]);
    let agg = aggregator(port, admin, "1s");
    wait_metric(admin, "aggregator_reports_sent_total", |v| v >= 1.0).await;

    // Kill the server for real; the next window closes while the client is disconnected.
    first.kill().await.expect("kill -9 wsserver");
    wait_metric(admin, "aggregator_outbox_reports", |v| v >= 1.0).await;

    let second = wsserver(port, &["--rate", "500", "--skip-first-window", "--expect-reports", "2"]);
    let (ok, out) = finish(second).await;
    assert!(ok, "{out}");
    assert_eq!(summary_field(&out, "checked"), 2, "{out}");
    assert!(summary_field(&out, "unattributed") >= 1, "the queued report never arrived: {out}");
    assert!(terminate(agg).await);
}

#[tokio::test]
async fn shutdown_flushes_the_open_window() {
    let (port, admin) = (free_port(), free_port());
    // One-hour windows: the report can only come from the shutdown flush.
    let sim = switchboard(&[
        "sim",
        "wsserver",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--interval",
        "1h",
        "--rate",
        "2000",
        "--max-messages",
        "700",
        "--update-every",
        "100ms",
        "--expect-reports",
        "1",
    ]);
    let agg = aggregator(port, admin, "1h");
    wait_metric(admin, "aggregator_messages_total", |v| v >= 700.0).await;
    assert!(terminate(agg).await, "aggregator did not exit cleanly");
    let (ok, out) = finish(sim).await;
    assert!(ok, "{out}");
    assert_eq!(summary_field(&out, "checked"), 1, "the final report did not match: {out}");
}

#[tokio::test]
async fn bad_flags_are_a_config_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["aggregator", "--server", "not a url", "--interval", "1s"])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["aggregator", "--interval", "soon"])
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn demo_prints_a_checked_report_within_seconds_and_stops_cleanly() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let data = std::env::temp_dir().join(format!("switchboard-agg-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data).expect("data dir");
    let log = data.join("stderr.log");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["demo", "--data-dir", data.to_str().expect("utf-8 path")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn demo");
    let mut lines = BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let sim_url = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.starts_with("aggregator") && line.contains("wsserver simulator") {
                return line.rsplit(' ').next().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("demo printed its table in time")
    .expect("the table lists the aggregator's simulator");
    assert!(sim_url.starts_with("ws://127.0.0.1:"), "{sim_url}");
    // 10 s windows: the first checked report is printed, as a table, well within the deadline.
    let rows = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.starts_with("aggregator report") && line.contains("checked \u{2713}") {
                let row = lines.next_line().await.expect("read stdout").unwrap_or_default();
                return Some((line, row));
            }
        }
        None
    })
    .await
    .expect("a checked report was printed in time")
    .expect("the demo prints checked reports");
    assert!(rows.1.contains('\u{2192}'), "a report row names two parents: {rows:?}");
    assert!(terminate(demo).await, "demo did not exit cleanly");
    // The simulator stops after the aggregator's shutdown flush, so that flush is delivered.
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!stderr.contains("final report"), "the final report was not delivered:\n{stderr}");
    let _ = std::fs::remove_dir_all(&data);
}

/// Peak RSS of process `pid` in MiB (VmHWM), while it still runs.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// A tree of `parents` x `per_parent` children announced in one association list at connect
/// (no later updates: the tree is exactly that size), then messages over it; every window is
/// checked by the simulator. Returns the aggregator's peak RSS.
async fn whole_tree_is_counted(parents: usize, per_parent: usize, within: Duration) -> u64 {
    let (port, admin) = (free_port(), free_port());
    let sim = wsserver(
        port,
        &[
            "--parents",
            &parents.to_string(),
            "--children-per-parent",
            &per_parent.to_string(),
            "--update-every",
            "1h",
            "--rate",
            "3000",
            "--expect-reports",
            "3",
        ],
    );
    let agg = aggregator(port, admin, "1s");
    let pid = agg.id().expect("running");
    let out = tokio::time::timeout(within, sim.wait_with_output())
        .await
        .expect("wsserver did not finish in time")
        .expect("wait for wsserver");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("checked=3 mismatches=0"), "{out}");
    assert!(summary_field(&out, "sent_messages") > 0, "{out}");
    let children = metric(admin, "aggregator_children").await.unwrap_or(0.0);
    assert_eq!(children, (parents * per_parent) as f64, "every child was applied");
    assert_eq!(metric(admin, "aggregator_association_lists_lost_total").await, None);
    let peak = peak_rss_mib(pid);
    eprintln!("{} children: aggregator peak RSS {peak} MiB", parents * per_parent);
    assert!(terminate(agg).await);
    peak
}

#[tokio::test]
async fn twenty_thousand_children_in_a_2_mb_association_list_are_counted() {
    whole_tree_is_counted(200, 100, DEADLINE).await;
}

/// As large as the default limits allow: --max-children is 1,000,000, so one ~100 MB list.
#[tokio::test]
async fn a_million_children_in_one_association_list_are_counted() {
    let peak = whole_tree_is_counted(1_000, 1_000, Duration::from_secs(180)).await;
    // The frame (~100 MB) plus the child map; a second copy of the list would show here.
    assert!(peak < 400, "peak RSS {peak} MiB for 1,000,000 children");
}

/// A list larger than --max-children allows is refused loudly: an error, a metric and
/// /readyz not ready — not a silent loss of every count.
#[tokio::test]
async fn an_association_list_over_the_limit_is_loud() {
    let (port, admin) = (free_port(), free_port());
    let _sim = wsserver(port, &["--parents", "200", "--children-per-parent", "100"]);
    let server = format!("ws://127.0.0.1:{port}/ws");
    let admin_addr = format!("127.0.0.1:{admin}");
    let agg = switchboard(&[
        "aggregator",
        "--server",
        &server,
        "--interval",
        "1s",
        "--admin-addr",
        &admin_addr,
        "--max-children",
        "10000",
        "--backoff-max",
        "300ms",
    ]);
    wait_metric(admin, "aggregator_association_lists_lost_total", |v| v >= 1.0).await;
    let readyz = reqwest::get(format!("http://{admin_addr}/readyz")).await.expect("readyz");
    assert_eq!(readyz.status(), 503);
    let body = readyz.text().await.unwrap_or_default();
    assert!(body.contains("\"aggregator-associations\":false"), "{body}");
    assert!(terminate(agg).await);
}
