//! End to end on the real binary: `switchboard sim jobserver`, `switchboard jobproxy` and
//! `switchboard jobclient` as three processes on loopback.
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard_testkit::free_port;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A role of the binary running in the background, killed if the test fails.
struct Role {
    child: Child,
    admin: String,
}

impl Role {
    /// Starts `switchboard <args…>` and waits until its `/readyz` answers 200.
    async fn start(args: &[&str]) -> Self {
        let admin = format!("127.0.0.1:{}", free_port());
        let child = Command::new(BIN)
            .args(args)
            .args(["--admin-addr", &admin])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard");
        let role = Self { child, admin: format!("http://{admin}") };
        let ready = format!("{}/readyz", role.admin);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&ready).await
                && r.status() == 200
            {
                return role;
            }
            assert!(Instant::now() < end, "{args:?} did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of an unlabelled metric, 0 when absent.
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin)).await.unwrap();
        let text = text.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGTERM, then the exit code.
    async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().expect("still running").to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        status.expect("exits after SIGTERM").unwrap().code()
    }
}

fn listen() -> (String, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (addr.clone(), format!("http://{addr}"))
}

async fn jobclient(url: &str) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["jobclient", "--url", url, "--account", "acme", "--jobs", "50", "--deadline", "5s"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn fifty_jobs_pass_through_the_proxy_well_inside_five_seconds() {
    let (sim_addr, sim_url) = listen();
    let sim = Role::start(&["sim", "jobserver", "--listen", &sim_addr]).await;
    let (proxy_addr, proxy_url) = listen();
    let proxy = Role::start(&["jobproxy", "--listen", &proxy_addr, "--upstream", &sim_url]).await;

    let (code, out) = jobclient(&proxy_url).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Succeeded: 50/50"), "{out}");
    assert!(out.contains("RESULT: PASSED"), "{out}");
    let total: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Total Duration: ")?.strip_suffix('s')?.parse().ok())
        .expect("a total duration");
    assert!(total < 3.0, "50 jobs of 0.5 s took {total} s, not well inside 5 s");

    assert_eq!(sim.metric("jobserver_connections_total").await, 1.0, "one upstream socket");
    assert_eq!(proxy.metric("jobproxy_held_requests").await, 0.0);
    assert_eq!(proxy.terminate().await, Some(0));
    assert_eq!(sim.terminate().await, Some(0));
}

#[tokio::test]
async fn the_jobclient_fails_when_the_job_server_fails() {
    let (sim_addr, sim_url) = listen();
    let sim =
        Role::start(&["sim", "jobserver", "--listen", &sim_addr, "--fail-start-rate", "1"]).await;
    let (proxy_addr, proxy_url) = listen();
    let proxy = Role::start(&["jobproxy", "--listen", &proxy_addr, "--upstream", &sim_url]).await;
    let (code, out) = jobclient(&proxy_url).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("RESULT: FAILED") && out.contains("502"), "{out}");
    assert_eq!(proxy.metric("jobproxy_held_requests").await, 0.0);
    drop((sim, proxy));
}

#[tokio::test]
async fn a_bad_upstream_url_is_a_configuration_error() {
    let out =
        Command::new(BIN).args(["jobproxy", "--upstream", "ftp://jobs"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only http://"));
}

#[tokio::test]
async fn zero_bounds_are_configuration_errors() {
    for flag in ["--max-held", "--account-queue"] {
        let args = ["jobproxy", "--upstream", "http://127.0.0.1:9", flag, "0"];
        let out = Command::new(BIN).args(args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(64), "{flag} 0");
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag), "{flag} 0");
    }
}

