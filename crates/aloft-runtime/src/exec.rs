//! Running a command in a running machine (`Runtime::exec`): in a container through
//! `runc exec` (the container's own process spec: its env, user and working directory), on the
//! process runtime as a host process in the machine's working directory, with the machine's
//! environment and inside its cgroup (its limits apply, and it dies with the machine).
//!
//! Every exec has a timeout: past it the command and everything it started are SIGKILLed
//! and the answer says so (exit code [`EXIT_TIMED_OUT`]). stdout and stderr are each kept up
//! to [`EXEC_OUTPUT_CAP`] bytes (the rest is read and dropped, so the command never blocks on
//! a full pipe; the stream ends with a note). A command that cannot be started is an answer,
//! not an error: exit code 127 (not found) or 126 (not executable) and the reason on stderr.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_api::exec::{
    truncated_note, MachineExecResponse, EXEC_OUTPUT_CAP, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND,
    EXIT_TIMED_OUT,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::process::{self, ChildSetup};
use crate::RuntimeError;

/// How long output pipes are drained after the command ended (a process it left in the
/// background may hold them open).
const DRAIN_PATIENCE: Duration = Duration::from_secs(2);

/// A command to run in a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Written to the command's stdin, which is then closed (`None`: /dev/null).
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// Where a machine's execs run (kept by the supervisor from the machine's launch).
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A host process machine: its working directory and environment.
    Process {
        cwd: PathBuf,
        env: BTreeMap<String, String>,
    },
    /// A container (its process spec is in runc's state).
    Container,
}

/// A host process exec: where and how it starts.
pub(crate) struct HostExec<'a> {
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub cgroup_procs: Vec<PathBuf>,
    pub nofile_soft: Option<u64>,
}

impl HostExec<'_> {
    /// How the command's process is set up: in the machine's cgroup, with its open-files
    /// limit, on a controlling terminal or not.
    pub(crate) fn child_setup(&self, controlling_tty: bool) -> std::io::Result<ChildSetup> {
        let cgroup_procs = self
            .cgroup_procs
            .iter()
            .map(|p| process::c_path(p))
            .collect::<Result<_, _>>()?;
        Ok(ChildSetup {
            cgroup_procs,
            nofile_soft: self.nofile_soft,
            controlling_tty,
        })
    }
}

/// The error of a command that could not be started in machine `machine_id`.
pub(crate) fn spawn_error(
    machine_id: &str,
    argv: &[String],
    source: std::io::Error,
) -> RuntimeError {
    RuntimeError::Spawn {
        machine_id: machine_id.to_string(),
        argv: argv.to_vec(),
        source,
    }
}

/// Runs `req` as a host process (see the module doc).
pub(crate) async fn on_host(
    machine_id: &str,
    host: HostExec<'_>,
    req: &ExecRequest,
) -> Result<MachineExecResponse, RuntimeError> {
    let spawn_err = |source| spawn_error(machine_id, &req.argv, source);
    let setup = host.child_setup(false).map_err(spawn_err)?;
    let child =
        match process::spawn(&req.argv, host.cwd, host.env, setup, req.stdin.is_some()).await {
            Ok(c) => c,
            Err(e) => return cannot_start(&req.argv[0], &e).ok_or_else(|| spawn_err(e)),
        };
    // Its own session (spawn calls setsid): the group is the command's whole tree.
    let run = run(child, req, |pid| {
        let _ = process::signal_group(pid, libc::SIGKILL);
        kill_tree(pid);
    })
    .await;
    Ok(run.response(req.timeout, None))
}

