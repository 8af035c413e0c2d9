//! Applies what the runtime reports about processes to machine state, in order.
//!
//! - `Started` of the current version → `started`, event `start/started/flyd`.
//! - `Exited` with `restarting` (the restart policy runs it again) → stays `started`, event
//!   `exit/restarting/flyd` with the exit and the restart count.
//! - `Exited` asked for (stop, restart, update, destroy) → event `exit/<state>/flyd`;
//!   `stopping` becomes `stopped`, the other transitions are finished by their controller call.
//! - `Exited` for good → `stopped` (desired stopped, so an agent restart does not relaunch it),
//!   or `destroyed` when `auto_destroy` is set. OOM kills are in the exit event (`oom_killed`).
//! - Events of an older version only add to the history.

use std::sync::Arc;

use aloft_api::MachineState;
use aloft_runtime::RuntimeEvent;
use aloft_store::DesiredState;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{event, Controller, FLYD};

impl Controller {
    /// Consumes the runtime's events until the channel closes.
    pub async fn run_runtime_events(self: Arc<Self>, mut rx: UnboundedReceiver<RuntimeEvent>) {
        while let Some(ev) = rx.recv().await {
            if let Err(e) = self.apply_runtime_event(ev).await {
                tracing::error!(error = %e, "cannot record a runtime event");
            }
        }
    }

    async fn apply_runtime_event(&self, ev: RuntimeEvent) -> crate::controller::DomainResult<()> {
        match ev {
            RuntimeEvent::Started {
                machine_id,
                instance_id,
                pid,
                address,
            } => {
                let _guard = self.lock(&machine_id).await;
                let Some(mut rec) = self.machine_by_id(&machine_id).await? else {
                    return Ok(());
                };
                if rec.instance_id != instance_id {
                    return Ok(());
                }
                match rec.state {
                    MachineState::Starting
                    | MachineState::Restarting
                    | MachineState::Replacing
                    | MachineState::Started
                    | MachineState::Created => {
                        rec.state = MachineState::Started;
                        // A container's own address; a host process has none (host ports).
                        rec.private_ip = address.map(|ip| ip.to_string()).unwrap_or_default();
                        let req = json!({"pid": pid, "restart_count": rec.restart_count});
                        self.save(rec, vec![event("start", "started", FLYD, Some(req))])
                            .await?;
                    }
                    other => {
                        tracing::debug!(machine = %machine_id, state = %other, "start reported late; ignored")
                    }
                }
            }
            RuntimeEvent::Exited {
                machine_id,
                instance_id,
                exit,
                restart_count,
            } => {
                let auto_destroy = {
                    let _guard = self.lock(&machine_id).await;
                    let Some(mut rec) = self.machine_by_id(&machine_id).await? else {
                        return Ok(());
                    };
                    let request = json!({"exit_event": exit, "restart_count": restart_count});
                    let current = rec.instance_id == instance_id;
                    let mut auto_destroy = false;
                    if current && exit.restarting && !exit.requested_stop {
                        rec.restart_count = restart_count;
                    } else if current && exit.requested_stop {
                        if rec.state == MachineState::Stopping {
                            rec.state = MachineState::Stopped;
                        }
                    } else if current
                        && matches!(
                            rec.state,
                            MachineState::Started
                                | MachineState::Starting
                                | MachineState::Restarting
                                | MachineState::Stopping
                        )
                    {
                        rec.restart_count = restart_count;
                        rec.state = MachineState::Stopped;
                        rec.desired = DesiredState::Stopped;
                        auto_destroy = rec.config.auto_destroy;
                    }
                    let status = if current && exit.restarting && !exit.requested_stop {
                        "restarting".to_string()
                    } else {
                        rec.state.as_str().to_string()
                    };
                    if exit.oom_killed {
                        tracing::warn!(machine = %machine_id, "machine was killed for using more memory than its limit");
                    }
                    self.save(rec, vec![event("exit", &status, FLYD, Some(request))])
                        .await?;
                    auto_destroy
                };
                if auto_destroy {
                    self.finish_destroy(&machine_id, FLYD).await?;
                }
            }
        }
        Ok(())
    }
}
