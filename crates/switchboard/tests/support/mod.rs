//! Helpers shared by the end-to-end tests that start `switchboard` as child processes: one
//! [`Proc`] for every such process (each test file adds its role's own constructors in an
//! `impl Proc` block of its own), and a wait for a listener.
// Every test binary compiles this module and uses a different part of it.
#![allow(dead_code)]
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// The longest a process may take to exit after SIGTERM before the test fails.
pub const TERMINATE_LIMIT: Duration = Duration::from_secs(20);

/// A running `switchboard`, SIGKILLed and reaped on drop, so a failing test leaves nothing
/// behind.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// `switchboard` with warnings-only logs, no stdin and stdout discarded; callers add
    /// arguments, environment and stdio before [`Proc::spawn`].
    pub fn command() -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }

    /// Starts `cmd`.
    pub fn spawn(cmd: &mut Command) -> Self {
        Self { child: cmd.spawn().expect("start switchboard") }
    }

    /// `kill -9`, then reaped.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// SIGTERM, then the exit status of the graceful exit (within [`TERMINATE_LIMIT`]).
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.exit_within(TERMINATE_LIMIT, "process ignored SIGTERM")
    }

    /// The exit status, once the process exits within `limit`; panics with `why` otherwise.
    pub fn exit_within(&mut self, limit: Duration, why: &str) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{why}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts `switchboard <args>` in `dir` (quiet: warnings only, stdout discarded).
pub fn start(args: &[&str], dir: &Path) -> Proc {
    Proc::spawn(Proc::command().args(args).current_dir(dir))
}

/// Waits until something accepts connections on `addr` (30 s at most).
pub async fn listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
