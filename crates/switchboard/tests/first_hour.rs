//! What a newcomer runs into in the first hour, on the real executable: every mistake ends at
//! once with a message that names the culprit (the address taken, the variable or file holding
//! a bad value, the URL missing its scheme) and what to do about it.
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_testkit::{NatsServer, free_port};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// A process that fails at startup must do so well within this (CI machines are shared).
const FAIL_FAST: Duration = Duration::from_secs(30);

/// The binary with a hermetic environment (no inherited `SWITCHBOARD_*`/OTLP settings), in
/// `dir` so default `./data` stores land in a temp dir.
fn switchboard(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("SWITCHBOARD_") || k.starts_with("OTEL_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

async fn run(cmd: &mut Command) -> Output {
    match tokio::time::timeout(FAIL_FAST, cmd.output()).await {
        Ok(out) => out.expect("run switchboard"),
        Err(_) => panic!("{cmd:?} did not exit within {FAIL_FAST:?}"),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `switchboard` with its admin server on `admin` and its stderr collected (and
/// echoed, so a failing test shows the log); SIGKILLed on drop.
struct Running {
    child: Child,
    admin: u16,
    log: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        let admin = free_port();
        cmd.args(["--admin-addr", &format!("127.0.0.1:{admin}")]);
        let mut child =
            cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn switchboard");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[switchboard] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, admin, log, reader }
    }

    fn find(&self, needles: &[&str]) -> Option<String> {
        let log = self.log.lock().unwrap();
        log.iter().find(|l| needles.iter().all(|n| l.contains(n))).cloned()
    }

    /// Waits until a log line contains every one of `needles`; panics after `within`.
    async fn wait_for_log(&mut self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(line) = self.find(needles) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Exited: the reader ends once it has read the last lines.
                if !self.reader.is_finished() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
                }
                if let Some(line) = self.find(needles) {
                    return line;
                }
                panic!("switchboard exited with {status} before logging {needles:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {needles:?} within {within:?}");
    }

    /// The status code of `GET /readyz` on the admin server.
    async fn readyz(&self) -> u16 {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        reqwest::get(url).await.map_or(0, |r| r.status().as_u16())
    }

    /// Polls `/readyz` until it answers `want`; panics after `within`.
    async fn wait_for_readyz(&self, want: u16, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = 0;
        while Instant::now() < deadline {
            last = self.readyz().await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/readyz answered {last}, not {want}, for {within:?}");
    }
}

/// Every listener of every role, started on an address another socket holds, exits 1 with
/// `cannot listen on <that address>` — not a bare "Address already in use".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_names_the_address_it_cannot_bind() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let free = "127.0.0.1:0";
    let roles: Vec<Vec<&str>> = vec![
        vec!["tracker", "collector", "--listen", &addr],
        vec!["tracker", "collector", "--serve-api", "--listen", free, "--admin-addr", &addr],
        vec!["tracker", "api", "--listen", &addr],
        vec!["sim", "wsserver", "--listen", &addr],
        vec!["sim", "jobserver", "--listen", &addr],
        vec!["presence", "gateway", "--listen", &addr],
        vec!["presence", "status", "--listen", &addr],
        vec!["presence", "all", "--gateway-listen", &addr, "--status-listen", free],
        vec!["presence", "all", "--gateway-listen", free, "--status-listen", &addr],
        vec!["jobproxy", "--upstream", "http://127.0.0.1:9", "--listen", &addr],
        vec!["control", "server", "--token", "t0k3n-for-tests", "--listen", &addr],
        vec!["control", "agent", "--token", "t0k3n-for-tests", "--admin-addr", &addr],
    ];
    let mut problems = Vec::new();
    for args in &roles {
        let mut cmd = switchboard(dir.path());
        cmd.args(args);
        if !args.contains(&"--admin-addr") {
            cmd.args(["--admin-addr", free]);
        }
        let out = run(&mut cmd).await;
        let msg = stderr(&out);
        let expected = format!("cannot listen on {addr}: ");
        if out.status.code() != Some(1) || !msg.contains(&expected) {
            problems.push(format!("{}: {} {msg:?}", args.join(" "), out.status));
        }
    }
    assert!(problems.is_empty(), "expected exit 1 and {addr:?} named:\n{}", problems.join("\n"));
    drop(taken);
}

/// Colour codes are for terminals: a log written to a pipe or file has none.
#[tokio::test]
async fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(switchboard(dir.path()).args(["sim", "jobserver", "--listen", &addr])).await;
    let msg = stderr(&out);
    assert!(msg.contains("INFO") && msg.contains("ERROR"), "the run logged: {msg}");
    assert!(!msg.contains('\u{1b}'), "escape codes in a piped log: {msg:?}");
}

/// A role's `--help` lists its own flags under `Options:`, and the flags every command takes
/// under `Global Options:` after them.
#[tokio::test]
async fn role_help_puts_global_flags_under_their_own_heading() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(switchboard(dir.path()).args(["presence", "gateway", "--help"])).await;
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let (own, global) = help.split_once("\nGlobal Options:\n").expect("a Global Options heading");
    for flag in ["--listen", "--bus", "--max-clients"] {
        assert!(own.contains(flag), "{flag} is the role's own: {help}");
    }
    for flag in ["--admin-addr", "--grace", "--config", "--log-format"] {
        assert!(global.contains(flag) && !own.contains(flag), "{flag} is global: {help}");
    }
}

/// A bad value or key names where it came from: the environment variable, or the config file
/// (clap alone reports both as if a flag had been typed); a missing flag names its variable.
#[tokio::test]
async fn usage_errors_name_the_variable_or_file_that_holds_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(switchboard(dir.path()).env("SWITCHBOARD_GRACE", "abc").arg("demo")).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(stderr(&out).contains("environment variable SWITCHBOARD_GRACE"), "{}", stderr(&out));

    let file = dir.path().join("switchboard.toml");
    std::fs::write(&file, "bogus-key = 1\n").unwrap();
    let out = run(switchboard(dir.path()).args(["--config", file.to_str().unwrap(), "demo"])).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let msg = stderr(&out);
    assert!(msg.contains("`bogus-key`") && msg.contains(file.to_str().unwrap()), "{msg}");

    std::fs::write(&file, "[demo]\ngrace = \"forever\"\n").unwrap();
    let out = run(switchboard(dir.path()).env("SWITCHBOARD_CONFIG", &file).arg("demo")).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let msg = stderr(&out);
    assert!(
        msg.contains("`grace` in the config file") && msg.contains("switchboard.toml"),
        "{msg}"
    );

    let out = run(switchboard(dir.path()).args(["control", "agent"])).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(stderr(&out).contains("SWITCHBOARD_TOKEN"), "{}", stderr(&out));
}

