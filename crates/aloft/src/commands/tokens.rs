//! `aloft tokens create|list|revoke` (flyctl's `fly tokens`) and `aloft apps events`: the
//! agent's API tokens, and who changed an app.

use std::process::ExitCode;

use aloft_api::tokens::{AppEvent, CreateTokenRequest, TokenInfo, TokenKind};
use aloft_api::GoDuration;
use aloft_client::{block_on, Client};

use crate::cli::{AppArgs, TokensCommand};
use crate::commands::Context;
use crate::printer::Printer;

pub fn run(cmd: TokensCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::Create {
            kind,
            app,
            config,
            name,
            expiry,
        } => {
            // A deploy token needs its app: flag > ALOFT_APP > fly.toml, as every app command.
            // A read-only token is bound to an app only when one is named.
            let app = match kind {
                TokenKind::Deploy => Some(ctx.app(&AppArgs { app, config })?),
                _ => app.filter(|a| !a.is_empty()),
            };
            let req = CreateTokenRequest {
                kind,
                app,
                name,
                expiry: expiry.map(GoDuration),
            };
            create(&req, ctx)
        }
        TokensCommand::List => list(ctx),
        TokensCommand::Revoke { id } => revoke(&id, ctx),
    }
}

fn create(req: &CreateTokenRequest, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let created = client.create_token(req).await?;
        if printer.json() {
            printer.json_value(&created)?;
        } else {
            // The token alone on stdout, so `$(aloft tokens create …)` captures it.
            printer.line(&created.token);
        }
        let info = &created.info;
        printer.warn(format_args!(
            "this token is shown only once: keep it secret. Token {} (id {}) is a {} token that \
             may {}; it expires {}; `aloft tokens revoke {}` revokes it",
            info.name,
            info.id,
            info.kind,
            info.kind.describe(info.app.as_deref()),
            info.expires_at.as_deref().unwrap_or("never"),
            info.id,
        ));
        Ok(ExitCode::SUCCESS)
    })
}

fn dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".to_string())
}

fn list(ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let tokens = client.list_tokens().await?;
        if printer.json() {
            printer.json_value(&tokens)?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = tokens
            .iter()
            .map(|t: &TokenInfo| {
                vec![
                    t.id.clone(),
                    t.name.clone(),
                    t.kind.to_string(),
                    dash(&t.app),
                    t.created_at.clone(),
                    t.expires_at.clone().unwrap_or_else(|| "never".into()),
                    dash(&t.last_used_at),
                    dash(&t.revoked_at),
                ]
            })
            .collect();
        printer.table(
            None,
            &[
                "ID",
                "NAME",
                "KIND",
                "APP",
                "CREATED",
                "EXPIRES",
                "LAST USED",
                "REVOKED",
            ],
            &rows,
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn revoke(id: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let revoked = client.revoke_token(id).await?;
        if printer.json() {
            printer.json_value(&revoked)?;
        } else {
            printer.line(format_args!(
                "Revoked token {} ({})",
                revoked.name, revoked.id
            ));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `aloft apps events`: the app's events, newest first.
pub async fn events(
    client: &Client,
    app: &str,
    limit: Option<u64>,
    printer: &Printer,
) -> anyhow::Result<()> {
    let events = client.app_events(app, limit).await?;
    if printer.json() {
        return printer.json_value(&events);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e: &AppEvent| vec![e.at.clone(), e.actor.clone(), e.message.clone()])
        .collect();
    printer.table(None, &["AT", "ACTOR", "MESSAGE"], &rows);
    Ok(())
}
