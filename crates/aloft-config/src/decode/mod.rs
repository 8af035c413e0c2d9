//! Raw document → typed [`AppConfig`], folding the legacy and alias forms of flyctl-behaviour
//! §1.1 as it goes (env as array, processes as array, `[vm]`/`[[compute]]`, `[mount]`, services
//! concurrency strings, string ports, `experimental.kill_timeout`/`metrics_*` hoisting) and
//! reporting every field-level problem with its span. Rules that span sections (group
//! references, one mount per group, ...) live in `validate`, fed by the [`Spans`] recorded here.

use std::collections::BTreeMap;

mod sections;
mod services;

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
    pub undefined: Undefined,
}

/// What a `processes` entry naming no defined group means for its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undefined {
    /// An error, as in flyctl: services (`[http_service]`, `[[services]]`) and `[[restart]]`.
    Refused,
    /// A warning: flyctl accepts it and the section applies to no machine (`[[vm]]`,
    /// `[[mounts]]`, `[checks]`, `[[files]]`, `[[metrics]]`).
    Ignored,
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

pub(crate) struct Decoder<'s> {
    pub(crate) sink: &'s mut Sink,
    pub(crate) spans: Spans,
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

    pub(super) fn opt_str(&mut self, t: &mut Tbl, key: &str) -> Option<String> {
        let what = read::field(&t.name, key);
        t.get(key)
            .and_then(|n| read::string(self.sink, n, &what, true))
    }

    /// Like [`Self::opt_str`], but an empty string is unset.
    pub(super) fn opt_set_str(&mut self, t: &mut Tbl, key: &str) -> Option<String> {
        self.opt_str(t, key).filter(|s| !s.is_empty())
    }

    pub(super) fn opt_bool(&mut self, t: &mut Tbl, key: &str) -> Option<bool> {
        let what = read::field(&t.name, key);
        t.get(key).and_then(|n| read::boolean(self.sink, n, &what))
    }

    pub(super) fn opt_u32(&mut self, t: &mut Tbl, key: &str, min: i64, max: i64) -> Option<u32> {
        let what = read::field(&t.name, key);
        t.get(key)
            .and_then(|n| read::int_in(self.sink, n, &what, min, max))
    }

    pub(super) fn opt_dur(
        &mut self,
        t: &mut Tbl,
        key: &str,
        unit: BareUnit,
    ) -> Option<aloft_api::GoDuration> {
        let what = read::field(&t.name, key);
        t.get(key)
            .and_then(|n| read::duration(self.sink, n, &what, unit))
    }

    pub(super) fn opt_json(&mut self, t: &mut Tbl, key: &str) -> Option<serde_json::Value> {
        t.get(key).map(Node::to_json)
    }

    /// Reads `processes = [..]` of a section and records each name for the reference check,
    /// which treats a name of no defined group as `undefined` says.
    pub(super) fn procs(&mut self, t: &mut Tbl, undefined: Undefined) -> Vec<String> {
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
                    undefined,
                });
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    pub(super) fn check_split(&mut self, cmd: &str, n: &Node, what: &str) {
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
                    if !item.is_table() {
                        // flyctl skips entries that are not tables; so does Aloft, aloud.
                        self.sink.warn(
                            &item.span,
                            format!(
                                "`processes` entry #{} is {}, not a table of `name` and `command`, so it defines no group (ignored)",
                                i + 1,
                                item.type_name()
                            ),
                            Some(
                                "write `[processes]` then one `<group> = \"<command>\"` line per group"
                                    .into(),
                            ),
                        );
                        continue;
                    }
                    let mut t = Tbl::new(item, format!("[[processes]] #{}", i + 1), self.sink);
                    // flyctl writes numbers and booleans here as text.
                    let name = t
                        .get("name")
                        .and_then(|v| read::string(self.sink, v, "`name` in [[processes]]", true));
                    let cmd_node = t.get("command");
                    let cmd = cmd_node
                        .and_then(|v| {
                            read::string(self.sink, v, "`command` in [[processes]]", true)
                        })
                        .unwrap_or_default();
                    let extra: Vec<_> = t
                        .unused()
                        .map(|e| (e.key.clone(), e.key_span.clone()))
                        .collect();
                    for (key, span) in extra {
                        // flyctl drops a key here without a word; the user meant something else,
                        // so say so (a warning: the group still runs, as on Fly).
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
                        self.sink.warn(
                            &span,
                            format!(
                                "[[processes]] #{} has key `{key}`, which process groups do not take (ignored)",
                                i + 1
                            ),
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
                        // flyctl skips such an entry; so does Aloft, aloud.
                        None if !t.has("name") => self.sink.warn(
                            &item.span,
                            format!(
                                "[[processes]] #{} has no `name`, so it defines no group (ignored)",
                                i + 1
                            ),
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
                if matches!(e.value.kind, Kind::Array(_) | Kind::Table(_)) {
                    // flyctl writes any value as text (Go's `%v`); a list or table here is
                    // almost certainly a slip, so it is taken, but not silently.
                    let text = read::go_text(&e.value);
                    self.sink.warn(
                        &e.value.span,
                        format!(
                            "env var `{}` is {}; it is set to the text {text:?}, as flyctl does",
                            e.key,
                            e.value.type_name()
                        ),
                        Some("write the value as a string".into()),
                    );
                    out.insert(e.key.clone(), text);
                    continue;
                }
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
            if let Some(serde_json::Value::Object(m)) = Some(n.to_json()) {
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
        self.refuse_unbuildable(n, &b);
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

    /// `[build]` keys Aloft cannot carry out (no Cloud Native Buildpacks builder, no builtin
    /// builders, no compose): valid Fly config, so a warning here, and an error at deploy
    /// ([`crate::Diagnostic::refused_at_deploy`]) unless an image is given to deploy instead.
    fn refuse_unbuildable(&mut self, n: &Node, b: &Build) {
        let instead = "write a Dockerfile beside fly.toml (Aloft builds it with buildah), or set \
                       [build] image to a prebuilt image";
        let what: [(&str, bool, String); 5] = [
            (
                "builder",
                b.builder.is_some(),
                "[build] builder (Cloud Native Buildpacks) is not supported: no CNB builder \
                 (`pack`) is available to Aloft, and deploy refuses it"
                    .into(),
            ),
            (
                "buildpacks",
                !b.buildpacks.is_empty(),
                "[build] buildpacks (Cloud Native Buildpacks) are not supported: no CNB builder \
                 (`pack`) is available to Aloft, and deploy refuses them"
                    .into(),
            ),
            (
                "builtin",
                b.builtin.is_some(),
                "[build] builtin (Fly's builtin builders) is not supported, and deploy refuses it"
                    .into(),
            ),
            (
                "settings",
                !b.settings.is_empty(),
                "[build.settings] configures a builtin builder, which Aloft does not support; \
                 deploy refuses it"
                    .into(),
            ),
            (
                "compose",
                b.compose_file.is_some() || n.get("compose").is_some(),
                "[build.compose] (several containers per machine) is not supported, and deploy \
                 refuses it"
                    .into(),
            ),
        ];
        for (key, set, message) in what {
            if set {
                let span = n.get(key).and_then(|k| k.span.clone());
                self.sink
                    .refuse_at_deploy(&span, message, format!("remove `{key}` and {instead}"));
            }
        }
    }

    pub(super) fn string_map(&mut self, n: &Node, name: &str) -> BTreeMap<String, String> {
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