/// Runs `req` in the container `machine_id` through `runc exec`.
pub(crate) async fn in_container(
    machine_id: &str,
    runc: &Path,
    runc_root: &Path,
    scratch: &Path,
    req: &ExecRequest,
) -> Result<MachineExecResponse, RuntimeError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let pid_file = scratch.join(format!(
        "exec-{}-{}.pid",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let child = tokio::process::Command::new(runc)
        .arg("--root")
        .arg(runc_root)
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(machine_id)
        .args(&req.argv)
        .stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RuntimeError::Container {
            machine_id: machine_id.to_string(),
            message: format!("cannot run {}: {e}", runc.display()),
        })?;
    let pid_of_command = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
    };
    let run = run(child, req, |_runc_pid| {
        // The command is runc's child's exec: its pid is in the pid file once it started.
        if let Some(pid) = pid_of_command() {
            kill_tree(pid);
        }
    })
    .await;
    // No pid file: runc could not start the command; what it said is on stderr.
    let started = pid_of_command().is_some();
    let _ = std::fs::remove_file(&pid_file);
    let failed_start = (!started && !run.timed_out).then(|| {
        let said = String::from_utf8_lossy(&run.stderr.lock().unwrap_or_else(|e| e.into_inner()).0)
            .into_owned();
        let code = if said.contains("not found") || said.contains("no such file") {
            EXIT_NOT_FOUND
        } else {
            EXIT_NOT_EXECUTABLE
        };
        (
            code,
            format!(
                "aloft: cannot start {:?} in the container: {}\n",
                req.argv[0],
                runc_said(&said)
            ),
        )
    });
    Ok(run.response(req.timeout, failed_start))
}

/// The message of runc's error (its last line, without the log prefix).
fn runc_said(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("runc failed");
    line.trim().to_string()
}

/// The answer for a command the kernel refused to start (`None`: not the command's fault).
fn cannot_start(program: &str, e: &std::io::Error) -> Option<MachineExecResponse> {
    let (exit_code, why) = match e.kind() {
        std::io::ErrorKind::NotFound => (EXIT_NOT_FOUND, "command not found"),
        std::io::ErrorKind::PermissionDenied => (EXIT_NOT_EXECUTABLE, "permission denied"),
        _ => return None,
    };
    Some(MachineExecResponse {
        exit_code,
        exit_signal: 0,
        stdout: String::new(),
        stderr: format!("aloft: {program}: {why} (searched the machine's PATH)\n"),
    })
}

/// SIGKILLs `pid` and its descendants, reading the tree again until nothing is left to kill
/// (a fork between the read and the kill is caught by the next round).
fn kill_tree(pid: u32) {
    for _ in 0..10 {
        let alive: Vec<u32> = process::tree(pid)
            .into_iter()
            .filter(|p| process::is_alive(*p))
            .collect();
        if alive.is_empty() {
            return;
        }
        for p in alive {
            let _ = process::signal_pid(p, libc::SIGKILL);
        }
    }
}

/// A stream read up to the cap: the bytes kept and how many were dropped.
type Captured = Arc<Mutex<(Vec<u8>, u64)>>;

/// What became of one exec.
struct Run {
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    stdout: Captured,
    stderr: Captured,
}

impl Run {
    fn response(
        self,
        timeout: Duration,
        failed_start: Option<(i32, String)>,
    ) -> MachineExecResponse {
        let text = |c: &Captured| {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            let mut s = String::from_utf8_lossy(&c.0).into_owned();
            if c.1 > 0 {
                s.push_str(&truncated_note(c.1));
            }
            s
        };
        let (stdout, mut stderr) = (text(&self.stdout), text(&self.stderr));
        if let Some((exit_code, why)) = failed_start {
            return MachineExecResponse {
                exit_code,
                exit_signal: 0,
                stdout,
                stderr: why,
            };
        }
        if self.timed_out {
            stderr.push_str(&format!(
                "\n[aloft: timed out after {}s; the command and its children were killed]\n",
                timeout.as_secs()
            ));
            return MachineExecResponse {
                exit_code: EXIT_TIMED_OUT,
                exit_signal: libc::SIGKILL,
                stdout,
                stderr,
            };
        }
        let (exit_code, exit_signal) = match self.status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => (code, 0),
                (None, Some(sig)) => (128 + sig, sig),
                (None, None) => (-1, 0),
            },
            None => (-1, 0),
        };
        MachineExecResponse {
            exit_code,
            exit_signal,
            stdout,
            stderr,
        }
    }
}

