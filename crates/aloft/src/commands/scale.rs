//! `aloft scale count|vm|memory|show` (flyctl-behaviour §4). Every input is checked before
//! anything is changed; the plan is printed before acting. `scale count` is planned and carried
//! out by the agent (`POST …/scale`, resumable like a deploy); `scale vm|memory` update the
//! group's machines from here with the planners of `aloft_deploy::scale`.

use std::process::ExitCode;

use aloft_api::{Machine, MachineState, UpdateMachineRequest};
use aloft_deploy::scale;
use aloft_deploy::wire::ScaleCountRequest;
use aloft_deploy::{Release, ReleaseStatus};
use anyhow::{anyhow, bail, Context as _};

use crate::cli::{AppArgs, ListArgs, ScaleCommand, ScaleCountArgs};
use crate::client::{block_on, Client, ScaleAnswer};
use crate::commands::Context;

/// How long `scale vm|memory` waits for an updated machine to be started and healthy.
const HEALTHY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

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
    let client = ctx.client();
    block_on(async move {
        let release = require_release(&client, &app).await?;
        let counts = scale::parse_counts(
            &args.counts,
            args.group.as_deref(),
            &release.spec.default_group,
            &release.spec.group_names(),
        )?;
        let mut req = ScaleCountRequest {
            counts: counts
                .iter()
                .map(|(g, c)| (g.clone(), c.to_arg()))
                .collect(),
            regions: args.regions.clone(),
            max_per_region: args.max_per_region,
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
    // CPUs: it is checked for every machine before any is changed).
    if size.is_some() {
        scale::new_guest(
            None,
            size.as_deref(),
            memory,
            group.as_deref().unwrap_or("app"),
        )?;
    }
    let app = ctx.app(&app_args)?;
    let client = ctx.client();
    block_on(async move {
        let machines = client.list_machines(&app).await?;
        let release = client.current_release(&app).await.ok().flatten();
        let (known, default_group) = match &release {
            Some(r) => (r.spec.group_names(), r.spec.default_group.clone()),
            None => groups_of(&machines),
        };
        let group = scale::group_for_guest_change(group.as_deref(), &known)?;
        let updates =
            scale::plan_guest_change(&machines, &default_group, &group, size.as_deref(), memory)?;
        let started: std::collections::HashSet<&str> = machines
            .iter()
            .filter(|m| m.state == MachineState::Started)
            .map(|m| m.id.as_str())
            .collect();
        let mut last = None;
        // One machine at a time, each healthy again before the next: the group keeps serving.
        for u in updates {
            let req = UpdateMachineRequest {
                config: u.config.clone(),
                current_version: Some(u.current_version.clone()),
                ..UpdateMachineRequest::default()
            };
            client
                .update_machine(&app, &u.id, &req)
                .await
                .with_context(|| format!("updating machine {}", u.id))?;
            if started.contains(u.id.as_str()) {
                client
                    .wait_healthy(&app, &u.id, HEALTHY_TIMEOUT)
                    .await
                    .with_context(|| {
                        format!(
                            "machine {} was updated; the rest of group {group} were not",
                            u.id
                        )
                    })?;
            }
            printer.line(format_args!("Updated {} [{group}]", u.id));
            last = u.config.guest;
        }
        if let Some(g) = last {
            printer.line(format_args!(
                "Scaled VM Type for '{group}' to '{}'",
                g.size_name()
            ));
            printer.line(format_args!("      CPU Cores: {}", g.cpus));
            printer.line(format_args!("         Memory: {} MB", g.memory_mb));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Group names of managed machines, and the default group (§2.1), when there is no release.
fn groups_of(machines: &[Machine]) -> (Vec<String>, String) {
    let mut groups: Vec<String> = machines
        .iter()
        .filter(|m| aloft_deploy::plan::is_managed(m))
        .map(|m| m.process_group().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort();
    groups.dedup();
    let default = if groups.iter().any(|g| g == "app") || groups.is_empty() {
        "app".to_string()
    } else {
        groups[0].clone()
    };
    (groups, default)
}

fn show(args: ListArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let printer = ctx.printer;
    let app = ctx.app(&args.app)?;
    let client = ctx.client();
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
