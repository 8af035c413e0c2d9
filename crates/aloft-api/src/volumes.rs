//! Volumes: the bodies of the Machines API volume routes (`/v1/apps/{app}/volumes…`, see
//! [`crate::routes`]) and their rules (names, sizes).
//!
//! A volume is a filesystem of a fixed size on the agent's host, attached to at most one machine
//! at a time through `config.mounts[].volume` (see `aloft_runtime::volumes` for what it is on
//! disk). Shapes follow `machines-openapi.json` (`Volume`, `CreateVolumeRequest`,
//! `ExtendVolumeRequest`/`ExtendVolumeResponse`, `UpdateVolumeRequest`, `VolumeSnapshot`) plus the
//! fields fly-go sends. Request bodies refuse unknown fields (`deny_unknown_fields`): a field
//! Aloft would not act on is an error naming it, never silently dropped.
//!
//! Differences from Fly, all on one host:
//! - `encrypted` (Fly's default is `true`) is accepted and reported, but the disk image is **not**
//!   encrypted; keep the agent's data directory on an encrypted disk if that matters.
//! - `require_unique_zone`, `unique_zone_app_wide`, `compute`, `compute_image` and
//!   `host_dedication_id` are placement hints; one host has one zone, so they change nothing.
//! - `auto_backup_enabled` volumes get a snapshot a day and every snapshot is deleted after
//!   `snapshot_retention` days, as on Fly (the agent's `volumes_backup` task); a snapshot is a
//!   copy on the same host, not a backup elsewhere.

use serde::{Deserialize, Serialize};

use crate::guest::Guest;

/// The smallest volume, in GB (Fly's).
pub const MIN_SIZE_GB: u32 = 1;
/// The largest volume, in GB (Fly's).
pub const MAX_SIZE_GB: u32 = 500;
/// The size of a volume created without `size_gb` (flyctl's `--size` default).
pub const DEFAULT_SIZE_GB: u32 = 3;
/// Longest volume name (Fly's).
pub const MAX_NAME_LEN: usize = 30;
/// Snapshot retention in days when none is given (Fly's default), and its bounds.
pub const DEFAULT_SNAPSHOT_RETENTION: u32 = 5;
pub const MIN_SNAPSHOT_RETENTION: u32 = 1;
pub const MAX_SNAPSHOT_RETENTION: u32 = 60;
/// The only filesystem Aloft makes.
pub const FSTYPE_EXT4: &str = "ext4";

/// `Volume.state`: usable (attached or not).
pub const STATE_CREATED: &str = "created";
/// `Volume.state`: being removed (its files may still be on disk).
pub const STATE_DESTROYING: &str = "destroying";
/// `Volume.state`: gone; only its record remains.
pub const STATE_DESTROYED: &str = "destroyed";
/// `Volume.host_status` of every volume of this agent (flyctl only picks volumes whose host is `ok`).
pub const HOST_STATUS_OK: &str = "ok";
/// `VolumeSnapshot.status` of a finished snapshot.
pub const SNAPSHOT_STATUS_CREATED: &str = "created";

/// A volume, as `GET /v1/apps/{app}/volumes/{id}` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// `vol_<random>`.
    pub id: String,
    pub name: String,
    /// [`STATE_CREATED`], [`STATE_DESTROYING`] or [`STATE_DESTROYED`].
    pub state: String,
    pub size_gb: u32,
    pub region: String,
    /// The host's one zone.
    #[serde(default)]
    pub zone: String,
    /// Reported as asked; the disk image is not encrypted (see the module docs).
    #[serde(default)]
    pub encrypted: bool,
    /// The machine whose `config.mounts` names this volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_machine_id: Option<String>,
    /// Fly's Nomad allocation; always absent here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_alloc_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default)]
    pub fstype: String,
    /// Days (recorded; see the module docs).
    #[serde(default)]
    pub snapshot_retention: u32,
    #[serde(default)]
    pub auto_backup_enabled: bool,
    /// [`HOST_STATUS_OK`].
    #[serde(default)]
    pub host_status: String,
    /// Filesystem figures (`statvfs`) while the volume is mounted on the host, else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_free: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_avail: Option<u64>,
}

/// `POST /v1/apps/{app}/volumes`: a new empty volume, or one with the data of a snapshot
/// (`snapshot_id`) or of another volume (`source_volume_id`: a fork).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeRequest {
    /// Required unless forking (then the source's name is the default).
    #[serde(default)]
    pub name: String,
    /// Required unless forking (then the source's region is the default).
    #[serde(default)]
    pub region: String,
    /// [`DEFAULT_SIZE_GB`] when absent (the source's size for a fork or a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<u32>,
    /// `true` when absent, as Fly; see the module docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Only [`FSTYPE_EXT4`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Restore from this snapshot (`vs_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Fork: copy the current data of this volume (`vol_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
    /// Placement hints (one host, one zone): accepted, change nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_unique_zone: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_zone_app_wide: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<Guest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    /// Fly's "volume for machines only" flag (all volumes here are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines_only: Option<bool>,
}

