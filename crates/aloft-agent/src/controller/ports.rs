//! Who may serve which external port: apps share a port only when all of them serve it with the
//! `http` handler and the same `tls` setting (`[http_service]`'s 80 and 443, routed by `Host`);
//! a machine whose services claim a port another app serves otherwise (raw TCP, other handlers)
//! is refused, whether it comes from a deploy or straight from the Machines API (create,
//! update, clone). Private apps (Flycast only) are on no public port and clash with nobody. Checks and the writes they
//! guard run under one lock, so two apps cannot claim a free port at the same moment.

use aloft_api::MachineService;
use aloft_store::MachineFilter;
use tokio::sync::MutexGuard;

use super::actions::ListMachines;
use super::Controller;
use super::{DomainError, DomainResult};

impl Controller {
    /// Refuses `services` of `app` the proxy cannot serve (UDP, unknown handlers) and external
    /// ports another app serves. While the returned guard is held, no other app can claim a
    /// port: hold it until the machine carrying `services` is written.
    pub(crate) async fn claim_ports(
        &self,
        app: &str,
        services: &[MachineService],
    ) -> DomainResult<MutexGuard<'_, ()>> {
        aloft_proxy::reject_udp_services(services)
            .map_err(|e| DomainError::invalid_config(e.to_string()))?;
        let guard = self.port_claims.lock().await;
        let public = self.app_addresses(app).public;
        if !public || aloft_proxy::claimed_ports(services).is_empty() {
            return Ok(guard);
        }
        let mut others = Vec::new();
        for other in self.list_apps(None).await? {
            if other.name == app {
                continue;
            }
            let list = ListMachines {
                filter: MachineFilter::default(),
                summary: true,
            };
            let machines = self.list_machines(&other.name, list).await?;
            let addresses = self.app_addresses(&other.name);
            others.push(aloft_proxy::AppRoutes {
                flycast: addresses.flycast,
                public: addresses.public,
                ..aloft_proxy::AppRoutes::new(other.name, String::new(), machines)
            });
        }
        let table = aloft_proxy::RouteTable::from_machines(&others);
        let conflicts = aloft_proxy::port_conflicts(&table, app, services);
        if conflicts.is_empty() {
            return Ok(guard);
        }
        let lines: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        Err(DomainError::invalid_config(lines.join("; ")))
    }
}