/// Feeds stdin, captures output, waits up to the timeout (then `kill(pid)`), drains.
async fn run(mut child: tokio::process::Child, req: &ExecRequest, kill: impl Fn(u32)) -> Run {
    let pid = child.id().unwrap_or(0);
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), req.stdin.clone()) {
        tokio::spawn(async move {
            // A command that does not read its input closes the pipe: not an error.
            let _ = pipe.write_all(&data).await;
        });
    }
    let stdout: Captured = Arc::default();
    let stderr: Captured = Arc::default();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(capture(out, stdout.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(capture(err, stderr.clone())));
    }
    let (status, timed_out) = match tokio::time::timeout(req.timeout, child.wait()).await {
        Ok(s) => (s.ok(), false),
        Err(_) => {
            kill(pid);
            let _ = child.start_kill();
            (child.wait().await.ok(), true)
        }
    };
    let drain = async {
        for r in &mut readers {
            let _ = r.await;
        }
    };
    if tokio::time::timeout(DRAIN_PATIENCE, drain).await.is_err() {
        // Something it left in the background holds the pipes: that output is not the answer.
        for r in &readers {
            r.abort();
        }
    }
    Run {
        status,
        timed_out,
        stdout,
        stderr,
    }
}

/// Reads `stream` to its end, keeping the first [`EXEC_OUTPUT_CAP`] bytes.
async fn capture(mut stream: impl AsyncRead + Unpin, into: Captured) {
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.lock().unwrap_or_else(|e| e.into_inner());
                let take = n.min(EXEC_OUTPUT_CAP - c.0.len());
                c.0.extend_from_slice(&chunk[..take]);
                c.1 += (n - take) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_env() -> BTreeMap<String, String> {
        [("PATH".to_string(), "/usr/bin:/bin".to_string())].into()
    }

    async fn exec(argv: &[&str], stdin: Option<&str>, timeout: Duration) -> MachineExecResponse {
        let env = host_env();
        let dir = std::env::temp_dir();
        let host = HostExec {
            cwd: &dir,
            env: &env,
            cgroup_procs: Vec::new(),
            nofile_soft: None,
        };
        let req = ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin: stdin.map(|s| s.as_bytes().to_vec()),
            timeout,
        };
        on_host("m-test", host, &req).await.unwrap()
    }

    #[tokio::test]
    async fn both_streams_and_the_exit_code_come_back() {
        let r = exec(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            None,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!((r.exit_code, r.exit_signal), (3, 0));
        assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("out\n", "err\n"));
    }

    #[tokio::test]
    async fn stdin_is_fed_and_output_is_capped() {
        let r = exec(&["cat"], Some("hello"), Duration::from_secs(30)).await;
        assert_eq!(r.stdout, "hello");
        let r = exec(
            &["sh", "-c", "head -c 1100000 /dev/zero | tr '\\0' x"],
            None,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(r.exit_code, 0);
        assert!(r.stdout.starts_with(&"x".repeat(EXEC_OUTPUT_CAP)));
        assert!(
            r.stdout
                .ends_with(&truncated_note(1_100_000 - EXEC_OUTPUT_CAP as u64)),
            "{}",
            &r.stdout[EXEC_OUTPUT_CAP..]
        );
    }

    #[tokio::test]
    async fn a_missing_command_is_127_with_a_reason() {
        let r = exec(&["no-such-command-here"], None, Duration::from_secs(30)).await;
        assert_eq!(r.exit_code, EXIT_NOT_FOUND);
        assert!(
            r.stderr.contains("no-such-command-here: command not found"),
            "{}",
            r.stderr
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_tree_and_says_so() {
        let r = exec(
            &["sh", "-c", "sleep 1000 & echo $!; sleep 999"],
            None,
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(
            (r.exit_code, r.exit_signal),
            (EXIT_TIMED_OUT, libc::SIGKILL)
        );
        assert!(r.stderr.contains("timed out after"), "{}", r.stderr);
        let background: u32 = r.stdout.trim().parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process::is_alive(background) {
            assert!(
                std::time::Instant::now() < deadline,
                "the background sleep {background} outlived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