/// `127.0.0.1:25051` for a URL is a common slip: clients would take it and fail every
/// connection ("transport error", "relative URL without a base"), retrying for ever. Every
/// flag naming a URL to dial refuses it at once with exit 64, showing the URL to write.
#[tokio::test]
async fn urls_without_scheme_are_refused_at_once_with_the_url_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["presence", "clients", "--gateway"], "http://"),
        (&["presence", "client", "--gateway"], "http://"),
        (&["presence", "online", "--status"], "http://"),
        (&["control", "agent", "--token", "t0k3n-for-tests-0123456789", "--server"], "http://"),
        (&["aggregator", "--server"], "ws://"),
        (&["jobclient", "--url"], "http://"),
        (&["jobproxy", "--upstream"], "http://"),
    ];
    for (args, scheme) in cases {
        let out = run(switchboard(dir.path()).args(args).arg("127.0.0.1:25051")).await;
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {msg}");
        assert!(msg.contains(&format!("{scheme}127.0.0.1:25051")), "{args:?}: {msg}");
    }
}

/// Clients whose gateway is down say so at info level (a WARN naming the gateway and the
/// cause) and are not ready; once the gateway comes up they connect and turn ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_clients_report_a_gateway_that_is_down_and_turn_ready_when_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!("127.0.0.1:{}", free_port());
    let mut clients = switchboard(dir.path());
    clients.args(["presence", "clients", "--count", "3", "--max-backoff", "300ms"]);
    clients.args(["--gateway", &format!("http://{gateway}")]);
    let mut clients = Running::spawn(clients);
    let line = clients.wait_for_log(&["WARN", "cannot reach", &gateway], FAIL_FAST).await;
    assert!(line.contains("refused"), "the cause is shown: {line}");
    assert_eq!(clients.readyz().await, 503, "no client is connected");

    let mut server = switchboard(dir.path());
    server.args(["presence", "gateway", "--listen", &gateway]);
    let _server = Running::spawn(server);
    clients.wait_for_readyz(200, FAIL_FAST).await;
}

