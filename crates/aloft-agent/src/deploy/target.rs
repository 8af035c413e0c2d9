//! [`AgentTarget`]: the deploy engine's [`DeployTarget`] over the agent's own [`Controller`]
//! (in-process calls, the same code paths as the Machines API), for one release of one app.
//!
//! Progress events are appended to the release's log in the store (committed before the engine
//! goes on) and then announced to followers. A release that was superseded refuses to start new
//! machine operations, stops waiting, and its final event says `superseded`.

use std::sync::Arc;
use std::time::Duration;

use aloft_api::volumes::{CreateVolumeRequest, Volume};
use aloft_api::{CreateMachineRequest, Machine, MachineState, UpdateMachineRequest};
use aloft_deploy::engine::{CommandExit, COMMAND_TAIL_LINES};
use aloft_deploy::{DeployEvent, DeployTarget, ReleaseStatus, TargetError};
use aloft_store::MachineFilter;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::{Deployer, ReleaseKey};

use crate::controller::actions::{
    CreateMachine, DeleteMachine, ListMachines, ReadLogs, UpdateMachine,
};
use crate::controller::Controller;
use crate::controller::DomainError;

/// Log lines quoted when a machine crash-loops during a deploy.
const RECENT_LOG_LINES: usize = 8;
/// After a blue-green switch, how long the blue machines keep running before they are
/// destroyed: the proxy's table is rebuilt within its 20 ms debounce, and requests the blue
/// machines accepted before it finish meanwhile.
const TRAFFIC_DRAIN: Duration = Duration::from_secs(2);

/// One release being carried out.
pub struct AgentTarget {
    pub(super) deployer: Arc<Deployer>,
    pub(super) key: ReleaseKey,
    /// Turns `true` when a newer release supersedes this one.
    pub(super) cancel: watch::Receiver<bool>,
}

fn target_error(e: DomainError) -> TargetError {
    match e {
        DomainError::NotFound(message) => TargetError::NotFound(message),
        other => TargetError::Other(other.to_string()),
    }
}

impl AgentTarget {
    fn ctl(&self) -> &Arc<Controller> {
        &self.deployer.ctl
    }

    fn app(&self) -> &str {
        &self.key.app
    }

    /// Whether a newer release superseded this one.
    pub(crate) fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Refuses to start a machine operation once the release is superseded.
    fn check_cancel(&self) -> Result<(), TargetError> {
        if self.cancelled() {
            Err(TargetError::Other(format!(
                "release v{} of {} was superseded by a newer release",
                self.key.version, self.key.app
            )))
        } else {
            Ok(())
        }
    }

    /// Waits until `done` says the machine is where it should be; `done` sees the machine after
    /// every change of it and answers `Some(Ok)` (reached), `Some(Err)` (will not be reached) or
    /// `None` (keep waiting). With `snapshots`, `done` sees each published state in order (no
    /// state is missed); otherwise the machine is read again as the API shows it (with checks).
    async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        snapshots: bool,
        done: impl Fn(&Machine) -> Option<Result<(), TargetError>>,
    ) -> Result<(), TargetError> {
        let mut changes = self.ctl().subscribe();
        let mut cancel = self.cancel.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = self.fetch(id).await?;
        loop {
            if let Some(r) = done(&last) {
                return r;
            }
            if self.cancelled() {
                return self.check_cancel();
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(TargetError::Timeout(format!(
                        "machine {id} is {} after {}s; waited for it to {what}",
                        last.state,
                        timeout.as_secs()
                    )));
                }
                _ = cancel.changed() => {}
                change = changes.recv() => match change {
                    Ok(c) if c.machine.id == id => {
                        last = if snapshots {
                            (*c.machine).clone()
                        } else {
                            self.fetch(id).await?
                        }
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => last = self.fetch(id).await?,
                    Err(RecvError::Closed) => {
                        return Err(TargetError::Other("the agent is shutting down".into()))
                    }
                },
            }
        }
    }

    /// The machine's last few log lines, indented, for an error message.
    async fn recent_logs(&self, id: &str) -> Option<String> {
        let query = aloft_runtime::LogQuery {
            machine_id: Some(id.to_string()),
            limit: Some(RECENT_LOG_LINES),
            ..Default::default()
        };
        let lines = self.ctl().log_lines(query).await.ok()?;
        let text: Vec<String> = lines.iter().map(|l| format!("    {}", l.message)).collect();
        (!text.is_empty()).then(|| text.join("\n"))
    }

    async fn fetch(&self, id: &str) -> Result<Machine, TargetError> {
        self.ctl()
            .get_machine(self.app(), id)
            .await
            .map_err(target_error)
    }
}

