//! Supervision: one tokio task per machine runs its process, reports `Started`/`Exited`, and
//! restarts it under its policy.
//!
//! Restart policy (`config.restart.policy`):
//! - `no`: never restarted;
//! - `always`: restarted after every exit (`max_retries` is ignored);
//! - `on-failure` (also when unset or unknown): restarted after a non-zero exit, a death by
//!   signal or an OOM kill, up to `max_retries` (default 10) restarts within
//!   [`crate::Tuning::restart_window`].
//!
//! Restarts wait `backoff_initial × 2^n` (capped at `backoff_max`), n = restarts in the window.
//! An exit after a requested stop is never restarted. When the main process exits, whatever is
//! left of its tree (process group, cgroup) is killed: a machine is down when its main process
//! is, as a VM would be.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_api::{ExitEvent, MachineConfig, DEFAULT_MAX_RETRIES};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::cgroup::{Driver, MachineCgroup};
use crate::console;
use crate::container::{self, Container, ContainerConfig};
use crate::exec;
use crate::logs::{capture, Labels};
use crate::orphans::{record_for, PidRecord, PidRecords};
use crate::ports::PortAllocator;
use crate::process::{self, ChildSetup};
use crate::{
    env, timestamp, LaunchSpec, LogStore, RuntimeConfig, RuntimeError, RuntimeEvent, Tuning,
};

/// How long an exit waits for the log readers to drain the pipes (a process that escaped the
/// tree may hold them open forever).
const DRAIN_PATIENCE: Duration = Duration::from_secs(2);
/// How long `stop` waits after SIGKILL before reporting the machine stuck.
const KILL_PATIENCE: Duration = Duration::from_secs(30);
/// Exit code reported when a restart cannot even spawn the process.
const SPAWN_FAILED_EXIT: i32 = 127;

pub(crate) struct Inner {
    pub tuning: Tuning,
    pub events: mpsc::UnboundedSender<RuntimeEvent>,
    pub logs: Arc<LogStore>,
    pub records: PidRecords,
    pub cgroups: Driver,
    pub ports: PortAllocator,
    machines: Mutex<HashMap<String, Arc<Slot>>>,
    nofile_soft: Option<u64>,
    agent_env: Vec<(String, String)>,
    /// `<data-dir>/runtime`: containers keep their directories under it.
    pub dir: std::path::PathBuf,
    /// How containers run here, or why they cannot.
    pub containers: Result<ContainerConfig, String>,
    log_file_bytes: u64,
}

/// A machine under supervision.
struct Slot {
    state: Mutex<SlotState>,
    /// Wakes the supervisor out of a restart backoff when a stop arrives.
    wake: Notify,
    /// Becomes true once supervision ended and the final `Exited` was sent.
    done: watch::Sender<bool>,
    cgroup: Option<MachineCgroup>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// A container: signals go to its init, not to a process group.
    container: bool,
    /// Where its execs run.
    exec: exec::Target,
}

impl Slot {
    fn signal(&self, pid: u32, signal: i32) {
        let _ = if self.container {
            process::signal_pid(pid, signal)
        } else {
            process::signal_group(pid, signal)
        };
    }
}

