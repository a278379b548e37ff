//! Clusters left behind by test processes that died without running `Drop` (SIGKILL, a test
//! timeout, Ctrl-C on `cargo test`). Each server dir records the pid of the test process that
//! made it; the first `start()` of a later test process stops orphaned postmasters and deletes
//! their dirs, so leftovers never pile up on a CI machine.
use std::path::Path;
use std::process::Command;

/// File in a server dir naming the test process responsible for it.
const OWNER_FILE: &str = "test-process.pid";
/// Prefix of server dirs (template staging dirs have no owner file and are never touched).
pub(super) const DIR_PREFIX: &str = "sb-pg-";

/// Records this process as the one responsible for `dir`.
pub(super) fn claim(dir: &Path) {
    let _ = std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string());
}

/// Stops and deletes every server dir in `root` whose test process is gone. Dirs without an
/// owner file (being created right now, or foreign) and dirs of live processes are left alone.
pub(super) fn sweep(root: &Path) {
    // Liveness is read from /proc; without it every process would look dead.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_str().is_some_and(|n| n.starts_with(DIR_PREFIX)) {
            continue;
        }
        let Some(owner) = read_pid(&dir.join(OWNER_FILE)) else { continue };
        if alive(owner) {
            continue;
        }
        if let Some(postmaster) = read_pid(&dir.join("data/postmaster.pid"))
            && alive(postmaster)
        {
            let _ = Command::new("kill").args(["-KILL", &postmaster.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The pid on the first line of `path` (our owner file, or PostgreSQL's `postmaster.pid`).
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_dir(root: &Path, name: &str, owner: Option<u32>) -> std::path::PathBuf {
        let dir = root.join(format!("{DIR_PREFIX}{name}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        if let Some(pid) = owner {
            std::fs::write(dir.join(OWNER_FILE), pid.to_string()).unwrap();
        }
        dir
    }

    #[test]
    fn only_dirs_of_dead_test_processes_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let mut exited = Command::new("true").spawn().unwrap();
        let dead_pid = exited.id();
        exited.wait().unwrap();

        let orphan = server_dir(root.path(), "orphan", Some(dead_pid));
        let ours = server_dir(root.path(), "ours", Some(std::process::id()));
        let unclaimed = server_dir(root.path(), "unclaimed", None);
        let other = root.path().join("not-a-server");
        std::fs::create_dir(&other).unwrap();

        sweep(root.path());
        assert!(!orphan.exists(), "the dead process's cluster is deleted");
        assert!(ours.exists() && unclaimed.exists() && other.exists());
    }
}