/// The reason of the newest failed launch among a machine's events, if any.
fn launch_failure(m: &Machine) -> Option<String> {
    m.events
        .iter()
        .find(|e| e.kind == "launch" && e.status == "failed")
        .map(|e| {
            e.request
                .as_ref()
                .and_then(|r| r.get("error"))
                .and_then(|v| v.as_str())
                .unwrap_or("launch failed")
                .to_string()
        })
}

/// How the machine's command ended each time it exited on its own (not stopped by a request)
/// with an error since `since` (unix ms), newest first: "exit code 1", "signal 9", "OOM".
fn crash_exits(m: &Machine, since: i64) -> Vec<String> {
    m.events
        .iter()
        .filter(|e| e.kind == "exit" && e.timestamp >= since)
        .filter_map(|e| {
            let exit: aloft_api::ExitEvent =
                serde_json::from_value(e.request.as_ref()?.get("exit_event")?.clone()).ok()?;
            if exit.requested_stop {
                None
            } else if exit.oom_killed {
                Some("OOM".to_string())
            } else if exit.signal != 0 {
                Some(format!("signal {}", exit.signal))
            } else if exit.exit_code != 0 {
                Some(format!("exit code {}", exit.exit_code))
            } else {
                None
            }
        })
        .collect()
}

/// How the newest exit ended, as an exit code (a signal `n` as `128 + n`, as shells do).
fn last_exit_code(m: &Machine) -> Option<i64> {
    let e = m.events.iter().find(|e| e.kind == "exit")?;
    let exit: aloft_api::ExitEvent =
        serde_json::from_value(e.request.as_ref()?.get("exit_event")?.clone()).ok()?;
    Some(if exit.signal != 0 && exit.exit_code == 0 {
        128 + i64::from(exit.signal)
    } else {
        i64::from(exit.exit_code)
    })
}

/// The output of a one-shot machine as the deploy shows it: each line a
/// `ReleaseCommandOutput` event, the last ones kept for the error message.
struct Output {
    seen: usize,
    tail: std::collections::VecDeque<String>,
}

impl Output {
    async fn emit(&mut self, target: &AgentTarget, line: String) -> Result<(), TargetError> {
        self.seen += 1;
        if self.tail.len() == COMMAND_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        target
            .record(DeployEvent::ReleaseCommandOutput { line })
            .await
    }
}

/// The exit code of the newest exit event, as a sentence.
fn exit_status(m: &Machine) -> Option<String> {
    let e = m.events.iter().find(|e| e.kind == "exit")?;
    let code = e.request.as_ref()?.get("exit_event")?.get("exit_code")?;
    Some(format!(
        "exit code {code}; see `aloft logs --machine {}`",
        m.id
    ))
}

impl DeployTarget for AgentTarget {
    async fn list_volumes(&self) -> Result<Vec<Volume>, TargetError> {
        self.ctl()
            .list_volumes(self.app())
            .await
            .map_err(target_error)
    }

    async fn create_volume(&self, req: CreateVolumeRequest) -> Result<Volume, TargetError> {
        self.check_cancel()?;
        self.ctl()
            .create_volume(self.app(), req)
            .await
            .map_err(target_error)
    }

    fn default_region(&self, primary: Option<&str>) -> String {
        self.ctl().regions().default_for(primary)
    }

    async fn list_machines(&self) -> Result<Vec<Machine>, TargetError> {
        self.ctl()
            .list_machines(
                self.app(),
                ListMachines {
                    filter: MachineFilter::default(),
                    summary: true,
                },
            )
            .await
            .map_err(target_error)
    }

