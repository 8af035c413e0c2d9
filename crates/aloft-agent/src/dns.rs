//! The agent side of the private network's DNS server (`aloft-dns`): keeps its table in step
//! with the machines and the apps' Flycast addresses, starts it on the bridge's gateway
//! addresses once the container network exists, and answers `aloft dig` through the API.
//!
//! Data flow (like `routing`): controller changes (machines: broadcast; IP addresses: a
//! counter) → in-memory map app → machines → debounced [`build_table`] → `watch` → server. The
//! server never sees the store.
//!
//! When it listens: the container network is made on the first container start (the runtime's
//! `LazyNetwork`), and its hook calls [`Dns::network_ready`] on that blocking thread, which
//! binds the server before the container runs: a machine's first query finds it listening.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aloft_api::network::{DnsAnswer, IpKind};
use aloft_api::MachineState;
use aloft_dns::{
    DnsConfig, DnsHandle, DnsMachine, DnsServer, DnsService, DnsTable, RecordData, RecordType,
    Status, View,
};
use aloft_store::IpRow;
use tokio::sync::watch;

use crate::controller::{Controller, DomainError, DomainResult};
use crate::machine_map::{self, AppMachines};

/// How long changes are gathered before the table is rebuilt.
const REBUILD_DEBOUNCE: Duration = Duration::from_millis(10);

/// The DNS side of the agent: the table's sender and, once the network exists, the server.
pub struct Dns {
    table: watch::Sender<Arc<DnsTable>>,
    server: OnceLock<Result<DnsHandle, String>>,
    /// The bridge's gateways: queries from them (the host) see every organization.
    gateways: OnceLock<Vec<IpAddr>>,
}

impl Dns {
    pub fn new() -> Arc<Dns> {
        Arc::new(Dns {
            table: watch::channel(Arc::new(DnsTable::default())).0,
            server: OnceLock::new(),
            gateways: OnceLock::new(),
        })
    }

    /// Starts the server on `gateways` (port 53, UDP and TCP), forwarding other names to the
    /// host's resolvers. Called once by the network's ready hook, from whatever thread set the
    /// network up (the bind runs on a thread of its own, so this may be an async worker too);
    /// later calls do nothing. Returns once the server listens.
    pub fn network_ready(&self, gateways: &[IpAddr], runtime: &tokio::runtime::Handle) {
        let _ = self.gateways.set(gateways.to_vec());
        self.server.get_or_init(|| {
            let upstream =
                aloft_dns::upstream_from_resolv_conf(std::path::Path::new("/etc/resolv.conf"))
                    .unwrap_or_else(|e| {
                        tracing::warn!("cannot read the host's resolvers: {e}");
                        Vec::new()
                    });
            let listen: Vec<SocketAddr> =
                gateways.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
            let config = DnsConfig::new(listen, upstream);
            let (table, rt) = (self.table.subscribe(), runtime.clone());
            let started = std::thread::spawn(move || rt.block_on(DnsServer::spawn(config, table)))
                .join()
                .map_err(|_| "the DNS server's start panicked".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = &started {
                tracing::error!(
                    "machines get no .internal names: cannot start the DNS server: {e}"
                );
            }
            started
        });
    }

    /// Follows machine and address changes until the controller goes away.
    pub fn follow(self: &Arc<Dns>, ctl: Arc<Controller>) {
        tokio::spawn(follow(ctl, self.clone()));
    }

    /// What a machine of `app` gets for `name` (`aloft dig`): `.internal`/`.flycast` names from
    /// the table in the app's organization's view; A/AAAA of other names from the host's
    /// resolver.
    pub async fn lookup(
        &self,
        ctl: &Controller,
        app: &str,
        name: &str,
        rtype: &str,
    ) -> DomainResult<DnsAnswer> {
        let org = ctl.app_record(app).await?.org_slug;
        let name = check_name(name)?;
        let record_type = RecordType::from_str(&rtype.to_ascii_uppercase())
            .ok()
            .filter(|t| !matches!(t, RecordType::Unknown(_)))
            .ok_or_else(|| {
                DomainError::invalid_config(format!(
                    "record type {rtype:?} is not one dig knows: use AAAA, A, TXT…"
                ))
            })?;
        let view = View::Org(org.clone());
        let answer = self.table.borrow().lookup(&view, &name, record_type);
        let fqdn = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
        let rcode = |s: &str| s.to_string();
        Ok(match answer.status {
            Status::NoError | Status::NxDomain => DnsAnswer {
                name: fqdn,
                rtype: record_type.to_string(),
                rcode: rcode(if answer.status == Status::NoError {
                    "NOERROR"
                } else {
                    "NXDOMAIN"
                }),
                authoritative: true,
                answers: answer
                    .records
                    .iter()
                    .map(|r| match &r.data {
                        RecordData::Aaaa(ip) => ip.to_string(),
                        RecordData::Txt(t) => format!("{t:?}"),
                    })
                    .collect(),
                org,
            },
            Status::NotOurs => {
                let (rcode, answers) = resolve_elsewhere(&name, record_type).await?;
                DnsAnswer {
                    name: fqdn,
                    rtype: record_type.to_string(),
                    rcode: rcode.to_string(),
                    authoritative: false,
                    answers,
                    org,
                }
            }
        })
    }
}

/// A name a resolver may be asked: non-empty labels of at most 63 bytes, 253 in all.
fn check_name(name: &str) -> DomainResult<String> {
    let n = name.trim().trim_end_matches('.');
    let bad = |why: &str| {
        Err(DomainError::invalid_config(format!(
            "{name:?} is not a DNS name: {why}"
        )))
    };
    if n.is_empty() {
        return bad("it is empty");
    }
    if n.len() > 253 {
        return bad("it is longer than 253 characters");
    }
    if n.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return bad("every label needs 1 to 63 characters");
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(n.to_string())
}

/// A and AAAA of names outside the private network, through the host's resolver (as the
/// server's forwarding would); other types are not looked up here.
async fn resolve_elsewhere(
    name: &str,
    rtype: RecordType,
) -> DomainResult<(&'static str, Vec<String>)> {
    let want_v4 = match rtype {
        RecordType::A => true,
        RecordType::AAAA => false,
        other => {
            return Err(DomainError::invalid_config(format!(
                "`aloft dig` answers {other} only for .internal and .flycast names; for {name} ask A or AAAA"
            )))
        }
    };
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => {
            let mut answers: Vec<String> = addrs
                .map(|a| a.ip())
                .filter(|ip| ip.is_ipv4() == want_v4)
                .map(|ip| ip.to_string())
                .collect();
            answers.sort();
            answers.dedup();
            Ok(("NOERROR", answers))
        }
        Err(_) => Ok(("NXDOMAIN", Vec::new())),
    }
}

