//! ACME issuance and renewal of the certificates of hostnames added with `aloft certs add
//! --acme` (source `acme` in the `certificates` table), for an agent that runs the proxy.
//!
//! One task ([`Acme::start`]) looks at the stored certificates on start, whenever one is added
//! ([`Acme::hostname_added`]), after each issuance and at least hourly: an `acme` hostname
//! without a certificate, or whose certificate `aloft_acme::renewal_due` says to renew, gets
//! an issuance of its own (one per hostname at a time). The CA's challenges are answered by the
//! proxy's registry ([`ProxyChallenges`]); HTTP-01 on port 80 or TLS-ALPN-01 on 443
//! (`aloft agent --acme-challenge`). An issued certificate is stored through the controller
//! and handed to the proxy (`Routing::reload_certificates`). A failure is recorded as the
//! certificate's status — what the CA said, what to do, when it is tried again — and retried
//! with a backoff from [`FIRST_RETRY`] doubling to [`LAST_RETRY`]; a certificate being renewed
//! is served meanwhile. The ACME account (`<data-dir>/acme`) is opened at the first issuance,
//! so no CA is contacted while the agent starts.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use aloft_acme::{AcmeClient, AcmeError, ChallengeResponder};
use aloft_api::certs::SOURCE_ACME;
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;

use crate::controller::Controller;
use crate::routing::Routing;
use crate::settings::AcmeSettings;

/// The longest the task sleeps between looks at the stored certificates.
const CHECK_EVERY: Duration = Duration::from_secs(60 * 60);
/// The wait before the first retry of a failed issuance; it doubles with each failure…
pub const FIRST_RETRY: Duration = Duration::from_secs(5 * 60);
/// …up to this. (Let's Encrypt allows 5 failed validations per hostname and hour.)
pub const LAST_RETRY: Duration = Duration::from_secs(6 * 60 * 60);

/// The wait before the next attempt after `failures` failures in a row (1 or more).
pub fn retry_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(LAST_RETRY)
}

/// The proxy's challenge registry as the ACME client's [`ChallengeResponder`].
pub struct ProxyChallenges(pub Arc<aloft_proxy::Challenges>);

impl ChallengeResponder for ProxyChallenges {
    fn set_http01(&self, token: &str, key_authorization: &str) {
        self.0.set_http01(token, key_authorization);
    }
    fn remove_http01(&self, token: &str) {
        self.0.remove_http01(token);
    }
    fn set_tls_alpn01(&self, domain: &str, cert_chain_der: Vec<Vec<u8>>, key_der: Vec<u8>) {
        self.0.set_tls_alpn01(domain, cert_chain_der, key_der);
    }
    fn remove_tls_alpn01(&self, domain: &str) {
        self.0.remove_tls_alpn01(domain);
    }
}

/// The issuance task's handle: wake it, or (tests) make it look with another clock.
pub struct Acme {
    ctl: Arc<Controller>,
    /// Weak: the task ends when the agent drops its proxy.
    routing: Weak<Routing>,
    settings: AcmeSettings,
    /// The contents of `settings.ca_roots`, read when the agent started.
    ca_roots_pem: Option<String>,
    account_dir: PathBuf,
    responder: ProxyChallenges,
    /// Opened at the first issuance; not kept when opening fails (tried again next time).
    client: OnceCell<AcmeClient>,
    /// Hostnames with an issuance under way.
    in_flight: Mutex<HashSet<String>>,
    /// Hostnames whose last issuance failed: failures in a row, and when to try again.
    retries: Mutex<HashMap<String, Retry>>,
    wake: Notify,
    /// The clock of the next look, instead of the system's ([`Acme::check_as_of`]).
    as_of: Mutex<Option<SystemTime>>,
}

#[derive(Clone, Copy, Debug)]
struct Retry {
    failures: u32,
    at: Instant,
}

impl Acme {
    /// Starts the task over the agent's certificates and proxy. `ca_roots_pem`: the contents
    /// of [`AcmeSettings::ca_roots`].
    pub fn start(
        ctl: Arc<Controller>,
        routing: &Arc<Routing>,
        settings: AcmeSettings,
        ca_roots_pem: Option<String>,
        account_dir: PathBuf,
    ) -> Arc<Acme> {
        let acme = Arc::new(Acme {
            ctl,
            responder: ProxyChallenges(routing.proxy.challenges()),
            routing: Arc::downgrade(routing),
            settings,
            ca_roots_pem,
            account_dir,
            client: OnceCell::new(),
            in_flight: Mutex::default(),
            retries: Mutex::default(),
            wake: Notify::new(),
            as_of: Mutex::default(),
        });
        tokio::spawn(acme.clone().run());
        acme
    }

    /// `hostname` was added (or replaced) by a user: look now, without waiting out an earlier
    /// failure's backoff.
    pub fn hostname_added(&self, hostname: &str) {
        lock(&self.retries).remove(hostname);
        self.wake.notify_one();
    }

