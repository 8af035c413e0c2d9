//! The agent routes of deploys, images and process-group counts, with their JSON bodies. The
//! agent implements them verbatim; the CLI speaks them. (Aloft extensions to the Machines API;
//! errors use the API's usual `{"error", "status"}` body.)
//!
//! | route | body | response |
//! |---|---|---|
//! | `GET /v1/apps/{app}/releases` | – | `200 [Release]`, newest first |
//! | `GET /v1/apps/{app}/releases/{version}` | – | `200 Release`, `404` |
//! | `POST /v1/apps/{app}/releases` | [`CreateReleaseRequest`] | `201 Release` (the deploy runs in the agent, also if the client goes away, and resumes after an agent restart); `409` with status [`STATUS_CONFIRMATION_REQUIRED`] and a [`ConfirmationRequired`] body when machines would be destroyed that the request did not confirm; `422` bad spec (unknown `--process-groups` name…); `404` unknown image digest |
//! | `POST /v1/apps/{app}/releases?dry_run=true` | [`CreateReleaseRequest`] | `200` [`crate::plan::DeployPlan`] as the agent would freeze it; nothing recorded |
//! | `GET /v1/apps/{app}/releases/{version}/events?follow=true&after=N` | – | `200` NDJSON of [`ReleaseEventRecord`] with `seq > N`; with `follow` the stream stays open until the release reaches a terminal status (the last line is a `finished` event) |
//! | `PUT /v1/apps/{app}/images/{sha256hex}` | the tar bytes (`application/x-tar`) | `201` [`ImageInfo`] stored; `200` already present; `400` digest mismatch |
//! | `GET`/`HEAD /v1/apps/{app}/images/{sha256hex}` | – | `200` [`ImageInfo`] / `404` |
//! | `POST /v1/apps/{app}/scale` | [`ScaleCountRequest`] | `201 Release` with `scale` set: the agent records the counts and the frozen machine changes in one transaction and carries them out like a deploy (resumable, events as a release's); `200` [`ScalePreview`] with `dry_run` or when nothing is to change (the counts are still recorded then); `409` while a release of the app runs; `422` unknown group, bad count, over the agent's limit, no complete release |
//! | `POST /v1/apps/{app}/scale/guest` | [`ScaleGuestRequest`] | `201 Release` with `scale.guest` set: the frozen list of machines and their new guests (machines already at it left out), carried out by the agent one machine at a time, each started one waited on until healthy (resumable, events as a release's); `200` [`crate::scale::GuestPlan`] with `dry_run` or when no machine is to change; `409` while a release of the app runs; `422` unknown or missing group, no machine in it, bad size, memory not valid for the size, memory over what this host can give |
//! | `GET /v1/apps/{app}/process_groups` | – | `200` [`GroupCounts`] (remembered desired counts) |
//! | `PUT /v1/apps/{app}/process_groups/{group}/count` | [`SetCount`] | `200` [`GroupCounts`] |
//! | `GET /v1/apps/{app}/logs?group=G&machine=ID&region=R&follow=true&limit=N` | – | `200` NDJSON of [`LogLine`] (the last `limit` lines, then new ones while `follow`) — served by the agent already |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::DeployEvent;
use crate::spec::ReleaseSpec;

/// `status` of the 409 error body when a deploy would destroy unconfirmed machines.
pub const STATUS_CONFIRMATION_REQUIRED: &str = "confirmation_required";

/// Paths of the routes above, for client and server alike.
pub mod routes {
    pub fn releases(app: &str) -> String {
        format!("/v1/apps/{app}/releases")
    }
    pub fn release(app: &str, version: u64) -> String {
        format!("/v1/apps/{app}/releases/{version}")
    }
    pub fn release_events(app: &str, version: u64) -> String {
        format!("/v1/apps/{app}/releases/{version}/events")
    }
    /// `hex` is the sha256 hex without the `sha256:` prefix.
    pub fn image(app: &str, hex: &str) -> String {
        format!("/v1/apps/{app}/images/{hex}")
    }
    pub fn process_groups(app: &str) -> String {
        format!("/v1/apps/{app}/process_groups")
    }
    pub fn group_count(app: &str, group: &str) -> String {
        format!("/v1/apps/{app}/process_groups/{group}/count")
    }
    pub fn scale(app: &str) -> String {
        format!("/v1/apps/{app}/scale")
    }
    pub fn scale_guest(app: &str) -> String {
        format!("/v1/apps/{app}/scale/guest")
    }
    pub fn logs(app: &str) -> String {
        format!("/v1/apps/{app}/logs")
    }
}

/// `POST /v1/apps/{app}/releases`.
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

/// `POST /v1/apps/{app}/scale`: `scale count` carried out by the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleCountRequest {
    /// Group → count as the user wrote it: `8`, `+2` or `-1`.
    pub counts: BTreeMap<String, String>,
    /// `--region`, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// `--max-per-region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_region: Option<u32>,
    /// Only plan: nothing is recorded or changed.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/apps/{app}/scale/guest`: `scale vm SIZE [--vm-memory MB]` / `scale memory MB`
/// carried out by the agent. At least one of `size` and `memory_mb` is given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleGuestRequest {
    /// The process group; `None` = the app's only group (refused when it has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A VM size preset (`performance-2x`): the guest is reset to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Memory in MB, set after `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Only plan: nothing is recorded or changed.
    #[serde(default)]
    pub dry_run: bool,
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

/// Body of the 409 `confirmation_required` error: `{"error", "status", "destroy": [...]}`.
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

/// An uploaded image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// The image reference machines get: `aloft/<app>@sha256:<hex>`.
    pub image_ref: String,
}

/// The image reference of an uploaded app image.
pub fn image_ref(app: &str, digest: &str) -> String {
    format!("aloft/{app}@{digest}")
}

/// Remembered desired machine counts per process group (`scale count` writes them; deploy uses
/// them for groups that have no machine, so a group scaled to 0 stays at 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCounts {
    pub counts: BTreeMap<String, u32>,
}

/// `PUT /v1/apps/{app}/process_groups/{group}/count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCount {
    pub count: u32,
}

/// One log line of a machine, as the agent's log route sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 UTC with fractional seconds.
    pub timestamp: String,
    #[serde(default)]
    pub app: String,
    pub machine_id: String,
    /// The machine's process group.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub region: String,
    /// `stdout` or `stderr`.
    #[serde(default)]
    pub stream: String,
    pub message: String,
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
        assert_eq!(
            routes::group_count("a", "web"),
            "/v1/apps/a/process_groups/web/count"
        );
    }
}
