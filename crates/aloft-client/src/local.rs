//! Where a client finds the local agent when no API URL or token is given: the default data dir
//! and the files a local agent writes there (names in `aloft_api::local`). Reads no environment:
//! the CLI's settings pass the values they read (flag > environment > these files).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use aloft_api::local::{ADDR_FILE, DEFAULT_LISTEN, FINGERPRINT_FILE, TOKEN_FILE};

/// The local agent of a data dir, as its files record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAgent {
    pub data_dir: PathBuf,
    /// The URL in `<data-dir>/agent.addr` (`https://…` for a TLS API), or `http://` + the bare
    /// address there, else [`DEFAULT_LISTEN`].
    pub api_url: String,
    /// Content of `<data-dir>/token`, if readable.
    pub token: Option<String>,
    /// For a TLS API, the fingerprint of its certificate in `<data-dir>/agent.fingerprint`: a
    /// local client requires that certificate instead of pinning one on first use.
    pub fingerprint: Option<String>,
}

/// The default data dir of a local agent for the given `$XDG_STATE_HOME` and `$HOME` (empty
/// counts as unset): `$XDG_STATE_HOME/aloft`, else `~/.local/state/aloft`, else
/// `./.aloft-state` when there is no home directory.
pub fn data_dir_from(xdg_state_home: Option<&OsStr>, home: Option<&OsStr>) -> PathBuf {
    if let Some(x) = xdg_state_home.filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("aloft");
    }
    match home.filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/aloft"),
        None => PathBuf::from(".aloft-state"),
    }
}

/// The local agent of `data_dir`: its address file (else [`DEFAULT_LISTEN`]) and its token.
pub fn local_agent(data_dir: &Path) -> LocalAgent {
    let addr = std::fs::read_to_string(data_dir.join(ADDR_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let read = |name| {
        std::fs::read_to_string(data_dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let api_url = match addr.contains("://") {
        true => addr,
        false => format!("http://{addr}"),
    };
    let fingerprint = match api_url.starts_with("https://") {
        true => read(FINGERPRINT_FILE).filter(|f| !f.is_empty()),
        false => None,
    };
    LocalAgent {
        data_dir: data_dir.to_path_buf(),
        api_url,
        token: read(TOKEN_FILE),
        fingerprint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_prefers_xdg_state_home_then_home() {
        let os = |s: &str| Some(OsStr::new(s).to_owned());
        assert_eq!(
            data_dir_from(os("/x").as_deref(), os("/h").as_deref()),
            PathBuf::from("/x/aloft")
        );
        assert_eq!(
            data_dir_from(os("").as_deref(), os("/h").as_deref()),
            PathBuf::from("/h/.local/state/aloft")
        );
        assert_eq!(data_dir_from(None, None), PathBuf::from(".aloft-state"));
    }

    #[test]
    fn the_files_of_the_data_dir_name_the_agent() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(ADDR_FILE), "127.0.0.1:5555\n").unwrap();
        std::fs::write(tmp.path().join(TOKEN_FILE), "abc\n").unwrap();
        let a = local_agent(tmp.path());
        assert_eq!(a.api_url, "http://127.0.0.1:5555");
        assert_eq!(a.token.as_deref(), Some("abc"));
        assert_eq!(a.fingerprint, None);
    }

    #[test]
    fn a_tls_agent_is_named_by_its_url_and_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(ADDR_FILE), "https://127.0.0.1:5555\n").unwrap();
        std::fs::write(tmp.path().join(FINGERPRINT_FILE), "sha256:ab\n").unwrap();
        let a = local_agent(tmp.path());
        assert_eq!(a.api_url, "https://127.0.0.1:5555");
        assert_eq!(a.fingerprint.as_deref(), Some("sha256:ab"));
    }

    #[test]
    fn without_files_the_default_address_and_no_token() {
        let tmp = tempfile::tempdir().unwrap();
        let a = local_agent(tmp.path());
        assert_eq!(a.api_url, format!("http://{DEFAULT_LISTEN}"));
        assert_eq!(a.token, None);
    }
}
