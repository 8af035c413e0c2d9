//! Row types of the store and their conversion to the API's wire types.

use std::collections::BTreeMap;

use aloft_api::{ImageRef, Machine, MachineConfig, MachineEvent, MachineState};

/// An app row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRecord {
    /// 16 lowercase alphanumerics.
    pub id: String,
    pub name: String,
    pub org_slug: String,
    pub network: String,
    pub status: String,
    /// RFC 3339, seconds.
    pub created_at: String,
}

/// What the agent wants a machine to be; after an agent restart, machines whose desired state
/// is [`DesiredState::Started`] are launched again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesiredState {
    Started,
    Stopped,
    Destroyed,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Started => "started",
            DesiredState::Stopped => "stopped",
            DesiredState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<DesiredState> {
        match s {
            "started" => Some(DesiredState::Started),
            "stopped" => Some(DesiredState::Stopped),
            "destroyed" => Some(DesiredState::Destroyed),
            _ => None,
        }
    }
}

/// A machine row: the current version's config plus lifecycle bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineRecord {
    /// 14 lowercase hex.
    pub id: String,
    pub app: String,
    pub name: String,
    pub region: String,
    pub state: MachineState,
    pub desired: DesiredState,
    /// The current version (ULID).
    pub instance_id: String,
    pub private_ip: String,
    pub config: MachineConfig,
    pub image_ref: Option<ImageRef>,
    pub cordoned: bool,
    /// Host port for each service `internal_port`.
    pub host_ports: BTreeMap<u16, u16>,
    /// Restarts by the restart policy since the last start requested through the API.
    pub restart_count: u32,
    /// RFC 3339, seconds.
    pub created_at: String,
    pub updated_at: String,
}

impl MachineRecord {
    /// The API form, with `events` (newest first) attached.
    pub fn to_api(&self, events: Vec<MachineEvent>) -> Machine {
        Machine {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            region: self.region.clone(),
            instance_id: self.instance_id.clone(),
            private_ip: self.private_ip.clone(),
            config: self.config.clone(),
            image_ref: self.image_ref.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            events,
            checks: Vec::new(),
            nonce: None,
            host_status: "ok".into(),
            cordoned: self.cordoned,
            host_ports: self.host_ports.clone(),
        }
    }
}

/// One machine version (`GET …/versions`).
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRecord {
    pub instance_id: String,
    pub config: MachineConfig,
    pub created_at: String,
}

/// Filters of `GET /v1/apps/{app}/machines`.
#[derive(Clone, Debug, Default)]
pub struct MachineFilter {
    pub region: Option<String>,
    /// Empty = any state.
    pub states: Vec<MachineState>,
    /// Destroyed machines are left out unless this is set.
    pub include_deleted: bool,
    /// `metadata.<key>=<value>` pairs; all must match.
    pub metadata: Vec<(String, String)>,
}

impl MachineFilter {
    pub fn matches(&self, m: &MachineRecord) -> bool {
        (self.include_deleted || m.state != MachineState::Destroyed)
            && self.region.as_deref().is_none_or(|r| r == m.region)
            && (self.states.is_empty() || self.states.contains(&m.state))
            && self
                .metadata
                .iter()
                .all(|(k, v)| m.config.metadata.get(k).is_some_and(|have| have == v))
    }
}