/// NATS and PostgreSQL that cannot be reached are treated alike: retried with an info line for
/// the same bounded time (10 s), then exit 1 with the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bus_and_store_are_retried_for_the_same_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let timed = |engine: &'static str, url: &'static str| {
        let mut cmd = switchboard(dir.path());
        cmd.args(["tracker", "worker", engine, url]);
        async move {
            let started = Instant::now();
            (run(&mut cmd).await, started.elapsed())
        }
    };
    let ((bus, bus_took), (store, store_took)) = tokio::join!(
        timed("--bus", "nats://127.0.0.1:1"),
        timed("--store", "postgres://switchboard@127.0.0.1:1/switchboard"),
    );
    for (out, took, what) in [(&bus, bus_took, "bus"), (&store, store_took, "store")] {
        let msg = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{what}: {msg}");
        assert!(msg.contains(&format!("{what} not reachable yet, retrying")), "{what}: {msg}");
        assert!(msg.contains("127.0.0.1:1") && msg.contains("refused"), "{what}: {msg}");
        let (least, most) = (Duration::from_secs(8), Duration::from_secs(20));
        assert!(took >= least && took <= most, "{what} gave up after {took:?}");
    }
}

/// A bus that comes up during that wait (engines starting beside the roles) is used; until
/// then the role is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_comes_up_during_the_wait_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start();
    nats.kill();
    let store = format!("sqlite://{}", dir.path().join("tracker.db").display());
    let mut worker = switchboard(dir.path());
    worker.args(["tracker", "worker", "--bus", &nats.url, "--store", &store]);
    let mut worker = Running::spawn(worker);
    worker.wait_for_log(&["INFO", "bus not reachable yet, retrying"], FAIL_FAST).await;
    assert_eq!(worker.readyz().await, 503, "a role still connecting to its engines is not ready");
    let _nats = tokio::task::spawn_blocking(move || {
        nats.restart();
        nats
    })
    .await
    .unwrap();
    worker.wait_for_readyz(200, FAIL_FAST).await;
}

/// `scripts/dev-engines.sh`, the README's distributed quick start without Docker: the URLs it
/// prints serve a role that needs both engines, and SIGTERM (Ctrl-C in a terminal) stops both
/// engines and deletes their data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_engines_script_serves_distributed_mode_and_cleans_up() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/dev-engines.sh");
    let mut engines = Command::new("bash")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run dev-engines.sh");
    let mut lines = BufReader::new(engines.stdout.take().unwrap()).lines();
    let (mut exports, mut data_dir) = (Vec::new(), None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split_once("data in ").map(|(_, r)| r) {
                data_dir = rest.split(';').next().map(std::path::PathBuf::from);
            }
            if let Some((key, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('='))
            {
                exports.push((key.to_owned(), value.to_owned()));
                if exports.len() == 2 {
                    return;
                }
            }
        }
        panic!("dev-engines.sh ended before printing both URLs");
    };
    tokio::time::timeout(Duration::from_secs(90), read).await.expect("URLs within 90 s");
    let keys: Vec<&str> = exports.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["SWITCHBOARD_BUS", "SWITCHBOARD_STORE"]);
    let data_dir = data_dir.expect("the data dir is printed");
    assert!(data_dir.is_dir(), "{data_dir:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut worker = switchboard(dir.path());
    worker.envs(exports.iter().cloned()).args(["tracker", "worker"]);
    let worker = Running::spawn(worker);
    worker.wait_for_readyz(200, FAIL_FAST).await;
    drop(worker);

    let pid = engines.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(FAIL_FAST, engines.wait()).await.expect("stops").unwrap();
    assert!(!status.success(), "stopped by a signal: {status}");
    assert!(!data_dir.exists(), "{data_dir:?} is deleted");
    for (_, url) in &exports {
        let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
        let addr = format!("127.0.0.1:{port}");
        assert!(std::net::TcpStream::connect(&addr).is_err(), "{addr} still answers");
    }
}

