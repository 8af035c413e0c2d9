//! The persisted form of a release: the JSON the agent keeps in the store's `releases.body`
//! column, separate from the [`Release`] it serves on the wire.
//!
//! [`StoredRelease`] is a storage format that existing databases hold, not an API: a field may
//! be added with a serde default, but never renamed, retyped or removed without a store
//! migration (`aloft-store/src/migrations.rs`, `PRAGMA user_version`). The wire [`Release`] may
//! change freely; the agent converts between the two when it reads and writes a row. The nested
//! parts (spec, frozen plan, scale work) are stored in their serde shapes; the tests below pin
//! the whole format with a body as agents have written it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{FrozenPlan, Release, ReleaseSpec, ReleaseStatus, ScaleWork};

/// A release as stored (see the module doc: the format must stay readable).
/// Its fields mirror [`Release`] on purpose: the persisted format is kept apart from the wire type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRelease {
    /// ULID.
    pub id: String,
    pub version: u64,
    pub app: String,
    pub status: StoredStatus,
    pub spec: ReleaseSpec,
    pub plan: FrozenPlan,
    #[serde(default)]
    pub desired_counts: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleWork>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_counts: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// A release's status as stored; the same words are in the `releases.status` column, where the
/// store finds unfinished releases (`aloft_store::UNFINISHED_STATUSES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredStatus {
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "complete")]
    Complete,
    #[serde(rename = "failed")]
    Failed,
    /// Rows of older agents say `interrupted` (only `pending`/`running` are looked up in the
    /// column, so those rows need no migration).
    #[serde(rename = "superseded", alias = "interrupted")]
    Superseded,
}

impl StoredStatus {
    /// The word stored in the body and in the `releases.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            StoredStatus::Pending => "pending",
            StoredStatus::Running => "running",
            StoredStatus::Complete => "complete",
            StoredStatus::Failed => "failed",
            StoredStatus::Superseded => "superseded",
        }
    }
}

impl From<ReleaseStatus> for StoredStatus {
    fn from(s: ReleaseStatus) -> StoredStatus {
        match s {
            ReleaseStatus::Pending => StoredStatus::Pending,
            ReleaseStatus::Running => StoredStatus::Running,
            ReleaseStatus::Complete => StoredStatus::Complete,
            ReleaseStatus::Failed => StoredStatus::Failed,
            ReleaseStatus::Superseded => StoredStatus::Superseded,
        }
    }
}

impl From<StoredStatus> for ReleaseStatus {
    fn from(s: StoredStatus) -> ReleaseStatus {
        match s {
            StoredStatus::Pending => ReleaseStatus::Pending,
            StoredStatus::Running => ReleaseStatus::Running,
            StoredStatus::Complete => ReleaseStatus::Complete,
            StoredStatus::Failed => ReleaseStatus::Failed,
            StoredStatus::Superseded => ReleaseStatus::Superseded,
        }
    }
}

impl From<&Release> for StoredRelease {
    fn from(r: &Release) -> StoredRelease {
        StoredRelease {
            id: r.id.clone(),
            version: r.version,
            app: r.app.clone(),
            status: r.status.into(),
            spec: r.spec.clone(),
            plan: r.plan.clone(),
            desired_counts: r.desired_counts.clone(),
            image_digest: r.image_digest.clone(),
            created_at: r.created_at.clone(),
            updated_at: r.updated_at.clone(),
            error: r.error.clone(),
            scale: r.scale.clone(),
            group_counts: r.group_counts.clone(),
            rollback_of: r.rollback_of,
            created_by: r.created_by.clone(),
            phase: r.phase.clone(),
        }
    }
}