/// `POST /v1/apps/{app}/volumes/{id}`: changes to a volume's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateVolumeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
}

/// `PUT /v1/apps/{app}/volumes/{id}/extend`: the new size (larger than the current one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendVolumeRequest {
    pub size_gb: u32,
}

/// The answer to an extend: `needs_restart` is false when the filesystem grew online (or the
/// volume is not in use: it grows when next mounted), true when the host refused online resizing
/// while a machine has it (it grows at that machine's next start).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendVolumeResponse {
    pub needs_restart: bool,
    pub volume: Volume,
}

/// A consistent copy of a volume's data at one moment (`vs_<random>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    pub id: String,
    /// Bytes of data the copy holds (allocated, not apparent).
    pub size: u64,
    /// `sha256:<hex>` of the copied image.
    #[serde(default)]
    pub digest: String,
    /// RFC 3339.
    pub created_at: String,
    /// [`SNAPSHOT_STATUS_CREATED`].
    pub status: String,
    /// The size of the volume it was taken of, GB (a restore is at least that large).
    #[serde(default)]
    pub volume_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// Checks a volume name: 1 to [`MAX_NAME_LEN`] lowercase letters, digits and `_` (Fly's rule).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a volume needs a name (lowercase letters, digits and _)".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "volume name {name:?} is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "volume name {name:?} contains {c:?}: only lowercase letters, digits and _ are allowed"
        ));
    }
    Ok(())
}

/// Checks a size in GB: [`MIN_SIZE_GB`]..=[`MAX_SIZE_GB`].
pub fn check_size_gb(size_gb: u32) -> Result<(), String> {
    if !(MIN_SIZE_GB..=MAX_SIZE_GB).contains(&size_gb) {
        return Err(format!(
            "a volume size of {size_gb} GB is out of range: {MIN_SIZE_GB} to {MAX_SIZE_GB} GB"
        ));
    }
    Ok(())
}

/// Checks a snapshot retention in days.
pub fn check_snapshot_retention(days: u32) -> Result<(), String> {
    if !(MIN_SNAPSHOT_RETENTION..=MAX_SNAPSHOT_RETENTION).contains(&days) {
        return Err(format!(
            "snapshot_retention {days} is out of range: {MIN_SNAPSHOT_RETENTION} to {MAX_SNAPSHOT_RETENTION} days"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_flys_rule() {
        assert!(check_name("data").is_ok());
        assert!(check_name("pg_data_1").is_ok());
        assert!(check_name(&"a".repeat(30)).is_ok());
        assert!(check_name(&"a".repeat(31)).unwrap_err().contains("31"));
        assert!(check_name("Data").unwrap_err().contains("'D'"));
        assert!(check_name("my-data").unwrap_err().contains("'-'"));
        assert!(check_name("").is_err());
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(check_size_gb(1).is_ok() && check_size_gb(500).is_ok());
        assert!(check_size_gb(0).unwrap_err().contains("1 to 500"));
        assert!(check_size_gb(501).is_err());
        assert!(check_snapshot_retention(0).is_err() && check_snapshot_retention(60).is_ok());
    }

    #[test]
    fn requests_refuse_unknown_fields_and_take_flyctls() {
        let flyctl = r#"{"name":"data","region":"local","size_gb":3,"encrypted":true,
            "require_unique_zone":true,"unique_zone_app_wide":false,"snapshot_retention":5,
            "compute":{"cpu_kind":"shared","cpus":1,"memory_mb":256}}"#;
        let r: CreateVolumeRequest = serde_json::from_str(flyctl).unwrap();
        assert_eq!((r.name.as_str(), r.size_gb), ("data", Some(3)));
        let err = serde_json::from_str::<CreateVolumeRequest>(r#"{"name":"d","sizee":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sizee"), "{err}");
        assert!(serde_json::from_str::<ExtendVolumeRequest>(r#"{"size_gb":2,"x":1}"#).is_err());
    }

    #[test]
    fn a_detached_volume_has_no_attached_machine_field() {
        let v = Volume {
            id: "vol_1".into(),
            name: "data".into(),
            state: STATE_CREATED.into(),
            size_gb: 1,
            region: "local".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            ..Volume::default()
        };
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("attached_machine_id"), "{json}");
        assert_eq!(serde_json::from_str::<Volume>(&json).unwrap(), v);
    }
}
