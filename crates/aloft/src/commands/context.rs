//! `aloft context add|use|list|show|rm`: named agents in the user's config dir (see
//! `crate::contexts`). Nothing here talks to an agent: a context is checked when it is used.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;

use crate::cli::ContextCommand;
use crate::commands::Context;
use crate::contexts::{self, AgentContext, ContextFile, LOCAL};
use crate::settings;

pub fn run(cmd: ContextCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let dir = settings::user_config_dir(ctx.env).ok_or_else(|| {
        anyhow!("there is no config dir for contexts: set HOME or XDG_CONFIG_HOME")
    })?;
    let mut file = ContextFile::load(&dir)?;
    let printer = ctx.printer;
    match cmd {
        ContextCommand::Add {
            name,
            url,
            token_stdin,
            fingerprint,
            description,
            use_it,
        } => {
            contexts::check_name(&name)?;
            contexts::check_url(&url)?;
            if file.contexts.contains_key(&name) {
                bail!("a context named `{name}` exists; remove it first with `aloft context rm {name}`");
            }
            if let Some(f) = &fingerprint {
                check_fingerprint(f)?;
            }
            let token = if token_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the token from stdin")?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    bail!("--token-stdin: stdin held no token");
                }
                Some(token)
            } else {
                None
            };
            file.contexts.insert(
                name.clone(),
                AgentContext {
                    url: url.clone(),
                    token,
                    fingerprint,
                    description,
                },
            );
            if use_it {
                file.current = Some(name.clone());
            }
            file.save(&dir)?;
            printer.line(format_args!("Added context `{name}` ({url})"));
            if use_it {
                printer.line(format_args!("Current context is now `{name}`"));
            }
        }
        ContextCommand::Use { name } => {
            file.get(&name)?;
            file.current = (name != LOCAL).then(|| name.clone());
            file.save(&dir)?;
            printer.line(format_args!("Current context is now `{name}`"));
            if ctx.env.get("ALOFT_API_URL").is_some() {
                printer.warn("ALOFT_API_URL is set: it wins over the current context");
            }
        }
        ContextCommand::Show => {
            let name = ctx
                .env
                .get("ALOFT_CONTEXT")
                .unwrap_or(file.current_name())
                .to_string();
            printer.line(name);
        }
        ContextCommand::List => list(&file, ctx)?,
        ContextCommand::Rm { names, force } => {
            for name in &names {
                if name == LOCAL {
                    bail!("`{LOCAL}` is built in and cannot be removed");
                }
                file.get(name)?;
                if file.current.as_deref() == Some(name) && !force {
                    bail!(
                        "`{name}` is the current context; pass --force to remove it (`{LOCAL}` \
                         becomes current) or `aloft context use` another first"
                    );
                }
            }
            for name in &names {
                file.contexts.remove(name);
                if file.current.as_deref() == Some(name) {
                    file.current = None;
                }
            }
            file.save(&dir)?;
            for name in &names {
                printer.line(format_args!("Removed context `{name}`"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `context list --json`.
#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    current: bool,
    url: &'a str,
    description: &'a str,
    /// Whether the context keeps a token (never the token itself).
    token: bool,
}

fn list(file: &ContextFile, ctx: &Context) -> anyhow::Result<()> {
    let current = file.current_name();
    let local_url = settings::ApiSettings::resolve(ctx.env, None).url;
    let mut rows = vec![Row {
        name: LOCAL,
        current: current == LOCAL,
        url: &local_url,
        description: "the local agent of the data dir",
        token: false,
    }];
    rows.extend(file.contexts.iter().map(|(name, c)| Row {
        name,
        current: current == name,
        url: &c.url,
        description: c.description.as_deref().unwrap_or(""),
        token: c.token.is_some(),
    }));
    if ctx.printer.json() {
        return ctx.printer.json_value(&rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{}{}", r.name, if r.current { " *" } else { "" }),
                r.url.to_string(),
                r.description.to_string(),
            ]
        })
        .collect();
    ctx.printer
        .table(None, &["NAME", "URL", "DESCRIPTION"], &table);
    Ok(())
}

/// `sha256:` and 64 hex digits (colons between byte pairs allowed, as `openssl` prints them).
fn check_fingerprint(f: &str) -> anyhow::Result<()> {
    let hex: String = f
        .strip_prefix("sha256:")
        .unwrap_or("")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("invalid fingerprint `{f}`: write sha256: and 64 hex digits, as `aloft agent --tls` prints it");
    }
    Ok(())
}
