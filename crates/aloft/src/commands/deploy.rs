//! `aloft deploy` (flyctl-behaviour §3): fly.toml → release spec (one flattened machine config
//! per group) → the image: built from the Dockerfile or fetched (`crate::build`), or, with
//! neither a Dockerfile nor an image, the app directory packed (process runtime) → plan shown
//! (machines of removed groups are listed and need a yes) → image uploaded unless unchanged →
//! release created on the agent, which carries it out (and resumes it after a restart) while
//! this command streams its progress. `--build-only` stops once the image is made.

use std::process::ExitCode;
use std::time::Duration;

use aloft_api::images::image_ref;
use aloft_api::routes::STATUS_CONFIRMATION_REQUIRED;
use aloft_config::AppConfig;
use aloft_deploy::messages::{CreateReleaseRequest, RollbackRequest};
use aloft_deploy::{DeployEvent, DeployOptions, Release, ReleaseSpec, ReleaseStatus};
use anyhow::{anyhow, bail, Context as _};

use crate::build::{self, BuiltImage, ImageSource};
use crate::commands::Context;
use crate::printer::Printer;
use crate::settings::DeploySettings;
use aloft_client::{block_on, is_not_found, status_error, Client};

pub fn run(settings: DeploySettings, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    block_on(async move {
        if settings.build_only {
            build_only(&client, &settings, ctx.printer).await?;
            return Ok(ExitCode::SUCCESS);
        }
        match deploy(&client, &settings, ctx.printer).await? {
            Some(_) => Ok(ExitCode::SUCCESS),
            None => Ok(ExitCode::FAILURE),
        }
    })
}

/// Builds the release spec of a config: one flattened machine config per group, with the
/// `[[vm]]` guest when one matches (§2.3–§2.4), and the resolved deploy options.
pub fn spec_from_config(
    config: &AppConfig,
    source: Option<String>,
    options: DeployOptions,
    primary_region: Option<String>,
) -> anyhow::Result<ReleaseSpec> {
    let mut groups = std::collections::BTreeMap::new();
    let mut volumes = std::collections::BTreeMap::new();
    for group in config.process_names() {
        let mut mc = config.machine_config_for(&group);
        mc.guest = config
            .guest_for(&group)
            .map_err(|e| anyhow!("group {group:?}: {e}"))?;
        // The mount flattening kept (the first that applies): its volume settings.
        if let Some(m) = config
            .mounts
            .iter()
            .find(|m| config.applies_to(&m.processes, &group))
        {
            if m.snapshot_retention.is_some() || m.scheduled_snapshots.is_some() {
                volumes.insert(
                    group.clone(),
                    aloft_deploy::spec::VolumeSettings {
                        snapshot_retention: m.snapshot_retention,
                        scheduled_snapshots: m.scheduled_snapshots,
                    },
                );
            }
        }
        groups.insert(group, mc);
    }
    Ok(ReleaseSpec {
        image: String::new(),
        groups,
        default_group: config.default_process_name(),
        primary_region,
        deploy: options,
        source,
        volumes,
    })
}

/// Builds or fetches the container image of a Dockerfile or prebuilt-image source; `None` for
/// the sources that have none (the packed directory, an image the agent has).
async fn make_image(
    source: &ImageSource,
    input: &DeploySettings,
    printer: &Printer,
) -> anyhow::Result<Option<BuiltImage>> {
    let (settings, app) = (&input.build, input.app.as_str());
    build::warn_unused(source, settings, printer);
    match source {
        ImageSource::Dockerfile(dockerfile) => {
            build::buildah::build_image(settings, app, dockerfile, printer)
                .await
                .map(Some)
        }
        ImageSource::Prebuilt(reference) => {
            build::prebuilt::fetch(settings, app, reference, printer)
                .await
                .map(Some)
        }
        ImageSource::Directory | ImageSource::Agent(_) => Ok(None),
    }
}

