//! Process groups and flattening (flyctl-behaviour §2): the group list, the default group, and
//! the pure function (config, group) → the `MachineConfig` a machine of that group runs.
//!
//! The asymmetry is Fly's and kept on purpose: an item of `[[services]]`, `[http_service]`,
//! `[checks]`, `[[mounts]]`, `[[restart]]`, `[[metrics]]` or `[[files]]` without `processes`
//! applies to the **default group only**, while a `[[vm]]` without `processes` applies to
//! **every** group. Beyond flyctl, `[[files]].processes` is honoured per group (§9).

use std::collections::BTreeMap;

use aloft_api::guest::{DEFAULT_GPU_VM_SIZE, DEFAULT_VM_SIZE};
use aloft_api::metadata::{self, DEFAULT_GROUP};
use aloft_api::{
    CheckHeader, Guest, MachineCheck, MachineConfig, MachineFile, MachineMetrics, MachineMount,
    MachinePort, MachineRestart, MachineService, Static, StopConfig, VmPreset,
};

use crate::model::*;

/// Why a guest cannot be computed for a group (only reachable for configs that skipped
/// validation, e.g. deserialised directly).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestResolveError {
    #[error("unknown VM size {size:?}; valid sizes: {}", suggestions.join(", "))]
    UnknownSize {
        size: String,
        suggestions: Vec<String>,
    },
    #[error("[[vm]] memory cannot be zero")]
    ZeroMemory,
}

impl AppConfig {
    /// Group names, sorted; `["app"]` when `[processes]` is absent or empty.
    pub fn process_names(&self) -> Vec<String> {
        if self.processes.is_empty() {
            vec![DEFAULT_GROUP.to_string()]
        } else {
            self.processes.keys().cloned().collect()
        }
    }

    /// `app` if it is a group, else the lexicographically first group.
    pub fn default_process_name(&self) -> String {
        let names = self.process_names();
        if names.iter().any(|n| n == DEFAULT_GROUP) {
            DEFAULT_GROUP.to_string()
        } else {
            names
                .into_iter()
                .next()
                .unwrap_or_else(|| DEFAULT_GROUP.to_string())
        }
    }

    /// Whether an item with this `processes` list applies to `group`: listed explicitly, or
    /// unlisted and `group` is the default group.
    pub fn applies_to(&self, processes: &[String], group: &str) -> bool {
        if processes.is_empty() {
            group == self.default_process_name()
        } else {
            processes.iter().any(|p| p == group)
        }
    }

    /// The groups an item with this `processes` list applies to.
    pub fn groups_of(&self, processes: &[String]) -> Vec<String> {
        if processes.is_empty() {
            vec![self.default_process_name()]
        } else {
            processes.to_vec()
        }
    }

    /// The command of a group as CMD words; `None` = keep the image CMD (or `experimental.cmd`).
    pub fn cmd_for(&self, group: &str) -> Option<Vec<String>> {
        let own = self
            .processes
            .get(group)
            .filter(|c| !c.trim().is_empty())
            .and_then(|c| shlex::split(c));
        own.filter(|w| !w.is_empty())
            .or_else(|| self.experimental.as_ref().and_then(|e| e.cmd.clone()))
    }

    /// The `[[vm]]` entry for a group: the last entry listing it explicitly, else the first entry
    /// without `processes` (which applies to every group), else none.
    pub fn compute_for(&self, group: &str) -> Option<&Compute> {
        self.vm
            .iter()
            .rev()
            .find(|c| c.processes.iter().any(|p| p == group))
            .or_else(|| self.vm.iter().find(|c| c.processes.is_empty()))
    }

    /// The guest for a group (§1.8); `Ok(None)` when no `[[vm]]` matches, meaning deploy keeps the
    /// guests existing machines have (new machines get the default size).
    pub fn guest_for(&self, group: &str) -> Result<Option<Guest>, GuestResolveError> {
        match self.compute_for(group) {
            None => Ok(None),
            Some(c) => compute_guest(c, self.host_dedication_id.as_deref()).map(Some),
        }
    }

    /// `[deploy] release_command` split into words; `None` when unset, blank or unsplittable
    /// (validation reports the latter at its file:line:col).
    pub fn release_command_argv(&self) -> Option<Vec<String>> {
        let cmd = self.deploy.as_ref()?.release_command.as_deref()?;
        shlex::split(cmd).filter(|words| !words.is_empty())
    }

    /// The guest of `[deploy] release_command_vm`; `Ok(None)` when it is not set.
    pub fn release_command_guest(&self) -> Result<Option<Guest>, GuestResolveError> {
        match self
            .deploy
            .as_ref()
            .and_then(|d| d.release_command_vm.as_ref())
        {
            None => Ok(None),
            Some(c) => compute_guest(c, self.host_dedication_id.as_deref()).map(Some),
        }
    }

