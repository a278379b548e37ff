//! README.md, run: every fenced `sh` block of "The services" and of distributed mode "On one
//! machine", line by line, with the built binary first on `PATH`, so the README cannot drift
//! from what the binary does. Blocks that build or need Docker are skipped by heading.
//!
//! A line is run as a user pasting it would: long-running roles start in the background (stdin
//! kept open, like a terminal nobody types in) and must be ready before the next one-shot line
//! runs; one-shot lines must exit 0 (a `# → N` comment is the output they must reach); bench
//! lines are checked with `--help` (their flags parse) rather than run for minutes;
//! `export` lines set the environment of the lines after them. `<placeholders>` are filled
//! from what `scripts/dev-engines.sh` prints. At the end every role still running must stop
//! with exit 0 on SIGTERM, and none may have failed on its own.
//!
//! The README's ports are fixed (that is the point of it), so they must be free here: runs of
//! this test on one machine (several worktrees) take turns through a lock file, and a port
//! held by anything else fails the test up front, naming the port.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard_testkit::free_port;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// How long a background role may take to become ready, and a one-shot line to succeed.
const DEADLINE: Duration = Duration::from_secs(60);
/// Headings whose blocks are not run: they build the workspace, run the whole test suite, or
/// need a Docker engine.
const SKIPPED: [&str; 2] = ["Set up on a fresh machine", "In containers"];

/// One fenced `sh` block and the heading above it.
struct Block {
    heading: String,
    lines: Vec<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let (mut out, mut heading, mut current) = (Vec::new(), String::new(), None::<Vec<String>>);
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => {
                let lines = current.take().unwrap_or_default();
                out.push(Block { heading: heading.clone(), lines });
            }
            (Some(lines), l) => lines.push(l.to_owned()),
            (None, l) if l.starts_with('#') => heading = l.trim_start_matches('#').trim().into(),
            (None, _) => {}
        }
    }
    out
}

/// How a README line is run.
#[derive(Debug, PartialEq)]
enum Kind {
    /// A role: in the background, ready (`/readyz` 200) before the next one-shot line.
    Role,
    /// An agent: in the background; ready only once its console runs, which may come later.
    Agent,
    /// `scripts/dev-engines.sh`: in the background; prints the engine URLs.
    Engines,
    /// Runs to completion; must exit 0.
    OneShot,
    /// A benchmark: its flags are checked with `--help`.
    Bench,
    /// `export K=V`.
    Export,
}

fn kind(command: &str) -> Kind {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["export", ..] => Kind::Export,
        ["curl", ..] => Kind::OneShot,
        [script, ..] if script.ends_with("scripts/dev-engines.sh") => Kind::Engines,
        ["switchboard", "bench", ..] => Kind::Bench,
        ["switchboard", "jobclient", ..] | ["switchboard", "presence", "online", ..] => {
            Kind::OneShot
        }
        ["switchboard", "control", "server", rest @ ..] if rest.contains(&"--exec") => {
            Kind::OneShot
        }
        ["switchboard", "control", "agent", ..] => Kind::Agent,
        [
            "switchboard",
            "sim" | "aggregator" | "presence" | "jobproxy" | "control" | "tracker",
            ..,
        ] => Kind::Role,
        _ => panic!("README line of an unknown kind (teach tests/readme.rs about it): {command}"),
    }
}

/// A background process started from a README line.
struct Background {
    line: String,
    child: Child,
    admin: Option<u16>,
    log: PathBuf,
    /// How often it was started again after its port was taken (see `check_alive`).
    restarts: u32,
}

impl Drop for Background {
    /// On a failing test the engines script must run its trap (stop NATS and PostgreSQL,
    /// delete their data): SIGKILL (`kill_on_drop`) would leave both engines running.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        if kind(&self.line) != Kind::Engines {
            return;
        }
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs README lines in `dir` with the environment they build up.
struct Session {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    placeholders: HashMap<String, String>,
    background: Vec<Background>,
}

