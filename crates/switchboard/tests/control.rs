//! End-to-end: the real `switchboard` binary as console server and as several agents, each
//! its own process on loopback.
use std::io::{Read as _, Write as _};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "e2e-shared-secret-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

mod support;
use support::Proc;

impl Proc {
    /// `switchboard <args>` with `token` as the shared secret and every stdio piped.
    fn control(args: &[&str], token: &str) -> Self {
        let mut cmd = Proc::command();
        cmd.args(args).env("SWITCHBOARD_TOKEN", token);
        Proc::spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()))
    }

    fn agent(url: &str, name: &str) -> Self {
        Self::control(
            &[
                "control",
                "agent",
                "--server",
                url,
                "--name",
                name,
                "--backoff-min",
                "50ms",
                "--backoff-max",
                "200ms",
            ],
            TOKEN,
        )
    }

    fn server(listen: &str, agents: usize, script: Option<&str>) -> Self {
        let n = agents.to_string();
        let mut args = vec!["control", "server", "--listen", listen, "--wait-agents", &n];
        if let Some(s) = script {
            args.extend(["--exec", s]);
        }
        Self::control(&args, TOKEN)
    }

    /// Waits for exit (failing after `DEADLINE`); returns status, stdout, stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        drop(self.child.stdin.take());
        let status = self.exit_within(DEADLINE, "process did not exit within the deadline");
        let (out, err) = self.read_all();
        (status, out, err)
    }

    fn read_all(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (out, err)
    }
}

fn addr() -> (String, String) {
    let listen = format!("127.0.0.1:{}", switchboard_testkit::free_port());
    let url = format!("http://{listen}");
    (listen, url)
}

fn line<'a>(out: &'a str, prefix: &str) -> (usize, &'a str) {
    out.lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"))
}

