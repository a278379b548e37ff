//! Throw-away PostgreSQL: `initdb` + `postgres` in a temp dir, on a free loopback port.
//!
//! Every test gets its own cluster, so tests never depend on a server someone left running
//! and parallel tests cannot see each other's rows. A cluster starts in well under a second:
//! it is a copy of a template made by `initdb` once per machine, on tmpfs when there is room
//! (`/dev/shm`), and durability to disk is switched off (`fsync=off`). A process crash
//! (`kill -9`) still loses nothing that was committed: commits reach the OS before they
//! return.
//!
//! Overrides: `SWITCHBOARD_PG_BIN` (directory of `initdb`/`postgres`) and
//! `SWITCHBOARD_PG_TMPDIR` (where clusters are created).
//!
//! PostgreSQL refuses to run as root. When the tests run as root, the temp dir is handed to
//! the `postgres` system user and every PostgreSQL program runs with that user's uid/gid
//! (std's `CommandExt::uid`, no `runuser` in between), so the child we hold *is* the
//! postmaster and can be signalled directly.
use std::fs::File;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

mod install;
mod orphan;

use install::{Owner, find_bin_dir, postgres_user, running_as_root, scratch_root};

/// How long a cluster may take to accept connections before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the postmaster is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Ports are picked free but released before postgres binds them, so a parallel test may win
/// the race: then we try another port.
const PORT_ATTEMPTS: usize = 5;
/// Bump when the `initdb` options change, so stale templates are not reused.
const TEMPLATE_VERSION: u32 = 2;
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

impl PostgresServer {
    /// Creates a cluster in a fresh temp dir, starts it on a free loopback port, waits until
    /// it accepts connections and creates the database named in [`Self::url`].
    ///
    /// # Panics
    /// PostgreSQL is not installed (run `scripts/test.sh`, which installs it), the `postgres`
    /// user is missing while running as root, or the server does not come up; the message
    /// says which, with the server log.
    pub fn start() -> Self {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| orphan::sweep(&scratch_root()));
        let bin = find_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix(orphan::DIR_PREFIX)
            .tempdir_in(scratch_root())
            .unwrap_or_else(|e| panic!("creating a temp dir for PostgreSQL: {e}"));
        orphan::claim(dir.path());
        let owner = running_as_root(dir.path()).then(postgres_user);
        if let Some(o) = owner {
            std::os::unix::fs::chown(dir.path(), Some(o.uid), Some(o.gid))
                .unwrap_or_else(|e| panic!("handing {} to postgres: {e}", dir.path().display()));
        }
        let mut server = Self { url: String::new(), port: 0, bin, owner, child: None, dir };
        server.create_cluster();
        server.spawn_on_free_port();
        server.url = format!("postgres://postgres@127.0.0.1:{}/{DEFAULT_DB}", server.port);
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
            self.pg("createdb"),
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

    /// Fills the data directory: a copy of the machine's template cluster (fast), or a fresh
    /// `initdb` if there is no usable template.
    fn create_cluster(&self) {
        let data = self.data_dir();
        if let Some(template) = self.template() {
            let out = self.run("cp", &["-a", path_str(&template), path_str(&data)]);
            if out.status.success() {
                return;
            }
            let _ = std::fs::remove_dir_all(&data);
        }
        self.initdb(&data);
    }

    /// A pristine cluster, made by `initdb` once per machine, PostgreSQL installation and
    /// owner, and copied for every server: copying takes a fraction of `initdb`'s time.
    /// Built in a staging dir and renamed into place, so a template that exists is complete
    /// (when two test processes race, one rename wins and the other uses its result).
    fn template(&self) -> Option<PathBuf> {
        let owner = self.owner.map_or_else(|| "self".to_owned(), |o| o.uid.to_string());
        let install: String =
            self.bin.to_string_lossy().chars().map(|c| if c == '/' { '_' } else { c }).collect();
        let template = scratch_root()
            .join(format!("switchboard-pg-template-{TEMPLATE_VERSION}-{owner}{install}"));
        if template.join("PG_VERSION").is_file() {
            return Some(template);
        }
        // Parallel tests of one process build it once; the others wait and copy it.
        static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _building = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
        if template.join("PG_VERSION").is_file() {
            return Some(template);
        }
        let staging = tempfile::Builder::new()
            .prefix("switchboard-pg-staging-")
            .tempdir_in(scratch_root())
            .ok()?;
        if let Some(o) = self.owner {
            std::os::unix::fs::chown(staging.path(), Some(o.uid), Some(o.gid)).ok()?;
        }
        let data = staging.path().join("data");
        self.initdb(&data);
        let _ = std::fs::rename(&data, &template);
        template.join("PG_VERSION").is_file().then_some(template)
    }

    /// `initdb`, then the default database created in single-user mode (no server needed),
    /// so a copy of the result is ready to serve [`Self::url`] as soon as it starts.
    fn initdb(&self, data: &Path) {
        let out = self.run(
            self.pg("initdb"),
            &[
                "-D",
                path_str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                // 1 MB WAL segments instead of 16: a smaller cluster to copy.
                "--wal-segsize=1",
            ],
        );
        assert!(out.status.success(), "initdb failed:\n{}", text(&out));

        let mut single = self
            .command(self.pg("postgres"))
            .args(["--single", "-D", path_str(data), "-c", "fsync=off", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning postgres --single: {e}"));
        let sql = format!("CREATE DATABASE {DEFAULT_DB};\n");
        single.stdin.take().expect("piped stdin").write_all(sql.as_bytes()).expect("write SQL");
        let out = single.wait_with_output().expect("wait for postgres --single");
        let log = text(&out);
        assert!(out.status.success() && !log.contains("ERROR"), "creating {DEFAULT_DB}:\n{log}");
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
        let mut cmd = self.command(self.pg("postgres"));
        cmd.args(["-D", path_str(&data), "-p", &port_s, "-h", "127.0.0.1"])
            // Unix sockets in our own dir, not /var/run/postgresql (may not exist, and would
            // collide between parallel servers).
            .args(["-k", path_str(self.dir.path())])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            // Dynamic shared memory as files in the data dir: deleted with it, even after a
            // SIGKILL (POSIX segments would stay behind in /dev/shm).
            .args(["-c", "dynamic_shared_memory_type=mmap"])
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
            if self.accepts_connections(child.id()) {
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

    /// The postmaster writes its pid into line 1 of `postmaster.pid` and its state into line 8;
    /// `ready` means it accepts connections (crash recovery, if any, is over). The pid check
    /// matters after `kill9`: the dead postmaster's file still says `ready`.
    fn accepts_connections(&self, pid: u32) -> bool {
        let Ok(pid_file) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return false;
        };
        let mut lines = pid_file.lines();
        lines.next().is_some_and(|l| l.trim() == pid.to_string())
            && lines.nth(6).is_some_and(|l| l.trim() == "ready")
    }

    /// Runs `program` to completion as the right user.
    fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        let program = program.as_ref();
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
    }

    /// One of PostgreSQL's programs.
    fn pg(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }

    /// A command for one of PostgreSQL's programs, as the right user, in the temp dir (a
    /// working directory the `postgres` user may enter).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
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

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