#[derive(Default)]
struct SlotState {
    pid: Option<u32>,
    stop: Option<i32>,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    pub(crate) fn new(
        config: RuntimeConfig,
        tuning: Tuning,
    ) -> Result<(Arc<Inner>, mpsc::UnboundedReceiver<RuntimeEvent>), RuntimeError> {
        let io = |path: std::path::PathBuf| move |source| RuntimeError::Io { path, source };
        let logs_dir = config.data_dir.join("logs");
        let logs = LogStore::new(logs_dir.clone(), config.logs).map_err(io(logs_dir))?;
        let pids_dir = config.data_dir.join("pids");
        let records = PidRecords::new(pids_dir.clone()).map_err(io(pids_dir))?;
        let cgroups = match crate::cgroup::Driver::detect(tuning.cgroups, &tuning.cgroup_parent) {
            Ok(d) => d,
            Err(reason) => {
                tracing::warn!(
                    "guest CPU and memory limits are recorded but not enforced: {reason}"
                );
                Driver::Off
            }
        };
        let agent_env = std::env::vars()
            .filter(|(k, _)| env::INHERITED_VARS.contains(&k.as_str()))
            .collect();
        let (events, rx) = mpsc::unbounded_channel();
        let containers = config
            .containers
            .clone()
            .ok_or_else(|| "the runtime was set up without containers".to_string())
            .and_then(|c| c);
        let inner = Inner {
            dir: config.data_dir.clone(),
            containers,
            log_file_bytes: config.logs.file_bytes,
            tuning,
            events,
            logs: Arc::new(logs),
            records,
            cgroups,
            ports: PortAllocator::default(),
            machines: Mutex::new(HashMap::new()),
            nofile_soft: process::raise_nofile(),
            agent_env,
        };
        Ok((Arc::new(inner), rx))
    }

    fn machines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.machines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, machine_id: &str) -> Option<Arc<Slot>> {
        self.machines().get(machine_id).cloned()
    }

    pub(crate) fn pid(&self, machine_id: &str) -> Option<u32> {
        self.slot(machine_id).and_then(|s| s.lock().pid)
    }

    pub(crate) fn is_supervised(&self, machine_id: &str) -> bool {
        self.slot(machine_id).is_some()
    }

    pub(crate) fn supervised(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.machines().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Stops supervising without touching processes (see `Drop for Runtime`).
    pub(crate) fn abandon(&self) {
        for slot in self.machines().values() {
            if let Some(task) = slot.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
        }
    }

    fn emit(&self, event: RuntimeEvent) {
        let _ = self.events.send(event);
    }
}

/// Aborts the log readers of a process when dropped (supervision abandoned).
struct Readers(Vec<JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for r in &self.0 {
            r.abort();
        }
    }
}

/// One run of a machine: a child process, or a container held by its shim.
enum Running {
    Process {
        child: tokio::process::Child,
        pid: u32,
        readers: Readers,
    },
    Container {
        container: Container,
        follow: container::tail::Follow,
    },
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Process { pid, .. } => *pid,
            Running::Container { container, .. } => container.pid,
        }
    }
}

/// Everything needed to (re)start one machine's process.
struct Plan {
    spec: LaunchSpec,
    argv: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    labels: Labels,
}

impl Plan {
    /// The plan of `spec`; `env` makes the environment of a host process from it.
    fn new(
        spec: LaunchSpec,
        argv: Vec<String>,
        env: impl FnOnce(&LaunchSpec) -> std::collections::BTreeMap<String, String>,
    ) -> Plan {
        Plan {
            env: env(&spec),
            labels: Labels {
                app: spec.app.clone(),
                machine_id: spec.machine_id.clone(),
                group: env::process_group(&spec.config),
                region: spec.region.clone(),
            },
            argv,
            spec,
        }
    }
}