/// `deploy --build-only`: the image made and kept as an OCI layout, whose path is printed.
async fn build_only(
    client: &Client,
    input: &DeploySettings,
    printer: &Printer,
) -> anyhow::Result<()> {
    let source = build::source(&input.build, &input.loaded.diagnostics)?;
    let Some(built) = make_image(&source, input, printer).await? else {
        bail!(
            "nothing to build: {} (--build-only makes container images)",
            match source {
                ImageSource::Agent(image) =>
                    format!("--image {image} names an image the agent has"),
                _ => format!(
                    "{} has no Dockerfile and [build] names no image; {}",
                    input.build.context.display(),
                    build::PROCESS_RUNTIME_REMARK
                ),
            }
        );
    };
    let s = &built.summary;
    printer.line(format_args!(
        "Image {} ({}, {} layer(s), {} KB)",
        built.reference,
        short(&s.digest),
        s.layers.len(),
        s.size().div_ceil(1024)
    ));
    let argv: Vec<String> = s.entrypoint.iter().chain(&s.cmd).cloned().collect();
    printer.line(format_args!(
        "Runs: {} (user {}, in {})",
        aloft_config::shell_join(&argv),
        if s.user.is_empty() { "root" } else { &s.user },
        if s.working_dir.is_empty() {
            "/"
        } else {
            &s.working_dir
        }
    ));
    if input.push {
        let _layout = RemoveOnDrop(built.clone());
        push(client, &input.app, &built, printer).await?;
        printer.line(format_args!(
            "Deploy it with: aloft deploy --image {}",
            image_ref(&input.app, &s.digest)
        ));
        return Ok(());
    }
    printer.line(format_args!(
        "OCI layout: {} (image {})",
        built.layout_dir.display(),
        built.tag
    ));
    Ok(())
}