impl From<StoredRelease> for Release {
    fn from(s: StoredRelease) -> Release {
        Release {
            id: s.id,
            version: s.version,
            app: s.app,
            status: s.status.into(),
            spec: s.spec,
            plan: s.plan,
            desired_counts: s.desired_counts,
            image_digest: s.image_digest,
            created_at: s.created_at,
            updated_at: s.updated_at,
            error: s.error,
            scale: s.scale,
            group_counts: s.group_counts,
            rollback_of: s.rollback_of,
            created_by: s.created_by,
            phase: s.phase,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PlannedDestroy, SlotCreate};

    fn sample() -> Release {
        let mut spec = ReleaseSpec {
            image: "aloft/demo@sha256:ab".into(),
            default_group: "app".into(),
            primary_region: Some("ord".into()),
            ..ReleaseSpec::default()
        };
        spec.groups.insert(
            "web".into(),
            aloft_api::MachineConfig {
                image: "aloft/demo@sha256:ab".into(),
                ..aloft_api::MachineConfig::default()
            },
        );
        Release {
            id: "01J0000000000000000000000A".into(),
            version: (1 << 40) + 2,
            app: "demo".into(),
            status: ReleaseStatus::Failed,
            spec,
            plan: FrozenPlan {
                create: [("web".to_string(), 2)].into(),
                destroy: vec![PlannedDestroy {
                    id: "m1".into(),
                    group: "old".into(),
                    region: "ord".into(),
                }],
                keep_stopped: ["m2".to_string()].into(),
                groups: ["web".to_string()].into(),
                standby: Default::default(),
                replace: BTreeMap::new(),
            },
            desired_counts: [("web".to_string(), 3)].into(),
            image_digest: Some("sha256:ab".into()),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:01.000Z".into(),
            // Bodies of older agents have neither: they read as empty.
            group_counts: BTreeMap::new(),
            rollback_of: None,
            created_by: None,
            error: Some("machine m3 crashed".into()),
            phase: None,
            scale: Some(ScaleWork {
                avoid_volumes: Vec::new(),
                summary: "web=3".into(),
                create: vec![SlotCreate {
                    slot: "01J0000000000000000000000A:1".into(),
                    group: "web".into(),
                    region: None,
                    config: aloft_api::MachineConfig::default(),
                }],
                destroy: vec![],
                guest: vec![],
                secrets: vec![],
            }),
        }
    }

    /// A body as agents have written it (a failed scale operation, every field set). Never edit
    /// it to make a test pass: databases hold bodies like it.
    const STORED: &str = r#"{"id":"01J0000000000000000000000A","version":1099511627778,"app":"demo","status":"failed","spec":{"image":"aloft/demo@sha256:ab","groups":{"web":{"image":"aloft/demo@sha256:ab"}},"default_group":"app","primary_region":"ord","deploy":{"strategy":"rolling","max_unavailable":0.33,"wait_timeout":"5m0s","ha":true,"update_only":false,"max_concurrent":16,"smoke_checks":true}},"plan":{"create":{"web":2},"destroy":[{"id":"m1","group":"old","region":"ord"}],"keep_stopped":["m2"],"groups":["web"]},"desired_counts":{"web":3},"image_digest":"sha256:ab","created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:01.000Z","error":"machine m3 crashed","scale":{"summary":"web=3","create":[{"slot":"01J0000000000000000000000A:1","group":"web","config":{"image":""}}],"destroy":[]}}"#;

    #[test]
    fn a_stored_body_decodes_to_the_release_and_encodes_back_byte_for_byte() {
        let stored: StoredRelease = serde_json::from_str(STORED).unwrap();
        assert_eq!(Release::from(stored), sample());
        let again = serde_json::to_string(&StoredRelease::from(&sample())).unwrap();
        assert_eq!(again, STORED);
    }

    #[test]
    fn bodies_without_the_defaulted_fields_still_decode() {
        // A deploy body with none of the fields that have a serde default.
        let old = r#"{"id":"r","version":1,"app":"demo","status":"complete","spec":{"image":"i","groups":{},"default_group":"app"},"plan":{"create":{},"destroy":[],"keep_stopped":[],"groups":[]},"created_at":"2026-01-01T00:00:00Z"}"#;
        let r = Release::from(serde_json::from_str::<StoredRelease>(old).unwrap());
        assert_eq!(r.status, ReleaseStatus::Complete);
        assert!(r.is_deploy() && r.desired_counts.is_empty() && r.updated_at.is_empty());
    }

    #[test]
    fn releases_of_older_agents_ended_interrupted_read_as_superseded() {
        let stored: StoredStatus = serde_json::from_str("\"interrupted\"").unwrap();
        assert_eq!(ReleaseStatus::from(stored), ReleaseStatus::Superseded);
        let wire: ReleaseStatus = serde_json::from_str("\"interrupted\"").unwrap();
        assert_eq!(wire, ReleaseStatus::Superseded);
        assert_eq!(
            serde_json::to_string(&ReleaseStatus::Superseded).unwrap(),
            "\"superseded\""
        );
    }

    #[test]
    fn stored_status_words_are_those_of_the_status_column() {
        for s in [
            ReleaseStatus::Pending,
            ReleaseStatus::Running,
            ReleaseStatus::Complete,
            ReleaseStatus::Failed,
            ReleaseStatus::Superseded,
        ] {
            let stored = StoredStatus::from(s);
            assert_eq!(stored.as_str(), s.as_str());
            assert_eq!(
                serde_json::to_string(&stored).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert_eq!(ReleaseStatus::from(stored), s);
        }
    }
}
