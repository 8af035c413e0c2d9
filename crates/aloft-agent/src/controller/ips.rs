//! An app's IP addresses (`aloft ips`): public ones — the host's shared IPv4 address, its
//! public IPv6 address — and Flycast ones, private IPv6 addresses on the app's organization
//! network that the runtime puts on the bridge and the proxy serves the app's services on.
//!
//! Which addresses an app holds decides where the proxy serves it (`routing`): an app with no
//! address, or with a public one, is served on every address of the host (Aloft's default: an
//! app without `aloft ips` works as before); an app whose only addresses are Flycast ones is
//! served on those alone, to machines of its organization. Deliberate difference from Fly: a
//! dedicated IPv4 address is refused (one agent has its host's addresses, not a pool of them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

use aloft_api::network::{AllocateIpRequest, IpAddress, IpKind};
use aloft_store::IpRow;

use super::{now_rfc3339, Controller, DomainError, DomainResult};
use crate::settings::PublicAddresses;

/// The source address the host would use towards `probe`: the address of the interface of
/// its default route. A UDP "connect" sends nothing.
fn route_source(probe: IpAddr) -> Option<IpAddr> {
    let bind: IpAddr = match probe {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((bind, 0)).ok()?;
    socket.connect((probe, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Finding the host's addresses when the agent's flags did not give them.
trait Detect {
    fn v4(&self) -> DomainResult<Ipv4Addr>;
    fn v6(&self) -> DomainResult<Ipv6Addr>;
}

impl Detect for PublicAddresses {
    /// The host's IPv4 address: the flag's, else that of the default route's interface.
    fn v4(&self) -> DomainResult<Ipv4Addr> {
        if let Some(ip) = self.ipv4 {
            return Ok(ip);
        }
        // 192.0.2.1 (TEST-NET-1) is never contacted: only the route towards it is looked up.
        match route_source(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))) {
            Some(IpAddr::V4(ip)) if !ip.is_loopback() && !ip.is_unspecified() => Ok(ip),
            _ => Err(DomainError::InvalidConfig(
                "this host has no default IPv4 route, so it has no address to share: start \
                 the agent with --public-ipv4 ADDRESS"
                    .into(),
            )),
        }
    }

    /// The host's public IPv6 address: the flag's, else that of the default route's interface
    /// when it is a global one.
    fn v6(&self) -> DomainResult<Ipv6Addr> {
        if let Some(ip) = self.ipv6 {
            return Ok(ip);
        }
        // 2001:db8::1 (documentation prefix) is never contacted.
        match route_source(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))) {
            Some(IpAddr::V6(ip)) if is_global_v6(ip) => Ok(ip),
            _ => Err(DomainError::InvalidConfig(
                "this host has no public IPv6 address (no global IPv6 default route): start \
                 the agent with --public-ipv6 ADDRESS, or use `aloft ips allocate-v4 --shared`"
                    .into(),
            )),
        }
    }
}

/// Global unicast (2000::/3), which neither ULA (fc00::/7) nor link-local addresses are.
fn is_global_v6(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xe000) == 0x2000
}

/// Only `global` (or no region): every address of an agent serves all its regions.
fn check_region(region: &Option<String>) -> DomainResult<String> {
    match region.as_deref().map(str::trim) {
        None | Some("") | Some("global") => Ok("global".into()),
        Some(other) => Err(DomainError::invalid_config(format!(
            "region {other:?}: an Aloft agent serves all its regions on each of its addresses, so \
             addresses are global; leave --region out"
        ))),
    }
}

/// Where the proxy serves an app (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppAddresses {
    /// Its Flycast addresses: the proxy serves its services there too.
    pub flycast: Vec<IpAddr>,
    /// Whether it is served on the public (wildcard) listeners.
    pub public: bool,
}

impl Default for AppAddresses {
    /// An app without addresses: public, no Flycast.
    fn default() -> AppAddresses {
        AppAddresses {
            flycast: Vec::new(),
            public: true,
        }
    }
}

/// Each app's [`AppAddresses`] from the rows of the `ips` table.
fn addresses_by_app(rows: &[IpRow]) -> std::collections::BTreeMap<String, AppAddresses> {
    let mut by_app: std::collections::BTreeMap<String, Vec<&IpRow>> = Default::default();
    for r in rows {
        by_app.entry(r.app.clone()).or_default().push(r);
    }
    by_app
        .into_iter()
        .map(|(app, rows)| {
            let flycast = rows
                .iter()
                .filter(|r| r.ip.kind == IpKind::PrivateV6)
                .filter_map(|r| r.ip.address.parse().ok())
                .collect();
            let public = rows.is_empty() || rows.iter().any(|r| r.ip.kind.is_public());
            (app, AppAddresses { flycast, public })
        })
        .collect()
}

