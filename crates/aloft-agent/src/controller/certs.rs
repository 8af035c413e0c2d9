//! Certificates of apps' custom hostnames (`aloft certs add|list|show|remove`): a hostname is
//! checked and normalised (`aloft_api::hostname`), belongs to one app only, and gets a
//! certificate from PEMs the user gives (`files`), a self-signed one made here (the default),
//! or one an ACME CA issues later (`acme`: `awaiting issuance` until `crate::acme` stores it
//! with [`Controller::store_issued_certificate`], or records why it could not with
//! [`Controller::set_acme_status`]). PEMs are checked (parsed, key fits the certificate) before
//! anything is written. The proxy learns of changes through
//! `crate::routing::Routing::reload_certificates`.

use aloft_api::certs::{
    AddCertificate, Certificate, SOURCE_ACME, SOURCE_FILES, SOURCE_SELF_SIGNED,
    STATUS_AWAITING_ISSUANCE, STATUS_READY,
};
use aloft_store::CertificateRow;

use super::{now_rfc3339, Controller};
use super::{DomainError, DomainResult};

/// A stored certificate with its PEMs (for the proxy; never sent to clients).
pub type StoredCertificate = CertificateRow;

/// Whether `add` created the hostname (201) or replaced its certificate (200).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    Created,
    Replaced,
}

impl Controller {
    /// Adds `req.hostname` to `app`, or replaces its certificate when `app` already has it.
    pub async fn add_certificate(
        &self,
        app: &str,
        req: AddCertificate,
    ) -> DomainResult<(Certificate, Added)> {
        self.get_app(app).await?;
        let hostname = aloft_api::hostname::normalize(&req.hostname).map_err(|e| {
            DomainError::invalid_request(format!("invalid hostname {:?}: {e}", req.hostname))
        })?;
        let (source, status, pems) = match (req.chain_pem, req.key_pem, req.acme) {
            (Some(_), Some(_), true) => {
                return Err(DomainError::invalid_request(
                    "give either certificate PEMs or acme, not both",
                ))
            }
            (Some(chain), Some(key), false) => {
                check_pems(&chain, &key)?;
                (SOURCE_FILES, STATUS_READY, Some((chain, key)))
            }
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(DomainError::invalid_request(
                    "give both the certificate chain PEM and its private key PEM (or neither, \
                     for a self-signed certificate)",
                ))
            }
            (None, None, true) => (SOURCE_ACME, STATUS_AWAITING_ISSUANCE, None),
            (None, None, false) => {
                let pems = aloft_proxy::tls::self_signed_pem(std::slice::from_ref(&hostname))
                    .map_err(|e| DomainError::internal(e.to_string()))?;
                (SOURCE_SELF_SIGNED, STATUS_READY, Some(pems))
            }
        };
        let (not_before, not_after) = match &pems {
            Some((chain, _)) => validity(chain)?,
            None => (None, None),
        };
        let now = now_rfc3339();
        let (chain_pem, key_pem) = pems.unzip();
        let row = CertificateRow {
            hostname: hostname.clone(),
            app: app.to_string(),
            source: source.to_string(),
            status: status.to_string(),
            chain_pem,
            key_pem,
            not_before,
            not_after,
            created_at: now.clone(),
            updated_at: now,
        };
        let app_owned = app.to_string();
        self.db(move |s| {
            s.write(|tx| {
                let added = match tx.certificate(&row.hostname)? {
                    Some(other) if other.app != app_owned => {
                        return Ok(Err(DomainError::HostnameTaken(format!(
                            "hostname {} is already app {:?}'s; remove it there first (aloft \
                             certs remove {} -a {})",
                            row.hostname, other.app, row.hostname, other.app
                        ))))
                    }
                    Some(_) => Added::Replaced,
                    None => Added::Created,
                };
                tx.put_certificate(&row)?;
                let stored = tx
                    .certificate(&row.hostname)?
                    .unwrap_or_else(|| row.clone());
                Ok(Ok((to_api(&stored), added)))
            })
        })
        .await?
    }

    /// The certificates of `app`, by hostname.
    pub async fn list_certificates(&self, app: &str) -> DomainResult<Vec<Certificate>> {
        self.get_app(app).await?;
        let app = app.to_string();
        let rows = self
            .db(move |s| s.read(|tx| tx.certificates(Some(&app))))
            .await?;
        Ok(rows.iter().map(to_api).collect())
    }

    /// The certificate of `hostname` in `app`.
    pub async fn get_certificate(&self, app: &str, hostname: &str) -> DomainResult<Certificate> {
        self.get_app(app).await?;
        let name = lookup_name(hostname);
        let row = self
            .db(move |s| s.read(|tx| tx.certificate(&name)))
            .await?
            .filter(|c| c.app == app);
        row.map(|c| to_api(&c))
            .ok_or_else(|| not_found(app, hostname))
    }

    /// Removes `hostname` from `app`; the app no longer answers at it.
    pub async fn remove_certificate(&self, app: &str, hostname: &str) -> DomainResult<Certificate> {
        let cert = self.get_certificate(app, hostname).await?;
        let (a, h) = (app.to_string(), cert.hostname.clone());
        self.db(move |s| s.write(|tx| tx.delete_certificate(&a, &h)))
            .await?;
        Ok(cert)
    }

    /// Every stored certificate with its PEMs (every app's), for the proxy.
    pub async fn stored_certificates(&self) -> DomainResult<Vec<StoredCertificate>> {
        self.db(|s| s.read(|tx| tx.certificates(None))).await
    }

    /// Stores a certificate an ACME CA issued for `hostname` (`app`'s, source `acme`): PEMs
    /// checked, status `ready`. For `crate::acme`; push it to the proxy afterwards. Not found
    /// when the hostname is gone or no longer `acme` (removed or replaced meanwhile).
    pub async fn store_issued_certificate(
        &self,
        app: &str,
        hostname: &str,
        chain_pem: String,
        key_pem: String,
    ) -> DomainResult<Certificate> {
        check_pems(&chain_pem, &key_pem)?;
        let (not_before, not_after) = validity(&chain_pem)?;
        let (app, name) = (app.to_string(), lookup_name(hostname));
        let missing = not_found(&app, hostname);
        self.db(move |s| {
            s.write(|tx| {
                let Some(mut row) = tx
                    .certificate(&name)?
                    .filter(|c| c.app == app && c.source == SOURCE_ACME)
                else {
                    return Ok(Err(missing.clone()));
                };
                row.status = STATUS_READY.to_string();
                row.chain_pem = Some(chain_pem.clone());
                row.key_pem = Some(key_pem.clone());
                row.not_before = not_before.clone();
                row.not_after = not_after.clone();
                row.updated_at = now_rfc3339();
                tx.put_certificate(&row)?;
                Ok(Ok(to_api(&row)))
            })
        })
        .await?
    }

    /// Records `status` (why issuance or renewal failed, and when it is tried again) on the
    /// ACME certificate of `hostname` in `app`, leaving its PEMs (a certificate being renewed
    /// is still served). Not found when the hostname is gone or no longer `acme`.
    pub async fn set_acme_status(
        &self,
        app: &str,
        hostname: &str,
        status: String,
    ) -> DomainResult<Certificate> {
        let (app, name) = (app.to_string(), lookup_name(hostname));
        let missing = not_found(&app, hostname);
        self.db(move |s| {
            s.write(|tx| {
                let Some(mut row) = tx
                    .certificate(&name)?
                    .filter(|c| c.app == app && c.source == SOURCE_ACME)
                else {
                    return Ok(Err(missing.clone()));
                };
                row.status = status.clone();
                row.updated_at = now_rfc3339();
                tx.put_certificate(&row)?;
                Ok(Ok(to_api(&row)))
            })
        })
        .await?
    }
}