/// Runs a deploy; `None` when the user declined the plan (nothing changed).
pub async fn deploy(
    client: &Client,
    input: &DeploySettings,
    printer: &Printer,
) -> anyhow::Result<Option<Release>> {
    let source = std::fs::read_to_string(&input.config_path).ok();
    let mut spec = spec_from_config(
        &input.loaded.config,
        source,
        input.options.clone(),
        input.primary_region.clone(),
    )?;
    let app = input.app.as_str();
    let source = build::source(&input.build, &input.loaded.diagnostics)?;
    if let Err(e) = client.get_app(app).await {
        if is_not_found(&e) {
            bail!(
                "app {app} not found: create it with `aloft apps create {app}` (or run `aloft up`)"
            );
        }
        return Err(e);
    }
    // The image is made (built, fetched or packed; not uploaded) first: the agent's plan names
    // the digest, and
    // nothing is sent that could change the agent before the user agreed to the plan.
    let built = make_image(&source, input, printer).await?;
    // Removed when the deploy ends, whichever way.
    let _layout = built.as_ref().map(|b| RemoveOnDrop(b.clone()));
    let mut image_digest = None;
    let packed = match (&source, &built) {
        (_, Some(built)) => {
            // Named by its manifest digest: pushed once the plan is agreed to.
            spec.image = image_ref(app, &built.summary.digest);
            image_digest = Some(built.summary.digest.clone());
            None
        }
        (ImageSource::Agent(image), None) => {
            spec.image = image.clone();
            None
        }
        (_, None) => {
            printer.note(build::PROCESS_RUNTIME_REMARK);
            let dir = input.build.context.clone();
            let packed = tokio::task::spawn_blocking(move || aloft_deploy::image::pack_dir(&dir))
                .await
                .context("packing the app directory")??;
            spec.image = image_ref(app, &packed.digest);
            Some(packed)
        }
    };
    let filter = (!input.process_groups.is_empty()).then_some(input.process_groups.as_slice());
    let mut req = CreateReleaseRequest {
        spec,
        image_digest: packed.as_ref().map(|p| p.digest.clone()).or(image_digest),
        process_groups: filter.map(<[String]>::to_vec),
        confirmed_destroy: Vec::new(),
    };
    // The agent plans: the plan shown is the one it carries out.
    let plan = client
        .plan_release(app, &req)
        .await
        .map_err(old_agent_hint)?;
    if let Some(text) = plan.describe_group_changes() {
        printer.text(&text);
    }
    if plan.needs_confirmation() {
        let replaced = plan.frozen.replace.len();
        let n = plan.frozen.destroy.len() - replaced;
        let question = match (n, replaced) {
            (_, 0) => format!(
                "Destroy {n} machine(s) of process groups no longer in {}?",
                input.config_path.display()
            ),
            (0, r) => {
                format!("Replace {r} machine(s) whose [[mounts]] changed (their volumes are kept)?")
            }
            (n, r) => format!(
                "Destroy {n} machine(s) of removed process groups and replace {r} whose \
                 [[mounts]] changed (their volumes are kept)?"
            ),
        };
        if !printer.confirm(&question, input.yes)? {
            printer.note("Nothing deployed.");
            return Ok(None);
        }
    }
    req.confirmed_destroy = plan.destroy_ids();
    if let Some(built) = &built {
        push(client, app, built, printer).await?;
    }
    if let Some(packed) = packed {
        let hex = aloft_deploy::image::digest_hex(&packed.digest)?.to_string();
        let size = packed.tar.len();
        if client.image_exists(app, &hex).await? {
            printer.line(format_args!(
                "Image {} unchanged ({} files)",
                short(&packed.digest),
                packed.files
            ));
        } else {
            client
                .upload_image(app, &hex, packed.tar)
                .await
                .context("uploading the app image")?;
            printer.line(format_args!(
                "Image {} uploaded ({} files, {} KB)",
                short(&packed.digest),
                packed.files,
                size.div_ceil(1024)
            ));
        }
    }

    let release = match client.create_release(app, &req).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(api) = status_error(&e) {
                if api.code.as_deref() == Some(STATUS_CONFIRMATION_REQUIRED) {
                    bail!("{}: the app's machines changed since the plan was shown; run the deploy again", api.message);
                }
            }
            return Err(old_agent_hint(e));
        }
    };
    printer.line(format_args!("Release v{} created", release.version));
    if input.detach {
        printer.line(format_args!("Not waiting (--detach): follow it with `aloft releases -a {app}` and `aloft status -a {app}`"));
        return Ok(Some(release));
    }
    let status = follow(client, app, release.version, printer).await?;
    match status {
        (ReleaseStatus::Complete, _) => {
            printer.line(format_args!("Release v{} deployed", release.version));
            Ok(Some(release))
        }
        (s, err) => bail!(
            "release v{} {}: {}",
            release.version,
            s.as_str(),
            err.unwrap_or_else(|| "no reason given".into())
        ),
    }
}

/// `aloft releases rollback [VERSION]`: the agent's plan shown (surplus machines need a yes),
/// then the rollback release followed like a deploy.
pub fn rollback(
    app: &str,
    version: Option<u64>,
    yes: bool,
    detach: bool,
    ctx: &Context,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let mut req = RollbackRequest {
            version,
            confirmed_destroy: Vec::new(),
        };
        let plan = client.plan_rollback(app, &req).await?;
        if let Some(text) = plan.describe_group_changes() {
            printer.text(&text);
        }
        if plan.needs_confirmation() {
            let n = plan.frozen.destroy.len();
            if !printer.confirm(
                &format!("Destroy {n} machine(s) to restore the release's counts?"),
                yes,
            )? {
                printer.note("Nothing rolled back.");
                return Ok(ExitCode::FAILURE);
            }
        }
        req.confirmed_destroy = plan.destroy_ids();
        let release = client.rollback(app, &req).await.map_err(|e| {
            match status_error(&e) {
                Some(api) if api.code.as_deref() == Some(STATUS_CONFIRMATION_REQUIRED) => anyhow!(
                    "{}: the app's machines changed since the plan was shown; run the rollback again",
                    api.message
                ),
                _ => e,
            }
        })?;
        printer.line(format_args!(
            "Release v{} created: {}",
            release.version,
            release.description().to_lowercase()
        ));
        if detach {
            printer.line(format_args!(
                "Not waiting (--detach): follow it with `aloft releases -a {app}`"
            ));
            return Ok(ExitCode::SUCCESS);
        }
        match follow(&client, app, release.version, printer).await? {
            (ReleaseStatus::Complete, _) => {
                printer.line(format_args!("Release v{} deployed", release.version));
                Ok(ExitCode::SUCCESS)
            }
            (s, err) => bail!(
                "release v{} {}: {}",
                release.version,
                s.as_str(),
                err.unwrap_or_else(|| "no reason given".into())
            ),
        }
    })
}

