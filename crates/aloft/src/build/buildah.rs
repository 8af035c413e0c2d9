//! Dockerfile builds with buildah (why buildah: ARCHITECTURE.md, "Images are built by buildah").
//!
//! `buildah build --layers` runs every instruction of the Dockerfile (multi-stage, RUN,
//! COPY/ADD, ARG, ENV, WORKDIR, USER, ENTRYPOINT, CMD) with the app directory as context, its
//! output streamed to the terminal; `buildah push <id> oci:<dir>:<tag>` then writes the image as
//! an OCI layout under `<data-dir>/builds/<app>-<tag>/`.
//!
//! The local store keeps one image per app, `localhost/aloft/<app>:build-cache`, so the
//! intermediate images `--layers` made stay and the next deploy reuses every unchanged step;
//! the image of the previous build (its id kept in `<data-dir>/builds/<app>.image-id`) is
//! removed once a new one replaces it, which frees the steps that changed and nothing else.
//!
//! RUN steps run with `--isolation chroot` by default: it needs no OCI runtime, cgroup
//! delegation or network namespace, so it works as root on hybrid cgroups (v1) and inside
//! containers; `ALOFT_BUILD_ISOLATION=oci` runs each step in a runc container instead.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};

use super::stream::{self, Finished, BUILDAH};
use super::{build_tag, fresh_layout_dir, layout, BuiltImage};
use crate::printer::Printer;
use crate::settings::BuildSettings;

/// The local image that keeps an app's layer cache between deploys.
pub fn cache_image(app: &str) -> String {
    format!("localhost/aloft/{app}:build-cache")
}

/// The arguments of `buildah build` for this app and Dockerfile.
pub fn build_argv(
    settings: &BuildSettings,
    app: &str,
    dockerfile: &Path,
    iidfile: &Path,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "build".into(),
        "--isolation".into(),
        settings.isolation.clone().into(),
        "--layers".into(),
        "--file".into(),
        dockerfile.into(),
        "--tag".into(),
        cache_image(app).into(),
        "--iidfile".into(),
        iidfile.into(),
    ];
    if settings.no_cache {
        argv.push("--no-cache".into());
    }
    if let Some(target) = &settings.target {
        argv.extend(["--target".into(), target.into()]);
    }
    if let Some(ignore) = &settings.ignorefile {
        argv.extend(["--ignorefile".into(), ignore.into()]);
    }
    for (k, v) in &settings.args {
        argv.extend(["--build-arg".into(), format!("{k}={v}").into()]);
    }
    argv.push(settings.context.clone().into());
    argv
}

/// Builds the app's Dockerfile and writes the image as an OCI layout (see the module doc).
pub async fn build_image(
    settings: &BuildSettings,
    app: &str,
    dockerfile: &Path,
    printer: &Printer,
) -> anyhow::Result<BuiltImage> {
    let tag = build_tag(settings.label.as_deref())?;
    if let Some(ignore) = &settings.ignorefile {
        if !ignore.is_file() {
            bail!(
                "the ignore file {} does not exist ([build] ignorefile is relative to the \
                 directory of fly.toml)",
                ignore.display()
            );
        }
    }
    std::fs::create_dir_all(&settings.out_dir)
        .with_context(|| format!("creating {}", settings.out_dir.display()))?;
    let iidfile = settings.out_dir.join(format!("{app}.image-id"));
    let previous = std::fs::read_to_string(&iidfile).ok();
    printer.note(format_args!(
        "Building {} with buildah ({} isolation)",
        dockerfile.display(),
        settings.isolation
    ));
    let argv = build_argv(settings, app, dockerfile, &iidfile);
    let built = stream::run(&BUILDAH, stream::command(&BUILDAH, argv), printer, true).await?;
    if !built.status.success() {
        return Err(build_failure(&built, dockerfile));
    }
    let id = std::fs::read_to_string(&iidfile)
        .with_context(|| format!("reading the built image's id from {}", iidfile.display()))?
        .trim()
        .to_string();

    let layout_dir = fresh_layout_dir(&settings.out_dir, &format!("{app}-{tag}"))?;
    let mut push: Vec<OsString> = vec!["push".into(), "--quiet".into()];
    if let Some(format) = &settings.compression {
        push.extend(["--compression-format".into(), format.into()]);
    }
    if let Some(level) = settings.compression_level {
        push.extend(["--compression-level".into(), level.to_string().into()]);
    }
    push.push(id.clone().into());
    push.push(oci_destination(&layout_dir, &tag)?.into());
    let written = async {
        let pushed = stream::run(&BUILDAH, stream::command(&BUILDAH, push), printer, false).await?;
        if !pushed.status.success() {
            bail!(
                "writing the built image to {} failed ({}):\n{}",
                layout_dir.display(),
                pushed.status,
                pushed.tail_text()
            );
        }
        layout::read_summary(&layout_dir, &tag)
    };
    let summary = match written.await {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&layout_dir);
            return Err(e);
        }
    };
    if let Some(old) = previous.map(|p| p.trim().to_string()) {
        if !old.is_empty() && old != id {
            forget_image(&old, printer).await;
        }
    }
    Ok(BuiltImage {
        layout_dir,
        reference: format!("localhost/aloft/{app}:{tag}"),
        tag,
        summary,
    })
}