    async fn create_machine(&self, mut req: CreateMachineRequest) -> Result<Machine, TargetError> {
        self.check_cancel()?;
        // The engine asks for a lease on new machines, but releases are serialised per app by
        // the agent itself and the engine never sends the nonce back: a lease would only lock
        // the user (and the next deploy) out of the machine until it expires.
        req.lease_ttl = None;
        self.ctl()
            .create_machine(self.app(), CreateMachine { request: req })
            .await
            .map_err(target_error)
    }

    async fn update_machine(
        &self,
        id: &str,
        req: UpdateMachineRequest,
    ) -> Result<Machine, TargetError> {
        self.check_cancel()?;
        self.ctl()
            .update_machine(
                self.app(),
                id,
                UpdateMachine {
                    request: req,
                    nonce: None,
                },
            )
            .await
            .map_err(target_error)
    }

    async fn destroy_machine(&self, id: &str, force: bool) -> Result<(), TargetError> {
        self.check_cancel()?;
        let action = DeleteMachine { force, nonce: None };
        match self.ctl().destroy_machine(self.app(), id, action).await {
            Ok(()) => Ok(()),
            // Destroyed meanwhile: what we wanted.
            Err(DomainError::Precondition(m)) if m.contains("already destroyed") => Ok(()),
            Err(e) => Err(target_error(e)),
        }
    }

    async fn wait_for_state(
        &self,
        id: &str,
        state: MachineState,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let result = self
            .wait_until(id, timeout, &format!("be {state}"), true, |m| {
                if m.state == state {
                    return Some(Ok(()));
                }
                match m.state {
                    MachineState::Destroyed | MachineState::Destroying => Some(Err(
                        TargetError::NotFound(format!("machine {id} was destroyed")),
                    )),
                    MachineState::Failed => Some(Err(TargetError::Other(format!(
                        "machine {id} failed to start"
                    )))),
                    // Its process exited for good (a started machine that exits stays stopped).
                    MachineState::Stopped if state == MachineState::Started => Some(Err(
                        TargetError::Other(format!("machine {id} stopped: its command exited")),
                    )),
                    _ => None,
                }
            })
            .await;
        match result {
            Err(TargetError::Other(msg)) => {
                let reason = match self.fetch(id).await {
                    Ok(m) => launch_failure(&m).or_else(|| exit_status(&m)),
                    Err(_) => None,
                };
                Err(TargetError::Other(match reason {
                    Some(r) => format!("{msg}: {r}"),
                    None => format!("{msg}; see `aloft logs --machine {id}`"),
                }))
            }
            other => other,
        }
    }

    async fn smoke_check(&self, id: &str, window: Duration) -> Result<(), TargetError> {
        // Exits count from the machine's newest launch or update: what this release started.
        let since = self
            .fetch(id)
            .await?
            .events
            .iter()
            .filter(|e| e.kind == "launch" || e.kind == "update")
            .map(|e| e.timestamp)
            .max()
            .unwrap_or(0);
        let result = self
            .wait_until(id, window, "run without crashing", false, |m| {
                let crashes = crash_exits(m, since);
                if crashes.len() > 1 {
                    let codes: Vec<String> = crashes.iter().map(|c| c.to_string()).collect();
                    return Some(Err(TargetError::Other(format!(
                        "machine {id} is crash-looping: its command exited {} times ({}) within {}s",
                        crashes.len(),
                        codes.join(", "),
                        window.as_secs()
                    ))));
                }
                match m.state {
                    MachineState::Started | MachineState::Starting | MachineState::Restarting => {}
                    other => {
                        return Some(Err(TargetError::Other(format!(
                            "machine {id} is {other} instead of running"
                        ))))
                    }
                }
                let has_checks = !m.checks.is_empty();
                (has_checks && crashes.is_empty() && m.checks.iter().all(|c| c.status == "passing"))
                    .then_some(Ok(()))
            })
            .await;
        match result {
            // Ran through the window without a crash loop.
            Err(TargetError::Timeout(_)) => Ok(()),
            Err(TargetError::Other(msg)) => {
                Err(TargetError::Other(match self.recent_logs(id).await {
                    Some(logs) => format!("{msg}; its last log lines:\n{logs}"),
                    None => format!("{msg}; see `aloft logs --machine {id}`"),
                }))
            }
            other => other,
        }
    }

