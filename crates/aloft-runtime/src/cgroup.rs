//! CPU and memory limits per machine with cgroups (v2, or v1 where the host only has v1).
//!
//! Layout: `<hierarchy>/<parent>/<machine_id>` where `<parent>` is
//! [`crate::Tuning::cgroup_parent`] (default `aloft`) at the root of each hierarchy: for v1 the
//! `memory` and `cpu` hierarchies, for v2 the unified one. Limits: memory = `guest.memory_mb`
//! with no swap on top, CPU quota = `guest.cpus` × the period. The child joins its cgroup before
//! exec (see [`crate::process`]), so nothing it forks escapes.
//!
//! This talks to cgroupfs directly instead of through cgroups-rs: the placement has to happen
//! between fork and exec where only async-signal-safe calls are allowed (the crate's task
//! APIs allocate), its v1 builder creates the cgroup in every mounted controller (cpuset then
//! needs cpus/mems copied before any task may join), and what the runtime needs is a handful of
//! files: a limit or two, `cgroup.procs`, and the OOM counter.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aloft_api::Guest;

/// The CPU bandwidth period; the quota is `cpus` of these.
const CPU_PERIOD_US: u64 = 100_000;

/// Whether the runtime may use cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// Use cgroups when running as root with a writable memory hierarchy; else warn once.
    #[default]
    Auto,
    /// Never: limits are recorded but not enforced.
    Off,
}

/// The cgroup setup found on this host.
#[derive(Clone, Debug)]
pub(crate) enum Driver {
    Off,
    /// Parent directories in the v1 memory and (when mounted) cpu hierarchies.
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
    /// Parent directory in the unified hierarchy.
    V2 {
        parent: PathBuf,
    },
}

