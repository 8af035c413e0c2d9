//! `aloft secrets set|import|list|unset|deploy`, like `fly secrets`: app secrets are
//! environment variables of every machine of the app, sent to the agent once, stored sealed and
//! never shown again (lists show names, keyed digests and whether machines run with them).
//! Unless `--stage`, a change restarts the app's started machines one at a time in the agent
//! (a secrets operation, followed here like a deploy unless `--detach`).

mod dotenv;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use aloft_api::secrets::{SecretsUpdated, UpdateSecrets, STATUS_STAGED};
use aloft_client::{block_on, Client};
use aloft_deploy::ReleaseStatus;
use anyhow::{bail, Context as _};

use crate::cli::{SecretsCommand, SecretsRollout};
use crate::commands::Context;
use crate::printer::Printer;

/// Most bytes read from stdin (`import`, `NAME=-`): the agent's limit on an app's secrets.
const STDIN_LIMIT: u64 = aloft_api::secrets::MAX_TOTAL_BYTES as u64;

pub fn run(cmd: SecretsCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretsCommand::Set {
            pairs,
            rollout,
            app,
        } => {
            let values = parse_pairs(&pairs)?;
            update(&ctx.app(&app)?, values, rollout, ctx)
        }
        SecretsCommand::Import { rollout, app } => {
            let text = read_stdin()?;
            let values: BTreeMap<String, Option<String>> = dotenv::parse(&text)
                .context("reading secrets from stdin")?
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
            if values.is_empty() {
                bail!("stdin held no NAME=VALUE line: nothing to import");
            }
            update(&ctx.app(&app)?, values, rollout, ctx)
        }
        SecretsCommand::List(args) => list(&ctx.app(&args.app)?, ctx),
        SecretsCommand::Unset {
            names,
            rollout,
            app,
        } => {
            let values = names.into_iter().map(|n| (n, None)).collect();
            update(&ctx.app(&app)?, values, rollout, ctx)
        }
        SecretsCommand::Deploy { detach, app } => deploy(&ctx.app(&app)?, detach, ctx),
    }
}

/// `NAME=VALUE` arguments; `NAME=-` takes the value from stdin (once).
fn parse_pairs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let mut values = BTreeMap::new();
    let mut stdin_used = false;
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            // Never echo the argument: it may be a value typed without its name.
            bail!("secrets are given as NAME=VALUE pairs; one argument has no '='");
        };
        let value = if value == "-" {
            if stdin_used {
                bail!("only one secret can read its value from stdin (NAME=-)");
            }
            stdin_used = true;
            read_stdin()?
        } else {
            value.to_string()
        };
        values.insert(name.to_string(), Some(value));
    }
    Ok(values)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .take(STDIN_LIMIT + 1)
        .read_to_string(&mut text)
        .context("reading stdin (UTF-8 text expected)")?;
    if text.len() as u64 > STDIN_LIMIT {
        bail!("stdin holds more than {STDIN_LIMIT} bytes, more than an app's secrets may take");
    }
    Ok(text)
}

fn update(
    app: &str,
    values: BTreeMap<String, Option<String>>,
    rollout: SecretsRollout,
    ctx: &Context,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    let req = UpdateSecrets {
        values,
        stage: rollout.stage,
    };
    block_on(async move {
        let answer = client.update_secrets(app, &req).await?;
        if rollout.stage {
            printer.line(format_args!(
                "Secrets are staged: the machines of {app} get them at their next start, or \
                 run `aloft secrets deploy -a {app}` to restart them now"
            ));
            return Ok(ExitCode::SUCCESS);
        }
        roll_out(&client, app, answer, rollout.detach, printer).await
    })
}

fn deploy(app: &str, detach: bool, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let answer = client.deploy_secrets(app).await?;
        roll_out(&client, app, answer, detach, printer).await
    })
}

/// Follows the restart of the machines (unless `detach`).
async fn roll_out(
    client: &Client,
    app: &str,
    answer: SecretsUpdated,
    detach: bool,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let Some(version) = answer.release else {
        printer.line(format_args!(
            "Secrets are deployed; no machine of {app} is started (each gets them when it starts)"
        ));
        return Ok(ExitCode::SUCCESS);
    };
    let label = aloft_deploy::spec::version_label(version);
    if detach {
        printer.line(format_args!(
            "Restarting the machines of {app} one at a time in the agent ({label}); it goes on \
             without this command (`aloft status -a {app}` shows the machines)"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    printer.line(format_args!(
        "Restarting the machines of {app} one at a time ({label}): it goes on if this command stops"
    ));
    match super::deploy::follow(client, app, version, printer).await? {
        (ReleaseStatus::Complete, _) => Ok(ExitCode::SUCCESS),
        (status, error) => bail!(
            "{label} {}: {}",
            status.as_str(),
            error.unwrap_or_else(|| "no reason given".into())
        ),
    }
}

fn list(app: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let secrets = client.list_secrets(app).await?;
        if printer.json() {
            printer.json_value(&secrets)?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = secrets
            .iter()
            .map(|s| {
                let status = if s.status == STATUS_STAGED {
                    "Staged"
                } else {
                    "Deployed"
                };
                vec![
                    s.name.clone(),
                    s.digest.clone(),
                    status.to_string(),
                    s.created_at.clone(),
                ]
            })
            .collect();
        printer.table(None, &["NAME", "DIGEST", "STATUS", "CREATED AT"], &rows);
        Ok(ExitCode::SUCCESS)
    })
}
