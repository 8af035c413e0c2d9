//! Typed progress of a release, as the engine reports it and the CLI streams it (NDJSON of
//! [`crate::messages::ReleaseEventRecord`]).

use serde::{Deserialize, Serialize};

use crate::spec::ReleaseStatus;

/// One step of a deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeployEvent {
    /// The engine (re)started carrying out the release; `resumed` after an agent restart.
    Started {
        version: u64,
        resumed: bool,
    },
    /// What is left to do, computed from the live machines.
    Planned {
        destroy: usize,
        create: usize,
        update: usize,
    },
    Destroying {
        id: String,
        group: String,
    },
    Destroyed {
        id: String,
        group: String,
    },
    Creating {
        group: String,
        region: Option<String>,
    },
    Created {
        id: String,
        group: String,
        region: String,
    },
    Updating {
        id: String,
        group: String,
        keep_stopped: bool,
    },
    Updated {
        id: String,
        group: String,
    },
    /// Waiting for a machine to start and pass its checks.
    Waiting {
        id: String,
        group: String,
    },
    Healthy {
        id: String,
        group: String,
    },
    /// The release command's temporary machine was created and started.
    ReleaseCommandStarted {
        id: String,
        command: String,
    },
    /// One line the release command wrote (stdout or stderr).
    ReleaseCommandOutput {
        line: String,
    },
    /// The release command's outcome (recorded once per release): its exit code, or why it has
    /// none (could not start, timed out); its machine is destroyed by then.
    ReleaseCommandFinished {
        id: String,
        exit_code: Option<i64>,
        error: Option<String>,
    },
    /// A canary machine of the new release was created for a group (strategy `canary`).
    CanaryCreated {
        id: String,
        group: String,
    },
    /// The group's canary started and passed its checks: the group can be rolled.
    CanaryHealthy {
        id: String,
        group: String,
    },
    /// A canary machine was destroyed (after it was healthy, or after it failed).
    CanaryDestroyed {
        id: String,
        group: String,
    },
    /// A green machine was created next to the blue machine `blue` (strategy `bluegreen`); it
    /// gets no traffic until the switch.
    GreenCreated {
        id: String,
        group: String,
        blue: String,
    },
    /// Every green machine started and passed its checks.
    GreensHealthy {
        count: usize,
    },
    /// Traffic moved from the blue machines to the green ones in one step.
    TrafficSwitched {
        green: usize,
        blue: usize,
    },
    /// A blue machine was destroyed after the switch.
    BlueDestroyed {
        id: String,
        group: String,
    },
    /// A green machine was destroyed because the deploy failed before the switch.
    GreenDestroyed {
        id: String,
        group: String,
    },
    /// A volume was created for a new machine of `group` (its `[[mounts]]` source).
    VolumeCreated {
        id: String,
        name: String,
        region: String,
        size_gb: u32,
        group: String,
    },
    /// A new machine of `group` takes an unattached volume that existed already.
    VolumeReused {
        id: String,
        name: String,
        group: String,
    },
    /// The release reached a terminal status.
    Finished {
        status: ReleaseStatus,
        error: Option<String>,
    },
}

