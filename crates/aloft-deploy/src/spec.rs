//! What a release is: the per-group machine configs a deploy converges to ([`ReleaseSpec`]),
//! the deploy options, and the [`Release`] record with the decisions frozen at its
//! creation ([`FrozenPlan`]) so that an interrupted deploy resumes to exactly the same result.
//!
//! The spec holds *flattened* configs (flyctl-behaviour §2.3–§2.4, as produced by
//! `aloft_config::AppConfig::machine_config_for`), so this crate never needs to read fly.toml.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aloft_api::{GoDuration, MachineConfig};
use serde::{Deserialize, Serialize};

/// The configuration a release applies, one machine config per process group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    /// The image every machine of the release runs (e.g. `aloft/<app>@sha256:<digest>`).
    pub image: String,
    /// Group name → the flattened machine config of that group. `config.guest` is `Some` exactly
    /// when a `[[vm]]` section matches the group (then deploy applies it to every machine of the
    /// group); `None` means "leave existing guests alone" (§2.4).
    pub groups: BTreeMap<String, MachineConfig>,
    /// The default process group (§2.1): group-less machines are adopted into it.
    pub default_group: String,
    /// Region of machines created by deploy; `None` lets the agent choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
    #[serde(default)]
    pub deploy: DeployOptions,
    /// The fly.toml the spec was made from, kept for `releases` and debugging. Never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Group (with a `[[mounts]]`) → the settings of the volumes deploy and scale create for
    /// its machines; a group absent here gets the defaults. The mount itself (volume name, path,
    /// `initial_size`, auto-extend) is in the group's `config.mounts[0]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeSettings>,
}

/// `[[mounts]]` settings that belong to the volume rather than to the machine's mount
/// (flyctl-behaviour §1.7): given to the volumes deploy and scale create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSettings {
    /// Days (`snapshot_retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    /// `scheduled_snapshots`, recorded as the volume's `auto_backup_enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_snapshots: Option<bool>,
}

impl ReleaseSpec {
    /// Group names, sorted (the order of `[processes]` keys, §2.1).
    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }
}

/// `[deploy]` settings and their flag overrides (flyctl-behaviour §1.9, §3.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployOptions {
    #[serde(default)]
    pub strategy: Strategy,
    /// ≥ 1: an absolute number of machines per group; in (0, 1): a fraction of the group.
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: f64,
    /// Per-machine wait for `started` and for passing checks.
    #[serde(default = "default_wait_timeout")]
    pub wait_timeout: GoDuration,
    /// Create two machines (not one) for a new group that has services, and a standby for a new
    /// group with neither services nor mounts (`plan::gets_standby`).
    #[serde(default = "default_true")]
    pub ha: bool,
    /// Never create machines for groups that have none.
    #[serde(default)]
    pub update_only: bool,
    /// How many machine operations run at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Watch each started machine for a crash loop before calling it healthy (flyctl's smoke
    /// checks; see `engine::SMOKE_WINDOW`).
    #[serde(default = "default_true")]
    pub smoke_checks: bool,
    /// `[deploy] release_command`: run once, before any machine changes (`None`: no command, or
    /// `--skip-release-command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed: the guest it may carry is large, and most deploys have none.
    pub release_command: Option<Box<ReleaseCommand>>,
    /// `--volume-initial-size` (GB): the size of volumes created for mounts that give no
    /// `initial_size`; else [`DEFAULT_VOLUME_SIZE_GB`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_initial_size: Option<u32>,
}

/// The size of a volume deploy or scale creates when neither `initial_size` nor
/// `--volume-initial-size` says one (flyctl's).
pub const DEFAULT_VOLUME_SIZE_GB: u32 = 1;