pub(crate) async fn launch(inner: &Arc<Inner>, spec: LaunchSpec) -> Result<u32, RuntimeError> {
    let machine_id = spec.machine_id.clone();
    let argv = env::argv(&spec).ok_or_else(|| RuntimeError::NoCommand(machine_id.clone()))?;
    if let Some(image) = &spec.container {
        if let Err(why) = &inner.containers {
            return Err(RuntimeError::Container {
                machine_id,
                message: format!("containers cannot run on this host: {why}"),
            });
        }
        if let Some(missing) = image.layers.iter().find(|l| !l.is_dir()) {
            return Err(RuntimeError::NoImageDir {
                machine_id,
                path: missing.clone(),
            });
        }
    } else if !spec.image_dir.is_dir() {
        return Err(RuntimeError::NoImageDir {
            machine_id,
            path: spec.image_dir.clone(),
        });
    }
    let guest = env::effective_guest(&spec.config);
    let plan = Plan::new(spec, argv, |s| {
        env::environment(s, inner.agent_env.iter().cloned())
    });
    let target = match plan.spec.container {
        Some(_) => exec::Target::Container,
        None => exec::Target::Process {
            cwd: plan.spec.image_dir.clone(),
            env: plan.env.clone(),
        },
    };
    let (done, _) = watch::channel(false);
    let cgroup = {
        let mut machines = inner.machines();
        if machines.contains_key(&machine_id) {
            return Err(RuntimeError::AlreadyRunning(machine_id));
        }
        let cgroup = inner
            .cgroups
            .create(&machine_id, &guest)
            .map_err(|source| RuntimeError::Cgroup {
                machine_id: machine_id.clone(),
                source,
            })?;
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::default()),
            wake: Notify::new(),
            done,
            cgroup: cgroup.clone(),
            task: Mutex::new(None),
            container: plan.spec.container.is_some(),
            exec: target,
        });
        machines.insert(machine_id.clone(), slot);
        cgroup
    };
    let slot = inner.slot(&machine_id).expect("slot inserted above");
    let oom_base = cgroup.as_ref().map_or(0, MachineCgroup::oom_kills);
    let running = match start(inner, &slot, &plan).await {
        Ok(r) => r,
        Err(e) => {
            inner.machines().remove(&machine_id);
            inner.records.remove(&machine_id);
            if let Some(cg) = &cgroup {
                let cg = cg.clone();
                let _ =
                    tokio::task::spawn_blocking(move || cg.remove(Duration::from_secs(2))).await;
            }
            return Err(e);
        }
    };
    let pid = running.pid();
    inner
        .ports
        .hold(&machine_id, plan.spec.host_ports.values().copied());
    let task = tokio::spawn(supervise(
        inner.clone(),
        slot.clone(),
        plan,
        First::Running(Box::new(running)),
        oom_base,
    ));
    *slot.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    Ok(pid)
}

/// What a previous agent left of a machine's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adopted {
    /// Still running: supervised again from now on, without a new `Started`.
    Running { pid: u32 },
    /// It ended while no agent watched: its restart policy decides now (an `Exited` event
    /// follows, then `Started` if it is restarted).
    Exited,
    /// Nothing of it is left.
    NotFound,
}

pub(crate) async fn adopt(inner: &Arc<Inner>, spec: LaunchSpec) -> Result<Adopted, RuntimeError> {
    let machine_id = spec.machine_id.clone();
    let (dir, id, logs) = (inner.dir.clone(), machine_id.clone(), inner.logs.clone());
    let found = tokio::task::spawn_blocking(move || container::adopt(&dir, &id, &logs))
        .await
        .ok()
        .flatten();
    let Some(found) = found else {
        return Ok(Adopted::NotFound);
    };
    let argv = env::argv(&spec).unwrap_or_default();
    let (done, _) = watch::channel(false);
    let cgroup = inner.cgroups.machine(&machine_id);
    let slot = Arc::new(Slot {
        state: Mutex::new(SlotState::default()),
        wake: Notify::new(),
        done,
        cgroup: cgroup.clone(),
        task: Mutex::new(None),
        container: true,
        exec: exec::Target::Container,
    });
    {
        let mut machines = inner.machines();
        if machines.contains_key(&machine_id) {
            return Err(RuntimeError::AlreadyRunning(machine_id));
        }
        machines.insert(machine_id.clone(), slot.clone());
    }
    // A container's environment is in its bundle already.
    let plan = Plan::new(spec, argv, |_| Default::default());
    let oom_base = cgroup.as_ref().map_or(0, MachineCgroup::oom_kills);
    let (first, adopted) = match found {
        container::Found::Running(c, tail) => {
            let pid = c.pid;
            slot.lock().pid = Some(pid);
            (
                First::Running(Box::new(running_container((c, tail)))),
                Adopted::Running { pid },
            )
        }
        container::Found::Exited(record) => (
            First::Exited(Outcome {
                exit_code: record.exit_code,
                signal: record.signal,
                oom_killed: record.oom_killed,
            }),
            Adopted::Exited,
        ),
    };
    let task = tokio::spawn(supervise(
        inner.clone(),
        slot.clone(),
        plan,
        first,
        oom_base,
    ));
    *slot.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    Ok(adopted)
}

