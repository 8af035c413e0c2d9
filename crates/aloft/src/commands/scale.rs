//! `aloft scale count|vm|memory|show` (flyctl-behaviour §4). Every input is checked before
//! anything is changed; the plan is printed before acting. `scale count` is planned and carried
//! out by the agent (`POST …/scale`, resumable like a deploy), and so are `scale vm|memory`
//! (`POST …/scale/guest`), after the same checks made here against the machines.

use std::path::Path;
use std::process::ExitCode;

use aloft_api::groups::{ScaleCountRequest, ScaleGuestRequest};
use aloft_api::Guest;
use aloft_client::{block_on, Client, ScaleAnswer};
use aloft_config::AppConfig;
use aloft_deploy::scale;
use aloft_deploy::{Release, ReleaseStatus};
use anyhow::{anyhow, bail};

use crate::cli::{AppArgs, ListArgs, ScaleCommand, ScaleCountArgs};
use crate::commands::Context;

pub fn run(cmd: ScaleCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        ScaleCommand::Count(args) => count(args, ctx),
        ScaleCommand::Vm {
            size,
            memory,
            group,
            app,
        } => {
            let memory = memory.as_deref().map(scale::parse_memory_mb).transpose()?;
            guest(app, group, Some(size), memory, ctx)
        }
        ScaleCommand::Memory { memory, group, app } => {
            let memory = scale::parse_memory_mb(&memory)?;
            guest(app, group, None, Some(memory), ctx)
        }
        ScaleCommand::Show(args) => show(args, ctx),
    }
}

/// The app's current (complete) release, required by `scale count`.
async fn require_release(client: &Client, app: &str) -> anyhow::Result<Release> {
    client
        .current_release(app)
        .await?
        .ok_or_else(|| anyhow!("app {app} has no complete release yet: run `aloft deploy` first"))
}

fn count(args: ScaleCountArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let printer = ctx.printer;
    // Checks that need no agent come first.
    scale::check_regions(&args.regions)?;
    if args.max_per_region == Some(0) {
        return Err(anyhow!("--max-per-region must be at least 1"));
    }
    let app = ctx.app(&args.app)?;
    let client = ctx.client()?;
    block_on(async move {
        let release = require_release(&client, &app).await?;
        let counts = scale::parse_counts(
            &args.counts,
            args.group.as_deref(),
            &release.spec.group_names(),
        )?;
        let mut req = ScaleCountRequest {
            counts: counts
                .iter()
                .map(|(g, c)| (g.clone(), c.to_arg()))
                .collect(),
            regions: args.regions.clone(),
            max_per_region: args.max_per_region,
            with_new_volumes: args.with_new_volumes,
            dry_run: true,
        };
        let ScaleAnswer::Plan(plan) = client.scale(&app, &req).await? else {
            bail!("the agent started a scale operation for a dry run; nothing was confirmed");
        };
        req.dry_run = false;
        if plan.is_noop() {
            // Records the counts (deploy then keeps a group scaled to 0 at 0).
            client.scale(&app, &req).await?;
            printer.line("App already scaled to desired state");
            return Ok(ExitCode::SUCCESS);
        }
        printer.text(&scale::describe_lines(&plan.lines));
        let mounts = |g: &str| {
            release
                .spec
                .groups
                .get(g)
                .is_some_and(|c| !c.mounts.is_empty())
        };
        if plan.lines.iter().any(|l| l.delta > 0 && mounts(&l.group)) {
            let volumes = client.list_volumes(&app).await?;
            printer.text(&scale::describe_volume_lines(
                &plan.lines,
                &release.spec,
                &volumes,
                args.with_new_volumes,
            ));
        }
        if !printer.confirm(&format!("Scale app {app}?"), args.yes)? {
            printer.note("Nothing changed.");
            return Ok(ExitCode::FAILURE);
        }
        let op = match client.scale(&app, &req).await? {
            ScaleAnswer::Started(op) => op,
            ScaleAnswer::Plan(_) => {
                printer.line("App already scaled to desired state");
                return Ok(ExitCode::SUCCESS);
            }
        };
        printer.line(format_args!(
            "Scaling in the agent ({}): it goes on if this command stops",
            op.label()
        ));
        match super::deploy::follow(&client, &app, op.version, printer).await? {
            (ReleaseStatus::Complete, _) => Ok(ExitCode::SUCCESS),
            (status, error) => bail!(
                "{} {}: {}",
                op.label(),
                status.as_str(),
                error.unwrap_or_else(|| "no reason given".into())
            ),
        }
    })
}

