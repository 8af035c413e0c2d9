//! Agent settings, and the files it writes for its clients: the API token and the bound address.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The default API address and the data-dir files the agent writes for its clients (names
/// shared with `aloft-client`, which reads them).
pub use aloft_api::local::{ADDR_FILE, DEFAULT_LISTEN, FINGERPRINT_FILE, TOKEN_FILE};
/// Locked (flock) by the running agent; holds its pid.
pub const LOCK_FILE: &str = "agent.lock";
/// The SQLite database in the data dir.
pub const DB_FILE: &str = "state.db";

/// How often attached volumes are checked for automatic extension when not told otherwise
/// (see `crate::volumes_autoextend`).
pub const DEFAULT_VOLUME_EXTEND_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How an agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// `127.0.0.1:0` picks a free port; the bound address is in [`crate::AgentHandle::addr`]
    /// and in `<data-dir>/agent.addr`.
    pub listen: SocketAddr,
    /// Region codes this agent hosts; empty = every known Fly region.
    pub regions: Vec<String>,
    /// How much disk machine logs may take (per file, in total, free space kept).
    pub logs: aloft_runtime::LogLimits,
    /// The proxy in front of the machines' services; `None` runs the agent without one.
    pub proxy: Option<aloft_proxy::ProxyConfig>,
    /// Bounds on what requests may ask of this host.
    pub limits: Limits,
    /// The bridge and subnet of container machines (set up on the first container start).
    pub network: aloft_runtime::net::NetConfig,
    /// The OCI runtime that runs container machines (a path, or a name looked up in `PATH`);
    /// `None` is runc. Any runtime with runc's command line works (crun, youki).
    pub oci_runtime: Option<PathBuf>,
    /// The host's public addresses apps may be given (`aloft ips`); unset ones are found from
    /// the default routes when asked for.
    pub public_addresses: PublicAddresses,
    /// Where certificates of hostnames added with `aloft certs add --acme` come from.
    pub acme: AcmeSettings,
    /// The key sealing app secrets, base64 of 32 bytes (`ALOFT_SECRETS_KEY`); `None` keeps it
    /// in `<data-dir>/secrets.key` (see `crate::secrets_key`).
    pub secrets_key: Option<crate::secrets_key::KeyText>,
    /// Serve the API over TLS with this certificate (`aloft agent --tls`); `None` is plain HTTP.
    pub tls: Option<crate::api_tls::ApiCertificate>,
    /// Allow plain HTTP on a non-loopback address (`--insecure-listen`): without it such a
    /// listen address is refused, since the token would cross the network in clear text.
    pub insecure_listen: bool,
    /// How long schedule periods last (`config.schedule`): real ones, except in tests
    /// (`aloft agent --schedule-unit-ms`, hidden).
    pub schedule_unit: aloft_api::schedule::PeriodUnit,
    /// How machines' metrics endpoints (`[metrics]`) are scraped (see the `metrics_scrape` module).
    pub metrics: ScrapeSettings,
    /// How often attached volumes are checked for automatic extension
    /// (`aloft agent --volume-extend-interval`; see `crate::volumes_autoextend`).
    pub volume_extend_interval: std::time::Duration,
    /// How often volumes are checked for their daily snapshot and expired snapshots
    /// (`aloft agent --volume-snapshot-interval`; see `crate::volumes_backup`).
    pub volume_snapshot_interval: std::time::Duration,
}

/// How machines are scraped (`aloft agent --metrics-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeSettings {
    /// Time between two scrapes of a machine (Fly: 15 s).
    pub interval: std::time::Duration,
    /// Time one scrape may take, connection to last byte.
    pub timeout: std::time::Duration,
    /// Largest body read; a larger one fails the scrape.
    pub max_body_bytes: usize,
    /// Scrapes running at once.
    pub concurrency: usize,
}

impl Default for ScrapeSettings {
    fn default() -> ScrapeSettings {
        ScrapeSettings {
            interval: std::time::Duration::from_secs(15),
            timeout: std::time::Duration::from_secs(10),
            max_body_bytes: 10 << 20,
            concurrency: 8,
        }
    }
}

/// Bounds on what requests may ask of this host; each refusal names the bound and how to raise it.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Most machines one process group may be scaled to (`aloft agent --max-group-count`).
    pub max_group_count: u32,
    /// Memory the started machines of this host may be given together, as a multiple of its RAM
    /// (`aloft agent --memory-overcommit`). Guest memory is a limit, not a reservation, so
    /// overcommit is normal; one machine may never ask for more than the host's RAM.
    pub memory_overcommit: f64,
    /// API connections served at once; more wait in the listen backlog
    /// (`aloft agent --max-api-connections`).
    pub max_api_connections: usize,
    /// Time an API client has to send a request head, and to send the next one on a kept-alive
    /// connection (`aloft agent --api-header-timeout`).
    pub api_header_timeout: std::time::Duration,
    /// Time a request body may send nothing before the request is cut off.
    pub api_body_idle_timeout: std::time::Duration,
    /// Deploys per app whose images garbage collection keeps, so they can be rolled back to
    /// (`aloft agent --keep-releases`).
    pub keep_releases: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_group_count: 1000,
            memory_overcommit: 16.0,
            max_api_connections: 512,
            api_header_timeout: std::time::Duration::from_secs(30),
            api_body_idle_timeout: std::time::Duration::from_secs(30),
            keep_releases: 5,
        }
    }
}

