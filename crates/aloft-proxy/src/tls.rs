//! TLS termination with rustls (ring provider): certificates from PEM files chosen by SNI, or a
//! self-signed certificate generated at start (the default, like Fly's `default_self_signed`).
//! ALPN and protocol versions follow the port's `tls_options`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::options::TlsOptions;

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
    /// Not about TLS: the proxy's worker threads could not start.
    #[error("cannot start the proxy's worker threads: {0}")]
    Runtime(String),
}

#[derive(Debug)]
struct Resolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(|n| n.to_ascii_lowercase());
        if let Some(name) = name {
            if let Some(k) = self.by_name.get(&name) {
                return Some(k.clone());
            }
            // Wildcard `*.example.com` entries.
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.by_name.get(&format!("*.{parent}")) {
                    return Some(k.clone());
                }
            }
        }
        Some(self.default.clone())
    }
}

/// (ALPN, versions, http handler).
type AcceptorKey = (Vec<String>, Vec<String>, bool);

/// Certificates loaded once; server configs per (ALPN, versions) built on demand.
pub struct TlsStore {
    resolver: Arc<Resolver>,
    configs: Mutex<HashMap<AcceptorKey, TlsAcceptor>>,
}

impl std::fmt::Debug for TlsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStore").finish_non_exhaustive()
    }
}

impl TlsStore {
    pub fn load(source: &TlsSource) -> Result<TlsStore, TlsError> {
        let provider = ring::default_provider();
        let certified =
            |chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, path: &PathBuf| {
                CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            };
        let resolver = match source {
            TlsSource::SelfSigned { names } => {
                let names = if names.is_empty() {
                    vec!["localhost".to_string()]
                } else {
                    names.clone()
                };
                let ck = rcgen::generate_simple_self_signed(names)
                    .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
                let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der())
                    .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
                let key = certified(
                    vec![ck.cert.der().clone()],
                    key,
                    &PathBuf::from("(self-signed)"),
                )?;
                Resolver {
                    by_name: HashMap::new(),
                    default: Arc::new(key),
                }
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
                Resolver {
                    by_name,
                    default: default.ok_or(TlsError::Empty)?,
                }
            }
        };
        Ok(TlsStore {
            resolver: Arc::new(resolver),
            configs: Mutex::default(),
        })
    }

    /// An acceptor for a port's options; `http` picks the default ALPN (`h2`, `http/1.1`).
    pub fn acceptor(&self, opts: &TlsOptions, http: bool) -> TlsAcceptor {
        let key = (opts.alpn.clone(), opts.versions.clone(), http);
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = configs.get(&key) {
            return a.clone();
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
        if versions.is_empty() {
            versions = vec![&rustls::version::TLS13, &rustls::version::TLS12];
        }
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_protocol_versions(&versions)
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_cert_resolver(self.resolver.clone());
        cfg.alpn_protocols = if !opts.alpn.is_empty() {
            opts.alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
        } else if http {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            Vec::new()
        };
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        configs.insert(key, acceptor.clone());
        acceptor
    }
}

/// A TLS client that accepts any certificate: for `https` health checks against a machine on
/// the loopback interface, where the certificate cannot name 127.0.0.1 anyway.
pub(crate) fn insecure_client() -> TlsConnector {
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
        let _ = store.acceptor(
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
