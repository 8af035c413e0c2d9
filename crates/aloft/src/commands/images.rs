//! `aloft images list` and `aloft image show`: the OCI images pushed to an app, their sizes
//! (blobs and unpacked layers; the list's total counts a layer shared by several images once),
//! layers and process defaults.

use std::process::ExitCode;

use aloft_api::images::OciImageInfo;
use aloft_client::block_on;

use crate::cli::{AppArgs, ImagesCommand};
use crate::commands::Context;

pub fn run(cmd: ImagesCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        ImagesCommand::List(args) => list(&ctx.app(&args.app)?, ctx),
        ImagesCommand::Show { reference, app } => {
            let (app, digest) = parse_reference(&reference, &app, ctx)?;
            show(&app, &digest, ctx)
        }
    }
}

/// `aloft/<app>@sha256:<hex>` → (app, digest); `sha256:<hex>` or `<hex>` → the app of `-a`.
fn parse_reference(
    reference: &str,
    args: &AppArgs,
    ctx: &Context,
) -> anyhow::Result<(String, String)> {
    let r = reference.trim();
    if let Some((repo, digest)) = r.split_once('@') {
        let app = repo.strip_prefix("aloft/").ok_or_else(|| {
            anyhow::anyhow!(
                "image reference {r:?}: expected aloft/<app>@sha256:<hex> (the image_ref `aloft images list` shows)"
            )
        })?;
        return Ok((app.to_string(), check_digest(digest)?));
    }
    Ok((ctx.app(args)?, check_digest(r)?))
}

fn check_digest(d: &str) -> anyhow::Result<String> {
    let full = if d.starts_with("sha256:") {
        d.to_string()
    } else {
        format!("sha256:{d}")
    };
    let hex = &full["sha256:".len()..];
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        anyhow::bail!("{d:?} is not an image digest: expected sha256:<64 lowercase hex digits>");
    }
    Ok(full)
}

/// `12.3 MB`-style size (powers of 1000, as `docker images`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The first 12 hex digits of a digest, as `docker images` shows an id.
fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

fn list(app: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let list = client.oci_images(app).await?;
        if printer.json() {
            printer.json_value(&list)?;
            return Ok(ExitCode::SUCCESS);
        }
        if list.images.is_empty() {
            printer.note(format!("app {app} has no OCI images"));
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = list
            .images
            .iter()
            .map(|i| {
                vec![
                    short(&i.digest),
                    human(i.size),
                    human(i.unpacked_size),
                    i.layers.len().to_string(),
                    i.created_at.clone(),
                    i.image_ref.clone(),
                ]
            })
            .collect();
        printer.table(
            None,
            &["DIGEST", "SIZE", "UNPACKED", "LAYERS", "CREATED", "REF"],
            &rows,
        );
        printer.line(format!(
            "Total: {} ({} unpacked), shared layers counted once; all apps' images on the agent: {} ({} unpacked)",
            human(list.total_size),
            human(list.total_unpacked_size),
            human(list.store_size),
            human(list.store_unpacked_size)
        ));
        Ok(ExitCode::SUCCESS)
    })
}

/// The key/value lines of `image show`.
fn details(i: &OciImageInfo) -> Vec<Vec<String>> {
    let join = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    let rows = [
        ("Ref", i.image_ref.clone()),
        ("Digest", i.digest.clone()),
        ("Size", format!("{} ({} bytes)", human(i.size), i.size)),
        (
            "Unpacked",
            format!("{} ({} bytes)", human(i.unpacked_size), i.unpacked_size),
        ),
        ("Created", i.created_at.clone()),
        ("Entrypoint", join(&i.config.entrypoint)),
        ("Cmd", join(&i.config.cmd)),
        ("Workdir", i.config.workdir.clone().unwrap_or_default()),
        ("User", i.config.user.clone().unwrap_or_default()),
        ("Env", i.config.env.join(" ")),
        ("Exposed ports", i.config.exposed_ports.join(" ")),
    ];
    rows.into_iter()
        .map(|(k, v)| vec![k.to_string(), v])
        .collect()
}

fn show(app: &str, digest: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let image = client.oci_image(app, digest).await?;
        if printer.json() {
            printer.json_value(&image)?;
            return Ok(ExitCode::SUCCESS);
        }
        let rows = details(&image);
        let width = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        for r in &rows {
            printer.line(format!(
                "{:width$}  {}",
                format!("{}:", r[0]),
                r[1],
                width = width + 1
            ));
        }
        printer.line("");
        let layers: Vec<Vec<String>> = image
            .layers
            .iter()
            .map(|l| {
                vec![
                    short(&l.digest),
                    human(l.size),
                    human(l.unpacked_size),
                    l.media_type.clone(),
                ]
            })
            .collect();
        printer.table(
            Some("Layers (bottom first)"),
            &["DIGEST", "SIZE", "UNPACKED", "MEDIA TYPE"],
            &layers,
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_sizes_read_as_docker_shows_them() {
        let hex = "ab".repeat(32);
        assert_eq!(check_digest(&hex).unwrap(), format!("sha256:{hex}"));
        assert_eq!(
            check_digest(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        let err = check_digest("sha256:xyz").unwrap_err().to_string();
        assert!(err.contains("not an image digest"), "{err}");
        assert_eq!(short(&format!("sha256:{hex}")), "abababababab");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1_500), "1.5 kB");
        assert_eq!(human(123_400_000), "123.4 MB");
    }
}