    /// The services of a group, `[http_service]` expanded first (§1.4), then `[[services]]`.
    pub fn services_for(&self, group: &str) -> Vec<MachineService> {
        let mut out = vec![];
        if let Some(h) = self
            .http_service
            .as_ref()
            .filter(|h| self.applies_to(&h.processes, group))
        {
            out.push(expand_http_service(h));
        }
        for s in self
            .services
            .iter()
            .filter(|s| self.applies_to(&s.processes, group))
        {
            let mut checks: Vec<MachineCheck> = s
                .tcp_checks
                .iter()
                .map(|c| service_check(c, "tcp"))
                .collect();
            checks.extend(s.http_checks.iter().map(|c| service_check(c, "http")));
            out.push(MachineService {
                protocol: s.protocol.clone(),
                internal_port: s.internal_port,
                ports: s.ports.iter().map(machine_port).collect(),
                concurrency: s.concurrency.as_ref().map(concurrency),
                autostop: s.auto_stop_machines,
                autostart: s.auto_start_machines,
                min_machines_running: s.min_machines_running,
                checks,
                ..MachineService::default()
            });
        }
        out
    }

    /// The named top-level checks of a group. A check without `port` uses the group's
    /// `[http_service]` internal port; without one the port stays unset (validation warns).
    pub fn checks_for(&self, group: &str) -> BTreeMap<String, MachineCheck> {
        let http_port = self
            .http_service
            .as_ref()
            .filter(|h| self.applies_to(&h.processes, group))
            .map(|h| h.internal_port);
        self.checks
            .iter()
            .filter(|(_, c)| self.applies_to(&c.processes, group))
            .map(|(name, c)| {
                let mut mc = service_check(&c.check, &c.kind);
                mc.port = c.port.or(http_port);
                (name.clone(), mc)
            })
            .collect()
    }

    /// The flattened machine config of a group (§2.3–§2.4), without `image` (deploy sets it).
    pub fn machine_config_for(&self, group: &str) -> MachineConfig {
        let mut mc = MachineConfig::default();
        mc.init.cmd = self.cmd_for(group);
        if let Some(e) = &self.experimental {
            mc.init.entrypoint = e.entrypoint.clone();
            mc.init.exec = e.exec.clone();
        }
        mc.init.swap_size_mb = self.swap_size_mb;
        mc.env = self.env.clone();
        mc.env.insert("FLY_PROCESS_GROUP".into(), group.to_string());
        if let Some(r) = &self.primary_region {
            mc.env.insert("PRIMARY_REGION".into(), r.clone());
        }
        mc.metadata
            .insert(metadata::PROCESS_GROUP.into(), group.to_string());
        mc.metadata.insert(
            metadata::PLATFORM_VERSION.into(),
            metadata::PLATFORM_VERSION_V2.into(),
        );
        mc.services = self.services_for(group);
        mc.checks = self.checks_for(group);
        mc.mounts = self
            .mounts
            .iter()
            .filter(|m| self.applies_to(&m.processes, group))
            .take(1) // the first, as flyctl; validation warns about the others
            .map(|m| MachineMount {
                name: m.source.clone(),
                path: m.destination.clone(),
                size_gb: m.initial_size.map(|s| s.min(u32::MAX as u64) as u32),
                extend_threshold_percent: m.auto_extend_size_threshold,
                add_size_gb: m.auto_extend_size_increment,
                size_gb_limit: m.auto_extend_size_limit.filter(|l| *l > 0),
                ..MachineMount::default()
            })
            .collect();
        // Several matching [[restart]] entries: the last wins, as in flyctl.
        mc.restart = self
            .restart
            .iter()
            .rev()
            .find(|r| self.applies_to(&r.processes, group))
            .map(|r| MachineRestart {
                policy: if r.policy == "never" {
                    "no".into()
                } else {
                    r.policy.clone()
                },
                max_retries: r.retries,
            });
        mc.metrics = self
            .metrics
            .iter()
            .find(|m| self.applies_to(&m.processes, group))
            .map(|m| MachineMetrics {
                port: m.port,
                path: m.path.clone(),
                https: m.https,
            });
        mc.statics = self
            .statics
            .iter()
            .map(|s| Static {
                guest_path: s.guest_path.clone(),
                url_prefix: s.url_prefix.clone(),
                tigris_bucket: s.tigris_bucket.clone(),
                index_document: s.index_document.clone(),
            })
            .collect();
        mc.files = self
            .files
            .iter()
            .filter(|f| self.applies_to(&f.processes, group))
            .map(machine_file)
            .collect();
        if self.kill_signal.is_some() || self.kill_timeout.is_some() {
            mc.stop_config = Some(StopConfig {
                signal: self.kill_signal.clone(),
                timeout: self.kill_timeout,
            });
        }
        mc.guest = self.guest_for(group).ok().flatten();
        mc
    }
}