/// Machines with a container directory a previous agent left.
pub(crate) fn containers_left(inner: &Inner) -> Vec<String> {
    let supervised = inner.supervised();
    container::known(&inner.dir)
        .into_iter()
        .filter(|id| !supervised.contains(id))
        .collect()
}

/// Kills and removes a container a previous agent left and nobody adopts.
pub(crate) fn reap_container(inner: &Inner, machine_id: &str) {
    container::reap(inner.containers.as_ref().ok(), &inner.dir, machine_id);
    if let Some(cg) = inner.cgroups.machine(machine_id) {
        cg.kill_all();
        let _ = cg.remove(Duration::from_secs(2));
    }
}

/// Starts the machine (its process, or its container), and sends `Started`.
async fn start(inner: &Inner, slot: &Slot, plan: &Plan) -> Result<Running, RuntimeError> {
    let running = match &plan.spec.container {
        Some(image) => start_container(inner, slot, plan, image).await?,
        None => start_process(inner, slot, plan).await?,
    };
    started(inner, slot, plan, &running);
    Ok(running)
}

/// Records the pid, delivers a stop that arrived meanwhile, and sends `Started`.
fn started(inner: &Inner, slot: &Slot, plan: &Plan, running: &Running) {
    let pid = running.pid();
    let pending_stop = {
        let mut state = slot.lock();
        state.pid = Some(pid);
        state.stop
    };
    // A stop arrived while starting: it found no pid to signal, so deliver it now.
    if let Some(signal) = pending_stop {
        let _ = signal_running(running, signal);
    }
    let address = match (&plan.spec.container, &inner.containers) {
        (Some(_), Ok(c)) => container::address(c, &plan.spec.machine_id),
        _ => None,
    };
    inner.emit(RuntimeEvent::Started {
        machine_id: plan.spec.machine_id.clone(),
        instance_id: plan.spec.instance_id.clone(),
        pid,
        address,
    });
}

/// A signal to what runs: the process group of a process machine; the init of a container
/// (tini forwards it to the machine's process group; SIGKILL of the init ends the container's
/// whole pid namespace).
fn signal_running(running: &Running, signal: i32) -> std::io::Result<bool> {
    match running {
        Running::Process { pid, .. } => process::signal_group(*pid, signal),
        Running::Container { container, .. } => process::signal_pid(container.pid, signal),
    }
}

async fn start_container(
    inner: &Inner,
    slot: &Slot,
    plan: &Plan,
    image: &container::ContainerImage,
) -> Result<Running, RuntimeError> {
    let config = inner
        .containers
        .as_ref()
        .map_err(|why| RuntimeError::Container {
            machine_id: plan.spec.machine_id.clone(),
            message: format!("containers cannot run on this host: {why}"),
        })?;
    let container = container::start(
        &plan.spec,
        container::Start {
            runtime_dir: &inner.dir,
            config,
            image,
            argv: &plan.argv,
            labels: &plan.labels,
            cgroup: slot.cgroup.as_ref(),
            cgroup_parent: &inner.tuning.cgroup_parent,
            nofile: inner.nofile_soft.unwrap_or(1024),
            log_file_bytes: inner.log_file_bytes,
            logs: &inner.logs,
        },
    )
    .await?;
    Ok(running_container(container))
}

fn running_container((container, tailer): (Container, container::tail::Tailer)) -> Running {
    Running::Container {
        container,
        follow: container::tail::Follow::start(tailer),
    }
}

