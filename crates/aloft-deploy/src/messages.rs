//! What clients and the agent exchange about releases and scale operations, made of this
//! crate's types (release spec, events, plans): the deploy request, the dry-run preview of
//! `scale count`, the destroys to confirm and the release event stream's records. Only data:
//! the routes that carry them and their error statuses are in `aloft_api::routes`; the bodies
//! made of Machines API types alone are in `aloft_api` too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::DeployEvent;
use crate::spec::ReleaseSpec;

/// What `POST /v1/apps/{app}/releases` asks: deploy this spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateReleaseRequest {
    /// The flattened per-group configs; `spec.image` is set by the agent from `image_digest`
    /// when that is given.
    pub spec: ReleaseSpec,
    /// Digest (`sha256:<hex>`) of an image uploaded with `PUT …/images/{hex}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// `--process-groups`: only these groups are deployed; the others are not touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_groups: Option<Vec<String>>,
    /// Machine ids the user agreed to destroy (the plan's destroy list as shown to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmed_destroy: Vec<String>,
}

/// What `POST /v1/apps/{app}/releases/rollback` asks: deploy the spec, image and per-group
/// counts of an earlier release as a new release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The deploy to roll back to; default: the newest complete one before the live one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Machine ids the user agreed to destroy (surplus machines, removed groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmed_destroy: Vec<String>,
}

/// What a `scale count` would do (or does), as the agent planned it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalePreview {
    pub lines: Vec<crate::scale::PlanLine>,
    /// Machines to create.
    pub create: usize,
    pub destroy: Vec<crate::scale::ScaleDestroy>,
    /// Machines each requested group has afterwards (what the app remembers).
    pub desired: BTreeMap<String, u32>,
}

impl ScalePreview {
    pub fn is_noop(&self) -> bool {
        self.create == 0 && self.destroy.is_empty()
    }
}

/// Body of the 409 error when a deploy would destroy machines the request did not confirm:
/// `{"error", "status", "destroy": [...]}`, `status` being
/// `aloft_api::routes::STATUS_CONFIRMATION_REQUIRED`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationRequired {
    pub error: String,
    pub status: String,
    pub destroy: Vec<crate::spec::PlannedDestroy>,
}

/// One line of the release event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEventRecord {
    /// 1, 2, 3… per release; resume a stream with `after=<last seq>`.
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    pub event: DeployEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let req = CreateReleaseRequest {
            spec: ReleaseSpec {
                image: "x".into(),
                default_group: "app".into(),
                ..ReleaseSpec::default()
            },
            image_digest: Some("sha256:ab".into()),
            process_groups: None,
            confirmed_destroy: vec![],
        };
        let json = serde_json::to_value(&req).unwrap();
        assert!(json.get("process_groups").is_none());
        assert_eq!(
            serde_json::from_value::<CreateReleaseRequest>(json).unwrap(),
            req
        );
        let rec = ReleaseEventRecord {
            seq: 3,
            at: "2026-01-01T00:00:00Z".into(),
            event: DeployEvent::Healthy {
                id: "m".into(),
                group: "web".into(),
            },
        };
        let line = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            line,
            r#"{"seq":3,"at":"2026-01-01T00:00:00Z","event":{"type":"healthy","id":"m","group":"web"}}"#
        );
    }
}
