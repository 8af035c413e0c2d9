//! Image production: what a deploy runs, made on this machine.
//!
//! [`source`] decides, from the resolved [`BuildSettings`] and the config's diagnostics:
//! * an image given (`--image`, `[build] image`): a reference the agent resolves itself
//!   (`dir:///path`, `/path`, `aloft/<app>@sha256:…`) goes to it as it is; any other is a
//!   container image, fetched into an OCI layout by [`prebuilt::fetch`] (skopeo: the local
//!   buildah/podman store, then the local Docker engine, then the registry);
//! * a Dockerfile (`--dockerfile`, `[build] dockerfile`, else `Dockerfile` beside fly.toml):
//!   built by [`buildah::build_image`] into an OCI layout;
//! * neither: the app directory is packed as it is today (`aloft_deploy::image::pack_dir`) and
//!   machines run on the process runtime ([`PROCESS_RUNTIME_REMARK`]).
//!
//! `[build]` keys Aloft cannot carry out (buildpacks, builtins, compose) are refused here, at
//! their file:line:col, unless an image is given instead; `compression`/`compression_level`
//! apply when a layout is written and are said to be ignored when none is.
//!
//! Layouts are written under `<data-dir>/builds/`; the caller removes one once it has been
//! shipped ([`BuiltImage::remove`]).

pub mod buildah;
pub mod layout;
pub mod prebuilt;
pub mod stream;

use std::path::{Path, PathBuf};

use aloft_config::{Diagnostics, Severity};
use anyhow::bail;

use crate::printer::Printer;
use crate::settings::BuildSettings;

pub use layout::ImageSummary;

/// Said once per deploy of an app that has neither a Dockerfile nor an image.
pub const PROCESS_RUNTIME_REMARK: &str = "no Dockerfile: machines run as host processes in a copy \
     of the app directory (no isolation, listen on $PORT)";

/// Where a deploy's image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// Neither a Dockerfile nor an image: the app directory, packed (process runtime).
    Directory,
    /// Built from this Dockerfile.
    Dockerfile(PathBuf),
    /// A prebuilt container image reference, fetched into an OCI layout.
    Prebuilt(String),
    /// A reference the agent resolves itself: `dir:///path`, `/path`, `aloft/<app>@sha256:…`.
    Agent(String),
}

/// A container image written as an OCI image layout, ready to be shipped.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The OCI layout directory (`index.json`, `blobs/sha256/…`).
    pub layout_dir: PathBuf,
    /// The image's name inside the layout (`org.opencontainers.image.ref.name`), unique per
    /// build: `deployment-<unix ms>` or `--image-label`.
    pub tag: String,
    /// What the image was made from: `localhost/aloft/<app>:<tag>` for a build, the given
    /// reference for a prebuilt image.
    pub reference: String,
    /// The image config: how its machines run.
    pub summary: ImageSummary,
}