/// Spawns the process and records it (pid records: reaped after an agent crash).
async fn start_process(inner: &Inner, slot: &Slot, plan: &Plan) -> Result<Running, RuntimeError> {
    let machine_id = &plan.spec.machine_id;
    let spawn_err = |source| RuntimeError::Spawn {
        machine_id: machine_id.clone(),
        argv: plan.argv.clone(),
        source,
    };
    let cgroup_procs = match &slot.cgroup {
        Some(cg) => cg
            .procs_files()
            .iter()
            .map(|p| process::c_path(p))
            .collect::<Result<_, _>>(),
        None => Ok(Vec::new()),
    }
    .map_err(spawn_err)?;
    let setup = ChildSetup {
        cgroup_procs,
        nofile_soft: inner.nofile_soft,
        controlling_tty: false,
    };
    // A placeholder first: an agent killed during the spawn still leaves a trace to reap.
    let placeholder = PidRecord {
        machine_id: machine_id.clone(),
        pid: 0,
        pgid: 0,
        start_time: 0,
    };
    if let Err(e) = inner.records.write(&placeholder) {
        tracing::warn!(machine_id = %machine_id, "cannot write its pid record: {e}");
    }
    let mut child = process::spawn(&plan.argv, &plan.spec.image_dir, &plan.env, setup, false)
        .await
        .map_err(spawn_err)?;
    let Some(pid) = child.id() else {
        // Already reaped: cannot happen before we wait, but never panic over it.
        return Err(spawn_err(std::io::Error::other(
            "the process vanished right after spawn",
        )));
    };
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(capture(
            out,
            "stdout",
            plan.labels.clone(),
            inner.logs.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(capture(
            err,
            "stderr",
            plan.labels.clone(),
            inner.logs.clone(),
        )));
    }
    if let Some(record) = record_for(machine_id, pid) {
        if let Err(e) = inner.records.write(&record) {
            tracing::warn!(machine_id = %machine_id, "cannot write its pid record: {e}; it would survive an agent crash");
        }
    }
    Ok(Running::Process {
        child,
        pid,
        readers: Readers(readers),
    })
}

/// How one run of the process ended.
struct Outcome {
    exit_code: i32,
    signal: i32,
    oom_killed: bool,
}

impl Outcome {
    fn failed(&self) -> bool {
        self.exit_code != 0 || self.signal != 0 || self.oom_killed
    }
}

/// Waits for the main process, kills what is left of its tree and drains its logs.
async fn run_to_exit(inner: &Inner, slot: &Slot, running: Running, oom_base: &mut u64) -> Outcome {
    let mut shim_saw_oom = false;
    let (exit_code, signal) = match running {
        Running::Process {
            child,
            pid,
            readers,
        } => process_to_exit(slot, child, pid, readers).await,
        Running::Container {
            mut container,
            follow,
        } => {
            let machine_id = container
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let record = match &inner.containers {
                Ok(c) => container.wait(c, &inner.dir, &machine_id).await,
                Err(_) => container::shim::ExitRecord::default(),
            };
            slot.lock().pid = None;
            if let Some(cg) = &slot.cgroup {
                cg.kill_all();
            }
            follow.finish().await;
            shim_saw_oom = record.oom_killed;
            (record.exit_code, record.signal)
        }
    };
    let oom_now = slot.cgroup.as_ref().map_or(0, MachineCgroup::oom_kills);
    let oom_killed = shim_saw_oom || oom_now > *oom_base;
    *oom_base = oom_now;
    Outcome {
        exit_code,
        signal,
        oom_killed,
    }
}

