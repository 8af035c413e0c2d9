//! Console sessions (`Runtime::console`): a command on a pseudo-terminal in a running machine.
//!
//! The runtime opens a pseudo-terminal and starts, in a new session whose controlling terminal
//! is its slave side:
//! - a host process machine: the command itself, in the machine's directory, with its launch
//!   environment (plus `TERM`), inside its cgroup — as an exec runs (`exec.rs`);
//! - a container: `runc exec --tty` in the foreground. runc makes the container's own
//!   terminal, puts ours in raw mode and copies between the two; it passes SIGWINCH on as a
//!   resize of the container's terminal and every other signal (SIGHUP included) to the
//!   command, which runs with the container's env, USER and WORKDIR in its namespaces and
//!   cgroup.
//!
//! The caller gets the master side ([`PtyMaster`]) to read and write, and ends the session
//! with [`ConsoleSession::finish`]: whether the command exited or the client went away, the
//! command's session is hung up (SIGHUP to its process group), given [`HANGUP_GRACE`] to go,
//! then whatever is left of it is SIGKILLed and waited for. Nothing of a session outlives it.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::exec::{spawn_error, HostExec};
use crate::process::{self, ChildSetup};
use crate::pty::{self, PtyMaster};
use crate::RuntimeError;

/// How long a hung-up session's processes have to exit before they are SIGKILLed.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// A command to run on a terminal in a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleRequest {
    pub argv: Vec<String>,
    pub cols: u16,
    pub rows: u16,
    /// The `TERM` the command sees.
    pub term: String,
}

/// A running console session (see the module doc).
pub struct ConsoleSession {
    master: Arc<PtyMaster>,
    child: tokio::process::Child,
    /// The pid file runc writes the command's host pid to (containers).
    pid_file: Option<PathBuf>,
    /// Set by [`ConsoleSession::finish`]; a session dropped without it is killed at once.
    finished: bool,
}

