//! `[[mounts]]`, `[[vm]]` (and `release_command_vm`), `[[restart]]`, `[[files]]`,
//! `[[metrics]]` and `[[statics]]`: list sections whose entries are read one by one.

use aloft_api::VmPreset;

use super::{Decoder, Undefined};
use crate::model::*;
use crate::node::{Kind, Node};
use crate::read::{self, Tbl};

impl Decoder<'_> {
    pub(super) fn mount(&mut self, n: &Node, i: usize) -> Mount {
        let name = format!("[[mounts]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let mut m = Mount {
            source: self.opt_str(&mut t, "source").unwrap_or_default(),
            destination: self.opt_str(&mut t, "destination").unwrap_or_default(),
            initial_size: t
                .get("initial_size")
                .and_then(|v| read::volume_gb(self.sink, v, &format!("`initial_size` in {name}"))),
            snapshot_retention: self.opt_u32(&mut t, "snapshot_retention", 1, 60),
            scheduled_snapshots: self.opt_bool(&mut t, "scheduled_snapshots"),
            auto_extend_size_threshold: self.opt_u32(&mut t, "auto_extend_size_threshold", 50, 99),
            auto_extend_size_increment: t
                .get("auto_extend_size_increment")
                .and_then(|v| {
                    read::volume_gb(
                        self.sink,
                        v,
                        &format!("`auto_extend_size_increment` in {name}"),
                    )
                })
                .and_then(|v| self.range_gb(v, n, "auto_extend_size_increment", 1, 100)),
            auto_extend_size_limit: t
                .get("auto_extend_size_limit")
                .and_then(|v| match &v.kind {
                    Kind::Int(0) => Some(0),
                    Kind::Str(s) if s.trim() == "0" => Some(0),
                    _ => read::volume_gb(
                        self.sink,
                        v,
                        &format!("`auto_extend_size_limit` in {name}"),
                    ),
                })
                .and_then(|v| self.range_gb(v, n, "auto_extend_size_limit", 0, 500)),
            processes: self.procs(&mut t, Undefined::Ignored),
        };
        for key in ["source", "destination"] {
            if !t.has(key) {
                self.sink.error(
                    &n.span,
                    format!("{name} has no `{key}`"),
                    Some(match key {
                        "source" => "set `source` to the volume name, e.g. `source = \"data\"`".into(),
                        _ => "set `destination` to the path inside the machine, e.g. `destination = \"/data\"`".into(),
                    }),
                );
            }
        }
        if !m.destination.is_empty() && !m.destination.starts_with('/') {
            self.sink.error(
                &n.get("destination").and_then(|v| v.span.clone()),
                format!("`destination` in {name} must be an absolute path"),
                Some(format!("try \"/{}\"", m.destination)),
            );
        }
        let any_extend = m.auto_extend_size_threshold.is_some()
            || m.auto_extend_size_increment.is_some()
            || m.auto_extend_size_limit.is_some();
        if any_extend
            && (m.auto_extend_size_threshold.is_none() || m.auto_extend_size_increment.is_none())
        {
            self.sink.error(
                &n.span,
                format!("{name}: auto-extend needs both `auto_extend_size_threshold` (50..99) and `auto_extend_size_increment` (1..100 GB)"),
                None,
            );
            m.auto_extend_size_threshold = None;
        }
        t.finish(
            self.sink,
            &[
                "source",
                "destination",
                "initial_size",
                "snapshot_retention",
                "scheduled_snapshots",
                "auto_extend_size_threshold",
                "auto_extend_size_increment",
                "auto_extend_size_limit",
                "processes",
            ],
        );
        m
    }

    pub(super) fn range_gb(
        &mut self,
        v: u64,
        n: &Node,
        key: &str,
        min: u64,
        max: u64,
    ) -> Option<u32> {
        if v < min || v > max {
            self.sink.error(
                &n.get(key).and_then(|v| v.span.clone()),
                format!("`{key}` must be between {min} and {max} GB"),
                None,
            );
            return None;
        }
        Some(v as u32)
    }

    /// A `[[vm]]` entry (or `release_command_vm`); checks the size name and the guest it yields.
    pub(super) fn compute(
        &mut self,
        n: &Node,
        name: &str,
        with_processes: bool,
        top_host: Option<&str>,
    ) -> Option<Compute> {
        let mut t = Tbl::new(n, name, self.sink);
        // As in flyctl, which overlays only the fields that are set: an empty string or a zero
        // count is "unset", not a value to refuse.
        let mut c = Compute {
            size: self.opt_set_str(&mut t, "size"),
            memory: t
                .get("memory")
                .filter(|v| !matches!(&v.kind, Kind::Str(s) if s.trim().is_empty()))
                .and_then(|v| read::memory_mb(self.sink, v, &format!("`memory` in {name}"))),
            cpu_kind: self.opt_set_str(&mut t, "cpu_kind"),
            cpus: self
                .opt_u32(&mut t, "cpus", 0, 1024)
                .filter(|&n: &u32| n > 0),
            memory_mb: t
                .get("memory_mb")
                .and_then(|v| read::memory_mb(self.sink, v, &format!("`memory_mb` in {name}")))
                .filter(|&m| m > 0),
            max_memory_mb: self.opt_u32(&mut t, "max_memory_mb", 0, u32::MAX as i64),
            gpus: self.opt_u32(&mut t, "gpus", 0, 64),
            gpu_kind: self.opt_set_str(&mut t, "gpu_kind"),
            host_dedication_id: self.opt_set_str(&mut t, "host_dedication_id"),
            kernel_args: t
                .get("kernel_args")
                .and_then(|v| read::string_list(self.sink, v, &format!("`kernel_args` in {name}")))
                .unwrap_or_default(),
            persist_rootfs: self.opt_set_str(&mut t, "persist_rootfs"),
            processes: if with_processes {
                self.procs(&mut t, Undefined::Ignored)
            } else {
                vec![]
            },
        };
        let mut ok = true;
        if let Some(size) = &c.size {
            if VmPreset::by_name(size).is_none() {
                self.sink.error(
                    &n.get("size").and_then(|v| v.span.clone()),
                    format!("unknown VM size {size:?} in {name}"),
                    Some(format!(
                        "valid sizes: {}",
                        VmPreset::suggestions_for(size).join(", ")
                    )),
                );
                ok = false;
            }
        }
        if c.memory == Some(0) {
            self.sink.error(
                &n.get("memory").and_then(|v| v.span.clone()),
                format!("`memory` in {name} cannot be zero"),
                None,
            );
            c.memory = None;
            ok = false;
        }
        if let Some(k) = &c.cpu_kind {
            if k != "shared" && k != "performance" {
                self.sink.error(
                    &n.get("cpu_kind").and_then(|v| v.span.clone()),
                    format!("unknown cpu_kind {k:?} in {name}"),
                    Some("use \"shared\" or \"performance\"".into()),
                );
                ok = false;
            }
        }
        if let Some(p) = &c.persist_rootfs {
            if !["never", "restart", "always"].contains(&p.as_str()) {
                self.sink.error(
                    &n.get("persist_rootfs").and_then(|v| v.span.clone()),
                    format!("unknown persist_rootfs {p:?} in {name}"),
                    Some("use \"never\", \"restart\" or \"always\"".into()),
                );
            }
        }
        if c.memory.is_some() && c.memory_mb.is_some() && c.memory != c.memory_mb {
            self.sink.warn(
                &n.get("memory_mb").and_then(|v| v.span.clone()),
                format!("{name} sets both `memory` and `memory_mb`; `memory_mb` wins"),
                Some("keep only one of them".into()),
            );
        }
        t.finish(
            self.sink,
            &[
                "size",
                "memory",
                "cpu_kind",
                "cpus",
                "memory_mb",
                "max_memory_mb",
                "gpus",
                "gpu_kind",
                "host_dedication_id",
                "kernel_args",
                "persist_rootfs",
                "processes",
            ],
        );
        if ok {
            if let Ok(g) = crate::flatten::compute_guest(&c, top_host) {
                if g.gpu_kind.is_none() {
                    if let Err(e) = g.validate() {
                        self.sink.error(
                            &n.span,
                            format!("{name} describes a VM the platform cannot run: {e}"),
                            Some(format!(
                                "it resolves to {} CPU(s) ({}) with {} MB; see `aloft platform vm-sizes`",
                                g.cpus, g.cpu_kind, g.memory_mb
                            )),
                        );
                    }
                }
            }
        }
        Some(c)
    }

    pub(super) fn restart(&mut self, n: &Node, i: usize) -> Option<Restart> {
        let name = format!("[[restart]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let policy = self.opt_str(&mut t, "policy").unwrap_or_default();
        let retries = self.opt_u32(&mut t, "retries", 0, u32::MAX as i64);
        let processes = self.procs(&mut t, Undefined::Refused);
        t.finish(self.sink, &["policy", "retries", "processes"]);
        if !RESTART_POLICIES.contains(&policy.as_str()) {
            let span = n
                .get("policy")
                .and_then(|v| v.span.clone())
                .or(n.span.clone());
            let msg = if policy.is_empty() {
                format!("{name} has no `policy`")
            } else {
                format!("unknown restart policy {policy:?} in {name}")
            };
            self.sink.error(
                &span,
                msg,
                Some(format!("use one of {}", RESTART_POLICIES.join(", "))),
            );
            return None;
        }
        Some(Restart {
            policy,
            retries,
            processes,
        })
    }

    pub(super) fn file(&mut self, n: &Node, i: usize) -> Option<FileSpec> {
        let name = format!("[[files]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let f = FileSpec {
            guest_path: self.opt_str(&mut t, "guest_path").unwrap_or_default(),
            local_path: self.opt_str(&mut t, "local_path"),
            secret_name: self.opt_str(&mut t, "secret_name"),
            raw_value: self.opt_str(&mut t, "raw_value"),
            local_content_base64: self.opt_str(&mut t, "local_content_base64"),
            processes: self.procs(&mut t, Undefined::Ignored),
        };
        t.finish(
            self.sink,
            &[
                "guest_path",
                "local_path",
                "secret_name",
                "raw_value",
                "processes",
            ],
        );
        if !f.guest_path.starts_with('/') {
            self.sink.error(
                &n.get("guest_path")
                    .and_then(|v| v.span.clone())
                    .or(n.span.clone()),
                format!("{name} needs an absolute `guest_path`"),
                Some("e.g. `guest_path = \"/etc/app/config.yml\"`".into()),
            );
            return None;
        }
        let sources = [
            f.local_path.is_some(),
            f.secret_name.is_some(),
            f.raw_value.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources == 0 {
            self.sink.error(
                &n.span,
                format!("{name} has no content"),
                Some("set one of `local_path`, `secret_name` or `raw_value`".into()),
            );
            return None;
        }
        if sources > 1 {
            self.sink.warn(
                &n.span,
                format!("{name} sets several sources; local_path wins over secret_name, which wins over raw_value"),
                None,
            );
        }
        Some(f)
    }

    pub(super) fn metrics(&mut self, n: &Node, i: usize) -> Option<Metrics> {
        let name = format!("[[metrics]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let port = t
            .get("port")
            .and_then(|v| read::port(self.sink, v, &format!("`port` in {name}")));
        let m = Metrics {
            port: port.unwrap_or(0),
            path: self
                .opt_str(&mut t, "path")
                .unwrap_or_else(|| "/metrics".into()),
            https: self.opt_bool(&mut t, "https").unwrap_or(false),
            processes: self.procs(&mut t, Undefined::Ignored),
        };
        t.finish(self.sink, &["port", "path", "https", "processes"]);
        if port.is_none() {
            if n.get("port").is_none() {
                self.sink.error(
                    &n.span,
                    format!("{name} has no `port`"),
                    Some("e.g. `port = 9091`".into()),
                );
            }
            return None;
        }
        Some(m)
    }

    pub(super) fn statics(&mut self, n: &Node, i: usize) -> Option<StaticSpec> {
        let name = format!("[[statics]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let s = StaticSpec {
            guest_path: self.opt_str(&mut t, "guest_path").unwrap_or_default(),
            url_prefix: self.opt_str(&mut t, "url_prefix").unwrap_or_default(),
            tigris_bucket: self.opt_str(&mut t, "tigris_bucket"),
            index_document: self.opt_str(&mut t, "index_document"),
        };
        t.finish(
            self.sink,
            &[
                "guest_path",
                "url_prefix",
                "tigris_bucket",
                "index_document",
            ],
        );
        for (key, v) in [("guest_path", &s.guest_path), ("url_prefix", &s.url_prefix)] {
            if v.is_empty() {
                self.sink
                    .error(&n.span, format!("{name} has no `{key}`"), None);
                return None;
            }
        }
        Some(s)
    }
}
