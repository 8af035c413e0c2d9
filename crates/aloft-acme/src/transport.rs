//! The HTTPS client instant-acme talks to the CA with: the public web roots plus, for a private
//! or test CA, extra roots given in PEM; ring as the crypto provider, like the rest of Aloft.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::error::AcmeError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS-only client trusting the Mozilla root set (as `webpki-roots` ships it) and every
/// certificate of `extra_roots_pem`.
pub(crate) fn https_client(
    extra_roots_pem: Option<&str>,
) -> Result<Box<dyn HttpClient>, AcmeError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_roots_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| AcmeError::ExtraRoots {
                detail: format!("not valid PEM ({e})"),
            })?;
            roots.add(cert).map_err(|e| AcmeError::ExtraRoots {
                detail: format!("a certificate cannot be used as a root ({e})"),
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(AcmeError::ExtraRoots {
                detail: "no `-----BEGIN CERTIFICATE-----` block found; give the CA's root \
                         certificate in PEM"
                    .into(),
            });
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AcmeError::Crypto {
        detail: format!("TLS configuration: {e}"),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client: Client<_, BodyWrapper<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}
