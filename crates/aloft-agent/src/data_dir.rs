//! The data dir: created private (0700), and locked by one agent at a time.
//!
//! The lock is an `flock` on `<data-dir>/agent.lock`, which also holds the agent's pid. An flock
//! belongs to the open file description, so it is released only when every process holding that
//! description has closed it. After a `kill -9` of an agent two kinds of process may still hold
//! it for a moment: the agent itself while the kernel tears it down (`kill` returns before the
//! process is gone), and a child the agent had forked but not yet exec'd (the lock fd is
//! close-on-exec, but between fork and exec the child holds a copy; writing it into a cgroup
//! there can take tens of milliseconds). Neither is an agent. So when the lock is taken but the
//! recorded pid is no longer an agent holding the file, the next agent waits for the lock, up to
//! [`LOCK_GRACE`], and only then refuses, naming the processes that hold the file.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::settings::LOCK_FILE;
use crate::AgentError;

/// How long a start waits for a lock held only by what a dead agent left.
pub const LOCK_GRACE: Duration = Duration::from_secs(10);
/// Pause between attempts to take the lock.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Creates the data dir (mode 0700 when it was more open: it holds the token and the state).
pub fn prepare(data_dir: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let dir_err = |source| AgentError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(dir_err)?;
    let meta = std::fs::metadata(data_dir).map_err(dir_err)?;
    if meta.permissions().mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Takes the exclusive lock on `<data-dir>/agent.lock` and writes our pid into it. Two agents on
/// one data dir would each reap the other's machines at start-up and race on every write.
///
/// A live agent holding the lock is refused at once; a lock left by a dead agent is waited for
/// (see the module docs).
pub async fn lock(data_dir: &Path) -> Result<File, AgentError> {
    lock_within(data_dir, LOCK_GRACE).await
}

/// [`lock`], waiting up to `grace` for a lock a dead agent left.
async fn lock_within(data_dir: &Path, grace: Duration) -> Result<File, AgentError> {
    let path = data_dir.join(LOCK_FILE);
    let dir_err = |source| AgentError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(dir_err)?;
    let deadline = Instant::now() + grace;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_err(e)),
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        let recorded = recorded_pid(&mut file);
        let holders = holders_of(&path);
        let agent_alive = recorded.is_some_and(|pid| holders.iter().any(|h| h.pid == pid));
        if agent_alive || Instant::now() >= deadline {
            return Err(AgentError::DataDirInUse {
                path: data_dir.to_path_buf(),
                holder: describe(recorded, agent_alive, &holders, grace),
            });
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
    file.set_len(0).map_err(dir_err)?;
    file.rewind().map_err(dir_err)?;
    write!(file, "{}", std::process::id()).map_err(dir_err)?;
    Ok(file)
}

/// The pid the lock file records, if any.
fn recorded_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// A process with the lock file open.
#[derive(Debug, PartialEq, Eq)]
struct Holder {
    pid: u32,
    /// Its `comm` (executable name, as `ps` shows it).
    name: String,
}

/// Processes that have `path` open (scanned from `/proc/*/fd`; those we may not inspect are
/// missed).
fn holders_of(path: &Path) -> Vec<Holder> {
    let target: PathBuf = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target));
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            found.push(Holder { pid, name });
        }
    }
    found
}

/// The " (…)" part of the refusal: who holds the data dir.
fn describe(
    recorded: Option<u32>,
    agent_alive: bool,
    holders: &[Holder],
    grace: Duration,
) -> String {
    if agent_alive {
        return format!(" (pid {})", recorded.unwrap_or_default());
    }
    let list: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.name))
        .collect();
    match (recorded, list.is_empty()) {
        (Some(pid), true) => format!(" (pid {pid}, no longer running, still holds its lock)"),
        (Some(pid), false) => format!(
            " (its agent, pid {pid}, is gone, but its lock is still held after {}s by {}; stop them)",
            grace.as_secs_f32(),
            list.join(", ")
        ),
        (None, false) => format!(" ({})", list.join(", ")),
        (None, true) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_lock_in_another_description_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path()).await.unwrap();
        // Our own pid is excluded from the scan, so a second lock in this process looks like a
        // lock left by a dead agent: it is waited for, then refused.
        let grace = Duration::from_millis(200);
        let started = Instant::now();
        let err = lock_within(dir.path(), grace)
            .await
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() >= grace, "waited for the grace period");
        assert!(err.contains("in use by another agent"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "names the recorded pid: {err}"
        );
    }

    #[test]
    fn holders_are_found_through_proc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "").unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 3<\"$0\"; echo ready; read _")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = [0u8; 6];
        child.stdout.as_mut().unwrap().read_exact(&mut out).unwrap();
        let holders = holders_of(&path);
        assert!(
            holders.iter().any(|h| h.pid == child.id()),
            "{holders:?} has the child {}",
            child.id()
        );
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(holders_of(&path).iter().all(|h| h.pid != child.id()));
    }
}
