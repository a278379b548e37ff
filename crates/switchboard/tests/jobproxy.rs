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
