//! Certificates of apps' custom hostnames (`aloft certs`, like `fly certs`): the bodies of
//! `/v1/apps/{app}/certificates` (see [`crate::routes`]). An app answers at each of its
//! hostnames on the shared HTTP ports (routed by `Host`, TLS by SNI), with the certificate
//! stored for it. Private keys never leave the agent.

use serde::{Deserialize, Serialize};

/// Where a certificate comes from.
pub const SOURCE_SELF_SIGNED: &str = "self-signed";
/// PEM files given to `aloft certs add --cert --key`.
pub const SOURCE_FILES: &str = "files";
/// Issued by an ACME CA (Let's Encrypt…), renewed before it expires.
pub const SOURCE_ACME: &str = "acme";

/// Status of a certificate that is served.
pub const STATUS_READY: &str = "ready";
/// Status of an ACME certificate not issued yet (a self-signed one is served meanwhile).
pub const STATUS_AWAITING_ISSUANCE: &str = "awaiting issuance";

/// A hostname of an app and its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Lowercase, without a trailing dot.
    pub hostname: String,
    pub app: String,
    /// [`SOURCE_SELF_SIGNED`], [`SOURCE_FILES`] or [`SOURCE_ACME`].
    pub source: String,
    /// [`STATUS_READY`], [`STATUS_AWAITING_ISSUANCE`], or why issuance failed.
    pub status: String,
    /// RFC 3339; absent while no certificate is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// RFC 3339: when the hostname was added to the app.
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /v1/apps/{app}/certificates`: a hostname for the app. Without PEMs the agent makes a
/// self-signed certificate, or with `acme` asks an ACME CA for one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddCertificate {
    pub hostname: String,
    /// The certificate chain (leaf first), PEM; needs `key_pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_pem: Option<String>,
    /// The private key of the leaf, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// Obtain the certificate through ACME (HTTP-01 or TLS-ALPN-01).
    #[serde(default)]
    pub acme: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_certificate_needs_only_a_hostname() {
        let a: AddCertificate = serde_json::from_str(r#"{"hostname":"www.example.com"}"#).unwrap();
        assert_eq!(a.hostname, "www.example.com");
        assert!(!a.acme && a.chain_pem.is_none());
        let c = Certificate {
            hostname: "www.example.com".into(),
            app: "web".into(),
            source: SOURCE_SELF_SIGNED.into(),
            status: STATUS_READY.into(),
            not_before: None,
            not_after: Some("2027-01-01T00:00:00Z".into()),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("not_before"), "{json}");
        assert_eq!(serde_json::from_str::<Certificate>(&json).unwrap(), c);
    }
}