/// The table from the machines with a private IPv6 address (container machines), the apps'
/// organizations, their Flycast addresses, and each machine's IPv4 address. Pure.
pub fn build_table(
    all: &AppMachines,
    orgs: &BTreeMap<String, String>,
    ips: &[IpRow],
    ipv4: impl Fn(&str) -> Option<Ipv4Addr>,
) -> DnsTable {
    let org_of = |app: &str| orgs.get(app).cloned().unwrap_or_else(|| "personal".into());
    let machines = all
        .iter()
        .flat_map(|(app, ms)| ms.values().map(move |m| (app, m)))
        .filter_map(|(app, m)| {
            let ip6: Ipv6Addr = m.private_ip.parse().ok()?;
            Some(DnsMachine {
                id: m.id.clone(),
                app: app.clone(),
                org: org_of(app),
                group: m.process_group().to_string(),
                region: m.region.clone(),
                started: m.state == MachineState::Started,
                ip6,
                ip4: ipv4(&m.id),
            })
        })
        .collect();
    let services = ips
        .iter()
        .filter(|r| r.ip.kind == IpKind::PrivateV6)
        .filter_map(|r| {
            Some(DnsService {
                app: r.app.clone(),
                org: org_of(&r.app),
                ip6: r.ip.address.parse().ok()?,
            })
        })
        .collect();
    DnsTable::new(machines, services)
}

async fn follow(ctl: Arc<Controller>, dns: Arc<Dns>) {
    let mut changes = ctl.subscribe();
    let mut ip_changes = ctl.subscribe_ips();
    let mut all = match machine_map::load_all(&ctl).await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!("loading machines for the DNS table: {e}");
            AppMachines::new()
        }
    };
    loop {
        rebuild(&ctl, &dns, &all).await;
        tokio::select! {
            c = changes.recv() => {
                if !machine_map::gather(&ctl, &mut changes, &mut all, c, REBUILD_DEBOUNCE, "DNS table").await {
                    return;
                }
            }
            r = ip_changes.changed() => if r.is_err() { return },
        }
    }
}

async fn rebuild(ctl: &Arc<Controller>, dns: &Dns, all: &AppMachines) {
    let (orgs, ips) = match (ctl.app_orgs().await, ctl.all_ips().await) {
        (Ok(o), Ok(i)) => (o, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("reading apps and addresses for the DNS table: {e}");
            return;
        }
    };
    let host = dns.gateways.get().cloned().unwrap_or_default();
    let table = build_table(all, &orgs, &ips, |id| ctl.machine_ipv4(id)).with_host_addresses(host);
    dns.table.send_replace(Arc::new(table));
}
