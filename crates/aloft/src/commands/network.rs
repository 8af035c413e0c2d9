//! `aloft ips` and `aloft dig`: the app's addresses (public, Flycast, its machines' private
//! ones) and DNS lookups as the app's machines see them.

use std::process::ExitCode;

use aloft_api::network::{IpAddress, IpKind};
use aloft_client::block_on;

use crate::cli::{AppArgs, DigArgs, IpsCommand};
use crate::commands::Context;

pub fn run_ips(cmd: IpsCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        IpsCommand::List(args) => list(&ctx.app(&args.app)?, ctx),
        IpsCommand::Private(args) => private(&ctx.app(&args.app)?, ctx),
        IpsCommand::AllocateV4 {
            shared,
            region,
            app,
        } => {
            let kind = if shared { IpKind::SharedV4 } else { IpKind::V4 };
            allocate(&app, kind, region, ctx)
        }
        IpsCommand::AllocateV6 {
            private,
            region,
            app,
        } => {
            let kind = if private {
                IpKind::PrivateV6
            } else {
                IpKind::V6
            };
            allocate(&app, kind, region, ctx)
        }
        IpsCommand::Release { address, app } => release(&ctx.app(&app)?, &address, ctx),
    }
}

fn rows(ips: &[IpAddress]) -> Vec<Vec<String>> {
    ips.iter()
        .map(|ip| {
            vec![
                ip.kind.version().to_string(),
                ip.address.clone(),
                ip.kind.label().to_string(),
                ip.region.clone(),
                ip.created_at.clone(),
            ]
        })
        .collect()
}

const HEADER: [&str; 5] = ["VERSION", "IP", "TYPE", "REGION", "CREATED AT"];

fn list(app: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let ips = client.list_ips(app).await?;
        if printer.json() {
            printer.json_value(&ips)?;
        } else if ips.is_empty() {
            printer.note(format!(
                "app {app} has no IP addresses: its services are served on every address of the \
                 agent's host. `aloft ips allocate-v6 --private` gives it a Flycast address"
            ));
        } else {
            printer.table(None, &HEADER, &rows(&ips));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn private(app: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let machines = client.list_machines(app).await?;
        let rows: Vec<Vec<String>> = machines
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    m.process_group().to_string(),
                    m.region.clone(),
                    m.state.to_string(),
                    m.private_ip.clone(),
                ]
            })
            .collect();
        if printer.json() {
            let list: Vec<serde_json::Value> = machines
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "id": m.id, "process_group": m.process_group(), "region": m.region,
                        "state": m.state, "private_ip": m.private_ip,
                    })
                })
                .collect();
            printer.json_value(&list)?;
        } else {
            printer.table(
                None,
                &["ID", "PROCESS", "REGION", "STATE", "PRIVATE IP"],
                &rows,
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn allocate(
    args: &AppArgs,
    kind: IpKind,
    region: Option<String>,
    ctx: &Context,
) -> anyhow::Result<ExitCode> {
    let app = ctx.app(args)?;
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let ip = client.allocate_ip(&app, kind, region).await?;
        if printer.json() {
            printer.json_value(&ip)?;
        } else {
            printer.table(None, &HEADER, &rows(std::slice::from_ref(&ip)));
            if kind == IpKind::PrivateV6 {
                printer.note(format!(
                    "{app}.flycast resolves to {} for machines of the app's organization",
                    ip.address
                ));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn release(app: &str, address: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let ip = client.release_ip(app, address.trim()).await?;
        if printer.json() {
            printer.json_value(&ip)?;
        } else {
            printer.line(format!("Released {} from app {app}", ip.address));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `[TYPE] NAME` → (TYPE, NAME); AAAA when no type is given, like `fly dig`.
fn split_query(query: &[String]) -> anyhow::Result<(String, String)> {
    match query {
        [name] => Ok(("AAAA".to_string(), name.clone())),
        [rtype, name] => Ok((rtype.to_ascii_uppercase(), name.clone())),
        _ => anyhow::bail!(
            "give a name, optionally preceded by a record type: `aloft dig [TYPE] NAME`"
        ),
    }
}

pub fn run_dig(args: DigArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let app = ctx.app(&args.app)?;
    let (rtype, name) = split_query(&args.query)?;
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let answer = client.dig(&app, &name, &rtype).await?;
        if printer.json() {
            printer.json_value(&answer)?;
        } else if args.short {
            for a in &answer.answers {
                printer.line(a);
            }
        } else {
            let source = if answer.authoritative {
                "the agent's .internal records"
            } else {
                "the host's resolvers"
            };
            printer.line(format!(
                ";; {} {} → {} from {source} (as machines of org {} see it)",
                answer.rtype, answer.name, answer.rcode, answer.org
            ));
            for a in &answer.answers {
                printer.line(format!("{}\t{}\t{a}", answer.name, answer.rtype));
            }
        }
        Ok(if answer.rcode == "NOERROR" {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dig_query_is_aaaa_unless_a_type_comes_first() {
        let q = |v: &[&str]| split_query(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            q(&["a.internal"]).unwrap(),
            ("AAAA".into(), "a.internal".into())
        );
        assert_eq!(
            q(&["txt", "_apps.internal"]).unwrap(),
            ("TXT".into(), "_apps.internal".into())
        );
    }
}