#[tokio::test]
async fn sigterm_answers_held_requests_within_the_grace() {
    let (sim_addr, sim_url) = listen();
    let sim = Role::start(&["sim", "jobserver", "--listen", &sim_addr, "--job-time", "60s"]).await;
    let (proxy_addr, proxy_url) = listen();
    let flags = ["--listen", &proxy_addr, "--upstream", &sim_url, "--drain-timeout", "1s"];
    let proxy = Role::start(&[&["jobproxy"], &flags[..]].concat()).await;
    let held = tokio::spawn(async move {
        let body = serde_json::json!({"account": "acme", "wait": true});
        let res = reqwest::Client::new().post(proxy_url).json(&body).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    });
    let end = Instant::now() + Duration::from_secs(10);
    while proxy.metric("jobproxy_held_requests").await < 1.0 {
        assert!(Instant::now() < end, "the job was never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let began = Instant::now();
    assert_eq!(proxy.terminate().await, Some(0));
    assert!(began.elapsed() < Duration::from_secs(10), "exited after the grace");
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    drop(sim);
}

/// A job server of the test's own, on raw HTTP/1.1 keep-alive connections: it answers each
/// asynchronous start with `running` and then posts a report padded to the `reportBytes`
/// the client put in its request (the proxy forwards unknown fields), so the test controls
/// the callback's size to the byte. Each callback's status goes to the returned channel.
async fn padding_job_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, u16)>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut next_id = 0u64;
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            next_id += 1 << 32;
            tokio::spawn(async move {
                let mut conn = BufReader::new(stream);
                for job in next_id.. {
                    let mut length = None;
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap() == 0 {
                            return; // the proxy closed an idle link
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse::<usize>().ok();
                        }
                    }
                    let mut body = vec![0; length.expect("the proxy sends content-length")];
                    conn.read_exact(&mut body).await.unwrap();
                    let start: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let id = format!("{job:x}");
                    let answer = format!(r#"{{"state":"running","id":"{id}"}}"#);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    );
                    conn.write_all(format!("{head}{answer}").as_bytes()).await.unwrap();
                    let size = start["reportBytes"].as_u64().unwrap() as usize;
                    let callback = start["callback"].as_str().unwrap().to_owned();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let report = padded_report(&id, size);
                        let res = reqwest::Client::new().post(callback).body(report.clone());
                        let status = res.send().await.unwrap().status().as_u16();
                        let _ = tx.send((report, status));
                    });
                }
            });
        }
    });
    (url, rx)
}

/// A callback the proxy took: 200 delivered, or 202 when it beat the start response (the
/// test's job server calls back at once) and was parked until the start named the job.
fn assert_accepted(status: u16) {
    assert!(status == 200 || status == 202, "callback answered {status}");
}

/// A completed report of exactly `size` bytes.
fn padded_report(id: &str, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"{id}","state":"completed","startedAt":"2026-12-05T00:00:00.000Z","proof":"{}","pad":""#,
        "AB".repeat(20)
    );
    let mut report = head.into_bytes();
    let pad = size - report.len() - 2;
    report.extend(std::iter::repeat_n(b'x', pad));
    report.extend(b"\"}");
    report
}

/// A client request of exactly `size` bytes asking for a report of `report_bytes`.
fn padded_request(size: usize, report_bytes: usize) -> Vec<u8> {
    let mut body =
        format!(r#"{{"account":"acme","wait":true,"reportBytes":{report_bytes}}}"#).into_bytes();
    body.splice(1..1, std::iter::repeat_n(b' ', size - body.len()));
    body
}

/// `--max-body` (its default) met end to end on both the client's request and the job
/// server's callback: limit−1 and limit pass byte for byte, limit+1 gets a clear refusal from
/// the layer that sees it (413 to the client; 413 to the job server and an immediate 502 to the
/// held client, not a wait until the deadline), and the proxy keeps serving.
#[tokio::test]
async fn body_limits_hold_for_requests_and_callbacks() {
    const MAX_BODY: usize = 65_536;
    let (upstream, mut callbacks) = padding_job_server().await;
    let (proxy_addr, proxy_url) = listen();
    let proxy = Role::start(&["jobproxy", "--listen", &proxy_addr, "--upstream", &upstream]).await;
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let req = client.post(&proxy_url).header("content-type", "application/json").body(body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
        }
    };
    for size in [MAX_BODY - 1, MAX_BODY] {
        let (status, body) = post(padded_request(size, 200)).await;
        assert_eq!(status, 200, "a {size}-byte request: {}", String::from_utf8_lossy(&body));
        let (report, callback_status) = callbacks.recv().await.unwrap();
        assert_eq!(body, report);
        assert_accepted(callback_status);
    }
    let (status, body) = post(padded_request(MAX_BODY + 1, 200)).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));

    for size in [MAX_BODY - 1, MAX_BODY] {
        let (status, body) = post(padded_request(100, size)).await;
        assert_eq!(status, 200, "a {size}-byte report");
        let (report, callback_status) = callbacks.recv().await.unwrap();
        assert_eq!(body.len(), size);
        assert_eq!(body, report, "passed back byte for byte");
        assert_accepted(callback_status);
    }
    let (status, body) = post(padded_request(100, MAX_BODY + 1)).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("--max-body (65536 bytes)"), "{text}");
    assert_eq!(callbacks.recv().await.unwrap().1, 413, "the job server is told too");

    let (status, _) = post(padded_request(100, 200)).await;
    assert_eq!(status, 200, "still serving");
    assert_eq!(proxy.metric("jobproxy_held_requests").await, 0.0);
    assert_eq!(proxy.terminate().await, Some(0));
}