/// Guest of one `[[vm]]` entry (§1.8, later steps win): preset `size` (default shared-cpu-1x, or
/// performance-8x with a GPU), then the top-level `host_dedication_id`, then `memory`, then every
/// inline guest field. So `[[vm]] cpu_kind = "shared"` alone yields shared-cpu-1x / 256 MB.
pub(crate) fn compute_guest(
    c: &Compute,
    top_host: Option<&str>,
) -> Result<Guest, GuestResolveError> {
    let size = c.size.clone().unwrap_or_else(|| {
        if c.gpu_kind.is_some() {
            DEFAULT_GPU_VM_SIZE
        } else {
            DEFAULT_VM_SIZE
        }
        .to_string()
    });
    let mut g = Guest::from_preset(&size).ok_or_else(|| GuestResolveError::UnknownSize {
        suggestions: VmPreset::suggestions_for(&size)
            .into_iter()
            .map(str::to_string)
            .collect(),
        size,
    })?;
    if let Some(h) = top_host {
        g.host_dedication_id = Some(h.to_string());
    }
    match c.memory {
        Some(0) => return Err(GuestResolveError::ZeroMemory),
        Some(m) => g.memory_mb = m,
        None => {}
    }
    if let Some(k) = &c.cpu_kind {
        g.cpu_kind = k.clone();
    }
    if let Some(n) = c.cpus.filter(|n| *n > 0) {
        g.cpus = n;
    }
    if let Some(m) = c.memory_mb.filter(|m| *m > 0) {
        g.memory_mb = m;
    }
    if let Some(m) = c.max_memory_mb.filter(|m| *m > 0) {
        g.max_memory_mb = Some(m);
    }
    if let Some(n) = c.gpus.filter(|n| *n > 0) {
        g.gpus = Some(n);
    }
    if let Some(k) = &c.gpu_kind {
        g.gpu_kind = Some(k.clone());
    }
    if let Some(h) = &c.host_dedication_id {
        g.host_dedication_id = Some(h.clone());
    }
    if !c.kernel_args.is_empty() {
        g.kernel_args = c.kernel_args.clone();
    }
    if let Some(p) = &c.persist_rootfs {
        g.persist_rootfs = Some(p.clone());
    }
    Ok(g)
}

/// `[http_service]` → a TCP service with port 80 (http, force_https) and 443 (tls+http).
fn expand_http_service(h: &HttpService) -> MachineService {
    MachineService {
        protocol: "tcp".into(),
        internal_port: h.internal_port,
        ports: vec![
            MachinePort {
                port: Some(80),
                handlers: vec!["http".into()],
                force_https: h.force_https,
                http_options: h.http_options.clone(),
                ..MachinePort::default()
            },
            MachinePort {
                port: Some(443),
                handlers: vec!["http".into(), "tls".into()],
                tls_options: h.tls_options.clone(),
                http_options: h.http_options.clone(),
                ..MachinePort::default()
            },
        ],
        concurrency: h.concurrency.as_ref().map(concurrency),
        autostop: h.auto_stop_machines,
        autostart: h.auto_start_machines,
        min_machines_running: h.min_machines_running,
        checks: h.checks.iter().map(|c| service_check(c, "http")).collect(),
        ..MachineService::default()
    }
}

fn concurrency(c: &Concurrency) -> aloft_api::Concurrency {
    aloft_api::Concurrency {
        kind: c.kind.clone(),
        soft_limit: c.soft_limit,
        hard_limit: c.hard_limit,
    }
}

fn machine_port(p: &ServicePort) -> MachinePort {
    MachinePort {
        port: p.port,
        start_port: p.start_port,
        end_port: p.end_port,
        handlers: p.handlers.clone(),
        force_https: p.force_https,
        tls_options: p.tls_options.clone(),
        http_options: p.http_options.clone(),
        proxy_proto_options: p.proxy_proto_options.clone(),
    }
}

fn service_check(c: &ServiceCheck, kind: &str) -> MachineCheck {
    MachineCheck {
        kind: Some(kind.to_string()),
        port: None,
        interval: c.interval,
        timeout: c.timeout,
        grace_period: c.grace_period,
        method: c.method.clone(),
        path: c.path.clone(),
        protocol: c.protocol.clone(),
        tls_skip_verify: c.tls_skip_verify,
        tls_server_name: c.tls_server_name.clone(),
        headers: c
            .headers
            .iter()
            .map(|(k, v)| CheckHeader {
                name: k.clone(),
                values: vec![v.clone()],
            })
            .collect(),
    }
}

/// Precedence among sources: local_path > secret_name > raw_value.
fn machine_file(f: &FileSpec) -> MachineFile {
    let mut mf = MachineFile {
        guest_path: f.guest_path.clone(),
        ..MachineFile::default()
    };
    if f.local_path.is_some() {
        mf.raw_value = f.local_content_base64.clone();
    } else if let Some(s) = &f.secret_name {
        mf.secret_name = Some(s.clone());
    } else if let Some(v) = &f.raw_value {
        mf.raw_value = Some(crate::base64::encode(v.as_bytes()));
    }
    mf
}