/// A release command (flyctl-behaviour §3.6): its argv, run in a temporary machine of the new
/// release (image, the default group's env and files, `RELEASE_COMMAND=1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseCommand {
    /// The command, split into words (`release_command` shell-split).
    pub command: Vec<String>,
    /// How long it may run (`release_command_timeout`, default 5 m; `none` = a day).
    #[serde(default = "default_release_command_timeout")]
    pub timeout: GoDuration,
    /// `release_command_vm`; else the largest guest of the default group's machines, else
    /// `shared-cpu-2x` (as flyctl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<aloft_api::Guest>,
}

/// The release command's default time limit (flyctl's).
pub fn default_release_command_timeout() -> GoDuration {
    GoDuration::from_secs(300)
}

fn default_max_unavailable() -> f64 {
    0.33
}
fn default_wait_timeout() -> GoDuration {
    GoDuration::from_secs(300)
}
fn default_true() -> bool {
    true
}
fn default_max_concurrent() -> usize {
    16
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            strategy: Strategy::default(),
            max_unavailable: default_max_unavailable(),
            wait_timeout: default_wait_timeout(),
            ha: true,
            update_only: false,
            max_concurrent: default_max_concurrent(),
            smoke_checks: true,
            release_command: None,
            volume_initial_size: None,
        }
    }
}

impl DeployOptions {
    /// How many started machines of a group of `n` may be updated at once (at least 1).
    pub fn batch_size(&self, n: usize) -> usize {
        let size = if self.max_unavailable >= 1.0 {
            self.max_unavailable.trunc() as usize
        } else if self.max_unavailable > 0.0 {
            (n as f64 * self.max_unavailable).ceil() as usize
        } else {
            1
        };
        size.clamp(1, n.max(1))
    }

    pub fn wait_timeout(&self) -> Duration {
        self.wait_timeout.as_duration()
    }
}

/// Deploy strategies (flyctl-behaviour §3.3–§3.5); each runs as itself, none stands in for
/// another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Update in batches per group, waiting for each batch to start and pass its checks.
    #[default]
    Rolling,
    /// Everything at once, no waiting.
    Immediate,
    /// Per group, one temporary machine of the new release first, started and healthy (then
    /// destroyed), before the group is rolled; a failing canary changes no machine.
    Canary,
    /// A green machine next to each blue one, all healthy before traffic moves to them in one
    /// step; then the blue ones are destroyed. A failure destroys the greens, blue keeps serving.
    Bluegreen,
}

/// A strategy name that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown deploy strategy {0:?}: use one of rolling, immediate, canary, bluegreen")]
pub struct UnknownStrategy(pub String);

impl Strategy {
    /// Every strategy, by its fly.toml / `--strategy` name.
    pub const ALL: [(&'static str, Strategy); 4] = [
        ("rolling", Strategy::Rolling),
        ("immediate", Strategy::Immediate),
        ("canary", Strategy::Canary),
        ("bluegreen", Strategy::Bluegreen),
    ];

    /// Reads a fly.toml / `--strategy` value (any case).
    pub fn parse(s: &str) -> Result<Strategy, UnknownStrategy> {
        let lower = s.to_ascii_lowercase();
        Strategy::ALL
            .iter()
            .find(|(name, _)| *name == lower)
            .map(|(_, st)| *st)
            .ok_or_else(|| UnknownStrategy(s.to_string()))
    }

    pub fn as_str(self) -> &'static str {
        Strategy::ALL
            .iter()
            .find(|(_, st)| *st == self)
            .map(|(name, _)| *name)
            .unwrap_or("rolling")
    }

    /// Whether machines are waited on (started, smoke check, health checks).
    pub fn waits(self) -> bool {
        self != Strategy::Immediate
    }
}

/// Where a release is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Recorded, not started yet.
    Pending,
    /// Being carried out (also after an agent restart, until resumed to an end).
    Running,
    Complete,
    Failed,
    /// Superseded by a newer release before it finished (stopped starting machine operations
    /// and waiting). Bodies of older agents say `interrupted`.
    #[serde(alias = "interrupted")]
    Superseded,
}

