//! Where the CLI finds an agent when `ALOFT_API_URL` / `ALOFT_API_TOKEN` are unset: the files a
//! local agent writes in its data dir (names in `aloft_api::local`).

use std::path::{Path, PathBuf};

use aloft_api::local::{ADDR_FILE, DEFAULT_LISTEN, TOKEN_FILE};

/// Where a client finds the local agent when `ALOFT_API_URL` / `ALOFT_API_TOKEN` are unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalDefaults {
    pub data_dir: PathBuf,
    /// `http://` + the address in `<data-dir>/agent.addr`, else [`DEFAULT_LISTEN`].
    pub api_url: String,
    /// Content of `<data-dir>/token`, if readable.
    pub token: Option<String>,
}

/// The default data dir of a local agent (where `aloft agent` keeps its state unless told
/// otherwise): `$XDG_STATE_HOME/aloft`, else `~/.local/state/aloft`, else `./.aloft-state` when
/// there is no home directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("aloft");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/aloft"),
        None => PathBuf::from(".aloft-state"),
    }
}

/// What the CLI uses to reach an agent: `ALOFT_API_URL` and `ALOFT_API_TOKEN` when set, else
/// the local agent's files under `data_dir` (or [`default_data_dir`]).
pub fn local_defaults(data_dir: Option<&Path>) -> LocalDefaults {
    let data_dir = data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(default_data_dir);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let api_url = env("ALOFT_API_URL").unwrap_or_else(|| {
        let addr = std::fs::read_to_string(data_dir.join(ADDR_FILE))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        format!("http://{addr}")
    });
    let token = env("ALOFT_API_TOKEN").or_else(|| {
        std::fs::read_to_string(data_dir.join(TOKEN_FILE))
            .ok()
            .map(|s| s.trim().to_string())
    });
    LocalDefaults {
        data_dir,
        api_url,
        token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_read_the_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(ADDR_FILE), "127.0.0.1:5555\n").unwrap();
        std::fs::write(tmp.path().join(TOKEN_FILE), "abc\n").unwrap();
        let d = local_defaults(Some(tmp.path()));
        if std::env::var_os("ALOFT_API_URL").is_none() {
            assert_eq!(d.api_url, "http://127.0.0.1:5555");
        }
        if std::env::var_os("ALOFT_API_TOKEN").is_none() {
            assert_eq!(d.token.as_deref(), Some("abc"));
        }
    }

    #[test]
    fn without_files_the_default_address_and_no_token() {
        let tmp = tempfile::tempdir().unwrap();
        let d = local_defaults(Some(tmp.path()));
        if std::env::var_os("ALOFT_API_URL").is_none() {
            assert_eq!(d.api_url, format!("http://{DEFAULT_LISTEN}"));
        }
        if std::env::var_os("ALOFT_API_TOKEN").is_none() {
            assert_eq!(d.token, None);
        }
    }
}
