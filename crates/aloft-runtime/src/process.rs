//! Spawning a machine's main process and talking to process trees through signals and /proc.
//!
//! Every machine runs in its own session (so its own process group, pgid = pid of the main
//! process): a signal to the group reaches the whole tree, including children the main process
//! forked, unless one deliberately calls `setsid` itself (the cgroup, when there is one, still
//! holds those).
//!
//! Spawns happen on one process-wide thread that lives as long as the agent. The child asks the
//! kernel for SIGKILL when its parent *thread* dies (`PR_SET_PDEATHSIG`); forking from a tokio
//! worker that may later retire (`block_in_place`, blocking pool) would kill healthy machines.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{mpsc, OnceLock};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// What the child does between fork and exec.
pub(crate) struct ChildSetup {
    /// `cgroup.procs` files the child moves itself into before exec.
    pub cgroup_procs: Vec<CString>,
    /// The agent's own `RLIMIT_NOFILE` soft limit, restored in the child (the agent raises its
    /// own to hold many machines' pipes and logs; programs expect the usual default).
    pub nofile_soft: Option<u64>,
    /// Makes the child's stdin (a terminal) the controlling terminal of its new session, so
    /// the kernel signals it (SIGWINCH, SIGINT from the line discipline, SIGHUP on hang-up).
    pub controlling_tty: bool,
}

struct SpawnRequest {
    command: tokio::process::Command,
    handle: tokio::runtime::Handle,
    reply: tokio::sync::oneshot::Sender<io::Result<tokio::process::Child>>,
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("aloft-spawner".into())
            .spawn(move || {
                for req in rx {
                    let mut command = req.command;
                    let result = {
                        let _ctx = req.handle.enter();
                        command.spawn()
                    };
                    let _ = req.reply.send(result);
                }
            })
            .expect("the runtime cannot start its spawner thread");
        tx
    })
}

/// Spawns `argv` in `cwd` with exactly `env`, stdout/stderr piped, stdin piped when `stdin`
/// (else /dev/null).
pub(crate) async fn spawn(
    argv: &[String],
    cwd: &Path,
    env: &std::collections::BTreeMap<String, String>,
    setup: ChildSetup,
    stdin: bool,
) -> io::Result<tokio::process::Child> {
    let mut std_cmd = std::process::Command::new(&argv[0]);
    std_cmd
        .args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    install_pre_exec(&mut std_cmd, setup);
    spawn_on_thread(std_cmd).await
}

/// Spawns `argv` in `cwd` with exactly `env` on the terminal `terminal` (the slave side of a
/// pseudo-terminal): its stdin, stdout and stderr, and (with `setup.controlling_tty`) the
/// controlling terminal of its session.
pub(crate) async fn spawn_on_terminal(
    argv: &[String],
    cwd: &Path,
    env: &std::collections::BTreeMap<String, String>,
    setup: ChildSetup,
    terminal: &std::os::fd::OwnedFd,
) -> io::Result<tokio::process::Child> {
    let mut std_cmd = std::process::Command::new(&argv[0]);
    std_cmd
        .args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::from(terminal.try_clone()?))
        .stdout(Stdio::from(terminal.try_clone()?))
        .stderr(Stdio::from(terminal.try_clone()?));
    install_pre_exec(&mut std_cmd, setup);
    spawn_on_thread(std_cmd).await
}

/// Spawns on the spawner thread (see the module doc).
async fn spawn_on_thread(std_cmd: std::process::Command) -> io::Result<tokio::process::Child> {
    let command = tokio::process::Command::from(std_cmd);
    let (reply, rx) = tokio::sync::oneshot::channel();
    let req = SpawnRequest {
        command,
        handle: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()
        .send(req)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}

/// Runs in the child after fork: new session, parent-death signal, default signal dispositions,
/// cgroup placement, rlimit.
/// Only async-signal-safe calls (no allocation): everything it needs is prepared beforehand.
#[allow(unsafe_code)]
fn install_pre_exec(cmd: &mut std::process::Command, setup: ChildSetup) {
    let parent = std::process::id() as libc::pid_t;
    let last_signal = libc::SIGRTMAX();
    // SAFETY: the closure only calls async-signal-safe libc functions (setsid, prctl, getppid,
    // signal, ioctl, open, write, close, setrlimit, _exit) on data prepared before fork, and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The agent died between fork and prctl: nobody would ever supervise this child.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            // Signals the agent ignores would stay ignored across exec (handlers are reset, SIG_IGN
            // is not): an agent started in the background by a non-interactive shell ignores SIGINT
            // and SIGQUIT, and a machine's shell could then never trap its stop signal. Machines
            // start with every disposition at its default, as a container's init does.
            for sig in 1..=last_signal {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            if setup.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            for procs in &setup.cgroup_procs {
                // "0" moves the writing process itself (cgroup v1 and v2).
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
            }
            if let Some(soft) = setup.nofile_soft {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && soft <= lim.rlim_max {
                    lim.rlim_cur = soft;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
            }
            Ok(())
        });
    }
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to its hard limit (each machine holds a
/// few descriptors in the agent) and returns the previous soft limit for children.
pub(crate) fn raise_nofile() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::debug!("cannot raise RLIMIT_NOFILE to {hard}: {e}");
        }
    }
    Some(soft)
}

fn to_signal(signal: i32) -> io::Result<Signal> {
    Signal::try_from(signal).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown signal {signal}"),
        )
    })
}

/// Sends `signal` to every process of the group `pgid`. `Ok(false)` when the group is gone.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> io::Result<bool> {
    match killpg(Pid::from_raw(pgid as i32), to_signal(signal)?) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends `signal` to one process. `Ok(false)` when it is gone.
pub(crate) fn signal_pid(pid: u32, signal: i32) -> io::Result<bool> {
    match kill(Pid::from_raw(pid as i32), to_signal(signal)?) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The fields of `/proc/<pid>/stat` the runtime needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
    pub session: u32,
    /// CPU time in user and kernel mode, clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time in clock ticks since boot: with the pid, it identifies a process for good.
    pub start_time: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

/// Every live process (zombies excluded).
pub(crate) fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .collect()
}

/// `pid` and every live process descending from it (parent links read now: a child forked
/// after the read is missed, so callers kill and read again).
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let all = all_processes();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            all.iter()
                .filter(|p| p.ppid == parent && !found.contains(&p.pid))
                .map(|p| p.pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    found
}

/// Whether `pid` is alive and not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Whether the environment of `pid` holds exactly `entry` (`KEY=value`).
pub(crate) fn environ_has(pid: u32, entry: &str) -> bool {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    bytes.split(|b| *b == 0).any(|e| e == entry.as_bytes())
}

/// `path` as a C string for use after fork.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line =
            "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 104 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(4242, line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.pgid, s.session), (1, 4240, 4240));
        assert_eq!(s.start_time, 987654);
        assert_eq!(s.rss_pages, 0);
    }

    #[test]
    fn own_process_is_visible() {
        let me = proc_stat(std::process::id()).unwrap();
        assert!(is_alive(me.pid));
        assert!(all_processes().iter().any(|p| p.pid == me.pid));
    }
}
