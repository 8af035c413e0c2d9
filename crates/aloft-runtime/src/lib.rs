//! The process runtime: a machine is a supervised child process.
//!
//! The agent hands the runtime a [`LaunchSpec`] (machine config + image directory + host ports)
//! and learns what happens to the process through [`RuntimeEvent`]s. The runtime owns process
//! spawning, signals to the whole process tree, the restart policy, cgroup limits, captured logs
//! and host port allocation.
//!
//! Architecture invariants: the runtime knows nothing of HTTP or SQLite; it keeps just enough on
//! disk (pid records under its data dir) to find and kill processes left by an agent that died.

mod cgroup;
mod console;
pub mod container;
pub mod copy;
pub mod env;
mod exec;
mod logs;
pub mod net;
mod orphans;
mod ports;
mod process;
mod procs;
mod pty;
mod supervisor;
pub mod timestamp;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::{ExitEvent, MachineConfig};

pub use cgroup::CgroupMode;
pub use console::{ConsoleRequest, ConsoleSession, HANGUP_GRACE};
pub use container::{ContainerConfig, ContainerImage, Netns};
pub use exec::ExecRequest;
pub use pty::PtyMaster;
pub use supervisor::Adopted;

/// How the runtime is set up by the agent.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where pid records and logs live (the agent passes `<data-dir>/runtime`).
    pub data_dir: PathBuf,
    /// How much disk machine logs may take.
    pub logs: LogLimits,
    /// How containers run, or why they cannot here (`None`: not asked for; machines with a
    /// container image then fail to launch with a message saying so).
    pub containers: Option<Result<ContainerConfig, String>>,
}

/// How much disk machine logs may take (see `logs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Upper bound of each machine's log file before it is rotated (a machine keeps at most
    /// twice this).
    pub file_bytes: u64,
    /// Upper bound of all log files together; past it the oldest files of machines that are not
    /// running are deleted, then lines are dropped.
    pub total_bytes: u64,
    /// Free space the log filesystem keeps: below it lines are dropped (and counted), so a
    /// machine's output never fills the disk the state database lives on.
    pub min_free_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            file_bytes: 8 << 20,
            total_bytes: 1 << 30,
            min_free_bytes: 128 << 20,
        }
    }
}

impl LogLimits {
    /// The defaults with another per-file bound.
    pub fn with_file_bytes(file_bytes: u64) -> LogLimits {
        LogLimits {
            file_bytes,
            ..LogLimits::default()
        }
    }
}

/// Everything needed to run one version of a machine.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub machine_id: String,
    pub app: String,
    /// The app's organization (`org_slug`): a container machine's private IPv6 address is in
    /// that organization's network, and reaches only its machines.
    pub org: String,
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
    /// Run as an OCI container of this image instead of a host process in `image_dir`.
    pub container: Option<ContainerImage>,
    /// The app's secrets: environment variables over the config's `env`, under the platform's
    /// (see [`env::environment`]). Never written anywhere but the machine's environment (and,
    /// for a container, its bundle's `config.json`, mode 0600).
    pub secrets: env::SecretEnv,
    /// Volumes mounted into the machine (host directory → path inside), each mounted on the
    /// host already ([`volumes::VolumeHost::mount`]). Container machines only: a host-process
    /// machine with one is refused.
    pub volumes: Vec<volumes::VolumeBind>,
}

/// What the runtime reports about processes, in order, per machine.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    Started {
        machine_id: String,
        instance_id: String,
        pid: u32,
        /// The machine's private address (containers with a network namespace: IPv6).
        address: Option<std::net::IpAddr>,
    },
    /// The main process ended. `restarting` is true when the restart policy will start it again
    /// (a `Started` follows); otherwise the machine is down for good until started again.
    Exited {
        machine_id: String,
        instance_id: String,
        exit: ExitEvent,
        restart_count: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("machine {0} is not running")]
    NotRunning(String),
    #[error("machine {machine_id}: cannot start {argv:?}: {source}")]
    Spawn {
        machine_id: String,
        argv: Vec<String>,
        source: std::io::Error,
    },
    #[error("machine {0}: nothing to run (no exec, entrypoint or cmd and the image has no default command)")]
    NoCommand(String),
    #[error("machine {0} is already running")]
    AlreadyRunning(String),
    #[error("machine {machine_id}: {signal} is not a signal that can be sent")]
    BadSignal { machine_id: String, signal: i32 },
    #[error("machine {machine_id}: image directory {} is not a directory", path.display())]
    NoImageDir { machine_id: String, path: PathBuf },
    #[error("machine {machine_id}: cannot set up its cgroup: {source}")]
    Cgroup {
        machine_id: String,
        source: std::io::Error,
    },
    #[error("machine {machine_id}: still running {waited:?} after SIGKILL (process stuck in the kernel?)")]
    StopTimeout {
        machine_id: String,
        waited: Duration,
    },
    /// A container could not be set up or started; the message says why and what to do.
    #[error("machine {machine_id}: {message}")]
    Container { machine_id: String, message: String },
    #[error("runtime io error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Knobs with sensible defaults; [`Runtime::new`] uses `Tuning::default()`.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// First restart delay; it doubles with each restart inside `restart_window`.
    pub backoff_initial: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// `on-failure` allows `max_retries` restarts within this sliding window (Fly counts restarts
    /// over five minutes); a machine that fails less often than that is restarted forever.
    pub restart_window: Duration,
    /// Whether guest limits are enforced with cgroups.
    pub cgroups: CgroupMode,
    /// Name of the parent cgroup, at the root of each hierarchy. One agent per parent: reaping
    /// kills whatever runs in cgroups under it.
    pub cgroup_parent: String,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            restart_window: Duration::from_secs(300),
            cgroups: CgroupMode::Auto,
            cgroup_parent: "aloft".into(),
        }
    }
}

