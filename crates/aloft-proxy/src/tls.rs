//! TLS termination with rustls (ring provider). The ClientHello is read first: its SNI name
//! picks the app on a shared port (and so the port's `tls_options`: ALPN, protocol versions)
//! and the certificate — one set at run time (`aloft certs`, ACME), one from PEM files, a
//! self-signed one made per hostname apps answer at (the default, like Fly's
//! `default_self_signed`), or the default one; an ALPN of exactly `acme-tls/1` gets the
//! TLS-ALPN-01 challenge certificate (`challenges.rs`). Certificates can be replaced at run
//! time without touching listeners.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use crate::challenges::{Challenges, ACME_TLS_ALPN};
use crate::options::TlsOptions;
use crate::table::{Listener, RouteTable};

/// Where certificates come from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// A self-signed certificate for these names, generated when the proxy starts.
    SelfSigned { names: Vec<String> },
    /// PEM files by server name; the name `*` (or the first entry) is the default for clients
    /// without SNI or with an unknown name.
    Files(BTreeMap<String, CertFiles>),
}

impl Default for TlsSource {
    fn default() -> Self {
        TlsSource::SelfSigned {
            names: vec!["localhost".into()],
        }
    }
}

/// A certificate chain and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read TLS certificate {path}: {reason}; give a PEM file with the certificate chain"
    )]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read TLS private key {path}: {reason}; give a PEM file with a PKCS#8, PKCS#1 or SEC1 key")]
    Key { path: PathBuf, reason: String },
    #[error("cannot generate the self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("no TLS certificate configured")]
    Empty,
    /// A certificate given as PEM text (`aloft certs add`, an ACME issuance) cannot be used.
    #[error("cannot use the certificate: {0}; give the PEM certificate chain (leaf first) and its PEM private key")]
    Pem(String),
    /// Not about TLS: the proxy's worker threads could not start.
    #[error("cannot start the proxy's worker threads: {0}")]
    Runtime(String),
}

/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Self-signed certificates generated per hostname are kept for this many hostnames at most
/// (only hostnames of the table get one, so this bounds a table of many apps, not attackers).
const MAX_GENERATED: usize = 10_000;

/// Picks the certificate of a handshake (see [`TlsStore`] for the order).
struct Resolver {
    /// Certificates set at run time ([`TlsStore::set_certificate`]), by lowercase hostname
    /// (`*.example.com` for a wildcard).
    runtime: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// Certificates from files, by name.
    files: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// Hostnames without a certificate get a self-signed one of their own (the default
    /// source); with certificate files they get the files' default.
    self_signed: bool,
    generated: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// The hostnames apps answer at (from the routing table).
    table: Option<watch::Receiver<RouteTable>>,
    challenges: Arc<Challenges>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// `*.parent` of a name (`a.b.c` → `*.b.c`).
fn wildcard_of(name: &str) -> Option<String> {
    name.split_once('.')
        .map(|(_, parent)| format!("*.{parent}"))
}

impl Resolver {
    fn certificate(&self, name: Option<&str>, acme: bool) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return (!acme).then(|| self.default.clone());
        };
        if acme {
            // Only the challenge certificate may answer `acme-tls/1`.
            return self.challenges.tls_alpn01(name);
        }
        let wildcard = wildcard_of(name);
        {
            let runtime = self.runtime.read().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = runtime
                .get(name)
                .or_else(|| wildcard.as_ref().and_then(|w| runtime.get(w)))
            {
                return Some(k.clone());
            }
        }
        if let Some(k) = self
            .files
            .get(name)
            .or_else(|| wildcard.as_ref().and_then(|w| self.files.get(w)))
        {
            return Some(k.clone());
        }
        if self.self_signed && self.known(name, wildcard.as_deref()) {
            return Some(self.generated(name));
        }
        Some(self.default.clone())
    }

    /// Whether an app answers at `name` (itself or through its `*.` parent).
    fn known(&self, name: &str, wildcard: Option<&str>) -> bool {
        self.table.as_ref().is_some_and(|t| {
            let t = t.borrow();
            t.hostnames.contains_key(name) || wildcard.is_some_and(|w| t.hostnames.contains_key(w))
        })
    }

    /// The self-signed certificate of `name`, made on first use.
    fn generated(&self, name: &str) -> Arc<CertifiedKey> {
        let mut cache = self.generated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(name) {
            return k.clone();
        }
        match self_signed_key(&[name.to_string()]) {
            Ok(k) => {
                let k = Arc::new(k);
                if cache.len() >= MAX_GENERATED {
                    cache.clear();
                }
                cache.insert(name.to_string(), k.clone());
                k
            }
            Err(e) => {
                tracing::warn!(
                    hostname = name,
                    "cannot make a self-signed certificate: {e}"
                );
                self.default.clone()
            }
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = is_acme_alpn(hello.alpn());
        let name = hello.server_name().map(|n| n.to_ascii_lowercase());
        self.certificate(name.as_deref(), acme)
    }
}

