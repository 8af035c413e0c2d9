//! `aloft apps create|list|events|destroy` (events: `commands::tokens`).

use std::process::ExitCode;

use crate::cli::AppsCommand;
use crate::commands::Context;
use crate::settings::app_of_config_file;
use aloft_client::block_on;

pub fn run(cmd: AppsCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        match cmd {
            AppsCommand::Create { name, org, config } => {
                // The name given, else the config's (ALOFT_APP names an app to use, not one to
                // create).
                let app = match name {
                    Some(n) => n,
                    None => app_of_config_file(&config)?,
                };
                let created = client.create_app(&app, &org).await?;
                if printer.json() {
                    printer.json_value(&created)?;
                } else {
                    printer.line(format_args!("New app created: {}", created.name));
                }
            }
            AppsCommand::List => {
                let apps = client.list_apps().await?;
                if printer.json() {
                    printer.json_value(&apps)?;
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
                    printer.table(None, &["NAME", "OWNER", "STATUS", "MACHINES"], &rows);
                }
            }
            AppsCommand::Events { app, limit } => {
                let app = ctx.app(&app)?;
                crate::commands::tokens::events(&client, &app, limit, printer).await?;
            }
            AppsCommand::Destroy { name, yes } => {
                let app = client.get_app(&name).await?;
                let question = format!(
                    "Destroy app {} and its {} machine(s)? This cannot be undone",
                    app.name, app.machine_count
                );
                if !printer.confirm(&question, yes)? {
                    printer.note("Nothing destroyed.");
                    return Ok(ExitCode::FAILURE);
                }
                client.delete_app(&name).await?;
                printer.line(format_args!("Destroyed app {name}"));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
