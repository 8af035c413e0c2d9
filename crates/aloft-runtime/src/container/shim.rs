//! The per-machine shim: a small process that holds one container for its whole life, as
//! conmon and containerd-shim do, so the agent can restart (or crash) without touching
//! running machines.
//!
//! The agent starts `aloft shim <dir>` (the same binary; [`main`]) with pipes on stdin and
//! stdout. The shim forks; the parent exits at once (the agent reaps it), the child detaches
//! (`setsid`, stderr to /dev/null), becomes a child subreaper and then, in order:
//! 1. resets the writable layer and mounts the overlay root filesystem ([`super::rootfs`]),
//!    and waits for `go` on stdin (the agent writes `config.json` meanwhile; anything else, or
//!    the pipe closed, ends the start as failed);
//! 2. runs `runc run --detach`: the container's init (tini) becomes the shim's child (subreaper),
//!    with stdout/stderr on pipes the shim reads;
//! 3. writes `started <pid>` (or `failed <message>`) on the pipe and closes it;
//! 4. appends every output line as a JSON [`aloft_api::LogLine`] to `output.log` (rotated to
//!    `output.log.1` at the bound), which the agent tails — lines written while no agent runs are
//!    read by the next one;
//! 5. when the init exits: `runc delete --force`, unmounts the root filesystem, writes
//!    `exit.json` ([`ExitRecord`]) atomically and exits. The agent learns of the exit through a
//!    pidfd on the shim and reads `exit.json`.
//!
//! Files of a container's directory (`<runtime>/containers/<machine_id>/`): `shim.json`
//! ([`ShimArgs`]), `shim.pid`, `init.pid`, `config.json` (the bundle), `rootfs/`, `upper/`,
//! `work/`, `hosts`, `hostname`, `output.log`, `exit.json`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use aloft_api::LogLine;
use serde::{Deserialize, Serialize};

use crate::logs::Labels;

/// What the runtime tells the shim (`shim.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShimArgs {
    pub machine_id: String,
    pub runc: PathBuf,
    /// runc's state directory (`--root`), one per agent data dir.
    pub runc_root: PathBuf,
    /// Image layers, bottom → top.
    pub layers: Vec<PathBuf>,
    pub app: String,
    pub group: String,
    pub region: String,
    /// `output.log` is rotated past this size (one old file is kept).
    pub log_file_bytes: u64,
    /// The machine cgroup's OOM counter: read before `runc delete` removes the cgroup.
    #[serde(default)]
    pub oom_file: Option<PathBuf>,
}

/// How the container ended (`exit.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub signal: i32,
    /// The kernel killed a process of the container for memory.
    #[serde(default)]
    pub oom_killed: bool,
    /// Set when the container never started; the message says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
}

pub const ARGS_FILE: &str = "shim.json";
pub const SHIM_PID_FILE: &str = "shim.pid";
pub const INIT_PID_FILE: &str = "init.pid";
pub const EXIT_FILE: &str = "exit.json";
pub const OUTPUT_FILE: &str = "output.log";

/// The rotated output file next to `output.log`.
pub fn rotated_output(dir: &Path) -> PathBuf {
    dir.join(format!("{OUTPUT_FILE}.1"))
}

/// Entry point of `aloft shim <dir>`; never returns. Must be called before any thread starts.
#[allow(unsafe_code)]
pub fn main(dir: &Path) -> ! {
    let args: ShimArgs = match fs::read(dir.join(ARGS_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(a) => a,
        Err(e) => {
            println!("failed\tcannot read {}: {e}", dir.join(ARGS_FILE).display());
            std::process::exit(1);
        }
    };
    // SAFETY: called from `main` of a single-threaded process, before any thread exists.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            println!("failed\tcannot fork the shim: {e}");
            std::process::exit(1);
        }
    }
    let _ = nix::unistd::setsid();
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    redirect_to_null(libc::STDERR_FILENO);
    let _ = fs::write(dir.join(SHIM_PID_FILE), std::process::id().to_string());
    let code = run(dir, &args);
    std::process::exit(code)
}

#[allow(unsafe_code)]
fn redirect_to_null(fd: i32) {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto a standard descriptor this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// Tells the agent how the start went and closes the pipe (stdout).
fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    drop(out);
    redirect_to_null(libc::STDOUT_FILENO);
}