impl Session {
    fn new() -> Self {
        let bin_dir = Path::new(BIN).parent().unwrap().to_str().unwrap().to_owned();
        let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
        let env = HashMap::from([("PATH".to_owned(), path), ("RUST_LOG".into(), "info".into())]);
        Self {
            dir: tempfile::tempdir().unwrap(),
            env,
            placeholders: HashMap::new(),
            background: Vec::new(),
        }
    }

    /// `bash -c` of `line` with a hermetic environment (nothing `SWITCHBOARD_*` inherited).
    fn bash(&self, line: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(line).current_dir(self.dir.path()).kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("SWITCHBOARD_") || k.starts_with("OTEL_"))
            {
                cmd.env_remove(key);
            }
        }
        cmd.envs(&self.env);
        cmd
    }

    fn fill(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for (placeholder, value) in &self.placeholders {
            line = line.replace(placeholder, value);
        }
        assert!(!line.contains(" <") || line.contains("<<"), "unfilled placeholder: {line}");
        line
    }

    async fn run_line(&mut self, raw: &str) {
        let line = self.fill(raw);
        let (command, comment) = line.split_once(" #").unwrap_or((&line, ""));
        match kind(command) {
            Kind::Export => self.export(command).await,
            Kind::Bench => {
                let out = self.bash(&format!("{command} --help")).output().await.unwrap();
                assert!(out.status.success(), "{command} --help: {out:?}");
            }
            Kind::OneShot => self.one_shot(command, comment).await,
            Kind::Role => self.start(command, true).await,
            Kind::Agent => self.start(command, false).await,
            Kind::Engines => self.engines(command).await,
        }
    }

    async fn export(&mut self, command: &str) {
        let (key, value) = command.trim_start_matches("export ").split_once('=').unwrap();
        let out = self.bash(&format!("printf '%s' {value}")).output().await.unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        self.env.insert(key.to_owned(), String::from_utf8(out.stdout).unwrap());
    }

    /// Runs `command` until it exits 0 (and prints the `→ N` of its comment, if any); the
    /// background roles before it are ready by then.
    async fn one_shot(&mut self, command: &str, comment: &str) {
        self.wait_ready().await;
        let expected = comment.split_once('→').map(|(_, n)| n.trim().to_owned());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = tokio::time::timeout(DEADLINE, self.bash(command).output())
                .await
                .unwrap_or_else(|_| panic!("{command} did not finish within {DEADLINE:?}"))
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let done = out.status.success() && expected.as_ref().is_none_or(|want| stdout == *want);
            if done {
                return;
            }
            // Only a count that is still climbing is retried; a failure is a failure.
            if !out.status.success() || Instant::now() > deadline {
                self.dump_logs();
                panic!("{command}: expected {expected:?}, got {out:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn start(&mut self, command: &str, must_be_ready: bool) {
        let log = self.dir.path().join(format!("{}.log", self.background.len()));
        let started = self.spawn(command, must_be_ready, log);
        self.background.push(started);
    }

    fn spawn(&self, command: &str, must_be_ready: bool, log: PathBuf) -> Background {
        let admin = free_port();
        let mut cmd = self.bash(&format!("exec {command}"));
        cmd.env("SWITCHBOARD_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let admin = must_be_ready.then_some(admin);
        Background { line: command.to_owned(), child, admin, log, restarts: 0 }
    }

    /// Starts the engines script and learns the values of the README's placeholders from
    /// the `export` lines it prints.
    async fn engines(&mut self, command: &str) {
        let script = command.split_whitespace().next().unwrap();
        let path = Path::new(REPO).join(script.trim_start_matches("./"));
        let log = self.dir.path().join("engines.log");
        let mut child = Command::new("bash")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut found = 0;
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let Some((key, url)) = line.strip_prefix("export ").and_then(|l| l.split_once('='))
                else {
                    continue;
                };
                let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
                let placeholder = match key {
                    "SWITCHBOARD_BUS" => "<nats-port>",
                    "SWITCHBOARD_STORE" => "<pg-port>",
                    other => panic!("dev-engines.sh printed an unexpected {other}"),
                };
                self.placeholders.insert(placeholder.into(), port.into());
                found += 1;
                if found == 2 {
                    return;
                }
            }
            panic!("dev-engines.sh ended early: {}", std::fs::read_to_string(&log).unwrap());
        };
        tokio::time::timeout(DEADLINE, read).await.expect("dev-engines.sh prints its URLs");
        self.background.push(Background {
            line: command.into(),
            child,
            admin: None,
            log,
            restarts: 0,
        });
    }

    /// Waits until every background role answers `/readyz` with 200, and none has failed.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        for i in 0..self.background.len() {
            loop {
                self.check_alive();
                let Some(admin) = self.background[i].admin else { break };
                let url = format!("http://127.0.0.1:{admin}/readyz");
                if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                    break;
                }
                if Instant::now() > deadline {
                    self.dump_logs();
                    panic!("{} was not ready within {DEADLINE:?}", self.background[i].line);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Panics if a background process exited with a failure. One whose documented port was
    /// taken is started again: the README's gRPC ports lie in Linux's ephemeral range, and
    /// an outgoing connection made after [`wait_bindable`] (a role's own, to NATS or
    /// PostgreSQL) can get one as its local port. That collision is the machine's, not a
    /// wrong line.
    fn check_alive(&mut self) {
        for i in 0..self.background.len() {
            let status = self.background[i].child.try_wait().unwrap();
            if status.is_some_and(|s| !s.success()) {
                let b = &self.background[i];
                let log = std::fs::read_to_string(&b.log).unwrap_or_default();
                if b.restarts < 3 && log.contains("Address already in use") {
                    eprintln!("  (a port of `{}` was taken by another socket; again)", b.line);
                    let (line, ready, restarts) = (b.line.clone(), b.admin.is_some(), b.restarts);
                    let retry = b.log.with_extension(format!("retry{restarts}.log"));
                    let mut again = self.spawn(&line, ready, retry);
                    again.restarts = restarts + 1;
                    self.background[i] = again;
                    continue;
                }
                self.dump_logs();
                panic!("`{}` failed on its own: {status:?}", self.background[i].line);
            }
        }
    }

    fn dump_logs(&self) {
        for b in &self.background {
            let log = std::fs::read_to_string(&b.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- {} (last lines)", b.line);
            for l in tail.iter().rev() {
                eprintln!("    {l}");
            }
        }
    }

    /// SIGTERM to every background process, last started first; each switchboard role must
    /// exit 0 (the engines script, last, ends by the signal).
    async fn stop(mut self) {
        self.check_alive();
        while let Some(mut b) = self.background.pop() {
            let Some(pid) = b.child.id() else { continue };
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            let status = tokio::time::timeout(Duration::from_secs(20), b.child.wait())
                .await
                .unwrap_or_else(|_| panic!("`{}` did not stop on SIGTERM", b.line))
                .unwrap();
            if kind(&b.line) != Kind::Engines && !status.success() {
                let line = b.line.clone();
                self.background.push(b);
                self.dump_logs();
                panic!("`{line}` exited with {status} on SIGTERM");
            }
        }
    }
}

/// Loopback ports the README's lines listen on: every `127.0.0.1:<port>`, plus the defaults
/// its lines rely on without naming them.
fn readme_ports(readme: &str) -> std::collections::BTreeSet<u16> {
    let named = readme.split("127.0.0.1:").skip(1).filter_map(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    // `presence all`'s gateway and status, the tracker collector.
    named.chain([50051, 50052, 8090]).collect()
}

/// Waits until every port in `ports` can be bound. 50051 and up lie in Linux's ephemeral
/// range: an earlier outgoing connection (this test's own, to PostgreSQL) may have used one as
/// its local port and hold it in TIME_WAIT for a minute, and binding fails until then.
async fn wait_bindable(ports: &std::collections::BTreeSet<u16>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for port in ports {
        while std::net::TcpListener::bind(("127.0.0.1", *port)).is_err() {
            assert!(Instant::now() < deadline, "127.0.0.1:{port} stayed unbindable for 2 min");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Every block the README asks a newcomer to run, run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_commands_work_as_written() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let lock = std::fs::File::create(std::env::temp_dir().join("switchboard-readme-test.lock"))
        .expect("create the lock file");
    tokio::task::block_in_place(|| lock.lock()).expect("take turns with other runs");
    let ports = readme_ports(&readme);
    let busy: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        .collect();
    assert!(busy.is_empty(), "another process listens on the README's ports {busy:?}");
    let blocks = blocks(&readme);
    let mut ran = Vec::new();
    for block in blocks.iter().filter(|b| !SKIPPED.iter().any(|s| b.heading.starts_with(s))) {
        eprintln!("== {}", block.heading);
        wait_bindable(&ports).await;
        let mut session = Session::new();
        for line in block.lines.iter().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            eprintln!("$ {line}");
            session.run_line(line).await;
        }
        session.wait_ready().await;
        session.stop().await;
        ran.push(block.heading.clone());
    }
    for service in ["aggregator", "presence", "jobproxy", "control", "tracker", "On one machine"] {
        assert!(ran.iter().any(|h| h.starts_with(service)), "no {service} block ran: {ran:?}");
    }
}

/// The `switchboard …` command lines of a Markdown file's `sh` blocks (continuations joined,
/// comments and pipes cut off), whichever program runs them (`./target/release/switchboard`,
/// after `VAR=value`, behind `printf … |`).
fn switchboard_commands(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut joined = String::new();
    for block in blocks(markdown) {
        for line in block.lines {
            if let Some(head) = line.strip_suffix('\\') {
                joined.push_str(head);
                continue;
            }
            joined.push_str(&line);
            lines.push(std::mem::take(&mut joined));
        }
    }
    let mut commands = Vec::new();
    for line in lines {
        let line = line.split(" #").next().unwrap_or_default();
        // A pipe or `&&` starts another command; a trailing `&` (run in the background) is no
        // part of it (kept, the appended `--help` would run on its own and the command forever).
        let line = line.trim_end();
        let line = line.strip_suffix('&').filter(|l| !l.ends_with('&')).unwrap_or(line);
        for segment in line.split("&&").flat_map(|s| s.split('|')) {
            let words: Vec<&str> =
                segment.split_whitespace().skip_while(|w| w.contains('=')).collect();
            if words.first().is_some_and(|w| *w == "switchboard" || w.ends_with("/switchboard")) {
                commands.push(words[1..].join(" "));
            }
        }
    }
    commands
}

/// Every `switchboard …` line of README.md and of every docs page parses: its subcommand and
/// flags exist and their values are valid (checked with `--help` appended, so nothing runs).
/// The pages' blocks name hosts of a deployment, so they are not run as the README's are.
#[tokio::test]
async fn every_switchboard_command_in_the_docs_parses() {
    let mut files = vec![Path::new(REPO).join("README.md")];
    let docs = std::fs::read_dir(Path::new(REPO).join("docs")).unwrap();
    files.extend(
        docs.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let session = Session::new();
    let (mut checked, mut problems) = (0, Vec::new());
    for file in &files {
        for args in switchboard_commands(&std::fs::read_to_string(file).unwrap()) {
            checked += 1;
            let out = session.bash(&format!("switchboard {args} --help")).output().await.unwrap();
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                problems.push(format!("{}: switchboard {args}\n{err}", file.display()));
            }
        }
    }
    assert!(checked >= 30, "only {checked} commands found: is the extraction broken?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