impl AgentConfig {
    /// Defaults for a data dir: listen on [`DEFAULT_LISTEN`], host every region.
    pub fn new(data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN.parse().expect("constant address"),
            regions: Vec::new(),
            logs: aloft_runtime::LogLimits::default(),
            proxy: Some(aloft_proxy::ProxyConfig::default()),
            limits: Limits::default(),
            network: aloft_runtime::net::NetConfig::default(),
            oci_runtime: None,
            public_addresses: Default::default(),
            acme: AcmeSettings::default(),
            secrets_key: None,
            tls: None,
            insecure_listen: false,
            schedule_unit: Default::default(),
            metrics: Default::default(),
            volume_extend_interval: DEFAULT_VOLUME_EXTEND_INTERVAL,
            volume_snapshot_interval: std::time::Duration::from_secs(3600),
        }
    }

    /// Whether the API would serve plain HTTP on an address other hosts can reach.
    pub fn plain_http_off_loopback(&self) -> bool {
        self.tls.is_none() && !self.listen.ip().is_loopback()
    }
}

/// Reads the token file, creating it (mode 0600, 32 random bytes as hex) on first start.
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(path = %path.display(), "token file was readable by others; set to 0600");
            }
            return Ok(t.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Write beside and rename, so a crash never leaves a half-written token.
    let tmp = data_dir.join(format!("{TOKEN_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

/// Writes `<data-dir>/agent.addr` (atomically): the bound address, or for a TLS API its
/// `https://` URL (clients read a bare address as `http://`). With TLS, the certificate's
/// fingerprint goes to `<data-dir>/agent.fingerprint` first; without, a stale one is removed.
pub fn write_addr_file(
    data_dir: &Path,
    addr: SocketAddr,
    tls_fingerprint: Option<&str>,
) -> std::io::Result<()> {
    let fingerprint_file = data_dir.join(FINGERPRINT_FILE);
    let line = match tls_fingerprint {
        Some(fingerprint) => {
            let tmp = data_dir.join(format!("{FINGERPRINT_FILE}.tmp"));
            std::fs::write(&tmp, format!("{fingerprint}\n"))?;
            std::fs::rename(tmp, fingerprint_file)?;
            format!("https://{addr}")
        }
        None => {
            match std::fs::remove_file(fingerprint_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            addr.to_string()
        }
    };
    let tmp = data_dir.join(format!("{ADDR_FILE}.tmp"));
    std::fs::write(&tmp, format!("{line}\n"))?;
    std::fs::rename(tmp, data_dir.join(ADDR_FILE))
}

/// The host's public addresses, as `aloft agent --public-ipv4/--public-ipv6` give them, else
/// as found when an address is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicAddresses {
    pub ipv4: Option<std::net::Ipv4Addr>,
    pub ipv6: Option<std::net::Ipv6Addr>,
}

pub use aloft_acme::{ChallengeKind, LETS_ENCRYPT};

/// The ACME CA that issues certificates of `aloft certs add --acme` hostnames, and how its
/// challenges are answered. The account is kept in `<data-dir>/acme`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The CA's directory URL (`aloft agent --acme-directory`); Let's Encrypt by default.
    pub directory_url: String,
    /// Contact emails of the account (`--acme-email`, repeatable; may be empty).
    pub contact: Vec<String>,
    /// A PEM file of extra trusted roots for the CA's HTTPS (`--acme-ca-roots`), for a private
    /// or test CA.
    pub ca_roots: Option<PathBuf>,
    /// HTTP-01 (port 80) or TLS-ALPN-01 (port 443) (`--acme-challenge`).
    pub challenge: aloft_acme::ChallengeKind,
}

impl Default for AcmeSettings {
    fn default() -> AcmeSettings {
        AcmeSettings {
            directory_url: aloft_acme::LETS_ENCRYPT.to_string(),
            contact: Vec::new(),
            ca_roots: None,
            challenge: aloft_acme::ChallengeKind::Http01,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let t1 = load_or_create_token(tmp.path()).unwrap();
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(tmp.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(tmp.path()).unwrap(), t1);
    }

    #[test]
    fn addr_file_holds_the_bound_address() {
        let tmp = tempfile::tempdir().unwrap();
        write_addr_file(tmp.path(), "127.0.0.1:5555".parse().unwrap(), None).unwrap();
        let text = std::fs::read_to_string(tmp.path().join(ADDR_FILE)).unwrap();
        assert_eq!(text.trim(), "127.0.0.1:5555");
    }

    #[test]
    fn a_tls_api_writes_its_url_and_fingerprint_and_a_plain_one_removes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let addr = "127.0.0.1:5555".parse().unwrap();
        write_addr_file(tmp.path(), addr, Some("sha256:ab")).unwrap();
        let read = |name| std::fs::read_to_string(tmp.path().join(name)).unwrap();
        assert_eq!(read(ADDR_FILE), "https://127.0.0.1:5555\n");
        assert_eq!(read(FINGERPRINT_FILE), "sha256:ab\n");
        write_addr_file(tmp.path(), addr, None).unwrap();
        assert_eq!(read(ADDR_FILE), "127.0.0.1:5555\n");
        assert!(!tmp.path().join(FINGERPRINT_FILE).exists());
    }
}
