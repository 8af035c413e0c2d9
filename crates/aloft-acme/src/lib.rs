//! ACME (RFC 8555) certificate issuance for Aloft's edge, on the `instant-acme` crate.
//!
//! - [`AcmeClient::new`] creates an account at a CA's directory, or loads the one kept in the
//!   account directory (one file per directory URL, written atomically, mode 0600).
//! - [`AcmeClient::issue`] orders a certificate for some domains, answers the CA's HTTP-01 or
//!   TLS-ALPN-01 challenges through a [`ChallengeResponder`] (the proxy's challenge hooks),
//!   and returns the chain with a new ECDSA P-256 key. The challenges it set are removed again
//!   whatever happens, also when the future is dropped.
//! - [`renewal_due`] and [`parse_validity`] tell when a certificate (issued here or read from a
//!   file) should be renewed.
//!
//! This crate knows no other aloft crate: the agent wires it to the proxy and to its store.

mod account;
mod client;
mod domains;
mod error;
mod hints;
mod nonce;
mod responder;
mod tls_alpn;
mod transport;
mod validity;

pub use client::{AcmeClient, IssuedCertificate};
pub use error::AcmeError;
pub use responder::{ChallengeKind, ChallengeResponder};
pub use validity::{parse_not_after, parse_validity, renewal_due, Validity};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