impl ReleaseStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ReleaseStatus::Complete | ReleaseStatus::Failed | ReleaseStatus::Superseded
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Pending => "pending",
            ReleaseStatus::Running => "running",
            ReleaseStatus::Complete => "complete",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::Superseded => "superseded",
        }
    }
}

/// The decisions of a deploy taken once, when the release is created, from the machines that
/// existed then. Re-running the engine with the same frozen plan converges to the same machines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrozenPlan {
    /// Group → how many machines the group must have; only for groups that had none.
    pub create: BTreeMap<String, u32>,
    /// Machines of groups no longer defined (confirmed by the user), destroyed with force.
    pub destroy: Vec<PlannedDestroy>,
    /// Machines that were not running before the deploy: updated with `skip_launch`, left stopped.
    pub keep_stopped: BTreeSet<String>,
    /// Groups the deploy touches (`--process-groups`, else every group of the spec).
    pub groups: BTreeSet<String>,
    /// Groups in `create` whose count includes one standby machine (flyctl-behaviour §3.3 step
    /// 6: a new group with no services and no mounts, `--ha`): created, once the group's first
    /// machine exists, as a stopped copy of it watching it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub standby: BTreeSet<String>,
    /// Machines replaced because their volume no longer matches their group's `[[mounts]]`
    /// (flyctl-behaviour §3.4): id → why. Each is also in `destroy` (confirmed like any
    /// destroy), and its group's count in `create`, so a new machine takes its place. The old
    /// machine's volume is kept, unattached.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replace: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDestroy {
    pub id: String,
    /// The machine's group as it was labelled (empty = none).
    pub group: String,
    pub region: String,
}

/// A release as the agent serves it (`GET /v1/apps/{app}/releases`); stored as a
/// [`crate::stored::StoredRelease`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// ULID.
    pub id: String,
    /// 1, 2, 3… per app.
    pub version: u64,
    pub app: String,
    pub status: ReleaseStatus,
    pub spec: ReleaseSpec,
    pub plan: FrozenPlan,
    /// The per-group desired counts the app remembered when the release was created.
    #[serde(default)]
    pub desired_counts: BTreeMap<String, u32>,
    /// Content digest (`sha256:<hex>`) of the uploaded app directory, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    /// Why the release failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Machines per group once the release is carried out, as planned at its creation: what a
    /// rollback to it restores. Empty in releases of older agents and in scale operations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_counts: BTreeMap<String, u32>,
    /// Set on a rollback: the version whose spec, image and counts it restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// The name of the API token that asked for the release (`aloft tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Set on a scale operation (`scale count`, `scale vm|memory`): it changes machine counts or
    /// guests, not the app's config (its `spec` is that of the release it scales). Shown among
    /// releases, never the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleWork>,
    /// The phase the release is in, or was in when it ended (see
    /// [`crate::events::DeployEvent::phase`]): `release_command`, `canary`, `machines`,
    /// `green`, `switched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// The frozen work of a `scale count` or `scale vm|memory` run by the agent (see
/// [`crate::engine`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleWork {
    /// What the user asked for, e.g. `web=8 worker=2 --region gru,bog` or
    /// `vm performance-2x -g web`.
    pub summary: String,
    /// Machines to create, each under its own slot key (see `aloft_api::metadata::SCALE_SLOT`).
    pub create: Vec<SlotCreate>,
    /// Machines to destroy (with force).
    pub destroy: Vec<PlannedDestroy>,
    /// `scale vm|memory`: machines that get a new guest, one at a time, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guest: Vec<GuestSet>,
    /// `secrets set|unset|import|deploy`: started machines restarted onto the app's new secrets,
    /// one at a time, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretsRestart>,
    /// `--with-new-volumes`: the unattached volumes that existed when the operation was
    /// planned, which its new machines must not take (they get new volumes). A volume created
    /// by an interrupted run of the operation is not listed, so a resumed run takes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid_volumes: Vec<String>,
}

