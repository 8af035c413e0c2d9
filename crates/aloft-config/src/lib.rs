//! The fly.toml engine: read an app config (`fly.toml`, `fly.json`, `fly.yaml`), normalise
//! Fly's legacy and alias forms, validate it with located diagnostics, and flatten it into one
//! [`aloft_api::MachineConfig`] per process group.
//!
//! Pipeline (like flyctl, two stages): source → raw `node` tree with spans → `decode`
//! (normalisers + per-field checks) → typed [`AppConfig`] → `validate` (cross-section rules)
//! → `flatten` (per-group machine configs, pure).
//! Problems are collected into [`Diagnostics`], never first-error-wins; an invalid file still
//! yields the best `AppConfig` that could be read. The rules are no stricter than flyctl's
//! except where Aloft cannot run a config; [`differences`] lists every difference and why.
//!
//! ```no_run
//! let loaded = aloft_config::load(std::path::Path::new("fly.toml")).unwrap();
//! if loaded.diagnostics.has_errors() {
//!     eprint!("{}", loaded.diagnostics);
//! }
//! for group in loaded.config.process_names() {
//!     let machine_config = loaded.config.machine_config_for(&group);
//!     # let _ = machine_config;
//! }
//! ```
//!
//! Line:col locations exist for TOML only; JSON and YAML are parsed without spans, so their
//! diagnostics name the field but not the position (parse errors still carry one, and so do
//! the reader's limits: files over 4 MiB and tables or lists nested over 64 levels are refused).

mod base64;
mod decode;
pub mod diag;
pub mod differences;
mod flatten;
mod limits;
pub mod model;
mod node;
mod read;
mod validate;

use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Diagnostics, Location, Severity};
pub use flatten::GuestResolveError;
pub use model::*;
pub use validate::{format_groups, is_dns_label, is_group_name};

/// Words joined back into one shell-quoted string (for showing a command).
pub fn shell_join(words: &[String]) -> String {
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

/// The file formats an app config can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
    Yaml,
}

impl Format {
    /// By extension, as flyctl: `.json` → JSON, `.yaml`/`.yml` → YAML, anything else → TOML.
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Toml,
        }
    }
}

/// A config as read, with everything that is wrong or suspicious about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: AppConfig,
    pub diagnostics: Diagnostics,
}

/// The file could not be read at all (validation problems are [`Diagnostics`], not this).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no app config at {}: the file does not exist (pass another path with `-c <path>`)", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads and checks the config at `path`. `[[files]] local_path` entries are read relative to
/// the config's directory and embedded, so the config is self-contained.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = read_capped(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LoadError::NotFound {
            path: path.to_path_buf(),
        },
        _ => LoadError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let shown = path.display().to_string();
    if bytes.len() > limits::MAX_BYTES {
        return Ok(refuse_too_large(&shown));
    }
    let src = String::from_utf8_lossy(&bytes);
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(parse_inner(
        &src,
        Format::from_path(path),
        &shown,
        Some(base),
    ))
}

/// The file's bytes, but no more than one past the size limit (which is enough to refuse it).
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limits::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Parses and checks a config held in memory; `path_for_messages` is how diagnostics name it.
/// `[[files]] local_path` entries are not read (there is no directory to read them from).
pub fn parse_str(src: &str, format: Format, path_for_messages: &str) -> Loaded {
    if src.len() > limits::MAX_BYTES {
        return refuse_too_large(path_for_messages);
    }
    parse_inner(src, format, path_for_messages, None)
}

/// An empty config with the one error saying the file is too large to read.
fn refuse_too_large(shown: &str) -> Loaded {
    let mut sink = diag::Sink::default();
    limits::too_large(&mut sink);
    Loaded {
        config: AppConfig::default(),
        diagnostics: sink.finish("", shown),
    }
}

fn parse_inner(src: &str, format: Format, shown: &str, base: Option<&Path>) -> Loaded {
    let mut sink = diag::Sink::default();
    let root = match format {
        Format::Toml => node::from_toml(src, &mut sink),
        Format::Json => node::from_json(src, &mut sink),
        Format::Yaml => node::from_yaml(src, &mut sink),
    };
    let config = match root {
        Some(root) => {
            let (mut config, spans) = decode::decode(&root, &mut sink);
            validate::validate(&config, &spans, &mut sink);
            if let Some(base) = base {
                embed_local_files(&mut config, &root, base, &mut sink);
            }
            config
        }
        None => AppConfig::default(),
    };
    Loaded {
        config,
        diagnostics: sink.finish(src, shown),
    }
}

fn embed_local_files(
    config: &mut AppConfig,
    root: &node::Node,
    base: &Path,
    sink: &mut diag::Sink,
) {
    let file_nodes: Vec<&node::Node> = root.get("files").map(read::list).unwrap_or_default();
    for f in &mut config.files {
        let Some(local) = &f.local_path else { continue };
        let path = base.join(local);
        match std::fs::read(&path) {
            Ok(bytes) => f.local_content_base64 = Some(base64::encode(&bytes)),
            Err(e) => {
                let span = file_nodes
                    .iter()
                    .find(|n| matches!(n.get("local_path"), Some(node::Node { kind: node::Kind::Str(s), .. }) if s == local))
                    .and_then(|n| n.get("local_path"))
                    .and_then(|n| n.span.clone());
                // A warning, not an error: the file may be generated before deploy. Deploy must
                // refuse a `local_path` whose `local_content_base64` is still unset.
                sink.warn(
                    &span,
                    format!("[[files]] local_path {} cannot be read ({e}); deploy will fail until it exists", path.display()),
                    Some("local_path is relative to the directory of the config file".into()),
                );
            }
        }
    }
}