    async fn wait_for_checks(&self, id: &str, timeout: Duration) -> Result<(), TargetError> {
        let result = self
            .wait_until(id, timeout, "pass its checks", false, |m| {
                if m.checks.iter().all(|c| c.status == "passing") {
                    return Some(Ok(()));
                }
                match m.state {
                    MachineState::Started => None,
                    other => Some(Err(TargetError::Other(format!(
                        "machine {id} is {other} while waiting for its checks"
                    )))),
                }
            })
            .await;
        match result {
            Err(TargetError::Timeout(_)) => {
                let m = self.fetch(id).await?;
                let failing: Vec<String> = m
                    .checks
                    .iter()
                    .filter(|c| c.status != "passing")
                    .map(|c| format!("check '{}' is {}: {}", c.name, c.status, c.output.trim()))
                    .collect();
                Err(TargetError::Timeout(format!(
                    "machine {id}: {} after {}s",
                    failing.join("; "),
                    timeout.as_secs()
                )))
            }
            other => other,
        }
    }

    async fn recorded(&self) -> Result<Vec<DeployEvent>, TargetError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .deployer
                .events(&self.key.app, self.key.version, after)
                .await
                .map_err(target_error)?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = last.seq;
            all.extend(page.into_iter().map(|r| r.event));
        }
    }

    async fn run_to_exit(&self, id: &str, timeout: Duration) -> Result<CommandExit, TargetError> {
        let query = aloft_runtime::LogQuery {
            machine_id: Some(id.to_string()),
            ..Default::default()
        };
        let read = ReadLogs {
            query: query.clone(),
            follow: true,
        };
        let logs = self
            .ctl()
            .logs(self.app(), read)
            .await
            .map_err(target_error)?;
        let mut out = Output {
            seen: 0,
            tail: Default::default(),
        };
        for line in logs.backlog {
            out.emit(self, line.message).await?;
        }
        let mut live = logs
            .live
            .unwrap_or_else(|| Box::pin(futures_util::stream::empty()));
        let ended = self.wait_for_state(id, MachineState::Stopped, timeout);
        tokio::pin!(ended);
        let ended = loop {
            tokio::select! {
                r = &mut ended => break r,
                Some(line) = live.next() => out.emit(self, line.message).await?,
            }
        };
        // Lines captured after the exit was seen (the pipes drain after the process ends).
        let rest = self.ctl().log_lines(query).await.map_err(target_error)?;
        for line in rest.into_iter().skip(out.seen) {
            out.emit(self, line.message).await?;
        }
        match ended {
            Ok(()) => {}
            Err(TargetError::Timeout(_)) => {
                return Err(TargetError::Timeout(format!(
                    "still running after {}s (release_command_timeout)",
                    timeout.as_secs()
                )))
            }
            Err(e) => return Err(e),
        }
        let m = self.fetch(id).await?;
        let exit_code = last_exit_code(&m).ok_or_else(|| {
            TargetError::Other(format!("machine {id} stopped without an exit event"))
        })?;
        Ok(CommandExit {
            exit_code,
            last_lines: out.tail.into(),
        })
    }

    async fn switch_traffic(&self, green: &[String], blue: &[String]) -> Result<(), TargetError> {
        self.check_cancel()?;
        self.ctl()
            .switch_cordons(self.app(), green, blue)
            .await
            .map_err(target_error)?;
        tokio::time::sleep(TRAFFIC_DRAIN).await;
        Ok(())
    }

    async fn record(&self, event: DeployEvent) -> Result<(), TargetError> {
        let event = match event {
            DeployEvent::Finished { .. } if self.cancelled() => DeployEvent::Finished {
                status: ReleaseStatus::Superseded,
                error: Some(super::SUPERSEDED.into()),
            },
            e => e,
        };
        self.deployer
            .record(&self.key, event)
            .await
            .map_err(|e| TargetError::Other(e.to_string()))
    }
}
