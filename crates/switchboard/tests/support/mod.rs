//! Helpers shared by the end-to-end tests that start `switchboard` as a child process and
//! talk to it over raw sockets (slow_clients, tls).
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// A running `switchboard`, SIGKILLed and reaped on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `switchboard <args>` in `dir` (quiet: warnings only, stdout discarded).
pub fn start(args: &[&str], dir: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start switchboard");
    Proc(child)
}

/// Waits until something accepts connections on `addr` (30 s at most).
pub async fn listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
