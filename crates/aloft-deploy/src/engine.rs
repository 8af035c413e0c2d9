//! The release executor, generic over the narrow [`DeployTarget`] the agent implements over its
//! machine controller.
//!
//! [`run_release`] is convergent and idempotent: each pass lists the machines, asks
//! [`crate::plan::converge`] what is left for this release, and does it. A machine that already
//! carries this release (created or updated by an earlier, interrupted run) is left alone; a
//! group whose target count is reached gets no new machine. So after an agent kill -9 at any
//! point, running the same release again ends with exactly the expected machines.
//!
//! Order of work: destroy the confirmed machines of removed groups, create machines for groups
//! that had none, then update the rest — `rolling`: per group, stopped machines all at once
//! (never launched) and started machines in batches of `max_unavailable`, each batch waited on
//! (started, then checks passing) before the next; `immediate`: everything at once, no waiting.
//!
//! Before any of that, a release command runs once ([`release_command`]); `canary` first runs
//! one temporary machine per group ([`canary`]); `bluegreen` replaces the update pass with
//! green machines and a one-step traffic switch ([`bluegreen`]).
//!
//! A scale operation (`Release::scale`) runs its frozen work instead: `scale count` destroys and
//! creates slots; `scale vm|memory` sets each listed machine's guest, one machine at a time; a
//! secrets operation restarts each listed machine that is still started, one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aloft_api::volumes::{CreateVolumeRequest, Volume};
use aloft_api::{CreateMachineRequest, Machine, MachineState, UpdateMachineRequest};
use futures_util::stream::{self, TryStreamExt};

use crate::events::DeployEvent;
use crate::plan::{
    carries_release, converge, effective_group, is_managed, meant_to_run, CreateWork, UpdateWork,
};
use crate::spec::{
    GuestSet, Release, ReleaseStatus, ScaleWork, SecretsRestart, SlotCreate, Strategy,
};
use aloft_api::metadata::{SCALE_SLOT, SECRETS_RELEASE};

mod bluegreen;
mod canary;
mod release_command;
mod volumes;

/// An error of the platform under the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The machine does not exist (any more).
    #[error("machine {0} not found")]
    NotFound(String),
    /// Waiting ran out of time.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Other(String),
}

