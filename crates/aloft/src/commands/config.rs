//! `aloft config validate|show`: check fly.toml (all problems at once, errors and warnings
//! printed apart on stderr) and show the process groups with each group's resolved machine config.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use aloft_api::{MachineConfig, MachineService};
use aloft_config::{format_groups, shell_join, AppConfig, Diagnostics, Loaded};
use serde::Serialize;

use crate::cli::ConfigCommand;
use crate::commands::Context;
use crate::printer::Printer;

pub fn run(cmd: ConfigCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Validate { config } => validate(&config.path, ctx.printer),
        ConfigCommand::Show { config } => show(&config.path, ctx.printer),
    }
}

fn load(path: &Path) -> anyhow::Result<Loaded> {
    Ok(aloft_config::load(path)?)
}

/// Errors first, then warnings, as separate blocks.
fn report(d: &Diagnostics, printer: &Printer) {
    let errors: Vec<_> = d.errors().collect();
    let warnings: Vec<_> = d.warnings().collect();
    for e in &errors {
        printer.note(e);
    }
    if !warnings.is_empty() {
        if !errors.is_empty() {
            printer.note("---");
        }
        for w in &warnings {
            printer.note(w);
        }
    }
}

fn validate(path: &Path, printer: &Printer) -> anyhow::Result<ExitCode> {
    let loaded = load(path)?;
    let d = &loaded.diagnostics;
    report(d, printer);
    let (e, w) = (d.errors().count(), d.warnings().count());
    if e > 0 {
        printer.note(format_args!(
            "{}: app configuration is not valid: {e} error(s), {w} warning(s)",
            path.display()
        ));
        Ok(ExitCode::from(1))
    } else {
        let groups = loaded.config.process_names();
        printer.note(format_args!(
            "{}: app configuration is valid ({} process group(s): {}; {w} warning(s))",
            path.display(),
            groups.len(),
            format_groups(&groups)
        ));
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Serialize)]
struct ShowJson<'a> {
    app: &'a str,
    primary_region: Option<&'a str>,
    default_process_group: String,
    process_groups: BTreeMap<String, GroupJson>,
    warnings: Vec<&'a aloft_config::Diagnostic>,
}

#[derive(Serialize)]
struct GroupJson {
    machine_config: MachineConfig,
    /// `null` when no `[[vm]]` matches: deploy keeps existing machines' sizes.
    guest: Option<aloft_api::Guest>,
}

fn show(path: &Path, printer: &Printer) -> anyhow::Result<ExitCode> {
    let loaded = load(path)?;
    if loaded.diagnostics.has_errors() {
        report(&loaded.diagnostics, printer);
        printer.note(format_args!("{}: app configuration is not valid; fix the errors above (see `aloft config validate`)", path.display()));
        return Ok(ExitCode::from(1));
    }
    let c = &loaded.config;
    if printer.json() {
        let process_groups = c
            .process_names()
            .into_iter()
            .map(|g| {
                let machine_config = c.machine_config_for(&g);
                let guest = machine_config.guest.clone();
                (
                    g,
                    GroupJson {
                        machine_config,
                        guest,
                    },
                )
            })
            .collect();
        printer.json_value(&ShowJson {
            app: &c.app,
            primary_region: c.primary_region.as_deref(),
            default_process_group: c.default_process_name(),
            process_groups,
            warnings: loaded.diagnostics.warnings().collect(),
        })?;
    } else {
        report(&loaded.diagnostics, printer);
        printer.text(&show_text(c));
    }
    Ok(ExitCode::SUCCESS)
}

