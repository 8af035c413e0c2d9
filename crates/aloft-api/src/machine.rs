//! Machines, their config and the request/response bodies of the Machines API
//! (`../shared/spec/machines-api.md` §1–§2). Unknown JSON fields are ignored on input, as Fly does.

use std::collections::BTreeMap;
use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::GoDuration;
use crate::guest::Guest;

/// Everything a machine runs with. Only `image` is required by the API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Init::is_empty")]
    pub init: Init,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Guest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MachineService>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, MachineCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MachineMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<MachineRestart>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_destroy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statics: Vec<Static>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standbys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<MachineFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MachineMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<serde_json::Value>,
    /// Deprecated preset name; mutually exclusive with `guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Fly's per-process overrides (`exec`, `env`, `secrets`, `ignore_app_secrets`…). Kept so the
    /// agent can refuse them by name: it runs one process tree per machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<MachineProcess>,
    /// Deprecated in Fly's API in favour of `services[].autostart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_machine_autostart: Option<bool>,
}

/// One entry of `config.processes` in Fly's schema, kept whole (the agent refuses it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineProcess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_app_secrets: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What the machine's main process is: `exec` replaces everything; otherwise the image
/// ENTRYPOINT (or `entrypoint`) followed by the image CMD (or `cmd`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_size_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
}

impl Init {
    pub fn is_empty(&self) -> bool {
        self == &Init::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineService {
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default)]
    pub internal_port: u16,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<MachinePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<AutostopMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<MachineCheck>,
    /// Fly's proxy routes by `fly-force-instance-key` to machines with this key; the agent
    /// refuses it (see `Fly-Force-Instance-Id` for pinning a request to a machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_instance_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_instance_description: Option<String>,
}

fn default_protocol() -> String {
    "tcp".into()
}

impl MachineService {
    /// Whether external `port` is served by this service (single port or range).
    pub fn serves_port(&self, port: u16) -> bool {
        self.ports.iter().any(|p| p.matches(port))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachinePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_https: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_options: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_options: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_proto_options: Option<serde_json::Value>,
}

impl MachinePort {
    /// Whether this port entry covers `port`; a range with a missing bound spans 0 or 65535.
    pub fn matches(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None if self.start_port.is_some() || self.end_port.is_some() => {
                (self.start_port.unwrap_or(0)..=self.end_port.unwrap_or(u16::MAX)).contains(&port)
            }
            None => false,
        }
    }

    /// Every external port this entry covers.
    pub fn external_ports(&self) -> std::ops::RangeInclusive<u16> {
        match self.port {
            Some(p) => p..=p,
            None => self.start_port.unwrap_or(0)..=self.end_port.unwrap_or(u16::MAX),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    #[serde(rename = "type", default = "default_concurrency_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<u32>,
}

fn default_concurrency_type() -> String {
    "connections".into()
}

/// `autostop`: input accepts `false`/`true`/`"off"`/`"stop"`/`"suspend"`; output encodes off/stop
/// as `false`/`true` and suspend as `"suspend"`, the backward-compatible form fly-go emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutostopMode {
    Off,
    Stop,
    Suspend,
}

impl Serialize for AutostopMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AutostopMode::Off => s.serialize_bool(false),
            AutostopMode::Stop => s.serialize_bool(true),
            AutostopMode::Suspend => s.serialize_str("suspend"),
        }
    }
}

