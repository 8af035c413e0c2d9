//! The API's TLS (`aloft agent --tls`): its certificate — from PEM files, or self-signed, made
//! once and kept in `<data-dir>/api-tls/{cert.pem,key.pem}` (key mode 0600) so clients that
//! pinned it keep trusting it across restarts — and the rustls server config (ALPN h2 and
//! http/1.1, as the API's hyper server speaks both).
//!
//! The certificate's fingerprint (`sha256:` + hex of the leaf's DER SHA-256) is what clients
//! pin; the agent writes it to `<data-dir>/agent.fingerprint` and its start-up line shows it.
//! The self-signed certificate names localhost, 127.0.0.1, ::1, the listen address (unless
//! unspecified), the host's hostname and each `--tls-san`; it is not remade when these change
//! (that would change its fingerprint): remove `<data-dir>/api-tls` to have a new one made.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

/// The dir of the self-signed API certificate in the data dir.
pub const TLS_DIR: &str = "api-tls";

/// Where the API's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiCertificate {
    /// PEM files (`--tls-cert`, `--tls-key`): the chain, leaf first, and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// Self-signed, made once in `<data-dir>/api-tls`; `names` are SANs besides the default ones
    /// (`--tls-san`).
    SelfSigned { names: Vec<String> },
    /// From the ACME CA for this hostname (`--tls-acme`): not available yet, refused at start.
    Acme { host: String },
}

/// The API's TLS, ready to serve.
pub struct ApiTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `sha256:` + hex of the leaf certificate's DER.
    pub fingerprint: String,
}

/// Why the API's certificate cannot be used; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the API certificate {}: {source} (--tls-cert/--tls-key: PEM files)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what} (--tls-cert: the PEM certificate chain, leaf first; --tls-key: its PEM private key)", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("cannot keep the API's self-signed certificate in {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the API's self-signed certificate: {0}")]
    Generate(String),
    #[error("--tls-acme {0}: an API certificate from ACME is not available yet; give the API a certificate with --tls-cert FILE --tls-key FILE, or use --tls for a self-signed one that clients pin on first use")]
    AcmeUnsupported(String),
}

/// `sha256:` + hex of the SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Loads (or makes, for a self-signed one) the API's certificate.
pub fn load(
    certificate: &ApiCertificate,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<ApiTls, TlsError> {
    let (cert_path, key_path) = match certificate {
        ApiCertificate::Files { cert, key } => (cert.clone(), key.clone()),
        ApiCertificate::SelfSigned { names } => {
            let dir = data_dir.join(TLS_DIR);
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !(cert.is_file() && key.is_file()) {
                make_self_signed(&dir, &cert, &key, &self_signed_names(names, listen))?;
            }
            (cert, key)
        }
        ApiCertificate::Acme { host } => return Err(TlsError::AcmeUnsupported(host.clone())),
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem_error = |path: &Path, what: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&cert_path)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&cert_path, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(pem_error(&cert_path, "no certificate in it".into()));
    };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
        .map_err(|e| pem_error(&key_path, format!("not a PEM private key: {e}")))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                pem_error(
                    &key_path,
                    format!("the key does not fit the certificate: {e}"),
                )
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ApiTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
    })
}

/// The SANs of a new self-signed certificate, without duplicates.
fn self_signed_names(extra: &[String], listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() {
            names.push(host.to_ascii_lowercase());
        }
    }
    names.extend(extra.iter().map(|n| n.trim().to_ascii_lowercase()));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// Makes a self-signed certificate (ECDSA P-256, valid for ten years: pinned clients need no
/// renewal) and writes it and its key (mode 0600) into `dir` (mode 0700).
fn make_self_signed(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let bad = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(bad)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aloft agent API");
    let key_pair = rcgen::KeyPair::generate().map_err(bad)?;
    let certificate = params.self_signed(&key_pair).map_err(bad)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err(dir))?;
    // Each written beside and renamed; the key first, so a cert.pem always has its key.
    for (path, text, mode) in [
        (key, key_pair.serialize_pem(), 0o600),
        (cert, certificate.pem(), 0o644),
    ] {
        let tmp = path.with_extension("pem.tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(write_err(&tmp))?;
        f.write_all(text.as_bytes()).map_err(write_err(&tmp))?;
        f.sync_all().map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(write_err(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_self_signed_certificate_is_made_once_with_a_private_key() {
        let tmp = tempfile::tempdir().unwrap();
        let listen = "10.1.2.3:4280".parse().unwrap();
        let how = ApiCertificate::SelfSigned {
            names: vec!["agent.example".into()],
        };
        let first = load(&how, tmp.path(), listen).unwrap().fingerprint;
        assert!(
            first.starts_with("sha256:") && first.len() == 7 + 64,
            "{first}"
        );
        assert_eq!(load(&how, tmp.path(), listen).unwrap().fingerprint, first);
        let key = tmp.path().join(TLS_DIR).join("key.pem");
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names = self_signed_names(&["agent.example".into(), "LOCALHOST".into()], listen);
        assert_eq!(&names[..4], ["localhost", "127.0.0.1", "::1", "10.1.2.3"]);
        assert_eq!(names.last().map(String::as_str), Some("agent.example"));
    }

    #[test]
    fn bad_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let how = ApiCertificate::Files {
            cert: cert.clone(),
            key,
        };
        let err = load(&how, tmp.path(), "127.0.0.1:1".parse().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&cert.display().to_string()), "{err}");
        let missing = ApiCertificate::Files {
            cert: tmp.path().join("none.pem"),
            key: tmp.path().join("none.key"),
        };
        let err = load(&missing, tmp.path(), "127.0.0.1:1".parse().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("none.pem"), "{err}");
    }
}