/// What the engine needs from the platform, for one app. The agent implements it over its
/// controller (the store and the runtime); tests implement it in memory.
pub trait DeployTarget: Sync {
    /// Every machine of the app that is not destroyed.
    fn list_machines(&self) -> impl Future<Output = Result<Vec<Machine>, TargetError>> + Send;
    fn create_machine(
        &self,
        req: CreateMachineRequest,
    ) -> impl Future<Output = Result<Machine, TargetError>> + Send;
    fn update_machine(
        &self,
        id: &str,
        req: UpdateMachineRequest,
    ) -> impl Future<Output = Result<Machine, TargetError>> + Send;
    /// Destroys a machine; `force` kills a running one.
    fn destroy_machine(
        &self,
        id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Resolves once the machine is in `state`, or fails after `timeout`.
    fn wait_for_state(
        &self,
        id: &str,
        state: MachineState,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Watches a started machine for `window`: fails when it crash-loops (its command exited
    /// with an error more than once) or stops; resolves at the end of the window, or earlier once
    /// the machine has checks and they all pass.
    fn smoke_check(
        &self,
        id: &str,
        window: Duration,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Resolves once every check of the machine passes (at once when it has none).
    fn wait_for_checks(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Every event recorded for this release so far, oldest first: a run resumed after a crash
    /// reads what the interrupted one finished (the release command's outcome, canaries).
    fn recorded(&self) -> impl Future<Output = Result<Vec<DeployEvent>, TargetError>> + Send;
    /// Waits for a one-shot machine (just created) to end, recording its output as
    /// [`DeployEvent::ReleaseCommandOutput`] events as it comes; fails when it cannot start or
    /// is still running after `timeout` (the caller destroys it either way).
    fn run_to_exit(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<CommandExit, TargetError>> + Send;
    /// Moves service traffic in one step: the `green` machines start receiving it and the
    /// `blue` ones stop. Resolves once the proxy routes that way and requests the blue machines
    /// were serving had time to finish.
    fn switch_traffic(
        &self,
        green: &[String],
        blue: &[String],
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Every volume of the app that is not destroyed.
    fn list_volumes(&self) -> impl Future<Output = Result<Vec<Volume>, TargetError>> + Send;
    /// Creates a volume (for a new machine of a group with `[[mounts]]`).
    fn create_volume(
        &self,
        req: CreateVolumeRequest,
    ) -> impl Future<Output = Result<Volume, TargetError>> + Send;
    /// The region of a machine created without one, whose env says `primary` as its
    /// `PRIMARY_REGION` (where its volume is made).
    fn default_region(&self, primary: Option<&str>) -> String;
    /// Persists and publishes one progress event of the release. `Started` means the release is
    /// running, `Finished` carries its terminal status.
    fn record(&self, event: DeployEvent) -> impl Future<Output = Result<(), TargetError>> + Send;
}

/// How a one-shot machine's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandExit {
    pub exit_code: i64,
    /// Its last output lines (at most [`COMMAND_TAIL_LINES`]), for the error message.
    pub last_lines: Vec<String>,
}

/// Output lines of a failed release command quoted in the release's error.
pub const COMMAND_TAIL_LINES: usize = 20;

/// Why a release failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("could not list machines: {0}")]
    List(TargetError),
    #[error("could not destroy machine {id} (group {group:?}): {source}")]
    Destroy {
        id: String,
        group: String,
        source: TargetError,
    },
    #[error("could not create a machine for group {group:?}: {source}")]
    Create { group: String, source: TargetError },
    #[error("could not update machine {id} (group {group:?}): {source}")]
    Update {
        id: String,
        group: String,
        source: TargetError,
    },
    #[error("machine {id} (group {group:?}) did not become healthy: {source}")]
    Unhealthy {
        id: String,
        group: String,
        source: TargetError,
    },
    /// flyctl's words: "release command failed - aborting deployment".
    #[error("release command failed - aborting deployment: {0}")]
    ReleaseCommand(String),
    #[error("canary machine of group {group:?} did not become healthy, no machine was updated: {source}")]
    Canary {
        group: String,
        source: Box<EngineError>,
    },
    #[error("blue-green deploy failed before the traffic switch; the green machines were destroyed and the blue ones keep serving: {0}")]
    BlueGreen(Box<EngineError>),
    #[error("could not list the app's volumes: {0}")]
    Volumes(TargetError),
    #[error("could not create a volume {name:?} for a new machine of group {group:?}: {source}")]
    CreateVolume {
        group: String,
        name: String,
        source: TargetError,
    },
    #[error("could not record progress: {0}")]
    Record(TargetError),
    #[error("the release did not converge after {0} passes; machines keep changing under it")]
    NoConvergence(usize),
}

/// How long a new or updated machine is watched for a crash loop. flyctl watches 10 s; machines
/// here start in milliseconds and a command that cannot start (missing file, bad module) fails
/// within a second, so a shorter window keeps deploys fast. A crash after the window is still
/// recorded (events, restart policy) and seen by health checks.
pub const SMOKE_WINDOW: Duration = Duration::from_secs(3);

/// Groups updated side by side in a rolling deploy (flyctl's limit).
const GROUPS_AT_ONCE: usize = 16;

/// Passes over the machines before giving up on convergence (each pass normally finishes it).
const MAX_PASSES: usize = 3;

/// Carries out `release` to the end and records `Finished` (complete or failed).
/// `resumed` says whether this run continues one interrupted by an agent restart.
pub async fn run_release<T: DeployTarget>(
    target: &T,
    release: &Release,
    resumed: bool,
) -> Result<(), EngineError> {
    target
        .record(DeployEvent::Started {
            version: release.version,
            resumed,
        })
        .await
        .map_err(EngineError::Record)?;
    let result = converge_fully(target, release, resumed).await;
    let (status, error) = match &result {
        Ok(()) => (ReleaseStatus::Complete, None),
        Err(e) => (ReleaseStatus::Failed, Some(e.to_string())),
    };
    target
        .record(DeployEvent::Finished { status, error })
        .await
        .map_err(EngineError::Record)?;
    result
}

async fn converge_fully<T: DeployTarget>(
    target: &T,
    release: &Release,
    resumed: bool,
) -> Result<(), EngineError> {
    let smoked = Mutex::new(BTreeSet::new());
    let waited = Mutex::new(BTreeSet::new());
    let engine = Engine {
        target,
        release,
        smoked: &smoked,
        waited: &waited,
    };
    if let Some(work) = &release.scale {
        engine.scale(work).await?;
        engine.set_guests(&work.guest, resumed).await?;
        return engine.restart_for_secrets(&work.secrets, resumed).await;
    }
    if let Some(command) = &release.spec.deploy.release_command {
        engine.release_command(command).await?;
    }
    engine.destroy_stale_greens().await?;
    let strategy = release.spec.deploy.strategy;
    let mut canaries_done = false;
    for _ in 0..MAX_PASSES {
        let machines = target.list_machines().await.map_err(EngineError::List)?;
        let work = converge(release, &machines);
        if work.is_empty() {
            return engine.verify_resumed(resumed, &machines).await;
        }
        let planned = DeployEvent::Planned {
            destroy: work.destroy.len(),
            create: work.create.len(),
            update: work.update.len(),
        };
        target.record(planned).await.map_err(EngineError::Record)?;
        if strategy == Strategy::Canary && !canaries_done {
            engine.canaries(&work.update, &machines).await?;
            canaries_done = true;
        }
        engine.destroy_all(&work.destroy).await?;
        engine.create_all(work.create).await?;
        if strategy == Strategy::Bluegreen {
            engine.blue_green(work.update, &machines).await?;
        } else {
            engine.update_all(work.update).await?;
        }
    }
    let machines = target.list_machines().await.map_err(EngineError::List)?;
    if converge(release, &machines).is_empty() {
        engine.verify_resumed(resumed, &machines).await
    } else {
        Err(EngineError::NoConvergence(MAX_PASSES))
    }
}

/// What a scale operation still has to do: planned destroys of machines that are still there,
/// and creates whose slot no live machine carries.
fn scale_left<'w>(
    work: &'w ScaleWork,
    machines: &[Machine],
) -> (Vec<crate::spec::PlannedDestroy>, Vec<&'w SlotCreate>) {
    let live: BTreeSet<&str> = machines
        .iter()
        .filter(|m| m.state.is_active())
        .map(|m| m.id.as_str())
        .collect();
    let slots: BTreeSet<&str> = machines
        .iter()
        .filter_map(|m| m.config.metadata.get(SCALE_SLOT).map(String::as_str))
        .collect();
    let destroy = work
        .destroy
        .iter()
        .filter(|d| live.contains(d.id.as_str()))
        .cloned()
        .collect();
    let create = work
        .create
        .iter()
        .filter(|c| !slots.contains(c.slot.as_str()))
        .collect();
    (destroy, create)
}

struct Engine<'a, T> {
    target: &'a T,
    release: &'a Release,
    /// Groups with a machine that passed its smoke check in this release.
    smoked: &'a Mutex<BTreeSet<String>>,
    /// Machines waited on (started, smoke-checked, healthy) by this run.
    waited: &'a Mutex<BTreeSet<String>>,
}

impl<T: DeployTarget> Engine<'_, T> {
    fn concurrency(&self) -> usize {
        self.release.spec.deploy.max_concurrent.max(1)
    }

    /// Smoke checks run until one machine of the group has passed one in this release: the
    /// group's other machines run the same config, so a rolling update of 30 machines does not
    /// watch 30 windows one after the other.
    fn needs_smoke_check(&self, group: &str) -> bool {
        self.release.spec.deploy.smoke_checks && !self.smoked.lock().unwrap().contains(group)
    }

    fn waits(&self) -> bool {
        self.release.spec.deploy.strategy.waits()
    }

    async fn record(&self, event: DeployEvent) -> Result<(), EngineError> {
        self.target.record(event).await.map_err(EngineError::Record)
    }

    /// A `scale count` operation: destroys the planned machines still there, creates the slots
    /// no machine carries yet. Convergent like a deploy: a slot is created with its key in the
    /// machine's metadata in one write, so a run after a crash skips what the last one did.
    async fn scale(&self, work: &ScaleWork) -> Result<(), EngineError> {
        for pass in 0..=MAX_PASSES {
            let machines = self
                .target
                .list_machines()
                .await
                .map_err(EngineError::List)?;
            let (destroy, create) = scale_left(work, &machines);
            if destroy.is_empty() && create.is_empty() {
                return Ok(());
            }
            if pass == MAX_PASSES {
                break;
            }
            self.record(DeployEvent::Planned {
                destroy: destroy.len(),
                create: create.len(),
                update: 0,
            })
            .await?;
            self.destroy_all(&destroy).await?;
            let create = create.into_iter().map(|c| {
                let mut config = c.config.clone();
                config.metadata.insert(SCALE_SLOT.into(), c.slot.clone());
                CreateWork {
                    group: c.group.clone(),
                    region: c.region.clone(),
                    config,
                    skip_launch: false,
                }
            });
            self.create_all(create.collect()).await?;
        }
        Err(EngineError::NoConvergence(MAX_PASSES))
    }

    /// A `scale vm|memory` operation: one machine at a time, in the planned order; a machine
    /// started when planned is waited on (started, smoke check, checks passing) before the next
    /// is touched, so the group keeps serving (flyctl-behaviour §4.2 step 4). Only the guest of
    /// the machine's live config changes. A machine whose guest is the planned one already was
    /// updated by an earlier, interrupted run: it is not updated again, and a resumed run waits
    /// on it once. Machines destroyed meanwhile are skipped.
    async fn set_guests(&self, work: &[GuestSet], resumed: bool) -> Result<(), EngineError> {
        let steps: Vec<OneByOne<'_>> = work
            .iter()
            .map(|set| OneByOne {
                id: &set.id,
                group: &set.group,
                wait: set.wait,
            })
            .collect();
        let guest_of = |id: &str| &work.iter().find(|s| s.id == id).expect("a step").guest;
        self.one_at_a_time(
            &steps,
            resumed,
            |m| m.config.guest.as_ref() == Some(guest_of(&m.id)),
            |_| false,
            |m| {
                let mut config = m.config.clone();
                config.guest = Some(guest_of(&m.id).clone());
                config.size = None;
                config
            },
        )
        .await
    }

    /// A secrets operation: each listed machine that is still started is updated with the
    /// operation's release id stamped in its metadata (a new version: the agent stops it and
    /// starts it again, reading the app's secrets anew) and waited on (started, smoke check,
    /// checks passing) before the next, so the app keeps serving. A machine that carries the
    /// stamp already was restarted by an earlier, interrupted run: not again (a resumed run
    /// waits on it once). Machines stopped or destroyed meanwhile are skipped.
    async fn restart_for_secrets(
        &self,
        work: &[SecretsRestart],
        resumed: bool,
    ) -> Result<(), EngineError> {
        let steps: Vec<OneByOne<'_>> = work
            .iter()
            .map(|r| OneByOne {
                id: &r.id,
                group: &r.group,
                wait: true,
            })
            .collect();
        let release = &self.release.id;
        self.one_at_a_time(
            &steps,
            resumed,
            |m| m.config.metadata.get(SECRETS_RELEASE) == Some(release),
            |m| m.state != MachineState::Started,
            |m| {
                let mut config = m.config.clone();
                config
                    .metadata
                    .insert(SECRETS_RELEASE.into(), release.clone());
                config
            },
        )
        .await
    }

    /// Changes machines one at a time, in `steps` order (`scale vm|memory`, a secrets restart):
    /// a machine `done` already was changed by an earlier, interrupted run and is not changed
    /// again (a resumed run waits on it once, if its step waits); one that is `skip`ped (or
    /// destroyed meanwhile) is left alone; any other gets the config `change` makes and, if its
    /// step waits, is waited on (started, smoke check, checks passing) before the next.
    async fn one_at_a_time(
        &self,
        steps: &[OneByOne<'_>],
        resumed: bool,
        done: impl Fn(&Machine) -> bool,
        skip: impl Fn(&Machine) -> bool,
        change: impl Fn(&Machine) -> aloft_api::MachineConfig,
    ) -> Result<(), EngineError> {
        if steps.is_empty() {
            return Ok(());
        }
        let machines = self
            .target
            .list_machines()
            .await
            .map_err(EngineError::List)?;
        let live: BTreeMap<&str, &Machine> = machines
            .iter()
            .filter(|m| m.state.is_active())
            .map(|m| (m.id.as_str(), m))
            .collect();
        let left = steps
            .iter()
            .filter(|s| live.get(s.id).is_some_and(|m| !done(m) && !skip(m)))
            .count();
        self.record(DeployEvent::Planned {
            destroy: 0,
            create: 0,
            update: left,
        })
        .await?;
        for step in steps {
            let Some(m) = live.get(step.id) else {
                continue;
            };
            if done(m) {
                if resumed && step.wait {
                    self.wait_all(vec![(step.id.to_string(), step.group.to_string())])
                        .await?;
                }
                continue;
            }
            if skip(m) {
                continue;
            }
            let update = UpdateWork {
                id: step.id.to_string(),
                group: step.group.to_string(),
                region: m.region.clone(),
                current_version: m.instance_id.clone(),
                config: change(m),
                skip_launch: false,
                warm: step.wait,
            };
            let launched = self.update_batch(vec![update]).await?;
            if step.wait && !launched.is_empty() {
                self.wait_all(launched).await?;
            }
        }
        Ok(())
    }

    /// A resumed run may find nothing left to change: the interrupted run had already created
    /// or updated every machine, but died before seeing them healthy. Its machines get the same
    /// waits a fresh run gives them (started, smoke check, health checks) before the release
    /// can be complete; those this run waited on already are not waited on twice.
    async fn verify_resumed(&self, resumed: bool, machines: &[Machine]) -> Result<(), EngineError> {
        if !resumed || !self.waits() {
            return Ok(());
        }
        let meta = self.release.meta();
        let spec = &self.release.spec;
        let pending: Vec<(String, String)> = {
            let waited = self.waited.lock().unwrap();
            machines
                .iter()
                .filter(|m| is_managed(m) && !waited.contains(&m.id))
                .filter(|m| !self.release.plan.keep_stopped.contains(&m.id))
                .filter(|m| meant_to_run(m.state))
                .filter_map(|m| {
                    let group = effective_group(m, &spec.default_group);
                    (self.release.plan.groups.contains(group) && carries_release(m, group, &meta))
                        .then(|| (m.id.clone(), group.to_string()))
                })
                .collect()
        };
        self.wait_all(pending).await
    }

    async fn destroy_all(
        &self,
        destroy: &[crate::spec::PlannedDestroy],
    ) -> Result<(), EngineError> {
        stream::iter(destroy.iter().map(Ok))
            .try_for_each_concurrent(self.concurrency(), |d| async move {
                self.record(DeployEvent::Destroying {
                    id: d.id.clone(),
                    group: d.group.clone(),
                })
                .await?;
                match self.target.destroy_machine(&d.id, true).await {
                    Ok(()) | Err(TargetError::NotFound(_)) => {}
                    Err(source) => {
                        return Err(EngineError::Destroy {
                            id: d.id.clone(),
                            group: d.group.clone(),
                            source,
                        })
                    }
                }
                self.record(DeployEvent::Destroyed {
                    id: d.id.clone(),
                    group: d.group.clone(),
                })
                .await
            })
            .await
    }

    async fn create_all(&self, mut create: Vec<CreateWork>) -> Result<(), EngineError> {
        self.give_volumes(&mut create).await?;
        let lease_ttl = self.release.spec.deploy.wait_timeout().as_secs().max(1);
        let created: Vec<Option<(String, String)>> = stream::iter(create.into_iter().map(Ok))
            .map_ok(|c| async move {
                self.record(DeployEvent::Creating {
                    group: c.group.clone(),
                    region: c.region.clone(),
                })
                .await?;
                let req = CreateMachineRequest {
                    config: c.config,
                    region: c.region,
                    lease_ttl: Some(lease_ttl),
                    skip_launch: c.skip_launch,
                    ..CreateMachineRequest::default()
                };
                let m = self.target.create_machine(req).await.map_err(|source| {
                    EngineError::Create {
                        group: c.group.clone(),
                        source,
                    }
                })?;
                self.record(DeployEvent::Created {
                    id: m.id.clone(),
                    group: c.group.clone(),
                    region: m.region.clone(),
                })
                .await?;
                // A standby stays stopped: nothing to wait for.
                Ok((!c.skip_launch).then_some((m.id, c.group)))
            })
            .try_buffer_unordered(self.concurrency())
            .try_collect()
            .await?;
        if self.waits() {
            self.wait_all(created.into_iter().flatten().collect())
                .await?;
        }
        Ok(())
    }

    /// Waits for machines to be started and healthy, concurrently.
    async fn wait_all(&self, machines: Vec<(String, String)>) -> Result<(), EngineError> {
        let timeout = self.release.spec.deploy.wait_timeout();
        stream::iter(machines.into_iter().map(Ok))
            .try_for_each_concurrent(self.concurrency(), |(id, group)| async move {
                self.record(DeployEvent::Waiting {
                    id: id.clone(),
                    group: group.clone(),
                })
                .await?;
                let unhealthy = |source| EngineError::Unhealthy {
                    id: id.clone(),
                    group: group.clone(),
                    source,
                };
                self.target
                    .wait_for_state(&id, MachineState::Started, timeout)
                    .await
                    .map_err(unhealthy)?;
                if self.needs_smoke_check(&group) {
                    self.target
                        .smoke_check(&id, SMOKE_WINDOW.min(timeout))
                        .await
                        .map_err(unhealthy)?;
                    self.smoked.lock().unwrap().insert(group.clone());
                }
                self.target
                    .wait_for_checks(&id, timeout)
                    .await
                    .map_err(unhealthy)?;
                self.waited.lock().unwrap().insert(id.clone());
                self.record(DeployEvent::Healthy {
                    id: id.clone(),
                    group: group.clone(),
                })
                .await
            })
            .await
    }

    async fn update_all(&self, update: Vec<UpdateWork>) -> Result<(), EngineError> {
        if !self.waits() {
            return self.update_batch(update).await.map(drop);
        }
        // Rolling: groups side by side (as flyctl, up to 16 at once); inside a group, machines
        // that are not started go all at once, started ones in batches waited on before the next.
        let mut groups: Vec<(String, Vec<UpdateWork>)> = Vec::new();
        for u in update {
            match groups.last_mut() {
                Some((g, list)) if *g == u.group => list.push(u),
                _ => groups.push((u.group.clone(), vec![u])),
            }
        }
        stream::iter(groups.into_iter().map(|(_, list)| Ok(list)))
            .try_for_each_concurrent(GROUPS_AT_ONCE, |list| self.roll_group(list))
            .await
    }

    /// The rolling update of one group's machines.
    async fn roll_group(&self, list: Vec<UpdateWork>) -> Result<(), EngineError> {
        let (warm, cold): (Vec<UpdateWork>, Vec<UpdateWork>) =
            list.into_iter().partition(|u| u.warm && !u.skip_launch);
        let launched = self.update_batch(cold).await?;
        self.wait_all(launched).await?;
        let batch = self.release.spec.deploy.batch_size(warm.len());
        let mut warm = warm.into_iter().peekable();
        while warm.peek().is_some() {
            let chunk: Vec<UpdateWork> = warm.by_ref().take(batch).collect();
            let launched = self.update_batch(chunk).await?;
            self.wait_all(launched).await?;
        }
        Ok(())
    }

    /// Updates machines concurrently; returns the (id, group) of those launched (not skip_launch).
    async fn update_batch(
        &self,
        batch: Vec<UpdateWork>,
    ) -> Result<Vec<(String, String)>, EngineError> {
        let done: Vec<Option<(String, String)>> = stream::iter(batch.into_iter().map(Ok))
            .map_ok(|u| async move {
                self.record(DeployEvent::Updating {
                    id: u.id.clone(),
                    group: u.group.clone(),
                    keep_stopped: u.skip_launch,
                })
                .await?;
                let req = UpdateMachineRequest {
                    config: u.config,
                    current_version: Some(u.current_version).filter(|v| !v.is_empty()),
                    skip_launch: u.skip_launch,
                    ..UpdateMachineRequest::default()
                };
                match self.target.update_machine(&u.id, req).await {
                    Ok(_) => {}
                    // Destroyed under us (e.g. by the user): nothing left to update.
                    Err(TargetError::NotFound(_)) => return Ok(None),
                    Err(source) => {
                        return Err(EngineError::Update {
                            id: u.id.clone(),
                            group: u.group.clone(),
                            source,
                        })
                    }
                }
                self.record(DeployEvent::Updated {
                    id: u.id.clone(),
                    group: u.group.clone(),
                })
                .await?;
                Ok((!u.skip_launch).then_some((u.id, u.group)))
            })
            .try_buffer_unordered(self.concurrency())
            .try_collect()
            .await?;
        Ok(done.into_iter().flatten().collect())
    }
}

/// One machine of an operation that changes machines one at a time.
struct OneByOne<'a> {
    id: &'a str,
    group: &'a str,
    /// Wait for it to be healthy before the next (a machine that was started).
    wait: bool,
}

#[cfg(test)]
pub(crate) mod memory {
    //! An in-memory [`DeployTarget`]: a test double for the planner and engine logic only.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct State {
        pub machines: BTreeMap<String, Machine>,
        pub next_id: u32,
        /// Mutating operations performed so far.
        pub ops: usize,
        /// "Kill the agent" when this many mutating operations have been done: the next fails.
        pub kill_at: Option<usize>,
        /// When killed, whether the fatal operation took effect first (its response was lost).
        pub commit_before_kill: bool,
        pub events: Vec<DeployEvent>,
        pub checks_fail: bool,
        /// Machines whose command crash-loops (the smoke check fails).
        pub crash_looping: Vec<String>,
        /// Machines smoke-checked so far, in order.
        pub smoke_checked: Vec<String>,
        /// One-shot commands run to their end (`run_to_exit`), by machine id.
        pub commands_run: Vec<String>,
        /// Machines whose checks fail (`wait_for_checks`), besides `checks_fail`.
        pub failing: Vec<String>,
        /// Traffic switches, in order: (green, blue).
        pub switches: Vec<(Vec<String>, Vec<String>)>,
        /// Volumes by id; attached when a machine's `config.mounts[0].volume` names them.
        pub volumes: BTreeMap<String, Volume>,
    }

    /// An unattached volume.
    pub fn volume(id: &str, name: &str, region: &str, size_gb: u32) -> Volume {
        Volume {
            id: id.into(),
            name: name.into(),
            state: aloft_api::volumes::STATE_CREATED.into(),
            size_gb,
            region: region.into(),
            created_at: format!("2026-03-01T00:00:00.{id}Z"),
            host_status: "ok".into(),
            ..Volume::default()
        }
    }

    #[derive(Default)]
    pub struct MemTarget {
        pub state: Mutex<State>,
    }

    impl MemTarget {
        /// How many recorded deploy events `is` picks out.
        pub fn count_events(&self, is: impl Fn(&DeployEvent) -> bool) -> usize {
            self.state
                .lock()
                .unwrap()
                .events
                .iter()
                .filter(|e| is(e))
                .count()
        }

        pub fn with(machines: Vec<Machine>) -> MemTarget {
            let t = MemTarget::default();
            {
                let mut s = t.state.lock().unwrap();
                for m in machines {
                    s.machines.insert(m.id.clone(), m);
                }
            }
            t
        }

        pub fn machines(&self) -> Vec<Machine> {
            self.state
                .lock()
                .unwrap()
                .machines
                .values()
                .cloned()
                .collect()
        }

        /// Counts an operation; `Err` when the simulated agent dies at this one. The closure runs
        /// (the change is committed) unless the kill happens before the commit.
        fn op<R>(
            &self,
            f: impl FnOnce(&mut State) -> Result<R, TargetError>,
        ) -> Result<R, TargetError> {
            let mut s = self.state.lock().unwrap();
            if s.kill_at.is_some_and(|k| s.ops >= k) {
                if s.commit_before_kill && s.kill_at == Some(s.ops) {
                    s.ops += 1;
                    let _ = f(&mut s);
                }
                return Err(TargetError::Other("agent killed".into()));
            }
            s.ops += 1;
            f(&mut s)
        }
    }

    impl DeployTarget for MemTarget {
        async fn list_machines(&self) -> Result<Vec<Machine>, TargetError> {
            let s = self.state.lock().unwrap();
            if s.kill_at.is_some_and(|k| s.ops >= k) {
                return Err(TargetError::Other("agent killed".into()));
            }
            Ok(s.machines.values().cloned().collect())
        }

        async fn create_machine(&self, req: CreateMachineRequest) -> Result<Machine, TargetError> {
            self.op(|s| {
                s.next_id += 1;
                let id = format!("n{:04}", s.next_id);
                let mut m = crate::plan::tests::machine(&id, "", MachineState::Started, "");
                m.region = req.region.clone().unwrap_or_else(|| "gru".into());
                m.config = req.config.clone();
                m.state = if req.skip_launch {
                    MachineState::Stopped
                } else {
                    MachineState::Started
                };
                m.created_at = format!("2026-02-01T00:00:00.{:04}Z", s.next_id);
                m.cordoned = req.skip_service_registration;
                s.machines.insert(id, m.clone());
                Ok(m)
            })
        }

        async fn update_machine(
            &self,
            id: &str,
            req: UpdateMachineRequest,
        ) -> Result<Machine, TargetError> {
            self.op(|s| {
                let m = s
                    .machines
                    .get_mut(id)
                    .ok_or_else(|| TargetError::NotFound(id.into()))?;
                if let Some(v) = &req.current_version {
                    if *v != m.instance_id {
                        return Err(TargetError::Other(format!(
                            "machine {id} changed: version {v} is stale"
                        )));
                    }
                }
                m.config = req.config.clone();
                m.instance_id = format!("{}+", m.instance_id);
                if !req.skip_launch {
                    m.state = MachineState::Started;
                }
                Ok(m.clone())
            })
        }

        async fn destroy_machine(&self, id: &str, force: bool) -> Result<(), TargetError> {
            self.op(|s| {
                let m = s
                    .machines
                    .get(id)
                    .ok_or_else(|| TargetError::NotFound(id.into()))?;
                if m.state == MachineState::Started && !force {
                    return Err(TargetError::Other(format!(
                        "machine {id} is started; use force"
                    )));
                }
                s.machines.remove(id);
                Ok(())
            })
        }

        async fn wait_for_state(
            &self,
            id: &str,
            state: MachineState,
            _t: Duration,
        ) -> Result<(), TargetError> {
            let s = self.state.lock().unwrap();
            match s.machines.get(id) {
                Some(m) if m.state == state => Ok(()),
                Some(m) => Err(TargetError::Timeout(format!(
                    "machine {id} is {}, not {state}",
                    m.state
                ))),
                None => Err(TargetError::NotFound(id.into())),
            }
        }

        async fn smoke_check(&self, id: &str, _w: Duration) -> Result<(), TargetError> {
            let mut s = self.state.lock().unwrap();
            s.smoke_checked.push(id.to_string());
            if s.crash_looping.iter().any(|c| c == id) {
                return Err(TargetError::Other(format!(
                    "machine {id} is crash-looping: exit code 1, 3 times"
                )));
            }
            Ok(())
        }

        async fn recorded(&self) -> Result<Vec<DeployEvent>, TargetError> {
            Ok(self.state.lock().unwrap().events.clone())
        }

        /// The command `ok` exits 0, `fail` exits 1 (printing `boom`), anything else cannot
        /// start.
        async fn run_to_exit(&self, id: &str, _t: Duration) -> Result<CommandExit, TargetError> {
            let mut s = self.state.lock().unwrap();
            if s.kill_at.is_some_and(|k| s.ops >= k) {
                return Err(TargetError::Other("agent killed".into()));
            }
            let m = s
                .machines
                .get_mut(id)
                .ok_or_else(|| TargetError::NotFound(id.into()))?;
            m.state = MachineState::Stopped;
            let cmd = m.config.init.cmd.clone().unwrap_or_default();
            s.commands_run.push(id.to_string());
            match cmd.first().map(String::as_str) {
                Some("ok") => Ok(CommandExit {
                    exit_code: 0,
                    last_lines: vec![],
                }),
                Some("fail") => Ok(CommandExit {
                    exit_code: 1,
                    last_lines: vec!["boom".into()],
                }),
                other => Err(TargetError::Other(format!(
                    "machine {id} failed to start: no such command {other:?}"
                ))),
            }
        }

        async fn switch_traffic(
            &self,
            green: &[String],
            blue: &[String],
        ) -> Result<(), TargetError> {
            self.op(|s| {
                for (ids, cordoned) in [(green, false), (blue, true)] {
                    for id in ids {
                        if let Some(m) = s.machines.get_mut(id) {
                            m.cordoned = cordoned;
                        }
                    }
                }
                s.switches.push((green.to_vec(), blue.to_vec()));
                Ok(())
            })
        }

        async fn wait_for_checks(&self, id: &str, _t: Duration) -> Result<(), TargetError> {
            if self.state.lock().unwrap().failing.iter().any(|f| f == id) {
                return Err(TargetError::Timeout(format!(
                    "machine {id}: check 'http' is critical"
                )));
            }
            if self.state.lock().unwrap().checks_fail {
                return Err(TargetError::Timeout(format!(
                    "machine {id}: check 'http' is critical"
                )));
            }
            Ok(())
        }

        async fn list_volumes(&self) -> Result<Vec<Volume>, TargetError> {
            let s = self.state.lock().unwrap();
            if s.kill_at.is_some_and(|k| s.ops >= k) {
                return Err(TargetError::Other("agent killed".into()));
            }
            Ok(s.volumes
                .values()
                .map(|v| {
                    let holder = s.machines.values().find(|m| {
                        m.config
                            .mounts
                            .first()
                            .is_some_and(|mount| mount.volume == v.id)
                    });
                    Volume {
                        attached_machine_id: holder.map(|m| m.id.clone()),
                        ..v.clone()
                    }
                })
                .collect())
        }

        async fn create_volume(&self, req: CreateVolumeRequest) -> Result<Volume, TargetError> {
            self.op(|s| {
                let v = volume(
                    &format!("vol_{:04}", s.volumes.len() + 1),
                    &req.name,
                    &req.region,
                    req.size_gb.unwrap_or(3),
                );
                s.volumes.insert(v.id.clone(), v.clone());
                Ok(v)
            })
        }

        fn default_region(&self, _primary: Option<&str>) -> String {
            "gru".into()
        }

        async fn record(&self, event: DeployEvent) -> Result<(), TargetError> {
            let mut s = self.state.lock().unwrap();
            // A killed agent records nothing more.
            if s.kill_at.is_some_and(|k| s.ops >= k) {
                return Err(TargetError::Other("agent killed".into()));
            }
            s.events.push(event);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::memory::MemTarget;
    use super::*;
    use crate::plan::plan_deploy;
    use crate::plan::tests::{machine, release, spec};
    use crate::spec::ReleaseSpec;

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn summary(ms: &[Machine]) -> BTreeMap<String, (usize, usize)> {
        // group → (machines, machines carrying release version 2)
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for m in ms {
            let e = out.entry(m.process_group().to_string()).or_default();
            e.0 += 1;
            if m.config
                .metadata
                .get("fly_release_version")
                .map(String::as_str)
                == Some("2")
            {
                e.1 += 1;
            }
        }
        out
    }

    /// web (with services) has 20 machines (2 stopped), worker 8, old group "legacy" 2;
    /// the new config has web, worker and a new "cron" group with a remembered count of 5.
    fn scenario() -> (ReleaseSpec, Vec<Machine>, BTreeMap<String, u32>) {
        let s = spec(&[("web", true), ("worker", false), ("cron", false)]);
        let mut ms = Vec::new();
        for i in 0..20 {
            let state = if i % 10 == 3 {
                MachineState::Stopped
            } else {
                MachineState::Started
            };
            ms.push(machine(&format!("w{i:02}"), "web", state, "gru"));
        }
        for i in 0..8 {
            ms.push(machine(
                &format!("k{i:02}"),
                "worker",
                MachineState::Started,
                "gru",
            ));
        }
        ms.push(machine("l1", "legacy", MachineState::Started, "gru"));
        ms.push(machine("l2", "legacy", MachineState::Stopped, "gru"));
        (s, ms, BTreeMap::from([("cron".to_string(), 5)]))
    }

    fn expected_end() -> BTreeMap<String, (usize, usize)> {
        BTreeMap::from([
            ("web".into(), (20, 20)),
            ("worker".into(), (8, 8)),
            ("cron".into(), (5, 5)),
        ])
    }

    #[test]
    fn deploy_converges_and_keeps_stopped_machines_stopped() {
        let (s, ms, counts) = scenario();
        let plan = plan_deploy(&s, &ms, &counts, None).unwrap();
        let r = release(s, plan.frozen, 2);
        let t = MemTarget::with(ms);
        block(run_release(&t, &r, false)).unwrap();
        let end = t.machines();
        assert_eq!(summary(&end), expected_end());
        for m in &end {
            let stopped_before = m.id == "w03" || m.id == "w13";
            assert_eq!(m.state == MachineState::Stopped, stopped_before, "{}", m.id);
            assert_eq!(m.config.init.cmd.as_ref().unwrap()[1], m.process_group());
        }
        let events = t.state.lock().unwrap().events.clone();
        assert!(matches!(
            events.last(),
            Some(DeployEvent::Finished {
                status: ReleaseStatus::Complete,
                error: None
            })
        ));
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, DeployEvent::Destroyed { .. }))
                .count(),
            2
        );
        // A second run is a no-op.
        let ops = t.state.lock().unwrap().ops;
        block(run_release(&t, &r, true)).unwrap();
        assert_eq!(
            t.state.lock().unwrap().ops,
            ops,
            "re-running a complete release changes nothing"
        );
    }