impl<'de> Deserialize<'de> for AutostopMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = AutostopMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bool or one of \"off\", \"stop\", \"suspend\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AutostopMode, E> {
                Ok(if v {
                    AutostopMode::Stop
                } else {
                    AutostopMode::Off
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AutostopMode, E> {
                match v {
                    "off" | "false" => Ok(AutostopMode::Off),
                    "stop" | "true" => Ok(AutostopMode::Stop),
                    "suspend" => Ok(AutostopMode::Suspend),
                    other => Err(E::custom(format!(
                        "invalid autostop {other:?}: expected \"off\", \"stop\" or \"suspend\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A health check, either a top-level machine check or a service check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineCheck {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<CheckHeader>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckHeader {
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineMount {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub volume: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_threshold_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_size_gb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb_limit: Option<u32>,
}

/// Restart policy: `no`, `always` or `on-failure` (the default when unset, 10 retries).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRestart {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

pub const RESTART_POLICIES: &[&str] = &["no", "always", "on-failure"];
pub const DEFAULT_MAX_RETRIES: u32 = 10;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Static {
    pub guest_path: String,
    pub url_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tigris_bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_document: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

pub const DEFAULT_STOP_SIGNAL: &str = "SIGINT";
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 5;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineFile {
    pub guest_path: String,
    /// Base64 of the file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineMetrics {
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https: bool,
}

/// Machine states (machines-api §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Suspending,
    Suspended,
    Restarting,
    Updating,
    Replacing,
    Destroying,
    Destroyed,
    Failed,
    LaunchFailed,
}

impl MachineState {
    pub const ALL: &'static [MachineState] = &[
        MachineState::Created,
        MachineState::Starting,
        MachineState::Started,
        MachineState::Stopping,
        MachineState::Stopped,
        MachineState::Suspending,
        MachineState::Suspended,
        MachineState::Restarting,
        MachineState::Updating,
        MachineState::Replacing,
        MachineState::Destroying,
        MachineState::Destroyed,
        MachineState::Failed,
        MachineState::LaunchFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Created => "created",
            MachineState::Starting => "starting",
            MachineState::Started => "started",
            MachineState::Stopping => "stopping",
            MachineState::Stopped => "stopped",
            MachineState::Suspending => "suspending",
            MachineState::Suspended => "suspended",
            MachineState::Restarting => "restarting",
            MachineState::Updating => "updating",
            MachineState::Replacing => "replacing",
            MachineState::Destroying => "destroying",
            MachineState::Destroyed => "destroyed",
            MachineState::Failed => "failed",
            MachineState::LaunchFailed => "launch_failed",
        }
    }

    pub fn parse(s: &str) -> Option<MachineState> {
        MachineState::ALL
            .iter()
            .copied()
            .find(|st| st.as_str() == s)
    }

    /// Not destroyed or on the way there.
    pub fn is_active(self) -> bool {
        !matches!(self, MachineState::Destroyed | MachineState::Destroying)
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A machine as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub state: MachineState,
    pub region: String,
    /// The current version (a ULID); changes on every config update, not on metadata writes.
    pub instance_id: String,
    #[serde(default)]
    pub private_ip: String,
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ImageRef>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub events: Vec<MachineEvent>,
    /// Omitted when empty, as Fly does (`omitempty`); the agent's list relies on it to add the
    /// results to a cached entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default = "host_status_ok")]
    pub host_status: String,
    #[serde(default)]
    pub cordoned: bool,
    /// Aloft extension: host port assigned to each service `internal_port` (host networking).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_ports: BTreeMap<u16, u16>,
}

fn host_status_ok() -> String {
    "ok".into()
}

impl Machine {
    /// A machine with what a record needs first: `id` (also its `name`), `region`, `state` and
    /// `config`. The rest holds the values of a new machine: empty `instance_id`, `private_ip`
    /// and timestamps, no image ref, events, checks, nonce or host ports, `host_status` "ok",
    /// not cordoned. Set other fields with struct update syntax (`Machine { .., ..Machine::new(..) }`).
    pub fn new(id: &str, region: &str, state: MachineState, config: MachineConfig) -> Self {
        Machine {
            id: id.into(),
            name: id.into(),
            state,
            region: region.into(),
            instance_id: String::new(),
            private_ip: String::new(),
            config,
            image_ref: None,
            created_at: String::new(),
            updated_at: String::new(),
            events: Vec::new(),
            checks: Vec::new(),
            nonce: None,
            host_status: host_status_ok(),
            cordoned: false,
            host_ports: BTreeMap::new(),
        }
    }

    /// The machine's process group (`fly_process_group`, else legacy `process_group`, else empty).
    pub fn process_group(&self) -> &str {
        self.config.process_group()
    }
}

impl MachineConfig {
    /// The process group this config belongs to (see [`Machine::process_group`]).
    pub fn process_group(&self) -> &str {
        self.metadata
            .get(crate::metadata::PROCESS_GROUP)
            .or_else(|| self.metadata.get(crate::metadata::LEGACY_PROCESS_GROUP))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Whether this is a standby machine's config: it watches other machines (`standbys`) and
    /// stays stopped until one of their hosts fails (flyctl-behaviour §3.3 step 6).
    pub fn is_standby(&self) -> bool {
        !self.standbys.is_empty()
    }

    /// Makes this a standby of `watched` (flyctl's deploy and `machine clone --standby-for`):
    /// `standbys` and the [`STANDBY_FOR_ENV`] variable, the ids comma-separated. An empty list
    /// clears both.
    pub fn set_standby_for(&mut self, watched: Vec<String>) {
        if watched.is_empty() {
            self.clear_standby();
            return;
        }
        self.env
            .insert(STANDBY_FOR_ENV.to_string(), watched.join(","));
        self.standbys = watched;
    }

    /// No longer a standby: clears `standbys` and [`STANDBY_FOR_ENV`] (a group that gained
    /// services, a machine scaled from a standby's config).
    pub fn clear_standby(&mut self) {
        self.standbys.clear();
        self.env.remove(STANDBY_FOR_ENV);
    }
}

/// The environment variable of a standby machine naming the machines it watches
/// (flyctl-behaviour §7.1), comma-separated.
pub const STANDBY_FOR_ENV: &str = "FLY_STANDBY_FOR";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    #[serde(default)]
    pub registry: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineEvent {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    /// `user` for API-initiated events, `flyd` for the supervisor's.
    pub source: String,
    /// Unix milliseconds.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
}

/// The `exit_event` carried in an `exit` event's `request`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitEvent {
    pub exit_code: i32,
    #[serde(default)]
    pub guest_exit_code: i32,
    #[serde(default)]
    pub guest_signal: i32,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub requested_stop: bool,
    #[serde(default)]
    pub restarting: bool,
    #[serde(default)]
    pub signal: i32,
    #[serde(default)]
    pub exited_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateMachineRequest {
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_launch: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_service_registration: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Fly's log-structured virtual disks; refused when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lsvd: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateMachineRequest {
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_launch: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_service_registration: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<u64>,
    /// Fly's log-structured virtual disks; refused when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lsvd: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// Signals the API accepts by name (`/signal` also accepts their numbers).
pub const SIGNALS: &[(&str, i32)] = &[
    ("SIGABRT", 6),
    ("SIGALRM", 14),
    ("SIGFPE", 8),
    ("SIGHUP", 1),
    ("SIGILL", 4),
    ("SIGINT", 2),
    ("SIGKILL", 9),
    ("SIGPIPE", 13),
    ("SIGQUIT", 3),
    ("SIGSEGV", 11),
    ("SIGTERM", 15),
    ("SIGTRAP", 5),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
];

/// The signal number for a name (`"SIGTERM"`, `"term"`, `"TERM"`) or a numeric string.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return SIGNALS
            .iter()
            .find(|(_, num)| *num == n)
            .map(|(_, num)| *num);
    }
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS
        .iter()
        .find(|(n, _)| *n == full)
        .map(|(_, num)| *num)
}

/// An app as the API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub network: String,
    pub organization: Organization,
    #[serde(default)]
    pub machine_count: u64,
    #[serde(default)]
    pub volume_count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub name: String,
    pub slug: String,
}

/// `POST /v1/apps`: the docs' `app_name` and flyctl's `name` are both accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAppRequest {
    #[serde(default, alias = "name", skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Fly routes `*.<app>.fly.dev` to the app when set; refused by the agent when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_subdomains: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAppsResponse {
    pub total_apps: u64,
    pub apps: Vec<App>,
}

/// The error body of every non-lease endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A lease as carried in the `{status, data}` envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub nonce: String,
    /// Unix seconds.
    pub expires_at: i64,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
}

/// `{status:"success", data}` or `{status:"error", message, code}` of the lease endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEnvelope<T> {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Header carrying a lease nonce on mutating machine calls.
pub const LEASE_NONCE_HEADER: &str = "fly-machine-lease-nonce";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autostop_round_trip() {
        let m: AutostopMode = serde_json::from_str("\"suspend\"").unwrap();
        assert_eq!(m, AutostopMode::Suspend);
        assert_eq!(serde_json::to_string(&AutostopMode::Stop).unwrap(), "true");
        let m: AutostopMode = serde_json::from_str("false").unwrap();
        assert_eq!(m, AutostopMode::Off);
        assert!(serde_json::from_str::<AutostopMode>("\"sleep\"").is_err());
    }

    #[test]
    fn port_ranges() {
        let p = MachinePort {
            start_port: Some(8000),
            end_port: Some(8010),
            ..Default::default()
        };
        assert!(p.matches(8005));
        assert!(!p.matches(8011));
        let p = MachinePort {
            port: Some(80),
            ..Default::default()
        };
        assert!(p.matches(80));
        assert!(!p.matches(81));
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGFOO"), None);
        assert_eq!(signal_number("99"), None);
    }

    #[test]
    fn config_ignores_unknown_fields_and_reads_group() {
        let c: MachineConfig = serde_json::from_str(
            r#"{"image":"x","metadata":{"process_group":"web"},"containers":[]}"#,
        )
        .unwrap();
        assert_eq!(c.process_group(), "web");
    }
}