impl DeployEvent {
    /// The phase of a release this event starts, if it starts one: what `aloft releases`
    /// shows a release doing (or where it ended).
    pub fn phase(&self) -> Option<&'static str> {
        match self {
            DeployEvent::ReleaseCommandStarted { .. } => Some("release_command"),
            DeployEvent::CanaryCreated { .. } => Some("canary"),
            DeployEvent::Planned { .. } => Some("machines"),
            DeployEvent::GreenCreated { .. } => Some("green"),
            DeployEvent::TrafficSwitched { .. } => Some("switched"),
            _ => None,
        }
    }

    /// A one-line human description, as the CLI prints it.
    pub fn describe(&self) -> String {
        match self {
            DeployEvent::Started { version, resumed } => {
                let label = crate::spec::version_label(*version);
                match (label.starts_with("scale"), resumed) {
                    (true, false) => format!("Scaling ({label})"),
                    (true, true) => format!("Resuming {label}"),
                    (false, false) => format!("Deploying release {label}"),
                    (false, true) => format!("Resuming release {label}"),
                }
            }
            DeployEvent::Planned {
                destroy,
                create,
                update,
            } => {
                format!("{destroy} to destroy, {create} to create, {update} to update")
            }
            DeployEvent::Destroying { id, group } => format!("Destroying {id} [{group}]"),
            DeployEvent::Destroyed { id, group } => format!("Destroyed {id} [{group}]"),
            DeployEvent::Creating { group, region } => {
                format!(
                    "Creating a machine [{group}] in {}",
                    region.as_deref().unwrap_or("the default region")
                )
            }
            DeployEvent::Created { id, group, region } => {
                format!("Created {id} [{group}] region:{region}")
            }
            DeployEvent::Updating {
                id,
                group,
                keep_stopped: false,
            } => format!("Updating {id} [{group}]"),
            DeployEvent::Updating {
                id,
                group,
                keep_stopped: true,
            } => {
                format!("Updating {id} [{group}] (stopped, stays stopped)")
            }
            DeployEvent::Updated { id, group } => format!("Updated {id} [{group}]"),
            DeployEvent::Waiting { id, group } => {
                format!("Waiting for {id} [{group}] to start and pass its checks")
            }
            DeployEvent::Healthy { id, group } => format!("Machine {id} [{group}] is healthy"),
            DeployEvent::ReleaseCommandStarted { id, command } => {
                format!("Running release command `{command}` in machine {id}")
            }
            DeployEvent::ReleaseCommandOutput { line } => format!("release_command | {line}"),
            DeployEvent::ReleaseCommandFinished {
                id,
                exit_code: Some(0),
                ..
            } => format!("Release command succeeded; machine {id} destroyed"),
            DeployEvent::ReleaseCommandFinished {
                id,
                exit_code,
                error,
            } => {
                let why = match (exit_code, error) {
                    (Some(code), _) => format!("exit code {code}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "no exit code".into(),
                };
                format!("Release command failed ({why}); machine {id} destroyed")
            }
            DeployEvent::CanaryCreated { id, group } => {
                format!("Created canary {id} [{group}]")
            }
            DeployEvent::CanaryHealthy { id, group } => {
                format!("Canary {id} [{group}] is healthy")
            }
            DeployEvent::CanaryDestroyed { id, group } => {
                format!("Destroyed canary {id} [{group}]")
            }
            DeployEvent::GreenCreated { id, group, blue } => {
                format!("Created green {id} [{group}] for blue {blue}")
            }
            DeployEvent::GreensHealthy { count } => {
                format!("All {count} green machines are healthy")
            }
            DeployEvent::TrafficSwitched { green, blue } => {
                format!("Traffic switched from {blue} blue to {green} green machines")
            }
            DeployEvent::BlueDestroyed { id, group } => format!("Destroyed blue {id} [{group}]"),
            DeployEvent::GreenDestroyed { id, group } => {
                format!("Destroyed green {id} [{group}]")
            }
            DeployEvent::VolumeCreated {
                id,
                name,
                region,
                size_gb,
                group,
            } => format!("Created volume {id} '{name}' ({size_gb} GB) in {region} [{group}]"),
            DeployEvent::VolumeReused { id, name, group } => {
                format!("Using unattached volume {id} '{name}' [{group}]")
            }
            DeployEvent::Finished {
                status,
                error: None,
            } => format!("Release {}", status.as_str()),
            DeployEvent::Finished {
                status,
                error: Some(e),
            } => format!("Release {}: {e}", status.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_json() {
        let e = DeployEvent::Created {
            id: "m1".into(),
            group: "web".into(),
            region: "gru".into(),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"type":"created","id":"m1","group":"web","region":"gru"}"#
        );
        assert_eq!(serde_json::from_str::<DeployEvent>(&json).unwrap(), e);
        assert_eq!(e.describe(), "Created m1 [web] region:gru");
    }
}