    /// Kill the "agent" at every possible operation (with and without the fatal operation having
    /// taken effect), then resume: always exactly the expected machines.
    #[test]
    fn interrupted_at_any_point_resumes_to_the_same_machines() {
        let (s, ms, counts) = scenario();
        let plan = plan_deploy(&s, &ms, &counts, None).unwrap();
        let r = release(s, plan.frozen, 2);
        let total_ops = {
            let t = MemTarget::with(ms.clone());
            block(run_release(&t, &r, false)).unwrap();
            let ops = t.state.lock().unwrap().ops;
            ops
        };
        assert_eq!(total_ops, 2 + 5 + 28, "destroys + creates + updates");
        for kill_at in 0..total_ops {
            for commit in [false, true] {
                let t = MemTarget::with(ms.clone());
                {
                    let mut st = t.state.lock().unwrap();
                    st.kill_at = Some(kill_at);
                    st.commit_before_kill = commit;
                }
                assert!(
                    block(run_release(&t, &r, false)).is_err(),
                    "killed at {kill_at}"
                );
                t.state.lock().unwrap().kill_at = None;
                block(run_release(&t, &r, true)).unwrap();
                assert_eq!(
                    summary(&t.machines()),
                    expected_end(),
                    "killed at op {kill_at}, commit {commit}"
                );
                for id in ["w03", "w13"] {
                    assert_eq!(
                        t.state.lock().unwrap().machines[id].state,
                        MachineState::Stopped,
                        "{id} at {kill_at}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_new_group_without_services_gets_one_machine_and_a_stopped_standby() {
        let s = spec(&[("cron", false)]);
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 1);
        let t = MemTarget::default();
        block(run_release(&t, &r, false)).unwrap();
        let ms = t.machines();
        assert_eq!(ms.len(), 2, "{ms:?}");
        let (standbys, primaries): (Vec<&Machine>, Vec<&Machine>) =
            ms.iter().partition(|m| m.config.is_standby());
        assert_eq!((primaries.len(), standbys.len()), (1, 1));
        assert_eq!(primaries[0].state, MachineState::Started);
        assert_eq!(standbys[0].state, MachineState::Stopped);
        assert_eq!(standbys[0].config.standbys, [primaries[0].id.clone()]);
        let waited: Vec<String> = t
            .state
            .lock()
            .unwrap()
            .events
            .iter()
            .filter_map(|e| match e {
                DeployEvent::Waiting { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            waited,
            [primaries[0].id.clone()],
            "a standby is not waited on"
        );
        // Resumed: nothing more.
        let ops = t.state.lock().unwrap().ops;
        block(run_release(&t, &r, true)).unwrap();
        assert_eq!(t.state.lock().unwrap().ops, ops);
    }

    #[test]
    fn failing_checks_fail_the_release_with_the_machine_named() {
        let s = spec(&[("web", true)]);
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 1);
        let t = MemTarget::default();
        t.state.lock().unwrap().checks_fail = true;
        let err = block(run_release(&t, &r, false)).unwrap_err();
        assert!(err.to_string().contains("did not become healthy"), "{err}");
        assert!(
            err.to_string().contains("check 'http' is critical"),
            "{err}"
        );
        let last = t.state.lock().unwrap().events.last().cloned();
        assert!(matches!(
            last,
            Some(DeployEvent::Finished {
                status: ReleaseStatus::Failed,
                error: Some(_)
            })
        ));
    }

    #[test]
    fn a_crash_looping_machine_fails_the_release_unless_smoke_checks_are_off() {
        let s = spec(&[("worker", false)]);
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        let t = MemTarget::default();
        t.state.lock().unwrap().crash_looping = vec!["n0001".into()];
        let err = block(run_release(
            &t,
            &release(s.clone(), plan.frozen.clone(), 1),
            false,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("crash-looping"), "{err}");
        assert!(err.to_string().contains("n0001"), "{err}");

        let mut off = s;
        off.deploy.smoke_checks = false;
        block(run_release(&t, &release(off, plan.frozen, 2), false)).unwrap();
    }

    /// Hardening fault 3: an agent killed after the last machine change but before the waits
    /// resumes with nothing left to change; the release must still see its machines run and
    /// pass their checks, and fail for a crash loop instead of ending complete.
    #[test]
    fn a_resumed_release_checks_machines_the_interrupted_run_never_waited_on() {
        let mut s = spec(&[("worker", false)]);
        s.deploy.ha = false;
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 1);
        let t = MemTarget::default();
        // The interrupted run: its machine was created (it carries the release), nothing waited.
        let mut first = r.clone();
        first.spec.deploy.strategy = Strategy::Immediate;
        block(run_release(&t, &first, false)).unwrap();
        assert_eq!(t.machines().len(), 1, "the machine was created");
        t.state.lock().unwrap().crash_looping = vec!["n0001".into()];
        let err = block(run_release(&t, &r, true)).unwrap_err();
        assert!(err.to_string().contains("crash-looping"), "{err}");
        assert!(matches!(
            t.state.lock().unwrap().events.last(),
            Some(DeployEvent::Finished {
                status: ReleaseStatus::Failed,
                ..
            })
        ));
        // Healthy machines: the resumed run waits on them once and completes.
        t.state.lock().unwrap().crash_looping.clear();
        t.state.lock().unwrap().events.clear();
        block(run_release(&t, &r, true)).unwrap();
        let waits = t.count_events(|e| matches!(e, DeployEvent::Healthy { .. }));
        assert_eq!(waits, 1);
    }

    /// A scale operation (issue: CLI-side scaling left half-scaled groups): killed at any
    /// operation, with or without that operation taking effect, and run again, it ends with
    /// exactly the planned machines — never a slot twice.
    #[test]
    fn a_scale_operation_resumes_to_exactly_its_count() {
        let s = spec(&[("web", true)]);
        let ms: Vec<Machine> = (0..4)
            .map(|i| machine(&format!("w{i}"), "web", MachineState::Started, "gru"))
            .collect();
        let work = crate::spec::ScaleWork {
            avoid_volumes: Vec::new(),
            summary: "web=7".into(),
            create: (0..5)
                .map(|n| crate::spec::SlotCreate {
                    slot: format!("op1:{n}"),
                    group: "web".into(),
                    region: Some("bog".into()),
                    config: ms[0].config.clone(),
                })
                .collect(),
            destroy: ["w0", "w1"]
                .iter()
                .map(|id| crate::spec::PlannedDestroy {
                    id: id.to_string(),
                    group: "web".into(),
                    region: "gru".into(),
                })
                .collect(),
            guest: vec![],
            secrets: vec![],
        };
        let mut r = release(s, crate::spec::FrozenPlan::default(), 2);
        r.scale = Some(work);
        let total_ops = 2 + 5;
        for kill_at in 0..total_ops {
            for commit in [false, true] {
                let t = MemTarget::with(ms.clone());
                {
                    let mut st = t.state.lock().unwrap();
                    st.kill_at = Some(kill_at);
                    st.commit_before_kill = commit;
                }
                assert!(block(run_release(&t, &r, false)).is_err());
                t.state.lock().unwrap().kill_at = None;
                block(run_release(&t, &r, true)).unwrap();
                let end = t.machines();
                assert_eq!(end.len(), 7, "killed at {kill_at}, commit {commit}");
                let slots: BTreeSet<&str> = end
                    .iter()
                    .filter_map(|m| m.config.metadata.get(SCALE_SLOT).map(String::as_str))
                    .collect();
                assert_eq!(slots.len(), 5, "every slot once");
                assert!(end.iter().all(|m| m.id != "w0" && m.id != "w1"));
            }
        }
    }

    /// A `scale vm` operation killed at any machine update, with or without that update taking
    /// effect, and run again: every machine of the group ends with the new guest, updated exactly
    /// once; the other group and the rest of each config are untouched; started machines are
    /// waited on one at a time.
    #[test]
    fn a_guest_operation_resumes_updating_each_machine_once() {
        let s = spec(&[("web", true), ("cron", false)]);
        let mut ms: Vec<Machine> = (0..3)
            .map(|i| machine(&format!("w{i}"), "web", MachineState::Started, "gru"))
            .collect();
        ms[1].state = MachineState::Stopped;
        ms.push(machine("c0", "cron", MachineState::Started, "gru"));
        let plan =
            crate::scale::plan_guest_work(&ms, "web", "web", Some("performance-2x"), None).unwrap();
        assert_eq!(plan.updates.len(), 3);
        let mut r = release(s, crate::spec::FrozenPlan::default(), 2);
        r.scale = Some(crate::spec::ScaleWork {
            avoid_volumes: Vec::new(),
            summary: "vm performance-2x -g web".into(),
            guest: plan.updates.clone(),
            ..Default::default()
        });
        let target = aloft_api::Guest::from_preset("performance-2x");
        let check = |t: &MemTarget, what: &str| {
            for m in t.machines() {
                let updates = m.instance_id.matches('+').count();
                if m.process_group() == "web" {
                    assert_eq!(m.config.guest, target, "{what}: {}", m.id);
                    assert_eq!(updates, 1, "{what}: {} updated once", m.id);
                    assert_eq!(m.config.image, "old", "{what}: only the guest changes");
                } else {
                    assert_eq!(updates, 0, "{what}: cron untouched");
                }
            }
        };
        let t = MemTarget::with(ms.clone());
        block(run_release(&t, &r, false)).unwrap();
        check(&t, "uninterrupted");
        let order: String = t
            .state
            .lock()
            .unwrap()
            .events
            .iter()
            .filter_map(|e| match e {
                DeployEvent::Updating { .. } => Some('u'),
                DeployEvent::Healthy { .. } => Some('h'),
                _ => None,
            })
            .collect();
        assert_eq!(order, "uhuuh", "w1 was stopped: not waited on");
        killed_at_each_of_the_first_operations_then_resumed(&ms, &r, 3, check);
        // A machine destroyed meanwhile is skipped, not an error.
        let t = MemTarget::with(ms.iter().filter(|m| m.id != "w2").cloned().collect());
        block(run_release(&t, &r, false)).unwrap();
    }

    /// Runs `r` killed at each of its first `operations` machine operations (with and without
    /// that operation taking effect), then resumed; `check` judges each outcome.
    fn killed_at_each_of_the_first_operations_then_resumed(
        ms: &[Machine],
        r: &Release,
        operations: usize,
        check: impl Fn(&MemTarget, &str),
    ) {
        for kill_at in 0..operations {
            for commit in [false, true] {
                let what = format!("killed at {kill_at}, commit {commit}");
                let t = MemTarget::with(ms.to_vec());
                {
                    let mut st = t.state.lock().unwrap();
                    st.kill_at = Some(kill_at);
                    st.commit_before_kill = commit;
                }
                assert!(block(run_release(&t, r, false)).is_err(), "{what}");
                t.state.lock().unwrap().kill_at = None;
                block(run_release(&t, r, true)).unwrap();
                check(&t, &what);
            }
        }
    }

    /// A secrets operation killed at any machine update, with or without that update taking
    /// effect, and run again: every listed machine that was started is restarted exactly once,
    /// with nothing of its config changed but the stamp; a stopped one is left alone.
    #[test]
    fn a_secrets_operation_resumes_restarting_each_started_machine_once() {
        let s = spec(&[("web", true), ("cron", false)]);
        let mut ms: Vec<Machine> = (0..3)
            .map(|i| machine(&format!("w{i}"), "web", MachineState::Started, "gru"))
            .collect();
        ms[1].state = MachineState::Stopped;
        ms.push(machine("c0", "cron", MachineState::Started, "gru"));
        let mut r = release(s, crate::spec::FrozenPlan::default(), 2);
        r.scale = Some(crate::spec::ScaleWork {
            avoid_volumes: Vec::new(),
            summary: "secrets".into(),
            secrets: ms
                .iter()
                .map(|m| SecretsRestart {
                    id: m.id.clone(),
                    group: m.process_group().to_string(),
                })
                .collect(),
            ..Default::default()
        });
        let check = |t: &MemTarget, what: &str| {
            for m in t.machines() {
                let updates = m.instance_id.matches('+').count();
                let expected = usize::from(m.id != "w1");
                assert_eq!(updates, expected, "{what}: {} restarted once", m.id);
                assert_eq!(
                    m.config.metadata.contains_key(SECRETS_RELEASE),
                    expected == 1,
                    "{what}: {}",
                    m.id
                );
                assert_eq!(m.config.image, "old", "{what}: only the stamp changes");
            }
        };
        let t = MemTarget::with(ms.clone());
        block(run_release(&t, &r, false)).unwrap();
        check(&t, "uninterrupted");
        killed_at_each_of_the_first_operations_then_resumed(&ms, &r, 3, check);
    }

    #[test]
    fn immediate_strategy_does_not_wait() {
        let mut s = spec(&[("web", true)]);
        s.deploy.strategy = Strategy::Immediate;
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 1);
        let t = MemTarget::default();
        t.state.lock().unwrap().checks_fail = true;
        block(run_release(&t, &r, false)).unwrap();
        assert_eq!(t.machines().len(), 2);
        assert!(!t
            .state
            .lock()
            .unwrap()
            .events
            .iter()
            .any(|e| matches!(e, DeployEvent::Waiting { .. })));
    }

    fn with_command(mut s: ReleaseSpec, cmd: &str) -> ReleaseSpec {
        s.deploy.release_command = Some(Box::new(crate::spec::ReleaseCommand {
            command: vec![cmd.to_string()],
            timeout: aloft_api::GoDuration::from_secs(300),
            guest: None,
        }));
        s
    }

    fn blue_green_spec() -> ReleaseSpec {
        let mut s = spec(&[("web", true)]);
        s.deploy.strategy = Strategy::Bluegreen;
        let web = s.groups.get_mut("web").unwrap();
        web.services[0]
            .checks
            .push(aloft_api::MachineCheck::default());
        s
    }

    #[test]
    fn blue_green_needs_checks_and_neither_it_nor_canary_takes_volumes() {
        let mut s = spec(&[("web", true)]);
        s.deploy.strategy = Strategy::Bluegreen;
        let err = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap_err();
        assert!(err.to_string().contains("needs health checks"), "{err}");
        let mut s = blue_green_spec();
        s.groups
            .get_mut("web")
            .unwrap()
            .mounts
            .push(Default::default());
        for strategy in [Strategy::Bluegreen, Strategy::Canary] {
            s.deploy.strategy = strategy;
            let err = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap_err();
            assert!(
                err.to_string().contains("cannot be used with volumes"),
                "{err}"
            );
        }
    }

    fn three_web() -> Vec<Machine> {
        (0..3)
            .map(|i| machine(&format!("w{i}"), "web", MachineState::Started, "gru"))
            .collect()
    }

    #[test]
    fn a_release_command_runs_once_before_any_machine_changes() {
        let s = with_command(spec(&[("web", true)]), "ok");
        let ms = three_web();
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 2);
        let t = MemTarget::with(ms);
        block(run_release(&t, &r, false)).unwrap();
        let st = t.state.lock().unwrap();
        assert_eq!(st.commands_run.len(), 1);
        let first_update = st
            .events
            .iter()
            .position(|e| matches!(e, DeployEvent::Updating { .. }))
            .unwrap();
        let finished = st
            .events
            .iter()
            .position(|e| matches!(e, DeployEvent::ReleaseCommandFinished { .. }))
            .unwrap();
        assert!(finished < first_update, "{:?}", st.events);
        assert!(
            !st.machines.contains_key(&st.commands_run[0]),
            "its machine is destroyed"
        );
        let cmd = &st.commands_run[0];
        assert!(st
            .events
            .iter()
            .any(|e| matches!(e, DeployEvent::ReleaseCommandStarted { id, .. } if id == cmd)));
        drop(st);
        // Resumed after its outcome was recorded: not run again.
        block(run_release(&t, &r, true)).unwrap();
        assert_eq!(t.state.lock().unwrap().commands_run.len(), 1);
    }

    #[test]
    fn a_failing_release_command_changes_no_machine() {
        for cmd in ["fail", "missing"] {
            let s = with_command(spec(&[("web", true)]), cmd);
            let ms = three_web();
            let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
            let r = release(s, plan.frozen, 2);
            let t = MemTarget::with(ms.clone());
            let err = block(run_release(&t, &r, false)).unwrap_err().to_string();
            assert!(err.contains("release command failed"), "{err}");
            if cmd == "fail" {
                assert!(err.contains("exit code 1") && err.contains("boom"), "{err}");
            } else {
                assert!(err.contains("no such command"), "{err}");
            }
            assert_eq!(
                t.machines(),
                ms,
                "{cmd}: machines untouched, its machine destroyed"
            );
            // A resumed run reads the recorded outcome: fails again without running it.
            let runs = t.state.lock().unwrap().commands_run.len();
            assert!(block(run_release(&t, &r, true)).is_err());
            assert_eq!(t.state.lock().unwrap().commands_run.len(), runs);
        }
    }

    #[test]
    fn an_interrupted_release_command_runs_again_with_its_leftover_destroyed() {
        let s = with_command(spec(&[("web", true)]), "ok");
        let ms = three_web();
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 2);
        let t = MemTarget::with(ms);
        // Killed once its machine exists, before the command ended.
        t.state.lock().unwrap().kill_at = Some(1);
        assert!(block(run_release(&t, &r, false)).is_err());
        assert_eq!(
            t.machines().len(),
            4,
            "the leftover release command machine"
        );
        t.state.lock().unwrap().kill_at = None;
        block(run_release(&t, &r, true)).unwrap();
        let st = t.state.lock().unwrap();
        assert_eq!(st.commands_run.len(), 1, "run once to its end");
        let outcomes = st
            .events
            .iter()
            .filter(|e| matches!(e, DeployEvent::ReleaseCommandFinished { .. }))
            .count();
        assert_eq!(outcomes, 1);
        assert_eq!(st.machines.len(), 3);
    }

    #[test]
    fn a_failing_canary_creates_one_machine_per_group_and_updates_none() {
        let mut s = spec(&[("web", true), ("worker", false)]);
        s.deploy.strategy = Strategy::Canary;
        let mut ms = three_web();
        ms.insert(0, machine("k0", "worker", MachineState::Started, "gru"));
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s.clone(), plan.frozen.clone(), 2);
        let t = MemTarget::with(ms.clone());
        t.state.lock().unwrap().checks_fail = true;
        let err = block(run_release(&t, &r, false)).unwrap_err().to_string();
        assert!(err.contains("canary"), "{err}");
        assert_eq!(
            t.machines(),
            ms,
            "old machines untouched, canaries destroyed"
        );
        let st = t.state.lock().unwrap();
        let created: Vec<&str> = st
            .events
            .iter()
            .filter_map(|e| match e {
                DeployEvent::CanaryCreated { group, .. } => Some(group.as_str()),
                DeployEvent::Created { .. } => Some("?"),
                _ => None,
            })
            .collect();
        assert_eq!(created, ["web", "worker"]);
        drop(st);
        // Healthy canaries: then the groups roll.
        let t = MemTarget::with(ms);
        block(run_release(&t, &release(s, plan.frozen, 2), false)).unwrap();
        assert_eq!(summary(&t.machines())["web"], (3, 3));
        let st = t.state.lock().unwrap();
        let first_update = st
            .events
            .iter()
            .position(|e| matches!(e, DeployEvent::Updating { .. }))
            .unwrap();
        let healthy = st
            .events
            .iter()
            .filter(|e| matches!(e, DeployEvent::CanaryHealthy { .. }))
            .count();
        assert_eq!(healthy, 2);
        assert!(
            st.events[..first_update]
                .iter()
                .filter(|e| matches!(e, DeployEvent::CanaryDestroyed { .. }))
                .count()
                == 2
        );
    }

