//! Contexts: named agents a user deploys to (`aloft context add prod ssh://deploy@server`), kept
//! in `<config-dir>/contexts.toml` as `docker context` keeps its own. The file is private (mode
//! 0600 in a 0700 directory): a context may hold an API token.
//!
//! The built-in context [`LOCAL`] is the local agent of the data dir (what `aloft` talks to with
//! no context at all); it is never stored.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// The name of the built-in context: the local agent.
pub const LOCAL: &str = "local";

/// The file's name in the config dir.
pub const FILE_NAME: &str = "contexts.toml";

/// `contexts.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextFile {
    /// The context commands use without `-C`; `None` (or [`LOCAL`]) is the local agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, AgentContext>,
}

/// One named agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentContext {
    /// `http://`, `https://` or `ssh://` URL of the agent.
    pub url: String,
    /// The API token to send; over `ssh://` it may be left out (read on the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The agent certificate's fingerprint (`sha256:…`) to require over `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ContextFile {
    /// Reads the file of `config_dir`; a missing file is an empty one.
    pub fn load(config_dir: &Path) -> anyhow::Result<ContextFile> {
        let path = config_dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        toml_edit::de::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid contexts file; fix it or remove it (`aloft context` rewrites it)",
                path.display()
            )
        })
    }

    /// Writes the file atomically (a private temporary file renamed over the old one).
    pub fn save(&self, config_dir: &Path) -> anyhow::Result<()> {
        create_private_dir(config_dir)?;
        let path = config_dir.join(FILE_NAME);
        let text = toml_edit::ser::to_string_pretty(self).context("encoding the contexts")?;
        let tmp = config_dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = private_file(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("writing {}: {e}", path.display())
        })
    }

    /// The context named `name`; [`LOCAL`] is `None` (the local agent).
    pub fn get(&self, name: &str) -> anyhow::Result<Option<&AgentContext>> {
        if name == LOCAL {
            return Ok(None);
        }
        match self.contexts.get(name) {
            Some(c) => Ok(Some(c)),
            None => {
                let known: Vec<&str> = std::iter::once(LOCAL)
                    .chain(self.contexts.keys().map(String::as_str))
                    .collect();
                bail!(
                    "there is no context named `{name}` (known: {}); add it with `aloft context \
                     add {name} URL`",
                    known.join(", ")
                )
            }
        }
    }

    /// The name of the current context ([`LOCAL`] when none is set).
    pub fn current_name(&self) -> &str {
        self.current.as_deref().unwrap_or(LOCAL)
    }
}

/// Checks a context name: 1–64 characters of letters, digits, `-`, `_` and `.`, not [`LOCAL`].
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name == LOCAL {
        bail!("`{LOCAL}` is the built-in context of the local agent; pick another name");
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!(
            "invalid context name `{name}`: use 1–64 letters, digits, `-`, `_` or `.`, not \
             starting with `-` or `.`"
        );
    }
    Ok(())
}

/// Checks an agent URL: a known scheme and a host.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("`{url}` is not an agent URL: write https://HOST:PORT, ssh://USER@HOST or http://HOST:PORT");
    };
    if !matches!(scheme, "http" | "https" | "ssh") {
        bail!("unknown scheme `{scheme}` in `{url}`: use https://, ssh:// or http://");
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        bail!("`{url}` names no host");
    }
    Ok(())
}

/// The user's config dir of Aloft: `$XDG_CONFIG_HOME/aloft`, else `~/.config/aloft`; `None`
/// without either.
pub fn config_dir_from(xdg_config_home: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(x) = xdg_config_home {
        return Some(x.join("aloft"));
    }
    home.map(|h| h.join(".config/aloft"))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_file_reads_back_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg/aloft");
        let mut file = ContextFile::default();
        file.contexts.insert(
            "prod".into(),
            AgentContext {
                url: "ssh://deploy@server".into(),
                token: Some("secret".into()),
                fingerprint: None,
                description: None,
            },
        );
        file.current = Some("prod".into());
        file.save(&dir).unwrap();
        assert_eq!(ContextFile::load(&dir).unwrap(), file);
        let mode = std::fs::metadata(dir.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(file.current_name(), "prod");
    }

    #[test]
    fn a_missing_file_is_empty_and_a_broken_one_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            ContextFile::load(tmp.path()).unwrap(),
            ContextFile::default()
        );
        std::fs::write(tmp.path().join(FILE_NAME), "contexts = 3").unwrap();
        let err = ContextFile::load(tmp.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a valid contexts file"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_contexts_name_the_known_ones() {
        let file = ContextFile::default();
        assert_eq!(file.get(LOCAL).unwrap(), None);
        let err = file.get("prod").unwrap_err().to_string();
        assert!(
            err.contains("no context named `prod`") && err.contains("local"),
            "{err}"
        );
    }

    #[test]
    fn names_and_urls_are_checked() {
        check_name("prod-eu_1.x").unwrap();
        for bad in ["", "local", "-x", ".x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "https://h:4280",
            "ssh://u@h",
            "ssh://h:2222/var/lib/aloft",
            "http://h",
        ] {
            check_url(good).unwrap();
        }
        for bad in ["h:4280", "ftp://h", "ssh://", "https://:80", "ssh://u@"] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
    }
}
