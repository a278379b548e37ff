//! Throw-away PostgreSQL: `initdb` + `postgres` in a temp dir, on a free loopback port.
//!
//! Every test gets its own cluster, so tests never depend on a server someone left running
//! and parallel tests cannot see each other's rows. A cluster starts in about a second
//! because durability to disk is switched off (`fsync=off`); a process crash (`kill -9`) still
//! loses nothing that was committed, because commits still reach the OS before they return.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, the temp dir is handed to
//! the `postgres` system user and every PostgreSQL program runs with that user's uid/gid
//! (std's `CommandExt::uid`, no `runuser` in between), so the child we hold *is* the
//! postmaster and can be signalled directly.
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// Environment variable naming the directory holding `initdb` and `postgres`; overrides the
/// search of `PATH` and `/usr/lib/postgresql/*/bin`.
pub const PG_BIN_ENV: &str = "SWITCHBOARD_PG_BIN";

/// How long a cluster may take to accept connections before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the postmaster is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Ports are picked free but released before postgres binds them, so a parallel test may win
/// the race: then we try another port.
const PORT_ATTEMPTS: usize = 5;
/// The database every server creates; [`PostgresServer::url`] points at it.
const DEFAULT_DB: &str = "switchboard";

/// A running PostgreSQL cluster; stopped (fast shutdown) and deleted on drop.
///
/// ```no_run
/// let pg = switchboard_testkit::PostgresServer::start();
/// // pg.url == "postgres://postgres@127.0.0.1:<port>/switchboard"
/// ```
pub struct PostgresServer {
    /// `postgres://postgres@127.0.0.1:<port>/switchboard`: a ready, empty database.
    pub url: String,
    /// The loopback TCP port the server listens on.
    pub port: u16,
    bin: PathBuf,
    owner: Option<Owner>,
    child: Option<Child>,
    /// Holds data, sockets and logs; deleted after `Drop::drop` has stopped the server.
    dir: TempDir,
}

/// The unprivileged user PostgreSQL runs as when we are root.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