/// A hostname as stored, for lookups (a name that cannot be valid finds nothing).
fn lookup_name(hostname: &str) -> String {
    aloft_api::hostname::normalize(hostname).unwrap_or_else(|_| hostname.to_string())
}

fn not_found(app: &str, hostname: &str) -> DomainError {
    DomainError::not_found(format!(
        "app {app:?} has no certificate for {hostname:?} (aloft certs list -a {app})"
    ))
}

fn check_pems(chain: &str, key: &str) -> DomainResult<()> {
    aloft_proxy::tls::certified_key_from_pem(chain, key)
        .map(|_| ())
        .map_err(|e| DomainError::invalid_request(e.to_string()))
}

/// The leaf's validity as RFC 3339 strings.
fn validity(chain: &str) -> DomainResult<(Option<String>, Option<String>)> {
    let (from, to) = aloft_proxy::tls::certificate_validity(chain)
        .map_err(|e| DomainError::invalid_request(e.to_string()))?;
    let rfc = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
    };
    Ok((rfc(from), rfc(to)))
}

fn to_api(c: &CertificateRow) -> Certificate {
    Certificate {
        hostname: c.hostname.clone(),
        app: c.app.clone(),
        source: c.source.clone(),
        status: c.status.clone(),
        not_before: c.not_before.clone(),
        not_after: c.not_after.clone(),
        created_at: c.created_at.clone(),
        updated_at: c.updated_at.clone(),
    }
}
