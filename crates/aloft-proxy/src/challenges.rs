//! ACME challenge answers, set by whoever runs an issuance (the agent, through the ACME
//! client) and served by the proxy before any routing:
//! * HTTP-01: `GET /.well-known/acme-challenge/<token>` on every HTTP port answers the
//!   token's key authorization (`text/plain`), whatever the `Host` — the request never reaches
//!   an app. Tokens nobody set go to the app as usual (an app may run its own ACME client).
//! * TLS-ALPN-01 (RFC 8737): a TLS client whose ALPN list is exactly `acme-tls/1` gets the
//!   challenge certificate set for its SNI name, on every TLS port, and `acme-tls/1` is
//!   negotiated; the handshake goes no further than that (the validator closes).
//!
//! The registry is shared by every listener; setting and removing take effect for the next
//! request or handshake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use http::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pending ACME challenges: HTTP-01 key authorizations by token, TLS-ALPN-01 certificates by
/// domain. Get it from [`crate::ProxyHandle::challenges`].
#[derive(Debug, Default)]
pub struct Challenges {
    http01: RwLock<HashMap<String, String>>,
    /// Whether any HTTP-01 token is set: requests skip the map (and its lock) otherwise.
    any_http01: AtomicBool,
    tls_alpn01: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// Answers `GET /.well-known/acme-challenge/<token>` with `key_authorization` from now on.
    pub fn set_http01(&self, token: &str, key_authorization: &str) {
        let mut map = self.http01.write().unwrap_or_else(|e| e.into_inner());
        map.insert(token.to_string(), key_authorization.to_string());
        self.any_http01.store(true, Ordering::Release);
    }

    /// Stops answering `token`.
    pub fn remove_http01(&self, token: &str) {
        let mut map = self.http01.write().unwrap_or_else(|e| e.into_inner());
        map.remove(token);
        self.any_http01.store(!map.is_empty(), Ordering::Release);
    }

    /// Presents this certificate (DER chain, DER private key: PKCS#8, PKCS#1 or SEC1) to
    /// `acme-tls/1` clients asking for `domain`. A certificate or key that cannot be used is
    /// logged and ignored (the validation then fails, which the ACME client reports).
    pub fn set_tls_alpn01(&self, domain: &str, cert_chain_der: Vec<Vec<u8>>, key_der: Vec<u8>) {
        let chain = cert_chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key = match PrivateKeyDer::try_from(key_der) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(domain, "tls-alpn-01 challenge key cannot be read: {e}");
                return;
            }
        };
        // Not `CertifiedKey::from_der`: it parses the certificate (to match it with the key),
        // and webpki refuses the critical acmeIdentifier extension every challenge
        // certificate carries. The validator does not verify it either.
        let provider = rustls::crypto::ring::default_provider();
        match provider.key_provider.load_private_key(key) {
            Ok(signing_key) => {
                let ck = CertifiedKey::new(chain, signing_key);
                self.tls_alpn01
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(domain.to_ascii_lowercase(), Arc::new(ck));
            }
            Err(e) => tracing::warn!(domain, "tls-alpn-01 challenge key refused: {e}"),
        }
    }

    /// Stops presenting the challenge certificate of `domain`.
    pub fn remove_tls_alpn01(&self, domain: &str) {
        self.tls_alpn01
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&domain.to_ascii_lowercase());
    }

    /// Whether the request head (HTTP/1.1 bytes) asks for a token set here.
    pub(crate) fn answers_http01(&self, head: &[u8]) -> bool {
        if !self.any_http01.load(Ordering::Acquire) {
            return false;
        }
        let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
        let mut parts = line.split(|b| *b == b' ');
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return false;
        };
        let method = match method {
            b"GET" => Method::GET,
            b"HEAD" => Method::HEAD,
            _ => return false,
        };
        std::str::from_utf8(target)
            .ok()
            .and_then(|path| self.http01_response(&method, path))
            .is_some()
    }

    /// The key authorization answering a request for a token set here (`GET` or `HEAD`),
    /// else `None`.
    pub(crate) fn http01_response(&self, method: &Method, path: &str) -> Option<String> {
        if !self.any_http01.load(Ordering::Acquire)
            || !(method == Method::GET || method == Method::HEAD)
        {
            return None;
        }
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        let map = self.http01.read().unwrap_or_else(|e| e.into_inner());
        map.get(token).cloned()
    }

    /// The TLS-ALPN-01 certificate for `domain`, if one is set.
    pub(crate) fn tls_alpn01(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_tokens_are_answered_only_while_set() {
        let c = Challenges::default();
        let head = b"GET /.well-known/acme-challenge/tok1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(!c.answers_http01(head));
        c.set_http01("tok1", "tok1.thumb");
        assert!(c.answers_http01(head));
        assert!(!c.answers_http01(b"GET /.well-known/acme-challenge/other HTTP/1.1\r\n\r\n"));
        assert!(!c.answers_http01(b"POST /.well-known/acme-challenge/tok1 HTTP/1.1\r\n\r\n"));
        let a = c.http01_response(&Method::GET, "/.well-known/acme-challenge/tok1");
        assert_eq!(a.as_deref(), Some("tok1.thumb"));
        c.remove_http01("tok1");
        assert!(!c.answers_http01(head));
        assert!(c
            .http01_response(&Method::GET, "/.well-known/acme-challenge/tok1")
            .is_none());
    }

    #[test]
    fn tls_alpn01_certificates_by_domain() {
        let c = Challenges::default();
        let ck = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        c.set_tls_alpn01(
            "A.example",
            vec![ck.cert.der().to_vec()],
            ck.key_pair.serialize_der(),
        );
        assert!(c.tls_alpn01("a.example").is_some());
        // A key that is not a key is refused, not stored.
        c.set_tls_alpn01("b.example", vec![ck.cert.der().to_vec()], vec![1, 2, 3]);
        assert!(c.tls_alpn01("b.example").is_none());
        c.remove_tls_alpn01("a.example");
        assert!(c.tls_alpn01("a.example").is_none());
    }

    #[test]
    fn tls_alpn01_takes_certificates_with_the_critical_acme_identifier() {
        // What an ACME client presents (RFC 8737 §3), which webpki cannot parse.
        let mut params = rcgen::CertificateParams::new(vec!["c.example".to_string()]).unwrap();
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&[7; 32])];
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let c = Challenges::default();
        c.set_tls_alpn01("c.example", vec![cert.der().to_vec()], key.serialize_der());
        let served = c.tls_alpn01("c.example").expect("stored");
        assert_eq!(served.cert[0].as_ref(), cert.der().as_ref());
    }
}
