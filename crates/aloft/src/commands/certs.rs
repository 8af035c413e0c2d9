//! `aloft certs add|list|show|remove HOST [-a APP]`, like `fly certs`: the custom hostnames an
//! app answers at on the agent's shared 80/443 (routed by Host and TLS SNI) and their
//! certificates (self-signed by default, PEM files with `--cert/--key`, or ACME with `--acme`).

use std::process::ExitCode;

use aloft_api::certs::{AddCertificate, Certificate, SOURCE_ACME, STATUS_READY};
use aloft_client::block_on;
use anyhow::Context as _;

use crate::cli::CertsCommand;
use crate::commands::Context;
use crate::printer::Printer;

pub fn run(cmd: CertsCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Add {
            hostname,
            cert,
            key,
            acme,
            app,
        } => {
            let read = |p: Option<std::path::PathBuf>, what: &str| {
                p.map(|p| {
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading the {what} {}", p.display()))
                })
                .transpose()
            };
            let req = AddCertificate {
                hostname,
                chain_pem: read(cert, "certificate chain")?,
                key_pem: read(key, "private key")?,
                acme,
            };
            add(&ctx.app(&app)?, req, ctx)
        }
        CertsCommand::List(args) => list(&ctx.app(&args.app)?, ctx),
        CertsCommand::Show { hostname, app } => show(&ctx.app(&app)?, &hostname, ctx),
        CertsCommand::Remove { hostname, yes, app } => remove(&ctx.app(&app)?, &hostname, yes, ctx),
    }
}

fn add(app: &str, req: AddCertificate, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let cert = client.add_certificate(app, &req).await?;
        if printer.json() {
            printer.json_value(&cert)?;
            return Ok(ExitCode::SUCCESS);
        }
        printer.line(format!(
            "You are creating a certificate for {}",
            cert.hostname
        ));
        if cert.source == SOURCE_ACME && cert.status != STATUS_READY {
            printer.line(format!(
                "It will be obtained through ACME once {} points at this agent (HTTP-01 on port \
                 80 or TLS-ALPN-01 on 443); a self-signed certificate is served meanwhile.",
                cert.hostname
            ));
        }
        printer.line("");
        details(printer, &cert);
        Ok(ExitCode::SUCCESS)
    })
}

fn list(app: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let certs = client.list_certificates(app).await?;
        if printer.json() {
            printer.json_value(&certs)?;
            return Ok(ExitCode::SUCCESS);
        }
        if certs.is_empty() {
            printer.note(format!(
                "app {app} has no custom hostnames (add one with `aloft certs add HOST -a {app}`)"
            ));
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = certs
            .iter()
            .map(|c| {
                vec![
                    c.hostname.clone(),
                    c.created_at.clone(),
                    short_status(&c.status),
                ]
            })
            .collect();
        printer.table(None, &["Host Name", "Added", "Status"], &rows);
        Ok(ExitCode::SUCCESS)
    })
}

fn show(app: &str, hostname: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let cert = client.get_certificate(app, hostname).await?;
        if printer.json() {
            printer.json_value(&cert)?;
            return Ok(ExitCode::SUCCESS);
        }
        let state = match (cert.status == STATUS_READY, &cert.not_after) {
            (true, _) => "has been issued".to_string(),
            // An ACME renewal failed: the current certificate is still served.
            (false, Some(until)) => format!("is served until {until}, but {}", cert.status),
            (false, None) => format!("is not ready: {}", cert.status),
        };
        printer.line(format!("The certificate for {} {state}.", cert.hostname));
        printer.line("");
        details(printer, &cert);
        Ok(ExitCode::SUCCESS)
    })
}

fn remove(app: &str, hostname: &str, yes: bool, ctx: &Context) -> anyhow::Result<ExitCode> {
    let question =
        format!("Remove hostname {hostname} from app {app}? It will no longer answer there");
    if !ctx.printer.confirm(&question, yes)? {
        return Ok(ExitCode::FAILURE);
    }
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let cert = client.remove_certificate(app, hostname).await?;
        if printer.json() {
            printer.json_value(&cert)?;
        } else {
            printer.line(format!(
                "Certificate {} deleted from app {app}",
                cert.hostname
            ));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `Ready`, `Awaiting issuance`…: flyctl's capitalised status words.
fn status_word(status: &str) -> String {
    let mut chars = status.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A status as the list shows it: `Failed` for `failed: why… (next attempt at …)`; `aloft certs
/// show` has the whole of it.
fn short_status(status: &str) -> String {
    status_word(status.split(':').next().unwrap_or(status))
}

/// The `Key = value` block of `fly certs show`.
fn details(printer: &Printer, c: &Certificate) {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let lines = [
        ("Hostname", c.hostname.clone()),
        ("Source", c.source.clone()),
        ("Status", status_word(&c.status)),
        ("Not Before", dash(&c.not_before)),
        ("Expires", dash(&c.not_after)),
        ("Added to App", c.created_at.clone()),
        ("App", c.app.clone()),
    ];
    for (k, v) in lines {
        printer.line(format!("{k:<25} = {v}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_a_failure_status_without_its_explanation() {
        let failed = "failed: could not read the ACME directory at https://ca.example/dir: \
                      refused; check the URL (next attempt at 2026-12-05T11:28:25Z)";
        assert_eq!(short_status(failed), "Failed");
        assert_eq!(short_status("renewal failed: gave up"), "Renewal failed");
        assert_eq!(short_status("awaiting issuance"), "Awaiting issuance");
        assert_eq!(short_status("ready"), "Ready");
    }
}