impl Driver {
    /// Finds the hierarchies and creates the parent. The `String` is why limits are not enforced.
    pub(crate) fn detect(mode: CgroupMode, parent: &str) -> Result<Driver, String> {
        if mode == CgroupMode::Off {
            return Err("cgroups are turned off in the runtime configuration".into());
        }
        if !nix::unistd::geteuid().is_root() {
            return Err("the agent does not run as root".into());
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mounts = parse_mountinfo(&mountinfo);
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))
                .map(|m| m.mount_point.clone())
        };
        if let Some(memory) = v1("memory") {
            let memory = memory.join(parent);
            fs::create_dir_all(&memory)
                .map_err(|e| format!("cannot create cgroup {}: {e}", memory.display()))?;
            let cpu = v1("cpu")
                .map(|c| c.join(parent))
                .filter(|c| match fs::create_dir_all(c) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(
                            "cannot create cgroup {}: {e}; CPU limits not enforced",
                            c.display()
                        );
                        false
                    }
                });
            return Ok(Driver::V1 { memory, cpu });
        }
        let unified = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup2")
            .find(|m| {
                fs::read_to_string(m.mount_point.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
            })
            .map(|m| m.mount_point.clone())
            .ok_or("no cgroup hierarchy with the memory controller is mounted")?;
        enable_controllers(&unified)?;
        let dir = unified.join(parent);
        fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create cgroup {}: {e}", dir.display()))?;
        enable_controllers(&dir)?;
        Ok(Driver::V2 { parent: dir })
    }

    pub(crate) fn is_on(&self) -> bool {
        !matches!(self, Driver::Off)
    }

    /// Creates (or reuses) the machine's cgroup and writes its limits.
    pub(crate) fn create(
        &self,
        machine_id: &str,
        guest: &Guest,
    ) -> io::Result<Option<MachineCgroup>> {
        let memory_bytes = u64::from(guest.memory_mb) * 1024 * 1024;
        let quota = u64::from(guest.cpus.max(1)) * CPU_PERIOD_US;
        match self {
            Driver::Off => Ok(None),
            Driver::V1 { memory, cpu } => {
                let mem = memory.join(machine_id);
                mkdir(&mem)?;
                // memsw must stay >= the memory limit at every step: lift it, set, then pin.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, "-1")?;
                }
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &memory_bytes.to_string(),
                )?;
                if memsw.exists() {
                    write(&memsw, &memory_bytes.to_string())?;
                } else {
                    let _ = write(&mem.join("memory.swappiness"), "0");
                }
                let mut dirs = vec![mem.clone()];
                if let Some(cpu) = cpu {
                    let c = cpu.join(machine_id);
                    mkdir(&c)?;
                    write(&c.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&c.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    dirs.push(c);
                }
                Ok(Some(MachineCgroup {
                    dirs,
                    memory: mem,
                    v2: false,
                }))
            }
            Driver::V2 { parent } => {
                let dir = parent.join(machine_id);
                mkdir(&dir)?;
                write(&dir.join("memory.max"), &memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                // An OOM takes the whole machine down, as it would a VM.
                let _ = write(&dir.join("memory.oom.group"), "1");
                let cpu_max = dir.join("cpu.max");
                if cpu_max.exists() {
                    write(&cpu_max, &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                Ok(Some(MachineCgroup {
                    dirs: vec![dir.clone()],
                    memory: dir,
                    v2: true,
                }))
            }
        }
    }

    /// The cgroup of `machine_id`, whether or not its directories exist.
    pub(crate) fn machine(&self, machine_id: &str) -> Option<MachineCgroup> {
        match self {
            Driver::Off => None,
            Driver::V1 { .. } => Some(self.open(machine_id, false)),
            Driver::V2 { .. } => Some(self.open(machine_id, true)),
        }
    }

    fn open(&self, machine_id: &str, v2: bool) -> MachineCgroup {
        match self {
            Driver::V1 { memory, cpu } => MachineCgroup {
                memory: memory.join(machine_id),
                dirs: std::iter::once(memory.join(machine_id))
                    .chain(cpu.iter().map(|c| c.join(machine_id)))
                    .collect(),
                v2,
            },
            Driver::V2 { parent } => MachineCgroup {
                memory: parent.join(machine_id),
                dirs: vec![parent.join(machine_id)],
                v2,
            },
            Driver::Off => MachineCgroup {
                memory: PathBuf::new(),
                dirs: Vec::new(),
                v2,
            },
        }
    }
}

/// The `oom_kill` count of a cgroup's OOM file (0 when unreadable: the cgroup is gone).
pub(crate) fn oom_kills_in(file: &Path) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// One machine's cgroup directories.
#[derive(Clone, Debug)]
pub(crate) struct MachineCgroup {
    /// Every directory (one per hierarchy); the child joins all of them.
    pub dirs: Vec<PathBuf>,
    /// The directory with the memory controller.
    memory: PathBuf,
    v2: bool,
}

impl MachineCgroup {
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How many processes the kernel OOM-killed in this cgroup so far.
    pub(crate) fn oom_kills(&self) -> u64 {
        oom_kills_in(&self.oom_file())
    }

    /// The file that counts OOM kills (`memory.events` on v2, `memory.oom_control` on v1).
    pub(crate) fn oom_file(&self) -> PathBuf {
        self.memory.join(if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        })
    }

    /// Every process in the cgroup.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .procs_files()
            .iter()
            .filter_map(|f| fs::read_to_string(f).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup; returns how many were signalled.
    pub(crate) fn kill_all(&self) -> usize {
        if self.v2 {
            // cgroup.kill (Linux 5.14+) also catches processes forking while we read the list.
            let _ = write(&self.memory.join("cgroup.kill"), "1");
        }
        let pids = self.pids();
        pids.iter()
            .filter(|p| crate::process::signal_pid(**p, libc::SIGKILL).unwrap_or(false))
            .count()
    }

    /// Kills what is left and removes the directories, waiting (up to `patience`) for the
    /// kernel to let go of exiting tasks. Blocking: call off async threads for long waits.
    pub(crate) fn remove(&self, patience: Duration) -> io::Result<()> {
        let deadline = std::time::Instant::now() + patience;
        let mut delay = Duration::from_millis(1);
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if std::time::Instant::now() >= deadline => {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
                    }
                    Err(_) => {
                        self.kill_all();
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_millis(50));
                    }
                }
            }
        }
        Ok(())
    }
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot create cgroup {}: {e}", dir.display()),
        )),
    }
}

fn write(file: &Path, value: &str) -> io::Result<()> {
    fs::write(file, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write {value:?} to {}: {e}", file.display()),
        )
    })
}

/// Makes the memory and cpu controllers available to children of `dir` (v2).
fn enable_controllers(dir: &Path) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&control).unwrap_or_default();
    for c in ["memory", "cpu"] {
        if !current.split_whitespace().any(|x| x == c) {
            fs::write(&control, format!("+{c}")).map_err(|e| {
                format!(
                    "cannot enable the {c} controller in {}: {e}",
                    control.display()
                )
            })?;
        }
    }
    Ok(())
}

struct Mount {
    mount_point: PathBuf,
    fstype: String,
    options: String,
}

/// The mounts of `/proc/self/mountinfo`: `… mount_point … - fstype source super_options`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?.replace("\\040", " ");
            let mut r = right.split_whitespace();
            let fstype = r.next()?.to_string();
            let options = r.nth(1).unwrap_or("").to_string();
            Some(Mount {
                mount_point: PathBuf::from(mount_point),
                fstype,
                options,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_finds_v1_controllers_and_unified() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(m[0].options.split(',').any(|o| o == "cpu"));
        assert_eq!(m[1].fstype, "cgroup");
        assert_eq!(m[1].options, "rw,memory");
        assert_eq!(m[2].fstype, "cgroup2");
    }
}
