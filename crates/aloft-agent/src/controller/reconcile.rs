//! Agent start-up: bring machines back after the agent stopped or was killed.
//!
//! Order: (1) the runtime kills every process a previous agent left behind (`reap_orphans`,
//! found through its pid records), so nothing from before keeps running; (2) every live machine
//! is examined once:
//! - it had a process (`starting`, `started`, `restarting`, `replacing`, `stopping`): an
//!   `exit` event records that the agent restarted (`request.agent_restarted = true`);
//! - desired state `started` → launched again, exactly once (this runs before the API accepts
//!   requests, so no client call can launch it concurrently), and the runtime's `Started`
//!   adds the `start` event;
//! - `stopping` → `stopped`; `destroying` → `destroyed`; desired stopped → `stopped`.
//!
//! Machines that were `created` with `skip_launch`, `stopped` or `failed` stay as they are.
//!
//! A platform one-shot machine (a release command's, group `fly_app_release_command`, or
//! another of `RESERVED_GROUPS`) is never relaunched nor adopted: its run ended with the agent
//! (`exit` event, desired state stopped), and whoever started it (a resumed release) decides
//! whether to run it again, so a command never runs twice unseen.
//!
//! An `aloft console` machine (group `fly_app_console`) left by a previous agent is destroyed
//! once the rest is done: its session, which owned it, ended with that agent.
//!
//! Containers are not processes of the agent: their shims outlive it. Before the above, every
//! container a previous agent left is either **adopted** — its machine is meant to run and had
//! a process — and supervised again as it is (no event, same pid, its output read on from
//! where the last agent stopped; one that ended meanwhile gets its exit handled once by its
//! restart policy), or killed and removed.

use aloft_api::MachineState;
use aloft_runtime::Adopted;
use aloft_store::DesiredState;
use serde_json::json;

use super::{event, Controller, FLYD};
use crate::controller::DomainResult;

/// Whether a machine in `state` had a process (or container) when the agent stopped.
/// Whether the machine is a platform one-shot (release command, console, test machine).
fn one_shot(rec: &aloft_store::MachineRecord) -> bool {
    rec.config
        .metadata
        .get(aloft_api::metadata::PROCESS_GROUP)
        .is_some_and(|g| aloft_api::metadata::RESERVED_GROUPS.contains(&g.as_str()))
}

fn had_process(state: MachineState) -> bool {
    matches!(
        state,
        MachineState::Starting
            | MachineState::Started
            | MachineState::Restarting
            | MachineState::Replacing
            | MachineState::Stopping
    )
}

/// What reconciliation did, for the agent's log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub reaped: Vec<String>,
    /// Machines whose containers were picked up running (or exited) as a previous agent left them.
    pub adopted: Vec<String>,
    pub relaunched: Vec<String>,
    pub failed: Vec<String>,
}

impl Controller {
    pub async fn reconcile(&self) -> DomainResult<ReconcileReport> {
        let sup = self.sup.clone();
        let reaped = tokio::task::spawn_blocking(move || sup.reap_orphans())
            .await
            .unwrap_or_default();
        let mut report = ReconcileReport {
            reaped,
            ..Default::default()
        };
        let live = self.db(|s| s.read(|tx| tx.live_machines())).await?;
        let left = self.sup.containers_left();
        let existing: Vec<String> = live.iter().map(|r| r.id.clone()).collect();
        let sup = self.sup.clone();
        let _ = tokio::task::spawn_blocking(move || sup.keep_only(&existing)).await;
        let adoptable: Vec<String> = live
            .iter()
            .filter(|r| had_process(r.state) && r.desired == DesiredState::Started)
            .filter(|r| r.state != MachineState::Stopping && !one_shot(r))
            .map(|r| r.id.clone())
            .collect();
        for id in left.iter().filter(|id| !adoptable.contains(id)) {
            let (sup, id) = (self.sup.clone(), id.clone());
            let _ = tokio::task::spawn_blocking(move || sup.reap_container(&id)).await;
        }
        for mut rec in live {
            let _guard = self.lock(&rec.id).await;
            if left.contains(&rec.id) && adoptable.contains(&rec.id) {
                if let Ok(image) = self.resolve_image(&rec.app, &rec.config.image).await {
                    let org = self.org_of(&rec.app).await?;
                    let mut spec = super::machines::launch_spec(&rec, &image, org);
                    // The restart policy starts the adopted container again with this spec.
                    spec.secrets = self.secret_env(&rec.app).await.unwrap_or_else(|e| {
                        tracing::warn!(machine = %rec.id, "its secrets do not open: {e}");
                        Default::default()
                    });
                    // Mounted still (mounts outlive the agent); found again, not made twice.
                    spec.volumes = self.volume_binds(&rec).await.unwrap_or_else(|e| {
                        tracing::warn!(machine = %rec.id, "its volume cannot be mounted: {e}");
                        Vec::new()
                    });
                    match self.sup.adopt(spec).await {
                        Ok(Adopted::Running { .. }) | Ok(Adopted::Exited) => {
                            report.adopted.push(rec.id.clone());
                            continue;
                        }
                        Ok(Adopted::NotFound) => {}
                        Err(e) => {
                            tracing::warn!(machine = %rec.id, "cannot adopt its container: {e}")
                        }
                    }
                }
            }
            let had_process = had_process(rec.state);
            let mut events = Vec::new();
            if had_process {
                let was = rec.state;
                rec.state = MachineState::Stopped;
                events.push(event(
                    "exit",
                    "stopped",
                    FLYD,
                    Some(json!({"agent_restarted": true, "previous_state": was,
                        "reaped": report.reaped.contains(&rec.id)})),
                ));
            }
            let kept_down = one_shot(&rec) && rec.desired == DesiredState::Started;
            if kept_down {
                rec.desired = DesiredState::Stopped;
            }
            match (rec.state, rec.desired) {
                (MachineState::Destroying, _) | (_, DesiredState::Destroyed) => {
                    drop(_guard);
                    if !events.is_empty() {
                        self.save(rec.clone(), events).await?;
                    }
                    self.finish_destroy(&rec.id, FLYD).await?;
                }
                (_, DesiredState::Started) if rec.state != MachineState::Failed => {
                    let id = rec.id.clone();
                    match self.boot(rec, events).await {
                        Ok(()) => report.relaunched.push(id),
                        Err(_) => report.failed.push(id),
                    }
                }
                _ => {
                    if !events.is_empty() || kept_down {
                        self.save(rec, events).await?;
                    }
                }
            }
        }
        // `aloft console` machines: their sessions ended with the previous agent.
        for id in self.destroy_console_leftovers().await? {
            tracing::info!(
                machine = id,
                "destroyed a console machine left by the previous agent"
            );
        }
        Ok(report)
    }
}
