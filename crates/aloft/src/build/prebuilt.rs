//! Prebuilt images (`[build] image`, `--image`): skopeo copies the image into an OCI layout
//! from the first place that has it: the local buildah/podman store (`containers-storage:`),
//! the local Docker engine when one answers (`docker-daemon:`), then its registry
//! (`docker://`, the OCI distribution API). A registry that cannot be reached and an image
//! that is nowhere are errors that name the registry and the reference.
//!
//! Registries on `localhost`/`127.0.0.1`/`[::1]` are used without TLS verification (local test
//! registries are plain HTTP or self-signed); credentials are skopeo's own
//! (`${XDG_RUNTIME_DIR}/containers/auth.json`, `~/.docker/config.json`).

use std::path::Path;

use anyhow::{anyhow, bail};

use super::buildah::oci_destination;
use super::stream::{self, Finished, SKOPEO};
use super::{build_tag, fresh_layout_dir, layout, BuiltImage};
use crate::printer::Printer;
use crate::settings::BuildSettings;

/// Where a reference is looked up, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    LocalStore,
    /// The Docker engine at this host (`None`: skopeo's default socket).
    DockerEngine(Option<String>),
    Registry(String),
}

impl Place {
    fn describe(&self) -> String {
        match self {
            Place::LocalStore => "the local buildah/podman store".into(),
            Place::DockerEngine(_) => "the local Docker engine".into(),
            Place::Registry(host) => format!("the registry {host}"),
        }
    }
}

/// Copies `reference` into a fresh OCI layout (see the module doc).
pub async fn fetch(
    settings: &BuildSettings,
    app: &str,
    reference: &str,
    printer: &Printer,
) -> anyhow::Result<BuiltImage> {
    if reference.trim().is_empty() || reference.contains(char::is_whitespace) {
        bail!("{reference:?} is not an image reference");
    }
    let tag = build_tag(settings.label.as_deref())?;
    let layout_dir = fresh_layout_dir(&settings.out_dir, &format!("{app}-{tag}"))?;
    let destination = oci_destination(&layout_dir, &tag)?;
    let mut places = vec![Place::LocalStore];
    if let Some(engine) = docker_engine(settings.docker_host.as_deref()) {
        places.push(Place::DockerEngine(engine));
    }
    let host = registry_host(reference);
    if host != "localhost" {
        places.push(Place::Registry(host.clone()));
    }
    let mut missed = Vec::new();
    for place in &places {
        let finished = copy(place, reference, &destination, settings, printer).await?;
        if finished.status.success() {
            printer.note(format_args!(
                "Image {reference} taken from {}",
                place.describe()
            ));
            let summary = layout::read_summary(&layout_dir, &tag).inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&layout_dir);
            })?;
            return Ok(BuiltImage {
                layout_dir,
                tag,
                reference: reference.to_string(),
                summary,
            });
        }
        let error = last_error(&finished);
        tracing::debug!(?place, %error, "image not taken");
        if let Place::Registry(host) = place {
            let _ = std::fs::remove_dir_all(&layout_dir);
            return Err(registry_error(host, reference, &error, &missed));
        }
        missed.push(place.describe());
    }
    let _ = std::fs::remove_dir_all(&layout_dir);
    Err(anyhow!(
        "the image {reference} does not exist: not in {}; a `localhost/…` reference names a local \
         image (build it with `buildah build -t {reference} .`, or check `buildah images`)",
        missed.join(" nor in ")
    ))
}

/// One `skopeo copy` from `place`.
async fn copy(
    place: &Place,
    reference: &str,
    destination: &str,
    settings: &BuildSettings,
    printer: &Printer,
) -> anyhow::Result<Finished> {
    let mut argv: Vec<String> = vec!["copy".into()];
    if let Some(format) = &settings.compression {
        argv.extend(["--dest-compress-format".into(), format.clone()]);
    }
    if let Some(level) = settings.compression_level {
        argv.extend(["--dest-compress-level".into(), level.to_string()]);
    }
    let source = match place {
        Place::LocalStore => format!("containers-storage:{reference}"),
        Place::DockerEngine(host) => {
            if let Some(host) = host {
                argv.extend(["--src-daemon-host".into(), host.clone()]);
            }
            format!("docker-daemon:{}", with_tag(reference))
        }
        Place::Registry(host) => {
            if is_loopback(host) {
                argv.push("--src-tls-verify=false".into());
            }
            format!("docker://{reference}")
        }
    };
    argv.extend([source, destination.to_string()]);
    let show = matches!(place, Place::Registry(_));
    if show {
        printer.note(format_args!(
            "Fetching {reference} from {}",
            place.describe()
        ));
    }
    stream::run(&SKOPEO, stream::command(&SKOPEO, argv), printer, show).await
}