impl Drop for ConsoleSession {
    fn drop(&mut self) {
        if !self.finished {
            for leader in self.session_leaders() {
                let _ = process::signal_group(leader, libc::SIGKILL);
            }
            if let Some(f) = &self.pid_file {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

impl ConsoleSession {
    /// The terminal's master side: read what it shows, write what is typed, resize.
    pub fn terminal(&self) -> Arc<PtyMaster> {
        self.master.clone()
    }

    /// Waits for the command to end; its exit code (128 + N when killed by signal N).
    pub async fn wait(&mut self) -> i32 {
        exit_code(self.child.wait().await.ok())
    }

    /// Ends the session (see the module doc) and returns the command's exit code.
    pub async fn finish(mut self) -> i32 {
        let leaders = self.session_leaders();
        let members = |leaders: &[u32]| -> Vec<u32> {
            process::all_processes()
                .into_iter()
                .filter(|p| leaders.contains(&p.session) || leaders.contains(&p.pid))
                .map(|p| p.pid)
                .collect()
        };
        for leader in &leaders {
            let _ = process::signal_group(*leader, libc::SIGHUP);
        }
        // The child is reaped here as it exits (a zombie would count as still there).
        let deadline = tokio::time::Instant::now() + HANGUP_GRACE;
        let mut status = None;
        loop {
            if status.is_none() {
                status = self.child.try_wait().ok().flatten();
            }
            let left = members(&leaders);
            if left.is_empty() || tokio::time::Instant::now() >= deadline {
                for pid in left {
                    let _ = process::signal_pid(pid, libc::SIGKILL);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = match status {
            Some(s) => Some(s),
            None => self.child.wait().await.ok(),
        };
        if let Some(f) = &self.pid_file {
            let _ = std::fs::remove_file(f);
        }
        self.finished = true;
        exit_code(status)
    }

    /// The pids whose sessions are this console's: the spawned child (the command, or runc)
    /// and, in a container, the command runc started (its own session there).
    fn session_leaders(&self) -> Vec<u32> {
        let mut leaders: Vec<u32> = self.child.id().into_iter().collect();
        if let Some(pid) = self
            .pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            leaders.push(pid);
        }
        leaders
    }
}

fn exit_code(status: Option<std::process::ExitStatus>) -> i32 {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => -1,
        },
        None => -1,
    }
}

/// Starts `req` on a terminal as a host process of the machine (see the module doc).
pub(crate) async fn on_host(
    machine_id: &str,
    host: HostExec<'_>,
    req: &ConsoleRequest,
) -> Result<ConsoleSession, RuntimeError> {
    let err = |e| spawn_error(machine_id, &req.argv, e);
    let pair = pty::open(req.cols, req.rows).map_err(err)?;
    let setup = host.child_setup(true).map_err(err)?;
    let mut env: BTreeMap<String, String> = host.env.clone();
    env.insert("TERM".into(), req.term.clone());
    let child = process::spawn_on_terminal(&req.argv, host.cwd, &env, setup, &pair.slave)
        .await
        .map_err(err)?;
    // Only the command holds the slave now: its end is the end of the master's output.
    drop(pair.slave);
    Ok(ConsoleSession {
        master: Arc::new(PtyMaster::new(pair.master).map_err(err)?),
        child,
        pid_file: None,
        finished: false,
    })
}

/// Starts `req` on a terminal in the container `machine_id` through `runc exec --tty`.
pub(crate) async fn in_container(
    machine_id: &str,
    runc: &Path,
    runc_root: &Path,
    scratch: &Path,
    req: &ConsoleRequest,
) -> Result<ConsoleSession, RuntimeError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let err = |e| spawn_error(machine_id, &req.argv, e);
    let pid_file = scratch.join(format!(
        "console-{}-{}.pid",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut argv = vec![
        runc.display().to_string(),
        "--root".into(),
        runc_root.display().to_string(),
        "exec".into(),
        "--tty".into(),
        "--env".into(),
        format!("TERM={}", req.term),
        "--pid-file".into(),
        pid_file.display().to_string(),
        machine_id.to_string(),
    ];
    argv.extend(req.argv.iter().cloned());
    let pair = pty::open(req.cols, req.rows).map_err(err)?;
    let setup = ChildSetup {
        // runc puts the command in the container's cgroup itself.
        cgroup_procs: Vec::new(),
        nofile_soft: None,
        controlling_tty: true,
    };
    let child = process::spawn_on_terminal(&argv, scratch, &BTreeMap::new(), setup, &pair.slave)
        .await
        .map_err(|e| RuntimeError::Container {
            machine_id: machine_id.to_string(),
            message: format!("cannot run {}: {e}", runc.display()),
        })?;
    drop(pair.slave);
    Ok(ConsoleSession {
        master: Arc::new(PtyMaster::new(pair.master).map_err(err)?),
        child,
        pid_file: Some(pid_file),
        finished: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(argv: &[&str]) -> ConsoleSession {
        let env: BTreeMap<String, String> =
            [("PATH".to_string(), "/usr/bin:/bin".to_string())].into();
        let dir = std::env::temp_dir();
        let host = HostExec {
            cwd: &dir,
            env: &env,
            cgroup_procs: Vec::new(),
            nofile_soft: None,
        };
        let req = ConsoleRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cols: 33,
            rows: 11,
            term: "xterm-test".into(),
        };
        on_host("m-test", host, &req).await.unwrap()
    }

    async fn read_all(master: &PtyMaster) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf).await.unwrap() {
                0 => return String::from_utf8_lossy(&out).into_owned(),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn the_command_has_a_terminal_of_the_size_and_term_asked() {
        let mut s = start(&[
            "sh",
            "-c",
            "stty size; echo $TERM; tty -s && echo tty; exit 3",
        ])
        .await;
        let out = read_all(&s.terminal()).await;
        assert_eq!(s.wait().await, 3);
        assert_eq!(s.finish().await, 3);
        assert!(out.contains("11 33"), "{out:?}");
        assert!(out.contains("xterm-test"), "{out:?}");
        assert!(out.contains("tty"), "{out:?}");
    }

    #[tokio::test]
    async fn finishing_hangs_up_the_session_and_kills_what_ignores_it() {
        let s = start(&["sh", "-c", "trap '' HUP; sleep 1000 & echo $!; wait"]).await;
        let term = s.terminal();
        let mut buf = [0u8; 64];
        let mut seen = String::new();
        while !seen.contains('\n') {
            let n = term.read(&mut buf).await.unwrap();
            assert!(n > 0, "the shell ended before printing its child: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let sleeper: u32 = seen.trim().parse().unwrap();
        assert!(process::is_alive(sleeper));
        let code = s.finish().await;
        assert_eq!(code, 128 + libc::SIGKILL, "the shell ignored SIGHUP");
        aloft_testkit::wait_for_async(
            Duration::from_secs(10),
            "the background sleep to die",
            || async { !process::is_alive(sleeper) },
        )
        .await;
    }
}
