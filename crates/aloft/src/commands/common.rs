//! Helpers shared by the app commands: which app, loading fly.toml into a release spec,
//! confirmation prompts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use aloft_config::{AppConfig, Loaded};
use aloft_deploy::{DeployOptions, ReleaseSpec, Strategy};
use anyhow::{anyhow, bail, Context};

use crate::cli::AppArgs;

/// Loads the config and prints its diagnostics to stderr; an invalid config is an error.
pub fn load_config(path: &Path) -> anyhow::Result<Loaded> {
    let loaded = aloft_config::load(path)?;
    if !loaded.diagnostics.is_empty() {
        eprint!("{}", loaded.diagnostics);
    }
    if loaded.diagnostics.has_errors() {
        bail!(
            "{} is not valid; fix the errors above (check with `aloft config validate -c {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(loaded)
}

/// The app: `-a`, else the `app` of the config file (read only for its name, errors ignored).
pub fn resolve_app(args: &AppArgs) -> anyhow::Result<String> {
    if let Some(app) = args.app.as_deref().filter(|a| !a.is_empty()) {
        return Ok(app.to_string());
    }
    if args.config.exists() {
        if let Ok(loaded) = aloft_config::load(&args.config) {
            if !loaded.config.app.is_empty() {
                return Ok(loaded.config.app);
            }
        }
        bail!(
            "{} has no `app` name; pass the app with -a APP",
            args.config.display()
        );
    }
    bail!(
        "no app given: pass -a APP, or run where {} names the app (or pass -c path/to/fly.toml)",
        args.config.display()
    )
}

/// Asks `question` on the terminal. Without a terminal on stdin, refuses with a message telling
/// to pass `--yes`: nothing has been changed when this returns an error or `false`.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} — refusing to go on without confirmation: stdin is not a terminal; pass --yes");
    }
    eprint!("? {question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Deploy flag overrides on top of fly.toml's `[deploy]`.
#[derive(Debug, Default, Clone)]
pub struct DeployFlags {
    pub strategy: Option<String>,
    pub max_unavailable: Option<f64>,
    pub wait_timeout: Option<String>,
    pub update_only: bool,
    pub ha: bool,
    pub smoke_checks: bool,
    pub primary_region: Option<String>,
}

/// Builds the release spec of a config: one flattened machine config per group, with the
/// `[[vm]]` guest when one matches (§2.3–§2.4), and the deploy options (flags over fly.toml).
pub fn spec_from_config(
    config: &AppConfig,
    source: Option<String>,
    flags: &DeployFlags,
) -> anyhow::Result<ReleaseSpec> {
    let mut groups = std::collections::BTreeMap::new();
    for group in config.process_names() {
        let mut mc = config.machine_config_for(&group);
        mc.guest = config
            .guest_for(&group)
            .map_err(|e| anyhow!("group {group:?}: {e}"))?;
        groups.insert(group, mc);
    }
    let deploy = config.deploy.clone().unwrap_or_default();
    let strategy_text = flags.strategy.clone().or(deploy.strategy.clone());
    let strategy = match strategy_text.as_deref() {
        None => Strategy::Rolling,
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            anyhow!("invalid strategy {s:?}: use rolling, immediate, canary or bluegreen")
        })?,
    };
    let mut options = DeployOptions {
        strategy,
        update_only: flags.update_only,
        ha: flags.ha,
        smoke_checks: flags.smoke_checks,
        ..DeployOptions::default()
    };
    if let Some(m) = flags.max_unavailable.or(deploy.max_unavailable) {
        if m.is_nan() || m <= 0.0 {
            bail!("--max-unavailable must be > 0 (a count ≥ 1 or a fraction below 1), got {m}");
        }
        options.max_unavailable = m;
    }
    if let Some(w) = &flags.wait_timeout {
        options.wait_timeout = parse_wait_timeout(w)?;
    } else if let Some(w) = deploy.wait_timeout {
        options.wait_timeout = w;
    }
    let primary_region = flags
        .primary_region
        .clone()
        .or(config.primary_region.clone())
        .filter(|r| !r.is_empty());
    if let Some(r) = &primary_region {
        aloft_deploy::scale::check_regions(std::slice::from_ref(r))?;
    }
    Ok(ReleaseSpec {
        image: String::new(),
        groups,
        default_group: config.default_process_name(),
        primary_region,
        deploy: options,
        source,
    })
}

/// `--wait-timeout`: a Go duration (`5m`), bare seconds, or `none` (a day).
fn parse_wait_timeout(s: &str) -> anyhow::Result<aloft_api::GoDuration> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(aloft_api::GoDuration::from_secs(86_400));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(aloft_api::GoDuration::from_secs(secs));
    }
    aloft_api::duration::parse_go_duration(s)
        .map(aloft_api::GoDuration)
        .map_err(|e| anyhow!("--wait-timeout: {e}"))
}

/// ANSI colour for a label, stable per name (used by logs).
pub fn colour_for(name: &str) -> &'static str {
    const COLOURS: &[&str] = &[
        "\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[31m",
    ];
    let h = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    COLOURS[h as usize % COLOURS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeout_forms() {
        assert_eq!(
            parse_wait_timeout("30").unwrap().as_duration().as_secs(),
            30
        );
        assert_eq!(
            parse_wait_timeout("2m").unwrap().as_duration().as_secs(),
            120
        );
        assert_eq!(
            parse_wait_timeout("none").unwrap().as_duration().as_secs(),
            86_400
        );
        assert!(parse_wait_timeout("soon").is_err());
    }

    #[test]
    fn spec_of_the_example_app() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/process-groups/fly.toml");
        let loaded = aloft_config::load(&path).unwrap();
        let spec = spec_from_config(
            &loaded.config,
            None,
            &DeployFlags {
                ha: true,
                ..DeployFlags::default()
            },
        )
        .unwrap();
        assert_eq!(spec.group_names(), vec!["cron", "web", "worker"]);
        assert_eq!(spec.default_group, "cron");
        assert_eq!(spec.primary_region.as_deref(), Some("gru"));
        let web = &spec.groups["web"];
        assert_eq!(
            web.init.cmd,
            Some(vec!["python3".to_string(), "web.py".to_string()])
        );
        assert_eq!(web.init.entrypoint, None, "a group command is CMD");
        assert_eq!(web.services.len(), 1);
        assert_eq!(spec.groups["worker"].guest.as_ref().unwrap().cpus, 2);
        assert_eq!(aloft_deploy::plan::new_group_count(&spec, "web"), 2);
        assert_eq!(aloft_deploy::plan::new_group_count(&spec, "cron"), 1);
    }
}