async fn process_to_exit(
    slot: &Slot,
    mut child: tokio::process::Child,
    pid: u32,
    mut readers: Readers,
) -> (i32, i32) {
    let status = child.wait().await;
    slot.lock().pid = None;
    let _ = process::signal_group(pid, libc::SIGKILL);
    if let Some(cg) = &slot.cgroup {
        cg.kill_all();
    }
    let drain = futures_join(std::mem::take(&mut readers.0));
    if tokio::time::timeout(DRAIN_PATIENCE, drain).await.is_err() {
        tracing::warn!(pid, "output pipes still open after exit; dropping the rest");
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (code, 0),
            (None, Some(sig)) => (128 + sig, sig),
            (None, None) => (-1, 0),
        },
        Err(e) => {
            tracing::warn!(pid, "cannot wait for the process: {e}");
            (-1, 0)
        }
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

enum Policy {
    No,
    Always,
    OnFailure { max_retries: u32 },
}

impl Policy {
    fn of(config: &MachineConfig) -> Policy {
        let restart = config.restart.clone().unwrap_or_default();
        match restart.policy.as_str() {
            "no" => Policy::No,
            "always" => Policy::Always,
            _ => Policy::OnFailure {
                max_retries: restart.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            },
        }
    }
}

/// What supervision starts from: a run to wait for, or an exit that happened already (a
/// container that ended while no agent watched).
enum First {
    Running(Box<Running>),
    Exited(Outcome),
}

async fn supervise(
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    plan: Plan,
    first: First,
    mut oom_base: u64,
) {
    let machine_id = plan.spec.machine_id.clone();
    let policy = Policy::of(&plan.spec.config);
    let mut restarts: u32 = 0;
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let (mut running, mut already) = match first {
        First::Running(r) => (Some(*r), None),
        First::Exited(o) => (None, Some(o)),
    };
    loop {
        let outcome = match (running.take(), already.take()) {
            (Some(r), _) => run_to_exit(&inner, &slot, r, &mut oom_base).await,
            (None, Some(o)) => o,
            (None, None) => Outcome {
                exit_code: SPAWN_FAILED_EXIT,
                signal: 0,
                oom_killed: false,
            },
        };
        let stop_requested = slot.lock().stop.is_some();
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > inner.tuning.restart_window)
        {
            recent.pop_front();
        }
        let restart = !stop_requested
            && match policy {
                Policy::No => false,
                Policy::Always => true,
                Policy::OnFailure { max_retries } => {
                    outcome.failed() && (recent.len() as u32) < max_retries
                }
            };
        let exit = ExitEvent {
            exit_code: outcome.exit_code,
            guest_exit_code: outcome.exit_code,
            guest_signal: outcome.signal,
            oom_killed: outcome.oom_killed,
            requested_stop: stop_requested,
            restarting: restart,
            signal: outcome.signal,
            exited_at: timestamp::now_nanos(),
        };
        if outcome.oom_killed {
            tracing::warn!(machine_id = %machine_id, "out of memory: killed by the kernel");
        }
        if !restart {
            finish(&inner, &slot, &plan, exit, restarts).await;
            return;
        }
        inner.emit(RuntimeEvent::Exited {
            machine_id: machine_id.clone(),
            instance_id: plan.spec.instance_id.clone(),
            exit: exit.clone(),
            restart_count: restarts,
        });
        let exponent = (recent.len() as u32).min(20);
        let delay = inner
            .tuning
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(inner.tuning.backoff_max);
        recent.push_back(now);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = slot.wake.notified() => {}
        }
        if slot.lock().stop.is_some() {
            let exit = ExitEvent {
                requested_stop: true,
                restarting: false,
                exited_at: timestamp::now_nanos(),
                ..exit
            };
            finish(&inner, &slot, &plan, exit, restarts).await;
            return;
        }
        restarts += 1;
        match start(&inner, &slot, &plan).await {
            Ok(r) => running = Some(r),
            Err(e) => tracing::warn!(machine_id = %machine_id, "restart failed: {e}"),
        }
    }
}

