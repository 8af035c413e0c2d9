//! Errors for people: what failed, for which domain and challenge, what the CA said, and what
//! to do about it.

use std::path::PathBuf;
use std::time::Duration;

use crate::responder::ChallengeKind;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    #[error(
        "ACME directory URL {url:?} is not an https:// URL: ACME servers answer over HTTPS only; \
         give the directory URL your CA documents (Let's Encrypt: {})",
        crate::LETS_ENCRYPT
    )]
    DirectoryUrl { url: String },

    #[error(
        "could not read the ACME directory at {url}: {detail}; check the URL, that this host \
         reaches it over HTTPS, and (for a private or test CA) that its root certificate is \
         among the extra roots"
    )]
    Directory { url: String, detail: String },

    #[error("extra root certificates for the ACME directory: {detail}")]
    ExtraRoots { detail: String },

    #[error("invalid ACME contact {contact:?}: give an email address such as admin@example.com")]
    Contact { contact: String },

    #[error("ACME account file {}: {detail}", path.display())]
    AccountFile { path: PathBuf, detail: String },

    #[error("the CA at {url} did not create or load the ACME account: {ca_said}")]
    Account { url: String, ca_said: String },

    #[error("cannot request a certificate for {domain:?}: {reason}")]
    Domain { domain: String, reason: String },

    #[error("the CA refused the certificate order for {domains}: {ca_said}; {hint}")]
    Order {
        domains: String,
        ca_said: String,
        hint: String,
    },

    #[error(
        "the CA offers no {kind} challenge for {domain} (it offers: {offered}); choose another \
         challenge kind"
    )]
    ChallengeNotOffered {
        domain: String,
        kind: ChallengeKind,
        offered: String,
    },

    /// The CA tried to validate a challenge and failed. `attempt` says what it tried (e.g. "the
    /// CA could not fetch http://HOST/.well-known/acme-challenge/TOKEN"), `ca_said` is the
    /// CA's problem document, `hint` what to do.
    #[error("{kind} challenge for {domain} failed: {attempt}: {ca_said}; {hint}")]
    ChallengeFailed {
        domain: String,
        kind: ChallengeKind,
        attempt: String,
        ca_said: String,
        hint: String,
    },

    /// `stage` says what was under way, with the domains (e.g. "waiting for the CA to
    /// validate the challenges for a.example.com").
    #[error("gave up after {after:?} {stage}; the CA may be slow or unreachable: try again later")]
    Timeout { after: Duration, stage: String },

    #[error("the CA failed us while {stage}: {detail}")]
    Protocol { stage: String, detail: String },

    #[error("cannot read the certificate chain: {detail}")]
    Certificate { detail: String },

    #[error("could not make a key or a certificate signing request: {detail}")]
    Crypto { detail: String },
}
