//! `aloft volumes create|list|show|extend|destroy|fork|snapshots list|create [-a APP]`, like
//! `fly volumes`: filesystems of a fixed size on the agent's host that keep a machine's data
//! (`config.mounts`, fly.toml `[[mounts]]`). Output columns follow flyctl's.

use std::process::ExitCode;

use aloft_api::volumes::{CreateVolumeRequest, Volume, VolumeSnapshot};
use aloft_client::block_on;

use crate::cli::{SnapshotsCommand, VolumesCommand};
use crate::commands::Context;
use crate::printer::Printer;

pub fn run(cmd: VolumesCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        VolumesCommand::Create {
            name,
            size,
            region,
            count,
            snapshot_id,
            snapshot_retention,
            no_encryption,
            yes: _,
            app,
        } => {
            if count == 0 {
                anyhow::bail!("--count must be at least 1");
            }
            let req = CreateVolumeRequest {
                name,
                region: region.unwrap_or_default(),
                size_gb: Some(size),
                encrypted: Some(!no_encryption),
                snapshot_id,
                snapshot_retention,
                ..CreateVolumeRequest::default()
            };
            create(&ctx.app(&app)?, req, count, ctx)
        }
        VolumesCommand::List(args) => list(&ctx.app(&args.app)?, ctx),
        VolumesCommand::Show { id, app } => {
            let app = ctx.app(&app)?;
            one(ctx, move |c| async move { c.get_volume(&app, &id).await })
        }
        VolumesCommand::Extend { id, size, app } => extend(&ctx.app(&app)?, &id, size, ctx),
        VolumesCommand::Destroy { id, yes, app } => destroy(&ctx.app(&app)?, &id, yes, ctx),
        VolumesCommand::Fork {
            id,
            name,
            region,
            app,
        } => {
            let req = CreateVolumeRequest {
                name: name.unwrap_or_default(),
                region: region.unwrap_or_default(),
                source_volume_id: Some(id),
                ..CreateVolumeRequest::default()
            };
            let app = ctx.app(&app)?;
            one(
                ctx,
                move |c| async move { c.create_volume(&app, &req).await },
            )
        }
        VolumesCommand::Snapshots(SnapshotsCommand::List { volume_id, app }) => {
            snapshots(&ctx.app(&app)?, &volume_id, ctx)
        }
        VolumesCommand::Snapshots(SnapshotsCommand::Create { volume_id, app }) => {
            snapshot(&ctx.app(&app)?, &volume_id, ctx)
        }
    }
}

/// Runs one request answering a volume and prints it.
fn one<F, Fut>(ctx: &Context, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(aloft_client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Volume>>,
{
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let v = f(client).await?;
        show(printer, &v)?;
        Ok(ExitCode::SUCCESS)
    })
}

fn create(
    app: &str,
    req: CreateVolumeRequest,
    count: u32,
    ctx: &Context,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let mut made = Vec::new();
        for _ in 0..count {
            made.push(client.create_volume(app, &req).await?);
        }
        if printer.json() {
            printer.json_value(&made)?;
            return Ok(ExitCode::SUCCESS);
        }
        for v in &made {
            details(printer, app, v);
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn show(printer: &Printer, v: &Volume) -> anyhow::Result<()> {
    if printer.json() {
        return printer.json_value(v);
    }
    details(printer, "", v);
    Ok(())
}

/// flyctl's `Key: value` block, keys right-aligned.
fn details(printer: &Printer, app: &str, v: &Volume) {
    let mut lines = vec![("ID", v.id.clone()), ("Name", v.name.clone())];
    if !app.is_empty() {
        lines.push(("App", app.to_string()));
    }
    lines.extend([
        ("Region", v.region.clone()),
        ("Zone", v.zone.clone()),
        ("Size GB", v.size_gb.to_string()),
        ("Encrypted", v.encrypted.to_string()),
        ("Created at", v.created_at.clone()),
        ("Snapshot retention", v.snapshot_retention.to_string()),
        ("Scheduled snapshots", v.auto_backup_enabled.to_string()),
        ("State", v.state.clone()),
        (
            "Attached VM",
            v.attached_machine_id.clone().unwrap_or_default(),
        ),
    ]);
    for (k, val) in lines {
        printer.line(format!("{k:>20}: {val}"));
    }
}

fn list(app: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let volumes = client.list_volumes(app).await?;
        if printer.json() {
            printer.json_value(&volumes)?;
            return Ok(ExitCode::SUCCESS);
        }
        if volumes.is_empty() {
            printer.note(format!(
                "app {app} has no volumes (create one with `aloft volumes create NAME -a {app}`)"
            ));
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = volumes.iter().map(row).collect();
        printer.table(
            None,
            &[
                "ID",
                "STATE",
                "NAME",
                "SIZE",
                "REGION",
                "ZONE",
                "ENCRYPTED",
                "ATTACHED VM",
                "CREATED AT",
            ],
            &rows,
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn row(v: &Volume) -> Vec<String> {
    vec![
        v.id.clone(),
        v.state.clone(),
        v.name.clone(),
        format!("{}GB", v.size_gb),
        v.region.clone(),
        v.zone.clone(),
        v.encrypted.to_string(),
        v.attached_machine_id.clone().unwrap_or_default(),
        v.created_at.clone(),
    ]
}

fn extend(app: &str, id: &str, size: u32, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let answer = client.extend_volume(app, id, size).await?;
        if printer.json() {
            printer.json_value(&answer)?;
            return Ok(ExitCode::SUCCESS);
        }
        details(printer, app, &answer.volume);
        if answer.needs_restart {
            printer.line(
                "You will need to stop and start your machine to increase the size of the FS",
            );
        } else {
            printer.note("The filesystem has grown: no restart needed");
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn destroy(app: &str, id: &str, yes: bool, ctx: &Context) -> anyhow::Result<ExitCode> {
    let question = format!(
        "Deleting a volume is not reversible: destroy volume {id} of app {app} and its data?"
    );
    if !ctx.printer.confirm(&question, yes)? {
        return Ok(ExitCode::FAILURE);
    }
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let v = client.destroy_volume(app, id).await?;
        if printer.json() {
            printer.json_value(&v)?;
        } else {
            printer.line(format!("Destroyed volume ID: {} name: {}", v.id, v.name));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn snapshots(app: &str, id: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let snaps = client.list_volume_snapshots(app, id).await?;
        if printer.json() {
            printer.json_value(&snaps)?;
            return Ok(ExitCode::SUCCESS);
        }
        if snaps.is_empty() {
            printer.note(format!("No snapshots available for volume {id}"));
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = snaps.iter().map(snapshot_row).collect();
        printer.table(None, &["ID", "STATUS", "SIZE", "CREATED AT"], &rows);
        Ok(ExitCode::SUCCESS)
    })
}

fn snapshot_row(s: &VolumeSnapshot) -> Vec<String> {
    vec![
        s.id.clone(),
        s.status.clone(),
        s.size.to_string(),
        s.created_at.clone(),
    ]
}

fn snapshot(app: &str, id: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let s = client.create_volume_snapshot(app, id).await?;
        if printer.json() {
            printer.json_value(&s)?;
        } else {
            printer.line(format!("Snapshot {} of volume {id} created", s.id));
        }
        Ok(ExitCode::SUCCESS)
    })
}
