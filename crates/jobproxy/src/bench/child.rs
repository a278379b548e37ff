//! The proxy under test runs as its own process (this binary, `jobproxy` role), so its memory
//! and file descriptors can be read from `/proc` without the load generator's mixed in. The
//! reference job server of the held phase runs as its own process too, for the same reason
//! and so that its sockets do not count against this process's file budget.
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{Error, Result};

/// A `switchboard` child process with an admin server.
pub(crate) struct RoleProcess {
    child: Child,
    pid: u32,
    /// Where clients reach it.
    pub addr: std::net::SocketAddr,
    admin: String,
    http: reqwest::Client,
}

impl RoleProcess {
    /// Starts `switchboard jobproxy` in front of `upstream` and waits until it is ready.
    pub async fn proxy(upstream: &str, max_held: usize) -> Result<Self> {
        Self::proxy_on(free_addr()?, upstream, max_held, &[]).await
    }

    /// [`proxy`](Self::proxy) on `addr`, with `extra` flags (bus, node id, public URL).
    pub async fn proxy_on(
        addr: std::net::SocketAddr,
        upstream: &str,
        max_held: usize,
        extra: &[String],
    ) -> Result<Self> {
        let mut args = vec!["jobproxy", "--upstream", upstream, "--deadline", "120s"];
        let max_held = max_held.to_string();
        args.extend(["--max-held", &max_held]);
        args.extend(extra.iter().map(String::as_str));
        Self::spawn(addr, &args).await
    }

    /// Starts the job server simulator with job time `job_time` as its own process.
    pub async fn jobserver(job_time: Duration) -> Result<Self> {
        let time = humantime::format_duration(job_time).to_string();
        Self::spawn(free_addr()?, &["sim", "jobserver", "--job-time", &time]).await
    }

    /// Starts `switchboard <args> --listen addr` and waits until its `/readyz` answers.
    async fn spawn(addr: std::net::SocketAddr, args: &[&str]) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let admin = free_addr()?;
        let child = Command::new(exe)
            .args(args)
            .args(["--listen", &addr.to_string(), "--admin-addr", &admin.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or_else(|| Error::Bench(format!("{} exited at once", args[0])))?;
        let process = Self {
            child,
            pid,
            addr,
            admin: format!("http://{admin}"),
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/readyz", process.admin);
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if process.http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(process);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::Bench(format!("`{}` did not become ready within 20 s", args.join(" "))))
    }

    /// The proxy's own count of held requests (its `jobproxy_held_requests` gauge).
    pub async fn held(&self) -> Result<u64> {
        let text = self.metrics_text().await?;
        let value = text.lines().find_map(|l| l.strip_prefix("jobproxy_held_requests "));
        // Absent until the first request registered; a gauge prints as a float.
        Ok(value.and_then(|v| v.trim().parse::<f64>().ok()).map_or(0, |v| v as u64))
    }

    /// The sum of counter `name` over its label sets that contain `label` (0 while absent).
    pub async fn counter(&self, name: &str, label: &str) -> Result<f64> {
        let text = self.metrics_text().await?;
        let prefix = format!("{name}{{");
        Ok(text
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The node's Prometheus metrics page.
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.admin)).send().await?.text().await?)
    }

    /// Resident set size in bytes.
    pub async fn rss(&self) -> Result<u64> {
        switchboard_core::stats::rss_bytes(self.pid)
            .ok_or_else(|| Error::Bench(format!("no resident size for process {}", self.pid)))
    }

    /// CPU time (user + system) used so far.
    pub fn cpu(&self) -> Duration {
        switchboard_core::stats::cpu_time(self.pid).unwrap_or_default()
    }

    /// Open file descriptors (sockets included).
    pub async fn fds(&self) -> Result<usize> {
        let mut dir = tokio::fs::read_dir(format!("/proc/{}/fd", self.pid)).await?;
        let mut n = 0;
        while dir.next_entry().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the child and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Quantile `q` (as the page writes it, e.g. `"0.99"`) of summary `name` on a Prometheus
/// page, in seconds.
pub(crate) fn quantile_in(text: &str, name: &str, q: &str) -> Option<f64> {
    let key = format!("{name}{{quantile=\"{q}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)?.trim().parse::<f64>().ok())
}

/// A loopback address that was free a moment ago.
pub(crate) fn free_addr() -> Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}
