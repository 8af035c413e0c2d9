//! Raw document → typed [`AppConfig`], folding the legacy and alias forms of flyctl-behaviour
//! §1.1 as it goes (env as array, processes as array, `[vm]`/`[[compute]]`, `[mount]`, services
//! concurrency strings, string ports, `experimental.kill_timeout`/`metrics_*` hoisting) and
//! reporting every field-level problem with its span. Rules that span sections (group
//! references, one mount per group, ...) live in `validate`, fed by the [`Spans`] recorded here.

use std::collections::BTreeMap;

use aloft_api::{AutostopMode, VmPreset};

use crate::diag::{Sink, Span};
use crate::model::*;
use crate::node::{Kind, Node};
use crate::read::{self, BareUnit, Tbl};

/// Where things are, for the cross-section checks of `validate`.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    /// Span of each group name in `[processes]`.
    pub groups: BTreeMap<String, Span>,
    /// Every `processes = [..]` entry in every section.
    pub refs: Vec<GroupRef>,
    pub http_service: Span,
    /// Header span of each `[[services]]` entry, parallel to `AppConfig::services`.
    pub services: Vec<Span>,
    /// Span of each port entry, per service (http_service not included).
    pub service_ports: Vec<Vec<Span>>,
    pub mounts: Vec<Span>,
    pub checks: BTreeMap<String, Span>,
    pub deploy_strategy: Span,
    /// Whether `services` was written as a table (`[services.x]` without `[[services]]`).
    pub services_was_table: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct GroupRef {
    pub section: String,
    pub name: String,
    pub span: Span,
}

const TOP_KEYS: &[&str] = &[
    "app",
    "primary_region",
    "kill_signal",
    "kill_timeout",
    "swap_size_mb",
    "console_command",
    "host_dedication_id",
    "experimental",
    "build",
    "deploy",
    "env",
    "processes",
    "mounts",
    "http_service",
    "services",
    "checks",
    "files",
    "vm",
    "restart",
    "metrics",
    "statics",
];

pub(crate) fn decode(root: &Node, sink: &mut Sink) -> (AppConfig, Spans) {
    let mut d = Decoder {
        sink,
        spans: Spans::default(),
    };
    let cfg = d.root(root);
    (cfg, d.spans)
}

struct Decoder<'s> {
    sink: &'s mut Sink,
    spans: Spans,
}