impl PostgresServer {
    /// Creates a cluster in a fresh temp dir, starts it on a free loopback port, waits until
    /// it accepts connections and creates the database named in [`Self::url`].
    ///
    /// # Panics
    /// PostgreSQL is not installed (run `scripts/test.sh`, which installs it), the `postgres`
    /// user is missing while running as root, or the server does not come up; the message
    /// says which, with the server log.
    pub fn start() -> Self {
        let bin = find_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("sb-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for PostgreSQL: {e}"));
        let owner = running_as_root(dir.path()).then(postgres_user);
        if let Some(o) = owner {
            std::os::unix::fs::chown(dir.path(), Some(o.uid), Some(o.gid))
                .unwrap_or_else(|e| panic!("handing {} to postgres: {e}", dir.path().display()));
        }
        let mut server = Self { url: String::new(), port: 0, bin, owner, child: None, dir };
        server.initdb();
        server.spawn_on_free_port();
        server.url = server.create_database(DEFAULT_DB);
        server
    }

    /// Creates another empty database on this server and returns its URL (handy when several
    /// tests share one server).
    ///
    /// # Panics
    /// `createdb` fails (e.g. the name exists already).
    pub fn create_database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "--template=template0", name],
        );
        assert!(out.status.success(), "createdb {name} failed: {}", text(&out));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The cluster's data directory (for tests that inspect or corrupt it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Kills the postmaster with SIGKILL, like a crash or an OOM kill. Committed data stays in
    /// the data directory; [`Self::restart`] brings the same cluster back (crash recovery).
    ///
    /// # Panics
    /// The process cannot be killed or reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL postgres");
            child.wait().expect("reap postgres");
        }
    }

    /// Starts the cluster again on the same port and data directory, after [`Self::kill9`] or
    /// [`Self::stop`], and waits until it accepts connections.
    ///
    /// # Panics
    /// The server does not come back within the start deadline.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the server is still running");
        // Backends orphaned by a SIGKILL keep the old shared memory for a moment; postgres
        // refuses to start until they are gone, so retry until the deadline.
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.spawn(self.port) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(log) if Instant::now() < deadline && log.contains("still in use") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("PostgreSQL did not restart on port {}:\n{log}", self.port),
            }
        }
    }

    /// Stops the server with a fast shutdown (SIGINT: open sessions are rolled back and
    /// disconnected), killing it if that takes longer than the stop deadline. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // std can only send SIGKILL; `kill(1)` sends the signal postgres wants for a fast stop.
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_DEADLINE;
        while sent && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn initdb(&self) {
        let data = self.data_dir();
        let out = self.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed:\n{}", text(&out));
    }

    fn spawn_on_free_port(&mut self) {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match self.spawn(port) {
                Ok(child) => {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                // Lost the race for the port to a parallel test: pick another.
                Err(log) if log.contains("could not bind") || log.contains("already in use") => {
                    last_log = log;
                }
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        panic!("PostgreSQL found no free port in {PORT_ATTEMPTS} attempts:\n{last_log}");
    }

    /// Starts the postmaster on `port`; `Ok` once it accepts connections, `Err(server log)`
    /// if it exited first or missed the deadline (then it has been killed).
    fn spawn(&self, port: u16) -> Result<Child, String> {
        let log_path = self.dir.path().join(format!("postgres-{port}.log"));
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let err = log.try_clone().expect("clone log file handle");
        let port_s = port.to_string();
        let data = self.data_dir();
        let mut cmd = self.command("postgres");
        cmd.args(["-D", path_str(&data), "-p", &port_s, "-h", "127.0.0.1"])
            // Unix sockets in our own dir, not /var/run/postgresql (may not exist, and would
            // collide between parallel servers).
            .args(["-k", path_str(self.dir.path())])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning postgres: {e}"));

        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("postgres exited with {status}:\n{log}"));
            }
            if self.accepts_connections() {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("not ready after {START_DEADLINE:?}:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The postmaster writes its state into line 8 of `postmaster.pid`; `ready` means it
    /// accepts connections (crash recovery, if any, is over).
    fn accepts_connections(&self) -> bool {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .is_ok_and(|pid_file| pid_file.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
    }

    /// Runs a PostgreSQL client program to completion.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// A command for one of PostgreSQL's programs, as the right user, in the temp dir (a
    /// working directory the `postgres` user may enter).
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C").env_remove("PGDATA");
        if let Some(o) = self.owner {
            cmd.uid(o.uid).gid(o.gid);
        }
        cmd
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory with `initdb`, `postgres` and `createdb`: `$SWITCHBOARD_PG_BIN`, else the
/// (symlink-resolved) directory of `initdb` on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian puts the server programs only there).
fn find_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        return PathBuf::from(dir);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).map(|d| d.join("initdb")).collect::<Vec<_>>());
    for initdb in on_path {
        // /usr/local/bin/initdb may be a symlink into the real bin dir; resolve it so that
        // postgres and createdb come from the same installation.
        if let Ok(real) = std::fs::canonicalize(&initdb)
            && let Some(dir) = real.parent()
            && dir.join("postgres").is_file()
            && dir.join("createdb").is_file()
        {
            return dir.to_path_buf();
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL not found: no initdb on PATH or in /usr/lib/postgresql/*/bin. \
             Install it (scripts/test.sh does: apt-get install postgresql-15) or set {PG_BIN_ENV}."
        )
    })
}

/// Whether we run as root, judged by the owner of a directory we just created (no libc).
fn running_as_root(fresh_dir: &Path) -> bool {
    fresh_dir.metadata().is_ok_and(|m| m.uid() == 0)
}

/// uid/gid of the `postgres` system user (created by the Debian package).
fn postgres_user() -> Owner {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap_or_else(|e| panic!("running id {flag} postgres: {e}"));
        assert!(
            out.status.success(),
            "running as root, but there is no `postgres` user to run PostgreSQL as \
             (PostgreSQL refuses root; installing postgresql creates the user): {}",
            text(&out)
        );
        text(&out).trim().parse().unwrap_or_else(|e| panic!("id {flag} postgres: {e}"))
    };
    Owner { uid: id("-u"), gid: id("-g") }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
