//! `[http_service]`, `[[services]]` (ports, concurrency, service checks) and top-level
//! `[checks]`, with the legacy forms: concurrency as a `"soft,hard"` string, ports as strings.

use std::collections::BTreeMap;

use aloft_api::AutostopMode;

use super::{Decoder, Undefined};
use crate::diag::Span;
use crate::model::*;
use crate::node::{Kind, Node};
use crate::read::{self, BareUnit, Tbl};

impl Decoder<'_> {
    pub(super) fn concurrency(&mut self, n: &Node, name: &str) -> Option<Concurrency> {
        if let Kind::Str(s) = &n.kind {
            // Legacy "soft,hard" string → requests-based limits.
            let parts: Vec<_> = s.split(',').map(|p| p.trim().parse::<u32>()).collect();
            return match parts.as_slice() {
                [Ok(soft), Ok(hard)] => Some(Concurrency {
                    kind: "requests".into(),
                    soft_limit: Some(*soft),
                    hard_limit: Some(*hard),
                }),
                _ => {
                    self.sink.error(
                        &n.span,
                        format!("cannot read concurrency {s:?} in {name}"),
                        Some("use a table: { type = \"connections\", soft_limit = 20, hard_limit = 25 }".into()),
                    );
                    None
                }
            };
        }
        let tname = format!("{name}.concurrency");
        let mut t = Tbl::new(n, tname, self.sink);
        let kind = self
            .opt_str(&mut t, "type")
            .unwrap_or_else(|| "connections".into());
        if kind != "connections" && kind != "requests" {
            self.sink.error(
                &n.get("type").and_then(|n| n.span.clone()),
                format!("unknown concurrency type {kind:?}"),
                Some("use \"connections\" or \"requests\"".into()),
            );
        }
        let c = Concurrency {
            kind,
            soft_limit: self.opt_u32(&mut t, "soft_limit", 0, u32::MAX as i64),
            hard_limit: self.opt_u32(&mut t, "hard_limit", 0, u32::MAX as i64),
        };
        if let (Some(s), Some(h)) = (c.soft_limit, c.hard_limit) {
            if s > h {
                self.sink.warn(
                    &n.span,
                    format!("{name}: concurrency soft_limit {s} is above hard_limit {h}"),
                    None,
                );
            }
        }
        t.finish(self.sink, &["type", "soft_limit", "hard_limit"]);
        Some(c)
    }

    pub(super) fn autostop(&mut self, t: &mut Tbl) -> Option<AutostopMode> {
        let n = t.get("auto_stop_machines")?;
        match &n.kind {
            Kind::Bool(b) => Some(if *b {
                AutostopMode::Stop
            } else {
                AutostopMode::Off
            }),
            Kind::Str(s) => match s.as_str() {
                "off" | "false" => Some(AutostopMode::Off),
                "stop" | "true" => Some(AutostopMode::Stop),
                "suspend" => Some(AutostopMode::Suspend),
                _ => {
                    self.sink.error(
                        &n.span,
                        format!("unknown auto_stop_machines {s:?}"),
                        Some("use \"off\", \"stop\" or \"suspend\" (or true/false)".into()),
                    );
                    None
                }
            },
            _ => {
                self.sink.error(&n.span, format!("auto_stop_machines must be \"off\", \"stop\", \"suspend\" or a boolean, not {}", n.type_name()), None);
                None
            }
        }
    }

    pub(super) fn http_service(&mut self, n: &Node) -> HttpService {
        let name = "[http_service]";
        let mut t = Tbl::new(n, name, self.sink);
        let mut h = HttpService {
            force_https: self.opt_bool(&mut t, "force_https").unwrap_or(false),
            auto_stop_machines: self.autostop(&mut t),
            auto_start_machines: self.opt_bool(&mut t, "auto_start_machines"),
            min_machines_running: self.opt_u32(&mut t, "min_machines_running", 0, u32::MAX as i64),
            processes: self.procs(&mut t, Undefined::Refused),
            tls_options: self.opt_json(&mut t, "tls_options"),
            http_options: self.opt_json(&mut t, "http_options"),
            ..HttpService::default()
        };
        match t.get("internal_port") {
            Some(p) => {
                h.internal_port =
                    read::port(self.sink, p, "`internal_port` in [http_service]").unwrap_or(0)
            }
            None => self.sink.error(
                &n.span,
                "[http_service] has no `internal_port`",
                Some("set it to the port your app listens on, e.g. `internal_port = 8080`".into()),
            ),
        }
        if let Some(c) = t.get("concurrency") {
            h.concurrency = self.concurrency(c, name);
        }
        if let Some(c) = t.get("checks") {
            for (i, ck) in read::list(c).into_iter().enumerate() {
                let cname = format!("[[http_service.checks]] #{}", i + 1);
                // [quirk] bare integers here are nanoseconds in flyctl.
                if let Some(ck) = self.service_check(ck, &cname, BareUnit::Nanos, true) {
                    h.checks.push(ck);
                }
            }
        }
        t.ignore(&["machine_checks"]);
        t.finish(
            self.sink,
            &[
                "internal_port",
                "force_https",
                "auto_stop_machines",
                "auto_start_machines",
                "min_machines_running",
                "processes",
                "concurrency",
                "tls_options",
                "http_options",
                "checks",
            ],
        );
        h
    }

    /// One `[[services]]` entry; returns the spans of its ports for the port-overlap warning.
    pub(super) fn service(&mut self, n: &Node, i: usize) -> (Service, Vec<Span>) {
        let name = if self.spans.services_was_table {
            "`services` (a table, not [[services]])".to_string()
        } else {
            format!("[[services]] #{}", i + 1)
        };
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let mut s = Service {
            protocol: self
                .opt_str(&mut t, "protocol")
                .unwrap_or_else(|| "tcp".into()),
            auto_stop_machines: self.autostop(&mut t),
            auto_start_machines: self.opt_bool(&mut t, "auto_start_machines"),
            min_machines_running: self.opt_u32(&mut t, "min_machines_running", 0, u32::MAX as i64),
            processes: self.procs(&mut t, Undefined::Refused),
            ..Service::default()
        };
        if s.protocol != "tcp" && s.protocol != "udp" {
            self.sink.error(
                &n.get("protocol").and_then(|p| p.span.clone()),
                format!("unknown protocol {:?} in {name}", s.protocol),
                Some("use \"tcp\" or \"udp\"".into()),
            );
        }
        match t.get("internal_port") {
            Some(p) => {
                s.internal_port =
                    read::port(self.sink, p, &read::field(&name, "internal_port")).unwrap_or(0)
            }
            None => {
                let hint = if self.spans.services_was_table {
                    "this section has no `[[services]]` header, so TOML made `services` a table; \
                     start it with `[[services]]` and `internal_port = <port>`, or move the checks \
                     under `[http_service]`"
                        .to_string()
                } else {
                    "set `internal_port` to the port your app listens on, e.g. `internal_port = 8080`".to_string()
                };
                let span = n.span.clone().or_else(|| {
                    n.entries()
                        .and_then(|e| e.first())
                        .and_then(|e| e.key_span.clone())
                });
                self.sink
                    .error(&span, format!("{name} has no `internal_port`"), Some(hint));
            }
        }
        if let Some(c) = t.get("concurrency") {
            s.concurrency = self.concurrency(c, &name);
        }
        let mut port_spans = vec![];
        if let Some(ports) = t.get("ports") {
            for (j, p) in read::list(ports).into_iter().enumerate() {
                if let Some(port) = self.service_port(p, &format!("{name} port #{}", j + 1)) {
                    s.ports.push(port);
                    port_spans.push(p.span.clone());
                }
            }
        }
        if s.ports.is_empty() {
            self.sink.warn(
                &n.span,
                format!("{name} has no ports, so it is not reachable from outside"),
                Some("add `[[services.ports]]` with `port = 80` (or ignore this for internal-only services)".into()),
            );
        }
        for (key, kind) in [("tcp_checks", false), ("http_checks", true)] {
            if let Some(list) = t.get(key) {
                for (j, ck) in read::list(list).into_iter().enumerate() {
                    let cname = format!("[[services.{key}]] #{} of {name}", j + 1);
                    if let Some(c) = self.service_check(ck, &cname, BareUnit::Millis, kind) {
                        if kind {
                            s.http_checks.push(c)
                        } else {
                            s.tcp_checks.push(c)
                        }
                    }
                }
            }
        }
        t.ignore(&["machine_checks"]);
        t.finish(
            self.sink,
            &[
                "protocol",
                "internal_port",
                "auto_stop_machines",
                "auto_start_machines",
                "min_machines_running",
                "ports",
                "concurrency",
                "tcp_checks",
                "http_checks",
                "processes",
            ],
        );
        (s, port_spans)
    }

    pub(super) fn service_port(&mut self, n: &Node, name: &str) -> Option<ServicePort> {
        const HANDLERS: &[&str] = &["http", "tls", "pg_tls", "proxy_proto", "edge_http"];
        let mut t = Tbl::new(n, name, self.sink);
        let mut p = ServicePort {
            port: t
                .get("port")
                .and_then(|v| read::port(self.sink, v, &format!("`port` in {name}"))),
            start_port: t
                .get("start_port")
                .and_then(|v| read::port(self.sink, v, &format!("`start_port` in {name}"))),
            end_port: t
                .get("end_port")
                .and_then(|v| read::port(self.sink, v, &format!("`end_port` in {name}"))),
            force_https: self.opt_bool(&mut t, "force_https").unwrap_or(false),
            tls_options: self.opt_json(&mut t, "tls_options"),
            http_options: self.opt_json(&mut t, "http_options"),
            proxy_proto_options: self.opt_json(&mut t, "proxy_proto_options"),
            ..ServicePort::default()
        };
        if let Some(h) = t.get("handlers") {
            p.handlers = read::string_list(self.sink, h, &format!("`handlers` in {name}"))
                .unwrap_or_default();
            for handler in &p.handlers {
                if !HANDLERS.contains(&handler.as_str()) {
                    self.sink.warn(
                        &h.span,
                        format!("unknown handler {handler:?} in {name}"),
                        Some(format!("known handlers: {}", HANDLERS.join(", "))),
                    );
                }
            }
        }
        t.finish(
            self.sink,
            &[
                "port",
                "start_port",
                "end_port",
                "handlers",
                "force_https",
                "tls_options",
                "http_options",
                "proxy_proto_options",
            ],
        );
        match (p.port, p.start_port, p.end_port) {
            (None, None, None) => {
                self.sink.error(
                    &n.span,
                    format!("{name} has no `port`"),
                    Some("set `port = 443`, or `start_port`/`end_port` for a range".into()),
                );
                None
            }
            (None, Some(a), Some(b)) if a > b => {
                self.sink.error(
                    &n.span,
                    format!("{name}: start_port {a} is above end_port {b}"),
                    None,
                );
                None
            }
            _ => Some(p),
        }
    }

    /// A service check. Intervals/timeouts outside 1s..1m warn (the platform clamps them).
    pub(super) fn service_check(
        &mut self,
        n: &Node,
        name: &str,
        unit: BareUnit,
        http: bool,
    ) -> Option<ServiceCheck> {
        let mut t = Tbl::new(n, name, self.sink);
        let c = self.check_fields(&mut t, unit);
        let mut known = vec![
            "interval",
            "timeout",
            "grace_period",
            "method",
            "path",
            "protocol",
            "tls_skip_verify",
            "tls_server_name",
            "headers",
        ];
        if !http {
            known.truncate(3);
        }
        // Nomad-era keys that real files still carry.
        t.ignore(&["restart_limit", "type"]);
        t.finish(self.sink, &known);
        let one_s = std::time::Duration::from_secs(1);
        let one_m = std::time::Duration::from_secs(60);
        for (key, d) in [("interval", c.interval), ("timeout", c.timeout)] {
            if let Some(d) = d {
                if d.0 < one_s || d.0 > one_m {
                    self.sink.warn(
                        &n.get(key).and_then(|v| v.span.clone()),
                        format!("{key} {d} of {name} is outside 1s..1m; the platform clamps it"),
                        None,
                    );
                }
            }
        }
        if let Some(g) = c.grace_period {
            if !g.0.is_zero() && g.0 < one_s {
                self.sink.warn(
                    &n.get("grace_period").and_then(|v| v.span.clone()),
                    format!("grace_period {g} of {name} is below 1s; the platform raises it"),
                    None,
                );
            }
        }
        Some(c)
    }

    pub(super) fn check_fields(&mut self, t: &mut Tbl, unit: BareUnit) -> ServiceCheck {
        let mut c = ServiceCheck {
            interval: self.opt_dur(t, "interval", unit),
            timeout: self.opt_dur(t, "timeout", unit),
            grace_period: self.opt_dur(t, "grace_period", unit),
            method: self.opt_str(t, "method").map(|m| m.to_ascii_uppercase()),
            path: self.opt_str(t, "path"),
            protocol: self.opt_str(t, "protocol"),
            tls_skip_verify: self.opt_bool(t, "tls_skip_verify"),
            tls_server_name: self.opt_str(t, "tls_server_name"),
            ..ServiceCheck::default()
        };
        if let Some(h) = t.get("headers") {
            let name = format!("headers of {}", t.name);
            c.headers = match &h.kind {
                Kind::Array(items) => self.header_list(items, &name),
                _ => self.string_map(h, &name),
            };
        }
        c
    }

    /// Check headers in flyctl's other form: a list of `{ name = "..", value = ".." }` tables
    /// (a missing value is empty).
    fn header_list(&mut self, items: &[Node], name: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let what = format!("header #{} in {name}", i + 1);
            let mut t = Tbl::new(item, what.clone(), self.sink);
            let key = t.get("name");
            let value = t.get("value");
            t.finish(self.sink, &["name", "value"]);
            let Some(key) = key else {
                if item.is_table() {
                    self.sink.error(
                        &item.span,
                        format!("{what} has no `name`"),
                        Some("write headers as a table: `headers = { X-Check = \"yes\" }`".into()),
                    );
                }
                continue;
            };
            let key = read::string(self.sink, key, &format!("`name` of {what}"), true);
            let value = match value {
                Some(v) => read::string(self.sink, v, &format!("`value` of {what}"), true),
                None => Some(String::new()),
            };
            if let (Some(k), Some(v)) = (key, value) {
                out.insert(k, v);
            }
        }
        out
    }

    /// `[checks]`: a table of named checks, or an array of tables each with a `name`.
    pub(super) fn top_checks(&mut self, n: &Node) -> BTreeMap<String, TopCheck> {
        let mut named: Vec<(String, Span, &Node)> = vec![];
        match &n.kind {
            Kind::Table(entries) => {
                for e in entries {
                    named.push((
                        e.key.clone(),
                        e.key_span.clone().or(e.value.span.clone()),
                        &e.value,
                    ));
                }
            }
            Kind::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item.get("name") {
                        Some(Node {
                            kind: Kind::Str(s), ..
                        }) => named.push((s.clone(), item.span.clone(), item)),
                        _ => self.sink.error(
                            &item.span,
                            format!("[[checks]] #{} has no `name`", i + 1),
                            Some("prefer named checks: `[checks.<name>]`".into()),
                        ),
                    }
                }
            }
            _ => {
                self.sink.error(
                    &n.span,
                    format!(
                        "`checks` must be a table of named checks, not {}",
                        n.type_name()
                    ),
                    None,
                );
            }
        }
        let mut out = BTreeMap::new();
        for (name, span, node) in named {
            let tname = format!("[checks.{name}]");
            let mut t = Tbl::new(node, tname.clone(), self.sink);
            t.ignore(&["name"]);
            let kind = self.opt_str(&mut t, "type").unwrap_or_default();
            match kind.as_str() {
                "http" | "tcp" => {}
                "" => self.sink.error(
                    &span,
                    format!("{tname} has no `type`"),
                    Some("set `type = \"http\"` or `type = \"tcp\"`".into()),
                ),
                other => self.sink.error(
                    &node.get("type").and_then(|v| v.span.clone()),
                    format!("unknown check type {other:?} in {tname}"),
                    Some("use \"http\" or \"tcp\"".into()),
                ),
            }
            let port = t
                .get("port")
                .and_then(|p| read::port(self.sink, p, &format!("`port` in {tname}")));
            // [quirk] bare integers are milliseconds for top-level checks.
            let check = self.check_fields(&mut t, BareUnit::Millis);
            if let Some(i) = check.interval {
                if i.0 < std::time::Duration::from_secs(2) {
                    self.sink.error(
                        &node.get("interval").and_then(|v| v.span.clone()),
                        format!("interval {i} of {tname} is below the minimum of 2s"),
                        Some("use `interval = \"2s\"` or more".into()),
                    );
                }
            }
            if let Some(to) = check.timeout {
                if to.0 > std::time::Duration::from_secs(60) {
                    self.sink.error(
                        &node.get("timeout").and_then(|v| v.span.clone()),
                        format!("timeout {to} of {tname} is above the maximum of 60s"),
                        Some("use `timeout = \"60s\"` or less".into()),
                    );
                }
            }
            let processes = self.procs(&mut t, Undefined::Ignored);
            t.finish(
                self.sink,
                &[
                    "type",
                    "port",
                    "interval",
                    "timeout",
                    "grace_period",
                    "method",
                    "path",
                    "protocol",
                    "tls_skip_verify",
                    "tls_server_name",
                    "headers",
                    "processes",
                ],
            );
            self.spans.checks.insert(name.clone(), span);
            out.insert(
                name,
                TopCheck {
                    kind,
                    port,
                    check,
                    processes,
                },
            );
        }
        out
    }
}