fn assert_recent_unix_time(text: &str) {
    let t: u64 = text.trim().parse().unwrap_or_else(|_| panic!("not a timestamp: {text:?}"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(t.abs_diff(now) < 60, "ping returned {t}, now is {now}");
}

#[test]
fn console_drives_several_agents_through_the_state_machine() {
    let (listen, url) = addr();
    // Agents start first: they retry with backoff until the console listens.
    let agents: Vec<Proc> = ["a1", "a2", "a3"].iter().map(|n| Proc::agent(&url, n)).collect();
    let script = r#"ping; start; @a1 ping; @a1 calculate 1.5 "slow a1"; @a1 ping; @a2 stop; @a2 ping;
        all calculate 0.2 "quick"; wait; agents; all terminate"#;
    let (status, out, err) = Proc::server(&listen, 3, Some(script)).finish();
    assert!(status.success(), "server failed: {err}\n{out}");

    for a in ["a1", "a2", "a3"] {
        assert!(line(&out, &format!("[{a}] ping #")).1.contains("refused (not_ready)"), "{out}");
        assert!(line(&out, &format!("[{a}] start #")).1.ends_with("ok, ready"), "{out}");
        assert!(line(&out, &format!("[{a}] terminate #")).1.ends_with("ok, terminated"), "{out}");
    }
    // a1's ping after the slow calculation is answered long before that calculation ends.
    let lines: Vec<&str> = out.lines().collect();
    let (accepted, text) = line(&out, "[a1] calculate #");
    assert!(text.ends_with("-> accepted (1 in flight)"), "{text}");
    let id = text.split_whitespace().nth(2).unwrap();
    let (finished, done) = line(&out, &format!("[a1] calculate {id} -> finished"));
    assert!(done.ends_with(": slow a1"), "{done}");
    let pong = lines[accepted + 1];
    assert!(pong.starts_with("[a1] ping #") && accepted + 1 < finished, "{out}");
    assert_recent_unix_time(pong.split("-> ").nth(1).unwrap());
    let after_stop: Vec<&&str> = lines.iter().skip_while(|l| !l.starts_with("[a2] stop")).collect();
    let a2_ping = after_stop.iter().find(|l| l.starts_with("[a2] ping")).expect("a2 pinged");
    assert!(a2_ping.contains("refused (not_ready)"), "{out}");
    let calc = |a: &str, text: &str| {
        lines.iter().any(|l| l.starts_with(&format!("[{a}] calculate")) && l.contains(text))
    };
    assert!(calc("a2", "refused (not_ready)"), "{out}");
    assert!(calc("a1", ": quick") && calc("a3", ": quick"), "{out}");
    assert!(out.contains("a2                       unready"), "agents lists states: {out}");

    for (name, agent) in ["a1", "a2", "a3"].iter().zip(agents) {
        let (status, stdout, err) = agent.finish();
        assert!(status.success(), "{name} did not exit 0 after terminate: {err}");
        let printed: Vec<&str> = stdout.lines().collect();
        match *name {
            "a1" => assert_eq!(printed, ["quick", "slow a1"], "{name}"),
            "a2" => assert!(printed.is_empty(), "a2 was unready: {printed:?}"),
            _ => assert_eq!(printed, ["quick"], "{name}"),
        }
    }
}

#[test]
fn terminate_cancels_running_calculations_and_the_agent_exits_0() {
    let (listen, url) = addr();
    let agent = Proc::agent(&url, "busy");
    let script = r#"start; calculate 30 "never printed"; calculate 20 "nor this"; terminate"#;
    let started = Instant::now();
    let (status, out, err) = Proc::server(&listen, 1, Some(script)).finish();
    assert!(status.success(), "{err}\n{out}");
    let (status, stdout, err) = agent.finish();
    assert!(status.success(), "agent exit: {status:?} {err}");
    assert!(started.elapsed() < Duration::from_secs(15), "terminate did not cut the work short");
    assert!(stdout.is_empty(), "cancelled work printed: {stdout}");
    let cancelled =
        out.lines().filter(|l| l.contains("-> cancelled: agent is terminating")).count();
    assert_eq!(cancelled, 2, "{out}");
    assert!(line(&out, "[busy] terminate #").1.ends_with("ok, terminated"), "{out}");
}

#[test]
fn agent_reconnects_to_a_restarted_console_and_keeps_its_state() {
    let (listen, url) = addr();
    let agent = Proc::agent(&url, "steady");
    let (status, out, err) = Proc::server(&listen, 1, Some("start")).finish();
    assert!(status.success() && out.contains("[steady] start #1 -> ok, ready"), "{err}\n{out}");
    // A new console on the same address: the agent reattaches, still ready.
    let (status, out, err) = Proc::server(&listen, 1, Some("ping; terminate")).finish();
    assert!(status.success(), "{err}\n{out}");
    assert_recent_unix_time(line(&out, "[steady] ping #").1.split("-> ").nth(1).unwrap());
    assert!(agent.finish().0.success());
}

#[test]
fn wrong_token_is_refused_and_piped_commands_work() {
    let (listen, url) = addr();
    // The console reads commands from its stdin, kept open until the intruder is dealt with.
    let mut server = Proc::server(&listen, 1, None);
    let mut stdin = server.child.stdin.take().unwrap();
    let intruder = Proc::control(
        &["control", "agent", "--server", &url, "--name", "intruder", "--backoff-max", "200ms"],
        "not-the-token",
    );
    let good = Proc::agent(&url, "good");
    let (status, _, err) = intruder.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the server refused our credentials: missing or wrong token"), "{err}");
    writeln!(stdin, "rm -rf /\ncalculate NaN boom\n@intruder ping\nstart; ping\nagents\nterminate")
        .unwrap();
    drop(stdin);
    let (status, out, err) = server.finish();
    assert!(status.success(), "{err}\n{out}");
    assert!(out.contains("error: unknown command `rm`"), "{out}");
    assert!(out.contains("error: x must be a finite number, got NaN"), "{out}");
    assert!(
        out.contains("[intruder] ping -> error: no agent named `intruder` is attached"),
        "{out}"
    );
    assert_recent_unix_time(line(&out, "[good] ping #").1.split("-> ").nth(1).unwrap());
    assert!(!out.contains("intruder     "), "the intruder never appears in `agents`: {out}");
    assert!(good.finish().0.success());
}

/// Streams a child's stdout lines to the test, so it can wait for one with a deadline.
fn stdout_lines(p: &mut Proc) -> std::sync::mpsc::Receiver<String> {
    let out = p.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn await_line(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

#[test]
fn sigterm_drains_the_agent_and_the_console_and_both_exit_0() {
    let (listen, url) = addr();
    let agent = Proc::agent(&url, "drained");
    let mut server = Proc::control(
        &["control", "server", "--listen", &listen, "--wait-agents", "1", "--stay"],
        TOKEN,
    );
    server.child.stdin.take().map(|mut s| writeln!(s, "start; calculate 30 \"cut short\""));
    let lines = stdout_lines(&mut server);
    await_line(&lines, "[drained] calculate #2 -> accepted");

    agent.sigterm();
    let line = await_line(&lines, "[drained] calculate #2 ->");
    assert!(line.ends_with("cancelled: agent is terminating"), "{line}");
    let (status, stdout, err) = agent.finish();
    assert!(status.success(), "agent after SIGTERM: {status:?} {err}");
    assert!(stdout.is_empty(), "{stdout}");

    server.sigterm();
    let (status, _, err) = server.finish();
    assert!(status.success(), "console after SIGTERM: {status:?} {err}");
}

/// The message limit end to end, on real processes: the console accepts up to its ceiling
/// (65,536 bytes), each agent up to its `--max-msg-bytes`. Below and at a limit the command
/// runs; above it the first layer that sees it refuses it clearly, and the session keeps
/// serving (no oversized gRPC message, no reconnect, no lost command).
#[test]
fn message_limits_agree_from_console_to_agent() {
    let ceiling = switchboard_control::MAX_MSG_BYTES;
    let (listen, url) = addr();
    let small = Proc::agent(&url, "small"); // --max-msg-bytes 1024 (the default)
    let big = Proc::control(
        &[
            "control",
            "agent",
            "--server",
            &url,
            "--name",
            "big",
            "--max-msg-bytes",
            &ceiling.to_string(),
        ],
        TOKEN,
    );
    let msg = |n: usize| "m".repeat(n);
    // Piped on stdin, one command per line: the script is bigger than one argv string may be.
    let mut script = String::from("start\n");
    for n in [1023, 1024, 1025, 20_000] {
        script.push_str(&format!("@small calculate 0 \"{}\"\n", msg(n)));
    }
    script.push_str("@small ping\n");
    for n in [ceiling - 1, ceiling, ceiling + 1] {
        script.push_str(&format!("@big calculate 0 \"{}\"\n", msg(n)));
    }
    script.push_str("@big ping\nwait\nall terminate\n");
    let mut server = Proc::server(&listen, 2, None);
    let mut stdin = server.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    // Outputs of 64 KiB lines would fill the pipes: drain them while the processes run.
    let (mut small, mut big) = (small, big);
    let drains: Vec<_> = [&mut server, &mut small, &mut big].map(drain_stdout).into();
    let (status, _, err) = server.finish();
    writer.join().unwrap().unwrap();
    let mut outs = drains.into_iter().map(|d| d.join().unwrap());
    let out = outs.next().unwrap();
    assert!(status.success(), "server failed: {err}\n{out}");
    assert!(!out.contains("disconnected") && !err.contains("disconnected"), "{out}\n{err}");
    let replies = |agent: &str, verb: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with(&format!("[{agent}] {verb} #")) && !l.contains("-> finished"))
            .map(|l| l.split("-> ").nth(1).unwrap_or_default().to_owned())
            .collect()
    };
    let small_calcs = replies("small", "calculate");
    assert_eq!(small_calcs.len(), 4, "{out}");
    assert!(
        small_calcs[0].starts_with("accepted") && small_calcs[1].starts_with("accepted"),
        "{out}"
    );
    for refused in &small_calcs[2..] {
        assert!(refused.starts_with("refused (invalid_argument)"), "{refused}");
    }
    let big_calcs = replies("big", "calculate");
    assert_eq!(big_calcs.len(), 2, "limit+1 never leaves the console: {out}");
    assert!(big_calcs.iter().all(|r| r.starts_with("accepted")), "{out}");
    assert!(
        out.contains(&format!("over {ceiling}")) || out.contains(&ceiling.to_string()),
        "the console says why: {out}"
    );
    for agent in ["small", "big"] {
        assert_recent_unix_time(&replies(agent, "ping")[0]);
    }
    for (p, printed) in [small, big].into_iter().zip(outs) {
        let (status, _, err) = p.finish();
        assert!(status.success(), "{err}");
        assert_eq!(printed.lines().count(), 2, "each agent printed its two accepted messages");
    }
}

/// Reads `p`'s stdout to its end on a thread.
fn drain_stdout(p: &mut Proc) -> std::thread::JoinHandle<String> {
    let mut pipe = p.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// As in a container (`docker run -i`, compose `stdin_open`): stdin stays open and nothing is
/// typed. The blocking read of stdin must not keep the process alive after the drain.
#[test]
fn sigterm_stops_a_console_whose_stdin_stays_open() {
    let (listen, _) = addr();
    let mut server = Proc::control(&["control", "server", "--listen", &listen, "--stay"], TOKEN);
    let open_stdin = server.child.stdin.take();
    await_listening(&listen);
    let sent = Instant::now();
    server.sigterm();
    let (status, _, err) = server.finish();
    drop(open_stdin);
    assert!(status.success(), "console with open stdin after SIGTERM: {status:?} {err}");
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?}", sent.elapsed());
}

#[test]
fn mutual_tls_between_console_and_agent() {
    let dir = std::env::temp_dir().join(format!("control-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    switchboard_testkit::make_certs(&dir);
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (listen, _) = addr();
    let url = format!("https://{listen}");
    let agent = Proc::control(
        &[
            "control",
            "agent",
            "--server",
            &url,
            "--name",
            "secure",
            "--tls-ca",
            &path("ca.pem"),
            "--tls-cert",
            &path("client.pem"),
            "--tls-key",
            &path("client.key"),
            "--backoff-max",
            "200ms",
        ],
        TOKEN,
    );
    // No client certificate: the handshake fails, this agent never attaches.
    let anonymous = Proc::control(
        &["control", "agent", "--server", &url, "--name", "anonymous", "--tls-ca", &path("ca.pem")],
        TOKEN,
    );
    let server = Proc::control(
        &[
            "control",
            "server",
            "--listen",
            &listen,
            "--wait-agents",
            "1",
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
            "--tls-client-ca",
            &path("ca.pem"),
            "--exec",
            "start; ping; agents; terminate",
        ],
        TOKEN,
    );
    let (status, out, err) = server.finish();
    assert!(status.success(), "{err}\n{out}");
    assert_recent_unix_time(line(&out, "[secure] ping #").1.split("-> ").nth(1).unwrap());
    assert!(!out.contains("anonymous"), "an agent without a client certificate attached: {out}");
    assert!(agent.finish().0.success());
    drop(anonymous);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls until something listens on `listen` (the console bound its port).
fn await_listening(listen: &str) {
    let deadline = Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {listen}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_while_waiting_for_agents_exits_0_at_once() {
    let (listen, _) = addr();
    let server = Proc::control(
        &["control", "server", "--listen", &listen, "--wait-agents", "1", "--wait-timeout", "60s"],
        TOKEN,
    );
    await_listening(&listen);
    let sent = Instant::now();
    server.sigterm();
    let (status, _, err) = server.finish();
    assert!(status.success(), "console stopped while waiting: {status:?} {err}");
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?}", sent.elapsed());
}

#[test]
fn invalid_flag_values_exit_64_before_anything_starts() {
    let (listen, url) = addr();
    let agent = |extra: &[&str], token: &str| {
        let mut args = vec!["control", "agent", "--server", &url, "--name", "bad"];
        args.extend(extra);
        Proc::control(&args, token).finish()
    };
    for (extra, token, needle) in [
        (&["--max-in-flight", "0"][..], TOKEN, "--max-in-flight"),
        (&["--max-x", "inf"][..], TOKEN, "--max-x"),
        (&["--max-x", "1e300"][..], TOKEN, "--max-x"),
        (&["--token", ""][..], TOKEN, "--token"),
    ] {
        let (status, _, err) = agent(extra, token);
        assert_eq!(status.code(), Some(64), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let server = Proc::control(&["control", "server", "--listen", &listen, "--token", ""], TOKEN);
    let (status, _, err) = server.finish();
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("--token"), "{err}");
}

#[test]
fn unusable_server_url_or_token_fails_at_once_instead_of_retrying() {
    for (server, token, needle) in [
        ("http://[::1", TOKEN, "--server"),
        ("127.0.0.1:7070", TOKEN, "http://127.0.0.1:7070"),
        ("ftp://127.0.0.1:7070", TOKEN, "http://host:port"),
        ("http://127.0.0.1:9", "control\u{1}char", "--token must be printable ASCII"),
    ] {
        let agent = Proc::control(&["control", "agent", "--server", server, "--name", "x"], token);
        let (status, _, err) = agent.finish();
        assert_eq!(status.code(), Some(64), "a configuration error: {server}: {err}");
        assert!(err.contains(needle), "{server}: {err}");
    }
}

/// A console whose stdin is not a terminal and ends at once (a pipe from nothing, /dev/null,
/// a service manager) exits 0 but says on stderr that it had nothing to run.
#[test]
fn console_with_empty_stdin_says_it_had_nothing_to_run() {
    let (listen, _) = addr();
    let (status, _, err) =
        Proc::control(&["control", "server", "--listen", &listen], TOKEN).finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("stdin ended before any command"), "{err}");

    let (listen, _) = addr();
    let server =
        Proc::control(&["control", "server", "--listen", &listen, "--exec", "help"], TOKEN);
    let (status, _, err) = server.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("stdin ended"), "a script is not stdin: {err}");
}

/// Agents that do not come within `--wait-timeout` are a runtime failure (exit 1, as `--help`
/// says), not a configuration error.
#[test]
fn wait_timeout_exits_1_naming_the_count() {
    let (listen, _) = addr();
    let args = ["control", "server", "--listen", &listen, "--wait-agents", "2"];
    let server =
        Proc::control(&[&args[..], &["--wait-timeout", "300ms", "--exec", "ping"]].concat(), TOKEN);
    let (status, _, err) = server.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("only 0 of 2 agents attached"), "{err}");
}
