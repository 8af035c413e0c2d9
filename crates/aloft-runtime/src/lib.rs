//! The process runtime: a machine is a supervised child process.
//!
//! The agent hands the runtime a [`LaunchSpec`] (machine config + image directory + host ports)
//! and learns what happens to the process through [`RuntimeEvent`]s. The runtime owns process
//! spawning, signals to the whole process tree, the restart policy, cgroup limits, captured logs
//! and host port allocation.
//!
//! Architecture invariants: the runtime knows nothing of HTTP or SQLite; it keeps just enough on
//! disk (pid records under its data dir) to find and kill processes left by an agent that died.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aloft_api::{ExitEvent, MachineConfig};

/// How the runtime is set up by the agent.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where pid records and logs live (the agent passes `<data-dir>/runtime`).
    pub data_dir: PathBuf,
    /// Upper bound of each machine's log file before it is rotated.
    pub max_log_bytes: u64,
}

/// Everything needed to run one version of a machine.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub machine_id: String,
    pub app: String,
    pub region: String,
    /// The machine version (`instance_id`) being launched; events carry it back.
    pub instance_id: String,
    /// The image: a directory used as working directory (and, later, root) of the machine.
    pub image_dir: PathBuf,
    /// The image reference shown to the machine as `FLY_IMAGE_REF`.
    pub image_ref: String,
    /// Image ENTRYPOINT and CMD, used when the config has no override.
    pub image_entrypoint: Vec<String>,
    pub image_cmd: Vec<String>,
    pub config: MachineConfig,
    /// Host port for each service `internal_port` (see [`Runtime::allocate_ports`]).
    pub host_ports: BTreeMap<u16, u16>,
}

/// What the runtime reports about processes, in order, per machine.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    Started { machine_id: String, instance_id: String, pid: u32 },
    /// The main process ended. `restarting` is true when the restart policy will start it again
    /// (a `Started` follows); otherwise the machine is down for good until started again.
    Exited { machine_id: String, instance_id: String, exit: ExitEvent, restart_count: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("machine {0} is not running")]
    NotRunning(String),
    #[error("machine {machine_id}: cannot start {argv:?}: {source}")]
    Spawn { machine_id: String, argv: Vec<String>, source: std::io::Error },
    #[error("machine {0}: nothing to run (no exec, entrypoint or cmd and the image has no default command)")]
    NoCommand(String),
    #[error("runtime io error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A shared handle on the process runtime.
pub struct Runtime {
    _config: RuntimeConfig,
}

impl Runtime {
    /// Sets up the runtime and returns the receiving end of its event stream.
    pub fn new(
        _config: RuntimeConfig,
    ) -> Result<(Runtime, tokio::sync::mpsc::UnboundedReceiver<RuntimeEvent>), RuntimeError> {
        todo!("runtime helper implements")
    }

    /// Kills every process left behind by a previous agent (found through the pid records)
    /// and returns the ids of the machines whose processes were killed.
    pub fn reap_orphans(&self) -> Vec<String> {
        todo!()
    }

    /// A free host port for each service `internal_port` of `config`.
    pub fn allocate_ports(&self, _config: &MachineConfig) -> Result<BTreeMap<u16, u16>, RuntimeError> {
        todo!()
    }

    /// Spawns the machine's process and supervises it under its restart policy.
    pub async fn launch(&self, _spec: LaunchSpec) -> Result<u32, RuntimeError> {
        todo!()
    }

    /// Sends `signal` to the machine's process tree, SIGKILL after `timeout`, and returns once it
    /// has exited. The exit is reported with `requested_stop: true` and no restart.
    pub async fn stop(&self, _machine_id: &str, _signal: i32, _timeout: Duration) -> Result<(), RuntimeError> {
        todo!()
    }

    /// The captured stdout/stderr of every machine.
    pub fn logs(&self) -> &LogStore {
        todo!()
    }

    /// Delivers a signal to the machine's main process without stopping supervision.
    pub fn signal(&self, _machine_id: &str, _signal: i32) -> Result<(), RuntimeError> {
        todo!()
    }
}

/// One captured line of a machine's stdout or stderr.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// RFC 3339 UTC with nanoseconds.
    pub timestamp: String,
    pub app: String,
    pub machine_id: String,
    pub group: String,
    pub region: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
}

/// Which lines a reader wants; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub app: Option<String>,
    pub group: Option<String>,
    pub machine_id: Option<String>,
    pub region: Option<String>,
    /// At most this many of the newest matching lines.
    pub limit: Option<usize>,
}

/// Bounded on-disk log files per machine, plus a broadcast of new lines for followers.
pub struct LogStore {
    _private: (),
}

impl LogStore {
    /// The newest matching lines, oldest first.
    pub fn query(&self, _query: &LogQuery) -> Vec<LogLine> {
        todo!()
    }

    /// New lines as they are captured (filter on the receiving side with [`LogQuery::matches`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LogLine> {
        todo!()
    }
}

impl LogQuery {
    pub fn matches(&self, line: &LogLine) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.app, &line.app)
            && ok(&self.group, &line.group)
            && ok(&self.machine_id, &line.machine_id)
            && ok(&self.region, &line.region)
    }
}