/// A benchmark says what it is doing while it measures (stderr), and Ctrl-C stops it at once
/// with 130 and no result, instead of waiting for the run to end or for `--grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_progress_and_stops_at_once_on_sigint_with_130() {
    let dir = tempfile::tempdir().unwrap();
    let mut bench = switchboard(dir.path());
    bench.args(["--grace", "30s", "bench", "aggregator", "--duration", "60s"]);
    let mut bench = Running::spawn(bench);
    bench.wait_for_log(&["run 1 of 3"], FAIL_FAST).await;
    let pid = bench.child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().await.unwrap().success());
    let within = Duration::from_secs(5);
    let status = tokio::time::timeout(within, bench.child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit within {within:?} of SIGINT"))
        .unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    bench.wait_for_log(&["bench interrupted: no result"], within).await;
}

/// The in-process roles of `bench control` log at warn unless `RUST_LOG` says otherwise, so
/// the table is not buried under one line per attaching and detaching agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_control_output_is_its_table_not_the_roles_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut bench = switchboard(dir.path());
    bench.env_remove("RUST_LOG");
    bench.args([
        "bench",
        "control",
        "--agents",
        "100",
        "--round-trips",
        "200",
        "--broadcasts",
        "3",
    ]);
    let out = tokio::time::timeout(Duration::from_secs(120), bench.output())
        .await
        .expect("bench control within 120 s")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("scenario") && table.contains("\"bench\":\"control\""), "{table}");
    let log = stderr(&out);
    assert!(log.lines().count() < 20, "{} stderr lines:\n{log}", log.lines().count());
}

/// `bench aggregator` interleaves its rounds and reports medians with every round's ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_aggregator_reports_medians_of_interleaved_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut bench = switchboard(dir.path());
    bench.args(["bench", "aggregator", "--duration", "300ms", "--rounds", "2"]);
    let out = tokio::time::timeout(Duration::from_secs(120), bench.output())
        .await
        .expect("bench aggregator within 120 s")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = stderr(&out);
    for label in ["round 1 of 2, run 1 of 3", "round 2 of 2, run 3 of 3"] {
        assert!(log.contains(label), "no {label:?} in:\n{log}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = table
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON line in:\n{table}"));
    assert_eq!(json["rounds"], 2, "{json}");
    let ratios = json["ratio_cpu_per_round"].as_array().expect("per-round ratios");
    assert_eq!(ratios.len(), 2, "{json}");
    assert!(ratios.iter().all(|r| r.as_f64().is_some_and(|r| r > 0.0)), "{json}");
    for run in ["read_only", "reference", "aggregator"] {
        assert!(json[run]["messages"].as_u64().is_some_and(|n| n > 0), "{run}: {json}");
    }
}

/// An agent whose console is down says which console and why ("Connection refused"), not a
/// bare "transport error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_agent_names_the_console_it_cannot_reach_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let server = format!("http://127.0.0.1:{}", free_port());
    let mut agent = switchboard(dir.path());
    agent.env("SWITCHBOARD_TOKEN", "t0k3n-for-tests-0123456789");
    agent.args(["control", "agent", "--server", &server, "--name", "a1"]);
    let mut agent = Running::spawn(agent);
    let line = agent.wait_for_log(&["WARN", "cannot attach", &server], FAIL_FAST).await;
    assert!(line.contains("Connection refused"), "the cause is shown: {line}");
    assert_eq!(agent.readyz().await, 503, "not attached, not ready");
}