impl Decoder<'_> {
    fn root(&mut self, root: &Node) -> AppConfig {
        let mut t = Tbl::new(root, "the top level", self.sink);
        let mut c = AppConfig::default();
        if let Some(n) = t.get("app") {
            c.app = read::string(self.sink, n, "`app`", false).unwrap_or_default();
        }
        c.primary_region = self.opt_str(&mut t, "primary_region");
        c.kill_signal = self.opt_str(&mut t, "kill_signal");
        if let (Some(sig), Some(n)) = (&c.kill_signal, root.get("kill_signal")) {
            self.check_signal(sig, n);
        }
        c.kill_timeout = t
            .get("kill_timeout")
            .and_then(|n| read::duration(self.sink, n, "`kill_timeout`", BareUnit::Seconds));
        c.swap_size_mb = t
            .get("swap_size_mb")
            .and_then(|n| read::int_in(self.sink, n, "`swap_size_mb`", 0, u32::MAX as i64));
        c.console_command = self.opt_str(&mut t, "console_command");
        if let (Some(cmd), Some(n)) = (&c.console_command, root.get("console_command")) {
            self.check_split(cmd, n, "`console_command`");
        }
        c.host_dedication_id = self.opt_str(&mut t, "host_dedication_id");

        if let Some(n) = t.get("processes") {
            c.processes = self.processes(n);
        }
        if let Some(n) = t.get("env") {
            c.env = self.env(n);
        }
        if let Some(n) = t.get("build") {
            c.build = Some(self.build(n));
        }
        if let Some(n) = t.get("deploy") {
            c.deploy = Some(self.deploy(n));
        }
        if let Some(n) = t.get("http_service") {
            self.spans.http_service = n.span.clone();
            c.http_service = Some(self.http_service(n));
        }
        if let Some(n) = t.get("services") {
            self.spans.services_was_table = n.is_table();
            for (i, s) in read::list(n).into_iter().enumerate() {
                if s.entries().is_some_and(|e| e.is_empty()) {
                    continue; // flyctl drops empty service tables
                }
                let (svc, ports) = self.service(s, i);
                c.services.push(svc);
                self.spans.services.push(s.span.clone());
                self.spans.service_ports.push(ports);
            }
        }
        if let Some(n) = t.get("checks") {
            c.checks = self.top_checks(n);
        }
        for key in ["mounts", "mount"] {
            if let Some(n) = t.get(key) {
                for m in read::list(n) {
                    let i = c.mounts.len();
                    c.mounts.push(self.mount(m, i));
                    self.spans.mounts.push(m.span.clone());
                }
            }
        }
        for key in ["vm", "compute", "computes"] {
            if let Some(n) = t.get(key) {
                for (i, v) in read::list(n).into_iter().enumerate() {
                    let name = format!("[[{key}]] #{}", i + 1);
                    if let Some(vm) = self.compute(v, &name, true, c.host_dedication_id.as_deref())
                    {
                        c.vm.push(vm);
                    }
                }
            }
        }
        if let Some(n) = t.get("restart") {
            for (i, r) in read::list(n).into_iter().enumerate() {
                if let Some(r) = self.restart(r, i) {
                    c.restart.push(r);
                }
            }
        }
        if let Some(n) = t.get("files") {
            for (i, f) in read::list(n).into_iter().enumerate() {
                if let Some(f) = self.file(f, i) {
                    c.files.push(f);
                }
            }
        }
        for key in ["metrics", "metric"] {
            if let Some(n) = t.get(key) {
                for (i, m) in read::list(n).into_iter().enumerate() {
                    if let Some(m) = self.metrics(m, i) {
                        c.metrics.push(m);
                    }
                }
            }
        }
        if let Some(n) = t.get("statics") {
            for (i, s) in read::list(n).into_iter().enumerate() {
                if let Some(s) = self.statics(s, i) {
                    c.statics.push(s);
                }
            }
        }
        if let Some(n) = t.get("experimental") {
            c.experimental = Some(self.experimental(n, &mut c.kill_timeout, &mut c.metrics));
        }
        // Multi-container and test-machine features: accepted, not used by Aloft yet.
        for key in [
            "machine_config",
            "container",
            "containers",
            "machine_checks",
        ] {
            if let Some(n) = t.get(key) {
                self.sink.warn(
                    &n.span,
                    format!("`{key}` is accepted but not supported by Aloft yet (ignored)"),
                    None,
                );
            }
        }
        let unknown: Vec<_> = t
            .unused()
            .map(|e| (e.key.clone(), e.key_span.clone()))
            .collect();
        for (key, span) in unknown {
            let hint = read::suggest(&key, TOP_KEYS)
                .map(|k| format!("did you mean `{k}`?"))
                .or_else(|| Some("Aloft (like flyctl) ignores sections it does not know".into()));
            self.sink.warn(
                &span,
                format!("unknown top-level key `{key}` (ignored)"),
                hint,
            );
        }
        c
    }

    // ---- helpers -----------------------------------------------------------------------------

    fn opt_str(&mut self, t: &mut Tbl, key: &str) -> Option<String> {
        let what = read::field(&t.name, key);
        t.get(key)
            .and_then(|n| read::string(self.sink, n, &what, true))
    }

    fn opt_bool(&mut self, t: &mut Tbl, key: &str) -> Option<bool> {
        let what = read::field(&t.name, key);
        t.get(key).and_then(|n| read::boolean(self.sink, n, &what))
    }

    fn opt_u32(&mut self, t: &mut Tbl, key: &str, min: i64, max: i64) -> Option<u32> {
        let what = read::field(&t.name, key);
        t.get(key)
            .and_then(|n| read::int_in(self.sink, n, &what, min, max))
    }

    fn opt_dur(&mut self, t: &mut Tbl, key: &str, unit: BareUnit) -> Option<aloft_api::GoDuration> {
        let what = read::field(&t.name, key);
        t.get(key)
            .and_then(|n| read::duration(self.sink, n, &what, unit))
    }

    fn opt_json(&mut self, t: &mut Tbl, key: &str) -> Option<serde_json::Value> {
        t.get(key).map(to_json)
    }

    /// Reads `processes = [..]` of a section and records each name for the reference check.
    fn procs(&mut self, t: &mut Tbl) -> Vec<String> {
        let Some(n) = t.get("processes") else {
            return vec![];
        };
        let what = read::field(&t.name, "processes");
        let items: Vec<&Node> = match &n.kind {
            Kind::Array(items) => items.iter().collect(),
            Kind::Str(_) => vec![n],
            _ => {
                self.sink.error(
                    &n.span,
                    format!(
                        "{what} must be a list of group names, not {}",
                        n.type_name()
                    ),
                    None,
                );
                return vec![];
            }
        };
        let mut out = vec![];
        for item in items {
            if let Some(name) = read::string(self.sink, item, &what, false) {
                self.spans.refs.push(GroupRef {
                    section: t.name.clone(),
                    name: name.clone(),
                    span: item.span.clone(),
                });
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    fn check_split(&mut self, cmd: &str, n: &Node, what: &str) {
        if shlex::split(cmd).is_none() {
            self.sink.error(
                &n.span,
                format!("{what} cannot be split into words: {cmd:?}"),
                Some("check for an unclosed quote or a trailing backslash".into()),
            );
        }
    }

    fn check_signal(&mut self, sig: &str, n: &Node) {
        const SIGNALS: &[&str] = &[
            "SIGABRT", "SIGALRM", "SIGFPE", "SIGHUP", "SIGILL", "SIGINT", "SIGKILL", "SIGPIPE",
            "SIGQUIT", "SIGSEGV", "SIGTERM", "SIGTRAP", "SIGUSR1", "SIGUSR2",
        ];
        let upper = sig.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        if !SIGNALS.contains(&full.as_str()) {
            self.sink.error(
                &n.span,
                format!("unknown kill_signal {sig:?}"),
                Some(format!("use one of {}", SIGNALS.join(", "))),
            );
        }
    }

    // ---- sections ----------------------------------------------------------------------------

    /// `[processes]` as a table, or the legacy array of `{name, command}` tables.
    fn processes(&mut self, n: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &n.kind {
            Kind::Table(entries) => {
                for e in entries {
                    let span = e.key_span.clone().or(e.value.span.clone());
                    let what = format!("the command of process group `{}`", e.key);
                    let cmd = match &e.value.kind {
                        Kind::Str(s) => s.clone(),
                        Kind::Array(_) => {
                            self.sink.error(
                                &e.value.span,
                                format!("{what} must be one string, not a list"),
                                Some("write it as a shell-style string, e.g. web = \"bin/server --port 8080\"".into()),
                            );
                            continue;
                        }
                        _ => match read::string(self.sink, &e.value, &what, false) {
                            Some(s) => s,
                            None => continue,
                        },
                    };
                    self.check_split(&cmd, &e.value, &what);
                    self.spans.groups.insert(e.key.clone(), span);
                    out.insert(e.key.clone(), cmd);
                }
            }
            Kind::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    // An empty entry is what Fly's old GetConfig API returned for "no processes".
                    if item.entries().is_some_and(|e| e.is_empty()) {
                        continue;
                    }
                    let mut t = Tbl::new(item, format!("[[processes]] #{}", i + 1), self.sink);
                    let name = t
                        .get("name")
                        .and_then(|v| read::string(self.sink, v, "`name` in [[processes]]", false));
                    let cmd_node = t.get("command");
                    let cmd = cmd_node
                        .and_then(|v| {
                            read::string(self.sink, v, "`command` in [[processes]]", false)
                        })
                        .unwrap_or_default();
                    let extra: Vec<_> = t
                        .unused()
                        .map(|e| (e.key.clone(), e.key_span.clone()))
                        .collect();
                    for (key, span) in extra {
                        // A key here is silently dropped by Fly: the user meant something else.
                        let hint = match key.as_str() {
                            "cmd" | "commands" | "run" => "did you mean `command`?".to_string(),
                            "entrypoint" | "exec" => format!(
                                "`{key}` cannot be set per group; use `[experimental] {key} = [..]` (all groups) \
                                 or put it in the group's command"
                            ),
                            _ => "legacy [[processes]] entries take only `name` and `command`; prefer \
                                  `[processes]` with `<group> = \"<command>\"`"
                                .to_string(),
                        };
                        self.sink.error(
                            &span,
                            format!("[[processes]] #{} has key `{key}`, which process groups do not take", i + 1),
                            Some(hint),
                        );
                    }
                    match name {
                        Some(name) => {
                            if let Some(c) = cmd_node {
                                self.check_split(&cmd, c, "`command` in [[processes]]");
                            }
                            self.spans.groups.insert(name.clone(), item.span.clone());
                            out.insert(name, cmd);
                        }
                        None if !t.has("name") => self.sink.error(
                            &item.span,
                            format!("[[processes]] #{} has no `name`", i + 1),
                            Some("prefer `[processes]` with `<group> = \"<command>\"`".into()),
                        ),
                        None => {}
                    }
                }
            }
            _ => self.sink.error(
                &n.span,
                format!(
                    "`processes` must be a table of group = command, not {}",
                    n.type_name()
                ),
                Some(
                    "write `[processes]` then one `<group> = \"<command>\"` line per group".into(),
                ),
            ),
        }
        out
    }

    /// `[env]` as a table, or an array of tables merged in order (later wins). Values are
    /// stringified (`PORT = 8080` → `"8080"`).
    fn env(&mut self, n: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for table in read::list(n) {
            let Some(entries) = table.entries() else {
                self.sink.error(
                    &table.span,
                    format!("`env` must be a table, not {}", table.type_name()),
                    None,
                );
                continue;
            };
            for e in entries {
                let what = format!("env var `{}`", e.key);
                if let Some(v) = read::string(self.sink, &e.value, &what, true) {
                    out.insert(e.key.clone(), v);
                }
            }
        }
        out
    }

    fn build(&mut self, n: &Node) -> Build {
        let mut t = Tbl::new(n, "[build]", self.sink);
        let mut b = Build {
            builder: self.opt_str(&mut t, "builder"),
            image: self.opt_str(&mut t, "image"),
            builtin: self.opt_str(&mut t, "builtin"),
            dockerfile: self.opt_str(&mut t, "dockerfile"),
            ignorefile: self.opt_str(&mut t, "ignorefile"),
            ..Build::default()
        };
        if let Some(n) = t.get_any(&["build-target", "build_target"]) {
            b.build_target = read::string(self.sink, n, "`build-target` in [build]", false);
        }
        if let Some(n) = t.get("args") {
            b.args = self.string_map(n, "[build.args]");
        }
        if let Some(n) = t.get("buildpacks") {
            b.buildpacks =
                read::string_list(self.sink, n, "`buildpacks` in [build]").unwrap_or_default();
        }
        if let Some(n) = t.get("settings") {
            if let Some(serde_json::Value::Object(m)) = Some(to_json(n)) {
                b.settings = m.into_iter().collect();
            }
        }
        if let Some(n) = t.get("compose") {
            let mut ct = Tbl::new(n, "[build.compose]", self.sink);
            b.compose_file = self.opt_str(&mut ct, "file");
            ct.finish(self.sink, &["file"]);
        }
        b.compression = self.opt_str(&mut t, "compression");
        if let (Some(c), Some(cn)) = (&b.compression, n.get("compression")) {
            if c != "gzip" && c != "zstd" {
                self.sink.error(
                    &cn.span,
                    format!("unknown compression {c:?} in [build]"),
                    Some("use \"gzip\" or \"zstd\"".into()),
                );
            }
        }
        if let Some(n) = t.get("compression_level") {
            b.compression_level = read::int(self.sink, n, "`compression_level` in [build]");
        }
        let strategies: Vec<&str> = [
            ("image", b.image.is_some()),
            ("dockerfile", b.dockerfile.is_some()),
            ("builder", b.builder.is_some() || !b.buildpacks.is_empty()),
            ("builtin", b.builtin.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect();
        if strategies.len() > 1 {
            self.sink.warn(
                &n.span,
                format!(
                    "[build] sets more than one build strategy: {}",
                    strategies.join(", ")
                ),
                Some("keep one of image, dockerfile, builder/buildpacks, builtin".into()),
            );
        }
        t.finish(
            self.sink,
            &[
                "builder",
                "args",
                "buildpacks",
                "image",
                "settings",
                "builtin",
                "dockerfile",
                "ignorefile",
                "build-target",
                "compose",
                "compression",
                "compression_level",
            ],
        );
        b
    }

    fn string_map(&mut self, n: &Node, name: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(entries) = n.entries() else {
            self.sink.error(
                &n.span,
                format!("{name} must be a table, not {}", n.type_name()),
                None,
            );
            return out;
        };
        for e in entries {
            if let Some(v) =
                read::string(self.sink, &e.value, &format!("`{}` in {name}", e.key), true)
            {
                out.insert(e.key.clone(), v);
            }
        }
        out
    }

    fn deploy(&mut self, n: &Node) -> Deploy {
        let mut t = Tbl::new(n, "[deploy]", self.sink);
        let mut d = Deploy {
            strategy: self.opt_str(&mut t, "strategy"),
            ..Deploy::default()
        };
        if let (Some(s), Some(sn)) = (&d.strategy, n.get("strategy")) {
            self.spans.deploy_strategy = sn.span.clone();
            if !STRATEGIES.contains(&s.as_str()) {
                self.sink.error(
                    &sn.span,
                    format!("unknown deploy strategy {s:?}"),
                    Some(format!("use one of {}", STRATEGIES.join(", "))),
                );
            }
        }
        if let Some(mn) = t.get("max_unavailable") {
            if let Some(v) = read::float(self.sink, mn, "`max_unavailable` in [deploy]") {
                if v < 0.0 {
                    self.sink.error(
                        &mn.span,
                        "`max_unavailable` must be greater than 0",
                        Some("use a fraction such as 0.33 or a count such as 2".into()),
                    );
                } else if v == 0.0 {
                    // Real files carry `0.0`; Fly treats it as unset.
                    self.sink.warn(
                        &mn.span,
                        "`max_unavailable = 0` is treated as unset (the default 0.33 applies)",
                        Some("use a fraction such as 0.33 or a count such as 2".into()),
                    );
                } else {
                    d.max_unavailable = Some(v);
                    // Fixes flyctl's quirk: only warn when a strategy that ignores it is chosen.
                    if matches!(d.strategy.as_deref(), Some("immediate" | "bluegreen")) {
                        self.sink.warn(
                            &mn.span,
                            "`max_unavailable` only applies to the rolling and canary strategies",
                            None,
                        );
                    }
                }
            }
        }
        d.wait_timeout = self.opt_dur(&mut t, "wait_timeout", BareUnit::Nanos);
        d.release_command = self.opt_str(&mut t, "release_command");
        if let (Some(c), Some(cn)) = (&d.release_command, n.get("release_command")) {
            self.check_split(c, cn, "`release_command`");
        }
        d.release_command_timeout =
            self.opt_dur(&mut t, "release_command_timeout", BareUnit::Nanos);
        if let Some(vn) = t.get("release_command_vm") {
            d.release_command_vm = self.compute(vn, "[deploy.release_command_vm]", false, None);
        }
        d.seed_command = self.opt_str(&mut t, "seed_command");
        t.finish(
            self.sink,
            &[
                "strategy",
                "max_unavailable",
                "wait_timeout",
                "release_command",
                "release_command_timeout",
                "release_command_vm",
                "seed_command",
            ],
        );
        d
    }

    fn concurrency(&mut self, n: &Node, name: &str) -> Option<Concurrency> {
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

    fn autostop(&mut self, t: &mut Tbl) -> Option<AutostopMode> {
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

    fn http_service(&mut self, n: &Node) -> HttpService {
        let name = "[http_service]";
        let mut t = Tbl::new(n, name, self.sink);
        let mut h = HttpService {
            force_https: self.opt_bool(&mut t, "force_https").unwrap_or(false),
            auto_stop_machines: self.autostop(&mut t),
            auto_start_machines: self.opt_bool(&mut t, "auto_start_machines"),
            min_machines_running: self.opt_u32(&mut t, "min_machines_running", 0, u32::MAX as i64),
            processes: self.procs(&mut t),
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
    fn service(&mut self, n: &Node, i: usize) -> (Service, Vec<Span>) {
        let name = format!("[[services]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let mut s = Service {
            protocol: self
                .opt_str(&mut t, "protocol")
                .unwrap_or_else(|| "tcp".into()),
            auto_stop_machines: self.autostop(&mut t),
            auto_start_machines: self.opt_bool(&mut t, "auto_start_machines"),
            min_machines_running: self.opt_u32(&mut t, "min_machines_running", 0, u32::MAX as i64),
            processes: self.procs(&mut t),
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

    fn service_port(&mut self, n: &Node, name: &str) -> Option<ServicePort> {
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
    fn service_check(
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

    fn check_fields(&mut self, t: &mut Tbl, unit: BareUnit) -> ServiceCheck {
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
            c.headers = self.string_map(h, &name);
        }
        c
    }

    /// `[checks]`: a table of named checks, or an array of tables each with a `name`.
    fn top_checks(&mut self, n: &Node) -> BTreeMap<String, TopCheck> {
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
            let processes = self.procs(&mut t);
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

    fn mount(&mut self, n: &Node, i: usize) -> Mount {
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
            processes: self.procs(&mut t),
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

    fn range_gb(&mut self, v: u64, n: &Node, key: &str, min: u64, max: u64) -> Option<u32> {
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
    fn compute(
        &mut self,
        n: &Node,
        name: &str,
        with_processes: bool,
        top_host: Option<&str>,
    ) -> Option<Compute> {
        let mut t = Tbl::new(n, name, self.sink);
        let mut c = Compute {
            size: self.opt_str(&mut t, "size"),
            memory: t
                .get("memory")
                .and_then(|v| read::memory_mb(self.sink, v, &format!("`memory` in {name}"))),
            cpu_kind: self.opt_str(&mut t, "cpu_kind"),
            cpus: self.opt_u32(&mut t, "cpus", 1, 1024),
            memory_mb: t
                .get("memory_mb")
                .and_then(|v| read::memory_mb(self.sink, v, &format!("`memory_mb` in {name}"))),
            max_memory_mb: self.opt_u32(&mut t, "max_memory_mb", 0, u32::MAX as i64),
            gpus: self.opt_u32(&mut t, "gpus", 0, 64),
            gpu_kind: self.opt_str(&mut t, "gpu_kind"),
            host_dedication_id: self.opt_str(&mut t, "host_dedication_id"),
            kernel_args: t
                .get("kernel_args")
                .and_then(|v| read::string_list(self.sink, v, &format!("`kernel_args` in {name}")))
                .unwrap_or_default(),
            persist_rootfs: self.opt_str(&mut t, "persist_rootfs"),
            processes: if with_processes {
                self.procs(&mut t)
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

    fn restart(&mut self, n: &Node, i: usize) -> Option<Restart> {
        let name = format!("[[restart]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let policy = self.opt_str(&mut t, "policy").unwrap_or_default();
        let retries = self.opt_u32(&mut t, "retries", 0, u32::MAX as i64);
        let processes = self.procs(&mut t);
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

    fn file(&mut self, n: &Node, i: usize) -> Option<FileSpec> {
        let name = format!("[[files]] #{}", i + 1);
        let mut t = Tbl::new(n, name.clone(), self.sink);
        let f = FileSpec {
            guest_path: self.opt_str(&mut t, "guest_path").unwrap_or_default(),
            local_path: self.opt_str(&mut t, "local_path"),
            secret_name: self.opt_str(&mut t, "secret_name"),
            raw_value: self.opt_str(&mut t, "raw_value"),
            local_content_base64: self.opt_str(&mut t, "local_content_base64"),
            processes: self.procs(&mut t),
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

    fn metrics(&mut self, n: &Node, i: usize) -> Option<Metrics> {
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
            processes: self.procs(&mut t),
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

    fn statics(&mut self, n: &Node, i: usize) -> Option<StaticSpec> {
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

    fn experimental(
        &mut self,
        n: &Node,
        kill_timeout: &mut Option<aloft_api::GoDuration>,
        metrics: &mut Vec<Metrics>,
    ) -> Experimental {
        let name = "[experimental]";
        let mut t = Tbl::new(n, name, self.sink);
        let mut list = |d: &mut Self, key: &str| {
            t.get(key)
                .and_then(|v| read::string_list(d.sink, v, &format!("`{key}` in {name}")))
        };
        let mut e = Experimental {
            cmd: list(self, "cmd"),
            entrypoint: list(self, "entrypoint"),
            exec: list(self, "exec"),
            ..Experimental::default()
        };
        e.auto_rollback = self.opt_bool(&mut t, "auto_rollback");
        e.enable_consul = self.opt_bool(&mut t, "enable_consul");
        e.enable_etcd = self.opt_bool(&mut t, "enable_etcd");
        e.lazy_load_images = self.opt_bool(&mut t, "lazy_load_images");
        // Legacy keys hoisted to their modern places when those are absent.
        if let Some(kt) = t.get("kill_timeout") {
            let d = read::duration(
                self.sink,
                kt,
                "`kill_timeout` in [experimental]",
                BareUnit::Seconds,
            );
            if kill_timeout.is_none() {
                *kill_timeout = d;
            }
        }
        let mport = t
            .get("metrics_port")
            .and_then(|v| read::port(self.sink, v, "`metrics_port` in [experimental]"));
        let mpath = self.opt_str(&mut t, "metrics_path");
        if let Some(port) = mport {
            if metrics.is_empty() {
                metrics.push(Metrics {
                    port,
                    path: mpath.unwrap_or_else(|| "/metrics".into()),
                    ..Metrics::default()
                });
            }
        }
        // Nomad-era and platform keys real files still carry; accepted without effect.
        t.ignore(&[
            "allowed_public_ports",
            "private_network",
            "attached",
            "machine_config",
            "strategy",
            "enable_ssh",
        ]);
        t.finish(
            self.sink,
            &[
                "cmd",
                "entrypoint",
                "exec",
                "auto_rollback",
                "enable_consul",
                "enable_etcd",
                "lazy_load_images",
                "kill_timeout",
                "metrics_port",
                "metrics_path",
            ],
        );
        e
    }
}

/// A raw node as JSON, for pass-through option tables (`tls_options`, `http_options`, ...).
pub(crate) fn to_json(n: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &n.kind {
        Kind::Str(s) | Kind::Other(s) => J::String(s.clone()),
        Kind::Int(i) => J::from(*i),
        Kind::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Kind::Bool(b) => J::Bool(*b),
        Kind::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Kind::Table(e) => J::Object(
            e.iter()
                .map(|e| (e.key.clone(), to_json(&e.value)))
                .collect(),
        ),
    }
}