/// The Docker engine to ask: `DOCKER_HOST` when set, else the default socket when something
/// listens on it. `None`: no engine.
fn docker_engine(docker_host: Option<&str>) -> Option<Option<String>> {
    if let Some(host) = docker_host {
        return Some(Some(host.to_string()));
    }
    let socket = Path::new("/var/run/docker.sock");
    std::os::unix::net::UnixStream::connect(socket)
        .ok()
        .map(|_| None)
}

/// The registry a reference names: its first component when that looks like a host
/// (a `.` or `:` in it, or `localhost`), else Docker Hub.
pub fn registry_host(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.into(),
        _ => "docker.io".into(),
    }
}

fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost" || name == "::1" || name.starts_with("127.")
}

/// The reference with `:latest` when it has neither tag nor digest (the Docker engine
/// transport needs one).
fn with_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// skopeo's error: its last `Error` line, else its last line.
fn last_error(finished: &Finished) -> String {
    let lines = || finished.tail.iter().rev().filter(|l| !l.trim().is_empty());
    lines()
        .find_map(|l| {
            l.split_once("level=fatal msg=")
                .map(|(_, m)| m.trim_matches('"'))
                .or_else(|| l.strip_prefix("Error: "))
        })
        .or_else(|| lines().next().map(String::as_str))
        .unwrap_or("no output")
        .to_string()
}

/// A failed registry fetch: unreachable, missing, or otherwise.
fn registry_error(host: &str, reference: &str, error: &str, missed: &[String]) -> anyhow::Error {
    let lower = error.to_ascii_lowercase();
    let elsewhere = if missed.is_empty() {
        String::new()
    } else {
        format!(" (not in {} either)", missed.join(" nor in "))
    };
    const UNREACHABLE: &[&str] = &[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "no route to host",
        "tls handshake timeout",
        "connection reset",
        "server gave http response to https client",
        "dial tcp",
    ];
    const MISSING: &[&str] = &[
        "manifest unknown",
        "name unknown",
        "not found",
        "repository does not exist",
        "requested access to the resource is denied",
        "unauthorized",
    ];
    if UNREACHABLE.iter().any(|p| lower.contains(p)) {
        anyhow!(
            "cannot reach the registry {host} to fetch {reference}{elsewhere}: {error}; check the \
             network and the registry's address, or build the image from a Dockerfile"
        )
    } else if MISSING.iter().any(|p| lower.contains(p)) {
        anyhow!(
            "the image {reference} does not exist in the registry {host} (or needs credentials: \
             `skopeo login {host}`){elsewhere}: {error}"
        )
    } else {
        anyhow!("fetching {reference} from the registry {host} failed{elsewhere}: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry() {
        assert_eq!(registry_host("nginx"), "docker.io");
        assert_eq!(registry_host("library/nginx:1"), "docker.io");
        assert_eq!(registry_host("ghcr.io/org/app:v1"), "ghcr.io");
        assert_eq!(registry_host("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/aloft/web:1"), "localhost");
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert_eq!(with_tag("nginx"), "nginx:latest");
        assert_eq!(with_tag("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(with_tag("app:v1"), "app:v1");
        assert_eq!(with_tag("app@sha256:ab"), "app@sha256:ab");
    }

    #[test]
    fn registry_errors_say_what_went_wrong() {
        let missed = vec!["the local buildah/podman store".to_string()];
        let e = registry_error(
            "127.0.0.1:9",
            "127.0.0.1:9/app:1",
            "pinging container registry 127.0.0.1:9: Get \"https://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused",
            &missed,
        )
        .to_string();
        assert!(
            e.starts_with("cannot reach the registry 127.0.0.1:9 to fetch 127.0.0.1:9/app:1"),
            "{e}"
        );
        assert!(e.contains("not in the local buildah/podman store"), "{e}");
        let e = registry_error(
            "ghcr.io",
            "ghcr.io/o/a:1",
            "reading manifest 1: manifest unknown",
            &[],
        )
        .to_string();
        assert!(
            e.starts_with("the image ghcr.io/o/a:1 does not exist in the registry ghcr.io"),
            "{e}"
        );
    }
}