/// Ends supervision: cleans up, then sends the final `Exited` and wakes `stop` callers.
async fn finish(inner: &Arc<Inner>, slot: &Arc<Slot>, plan: &Plan, exit: ExitEvent, restarts: u32) {
    let machine_id = &plan.spec.machine_id;
    if let Some(cg) = slot.cgroup.clone() {
        let id = machine_id.clone();
        let removed = tokio::task::spawn_blocking(move || cg.remove(Duration::from_secs(5))).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(machine_id = %id, "cannot remove its cgroup: {e}");
        }
    }
    inner.records.remove(machine_id);
    inner.ports.release(machine_id);
    if plan.spec.container.is_some() {
        let (dir, id) = (inner.dir.clone(), machine_id.clone());
        let _ = tokio::task::spawn_blocking(move || container::remove(&dir, &id)).await;
    }
    inner.logs.close(machine_id);
    {
        let mut machines = inner.machines();
        if machines
            .get(machine_id)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            machines.remove(machine_id);
        }
    }
    inner.emit(RuntimeEvent::Exited {
        machine_id: machine_id.clone(),
        instance_id: plan.spec.instance_id.clone(),
        exit,
        restart_count: restarts,
    });
    slot.done.send_replace(true);
}

pub(crate) async fn stop(
    inner: &Arc<Inner>,
    machine_id: &str,
    signal: i32,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let slot = inner
        .slot(machine_id)
        .ok_or_else(|| RuntimeError::NotRunning(machine_id.to_string()))?;
    if nix::sys::signal::Signal::try_from(signal).is_err() {
        return Err(RuntimeError::BadSignal {
            machine_id: machine_id.to_string(),
            signal,
        });
    }
    let mut done = slot.done.subscribe();
    let pid = {
        let mut state = slot.lock();
        state.stop.get_or_insert(signal);
        state.pid
    };
    slot.wake.notify_one();
    if let Some(pid) = pid {
        slot.signal(pid, signal);
    }
    if tokio::time::timeout(timeout, done.wait_for(|d| *d))
        .await
        .is_ok()
    {
        return Ok(());
    }
    tracing::info!(
        machine_id,
        "still running {timeout:?} after signal {signal}: sending SIGKILL"
    );
    let pid = slot.lock().pid;
    if let Some(pid) = pid {
        slot.signal(pid, libc::SIGKILL);
    }
    if let Some(cg) = &slot.cgroup {
        cg.kill_all();
    }
    let exited = tokio::time::timeout(KILL_PATIENCE, done.wait_for(|d| *d))
        .await
        .is_ok();
    if exited {
        Ok(())
    } else {
        Err(RuntimeError::StopTimeout {
            machine_id: machine_id.to_string(),
            waited: KILL_PATIENCE,
        })
    }
}

pub(crate) fn signal(inner: &Inner, machine_id: &str, signal: i32) -> Result<(), RuntimeError> {
    let slot = inner
        .slot(machine_id)
        .ok_or_else(|| RuntimeError::NotRunning(machine_id.to_string()))?;
    let bad = || RuntimeError::BadSignal {
        machine_id: machine_id.to_string(),
        signal,
    };
    nix::sys::signal::Signal::try_from(signal).map_err(|_| bad())?;
    let pid = slot
        .lock()
        .pid
        .ok_or_else(|| RuntimeError::NotRunning(machine_id.to_string()))?;
    match process::signal_pid(pid, signal) {
        Ok(true) => Ok(()),
        Ok(false) => Err(RuntimeError::NotRunning(machine_id.to_string())),
        Err(_) => Err(bad()),
    }
}

/// The running machine's slot and main pid, or `NotRunning`.
fn running(inner: &Inner, machine_id: &str) -> Result<(Arc<Slot>, u32), RuntimeError> {
    let slot = inner
        .slot(machine_id)
        .ok_or_else(|| RuntimeError::NotRunning(machine_id.to_string()))?;
    let pid = slot
        .lock()
        .pid
        .ok_or_else(|| RuntimeError::NotRunning(machine_id.to_string()))?;
    Ok((slot, pid))
}