fn run(dir: &Path, args: &ShimArgs) -> i32 {
    let _ = fs::remove_file(dir.join(EXIT_FILE));
    let _ = fs::remove_file(dir.join(INIT_PID_FILE));
    if let Err(e) = super::rootfs::mount_overlay(dir, &args.layers) {
        return start_failed(dir, args, &format!("cannot mount the root filesystem: {e}"));
    }
    // The agent writes the bundle (and makes the network namespace) meanwhile, then says go.
    let mut go = String::new();
    let _ = io::stdin().read_line(&mut go);
    redirect_to_null(libc::STDIN_FILENO);
    if go.trim() != "go" {
        return start_failed(
            dir,
            args,
            "the agent did not finish preparing the container",
        );
    }
    let spool = Arc::new(Mutex::new(Spool::open(dir, args.log_file_bytes)));
    let labels = Labels {
        app: args.app.clone(),
        machine_id: args.machine_id.clone(),
        group: args.group.clone(),
        region: args.region.clone(),
    };
    let (out_r, out_w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return start_failed(dir, args, &format!("cannot make a pipe: {e}")),
    };
    let (err_r, err_w) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return start_failed(dir, args, &format!("cannot make a pipe: {e}")),
    };
    let tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers = [
        reader(out_r, "stdout", &labels, &spool, None),
        reader(err_r, "stderr", &labels, &spool, Some(tail.clone())),
    ];
    let runc = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .args(["run", "--detach", "--pid-file"])
        .arg(dir.join(INIT_PID_FILE))
        .arg("--bundle")
        .arg(dir)
        .arg(&args.machine_id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .status();
    let started = match runc {
        Ok(s) if s.success() => fs::read_to_string(dir.join(INIT_PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok()),
        Ok(_) => None,
        Err(e) => {
            let _ = readers.map(|r| r.join());
            return start_failed(
                dir,
                args,
                &format!("cannot run {}: {e}", args.runc.display()),
            );
        }
    };
    let Some(init_pid) = started else {
        for r in readers {
            let _ = r.join();
        }
        let said = tail.lock().map(|t| t.join("\n")).unwrap_or_default();
        let why = runc_error(&said);
        return start_failed(dir, args, &why);
    };
    report(&format!("started\t{init_pid}"));
    let oom_before = args
        .oom_file
        .as_deref()
        .map_or(0, crate::cgroup::oom_kills_in);
    let mut status = wait_for(init_pid);
    status.oom_killed = args
        .oom_file
        .as_deref()
        .is_some_and(|f| crate::cgroup::oom_kills_in(f) > oom_before);
    for r in readers {
        let _ = r.join();
    }
    finish(dir, args, status)
}

/// Reaps children until `pid` has exited (other orphans of the container are reaped on the way).
fn wait_for(pid: i32) -> ExitRecord {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                return ExitRecord {
                    exit_code: code,
                    ..ExitRecord::default()
                }
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                return ExitRecord {
                    exit_code: 128 + sig as i32,
                    signal: sig as i32,
                    ..ExitRecord::default()
                }
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                // No child left: the init was reaped elsewhere (cannot happen) — report a kill.
                return ExitRecord {
                    exit_code: 137,
                    signal: libc::SIGKILL,
                    ..ExitRecord::default()
                };
            }
        }
    }
}

/// The reason runc gave, from its last stderr lines (`{"level":"error","msg":…}` or plain text).
fn runc_error(said: &str) -> String {
    let msg = said
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["msg"].as_str().map(str::to_string))
                .or_else(|| (!l.trim().is_empty()).then(|| l.trim().to_string()))
        })
        .unwrap_or_else(|| "runc failed without saying why".into());
    format!("the container did not start: {msg}")
}

fn start_failed(dir: &Path, args: &ShimArgs, why: &str) -> i32 {
    cleanup(dir, args);
    write_exit(
        dir,
        &ExitRecord {
            exit_code: 127,
            start_error: Some(why.to_string()),
            ..ExitRecord::default()
        },
    );
    report(&format!("failed\t{}", why.replace('\n', " ")));
    1
}

fn finish(dir: &Path, args: &ShimArgs, status: ExitRecord) -> i32 {
    cleanup(dir, args);
    write_exit(dir, &status);
    0
}

fn cleanup(dir: &Path, args: &ShimArgs) {
    let _ = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .args(["delete", "--force"])
        .arg(&args.machine_id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    super::rootfs::unmount(dir);
}

fn write_exit(dir: &Path, record: &ExitRecord) {
    let tmp = dir.join(format!("{EXIT_FILE}.tmp"));
    if let Ok(bytes) = serde_json::to_vec(record) {
        if fs::write(&tmp, bytes).is_ok() {
            let _ = fs::rename(tmp, dir.join(EXIT_FILE));
        }
    }
}

/// Reads one output pipe on its own thread, line by line, into the spool.
fn reader(
    fd: OwnedFd,
    stream: &'static str,
    labels: &Labels,
    spool: &Arc<Mutex<Spool>>,
    tail: Option<Arc<Mutex<Vec<String>>>>,
) -> std::thread::JoinHandle<()> {
    let labels = labels.clone();
    let spool = spool.clone();
    std::thread::spawn(move || {
        let file = File::from(fd);
        crate::logs::split_lines(file, |bytes| {
            let message = String::from_utf8_lossy(bytes).into_owned();
            if let Some(tail) = &tail {
                if let Ok(mut t) = tail.lock() {
                    t.push(message.clone());
                    let excess = t.len().saturating_sub(20);
                    t.drain(..excess);
                }
            }
            let line = LogLine {
                timestamp: crate::timestamp::now_nanos(),
                app: labels.app.clone(),
                machine_id: labels.machine_id.clone(),
                group: labels.group.clone(),
                region: labels.region.clone(),
                stream: stream.to_string(),
                message,
            };
            if let Ok(mut s) = spool.lock() {
                s.write(&line);
            }
        });
    })
}

/// `output.log`, rotated to `output.log.1` at its bound.
struct Spool {
    dir: PathBuf,
    file: Option<File>,
    written: u64,
    bound: u64,
}

impl Spool {
    fn open(dir: &Path, bound: u64) -> Spool {
        let path = dir.join(OUTPUT_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Spool {
            dir: dir.to_path_buf(),
            file,
            written,
            bound: bound.max(64 << 10),
        }
    }

    fn write(&mut self, line: &LogLine) {
        let Ok(mut bytes) = serde_json::to_vec(line) else {
            return;
        };
        bytes.push(b'\n');
        if self.written + bytes.len() as u64 > self.bound {
            let path = self.dir.join(OUTPUT_FILE);
            let _ = fs::rename(&path, rotated_output(&self.dir));
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok();
            self.written = 0;
        }
        if let Some(f) = &mut self.file {
            if f.write_all(&bytes).is_ok() {
                self.written += bytes.len() as u64;
            }
        }
    }
}
