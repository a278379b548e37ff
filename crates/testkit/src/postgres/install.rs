//! Where PostgreSQL is installed, who runs it and where its clusters live: the machine
//! specific part of the harness, kept apart from the server's lifecycle.
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::text;

/// Environment variable naming the directory holding `initdb` and `postgres`; overrides the
/// search of `PATH` and `/usr/lib/postgresql/*/bin`.
const PG_BIN_ENV: &str = "SWITCHBOARD_PG_BIN";

/// Environment variable naming the directory clusters are created in (default: see
/// `scratch_root`).
const PG_TMPDIR_ENV: &str = "SWITCHBOARD_PG_TMPDIR";
/// `/dev/shm` is used only with at least this much room (a cluster is ~35 MB plus its data).
const SHM_MIN_FREE_KB: u64 = 2 * 1024 * 1024;

/// The unprivileged user PostgreSQL runs as when we are root.
#[derive(Clone, Copy)]
pub(super) struct Owner {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The directory with `initdb`, `postgres` and `createdb`: `$SWITCHBOARD_PG_BIN`, else the
/// (symlink-resolved) directory of `initdb` on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian puts the server programs only there).
pub(super) fn find_bin_dir() -> PathBuf {
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

/// Where clusters live: `$SWITCHBOARD_PG_TMPDIR`, else `/dev/shm` when it is a roomy tmpfs
/// (no disk writes at all: on a busy CI machine copying a cluster to disk can take seconds),
/// else the temp dir. Docker's default 64 MB `/dev/shm` is too small, hence the size check.
pub(super) fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os(PG_TMPDIR_ENV) {
            return PathBuf::from(dir);
        }
        let shm_free_kb = Command::new("df")
            .args(["-Pk", "/dev/shm"])
            .output()
            .ok()
            .and_then(|o| {
                let out = String::from_utf8(o.stdout).ok()?;
                out.lines().nth(1)?.split_whitespace().nth(3)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        if shm_free_kb >= SHM_MIN_FREE_KB {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        }
    })
    .clone()
}

/// Whether we run as root, judged by the owner of a directory we just created (no libc).
pub(super) fn running_as_root(fresh_dir: &Path) -> bool {
    fresh_dir.metadata().is_ok_and(|m| m.uid() == 0)
}

/// uid/gid of the `postgres` system user (created by the Debian package).
pub(super) fn postgres_user() -> Owner {
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