/// Deletes a built image's OCI layout when dropped.
struct RemoveOnDrop(BuiltImage);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

/// Ships a built image to the agent: only the blobs it lacks, then the manifest.
async fn push(
    client: &Client,
    app: &str,
    built: &BuiltImage,
    printer: &Printer,
) -> anyhow::Result<()> {
    let pushed = client
        .push_image_ref(app, &built.layout_dir, Some(&built.tag), |_| {})
        .await
        .with_context(|| format!("pushing image {} to the agent", built.reference))?;
    printer.line(format_args!(
        "Image {} pushed: {} blob(s) sent ({} KB), {} already on the agent",
        short(&pushed.manifest_digest),
        pushed.blobs_sent,
        pushed.bytes_sent.div_ceil(1024),
        pushed.blobs_skipped
    ));
    Ok(())
}

/// An agent without the release routes says so plainly.
fn old_agent_hint(e: anyhow::Error) -> anyhow::Error {
    match status_error(&e) {
        Some(api) if api.message.starts_with("no such endpoint") => {
            e.context("this agent does not carry out deploys yet (release routes missing)")
        }
        _ => e,
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// Follows the release's events until it finishes; reconnects (from the last event seen) when
/// the stream breaks, e.g. while the agent restarts.
pub(crate) async fn follow(
    client: &Client,
    app: &str,
    version: u64,
    printer: &Printer,
) -> anyhow::Result<(ReleaseStatus, Option<String>)> {
    let mut after = 0;
    let mut finished = None;
    let mut failures = 0;
    loop {
        let result = client
            .follow_release(app, version, after, |rec| {
                after = rec.seq;
                printer.line(format_args!("  {}", rec.event.describe()));
                if let DeployEvent::Finished { status, error } = rec.event {
                    finished = Some((status, error));
                }
            })
            .await;
        if let Some(f) = finished.take() {
            return Ok(f);
        }
        match result {
            Err(e) if status_error(&e).is_some() => return Err(e),
            Err(_) | Ok(()) if failures < 120 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.context(format!("lost the progress of release v{version}"))),
            Ok(()) => {
                return Err(anyhow!(
                    "the progress stream of release v{version} ended before the release finished"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn spec_of_the_example_app() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/process-groups/fly.toml");
        let loaded = aloft_config::load(&path).unwrap();
        let flags = crate::settings::DeployFlags {
            ha: true,
            ..Default::default()
        };
        let (options, region) = crate::settings::deploy_options(&flags, &loaded.config).unwrap();
        let spec = spec_from_config(&loaded.config, None, options, region).unwrap();
        assert_eq!(spec.group_names(), vec!["cron", "web", "worker"]);
        assert_eq!(spec.default_group, "cron");
        assert_eq!(spec.primary_region.as_deref(), Some("gru"));
        let web = &spec.groups["web"];
        assert_eq!(
            web.init.cmd,
            Some(vec!["sh".to_string(), "web.sh".to_string()])
        );
        assert_eq!(
            web.init.entrypoint, None,
            "a group command is CMD: the image's ENTRYPOINT stays"
        );
        assert_eq!(web.services.len(), 1);
        assert_eq!(spec.groups["worker"].guest.as_ref().unwrap().cpus, 2);
        assert_eq!(aloft_deploy::plan::new_group_count(&spec, "web"), 2);
        assert_eq!(aloft_deploy::plan::new_group_count(&spec, "cron"), 1);
    }
}