/// A shared handle on the process runtime.
///
/// Dropping it stops supervising (no more events, no more restarts) but leaves the processes
/// running, exactly as if the agent had died: the next runtime on the same data dir reaps them
/// with [`Runtime::reap_orphans`]. Stop machines first for a clean shutdown.
pub struct Runtime {
    inner: Arc<supervisor::Inner>,
}

impl Runtime {
    /// Sets up the runtime and returns the receiving end of its event stream.
    pub fn new(
        config: RuntimeConfig,
    ) -> Result<(Runtime, tokio::sync::mpsc::UnboundedReceiver<RuntimeEvent>), RuntimeError> {
        Runtime::with_tuning(config, Tuning::default())
    }

    /// [`Runtime::new`] with explicit [`Tuning`].
    pub fn with_tuning(
        config: RuntimeConfig,
        tuning: Tuning,
    ) -> Result<(Runtime, tokio::sync::mpsc::UnboundedReceiver<RuntimeEvent>), RuntimeError> {
        let (inner, rx) = supervisor::Inner::new(config, tuning)?;
        Ok((Runtime { inner }, rx))
    }

    /// Kills every process left behind by a previous agent (found through the pid records)
    /// and returns the ids of the machines whose processes were killed.
    pub fn reap_orphans(&self) -> Vec<String> {
        self.inner.records.reap(&self.inner.cgroups)
    }

    /// Picks up the container of `spec.machine_id` that a previous agent left (see
    /// [`Adopted`]). Call before anything else launches the machine.
    pub async fn adopt(&self, spec: LaunchSpec) -> Result<Adopted, RuntimeError> {
        supervisor::adopt(&self.inner, spec).await
    }

    /// Machines whose containers a previous agent left and nobody supervises yet.
    pub fn containers_left(&self) -> Vec<String> {
        supervisor::containers_left(&self.inner)
    }

    /// Kills a container a previous agent left (its shim, its init and everything in its pid
    /// namespace) and removes its files, mount and network.
    pub fn reap_container(&self, machine_id: &str) {
        supervisor::reap_container(&self.inner, machine_id)
    }

    /// Frees what a destroyed machine kept between runs: its network namespace and address.
    pub fn release(&self, machine_id: &str) {
        if let Ok(c) = &self.inner.containers {
            container::release_network(c, machine_id);
        }
    }

    /// Frees the networks of every machine not in `keep` (after a restart: the machines that
    /// exist are kept).
    pub fn keep_only(&self, keep: &[String]) {
        if let Ok(Some(net)) = self.inner.containers.as_ref().map(|c| c.network.as_ref()) {
            net.keep_only(keep);
        }
    }

    /// The container network, when this runtime runs containers with one.
    fn netns(&self) -> Result<&Arc<dyn container::Netns>, String> {
        match &self.inner.containers {
            Ok(c) => c.network.as_ref().ok_or_else(|| {
                "this agent runs containers without a network".to_string()
            }),
            Err(why) => Err(format!(
                "private addresses live on the container network, and containers cannot run here: {why}"
            )),
        }
    }

    /// The Flycast (service) address `key` of organization `org` on the machine network: made
    /// (and the network set up) on the first call, the same address for the same key after.
    pub fn service_address(&self, org: &str, key: &str) -> Result<std::net::Ipv6Addr, String> {
        self.netns()?.service_address(org, key)
    }

    /// Takes the service address `key` off the network. Idempotent.
    pub fn release_service_address(&self, key: &str) {
        if let Ok(net) = self.netns() {
            net.release_service_address(key);
        }
    }

    /// The IPv4 address of a container machine on the bridge (what the proxy connects to: apps
    /// that listen on 0.0.0.0 only are reached too), if it has one.
    pub fn machine_ipv4(&self, machine_id: &str) -> Option<std::net::Ipv4Addr> {
        self.netns().ok()?.address(machine_id)
    }

