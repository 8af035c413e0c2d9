//! From an agent URL to a [`Client`]: the transport is chosen by the URL's scheme.
//!
//! * `http://host:port` — plain HTTP (the local agent; a remote one only behind
//!   `--insecure-listen`).
//! * `https://host:port` — TLS: a certificate a public CA vouches for, else the fingerprint pinned
//!   for `host:port` at first use ([`ConnectOptions::pins`]).
//! * `ssh://[user@]host[:port][/data-dir][?aloft=PATH]` — the agent's loopback API through the
//!   user's own `ssh` (their keys, agent, `known_hosts`, `~/.ssh/config`); see `ssh.rs`.
//!
//! `connect` is synchronous and leaves nothing running on the caller's runtime: commands build a
//! fresh runtime per `block_on`, so whatever a transport keeps alive (an SSH tunnel) lives on a
//! thread of its own and is dropped with the last clone of the client.

use std::path::PathBuf;

use anyhow::bail;

use crate::client::Client;

/// What a transport may need beyond the URL; the CLI's settings resolve each field.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// The API token (`ALOFT_API_TOKEN`, a context's, the local data dir's). Over `ssh://` a
    /// missing token is read on the server from the agent's data dir.
    pub token: Option<String>,
    /// The file of pinned agent certificates (`host:port sha256:…` lines), kept in the user's
    /// config dir; `None` disables pinning (only CA-verified certificates are accepted).
    pub pins: Option<PathBuf>,
    /// A fingerprint to require (`sha256:…`), e.g. from a context: it wins over the pin file.
    pub fingerprint: Option<String>,
    /// An ssh config file to use instead of `~/.ssh/config` (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
    /// Told when an agent's certificate is pinned on first use (`https://`).
    pub on_pin: Option<crate::tls::OnPin>,
}

/// A client of the agent at `url`, over the transport its scheme names.
pub fn connect(url: &str, options: ConnectOptions) -> anyhow::Result<Client> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") => Ok(Client::new(url, options.token)),
        Some("https") => {
            let trust = crate::tls::Trust {
                pins: options.pins,
                fingerprint: options.fingerprint,
                on_pin: options.on_pin,
            };
            let tls = crate::tls::client_config(url, trust)?;
            Ok(Client::with_tls(url, options.token, tls))
        }
        Some("ssh") => crate::ssh::connect(url, options.token, options.ssh_config.as_deref()),
        Some(other) => bail!(
            "unknown scheme `{other}` in the agent URL {url}: use http://, https:// or ssh://"
        ),
        None => bail!(
            "the agent URL {url} has no scheme: write http://HOST:PORT, https://HOST:PORT or \
             ssh://USER@HOST"
        ),
    }
}
