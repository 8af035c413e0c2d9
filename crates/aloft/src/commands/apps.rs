//! `aloft apps create|list|destroy`.

use aloft_client::{block_on, Client};
use std::process::ExitCode;

use crate::cli::{AppArgs, AppsCommand};
use crate::commands::common::{confirm, resolve_app};
use crate::output::{print_json, print_table};

pub fn run(cmd: AppsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::from_env();
    block_on(async move {
        match cmd {
            AppsCommand::Create {
                name,
                org,
                config,
                json,
            } => {
                let app = match name {
                    Some(n) => n,
                    None => resolve_app(&AppArgs { app: None, config })?,
                };
                let created = client.create_app(&app, &org).await?;
                if json {
                    print_json(&created)?;
                } else {
                    println!("New app created: {}", created.name);
                }
            }
            AppsCommand::List { json } => {
                let apps = client.list_apps().await?;
                if json {
                    print_json(&apps)?;
                } else {
                    let rows: Vec<Vec<String>> = apps
                        .iter()
                        .map(|a| {
                            vec![
                                a.name.clone(),
                                a.organization.slug.clone(),
                                a.status.clone(),
                                a.machine_count.to_string(),
                            ]
                        })
                        .collect();
                    print_table(None, &["NAME", "OWNER", "STATUS", "MACHINES"], &rows);
                }
            }
            AppsCommand::Destroy { name, yes } => {
                let app = client.get_app(&name).await?;
                let question = format!(
                    "Destroy app {} and its {} machine(s)? This cannot be undone",
                    app.name, app.machine_count
                );
                if !confirm(&question, yes)? {
                    eprintln!("Nothing destroyed.");
                    return Ok(ExitCode::FAILURE);
                }
                client.delete_app(&name).await?;
                println!("Destroyed app {name}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