/// The readable form: app, groups, default group, then one block per group.
fn show_text(c: &AppConfig) -> String {
    let mut out = String::new();
    let groups = c.process_names();
    let _ = writeln!(
        out,
        "App:            {}",
        if c.app.is_empty() {
            "(not set)"
        } else {
            &c.app
        }
    );
    let _ = writeln!(
        out,
        "Primary region: {}",
        c.primary_region.as_deref().unwrap_or("(not set)")
    );
    let _ = writeln!(out, "Process groups: {}", groups.join(", "));
    let _ = writeln!(out, "Default group:  {}", c.default_process_name());
    for g in &groups {
        let mc = c.machine_config_for(g);
        let _ = writeln!(out, "\n[{g}]");
        let words = |w: &Option<Vec<String>>| w.as_ref().map(|w| shell_join(w));
        let _ = writeln!(
            out,
            "  cmd:        {}",
            words(&mc.init.cmd).unwrap_or_else(|| "(image CMD)".into())
        );
        if let Some(e) = words(&mc.init.entrypoint) {
            let _ = writeln!(out, "  entrypoint: {e}");
        }
        if let Some(e) = words(&mc.init.exec) {
            let _ = writeln!(out, "  exec:       {e}");
        }
        let guest = match &mc.guest {
            Some(gst) => format!(
                "{} ({} {} CPU, {} MB)",
                gst.size_name(),
                gst.cpus,
                gst.cpu_kind,
                gst.memory_mb
            ),
            None => {
                "(no [[vm]] matches: existing machines keep their size, new ones get shared-cpu-1x)"
                    .into()
            }
        };
        let _ = writeln!(out, "  guest:      {guest}");
        if mc.services.is_empty() {
            let _ = writeln!(out, "  services:   (none)");
        }
        for (i, s) in mc.services.iter().enumerate() {
            let label = if i == 0 {
                "  services:   "
            } else {
                "              "
            };
            let _ = writeln!(out, "{label}{}", service_line(s));
        }
        for (name, ck) in &mc.checks {
            let port = ck.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
            let kind = ck.kind.as_deref().unwrap_or("?");
            let path = ck.path.as_deref().unwrap_or("");
            let _ = writeln!(out, "  check:      {name}: {kind} :{port}{path}");
        }
        for m in &mc.mounts {
            let size = m.size_gb.map(|s| format!(" ({s} GB)")).unwrap_or_default();
            let _ = writeln!(out, "  mount:      volume '{}' at {}{size}", m.name, m.path);
        }
        if let Some(r) = &mc.restart {
            let retries = r
                .max_retries
                .map(|n| format!(", {n} retries"))
                .unwrap_or_default();
            let _ = writeln!(out, "  restart:    {}{retries}", r.policy);
        }
        if let Some(m) = &mc.metrics {
            let _ = writeln!(out, "  metrics:    :{}{}", m.port, m.path);
        }
        for f in &mc.files {
            let src = if f.secret_name.is_some() {
                "secret"
            } else {
                "content"
            };
            let _ = writeln!(out, "  file:       {} ({src})", f.guest_path);
        }
        for s in &mc.statics {
            let _ = writeln!(out, "  static:     {} -> {}", s.url_prefix, s.guest_path);
        }
        if let Some(sc) = &mc.stop_config {
            let sig = sc
                .signal
                .as_deref()
                .unwrap_or(aloft_api::DEFAULT_STOP_SIGNAL);
            let timeout = sc
                .timeout
                .map(|t| t.to_string())
                .unwrap_or_else(|| "5s".into());
            let _ = writeln!(out, "  stop:       {sig}, {timeout}");
        }
        let env: Vec<String> = mc.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  env:        {}", env.join(" "));
    }
    out
}

fn service_line(s: &MachineService) -> String {
    let ports: Vec<String> = s
        .ports
        .iter()
        .map(|p| {
            let num = match (p.port, p.start_port, p.end_port) {
                (Some(p), _, _) => p.to_string(),
                (None, a, b) => format!("{}-{}", a.unwrap_or(0), b.unwrap_or(u16::MAX)),
            };
            let https = if p.force_https { " force_https" } else { "" };
            format!("{num}[{}]{https}", p.handlers.join(","))
        })
        .collect();
    let checks = if s.checks.is_empty() {
        String::new()
    } else {
        format!(", {} check(s)", s.checks.len())
    };
    format!(
        "{} {} <- {}{checks}",
        s.protocol,
        s.internal_port,
        if ports.is_empty() {
            "(no ports)".into()
        } else {
            ports.join(" ")
        }
    )
}