impl Controller {
    /// Where the proxy serves `app`: its Flycast addresses, and whether it is public (an app
    /// with no address, or with a public one). Synchronous: from the controller's copy of the
    /// `ips` table.
    pub fn app_addresses(&self, app: &str) -> AppAddresses {
        self.app_addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
            .unwrap_or_default()
    }

    /// Re-reads the `ips` table into the copy [`Controller::app_addresses`] answers from, then
    /// tells the proxy and the DNS server (`subscribe_ips`).
    pub(crate) async fn ips_changed(&self) {
        match self.all_ips().await {
            Ok(rows) => {
                *self
                    .app_addresses
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = addresses_by_app(&rows)
            }
            Err(e) => tracing::warn!("reading the apps' addresses: {e}"),
        }
        self.ip_changes.send_modify(|v| *v += 1);
    }

    pub fn set_public_addresses(&self, addresses: PublicAddresses) {
        let _ = self.public_addresses.set(addresses);
    }

    fn public_addresses(&self) -> PublicAddresses {
        self.public_addresses.get().cloned().unwrap_or_default()
    }

    /// The app's addresses, oldest first.
    pub async fn list_ips(&self, app: &str) -> DomainResult<Vec<IpAddress>> {
        self.get_app(app).await?;
        let a = app.to_string();
        let rows = self.db(move |s| s.read(|tx| tx.ips(&a))).await?;
        Ok(rows.into_iter().map(|r| r.ip).collect())
    }

    /// Every app's addresses (the proxy's and the DNS server's view).
    pub async fn all_ips(&self) -> DomainResult<Vec<IpRow>> {
        self.db(|s| s.read(|tx| tx.all_ips())).await
    }

    /// Gives the app an address of the kind asked.
    pub async fn allocate_ip(&self, app: &str, req: AllocateIpRequest) -> DomainResult<IpAddress> {
        let rec = self.app_record(app).await?;
        let region = check_region(&req.region)?;
        let existing = self.list_ips(app).await?;
        let (address, net_key) =
            match req.kind {
                IpKind::V4 => return Err(DomainError::invalid_config(
                    "a dedicated IPv4 address needs an address of its own on this host, and an \
                     Aloft agent has only its host's: use `aloft ips allocate-v4 --shared` (HTTP \
                     services are routed by Host and SNI on the shared address)",
                )),
                IpKind::SharedV4 => (self.public_addresses().v4()?.to_string(), String::new()),
                IpKind::V6 => (self.public_addresses().v6()?.to_string(), String::new()),
                IpKind::PrivateV6 => {
                    let key = format!("{app}.{}", crate::ids::app_id());
                    let org = rec.org_slug.clone();
                    let sup = self.sup.clone();
                    let k = key.clone();
                    let ip = tokio::task::spawn_blocking(move || sup.service_address(&org, &k))
                        .await
                        .map_err(|e| DomainError::internal(e.to_string()))?
                        .map_err(DomainError::InvalidConfig)?;
                    (ip.to_string(), key)
                }
            };
        if req.kind != IpKind::PrivateV6 && existing.iter().any(|ip| ip.address == address) {
            return Err(DomainError::precondition(format!(
                "app {app} already has {address} ({})",
                req.kind.label()
            )));
        }
        let row = IpRow {
            app: app.to_string(),
            ip: IpAddress {
                address,
                kind: req.kind,
                region,
                created_at: now_rfc3339(),
            },
            net_key,
        };
        let r = row.clone();
        let stored = self.db(move |s| s.write(|tx| tx.insert_ip(&r))).await;
        if let Err(e) = stored {
            if !row.net_key.is_empty() {
                self.sup.release_service_address(&row.net_key);
            }
            return Err(e);
        }
        self.ips_changed().await;
        Ok(row.ip)
    }