    /// Looks at the certificates now, judging renewal as if the clock said `now` (for tests
    /// of renewal; backoffs still follow the real clock).
    pub fn check_as_of(&self, now: SystemTime) {
        *lock(&self.as_of) = Some(now);
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        loop {
            if self.routing.strong_count() == 0 {
                return;
            }
            let now = lock(&self.as_of).take().unwrap_or_else(SystemTime::now);
            let next = match self.check(now).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("looking for certificates to issue failed: {e}");
                    Instant::now() + FIRST_RETRY
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// Starts an issuance for every `acme` hostname that needs one and may have one now;
    /// returns when to look next.
    async fn check(self: &Arc<Self>, now: SystemTime) -> Result<Instant, String> {
        let certs = self
            .ctl
            .stored_certificates()
            .await
            .map_err(|e| e.to_string())?;
        let mut next = Instant::now() + CHECK_EVERY;
        let acme: Vec<_> = certs
            .into_iter()
            .filter(|c| c.source == SOURCE_ACME)
            .collect();
        let mut retries = lock(&self.retries);
        retries.retain(|host, _| acme.iter().any(|c| &c.hostname == host));
        for cert in acme {
            let current = cert
                .chain_pem
                .as_deref()
                .and_then(|chain| aloft_acme::parse_validity(chain).ok());
            let due = match current {
                Some(v) => aloft_acme::renewal_due(v.not_before, v.not_after, now),
                None => true,
            };
            if !due {
                continue;
            }
            if let Some(retry) = retries.get(&cert.hostname) {
                if retry.at > Instant::now() {
                    next = next.min(retry.at);
                    continue;
                }
            }
            if !lock(&self.in_flight).insert(cert.hostname.clone()) {
                continue;
            }
            let renewing = current.map(|v| v.not_after);
            tokio::spawn(self.clone().issue(cert.app, cert.hostname, renewing));
        }
        Ok(next)
    }

    /// One issuance for `hostname`; `renewing`: the end of the certificate it replaces.
    async fn issue(self: Arc<Self>, app: String, hostname: String, renewing: Option<SystemTime>) {
        let kind = self.settings.challenge;
        let result = match self.client().await {
            Ok(client) => {
                client
                    .issue(std::slice::from_ref(&hostname), kind, &self.responder)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(issued) => {
                lock(&self.retries).remove(&hostname);
                let stored = self
                    .ctl
                    .store_issued_certificate(&app, &hostname, issued.chain_pem, issued.key_pem)
                    .await;
                match stored {
                    Ok(_) => {
                        if let Some(routing) = self.routing.upgrade() {
                            if let Err(e) = routing.reload_certificates().await {
                                tracing::warn!(%hostname, "issued certificate not served yet: {e}");
                            }
                        }
                    }
                    // Removed or replaced while the CA was at work: nothing to keep.
                    Err(e) => tracing::info!(%hostname, "issued certificate not stored: {e}"),
                }
            }
            Err(e) => {
                let failures = {
                    let mut retries = lock(&self.retries);
                    let failures = retries.get(&hostname).map_or(0, |r| r.failures) + 1;
                    let wait = retry_after(failures);
                    retries.insert(
                        hostname.clone(),
                        Retry {
                            failures,
                            at: Instant::now() + wait,
                        },
                    );
                    failures
                };
                let status =
                    failure_status(&e, renewing, SystemTime::now() + retry_after(failures));
                tracing::warn!(%hostname, %app, failures, "{status}");
                if let Err(e) = self.ctl.set_acme_status(&app, &hostname, status).await {
                    tracing::info!(%hostname, "issuance failure not recorded: {e}");
                }
            }
        }
        lock(&self.in_flight).remove(&hostname);
        // Look again: the next wake-up accounts for this hostname's backoff.
        self.wake.notify_one();
    }

    async fn client(&self) -> Result<&AcmeClient, AcmeError> {
        self.client
            .get_or_try_init(|| {
                AcmeClient::new(
                    &self.settings.directory_url,
                    &self.account_dir,
                    &self.settings.contact,
                    self.ca_roots_pem.as_deref(),
                )
            })
            .await
    }
}

/// The status of a certificate whose issuance (or renewal, when `renewing` gives the end of the
/// certificate still served) failed with `error`, to be tried again at `next`.
fn failure_status(error: &AcmeError, renewing: Option<SystemTime>, next: SystemTime) -> String {
    let next = rfc3339(next);
    match renewing {
        None => format!("failed: {error} (next attempt at {next})"),
        Some(until) => format!(
            "renewal failed: {error} (the current certificate is served until {}; next attempt \
             at {next})",
            rfc3339(until)
        ),
    }
}

fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_five_minutes_to_six_hours() {
        assert_eq!(retry_after(1), Duration::from_secs(300));
        assert_eq!(retry_after(2), Duration::from_secs(600));
        assert_eq!(retry_after(3), Duration::from_secs(1200));
        assert_eq!(retry_after(7), Duration::from_secs(320 * 60));
        assert_eq!(retry_after(8), LAST_RETRY, "640 minutes would pass the cap");
        assert_eq!(retry_after(u32::MAX), LAST_RETRY);
    }

    #[test]
    fn a_failure_status_says_what_failed_and_when_it_is_tried_again() {
        let error = AcmeError::Timeout {
            after: Duration::from_secs(180),
            stage: "waiting for the CA to validate the challenges for a.example".into(),
        };
        let next = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let status = failure_status(&error, None, next);
        assert!(
            status.starts_with("failed: gave up after 180s waiting"),
            "{status}"
        );
        assert!(
            status.ends_with("(next attempt at 2027-01-15T08:00:00Z)"),
            "{status}"
        );
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_086_400);
        let status = failure_status(&error, Some(until), next);
        assert!(status.starts_with("renewal failed: gave up"), "{status}");
        assert!(
            status.contains(
                "served until 2027-01-16T08:00:00Z; next attempt at 2027-01-15T08:00:00Z"
            ),
            "{status}"
        );
    }
}