    #[test]
    fn blue_green_switches_once_and_destroys_blue() {
        let s = blue_green_spec();
        let ms = three_web();
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 2);
        let t = MemTarget::with(ms.clone());
        block(run_release(&t, &r, false)).unwrap();
        let end = t.machines();
        assert_eq!(summary(&end)["web"], (3, 3));
        assert!(end.iter().all(|m| !m.id.starts_with('w') && !m.cordoned));
        let st = t.state.lock().unwrap();
        assert_eq!(st.switches.len(), 1);
        assert_eq!(st.switches[0].1, ["w0", "w1", "w2"]);
        let order: String = st
            .events
            .iter()
            .filter_map(|e| match e {
                DeployEvent::GreenCreated { .. } => Some('g'),
                DeployEvent::GreensHealthy { .. } => Some('h'),
                DeployEvent::TrafficSwitched { .. } => Some('s'),
                DeployEvent::BlueDestroyed { .. } => Some('d'),
                DeployEvent::Updating { .. } => Some('u'),
                _ => None,
            })
            .collect();
        assert_eq!(order, "ggghsddd");
    }

    #[test]
    fn a_failing_green_leaves_blue_serving_and_green_destroyed() {
        let s = blue_green_spec();
        let ms = three_web();
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 2);
        let t = MemTarget::with(ms.clone());
        t.state.lock().unwrap().failing = vec!["n0002".into()];
        let err = block(run_release(&t, &r, false)).unwrap_err().to_string();
        assert!(err.contains("blue ones keep serving"), "{err}");
        assert_eq!(
            t.machines(),
            ms,
            "blue untouched and serving, greens destroyed"
        );
        let st = t.state.lock().unwrap();
        assert!(st.switches.iter().all(|(_, blue)| blue.is_empty()));
        let destroyed = st
            .events
            .iter()
            .filter(|e| matches!(e, DeployEvent::GreenDestroyed { .. }))
            .count();
        assert_eq!(destroyed, 3);
    }

    /// Greens a superseded blue-green release left cordoned are destroyed by the next deploy.
    #[test]
    fn stale_greens_of_another_release_are_destroyed() {
        let s = spec(&[("web", true)]);
        let mut ms = three_web();
        let mut stale = machine("g0", "web", MachineState::Started, "gru");
        stale.cordoned = true;
        stale
            .config
            .metadata
            .insert(aloft_api::metadata::GREEN_FOR.into(), "w0".into());
        ms.push(stale);
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 2);
        let t = MemTarget::with(ms);
        block(run_release(&t, &r, false)).unwrap();
        let end = t.machines();
        assert_eq!(summary(&end)["web"], (3, 3));
        assert!(end.iter().all(|m| m.id != "g0"));
    }

    /// A blue-green release superseded after its switch, before it destroyed every blue, left
    /// blues cordoned behind live greens: the next deploy destroys them, and creates nothing
    /// in their place.
    #[test]
    fn blues_a_superseded_blue_green_release_left_after_its_switch_are_destroyed() {
        let s = spec(&[("web", true)]);
        let mut ms = three_web();
        for m in &mut ms {
            m.cordoned = true;
        }
        for i in 0..3 {
            let mut green = machine(&format!("g{i}"), "web", MachineState::Started, "gru");
            let md = &mut green.config.metadata;
            md.insert(aloft_api::metadata::GREEN_FOR.into(), format!("w{i}"));
            md.insert(aloft_api::metadata::RELEASE_ID.into(), "old".into());
            ms.push(green);
        }
        // A machine cordoned by its user (no serving green names it) stays, cordoned.
        let mut user_cordoned = machine("u0", "web", MachineState::Started, "gru");
        user_cordoned.cordoned = true;
        ms.push(user_cordoned);
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 2);
        let t = MemTarget::with(ms);
        block(run_release(&t, &r, false)).unwrap();
        let end = t.machines();
        let mut ids: Vec<&str> = end.iter().map(|m| m.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["g0", "g1", "g2", "u0"]);
        assert!(end.iter().all(|m| m.cordoned == (m.id == "u0")));
        let destroyed = t.count_events(|e| matches!(e, DeployEvent::BlueDestroyed { .. }));
        assert_eq!(destroyed, 3);
    }

    /// Killed at any operation of a blue-green deploy, with or without it taking effect, then
    /// resumed: the greens replace the blues, each blue gets one green, no blue stays.
    #[test]
    fn an_interrupted_blue_green_deploy_resumes_to_the_greens() {
        let s = blue_green_spec();
        let ms = three_web();
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 2);
        let total = 3 + 1 + 3;
        for kill_at in 0..total {
            for commit in [false, true] {
                let what = format!("killed at {kill_at}, commit {commit}");
                let t = MemTarget::with(ms.clone());
                {
                    let mut st = t.state.lock().unwrap();
                    st.kill_at = Some(kill_at);
                    st.commit_before_kill = commit;
                }
                assert!(block(run_release(&t, &r, false)).is_err(), "{what}");
                t.state.lock().unwrap().kill_at = None;
                block(run_release(&t, &r, true)).unwrap();
                let end = t.machines();
                assert_eq!(summary(&end)["web"], (3, 3), "{what}");
                assert!(end.iter().all(|m| !m.cordoned), "{what}");
            }
        }
    }

    #[test]
    fn rolling_updates_started_machines_in_batches() {
        let mut s = spec(&[("web", true)]);
        s.deploy.max_unavailable = 2.0;
        let ms: Vec<Machine> = (0..5)
            .map(|i| machine(&format!("w{i}"), "web", MachineState::Started, "gru"))
            .collect();
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 1);
        let t = MemTarget::with(ms);
        block(run_release(&t, &r, false)).unwrap();
        // Between two batches all machines of the previous batch were waited on.
        let events = t.state.lock().unwrap().events.clone();
        let order: Vec<char> = events
            .iter()
            .filter_map(|e| match e {
                DeployEvent::Updating { .. } => Some('u'),
                DeployEvent::Healthy { .. } => Some('h'),
                _ => None,
            })
            .collect();
        assert_eq!(order.iter().collect::<String>(), "uuhhuuhhuh");
        // Only the first batch is watched for a crash loop: the rest run the same config.
        let smoked = t.state.lock().unwrap().smoke_checked.len();
        assert!((1..=2).contains(&smoked), "{smoked} of 5 smoke-checked");
    }
}