/// One machine a secrets operation restarts (an update that stamps the operation's release id
/// in its metadata, `aloft_api::metadata::SECRETS_RELEASE`; nothing else of its config
/// changes). Done once the machine carries that stamp (so a run after a crash skips it); a
/// machine no longer started is left alone: it gets the new values at its next start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretsRestart {
    pub id: String,
    pub group: String,
}

/// One machine a `scale vm|memory` operation gives a new guest. Done once the machine's guest is
/// `guest` (so a run after a crash skips it); nothing else of its config changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestSet {
    pub id: String,
    pub group: String,
    pub guest: aloft_api::Guest,
    /// The machine was started when planned: its update is waited on (started, then checks
    /// passing) before the next machine is touched.
    pub wait: bool,
}

/// One machine a scale operation creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotCreate {
    /// `<operation id>:<n>`, stamped in the machine's metadata.
    pub slot: String,
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub config: aloft_api::MachineConfig,
}

/// How users see a release version: `v5` for a deploy, `scale #3` for a scale operation (stored
/// above `aloft_api::metadata::SCALE_VERSION_BASE`).
pub fn version_label(version: u64) -> String {
    match version.checked_sub(aloft_api::metadata::SCALE_VERSION_BASE) {
        Some(n) if n > 0 => format!("scale #{n}"),
        _ => format!("v{version}"),
    }
}

impl Release {
    /// Whether this is a deploy (not a scale operation).
    pub fn is_deploy(&self) -> bool {
        self.scale.is_none()
    }

    /// `v5` for a deploy, `scale #3` for a scale operation.
    pub fn label(&self) -> String {
        version_label(self.version)
    }

    /// What the release did, as `aloft releases` shows it: `Deploy`, `Rollback to v3`, or the
    /// scale operation's summary.
    pub fn description(&self) -> String {
        match (&self.scale, self.rollback_of) {
            (Some(work), _) => format!("Scale {}", work.summary),
            (None, Some(v)) => format!("Rollback to {}", version_label(v)),
            (None, None) => "Deploy".to_string(),
        }
    }

    /// What [`crate::plan::apply_release_metadata`] writes on every machine of this release.
    pub fn meta(&self) -> ReleaseMeta {
        ReleaseMeta {
            id: self.id.clone(),
            version: self.version,
        }
    }
}

/// Identity of a release as stamped into machine metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseMeta {
    pub id: String,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_follows_max_unavailable() {
        let mut o = DeployOptions::default();
        assert_eq!(o.batch_size(10), 4); // ceil(3.3)
        assert_eq!(o.batch_size(1), 1);
        o.max_unavailable = 3.0;
        assert_eq!(o.batch_size(10), 3);
        assert_eq!(o.batch_size(2), 2);
        o.max_unavailable = 0.0;
        assert_eq!(o.batch_size(10), 1);
    }

    #[test]
    fn strategies_parse() {
        assert_eq!(Strategy::parse("ROLLING"), Ok(Strategy::Rolling));
        assert_eq!(Strategy::parse("immediate"), Ok(Strategy::Immediate));
        assert_eq!(Strategy::parse("canary"), Ok(Strategy::Canary));
        assert_eq!(Strategy::parse("BlueGreen"), Ok(Strategy::Bluegreen));
        for (name, st) in Strategy::ALL {
            assert_eq!(st.as_str(), name);
        }
        let err = Strategy::parse("yolo").unwrap_err().to_string();
        assert!(err.contains("\"yolo\""), "{err}");
        assert!(
            err.contains("rolling, immediate, canary, bluegreen"),
            "{err}"
        );
    }

    #[test]
    fn options_default_from_empty_json() {
        let o: DeployOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(o, DeployOptions::default());
        assert_eq!(o.wait_timeout(), Duration::from_secs(300));
    }
}
