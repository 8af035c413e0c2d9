//! Process-group counts: the remembered desired counts (`GET …/process_groups`,
//! `PUT …/process_groups/{group}/count`) and `scale count` as the agent carries it out
//! (`POST …/scale`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// `--with-new-volumes`: new machines of groups with `[[mounts]]` get new volumes, never
    /// the unattached ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_new_volumes: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_request_omits_what_was_not_given() {
        let req = ScaleCountRequest {
            counts: [("web".to_string(), "+2".to_string())].into(),
            ..ScaleCountRequest::default()
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"counts":{"web":"+2"},"dry_run":false}"#);
        let back: ScaleCountRequest = serde_json::from_str(r#"{"counts":{"web":"+2"}}"#).unwrap();
        assert_eq!(back, req);
    }
}