/// Whether a ClientHello's ALPN list is exactly `acme-tls/1` (RFC 8737 §3).
fn is_acme_alpn<'a>(alpn: Option<impl Iterator<Item = &'a [u8]>>) -> bool {
    let Some(mut alpn) = alpn else {
        return false;
    };
    alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none()
}

/// A self-signed certificate (ECDSA P-256) for `names`.
fn self_signed_key(names: &[String]) -> Result<CertifiedKey, TlsError> {
    let (chain_pem, key_pem) = self_signed_pem(names)?;
    certified_key_from_pem(&chain_pem, &key_pem)
}

/// A new self-signed certificate (ECDSA P-256) for `names`, valid from a day ago for a year:
/// (certificate PEM, key PEM).
pub fn self_signed_pem(names: &[String]) -> Result<(String, String), TlsError> {
    let bad = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(bad)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The validity of the first (leaf) certificate of a PEM chain, as Unix seconds:
/// (not before, not after).
pub fn certificate_validity(chain_pem: &str) -> Result<(i64, i64), TlsError> {
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| TlsError::Pem("no certificate in the certificate PEM".into()))?
        .map_err(|e| TlsError::Pem(format!("the certificate chain: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| TlsError::Pem(format!("the certificate cannot be parsed: {e}")))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// A certificate chain and key from PEM text, checked to belong together.
pub fn certified_key_from_pem(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("the certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pem(
            "no certificate in the certificate PEM".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(format!("the private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &ring::default_provider())
        .map_err(|e| TlsError::Pem(format!("the key does not fit the certificate: {e}")))
}

/// (ALPN, versions, http handler).
type AcceptorKey = (Vec<String>, Vec<String>, bool);

/// Certificates and server configs. A handshake's certificate is, in order: the TLS-ALPN-01
/// challenge certificate when the client's ALPN is exactly `acme-tls/1` (nothing else then);
/// a certificate set at run time for the SNI name (or its `*.` parent); one from the
/// certificate files; for a hostname an app answers at, a self-signed one made for it (with
/// the default self-signed source); else the default certificate.
pub struct TlsStore {
    resolver: Arc<Resolver>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    /// Configs of ports with `tls_options`, made on first use.
    configs: Mutex<HashMap<AcceptorKey, Arc<rustls::ServerConfig>>>,
    /// Ports without `tls_options` (nearly all): with and without the http handler's ALPN.
    default_http: Arc<rustls::ServerConfig>,
    default_raw: Arc<rustls::ServerConfig>,
    /// For `acme-tls/1` clients.
    acme: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStore").finish_non_exhaustive()
    }
}

impl TlsStore {
    pub fn load(source: &TlsSource) -> Result<TlsStore, TlsError> {
        Self::load_with(source, None, Arc::default())
    }

    /// Loads the certificates; hostnames of `table` get self-signed certificates of their own
    /// (see [`TlsStore`]), `challenges` answers TLS-ALPN-01.
    pub(crate) fn load_with(
        source: &TlsSource,
        table: Option<watch::Receiver<RouteTable>>,
        challenges: Arc<Challenges>,
    ) -> Result<TlsStore, TlsError> {
        let provider = ring::default_provider();
        let certified =
            |chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, path: &PathBuf| {
                CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            };
        let (files, default, self_signed) = match source {
            TlsSource::SelfSigned { names } => {
                let names = if names.is_empty() {
                    vec!["localhost".to_string()]
                } else {
                    names.clone()
                };
                (HashMap::new(), Arc::new(self_signed_key(&names)?), true)
            }
            TlsSource::Files(files) => {
                let mut by_name = HashMap::new();
                let mut default = None;
                for (name, f) in files {
                    let chain: Vec<CertificateDer<'static>> =
                        CertificateDer::pem_file_iter(&f.cert)
                            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| TlsError::Cert {
                                path: f.cert.clone(),
                                reason: e.to_string(),
                            })?;
                    if chain.is_empty() {
                        return Err(TlsError::Cert {
                            path: f.cert.clone(),
                            reason: "no certificate in the file".into(),
                        });
                    }
                    let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| TlsError::Key {
                        path: f.key.clone(),
                        reason: e.to_string(),
                    })?;
                    let key = Arc::new(certified(chain, key, &f.key)?);
                    if name == "*" || default.is_none() {
                        default = Some(key.clone());
                    }
                    by_name.insert(name.to_ascii_lowercase(), key);
                }
                (by_name, default.ok_or(TlsError::Empty)?, false)
            }
        };
        let resolver = Arc::new(Resolver {
            runtime: RwLock::default(),
            files,
            default,
            self_signed,
            generated: Mutex::default(),
            table,
            challenges,
        });
        let ticketer = ring::Ticketer::new().map_err(|e| TlsError::SelfSigned(e.to_string()))?;
        let with_alpn = |alpn: Vec<Vec<u8>>| {
            server_config(&resolver, &[], &ticketer).map(|mut c| {
                c.alpn_protocols = alpn;
                Arc::new(c)
            })
        };
        let default_http = with_alpn(vec![b"h2".to_vec(), b"http/1.1".to_vec()])?;
        let default_raw = with_alpn(Vec::new())?;
        let acme = with_alpn(vec![ACME_TLS_ALPN.to_vec()])?;
        Ok(TlsStore {
            resolver,
            ticketer,
            configs: Mutex::default(),
            default_http,
            default_raw,
            acme,
        })
    }

    /// Serves `chain_pem`/`key_pem` for `hostname` (lowercase; `*.example.com` for a wildcard)
    /// from the next handshake on, replacing any certificate set before.
    pub fn set_certificate(
        &self,
        hostname: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), TlsError> {
        let key = Arc::new(certified_key_from_pem(chain_pem, key_pem)?);
        self.resolver
            .runtime
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hostname.to_ascii_lowercase(), key);
        Ok(())
    }

    /// Stops serving the certificate set for `hostname` (it falls back to the next source).
    pub fn remove_certificate(&self, hostname: &str) {
        self.resolver
            .runtime
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hostname.to_ascii_lowercase());
    }

    /// The server config for a port's options; `http` picks the default ALPN (`h2`,
    /// `http/1.1`).
    pub fn config(&self, opts: &TlsOptions, http: bool) -> Arc<rustls::ServerConfig> {
        if opts.alpn.is_empty() && opts.versions.is_empty() {
            return if http {
                self.default_http.clone()
            } else {
                self.default_raw.clone()
            };
        }
        let key = (opts.alpn.clone(), opts.versions.clone(), http);
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = configs.get(&key) {
            return c.clone();
        }
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        for v in &opts.versions {
            match v.as_str() {
                "TLSv1.2" => versions.push(&rustls::version::TLS12),
                "TLSv1.3" => versions.push(&rustls::version::TLS13),
                other => tracing::warn!(
                    version = other,
                    "unknown TLS version in tls_options.versions, ignored"
                ),
            }
        }
        let mut cfg = server_config(&self.resolver, &versions, &self.ticketer)
            .expect("ring supports TLS 1.2 and 1.3");
        cfg.alpn_protocols = if !opts.alpn.is_empty() {
            opts.alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
        } else if http {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            Vec::new()
        };
        let cfg = Arc::new(cfg);
        configs.insert(key, cfg.clone());
        cfg
    }
}

/// A server config over `resolver` for `versions` (empty: TLS 1.3 and 1.2), issuing session
/// tickets with `ticketer`.
///
/// Handshake cost (measured with `bench/proxy.sh`, full handshakes from wrk): the server's
/// order of cipher suites wins and puts AES-128-GCM first — its SHA-256 transcript and key
/// schedule run on the CPU's SHA instructions, where OpenSSL clients' first choice,
/// AES-256-GCM-SHA384, hashes in software (about 20% of the proxy's CPU per handshake);
/// TLS 1.3 sends one session ticket per handshake instead of rustls' two (enough for a
/// client's next connection), stateless (`ticketer`, shared by every config, keys rotated by
/// rustls), so any number of clients can resume on any worker.
fn server_config(
    resolver: &Arc<Resolver>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    ticketer: &Arc<dyn rustls::server::ProducesTickets>,
) -> Result<rustls::ServerConfig, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = if versions.is_empty() {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        versions
    };
    let mut provider = ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        // TLS 1.2 suites keep ring's order among themselves (the sort is stable).
        _ => 3,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    cfg.ignore_client_order = true;
    cfg.send_tls13_tickets = 1;
    cfg.ticketer = ticketer.clone();
    Ok(cfg)
}

/// Completes the TLS handshake of a connection on `listener`: the ClientHello's SNI picks the
/// app (and so the port's `tls_options`); `acme-tls/1` clients get the challenge config.
/// Returns the stream and the SNI name (lowercase), or `None` when the handshake failed.
pub(crate) async fn accept(
    store: &TlsStore,
    listener: &Listener,
    stream: TcpStream,
    client: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Option<String>)> {
    let deadline = tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT;
    let lazy = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout_at(deadline, lazy).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%client, port = listener.port, "TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::debug!(%client, port = listener.port, "TLS handshake timed out");
            return None;
        }
    };
    let hello = start.client_hello();
    let sni = hello.server_name().map(|n| n.to_ascii_lowercase());
    let config = if is_acme_alpn(hello.alpn()) {
        store.acme.clone()
    } else {
        match listener.route_for(sni.as_deref()) {
            Some(r) => store.config(&r.options.tls_options, r.options.http),
            None => {
                let http = listener.routes.first().is_some_and(|r| r.options.http);
                store.config(&TlsOptions::default(), http)
            }
        }
    };
    match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(s)) => Some((s, sni)),
        Ok(Err(e)) => {
            tracing::debug!(%client, port = listener.port, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%client, port = listener.port, "TLS handshake timed out");
            None
        }
    }
}