    /// Whether containers can run here, or why not.
    pub fn containers(&self) -> Result<(), String> {
        self.inner
            .containers
            .as_ref()
            .map(|_| ())
            .map_err(Clone::clone)
    }

    /// A free host port for each service `internal_port` of `config` (and each check port),
    /// one per distinct internal port.
    pub fn allocate_ports(
        &self,
        config: &MachineConfig,
    ) -> Result<BTreeMap<u16, u16>, RuntimeError> {
        self.inner.ports.allocate(&env::internal_ports(config))
    }

    /// Spawns the machine's process and supervises it under its restart policy. Returns the
    /// pid once the process runs (after exec), with `Started` already sent.
    pub async fn launch(&self, spec: LaunchSpec) -> Result<u32, RuntimeError> {
        if spec.container.is_none() {
            if let Some(v) = spec.volumes.first() {
                return Err(RuntimeError::Container {
                    machine_id: spec.machine_id.clone(),
                    message: format!(
                        "a host-process machine cannot mount a volume (at {:?}); run it from an image",
                        v.destination
                    ),
                });
            }
        }
        supervisor::launch(&self.inner, spec).await
    }

    /// Sends `signal` to the machine's process tree, SIGKILL after `timeout`, and returns once it
    /// has exited. The exit is reported with `requested_stop: true` and no restart. A stop while
    /// the machine waits to be restarted cancels the restart and reports that same exit again
    /// with `requested_stop: true`.
    pub async fn stop(
        &self,
        machine_id: &str,
        signal: i32,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        supervisor::stop(&self.inner, machine_id, signal, timeout).await
    }

    /// The captured stdout/stderr of every machine.
    pub fn logs(&self) -> &LogStore {
        &self.inner.logs
    }

    /// Delivers a signal to the machine's main process without stopping supervision.
    pub fn signal(&self, machine_id: &str, signal: i32) -> Result<(), RuntimeError> {
        supervisor::signal(&self.inner, machine_id, signal)
    }

    /// The pid of the machine's main process, if it runs right now.
    pub fn pid(&self, machine_id: &str) -> Option<u32> {
        self.inner.pid(machine_id)
    }

    /// Runs a command in the running machine (see `exec`): its exit code and output, also when
    /// it failed, could not start or timed out; an error when the machine does not run.
    pub async fn exec(
        &self,
        machine_id: &str,
        req: &ExecRequest,
    ) -> Result<aloft_api::exec::MachineExecResponse, RuntimeError> {
        supervisor::exec(&self.inner, machine_id, req).await
    }

    /// Starts a command on a pseudo-terminal in the running machine (see `console`); an error
    /// when the machine does not run or the command cannot be started.
    pub async fn console(
        &self,
        machine_id: &str,
        req: &ConsoleRequest,
    ) -> Result<ConsoleSession, RuntimeError> {
        supervisor::console(&self.inner, machine_id, req).await
    }

    /// Where the running machine's files are, for copies in and out (see `copy`).
    pub fn copy_root(&self, machine_id: &str) -> Result<copy::CopyRoot, RuntimeError> {
        supervisor::copy_root(&self.inner, machine_id)
    }

    /// The processes of the running machine, in pid order. Reads /proc: call off async threads
    /// for long lists.
    pub fn processes(
        &self,
        machine_id: &str,
    ) -> Result<Vec<aloft_api::exec::ProcessStat>, RuntimeError> {
        supervisor::processes(&self.inner, machine_id)
    }

    /// Whether the machine is under supervision (running, or waiting to be restarted).
    pub fn is_supervised(&self, machine_id: &str) -> bool {
        self.inner.is_supervised(machine_id)
    }

    /// Ids of every machine under supervision, sorted.
    pub fn supervised(&self) -> Vec<String> {
        self.inner.supervised()
    }

    /// Whether guest CPU/memory limits are enforced (cgroups); otherwise they are only recorded.
    pub fn limits_enforced(&self) -> bool {
        self.inner.cgroups.is_on()
    }

    /// Stops supervising every machine without touching its processes, as dropping the runtime
    /// does (an agent that goes away): no exit is handled and nothing is restarted after this.
    pub fn abandon(&self) {
        self.inner.abandon();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.inner.abandon();
    }
}

/// One captured line of a machine's stdout or stderr: the wire type itself, since the log
/// files hold the lines exactly as the agent serves them.
pub use aloft_api::LogLine;

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
    dir: PathBuf,
    limits: LogLimits,
    files: std::sync::Mutex<logs::Files>,
    tx: tokio::sync::broadcast::Sender<LogLine>,
}

impl LogStore {
    /// The newest matching lines, oldest first.
    pub fn query(&self, query: &LogQuery) -> Vec<LogLine> {
        self.do_query(query)
    }

    /// New lines as they are captured (filter on the receiving side with [`LogQuery::matches`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LogLine> {
        self.do_subscribe()
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
