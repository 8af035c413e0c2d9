//! Reaping what an agent left behind: its machines' processes and cgroups (and, through
//! [`crate::containers::reap_containers`], its containers and their network; through
//! [`crate::volumes::reap_volumes`], its volumes' mounts and loop devices).
//!
//! An agent's runtime records each running machine in `<data-dir>/runtime/pids/<machine id>`
//! (JSON: `machine_id`, `pid`, `pgid`, `start_time`; see `aloft-runtime`'s `orphans` module)
//! and puts it in the cgroups `<hierarchy>/aloft/<machine id>`. A killed agent leaves both:
//! the next agent on that data dir would reap them, but a test's agent has no next one. So a
//! harness's `Drop` calls [`reap_machines`]: every process of a recorded machine (its process
//! group members carrying its `FLY_MACHINE_ID`, its cgroup's members) is SIGKILLed, then its
//! cgroups and its record are removed. Only machines recorded in that data dir are touched,
//! and only while no other agent holds the data dir's lock (`<data-dir>/agent.lock`): a test
//! that replaced a killed agent by a new one on the same dir leaves the new one's machines be.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::procs;

/// The cgroup parent of an agent's machines, at the root of each hierarchy.
const CGROUP_PARENT: &str = "aloft";

/// How long reaping waits for SIGKILLed processes to be gone and cgroups to empty.
const REAP_PATIENCE: Duration = Duration::from_secs(5);

/// Kills the machines recorded under the agent data dir `data_dir` and removes their cgroups
/// and records; the machine ids that had live processes. `dead_agent` is the pid of the agent
/// process that ran there (killed), `None` for an agent that ran in this process (its handle
/// dropped). Does nothing while another agent holds the data dir. An in-process agent whose
/// runtime still supervises may restart a machine in between: reaping repeats until a pass
/// finds nothing alive (a few rounds at most).
pub fn reap_machines(data_dir: &Path, dead_agent: Option<u32>) -> Vec<String> {
    let Some(_lock) = take_lock(data_dir, dead_agent) else {
        return Vec::new();
    };
    let records_dir = data_dir.join("runtime").join("pids");
    let mut reaped = Vec::new();
    for _ in 0..5 {
        let killed = reap_once(&records_dir);
        if killed.is_empty() {
            break;
        }
        reaped.extend(killed);
    }
    if nix::unistd::geteuid().is_root() {
        crate::containers::reap_containers(data_dir);
        crate::volumes::reap_volumes(data_dir);
    }
    reaped.sort();
    reaped.dedup();
    reaped
}

/// The data dir's agent lock, once the agent that ran there has let go of it; `None` when
/// another agent holds it (or it never goes).
fn take_lock(data_dir: &Path, dead_agent: Option<u32>) -> Option<std::fs::File> {
    let path = data_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .ok()?;
    let deadline = Instant::now() + REAP_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(_)) => return None,
        }
        // Held: by the dying agent for a moment, or by a live one that owns the dir now.
        let holder: Option<u32> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let ours =
            |p: u32| Some(p) == dead_agent || (dead_agent.is_none() && p == std::process::id());
        if holder.is_some_and(|p| procs::alive(p) && !ours(p)) || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Record {
    path: PathBuf,
    machine_id: String,
    pid: u32,
    pgid: u32,
    start_time: u64,
}

fn records(dir: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let v: Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            let num = |k: &str| v[k].as_u64();
            Some(Record {
                machine_id: v["machine_id"].as_str()?.to_string(),
                pid: u32::try_from(num("pid")?).ok()?,
                pgid: u32::try_from(num("pgid")?).ok()?,
                start_time: num("start_time")?,
                path: e.path(),
            })
        })
        .collect()
}

/// The machine's cgroup directories in every hierarchy (cgroup v1 memory and cpu, v2).
fn cgroup_dirs(machine_id: &str) -> Vec<PathBuf> {
    ["memory", "cpu", ""]
        .iter()
        .map(|h| {
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join(CGROUP_PARENT)
                .join(machine_id)
        })
        .filter(|d| d.is_dir())
        .collect()
}

fn cgroup_members(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn environ_has(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        .unwrap_or(false)
}

fn sigkill(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    raw > 1 && pid != std::process::id() && kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok()
}

/// One pass: the machine ids that had live processes.
fn reap_once(records_dir: &Path) -> Vec<String> {
    let records = records(records_dir);
    if records.is_empty() {
        return Vec::new();
    }
    let pids = procs::all_pids();
    let mut killed_ids = Vec::new();
    let mut killed = Vec::new();
    for rec in &records {
        let marker = format!("FLY_MACHINE_ID={}", rec.machine_id);
        let mut ours: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| {
                rec.pid != 0
                    && procs::pgid(*p) == Some(rec.pgid)
                    && ((*p == rec.pid && procs::start_time(*p) == Some(rec.start_time))
                        || environ_has(*p, &marker))
            })
            .collect();
        for dir in cgroup_dirs(&rec.machine_id) {
            ours.extend(cgroup_members(&dir));
        }
        let before = killed.len();
        killed.extend(ours.into_iter().filter(|p| sigkill(*p)));
        if killed.len() > before {
            killed_ids.push(rec.machine_id.clone());
        }
    }
    let deadline = Instant::now() + REAP_PATIENCE;
    while killed.iter().any(|p| procs::alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for rec in &records {
        for dir in cgroup_dirs(&rec.machine_id) {
            // A cgroup can be removed once its last member is reaped by its parent.
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(&rec.path);
    }
    killed_ids
}

/// Reaps the machines of an in-process agent's data dir when dropped. Declare it in a test
/// harness after the agent's handle (fields drop in order: the handle lets go of the data dir's
/// lock first) and before the temp dir that holds the data dir.
pub struct ReapOnDrop {
    data_dir: PathBuf,
}

impl ReapOnDrop {
    pub fn new(data_dir: impl Into<PathBuf>) -> ReapOnDrop {
        ReapOnDrop {
            data_dir: data_dir.into(),
        }
    }
}

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        reap_machines(&self.data_dir, None);
    }
}