/// A TLS client that accepts any certificate: for `https` health checks and metrics scrapes
/// (the agent's `metrics_scrape`) of a machine reached at an address the platform gave it
/// (loopback, the bridge), which its certificate cannot name anyway.
pub fn insecure_client() -> TlsConnector {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_pem_files_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["app.example".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let files = BTreeMap::from([(
            "app.example".to_string(),
            CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
        )]);
        let store = TlsStore::load(&TlsSource::Files(files)).unwrap();
        let _ = store.config(
            &TlsOptions {
                alpn: vec![],
                versions: vec!["TLSv1.3".into()],
            },
            true,
        );

        let missing = dir.path().join("nope.pem");
        let files = BTreeMap::from([(
            "*".to_string(),
            CertFiles {
                cert: missing.clone(),
                key,
            },
        )]);
        let err = TlsStore::load(&TlsSource::Files(files))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.pem"), "{err}");
        // A certificate where the key should be.
        let files = BTreeMap::from([(
            "*".to_string(),
            CertFiles {
                cert: cert.clone(),
                key: cert,
            },
        )]);
        let err = TlsStore::load(&TlsSource::Files(files))
            .unwrap_err()
            .to_string();
        assert!(err.contains("private key"), "{err}");
        assert!(TlsStore::load(&TlsSource::default()).is_ok());
    }
}

#[cfg(test)]
mod pem_tests {
    use super::*;

    #[test]
    fn self_signed_pem_is_usable_and_its_validity_is_read() {
        let (chain, key) = self_signed_pem(&["a.example".to_string()]).unwrap();
        assert!(certified_key_from_pem(&chain, &key).is_ok());
        let (from, to) = certificate_validity(&chain).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(from < now && now < to, "{from} {now} {to}");
        assert!((to - now) > 360 * 86_400);
        // Another certificate's key does not fit.
        let (_, other_key) = self_signed_pem(&["b.example".to_string()]).unwrap();
        let err = certified_key_from_pem(&chain, &other_key).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let err = certificate_validity("garbage").unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