fn guest(
    app_args: AppArgs,
    group: Option<String>,
    size: Option<String>,
    memory: Option<u32>,
    ctx: &Context,
) -> anyhow::Result<ExitCode> {
    let printer = ctx.printer;
    // A size is checked before talking to the agent (memory alone depends on each machine's
    // CPUs: it is checked against the machines before the agent is asked to change anything).
    if size.is_some() {
        scale::new_guest(
            None,
            size.as_deref(),
            memory,
            group.as_deref().unwrap_or("app"),
        )?;
    }
    let app = ctx.app(&app_args)?;
    let client = ctx.client()?;
    block_on(async move {
        let machines = client.list_machines(&app).await?;
        let release = client.current_release(&app).await.ok().flatten();
        let (known, default_group) = match &release {
            Some(r) => (r.spec.group_names(), r.spec.default_group.clone()),
            None => scale::machine_groups(&machines),
        };
        let group = scale::group_for_guest_change(group.as_deref(), &known)?;
        // What the agent would refuse for these machines is refused here first, with the same
        // messages and no change requested.
        scale::plan_guest_work(&machines, &default_group, &group, size.as_deref(), memory)?;
        let req = ScaleGuestRequest {
            group: Some(group.clone()),
            size,
            memory_mb: memory,
            dry_run: false,
        };
        let op = match client.scale_guest(&app, &req).await? {
            ScaleAnswer::Started(op) => op,
            ScaleAnswer::Plan(plan) => {
                printer.text(&plan.describe_result());
                return Ok(ExitCode::SUCCESS);
            }
        };
        printer.line(format_args!(
            "Scaling in the agent ({}): it goes on if this command stops",
            op.label()
        ));
        // One machine at a time, each healthy again before the next: the group keeps serving.
        match super::deploy::follow(&client, &app, op.version, printer).await? {
            (ReleaseStatus::Complete, _) => {}
            (status, error) => bail!(
                "{} {}: {}",
                op.label(),
                status.as_str(),
                error.unwrap_or_else(|| "no reason given".into())
            ),
        }
        if let Some(set) = op.scale.as_ref().and_then(|w| w.guest.last()) {
            printer.text(&scale::describe_guest(&group, &set.guest));
            if let Some(warning) = local_vm_override(&app_args.config, &app, &group, &set.guest) {
                printer.warn(warning);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The warning of `scale vm|memory` when the fly.toml at `path`, if there is one and it is this
/// app's, has a `[[vm]]` for `group` that differs from `applied`: the next deploy would size the
/// machines back (flyctl-behaviour §4.2.6). Advisory: a file that cannot be read gives none.
fn local_vm_override(path: &Path, app: &str, group: &str, applied: &Guest) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    let config = aloft_config::load(path).ok()?.config;
    if !config.app.is_empty() && config.app != app {
        return None;
    }
    vm_override_warning(&config, &path.display().to_string(), group, applied)
}

/// [`local_vm_override`] for a loaded config (`shown` names its file).
fn vm_override_warning(
    config: &AppConfig,
    shown: &str,
    group: &str,
    applied: &Guest,
) -> Option<String> {
    let planned = config.guest_for(group).ok()??;
    if planned.size_name() == applied.size_name() && planned.memory_mb == applied.memory_mb {
        return None;
    }
    Some(format!(
        "{shown} has a [[vm]] section for group '{group}' with other settings than were just \
         applied\n  machines now: size={} memory={}MB\n  {shown}: size={} memory={}MB\n\
         The next `aloft deploy` sets the machines back to the {shown} values; change its [[vm]] \
         section to keep this size.",
        applied.size_name(),
        applied.memory_mb,
        planned.size_name(),
        planned.memory_mb,
    ))
}

fn show(args: ListArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let printer = ctx.printer;
    let app = ctx.app(&args.app)?;
    let client = ctx.client()?;
    block_on(async move {
        let machines = client.list_machines(&app).await?;
        let rows = scale::show_groups(&machines);
        if printer.json() {
            printer.json_value(&rows)?;
            return Ok(ExitCode::SUCCESS);
        }
        printer.line(format_args!("VM Resources for app: {app}\n"));
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.process.clone(),
                    r.count.to_string(),
                    r.cpu_kind.clone(),
                    r.cpus.to_string(),
                    format!("{} MB", r.memory),
                    r.regions_text(),
                ]
            })
            .collect();
        printer.table(
            Some("Groups"),
            &["NAME", "COUNT", "KIND", "CPUS", "MEMORY", "REGIONS"],
            &table,
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vm: &str) -> AppConfig {
        let toml = format!("app = \"shop\"\n[processes]\nweb = \"web\"\nworker = \"work\"\n{vm}");
        aloft_config::parse_str(&toml, aloft_config::Format::Toml, "fly.toml").config
    }

    #[test]
    fn a_vm_section_of_the_group_that_differs_is_a_warning() {
        let bigger = Guest::from_preset("performance-2x").unwrap();
        let vm = "[[vm]]\nsize = \"shared-cpu-1x\"\nprocesses = [\"web\"]\n";
        let warning = vm_override_warning(&config(vm), "fly.toml", "web", &bigger).unwrap();
        assert!(
            warning.contains("machines now: size=performance-2x memory=4096MB")
                && warning.contains("fly.toml: size=shared-cpu-1x memory=256MB")
                && warning.contains("next `aloft deploy`"),
            "{warning}"
        );
        // Another group's [[vm]], or none at all: deploy keeps the machines' guests.
        assert_eq!(
            vm_override_warning(&config(vm), "fly.toml", "worker", &bigger),
            None
        );
        assert_eq!(
            vm_override_warning(&config(""), "fly.toml", "web", &bigger),
            None
        );
        // A [[vm]] without `processes` applies to every group.
        let all = "[[vm]]\nsize = \"shared-cpu-1x\"\n";
        assert!(vm_override_warning(&config(all), "fly.toml", "worker", &bigger).is_some());
        // The same size: nothing to undo.
        let same = "[[vm]]\nsize = \"performance-2x\"\n";
        assert_eq!(
            vm_override_warning(&config(same), "fly.toml", "web", &bigger),
            None
        );
        // Only the memory differs.
        let mut more = bigger.clone();
        more.memory_mb = 8192;
        assert!(vm_override_warning(&config(same), "fly.toml", "web", &more).is_some());
    }
}
