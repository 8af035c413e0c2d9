//! The typed, normalised app config (`AppConfig`): what `fly.toml` means once the legacy and
//! alias forms are folded into one shape. Field names are fly.toml's, so the JSON of an
//! `AppConfig` (stored as a release's config) reads back with `parse_str(.., Format::Json, ..)`.
//! Durations are Go duration strings, sizes are normalised (`memory` in MB, volume sizes in GB).

use std::collections::BTreeMap;

use aloft_api::{AutostopMode, GoDuration};
use serde::{Deserialize, Serialize};

/// A whole app config. Build it with [`crate::parse_str`] or [`crate::load`], which validate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppConfig {
    pub app: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_size_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Group name → command ("" = the image's CMD).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_service: Option<HttpService>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, TopCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vm: Vec<Compute>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<Restart>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statics: Vec<StaticSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experimental: Option<Experimental>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Build {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buildpacks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignorefile: Option<String>,
    /// `build-target` (also accepted as `build_target`).
    #[serde(rename = "build-target", skip_serializing_if = "Option::is_none")]
    pub build_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i64>,
}

pub const STRATEGIES: &[&str] = &["rolling", "immediate", "canary", "bluegreen"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Deploy {
    /// One of [`STRATEGIES`]; `None` means `rolling`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// ≥ 1: an absolute count; in (0, 1): a fraction of the group. Default 0.33.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<f64>,
    /// Per-machine wait for start/health; default 5m.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_command_timeout: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_command_vm: Option<Compute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_command: Option<String>,
}

impl Deploy {
    pub const DEFAULT_MAX_UNAVAILABLE: f64 = 0.33;
    pub const DEFAULT_WAIT_TIMEOUT_SECS: u64 = 300;
    pub const DEFAULT_RELEASE_COMMAND_TIMEOUT_SECS: u64 = 300;
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Concurrency {
    /// `connections` or `requests`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<u32>,
}

/// `[http_service]`: a TCP service on `internal_port` exposed on 80 (http) and 443 (tls+http).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpService {
    pub internal_port: u16,
    pub force_https: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_machines: Option<AutostopMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_start_machines: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ServiceCheck>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub internal_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_machines: Option<AutostopMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_start_machines: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_checks: Vec<ServiceCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_checks: Vec<ServiceCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServicePort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<String>,
    pub force_https: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_proto_options: Option<serde_json::Value>,
}

/// A service check (`tcp_checks`, `http_checks`, `[[http_service.checks]]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<GoDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A named top-level check, `[checks.<name>]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopCheck {
    /// `http` or `tcp`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(flatten)]
    pub check: ServiceCheck,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    pub source: String,
    pub destination: String,
    /// In GB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_snapshots: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_extend_size_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_extend_size_increment: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_extend_size_limit: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// One `[[vm]]` entry (also `release_command_vm`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Compute {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// In MB (normalised from `"1gb"` etc.).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist_rootfs: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

/// `[[restart]]`: `policy` is `always`, `never` or `on-failure` as written in fly.toml.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Restart {
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

pub const RESTART_POLICIES: &[&str] = &["always", "never", "on-failure"];

/// `[[files]]`: exactly one source of content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileSpec {
    pub guest_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Plain text, base64-encoded when sent to a machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<String>,
    /// Aloft: base64 content of `local_path`, read by [`crate::load`] next to the config so the
    /// config is self-contained when stored as a release. `None` with `local_path` set means the
    /// file could not be read (a warning was reported): deploy must refuse it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_content_base64: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub port: u16,
    pub path: String,
    pub https: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StaticSpec {
    pub guest_path: String,
    pub url_prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tigris_bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_document: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Experimental {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_consul: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_etcd: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy_load_images: Option<bool>,
}
