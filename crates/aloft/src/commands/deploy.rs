//! `aloft deploy` (flyctl-behaviour §3): fly.toml → release spec (one flattened machine config
//! per group) → plan shown (machines of removed groups are listed and need a yes) → app
//! directory packed and uploaded unless unchanged → release created on the agent, which carries
//! it out (and resumes it after a restart) while this command streams its progress.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aloft_api::images::image_ref;
use aloft_api::routes::STATUS_CONFIRMATION_REQUIRED;
use aloft_client::{block_on, is_not_found, status_error, Client};
use aloft_config::Loaded;
use aloft_deploy::messages::CreateReleaseRequest;
use aloft_deploy::{DeployEvent, Release, ReleaseStatus};
use anyhow::{anyhow, bail, Context};

use crate::cli::DeployArgs;
use crate::commands::common::{confirm, load_config, resolve_app, spec_from_config, DeployFlags};

/// Everything a deploy needs, resolved from flags and fly.toml.
pub struct DeployInput {
    pub config_path: PathBuf,
    pub loaded: Loaded,
    pub app: String,
    pub flags: DeployFlags,
    pub process_groups: Vec<String>,
    pub yes: bool,
    pub detach: bool,
    /// An image reference to use instead of uploading the directory.
    pub image: Option<String>,
}

pub fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_config(&args.app.config)?;
    let app = match args.app.app.clone() {
        Some(a) => a,
        None if !loaded.config.app.is_empty() => loaded.config.app.clone(),
        None => resolve_app(&args.app)?,
    };
    let input = DeployInput {
        config_path: args.app.config.clone(),
        loaded,
        app,
        flags: DeployFlags {
            strategy: args.strategy,
            max_unavailable: args.max_unavailable,
            wait_timeout: args.wait_timeout,
            update_only: args.update_only,
            ha: args.ha,
            smoke_checks: args.smoke_checks,
            primary_region: args.primary_region,
        },
        process_groups: args.process_groups,
        yes: args.yes,
        detach: args.detach,
        image: args.image,
    };
    let client = Client::from_env();
    block_on(async move {
        match deploy(&client, &input).await? {
            Some(_) => Ok(ExitCode::SUCCESS),
            None => Ok(ExitCode::FAILURE),
        }
    })
}

/// The directory packed as the app image: the config file's directory.
pub fn app_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Runs a deploy; `None` when the user declined the plan (nothing changed).
pub async fn deploy(client: &Client, input: &DeployInput) -> anyhow::Result<Option<Release>> {
    let source = std::fs::read_to_string(&input.config_path).ok();
    let mut spec = spec_from_config(&input.loaded.config, source, &input.flags)?;
    let app = input.app.as_str();
    if let Err(e) = client.get_app(app).await {
        if is_not_found(&e) {
            bail!(
                "app {app} not found: create it with `aloft apps create {app}` (or run `aloft up`)"
            );
        }
        return Err(e);
    }
    // The image is packed (not uploaded) first: the agent's plan names the digest, and
    // nothing is sent that could change the agent before the user agreed to the plan.
    let packed = match &input.image {
        Some(image) => {
            spec.image = image.clone();
            None
        }
        None => {
            let dir = app_dir(&input.config_path);
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
        image_digest: packed.as_ref().map(|p| p.digest.clone()),
        process_groups: filter.map(<[String]>::to_vec),
        confirmed_destroy: Vec::new(),
    };
    // The agent plans: the plan shown is the one it carries out.
    let plan = client
        .plan_release(app, &req)
        .await
        .map_err(old_agent_hint)?;
    if let Some(text) = plan.describe_group_changes() {
        print!("{text}");
    }
    if plan.needs_confirmation() {
        let n = plan.frozen.destroy.len();
        if !confirm(
            &format!(
                "Destroy {n} machine(s) of process groups no longer in {}?",
                input.config_path.display()
            ),
            input.yes,
        )? {
            eprintln!("Nothing deployed.");
            return Ok(None);
        }
    }
    req.confirmed_destroy = plan.destroy_ids();
    if let Some(packed) = packed {
        let hex = aloft_deploy::image::digest_hex(&packed.digest)?.to_string();
        let size = packed.tar.len();
        if client.image_exists(app, &hex).await? {
            println!(
                "Image {} unchanged ({} files)",
                short(&packed.digest),
                packed.files
            );
        } else {
            client
                .upload_image(app, &hex, packed.tar)
                .await
                .context("uploading the app image")?;
            println!(
                "Image {} uploaded ({} files, {} KB)",
                short(&packed.digest),
                packed.files,
                size.div_ceil(1024)
            );
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
    println!("Release v{} created", release.version);
    if input.detach {
        println!("Not waiting (--detach): follow it with `aloft releases -a {app}` and `aloft status -a {app}`");
        return Ok(Some(release));
    }
    let status = follow(client, app, release.version).await?;
    match status {
        (ReleaseStatus::Complete, _) => {
            println!("Release v{} deployed", release.version);
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
) -> anyhow::Result<(ReleaseStatus, Option<String>)> {
    let mut after = 0;
    let mut finished = None;
    let mut failures = 0;
    loop {
        let result = client
            .follow_release(app, version, after, |rec| {
                after = rec.seq;
                println!("  {}", rec.event.describe());
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