/// The sum of metric `name` over the label sets that contain `label` (e.g. `outcome="x"`).
async fn labelled_metric(role: &Role, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", role.admin)).await.unwrap();
    let text = text.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Three proxy nodes on NATS behind one round-robin address, which is also the callback URL
/// the job server is given: callbacks that land on the wrong node are forwarded over the bus
/// to the node holding the request, and the jobclient gets 50 of 50 through the front. Then,
/// with jobs held on every node, one node is killed with -9: only its own clients fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_one_address_forward_callbacks_over_nats() {
    let nats = switchboard_testkit::NatsServer::start();
    let (sim_addr, sim_url) = listen();
    let sim = Role::start(&["sim", "jobserver", "--listen", &sim_addr, "--job-time", "1s"]).await;
    let addrs: Vec<String> = (0..3).map(|_| listen().0).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backends = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let balancer = switchboard_jobproxy::RoundRobin::serve(listener, backends).unwrap();
    let front = balancer.url();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = (i + 1).to_string();
        // The job server serves an account on one connection at a time: nodes sharing the
        // jobclient's account take turns, so each lets its link go soon after its starts.
        let flags = ["--listen", addr, "--upstream", &sim_url, "--public-url", &front];
        let flags = [&flags[..], &["--upstream-idle", "20ms"]].concat();
        let node = [&["jobproxy"], &flags[..], &["--bus", &nats.url, "--node-id", &id]].concat();
        nodes.push(Role::start(&node).await);
    }
    let dup = ["jobproxy", "--listen", "127.0.0.1:0", "--upstream", &sim_url, "--bus", &nats.url];
    let out = Command::new(BIN).args(dup).args(["--node-id", "2"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(64), "a second node 2 is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-id 2"), "{out:?}");

    let (code, out) = jobclient(&front).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Succeeded: 50/50"), "{out}");
    let mut forwarded = 0.0;
    for node in &nodes {
        forwarded += labelled_metric(node, "jobproxy_callbacks_forwarded_total", "forwarded").await;
        assert_eq!(node.metric("jobproxy_held_requests").await, 0.0);
    }
    assert!(forwarded > 0.0, "round robin sent no callback to a wrong node");

    // Jobs of 1 s held on every node; node 3 dies with them.
    let client = tokio::spawn({
        let front = front.clone();
        async move { jobclient(&front).await }
    });
    let mut held = [0.0; 3];
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        for (h, node) in held.iter_mut().zip(&nodes) {
            *h = node.metric("jobproxy_held_requests").await;
        }
        if held.iter().sum::<f64>() >= 50.0 {
            break;
        }
        assert!(Instant::now() < end, "50 jobs never held: {held:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held.iter().all(|h| *h > 0.0), "every node holds some: {held:?}");
    let mut doomed = nodes.pop().unwrap();
    doomed.child.kill().await.unwrap();
    let (code, out) = client.await.unwrap();
    assert_eq!(code, Some(1), "{out}");
    let survivors = 50 - held[2] as usize;
    assert!(out.contains(&format!("Succeeded: {survivors}/50")), "held {held:?}: {out}");
    for node in nodes {
        assert_eq!(node.metric("jobproxy_held_requests").await, 0.0);
        assert_eq!(node.terminate().await, Some(0));
    }
    drop(sim);
}

/// `bench jobproxy --bench-nats` runs the bursts through three nodes behind one address too,
/// and callbacks cross between them (small held phase: this checks the wiring, not speed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_three_nodes_behind_one_address() {
    let nats = switchboard_testkit::NatsServer::start();
    let mut bench = Command::new(BIN);
    bench.args(["bench", "jobproxy", "--rounds", "1", "--held", "100", "--hold", "1s"]);
    bench.args(["--bench-nats", &nats.url]).env("RUST_LOG", "warn").kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), bench.output())
        .await
        .expect("bench jobproxy within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("the JSON line comes last");
    let nodes = &json["multi_node"];
    assert_eq!(nodes["nodes"], 3, "{stdout}");
    assert_eq!(nodes["failures"], 0, "{stdout}");
    assert!(nodes["forwarded"].as_f64().unwrap() > 0.0, "no callback crossed nodes: {stdout}");
    assert!(nodes["burst_best_ms"].as_f64().unwrap() < 5_000.0, "{stdout}");
    // The held phase and its same-run reference straight to a job server both ran in full.
    assert_eq!(
        (&json["held_failures"], &json["direct_failures"]),
        (&0.into(), &0.into()),
        "{stdout}"
    );
    for measured in ["direct_added_p99_ms", "queue_p99_ms", "start_p99_ms", "callback_p99_ms"] {
        assert!(json[measured].as_f64().is_some(), "{measured} missing: {stdout}");
    }
}
