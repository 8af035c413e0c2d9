//! `AcmeClient`: one account at one CA directory, and the issuance of certificates with it.

use crate::nonce::retry_bad_nonce;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use crate::account;
use crate::domains;
use crate::error::AcmeError;
use crate::hints;
use crate::responder::{ChallengeGuard, ChallengeKind, ChallengeResponder};
use crate::tls_alpn;
use crate::transport;
use crate::validity::parse_validity;

/// How long an issuance (or opening the account) may take in all, unless `with_timeout` says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);
/// Polling the CA starts this soon and doubles up to `LONGEST_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(250);
const LONGEST_POLL: Duration = Duration::from_secs(5);

/// A certificate from the CA, with the key made for it.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The chain in PEM, leaf first, as the CA sent it.
    pub chain_pem: String,
    /// The certificate's own new ECDSA P-256 key, PKCS#8 PEM.
    pub key_pem: String,
    /// The leaf's validity.
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// An ACME account at one CA directory. Cheap to share (`&self` methods); several issuances
/// may run at once.
pub struct AcmeClient {
    account: Account,
    timeout: Duration,
}

impl AcmeClient {
    /// Opens the account at `directory_url` kept in `account_dir`, or creates it at the CA
    /// (agreeing to the CA's terms of service, with `contact` as its emails) and keeps it
    /// there. `extra_roots_pem` adds trusted roots (PEM, any number of certificates) to the
    /// public ones, for a private or test CA's directory.
    pub async fn new(
        directory_url: &str,
        account_dir: &std::path::Path,
        contact: &[String],
        extra_roots_pem: Option<&str>,
    ) -> Result<AcmeClient, AcmeError> {
        if !directory_url.starts_with("https://") {
            return Err(AcmeError::DirectoryUrl {
                url: directory_url.to_string(),
            });
        }
        let contact = account::contact_urls(contact)?;
        let http = || transport::https_client(extra_roots_pem);
        let account = tokio::time::timeout(
            DEFAULT_TIMEOUT,
            account::open(http, directory_url, account_dir, contact),
        )
        .await
        .map_err(|_| AcmeError::Timeout {
            after: DEFAULT_TIMEOUT,
            stage: format!("opening the ACME account at {directory_url}"),
        })??;
        Ok(AcmeClient {
            account,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// How long one `issue` may take in all (3 minutes unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> AcmeClient {
        self.timeout = timeout;
        self
    }

    /// The account's URL at the CA (its identity: the same across clients that load the same
    /// account file).
    pub fn account_id(&self) -> &str {
        self.account.id()
    }

    /// Orders a certificate for `domains` (DNS names; the first is listed first), proves
    /// control of each with `kind` answered by `responder`, and fetches the certificate for a
    /// new ECDSA P-256 key. Polls the CA with a backoff from 250 ms up to 5 s, within the
    /// client's overall timeout. The challenge answers it set are removed before it returns,
    /// whatever the outcome (and if the future is dropped).
    pub async fn issue(
        &self,
        domains: &[String],
        kind: ChallengeKind,
        responder: &dyn ChallengeResponder,
    ) -> Result<IssuedCertificate, AcmeError> {
        let domains = domains::normalize(domains)?;
        let listed = domains.join(", ");
        let stage = Mutex::new("creating the order");
        let started = Instant::now();
        let issued = tokio::time::timeout(
            self.timeout,
            self.issue_within(&domains, kind, responder, &stage),
        )
        .await
        .unwrap_or_else(|_| {
            Err(AcmeError::Timeout {
                after: self.timeout,
                stage: format!("{} for {listed}", stage.lock().unwrap()),
            })
        });
        match &issued {
            Ok(_) => {
                tracing::info!(domains = %listed, %kind, elapsed = ?started.elapsed(), "certificate issued")
            }
            Err(e) => tracing::warn!(domains = %listed, %kind, "certificate not issued: {e}"),
        }
        issued
    }

    async fn issue_within(
        &self,
        domains: &[String],
        kind: ChallengeKind,
        responder: &dyn ChallengeResponder,
        stage: &Mutex<&'static str>,
    ) -> Result<IssuedCertificate, AcmeError> {
        let listed = domains.join(", ");
        let now = |s: &'static str| *stage.lock().unwrap() = s;
        let failed = |e: instant_acme::Error| AcmeError::Protocol {
            stage: format!("{} for {listed}", stage.lock().unwrap()),
            detail: hints::ca_said(&e),
        };

        let identifiers: Vec<Identifier> =
            domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let new_order = NewOrder::new(&identifiers);
        let mut order =
            retry_bad_nonce!(self.account.new_order(&new_order).await).map_err(|e| match &e {
                instant_acme::Error::Api(problem) => AcmeError::Order {
                    domains: listed.clone(),
                    ca_said: hints::problem_text(problem),
                    hint: hints::order_hint(problem.r#type.as_deref()),
                },
                _ => failed(e),
            })?;

        now("setting up the challenges");
        let mut guard = ChallengeGuard::new(responder);
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(failed)?;
            let domain = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue, // proven recently; nothing to answer
                status => {
                    return Err(AcmeError::Protocol {
                        stage: format!("setting up the challenges for {listed}"),
                        detail: format!(
                            "the CA reports the authorization for {domain} as {status:?}; try again"
                        ),
                    })
                }
            }
            let offered = authz
                .challenges
                .iter()
                .map(|c| challenge_type_name(&c.r#type))
                .collect::<Vec<_>>()
                .join(", ");
            let Some(mut challenge) = authz.challenge(acme_type(kind)) else {
                return Err(AcmeError::ChallengeNotOffered {
                    domain,
                    kind,
                    offered,
                });
            };
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeKind::Http01 => {
                    guard.set_http01(&challenge.token, key_authorization.as_str())
                }
                ChallengeKind::TlsAlpn01 => {
                    let (chain, key) = tls_alpn::challenge_certificate(
                        &domain,
                        key_authorization.digest().as_ref(),
                    )?;
                    guard.set_tls_alpn01(&domain, chain, key);
                }
            }
            retry_bad_nonce!(challenge.set_ready().await).map_err(failed)?;
        }

        now("waiting for the CA to validate the challenges");
        let mut poll = Backoff::new();
        loop {
            let state = retry_bad_nonce!(order.refresh().await).map_err(failed)?;
            match state.status {
                OrderStatus::Ready => break,
                OrderStatus::Invalid => return Err(why_invalid(&mut order, kind, &listed).await),
                OrderStatus::Pending => tokio::time::sleep(poll.next()).await,
                status => {
                    // `processing` and `valid` come only after finalization (RFC 8555 §7.1.6).
                    return Err(AcmeError::Protocol {
                        stage: format!(
                            "waiting for the CA to validate the challenges for {listed}"
                        ),
                        detail: format!(
                            "the order is {status:?} before it was finalized; try again"
                        ),
                    });
                }
            }
        }
        drop(guard); // validated: the answers are not needed any more

        now("finalizing the order");
        let crypto = |e: rcgen::Error| AcmeError::Crypto {
            detail: format!("for {listed}: {e}"),
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let mut params = CertificateParams::new(domains.to_vec()).map_err(crypto)?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(crypto)?;
        retry_bad_nonce!(order.finalize_csr(csr.der()).await).map_err(failed)?;

        now("waiting for the CA to issue the certificate");
        let mut poll = Backoff::new();
        let chain_pem = loop {
            match retry_bad_nonce!(order.certificate().await).map_err(failed)? {
                Some(chain) => break chain,
                None => tokio::time::sleep(poll.next()).await,
            }
        };
        let validity = parse_validity(&chain_pem)?;
        Ok(IssuedCertificate {
            chain_pem,
            key_pem: key.serialize_pem(),
            not_before: validity.not_before,
            not_after: validity.not_after,
        })
    }
}

/// The failed challenge of an invalid order, told with its domain and what the CA said; or the
/// order's own problem when no challenge failed.
async fn why_invalid(order: &mut Order, kind: ChallengeKind, listed: &str) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() || authz.status != AuthorizationStatus::Invalid {
            continue;
        }
        let domain = authz.identifier().to_string();
        let failed = authz
            .challenges
            .iter()
            .find(|c| c.r#type == acme_type(kind) && c.error.is_some())
            .or_else(|| authz.challenges.iter().find(|c| c.error.is_some()));
        if let Some(challenge) = failed {
            let problem = challenge.error.as_ref().expect("found by its error");
            return AcmeError::ChallengeFailed {
                attempt: hints::attempt(kind, &domain, &challenge.token),
                ca_said: hints::problem_text(problem),
                hint: hints::challenge_hint(
                    kind,
                    &domain,
                    problem.r#type.as_deref(),
                    problem.detail.as_deref(),
                ),
                domain,
                kind,
            };
        }
    }
    let problem = order.state().error.clone();
    AcmeError::Order {
        domains: listed.to_string(),
        ca_said: problem
            .as_ref()
            .map_or("the order became invalid".into(), hints::problem_text),
        hint: hints::order_hint(problem.as_ref().and_then(|p| p.r#type.as_deref())),
    }
}

fn acme_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

fn challenge_type_name(t: &ChallengeType) -> String {
    match t {
        ChallengeType::Http01 => "http-01".into(),
        ChallengeType::Dns01 => "dns-01".into(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".into(),
        ChallengeType::Unknown(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Delays between polls: 250 ms, doubling, at most 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(FIRST_POLL)
    }

    fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(LONGEST_POLL);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_and_is_bounded() {
        let mut poll = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| poll.next().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }
}
