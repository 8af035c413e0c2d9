//! Apps: create, list, get, delete.

use aloft_api::{App, CreateAppRequest, Organization};
use aloft_store::{AppRecord, StoreError, Tx};

use super::actions::DeleteMachine;
use super::{now_rfc3339, Controller};
use super::{DomainError, DomainResult};
use crate::ids;

fn to_api(rec: AppRecord, machine_count: u64) -> App {
    App {
        id: rec.id,
        name: rec.name,
        status: rec.status,
        network: rec.network,
        organization: Organization {
            name: rec.org_slug.clone(),
            slug: rec.org_slug,
        },
        machine_count,
        volume_count: 0,
    }
}

/// The app as Fly's API shows it: `deployed` once one of its deploys completed, else the
/// status it was created with (`pending`).
fn with_deploy_status(tx: &Tx<'_>, mut rec: AppRecord) -> Result<AppRecord, StoreError> {
    if tx.has_complete_deploy(&rec.name)? {
        rec.status = "deployed".into();
    }
    Ok(rec)
}

impl Controller {
    pub async fn create_app(&self, req: CreateAppRequest) -> DomainResult<App> {
        let name = req.app_name.unwrap_or_default().trim().to_string();
        if name.is_empty() {
            return Err(DomainError::invalid_config(
                "app_name (or name) is required",
            ));
        }
        if let Some(problem) = ids::app_name_problem(&name) {
            return Err(DomainError::invalid_config(problem));
        }
        if req.enable_subdomains {
            return Err(DomainError::invalid_config(format!(
                "enable_subdomains: routing every subdomain of the app's hostname to {name} is \
                 not supported by this agent; add each hostname with `aloft certs add HOSTNAME -a \
                 {name}` instead, or create the app without enable_subdomains"
            )));
        }
        let rec = AppRecord {
            id: ids::app_id(),
            name,
            org_slug: req
                .org_slug
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "personal".into()),
            network: req
                .network
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            status: "pending".into(),
            created_at: now_rfc3339(),
        };
        let r = rec.clone();
        self.db(move |s| s.write(|tx| tx.insert_app(&r))).await?;
        Ok(to_api(rec, 0))
    }

    pub async fn list_apps(&self, org_slug: Option<String>) -> DomainResult<Vec<App>> {
        self.db(move |s| {
            s.read(|tx| {
                let mut out = Vec::new();
                for rec in tx.apps(org_slug.as_deref())? {
                    let n = tx.machine_count(&rec.name)?;
                    out.push(to_api(with_deploy_status(tx, rec)?, n));
                }
                Ok(out)
            })
        })
        .await
    }

    /// The app's row (its organization, network).
    pub async fn app_record(&self, name: &str) -> DomainResult<AppRecord> {
        let n = name.to_string();
        self.db(move |s| s.read(|tx| tx.app(&n)))
            .await?
            .ok_or_else(|| DomainError::app_not_found(name))
    }

    /// The organization of the app (`personal` for an app the store no longer has).
    pub async fn org_of(&self, app: &str) -> DomainResult<String> {
        let n = app.to_string();
        Ok(self
            .db(move |s| s.read(|tx| tx.app(&n)))
            .await?
            .map_or_else(|| "personal".to_string(), |a| a.org_slug))
    }

    pub async fn get_app(&self, name: &str) -> DomainResult<App> {
        let n = name.to_string();
        self.db(move |s| {
            s.read(|tx| match tx.app(&n)? {
                Some(rec) => {
                    let count = tx.machine_count(&n)?;
                    Ok(Some(to_api(with_deploy_status(tx, rec)?, count)))
                }
                None => Ok(None),
            })
        })
        .await?
        .ok_or_else(|| DomainError::app_not_found(name))
    }

    /// Deletes an app. Without `force`, refused while any machine is running; with it, every
    /// machine is killed and destroyed first.
    pub async fn delete_app(&self, name: &str, force: bool) -> DomainResult<()> {
        self.get_app(name).await?;
        let n = name.to_string();
        let machines = self
            .db(move |s| s.read(|tx| tx.machines(&n, &aloft_store::MachineFilter::default())))
            .await?;
        let running: Vec<&str> = machines
            .iter()
            .filter(|m| {
                !matches!(
                    m.state,
                    aloft_api::MachineState::Stopped
                        | aloft_api::MachineState::Created
                        | aloft_api::MachineState::Failed
                        | aloft_api::MachineState::Destroyed
                )
            })
            .map(|m| m.id.as_str())
            .collect();
        if !running.is_empty() && !force {
            return Err(DomainError::precondition(format!(
                "app {name:?} still has running machines ({}); stop them first or delete with force=true",
                running.join(", ")
            )));
        }
        for m in &machines {
            // Leases do not protect machines from the deletion of their app.
            let id = m.id.clone();
            self.db(move |s| s.write(|tx| tx.delete_lease(&id))).await?;
            self.destroy_machine(
                name,
                &m.id,
                DeleteMachine {
                    force: true,
                    nonce: None,
                },
            )
            .await
            .or_else(|e| {
                if matches!(e, DomainError::Precondition(_)) {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        }
        // Machines are gone: their volumes go with the app (as on Fly).
        self.destroy_app_volumes(name).await?;
        let n = name.to_string();
        let ips = self.db(move |s| s.read(|tx| tx.ips(&n))).await?;
        let n = name.to_string();
        self.db(move |s| s.write(|tx| tx.delete_app(&n))).await?;
        // Its Flycast addresses leave the bridge once nothing refers to them any more.
        for row in ips.iter().filter(|r| !r.net_key.is_empty()) {
            self.sup.release_service_address(&row.net_key);
        }
        if !ips.is_empty() {
            self.ips_changed().await;
        }
        Ok(())
    }
}