impl BuiltImage {
    /// Deletes the layout (after it was shipped, or when the deploy stops).
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.layout_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Where the deploy's image comes from (see the module doc); refuses `[build]` keys Aloft
/// cannot build with unless an image is given.
pub fn source(settings: &BuildSettings, diagnostics: &Diagnostics) -> anyhow::Result<ImageSource> {
    if let Some(image) = &settings.image {
        return Ok(if is_agent_reference(image) {
            ImageSource::Agent(image.clone())
        } else {
            ImageSource::Prebuilt(image.clone())
        });
    }
    refuse_unbuildable(diagnostics)?;
    if settings.dockerfile.is_file() {
        return Ok(ImageSource::Dockerfile(settings.dockerfile.clone()));
    }
    if settings.dockerfile_named {
        bail!(
            "the Dockerfile {} does not exist (named by --dockerfile or [build] dockerfile, \
             which is relative to the directory of fly.toml)",
            settings.dockerfile.display()
        );
    }
    Ok(ImageSource::Directory)
}

/// A reference the agent resolves itself rather than a container image.
fn is_agent_reference(image: &str) -> bool {
    image.starts_with("dir://") || image.starts_with('/') || aloft_api_uploaded(image)
}

/// `aloft/<app>@sha256:<hex>`: an app directory uploaded earlier.
fn aloft_api_uploaded(image: &str) -> bool {
    image
        .strip_prefix("aloft/")
        .and_then(|rest| rest.split_once("@sha256:"))
        .is_some_and(|(app, hex)| !app.contains('/') && hex.len() == 64)
}

/// The error of a config that asks for a build Aloft cannot do, each key shown at its place.
fn refuse_unbuildable(diagnostics: &Diagnostics) -> anyhow::Result<()> {
    let refused: Vec<String> = diagnostics
        .deploy_refusals()
        .map(|d| {
            let mut d = d.clone();
            d.severity = Severity::Error;
            d.to_string()
        })
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    bail!(
        "deploy refused: the config asks for a build Aloft cannot do\n{}",
        refused.join("")
    )
}

/// Says which build settings this source does not use, so none is ignored silently: build
/// args, target, ignore file and `--no-cache` only matter to a Dockerfile build, compression
/// only when a layout is written, and a Dockerfile beside fly.toml is not built when an image
/// is given.
pub fn warn_unused(source: &ImageSource, settings: &BuildSettings, printer: &Printer) {
    let building = matches!(source, ImageSource::Dockerfile(_));
    let writes_layout = matches!(
        source,
        ImageSource::Dockerfile(_) | ImageSource::Prebuilt(_)
    );
    let unused: Vec<&str> = [
        (
            "[build.args] / --build-arg",
            !building && !settings.args.is_empty(),
        ),
        ("build-target", !building && settings.target.is_some()),
        (
            "[build] ignorefile",
            !building && settings.ignorefile.is_some(),
        ),
        ("--no-cache", !building && settings.no_cache),
        (
            "[build] compression",
            !writes_layout && settings.compression.is_some(),
        ),
        (
            "[build] compression_level",
            !writes_layout && settings.compression_level.is_some(),
        ),
        ("--image-label", !writes_layout && settings.label.is_some()),
    ]
    .into_iter()
    .filter_map(|(what, unused)| unused.then_some(what))
    .collect();
    let why = match source {
        ImageSource::Directory => "no Dockerfile is built and no image is written",
        ImageSource::Agent(_) => "the image is one the agent has; nothing is built",
        ImageSource::Prebuilt(_) => "the image is prebuilt; nothing is built",
        ImageSource::Dockerfile(_) => "",
    };
    if !unused.is_empty() {
        printer.warn(format_args!("{} ignored: {why}", unused.join(", ")));
    }
    let image_given = matches!(source, ImageSource::Agent(_) | ImageSource::Prebuilt(_));
    if image_given && settings.dockerfile.is_file() {
        printer.warn(format_args!(
            "{} is not built: an image is given ([build] image or --image)",
            settings.dockerfile.display()
        ));
    }
}

/// A layout directory under `out_dir` for `name`, emptied.
fn fresh_layout_dir(out_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let dir = out_dir.join(name);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => {}
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    Ok(dir)
}

/// A tag unique to this build: `--image-label`, else `deployment-<unix ms>`.
fn build_tag(label: Option<&str>) -> anyhow::Result<String> {
    let Some(label) = label else {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        return Ok(format!("deployment-{ms}"));
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if label.is_empty()
        || label.len() > 128
        || label.starts_with(['.', '-'])
        || !label.chars().all(ok_char)
    {
        bail!(
            "--image-label {label:?} is not a valid tag: up to 128 letters, digits, `_`, `.` and \
             `-`, not starting with `.` or `-`"
        );
    }
    Ok(label.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> BuildSettings {
        BuildSettings {
            context: dir.to_path_buf(),
            dockerfile: dir.join("Dockerfile"),
            isolation: "chroot".into(),
            ..BuildSettings::default()
        }
    }

    #[test]
    fn the_source_follows_image_then_dockerfile_then_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let none = Diagnostics::default();
        let mut s = settings(tmp.path());
        assert_eq!(source(&s, &none).unwrap(), ImageSource::Directory);
        std::fs::write(tmp.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(
            source(&s, &none).unwrap(),
            ImageSource::Dockerfile(tmp.path().join("Dockerfile"))
        );
        let hex = "a".repeat(64);
        for (image, agent) in [
            ("dir:///srv/app".to_string(), true),
            ("/srv/app".to_string(), true),
            (format!("aloft/web@sha256:{hex}"), true),
            ("localhost/web:1".to_string(), false),
            (
                "registry.example.com/team/web@sha256:abc".to_string(),
                false,
            ),
            ("nginx".to_string(), false),
        ] {
            s.image = Some(image.clone());
            let want = if agent {
                ImageSource::Agent(image.clone())
            } else {
                ImageSource::Prebuilt(image.clone())
            };
            assert_eq!(source(&s, &none).unwrap(), want, "{image}");
        }
    }

    #[test]
    fn a_named_dockerfile_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = settings(tmp.path());
        s.dockerfile = tmp.path().join("docker/Dockerfile.prod");
        s.dockerfile_named = true;
        let err = source(&s, &Diagnostics::default()).unwrap_err().to_string();
        assert!(
            err.contains("docker/Dockerfile.prod") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn buildpacks_are_refused_at_their_place_unless_an_image_is_given() {
        let loaded = aloft_config::parse_str(
            "app = 'a'\n[build]\nbuilder = 'paketobuildpacks/builder:base'\n",
            aloft_config::Format::Toml,
            "fly.toml",
        );
        let tmp = tempfile::tempdir().unwrap();
        let mut s = settings(tmp.path());
        let err = source(&s, &loaded.diagnostics).unwrap_err().to_string();
        assert!(err.contains("fly.toml:3:11"), "{err}");
        assert!(err.contains("Cloud Native Buildpacks"), "{err}");
        assert!(err.contains("write a Dockerfile"), "{err}");
        s.image = Some("localhost/prebuilt:1".into());
        assert!(source(&s, &loaded.diagnostics).is_ok());
    }

    #[test]
    fn settings_a_source_does_not_use_are_warned_about() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = settings(tmp.path());
        s.args.insert("A".into(), "1".into());
        s.compression = Some("zstd".into());
        let warned = |source: &ImageSource, s: &BuildSettings| {
            let (p, _, err) = crate::printer::capture::printer(Default::default());
            warn_unused(source, s, &p);
            err.text()
        };
        let dockerfile = ImageSource::Dockerfile(s.dockerfile.clone());
        assert_eq!(warned(&dockerfile, &s), "");
        assert_eq!(
            warned(&ImageSource::Directory, &s),
            "warning: [build.args] / --build-arg, [build] compression ignored: no Dockerfile \
             is built and no image is written\n"
        );
        std::fs::write(&s.dockerfile, "FROM scratch\n").unwrap();
        s.compression = None;
        let text = warned(&ImageSource::Prebuilt("localhost/x:1".into()), &s);
        assert!(
            text.contains("[build.args] / --build-arg ignored: the image is prebuilt"),
            "{text}"
        );
        assert!(
            text.contains("Dockerfile is not built: an image is given"),
            "{text}"
        );
    }

    #[test]
    fn tags_are_unique_or_checked() {
        assert!(build_tag(None).unwrap().starts_with("deployment-"));
        assert_eq!(build_tag(Some("v1.2_rc-3")).unwrap(), "v1.2_rc-3");
        for bad in ["", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(build_tag(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
