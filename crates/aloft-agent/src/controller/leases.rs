//! Machine leases: an exclusive, expiring lock a client takes before changing a machine.
//! While a lease is live, every mutating call must carry its nonce (`fly-machine-lease-nonce`)
//! or is refused (`LeaseHeld`). Expired leases count as absent.

use aloft_api::{Lease, MachineState};
use aloft_store::MachineRecord;

use super::actions::{AcquireLease, Nonce};
use super::{now_secs, Controller};
use super::{DomainError, DomainResult};
use crate::ids;

/// Longest lease a client may take, in seconds.
pub const MAX_TTL: u64 = 24 * 3600;
/// Owner recorded on leases (one token per agent, so one identity).
pub const OWNER: &str = "aloft";

pub fn check_ttl(ttl: u64) -> DomainResult<()> {
    if ttl == 0 || ttl > MAX_TTL {
        return Err(DomainError::invalid_request(format!(
            "lease ttl must be 1 to {MAX_TTL} seconds, got {ttl}"
        )));
    }
    Ok(())
}

pub fn new_lease(ttl: u64, description: &str, version: &str) -> Lease {
    Lease {
        nonce: ids::lease_nonce(),
        expires_at: now_secs() + ttl as i64,
        owner: OWNER.into(),
        description: description.into(),
        version: version.into(),
    }
}

fn expires(lease: &Lease) -> String {
    time::OffsetDateTime::from_unix_timestamp(lease.expires_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| lease.expires_at.to_string())
}

impl Controller {
    async fn live_lease(&self, machine_id: &str) -> DomainResult<Option<Lease>> {
        let id = machine_id.to_string();
        let lease = self.db(move |s| s.read(|tx| tx.lease(&id))).await?;
        Ok(lease.filter(|l| l.expires_at > now_secs()))
    }

    /// Refuses a mutation of a leased machine without the lease's nonce.
    pub(crate) async fn check_lease(&self, rec: &MachineRecord, nonce: &Nonce) -> DomainResult<()> {
        match self.live_lease(&rec.id).await? {
            Some(l) if nonce.as_deref() != Some(l.nonce.as_str()) => Err(DomainError::LeaseHeld(
                format!(
                    "machine {} is leased by {} until {}{}: send its nonce in the fly-machine-lease-nonce \
                     header, or wait for the lease to be released or to expire",
                    rec.id,
                    l.owner,
                    expires(&l),
                    if l.description.is_empty() { String::new() } else { format!(" ({})", l.description) }
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Acquires a lease, or refreshes it when the request carries the live lease's nonce.
    pub async fn acquire_lease(
        &self,
        app: &str,
        id: &str,
        action: AcquireLease,
    ) -> DomainResult<Lease> {
        check_ttl(action.ttl)?;
        let _guard = self.lock(id).await;
        let rec = self.record(app, id).await?;
        if rec.state == MachineState::Destroyed {
            return Err(DomainError::precondition(format!(
                "machine {id} is destroyed"
            )));
        }
        let lease = match self.live_lease(id).await? {
            Some(mut l) if action.nonce.as_deref() == Some(l.nonce.as_str()) => {
                l.expires_at = now_secs() + action.ttl as i64;
                if !action.description.is_empty() {
                    l.description = action.description;
                }
                l
            }
            Some(l) => {
                return Err(DomainError::LeaseConflict(format!(
                    "machine ID {id} lease currently held by {}, expires at {}",
                    l.owner,
                    expires(&l)
                )))
            }
            None => new_lease(action.ttl, &action.description, &rec.instance_id),
        };
        let (mid, l) = (rec.id.clone(), lease.clone());
        self.db(move |s| s.write(|tx| tx.put_lease(&mid, &l)))
            .await?;
        Ok(lease)
    }

    pub async fn get_lease(&self, app: &str, id: &str) -> DomainResult<Lease> {
        let rec = self.record(app, id).await?;
        self.live_lease(&rec.id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("machine {id} has no active lease")))
    }

    pub async fn release_lease(&self, app: &str, id: &str, nonce: Nonce) -> DomainResult<()> {
        self.record(app, id).await?;
        let Some(nonce) = nonce else {
            return Err(DomainError::invalid_request(
                "releasing a lease needs its nonce in the fly-machine-lease-nonce header",
            ));
        };
        let _guard = self.lock(id).await;
        let rec = self.record(app, id).await?;
        match self.live_lease(&rec.id).await? {
            None => Err(DomainError::not_found(format!(
                "machine {id} has no active lease"
            ))),
            Some(l) if l.nonce != nonce => Err(DomainError::LeaseConflict(format!(
                "machine ID {id} lease is held by {} with another nonce, expires at {}",
                l.owner,
                expires(&l)
            ))),
            Some(_) => {
                let mid = rec.id.clone();
                self.db(move |s| s.write(|tx| tx.delete_lease(&mid)))
                    .await?;
                Ok(())
            }
        }
    }
}