/// `oci:<dir>:<tag>`; the transport cannot name a directory with a `:` in it.
pub fn oci_destination(dir: &Path, tag: &str) -> anyhow::Result<String> {
    let dir = dir.to_str().filter(|d| !d.contains(':')).ok_or_else(|| {
        anyhow!(
            "{}: an image layout directory cannot contain `:` or non-UTF-8 characters \
                 (set ALOFT_DATA_DIR to another directory)",
            dir.display()
        )
    })?;
    Ok(format!("oci:{dir}:{tag}"))
}

/// Removes a previous build's image; what other images use stays (that is the layer cache).
async fn forget_image(id: &str, printer: &Printer) {
    let cmd = stream::command(&BUILDAH, ["rmi", id]);
    match stream::run(&BUILDAH, cmd, printer, false).await {
        Ok(f) if f.status.success() => {}
        Ok(f) => tracing::debug!(id, output = %f.tail_text(), "previous build image kept"),
        Err(e) => tracing::debug!(id, error = %e, "previous build image kept"),
    }
}

/// The error of a failed `buildah build`: the failing step when buildah named it.
pub fn build_failure(finished: &Finished, dockerfile: &Path) -> anyhow::Error {
    if let Some((step, why)) = finished.tail.iter().rev().find_map(|l| failing_step(l)) {
        return anyhow!(
            "the image build failed at step `{step}` of {} ({why}): the build output above shows why",
            dockerfile.display()
        );
    }
    if let Some(error) = finished
        .tail
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("Error: "))
    {
        return anyhow!(
            "the image build of {} failed: {error} (the build output above shows more)",
            dockerfile.display()
        );
    }
    anyhow!(
        "the image build of {} failed ({}): the build output above shows why",
        dockerfile.display(),
        finished.status
    )
}

/// `Error: building at STEP "RUN exit 3": exit status 3` → (`RUN exit 3`, `exit status 3`).
fn failing_step(line: &str) -> Option<(&str, &str)> {
    let rest = &line[line.find("building at STEP \"")? + "building at STEP \"".len()..];
    let (step, why) = rest.split_once("\": ")?;
    Some((step, why))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_build_command_carries_every_setting() {
        let settings = BuildSettings {
            context: PathBuf::from("/app"),
            isolation: "chroot".into(),
            target: Some("prod".into()),
            ignorefile: Some(PathBuf::from("/app/.ignore")),
            no_cache: true,
            args: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "x y".into())]),
            ..BuildSettings::default()
        };
        let argv = build_argv(
            &settings,
            "web",
            Path::new("/app/Dockerfile.prod"),
            Path::new("/d/web.image-id"),
        );
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            argv.join(" "),
            "build --isolation chroot --layers --file /app/Dockerfile.prod \
             --tag localhost/aloft/web:build-cache --iidfile /d/web.image-id --no-cache \
             --target prod --ignorefile /app/.ignore --build-arg A=1 --build-arg B=x y /app"
        );
    }

    fn finished(lines: &[&str]) -> Finished {
        Finished {
            status: std::process::ExitStatus::from_raw(1 << 8),
            tail: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn a_failure_names_the_failing_step() {
        let f = finished(&[
            "[2/2] STEP 4/8: RUN missing-tool --version",
            "/bin/sh: missing-tool: not found",
            "Error: building at STEP \"RUN missing-tool --version\": exit status 127",
        ]);
        let err = build_failure(&f, Path::new("app/Dockerfile")).to_string();
        assert_eq!(
            err,
            "the image build failed at step `RUN missing-tool --version` of app/Dockerfile \
             (exit status 127): the build output above shows why"
        );
        // The reason may quote paths itself: the step ends at the first `": `.
        let f = finished(&[
            "Error: building at STEP \"COPY busybox /bin/busybox\": checking on sources under \"/a\": copier: stat: \"/busybox\": no such file or directory",
        ]);
        let err = build_failure(&f, Path::new("Dockerfile")).to_string();
        assert!(
            err.starts_with("the image build failed at step `COPY busybox /bin/busybox` of Dockerfile (checking on sources"),
            "{err}"
        );
        let f = finished(&["Error: creating build container: nope:1: image not known"]);
        let err = build_failure(&f, Path::new("Dockerfile")).to_string();
        assert!(err.contains("nope:1: image not known"), "{err}");
        let err = build_failure(&finished(&[]), Path::new("Dockerfile")).to_string();
        assert!(err.contains("exit status: 1"), "{err}");
    }

    #[test]
    fn layout_destinations_refuse_colons() {
        assert_eq!(
            oci_destination(Path::new("/d/web-v1"), "v1").unwrap(),
            "oci:/d/web-v1:v1"
        );
        assert!(oci_destination(Path::new("/d:x/web"), "v1").is_err());
    }
}