pub(crate) async fn exec(
    inner: &Inner,
    machine_id: &str,
    req: &exec::ExecRequest,
) -> Result<aloft_api::exec::MachineExecResponse, RuntimeError> {
    let (slot, _) = running(inner, machine_id)?;
    match place(inner, &slot, machine_id)? {
        Place::Host(host) => exec::on_host(machine_id, host, req).await,
        Place::Container { runc, root, dir } => {
            exec::in_container(machine_id, runc, &root, &dir, req).await
        }
    }
}

pub(crate) async fn console(
    inner: &Inner,
    machine_id: &str,
    req: &console::ConsoleRequest,
) -> Result<console::ConsoleSession, RuntimeError> {
    let (slot, _) = running(inner, machine_id)?;
    match place(inner, &slot, machine_id)? {
        Place::Host(host) => console::on_host(machine_id, host, req).await,
        Place::Container { runc, root, dir } => {
            console::in_container(machine_id, runc, &root, &dir, req).await
        }
    }
}

/// Where a command runs in a running machine (exec, console): beside a host process machine,
/// in its directory, environment and cgroup, or in its container through runc.
enum Place<'a> {
    Host(exec::HostExec<'a>),
    Container {
        runc: &'a std::path::Path,
        root: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
}

fn place<'a>(
    inner: &'a Inner,
    slot: &'a Slot,
    machine_id: &str,
) -> Result<Place<'a>, RuntimeError> {
    Ok(match &slot.exec {
        exec::Target::Process { cwd, env } => Place::Host(exec::HostExec {
            cwd,
            env,
            cgroup_procs: slot
                .cgroup
                .as_ref()
                .map(MachineCgroup::procs_files)
                .unwrap_or_default(),
            nofile_soft: inner.nofile_soft,
        }),
        exec::Target::Container => {
            let config = inner
                .containers
                .as_ref()
                .map_err(|why| RuntimeError::Container {
                    machine_id: machine_id.to_string(),
                    message: format!("containers cannot run on this host: {why}"),
                })?;
            Place::Container {
                runc: &config.runc,
                root: container::runc_root(&inner.dir),
                dir: container::containers_dir(&inner.dir).join(machine_id),
            }
        }
    })
}

/// Where the running machine's files are for `copy` (see the module doc there).
pub(crate) fn copy_root(
    inner: &Inner,
    machine_id: &str,
) -> Result<crate::copy::CopyRoot, RuntimeError> {
    let (slot, _) = running(inner, machine_id)?;
    Ok(match &slot.exec {
        exec::Target::Process { cwd, .. } => crate::copy::CopyRoot {
            dir: cwd.clone(),
            owner: None,
        },
        exec::Target::Container => {
            let dir = container::containers_dir(&inner.dir).join(machine_id);
            // The container's user, as runc runs it.
            let owner = std::fs::read(dir.join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| {
                    let user = &v["process"]["user"];
                    Some((user["uid"].as_u64()? as u32, user["gid"].as_u64()? as u32))
                });
            crate::copy::CopyRoot {
                dir: container::rootfs::rootfs_dir(&dir),
                owner,
            }
        }
    })
}

/// The pids of the running machine: its cgroup's; without cgroups, its session (host
/// process) or its pid namespace (container).
pub(crate) fn processes(
    inner: &Inner,
    machine_id: &str,
) -> Result<Vec<aloft_api::exec::ProcessStat>, RuntimeError> {
    let (slot, pid) = running(inner, machine_id)?;
    let mut pids = match &slot.cgroup {
        Some(cg) => cg.pids(),
        None if slot.container => {
            let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
            let own = ns(pid);
            process::all_processes()
                .into_iter()
                .filter(|p| own.is_some() && ns(p.pid) == own)
                .map(|p| p.pid)
                .collect()
        }
        None => process::all_processes()
            .into_iter()
            .filter(|p| p.session == pid)
            .map(|p| p.pid)
            .collect(),
    };
    if !pids.contains(&pid) {
        pids.push(pid);
    }
    pids.sort_unstable();
    Ok(crate::procs::describe(&pids))
}
