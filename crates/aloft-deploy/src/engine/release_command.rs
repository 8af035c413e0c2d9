//! The release command (flyctl-behaviour §3.6): once per deploy, before any machine changes, in
//! a temporary machine of the new release (its image, the default group's env and files,
//! `RELEASE_COMMAND=1`), destroyed whatever the outcome.
//!
//! Resumable: the outcome is one [`DeployEvent::ReleaseCommandFinished`] in the release's log.
//! A run that finds it recorded does not run the command again (and fails again if it failed);
//! a run that does not (the agent died while the command ran, or before its outcome was
//! recorded) destroys the machine the interrupted run left and runs the command once more.
//! Release-command machines of superseded releases are destroyed the same way.

use aloft_api::metadata::{PLATFORM_VERSION, PLATFORM_VERSION_V2, RELEASE_COMMAND_GROUP};
use aloft_api::{CreateMachineRequest, Guest, Machine, MachineConfig, MachineRestart};

use super::{DeployTarget, Engine, EngineError, TargetError};
use crate::events::DeployEvent;
use crate::plan::{apply_release_metadata, effective_group, is_managed};
use crate::spec::{Release, ReleaseCommand};

/// flyctl's guest of a release command with no `release_command_vm` and no machine to copy.
const FALLBACK_SIZE: &str = "shared-cpu-2x";

impl<T: DeployTarget> Engine<'_, T> {
    pub(super) async fn release_command(&self, rc: &ReleaseCommand) -> Result<(), EngineError> {
        let recorded = self.target.recorded().await.map_err(EngineError::Record)?;
        if let Some(outcome) = recorded.iter().rev().find_map(|e| match e {
            DeployEvent::ReleaseCommandFinished {
                exit_code, error, ..
            } => Some(outcome(*exit_code, error.clone(), &[])),
            _ => None,
        }) {
            return outcome;
        }
        let machines = self
            .target
            .list_machines()
            .await
            .map_err(EngineError::List)?;
        for m in leftovers(&machines) {
            self.destroy_temporary(&m.id, RELEASE_COMMAND_GROUP).await?;
        }
        let req = CreateMachineRequest {
            config: config(self.release, rc, &machines),
            region: self.release.spec.primary_region.clone(),
            ..CreateMachineRequest::default()
        };
        let m = match self.target.create_machine(req).await {
            Ok(m) => m,
            Err(source) => {
                let error = format!("could not create its machine: {source}");
                self.record(DeployEvent::ReleaseCommandFinished {
                    id: String::new(),
                    exit_code: None,
                    error: Some(error.clone()),
                })
                .await?;
                return Err(EngineError::ReleaseCommand(error));
            }
        };
        self.record(DeployEvent::ReleaseCommandStarted {
            id: m.id.clone(),
            command: shlex::try_join(rc.command.iter().map(String::as_str))
                .unwrap_or_else(|_| rc.command.join(" ")),
        })
        .await?;
        let ran = self
            .target
            .run_to_exit(&m.id, rc.timeout.as_duration())
            .await;
        let destroyed = match self.target.destroy_machine(&m.id, true).await {
            Ok(()) | Err(TargetError::NotFound(_)) => Ok(()),
            Err(source) => Err(EngineError::Destroy {
                id: m.id.clone(),
                group: RELEASE_COMMAND_GROUP.into(),
                source,
            }),
        };
        let (exit_code, error, tail) = match ran {
            Ok(exit) => (Some(exit.exit_code), None, exit.last_lines),
            Err(e) => (None, Some(e.to_string()), Vec::new()),
        };
        self.record(DeployEvent::ReleaseCommandFinished {
            id: m.id.clone(),
            exit_code,
            error: error.clone(),
        })
        .await?;
        destroyed?;
        outcome(exit_code, error, &tail)
    }

    /// Destroys a temporary machine (release command, canary) an interrupted run left.
    pub(super) async fn destroy_temporary(&self, id: &str, group: &str) -> Result<(), EngineError> {
        self.record(DeployEvent::Destroying {
            id: id.to_string(),
            group: group.to_string(),
        })
        .await?;
        match self.target.destroy_machine(id, true).await {
            Ok(()) | Err(TargetError::NotFound(_)) => {}
            Err(source) => {
                return Err(EngineError::Destroy {
                    id: id.to_string(),
                    group: group.to_string(),
                    source,
                })
            }
        }
        self.record(DeployEvent::Destroyed {
            id: id.to_string(),
            group: group.to_string(),
        })
        .await
    }
}

/// The release's outcome from the command's: exit 0 goes on, anything else fails the deploy.
fn outcome(
    exit_code: Option<i64>,
    error: Option<String>,
    tail: &[String],
) -> Result<(), EngineError> {
    match (exit_code, error) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => {
            let mut msg = format!("exit code {code}");
            if !tail.is_empty() {
                msg.push_str("; its last output lines:\n");
                let lines: Vec<String> = tail.iter().map(|l| format!("    {l}")).collect();
                msg.push_str(&lines.join("\n"));
            }
            Err(EngineError::ReleaseCommand(msg))
        }
        (None, Some(e)) => Err(EngineError::ReleaseCommand(e)),
        (None, None) => Err(EngineError::ReleaseCommand("it has no exit code".into())),
    }
}

/// Release-command machines still there: an interrupted run's, or a superseded release's
/// (one release of an app runs at a time, so none of them is running for anyone).
fn leftovers(machines: &[Machine]) -> Vec<&Machine> {
    machines
        .iter()
        .filter(|m| m.state.is_active() && m.process_group() == RELEASE_COMMAND_GROUP)
        .collect()
}

/// The release command machine's config (flyctl-behaviour §3.6): the command as CMD (the
/// default group's `[experimental] entrypoint` kept), restart `no`, no services, checks or
/// mounts, the default group's env and files, `RELEASE_COMMAND=1`, the platform labels.
pub fn config(release: &Release, rc: &ReleaseCommand, machines: &[Machine]) -> MachineConfig {
    let spec = &release.spec;
    let default = spec
        .groups
        .get(&spec.default_group)
        .cloned()
        .unwrap_or_default();
    let mut cfg = MachineConfig {
        image: spec.image.clone(),
        env: default.env.clone(),
        files: default.files.clone(),
        restart: Some(MachineRestart {
            policy: "no".into(),
            max_retries: None,
        }),
        guest: Some(guest(release, rc, machines)),
        ..MachineConfig::default()
    };
    cfg.init.cmd = Some(rc.command.clone());
    cfg.init.entrypoint = default.init.entrypoint.clone();
    cfg.env.insert("RELEASE_COMMAND".into(), "1".into());
    if let Some(r) = &spec.primary_region {
        cfg.env.insert("PRIMARY_REGION".into(), r.clone());
    }
    cfg.metadata
        .insert(PLATFORM_VERSION.into(), PLATFORM_VERSION_V2.into());
    apply_release_metadata(&mut cfg, RELEASE_COMMAND_GROUP, &release.meta());
    cfg
}

/// `release_command_vm`; else the guest with the most memory among the default group's
/// machines; else shared-cpu-2x.
fn guest(release: &Release, rc: &ReleaseCommand, machines: &[Machine]) -> Guest {
    if let Some(g) = &rc.guest {
        return g.clone();
    }
    let default = &release.spec.default_group;
    machines
        .iter()
        .filter(|m| is_managed(m) && effective_group(m, default) == default)
        .filter_map(|m| m.config.guest.clone())
        .max_by_key(|g| g.memory_mb)
        .or_else(|| Guest::from_preset(FALLBACK_SIZE))
        .unwrap_or_default()
}
