//! `aloft scale count|vm|memory|show` (flyctl-behaviour §4), over the API with the planners of
//! `aloft_deploy::scale`. Every input is checked before anything is changed; the plan is
//! printed before acting.

use std::process::ExitCode;

use aloft_api::{CreateMachineRequest, Machine, MachineState, UpdateMachineRequest};
use aloft_deploy::scale::{self, CountRequest};
use aloft_deploy::Release;
use anyhow::{anyhow, Context};
use futures_util::stream::{self, TryStreamExt};

use crate::cli::{AppArgs, ListArgs, ScaleCommand, ScaleCountArgs};
use crate::client::{block_on, is_not_found, Client};
use crate::commands::common::{confirm, resolve_app};
use crate::output::{print_json, print_table};

/// Machine operations run at once by `scale count`.
const CONCURRENCY: usize = 8;

/// How long `scale vm|memory` waits for an updated machine to be started and healthy.
const HEALTHY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn run(cmd: ScaleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ScaleCommand::Count(args) => count(args),
        ScaleCommand::Vm {
            size,
            memory,
            group,
            app,
        } => {
            let memory = memory.as_deref().map(scale::parse_memory_mb).transpose()?;
            guest(app, group, Some(size), memory)
        }
        ScaleCommand::Memory { memory, group, app } => {
            let memory = scale::parse_memory_mb(&memory)?;
            guest(app, group, None, Some(memory))
        }
        ScaleCommand::Show(args) => show(args),
    }
}

/// The app's current (complete) release, required by `scale count`.
async fn require_release(client: &Client, app: &str) -> anyhow::Result<Release> {
    client
        .current_release(app)
        .await?
        .ok_or_else(|| anyhow!("app {app} has no complete release yet: run `aloft deploy` first"))
}

fn count(args: ScaleCountArgs) -> anyhow::Result<ExitCode> {
    // Checks that need no agent come first.
    scale::check_regions(&args.regions)?;
    if args.max_per_region == Some(0) {
        return Err(anyhow!("--max-per-region must be at least 1"));
    }
    let app = resolve_app(&args.app)?;
    let client = Client::from_env();
    block_on(async move {
        let release = require_release(&client, &app).await?;
        let machines = client.list_machines(&app).await?;
        let known = release.spec.group_names();
        let counts = scale::parse_counts(
            &args.counts,
            args.group.as_deref(),
            &release.spec.default_group,
            &known,
        )?;
        let req = CountRequest {
            counts,
            regions: args.regions.clone(),
            max_per_region: args.max_per_region,
        };
        let plan = scale::plan_count(&req, &release.spec, &release.meta(), &machines)?;
        if plan.is_noop() {
            println!("App already scaled to desired state");
            remember_counts(&client, &app, &plan.desired).await?;
        } else {
            print!("{}", plan.describe());
            if !confirm(&format!("Scale app {app}?"), args.yes)? {
                eprintln!("Nothing changed.");
                return Ok(ExitCode::FAILURE);
            }
            // Recorded first: the agent refuses counts over its limit before anything changes.
            remember_counts(&client, &app, &plan.desired).await?;
            execute_count(&client, &app, &plan).await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn execute_count(client: &Client, app: &str, plan: &scale::ScalePlan) -> anyhow::Result<()> {
    stream::iter(plan.destroy.iter().map(Ok))
        .try_for_each_concurrent(CONCURRENCY, |d| async move {
            client
                .destroy_machine(app, &d.id, true)
                .await
                .with_context(|| format!("destroying machine {} of group {}", d.id, d.group))?;
            println!("Destroyed {} group:{} region:{}", d.id, d.group, d.region);
            anyhow::Ok(())
        })
        .await?;
    stream::iter(plan.create.iter().map(Ok))
        .try_for_each_concurrent(CONCURRENCY, |c| async move {
            let req = CreateMachineRequest {
                config: c.config.clone(),
                region: c.region.clone(),
                ..CreateMachineRequest::default()
            };
            let m = client
                .create_machine(app, &req)
                .await
                .with_context(|| format!("creating a machine for group {}", c.group))?;
            let size = m
                .config
                .guest
                .as_ref()
                .map(|g| g.size_name())
                .unwrap_or_default();
            println!(
                "Created {} group:{} region:{} size:{size}",
                m.id, c.group, m.region
            );
            anyhow::Ok(())
        })
        .await
}

/// Tells the agent the per-group counts to keep (deploy leaves a group scaled to 0 at 0). A count
/// the agent refuses (over its limit) is an error; an agent too old to remember counts is a
/// warning.
async fn remember_counts(
    client: &Client,
    app: &str,
    desired: &std::collections::BTreeMap<String, u32>,
) -> anyhow::Result<()> {
    for (group, n) in desired {
        if let Err(e) = client.set_group_count(app, group, *n).await {
            if is_not_found(&e) {
                eprintln!("warning: this agent does not remember group counts yet; a later deploy may re-create machines of groups scaled to 0");
                return Ok(());
            }
            return Err(e).with_context(|| format!("recording the count of group {group}"));
        }
    }
    Ok(())
}

fn guest(
    app_args: AppArgs,
    group: Option<String>,
    size: Option<String>,
    memory: Option<u32>,
) -> anyhow::Result<ExitCode> {
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
    let app = resolve_app(&app_args)?;
    let client = Client::from_env();
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
            println!("Updated {} [{group}]", u.id);
            last = u.config.guest;
        }
        if let Some(g) = last {
            println!("Scaled VM Type for '{group}' to '{}'", g.size_name());
            println!("      CPU Cores: {}", g.cpus);
            println!("         Memory: {} MB", g.memory_mb);
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

fn show(args: ListArgs) -> anyhow::Result<ExitCode> {
    let app = resolve_app(&args.app)?;
    let client = Client::from_env();
    block_on(async move {
        let machines = client.list_machines(&app).await?;
        let rows = scale::show_groups(&machines);
        if args.json {
            print_json(&rows)?;
            return Ok(ExitCode::SUCCESS);
        }
        println!("VM Resources for app: {app}\n");
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
        print_table(
            Some("Groups"),
            &["NAME", "COUNT", "KIND", "CPUS", "MEMORY", "REGIONS"],
            &table,
        );
        Ok(ExitCode::SUCCESS)
    })
}
