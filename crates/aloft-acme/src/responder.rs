//! The seam to whatever answers the CA's challenges (the proxy), and the guard that takes every
//! challenge answer down again.

use std::fmt;

/// How the CA checks that we control a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// RFC 8555 §8.3: the CA fetches `http://DOMAIN/.well-known/acme-challenge/TOKEN` on port
    /// 80 and expects the key authorization as the body.
    Http01,
    /// RFC 8737: the CA opens TLS to DOMAIN on port 443 with ALPN `acme-tls/1` and expects a
    /// self-signed certificate for DOMAIN carrying the acmeIdentifier extension.
    TlsAlpn01,
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        })
    }
}

/// Serves challenge answers while the CA validates them. Implemented by the proxy (its
/// challenge registry); the methods are synchronous and cheap (they update a table), so
/// [`AcmeClient::issue`](crate::AcmeClient::issue) can also call the `remove_*` ones from a
/// destructor.
pub trait ChallengeResponder: Send + Sync {
    /// Answer `GET /.well-known/acme-challenge/{token}` on port 80 with `key_authorization`.
    fn set_http01(&self, token: &str, key_authorization: &str);
    /// Stop answering for `token`.
    fn remove_http01(&self, token: &str);
    /// Present this certificate (DER chain, one self-signed certificate; PKCS#8 DER key) to a
    /// TLS client whose SNI is `domain` and whose ClientHello offers exactly the ALPN protocol
    /// `acme-tls/1`.
    fn set_tls_alpn01(&self, domain: &str, cert_chain_der: Vec<Vec<u8>>, key_der: Vec<u8>);
    /// Stop presenting the challenge certificate for `domain`.
    fn remove_tls_alpn01(&self, domain: &str);
}

/// Challenge answers set during one issuance; dropping the guard removes them all (on success,
/// on error, and when the issuing future is dropped half-way).
pub(crate) struct ChallengeGuard<'a> {
    responder: &'a dyn ChallengeResponder,
    set: Vec<SetAnswer>,
}

enum SetAnswer {
    Http01 { token: String },
    TlsAlpn01 { domain: String },
}

impl<'a> ChallengeGuard<'a> {
    pub(crate) fn new(responder: &'a dyn ChallengeResponder) -> Self {
        ChallengeGuard {
            responder,
            set: Vec::new(),
        }
    }

    pub(crate) fn set_http01(&mut self, token: &str, key_authorization: &str) {
        self.responder.set_http01(token, key_authorization);
        self.set.push(SetAnswer::Http01 {
            token: token.to_string(),
        });
    }

    pub(crate) fn set_tls_alpn01(&mut self, domain: &str, chain: Vec<Vec<u8>>, key: Vec<u8>) {
        self.responder.set_tls_alpn01(domain, chain, key);
        self.set.push(SetAnswer::TlsAlpn01 {
            domain: domain.to_string(),
        });
    }
}

impl Drop for ChallengeGuard<'_> {
    fn drop(&mut self) {
        for answer in self.set.drain(..) {
            match answer {
                SetAnswer::Http01 { token } => self.responder.remove_http01(&token),
                SetAnswer::TlsAlpn01 { domain } => self.responder.remove_tls_alpn01(&domain),
            }
        }
    }
}
