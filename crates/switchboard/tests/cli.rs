//! End-to-end tests of the binary's core behaviour, on the real executable: `--help` and
//! `--version`, exit code 64 for bad flags and bad config files, the admin endpoints of
//! `switchboard demo`, graceful exit 0 on SIGINT/SIGTERM, exit 1 on a runtime failure, the
//! config precedence flag > env > TOML file, and the flag contract (every flag of every
//! command has its `SWITCHBOARD_*` variable and a description).
//!
//! Only core behaviour is asserted (admin endpoints, exit codes, logs of `main`), so these
//! tests hold whatever the services plug into the demo.
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use switchboard_testkit::free_port;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// `--grace` given to every started process; a clean exit must come well within it.
const GRACE: Duration = Duration::from_secs(10);
/// Generous: the demo starts every service, and CI machines are shared.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The binary with a hermetic environment: no `SWITCHBOARD_*` or OTLP settings inherited.
fn switchboard() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("SWITCHBOARD_") || k.starts_with("OTEL_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

async fn run(args: &[&str]) -> Output {
    switchboard().args(args).output().await.expect("run switchboard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `switchboard` whose stderr is collected line by line (and echoed, so a failing
/// test shows the process log); SIGKILLed on drop.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
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
        Self { child, log, reader }
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Polls `GET url` until it answers `want` and returns that answer's body; panics with the
    /// last answer at the deadline.
    async fn wait_for_status(&mut self, url: &str, want: u16) -> String {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("switchboard exited with {status} while waiting for {url}");
            }
            match reqwest::get(url).await {
                Ok(res) if res.status().as_u16() == want => {
                    return res.text().await.unwrap_or_default();
                }
                Ok(res) => {
                    last = format!("{} {}", res.status(), res.text().await.unwrap_or_default())
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{url} did not answer {want} within {READY_DEADLINE:?}; last: {last}");
    }

    /// Sends `SIG<name>` with `kill(1)` and asserts what a graceful stop looks like: an exit
    /// within the grace period (plus a second), code 0, and the signal in the log.
    async fn stop_cleanly(mut self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill").args([&format!("-{name}"), &pid]).status().await;
        assert!(sent.expect("run kill").success(), "kill -{name} {pid} failed");
        let within = GRACE + Duration::from_secs(1);
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for switchboard"),
            Err(_) => panic!("no exit within {within:?} after SIG{name}"),
        };
        assert_eq!(status.code(), Some(0), "exit after SIG{name}: {status}");
        // The pipe is closed now (unless a grandchild inherited it): the reader ends once it
        // has read the last lines.
        tokio::time::timeout(Duration::from_secs(5), &mut self.reader)
            .await
            .expect("stderr closes when switchboard exits")
            .expect("log reader");
        let logged = format!("SIG{name} received");
        assert!(self.log_contains(&logged), "the log lacks {logged:?}");
    }
}

fn demo(data_dir: &Path, admin_port: u16) -> Command {
    let mut cmd = switchboard();
    cmd.args(["demo", "--data-dir", data_dir.to_str().unwrap()])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(["--grace", &format!("{}s", GRACE.as_secs())]);
    cmd
}

#[tokio::test]
async fn help_and_version_exit_0() {
    let help = run(&["--help"]).await;
    assert!(help.status.success(), "{help:?}");
    let text = stdout(&help);
    for expected in
        ["demo", "tracker", "--admin-addr", "SWITCHBOARD_ADMIN_ADDR", "SWITCHBOARD_CONFIG"]
    {
        assert!(text.contains(expected), "--help lacks {expected}:\n{text}");
    }

    let demo_help = run(&["demo", "--help"]).await;
    assert!(demo_help.status.success());
    assert!(stdout(&demo_help).contains("SWITCHBOARD_DATA_DIR"), "{}", stdout(&demo_help));

    let version = run(&["--version"]).await;
    assert!(version.status.success());
    assert_eq!(stdout(&version).trim(), format!("switchboard {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn bad_flags_exit_64_with_a_clear_message() {
    let unknown = run(&["demo", "--no-such-flag"]).await;
    assert_eq!(unknown.status.code(), Some(64), "{unknown:?}");
    assert!(stderr(&unknown).contains("--no-such-flag"), "{}", stderr(&unknown));

    let bad_value = run(&["--admin-addr", "not-an-address", "demo"]).await;
    assert_eq!(bad_value.status.code(), Some(64));
    let msg = stderr(&bad_value);
    assert!(msg.contains("not-an-address") && msg.contains("--admin-addr"), "{msg}");

    let no_command = run(&[]).await;
    assert_eq!(no_command.status.code(), Some(64), "a subcommand is required");
}

#[tokio::test]
async fn bad_config_files_exit_64_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = run(&["--config", missing.to_str().unwrap(), "demo"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("cannot read config file"), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "admin-addr = = nope\n").unwrap();
    let out = run(&["--config", broken.to_str().unwrap(), "demo"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("invalid config file"), "{}", stderr(&out));

    // Valid TOML, invalid value: clap rejects it like a bad flag.
    let bad_value = dir.path().join("bad-value.toml");
    std::fs::write(&bad_value, "grace = \"forever\"\n").unwrap();
    let out = run(&["--config", bad_value.to_str().unwrap(), "demo"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("forever"), "{}", stderr(&out));
}

#[tokio::test]
async fn unsupported_bus_or_store_urls_exit_64() {
    let out = run(&["tracker", "worker", "--bus", "kafka://x:9092"]).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(stderr(&out).contains("kafka://x:9092"), "{}", stderr(&out));

    let out = run(&["tracker", "worker", "--store", "mysql://x/db"]).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(stderr(&out).contains("mysql://x/db"), "{}", stderr(&out));
}

#[tokio::test]
async fn runtime_failure_exits_1_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "a file where a directory should be").unwrap();
    let data_dir = file.join("data");
    let out = switchboard()
        .args(["demo", "--admin-addr", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let msg = stderr(&out);
    assert!(msg.contains("error:") && msg.contains("plain-file"), "names the path: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_admin_endpoints_and_exits_0_on_sigint() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sb = Running::spawn(demo(data.path(), port));
    let base = format!("http://127.0.0.1:{port}");

    sb.wait_for_status(&format!("{base}/healthz"), 200).await;
    // The body of the 200 itself: a second GET could catch a component between reconnects
    // (the demo's wsserver drops its client on purpose now and then).
    let ready = sb.wait_for_status(&format!("{base}/readyz"), 200).await;
    assert!(ready.contains("\"ready\":true"), "{ready}");

    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(data.path().join("switchboard.db").exists(), "the embedded store is in --data-dir");

    sb.stop_cleanly("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_exits_0_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sb = Running::spawn(demo(data.path(), port));
    sb.wait_for_status(&format!("http://127.0.0.1:{port}/readyz"), 200).await;
    sb.stop_cleanly("TERM").await;
}

/// The admin address comes from the TOML file, unless `SWITCHBOARD_ADMIN_ADDR` is set, unless
/// `--admin-addr` is given; the `[demo]` table scopes `data-dir` to the demo subcommand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_precedence_is_flag_then_env_then_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let data = dir.path().join("from-file");
    let config = dir.path().join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "admin-addr = \"127.0.0.1:{file_port}\"\ngrace = \"{}s\"\n\n[demo]\ndata-dir = \"{}\"\n",
            GRACE.as_secs(),
            data.display()
        ),
    )
    .unwrap();

    // File only (named by --config): admin on the file's port, store in the file's data dir.
    let mut cmd = switchboard();
    cmd.args(["--config", config.to_str().unwrap(), "demo"]);
    let mut sb = Running::spawn(cmd);
    sb.wait_for_status(&format!("http://127.0.0.1:{file_port}/readyz"), 200).await;
    assert!(data.join("switchboard.db").exists(), "[demo] data-dir from the file applies");
    sb.stop_cleanly("INT").await;

    // File (named by SWITCHBOARD_CONFIG) + env: env wins.
    let mut cmd = switchboard();
    cmd.env("SWITCHBOARD_CONFIG", &config)
        .env("SWITCHBOARD_ADMIN_ADDR", format!("127.0.0.1:{env_port}"))
        .arg("demo");
    let mut sb = Running::spawn(cmd);
    sb.wait_for_status(&format!("http://127.0.0.1:{env_port}/readyz"), 200).await;
    sb.stop_cleanly("INT").await;

    // File + env + flag: the flag wins.
    let mut cmd = switchboard();
    cmd.env("SWITCHBOARD_ADMIN_ADDR", format!("127.0.0.1:{env_port}"))
        .args(["--config", config.to_str().unwrap()])
        .args(["--admin-addr", &format!("127.0.0.1:{flag_port}"), "demo"]);
    let mut sb = Running::spawn(cmd);
    sb.wait_for_status(&format!("http://127.0.0.1:{flag_port}/readyz"), 200).await;
    let env_addr = format!("http://127.0.0.1:{env_port}/healthz");
    assert!(reqwest::get(env_addr).await.is_err(), "nothing listens on the env's address");
    sb.stop_cleanly("INT").await;
}

/// The configuration contract: every flag of every command reads `SWITCHBOARD_<FLAG>` (the
/// TOML file's precedence relies on that exact name) and has a doc comment for `--help`.
/// Walks the whole command tree through `--help`, so new roles are checked as they land.
#[tokio::test]
async fn every_flag_of_every_command_has_its_env_var_and_a_description() {
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    let (mut checked, mut problems) = (0, Vec::new());
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = stdout(&run(&args).await);
        let command = format!("switchboard {}", path.join(" ")).trim_end().to_owned();
        for (flag, body) in option_blocks(&help) {
            checked += 1;
            let env = format!("[env: SWITCHBOARD_{}", flag.replace('-', "_").to_uppercase());
            if !body.contains(&env) {
                problems.push(format!("{command} --{flag}: no {env}=…]"));
            }
            if body.trim_start().starts_with('[') || body.trim().is_empty() {
                problems.push(format!("{command} --{flag}: no description"));
            }
        }
        pending.extend(subcommands(&help).into_iter().map(|sub| {
            let mut deeper = path.clone();
            deeper.push(sub);
            deeper
        }));
    }
    assert!(checked >= 10, "the walk found only {checked} flags: is the help format different?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every numeric, duration and URL flag of every command, given an unusable value, is refused
/// with exit 64 and one `error:` line naming the problem (a URL's password never shown); the
/// refusal comes before the role serves anything. Walks the command tree through `--help`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_numeric_and_url_flag_refuses_a_bad_value_with_exit_64() {
    const SECRET: &str = "planted-secret";
    let bad_url = format!("natz://user:{SECRET}@127.0.0.1:1");
    let mut cases: Vec<(Vec<String>, String, String)> = Vec::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = stdout(&run(&args).await);
        for (flag, body) in option_blocks(&help) {
            let default = body.split("[default: ").nth(1).and_then(|d| d.split(']').next());
            let value = match default {
                // Not for the global flags: they are checked with every role.
                _ if path.is_empty() => continue,
                Some(d) if d.contains("://") => bad_url.clone(),
                Some(d) if d.split(',').all(|n| n.parse::<f64>().is_ok()) => "many".to_owned(),
                Some(d) if humantime::parse_duration(d).is_ok() => "soon".to_owned(),
                _ => continue,
            };
            cases.push((path.clone(), flag, value));
        }
        pending.extend(subcommands(&help).into_iter().map(|sub| {
            let mut deeper = path.clone();
            deeper.push(sub);
            deeper
        }));
    }
    assert!(cases.len() >= 50, "the walk found only {} flags", cases.len());
    let urls = cases.iter().filter(|c| c.2 == bad_url).count();
    assert!(urls >= 10, "the walk found only {urls} URL flags");

    let problems: Vec<String> = futures::stream::iter(cases)
        .map(|(path, flag, value)| async move {
            let mut args = vec!["--admin-addr".to_owned(), "127.0.0.1:0".to_owned()];
            args.extend(path);
            args.extend([format!("--{flag}"), value]);
            let run = switchboard().args(&args).output();
            let Ok(out) = tokio::time::timeout(Duration::from_secs(30), run).await else {
                return Some(format!("{args:?}: still running after 30 s"));
            };
            let out = out.expect("run switchboard");
            let err = stderr(&out);
            let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
            if out.status.code() != Some(64) {
                Some(format!("{args:?}: exit {:?}\n{err}", out.status.code()))
            } else if errors.len() != 1 {
                Some(format!("{args:?}: {} error lines\n{err}", errors.len()))
            } else if err.contains(SECRET) || stdout(&out).contains(SECRET) {
                Some(format!("{args:?}: printed the password\n{err}"))
            } else {
                None
            }
        })
        .buffer_unordered(4)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// `(flag, text below it)` for each `--flag` of a long `--help`, except help/version. Flag
/// lines are indented by at most 6 spaces (`  -h, --help`, `      --listen <LISTEN>`), their
/// descriptions by 10.
fn option_blocks(help: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut in_options = false;
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            in_options = line == "Options:" || line == "Global Options:";
            continue;
        }
        if !in_options {
            continue;
        }
        let text = line.trim_start();
        let indent = line.len() - text.len();
        match text.split_once("--") {
            Some((short, rest)) if indent <= 6 && text.starts_with('-') && short.len() <= 4 => {
                let name = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-');
                blocks.push((name.collect(), String::new()));
            }
            _ => {
                if let Some((_, body)) = blocks.last_mut() {
                    body.push_str(text);
                    body.push('\n');
                }
            }
        }
    }
    blocks.retain(|(flag, _)| flag != "help" && flag != "version");
    blocks
}

/// Subcommand names listed under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}
