//! Throw-away nats-server with JetStream, for integration tests.
//!
//! Each [`NatsServer`] is its own process on a free loopback port with its own store
//! directory, so tests never share state or depend on a server someone left running.
//! [`NatsServer::kill`] and [`NatsServer::restart`] let crash tests take the server down
//! hard (SIGKILL) and bring it back on the same port with the same store.
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting server may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running nats-server with JetStream; killed and its store deleted on drop.
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    child: Option<Child>,
    /// Holds the JetStream store (`-sd`) and the server log.
    dir: TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js -sd <tmpdir> -a 127.0.0.1 -p <free port>` and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// Panics with the reason (and the server log) if `nats-server` is not installed or does
    /// not start within 15 s.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-nats-")
            .tempdir()
            .expect("create temp dir for nats-server");
        // The free port can be taken by someone else before the server binds it: retry.
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = crate::free_port();
            match launch(dir.path(), port) {
                Ok(child) => {
                    let url = format!("nats://127.0.0.1:{port}");
                    return Self { url, port, child: Some(child), dir };
                }
                Err(e) => last_err = e,
            }
        }
        panic!("nats-server did not start: {last_err}");
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (no clean shutdown) and waits for it to exit.
    /// The store directory is kept, so [`NatsServer::restart`] recovers what was durable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port and store.
    ///
    /// # Panics
    /// Panics if the server does not come back within 15 s.
    pub fn restart(&mut self) {
        self.kill();
        match launch(self.dir.path(), self.port) {
            Ok(child) => self.child = Some(child),
            Err(e) => panic!("nats-server did not restart: {e}"),
        }
    }
}

/// Spawns nats-server storing under `dir`, and waits until it is ready: it logged "Server is
/// ready" (after JetStream started) and `port` accepts connections. The log check also makes
/// sure the listener is ours, not another process that grabbed the port first.
/// On failure the process is killed and the error carries the server log.
fn launch(dir: &Path, port: u16) -> Result<Child, String> {
    let log_path = dir.join("nats-server.log");
    // A restart appends to the same log: only what this launch writes counts.
    let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let new_log = || {
        let log = std::fs::read(&log_path).unwrap_or_default();
        let start = usize::try_from(log_start).unwrap_or(0).min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    };
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open server log: {e}"))?;
    let log_err = log.try_clone().map_err(|e| format!("clone log handle: {e}"))?;
    let mut child = Command::new("nats-server")
        .args(["-js", "-sd"])
        .arg(dir.join("store"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run nats-server ({e}); install it (apt-get install nats-server) \
                 or put it on PATH"
            )
        })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let exited = child.try_wait().ok().flatten();
        if exited.is_none()
            && new_log().contains("Server is ready")
            && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        {
            return Ok(child);
        }
        if exited.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let why = exited.map_or("timed out".to_owned(), |s| format!("exited with {s}"));
            return Err(format!("port {port} ({why}); server log:\n{}", new_log()));
        }
        // nats-server has no readiness callback: poll its log and port, bounded above.
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(port: u16) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    }

    #[test]
    fn kill_restart_and_drop_control_the_process() {
        let mut server = NatsServer::start();
        let port = server.port();
        assert_eq!(server.url, format!("nats://127.0.0.1:{port}"));
        assert!(accepts(port), "started server refuses connections");
        server.kill();
        assert!(!accepts(port), "killed server still accepts");
        server.restart();
        assert!(accepts(port), "restarted server refuses connections");
        drop(server);
        assert!(!accepts(port), "dropped server still accepts");
    }
}
