//! Pid records, and reaping what an agent that died left running.
//!
//! While a machine's process runs, `<data_dir>/pids/<machine_id>` holds its pid, process group
//! and start time (from `/proc/<pid>/stat`), written atomically (temp file + rename) after each
//! spawn and removed when supervision ends. After a crash of the agent the next one calls
//! [`crate::Runtime::reap_orphans`], which SIGKILLs, for each record:
//! - the recorded process, if a process with that pid *and* start time still exists (a reused
//!   pid has another start time and is left alone);
//! - every other member of its process group that started after it and carries the machine's
//!   `FLY_MACHINE_ID` in its environment (the children it forked);
//! - every process in the machine's cgroup (catches children that left the group with setsid).
//!
//! A record with pid 0 is written *before* each spawn, so an agent killed between spawn and
//! the real record still leaves a trace: its cgroup is emptied. Only machines recorded in this
//! data dir are touched, never other cgroups under the same parent (another agent's). The main
//! processes usually died with the agent already: they are spawned with
//! `PR_SET_PDEATHSIG = SIGKILL`.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cgroup::Driver;
use crate::process::{self, ProcStat};

/// How long reaping waits for SIGKILLed processes to be gone.
const REAP_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    pub machine_id: String,
    pub pid: u32,
    pub pgid: u32,
    pub start_time: u64,
}

pub(crate) struct PidRecords {
    dir: PathBuf,
}

impl PidRecords {
    pub(crate) fn new(dir: PathBuf) -> io::Result<PidRecords> {
        std::fs::create_dir_all(&dir)?;
        Ok(PidRecords { dir })
    }

    fn path(&self, machine_id: &str) -> PathBuf {
        self.dir.join(machine_id.replace(['/', '\\', '\0'], "_"))
    }

    pub(crate) fn write(&self, record: &PidRecord) -> io::Result<()> {
        let path = self.path(&record.machine_id);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)
    }

    pub(crate) fn remove(&self, machine_id: &str) {
        if let Err(e) = std::fs::remove_file(self.path(machine_id)) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(
                    machine_id,
                    "cannot remove pid record under {}: {e}",
                    self.dir.display()
                );
            }
        }
    }

    /// Every record on disk; unreadable ones are removed with a warning.
    fn all(&self) -> Vec<PidRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<PidRecord>(&b).ok())
                .filter(|_| path.extension().is_none());
            match parsed {
                Some(r) => out.push(r),
                None => {
                    tracing::warn!("removing unreadable pid record {}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out
    }

    /// Kills everything recorded (see the module docs), removes the records and the machines'
    /// cgroups, waits for the processes to be gone and returns the machine ids that had live
    /// processes, sorted.
    pub(crate) fn reap(&self, cgroups: &Driver) -> Vec<String> {
        let records = self.all();
        let mut by_group: HashMap<u32, Vec<ProcStat>> = HashMap::new();
        if !records.is_empty() {
            for p in process::all_processes() {
                by_group.entry(p.pgid).or_default().push(p);
            }
        }
        let me = std::process::id();
        let mut killed_ids = Vec::new();
        let mut killed_pids = Vec::new();
        for rec in &records {
            let marker = format!("FLY_MACHINE_ID={}", rec.machine_id);
            let ours = by_group.get(&rec.pgid).into_iter().flatten().filter(|p| {
                rec.pid != 0
                    && p.pid != me
                    && ((p.pid == rec.pid && p.start_time == rec.start_time)
                        || (p.start_time >= rec.start_time && process::environ_has(p.pid, &marker)))
            });
            let mut any = false;
            for p in ours {
                if process::signal_pid(p.pid, libc::SIGKILL).unwrap_or(false) {
                    killed_pids.push(p.pid);
                    any = true;
                }
            }
            if let Some(cg) = cgroups.machine(&rec.machine_id) {
                for pid in cg.pids() {
                    if process::signal_pid(pid, libc::SIGKILL).unwrap_or(false) {
                        killed_pids.push(pid);
                        any = true;
                    }
                }
            }
            if any {
                killed_ids.push(rec.machine_id.clone());
            }
        }
        wait_gone(&killed_pids, REAP_PATIENCE);
        for rec in &records {
            if let Some(cg) = cgroups.machine(&rec.machine_id) {
                if let Err(e) = cg.remove(Duration::from_secs(2)) {
                    tracing::warn!(machine_id = %rec.machine_id, "cannot remove a leftover cgroup: {e}");
                }
            }
        }
        for rec in &records {
            self.remove(&rec.machine_id);
        }
        killed_ids.sort();
        killed_ids.dedup();
        if !killed_ids.is_empty() {
            tracing::info!(machines = ?killed_ids, "killed processes left by a previous agent");
        }
        killed_ids
    }
}

/// Polls until none of `pids` is alive (zombies count as gone) or `patience` runs out.
fn wait_gone(pids: &[u32], patience: Duration) {
    let deadline = Instant::now() + patience;
    let mut delay = Duration::from_millis(1);
    while pids.iter().any(|p| process::is_alive(*p)) {
        if Instant::now() >= deadline {
            tracing::warn!(
                ?pids,
                "processes of a previous agent are still alive after SIGKILL"
            );
            return;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// The record for a freshly spawned process (`None` if it is already gone).
pub(crate) fn record_for(machine_id: &str, pid: u32) -> Option<PidRecord> {
    let stat = process::proc_stat(pid)?;
    Some(PidRecord {
        machine_id: machine_id.to_string(),
        pid,
        pgid: stat.pgid,
        start_time: stat.start_time,
    })
}
