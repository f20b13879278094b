//! The servers' default work directories, `$TMPDIR/ferrobeam-<pid>`.
//!
//! A server that is killed (SIGKILL, OOM) leaves its directory behind, with
//! its jobs' RocksDB state: gigabytes each.  A job's working state is never
//! read again after its server died (restores read checkpoints), so the
//! next server to start removes the directories of servers that are gone.
//!
//! A server holds a lock on `.owner.lock` in its directory while it lives;
//! the kernel drops it when the process dies, however it dies.  A directory
//! whose lock can be taken is abandoned.  (The lock, not the pid: a server
//! in another pid namespace sharing this `/tmp` has a pid we cannot see.)
//! Directories without a lock file fall back to the pid in their name.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const PREFIX: &str = "ferrobeam-";
const LOCK: &str = ".owner.lock";

/// A claimed work directory: the lock is held while this lives.
pub struct WorkDir {
    pub path: PathBuf,
    _lock: File,
}

/// This process's default work directory, created and locked on first use
/// and held until the process ends (servers started in one process share
/// it: their jobs have directories of their own inside).
pub fn claim_default() -> io::Result<&'static WorkDir> {
    static CLAIMED: Mutex<Option<&'static WorkDir>> = Mutex::new(None);
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = *claimed {
        return Ok(dir);
    }
    let path = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
    let dir: &'static WorkDir = Box::leak(Box::new(claim(path)?));
    *claimed = Some(dir);
    Ok(dir)
}

fn claim(path: PathBuf) -> io::Result<WorkDir> {
    std::fs::create_dir_all(&path)?;
    let lock = File::create(path.join(LOCK))?;
    lock.try_lock().map_err(|e| {
        io::Error::other(format!(
            "{} is in use by another server: {e}",
            path.display()
        ))
    })?;
    Ok(WorkDir { path, _lock: lock })
}

/// The pid a default work directory's name carries.
fn owner(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `pid` may still be running.  Without `/proc` we cannot tell,
/// and then every process counts as alive (nothing is removed).
fn may_be_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// `Some` when the server that made `dir` is gone, with its lock (if it
/// had one), held while the directory is removed.
fn abandoned(dir: &Path, pid: u32) -> Option<Option<File>> {
    match File::open(dir.join(LOCK)) {
        Ok(lock) => lock.try_lock().is_ok().then_some(Some(lock)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (!may_be_alive(pid)).then_some(None),
        Err(_) => None,
    }
}

/// Removes the default work directories in `tmp` of servers that are gone;
/// returns those removed.  Errors (another user's directory) are logged
/// and skipped.
pub fn remove_abandoned(tmp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(owner) else {
            continue;
        };
        let path = entry.path();
        if pid == std::process::id() {
            continue;
        }
        let Some(_lock) = abandoned(&path, pid) else {
            continue;
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path),
            Err(e) => tracing::debug!(
                dir = %path.display(),
                "cannot remove an abandoned work directory: {e}"
            ),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_of_servers_that_are_gone_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = |name: &str| tmp.path().join(name);
        // A server that holds its lock (its pid does not matter: it may be
        // in another pid namespace), one that died (its lock released), and
        // an older directory without a lock file whose pid cannot exist
        // (Linux caps pids at 2^22).
        let live = claim(dir("ferrobeam-999999991")).unwrap();
        drop(claim(dir("ferrobeam-999999992")).unwrap());
        std::fs::create_dir_all(dir("ferrobeam-999999993/work/state")).unwrap();
        let others = [
            "ferrobeam-captures-x1",
            "ferrobeam-12ab",
            "ferrobeam-",
            "beam-1",
        ];
        for name in others {
            std::fs::create_dir(dir(name)).unwrap();
        }
        let mut removed = remove_abandoned(tmp.path());
        removed.sort();
        let mut expected = vec![dir("ferrobeam-999999992")];
        if Path::new("/proc/self").exists() {
            expected.push(dir("ferrobeam-999999993"));
        }
        assert_eq!(removed, expected);
        assert!(live.path.join(LOCK).exists());
        for name in others {
            assert!(dir(name).exists(), "{name}");
        }
        // A live directory cannot be claimed twice.
        assert!(claim(dir("ferrobeam-999999991")).is_err());
    }
}