    /// Takes an address from the app (a Flycast address leaves the bridge).
    pub async fn release_ip(&self, app: &str, address: &str) -> DomainResult<IpAddress> {
        self.get_app(app).await?;
        let a = app.to_string();
        let rows = self.db(move |s| s.read(|tx| tx.ips(&a))).await?;
        let wanted = address.trim().to_ascii_lowercase();
        let Some(row) = rows.into_iter().find(|r| {
            r.ip.address == wanted
                || r.ip.address.parse::<IpAddr>().ok() == wanted.parse::<IpAddr>().ok()
                    && wanted.parse::<IpAddr>().is_ok()
        }) else {
            return Err(DomainError::not_found(format!(
                "app {app} has no address {address}: `aloft ips list -a {app}` shows its addresses"
            )));
        };
        let (a, addr) = (app.to_string(), row.ip.address.clone());
        self.db(move |s| s.write(|tx| tx.delete_ip(&a, &addr)))
            .await?;
        if !row.net_key.is_empty() {
            self.sup.release_service_address(&row.net_key);
        }
        self.ips_changed().await;
        Ok(row.ip)
    }

    /// Puts the Flycast addresses on record back on the bridge (after a host restart the bridge
    /// is new); the runtime keeps the same address for the same key.
    pub async fn restore_service_addresses(&self) -> DomainResult<()> {
        self.ips_changed().await;
        let rows = self.all_ips().await?;
        let orgs = self.app_orgs().await?;
        for row in rows.into_iter().filter(|r| !r.net_key.is_empty()) {
            let org = orgs.get(&row.app).cloned().unwrap_or_default();
            let sup = self.sup.clone();
            let key = row.net_key.clone();
            let got = tokio::task::spawn_blocking(move || sup.service_address(&org, &key))
                .await
                .map_err(|e| DomainError::internal(e.to_string()))?;
            match got {
                Ok(ip) if ip.to_string() == row.ip.address => {}
                Ok(ip) => tracing::warn!(
                    app = %row.app, recorded = %row.ip.address, now = %ip,
                    "the Flycast address on record was not given back by the network"
                ),
                Err(e) => {
                    tracing::warn!(app = %row.app, address = %row.ip.address, "cannot restore a Flycast address: {e}")
                }
            }
        }
        Ok(())
    }

    /// A container machine's IPv4 address on the bridge (where the proxy connects).
    pub fn machine_ipv4(&self, machine_id: &str) -> Option<Ipv4Addr> {
        self.sup.machine_ipv4(machine_id)
    }

    /// Each app's organization.
    pub async fn app_orgs(&self) -> DomainResult<std::collections::BTreeMap<String, String>> {
        self.db(|s| {
            s.read(|tx| {
                Ok(tx
                    .apps(None)?
                    .into_iter()
                    .map(|a| (a.name, a.org_slug))
                    .collect())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(app: &str, address: &str, kind: IpKind) -> IpRow {
        IpRow {
            app: app.into(),
            ip: IpAddress {
                address: address.into(),
                kind,
                region: "global".into(),
                created_at: String::new(),
            },
            net_key: String::new(),
        }
    }

    #[test]
    fn apps_with_only_private_addresses_are_not_public() {
        let rows = [
            row("private", "fdaa::f:1", IpKind::PrivateV6),
            row("both", "fdaa::f:2", IpKind::PrivateV6),
            row("both", "203.0.113.7", IpKind::SharedV4),
        ];
        let by_app = addresses_by_app(&rows);
        assert!(!by_app["private"].public);
        assert_eq!(
            by_app["private"].flycast,
            vec!["fdaa::f:1".parse::<IpAddr>().unwrap()]
        );
        assert!(by_app["both"].public);
        assert_eq!(by_app.get("none"), None, "no row: the default, public");
        assert!(AppAddresses::default().public);
    }

    #[test]
    fn only_global_regions_are_accepted() {
        assert_eq!(check_region(&None).unwrap(), "global");
        assert_eq!(check_region(&Some("global".into())).unwrap(), "global");
        let e = check_region(&Some("ams".into())).unwrap_err().to_string();
        assert!(e.contains("leave --region out"), "{e}");
    }

    #[test]
    fn ula_and_link_local_addresses_are_not_public() {
        assert!(is_global_v6("2a09:8280:1::1".parse().unwrap()));
        assert!(!is_global_v6("fdaa:0:1::2".parse().unwrap()));
        assert!(!is_global_v6("fe80::1".parse().unwrap()));
    }

    #[test]
    fn flag_addresses_win_over_detection() {
        let p = PublicAddresses {
            ipv4: Some(Ipv4Addr::new(203, 0, 113, 7)),
            ipv6: Some("2001:db8::7".parse().unwrap()),
        };
        assert_eq!(p.v4().unwrap(), Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(p.v6().unwrap().to_string(), "2001:db8::7");
    }
}
