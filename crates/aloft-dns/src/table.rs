//! The table the server answers from: the machines and Flycast addresses the agent knows,
//! indexed once per change so that every query is a few hash lookups.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A machine as the private network's DNS sees it.
///
/// Stopped machines belong in the table too: their addresses still identify the asker (a
/// query from a stopped machine's address cannot happen, but an address is never reused while
/// the machine exists) and `<id>.vm.<app>.internal` answers for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMachine {
    pub id: String,
    pub app: String,
    /// The organization (an app's `org_slug`): the view boundary.
    pub org: String,
    /// The process group (`fly_process_group`), e.g. `app`, `web`, `worker`.
    pub group: String,
    pub region: String,
    /// Started machines are answered for `<app>.internal` and the other group names.
    pub started: bool,
    pub ip6: Ipv6Addr,
    pub ip4: Option<Ipv4Addr>,
}

/// A Flycast (private service) address of an app: `<app>.flycast`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsService {
    pub app: String,
    pub org: String,
    pub ip6: Ipv6Addr,
}

/// Everything the server answers `.internal` and `.flycast` names from. Built by the agent on
/// every change of its machine table and published through a `tokio::sync::watch` channel;
/// each query reads the newest one.
#[derive(Debug, Default)]
pub struct DnsTable {
    /// Sorted by (app, id): every answer lists machines in this stable order.
    machines: Vec<DnsMachine>,
    /// Lower-case app name → the app's entries.
    apps: HashMap<String, AppEntry>,
    /// Both addresses of every machine → its index in `machines`.
    by_addr: HashMap<IpAddr, usize>,
    /// Addresses of the host besides loopback (the gateways): queries from them see every org.
    host: Vec<IpAddr>,
}

/// One app's part of the table.
#[derive(Debug)]
pub(crate) struct AppEntry {
    /// The app's name as given (answers in `_apps.internal` use it).
    pub name: String,
    pub org: String,
    /// Indexes into the table's machines, in (id) order.
    pub machines: Vec<usize>,
    /// Flycast addresses, sorted.
    pub services: Vec<Ipv6Addr>,
}

impl DnsTable {
    /// Indexes `machines` and `services`. The order of the input does not matter: answers list
    /// machines by id.
    pub fn new(mut machines: Vec<DnsMachine>, services: Vec<DnsService>) -> Self {
        machines.sort_by(|a, b| (&a.app, &a.id).cmp(&(&b.app, &b.id)));
        let mut apps: HashMap<String, AppEntry> = HashMap::new();
        let mut by_addr = HashMap::new();
        for (index, machine) in machines.iter().enumerate() {
            by_addr.insert(IpAddr::V6(machine.ip6), index);
            if let Some(ip4) = machine.ip4 {
                by_addr.insert(IpAddr::V4(ip4), index);
            }
            entry(&mut apps, &machine.app, &machine.org)
                .machines
                .push(index);
        }
        for service in services {
            entry(&mut apps, &service.app, &service.org)
                .services
                .push(service.ip6);
        }
        for app in apps.values_mut() {
            app.services.sort();
            app.services.dedup();
        }
        DnsTable {
            machines,
            apps,
            by_addr,
            host: Vec::new(),
        }
    }

    /// Names the host's own addresses (e.g. the bridge's gateways, where the server listens):
    /// queries from them see every organization, like those from loopback. Sources that are
    /// neither the host's nor a machine's see no app.
    pub fn with_host_addresses(mut self, host: Vec<IpAddr>) -> Self {
        self.host = host.into_iter().map(|ip| ip.to_canonical()).collect();
        self
    }

    pub(crate) fn is_host(&self, addr: IpAddr) -> bool {
        self.host.contains(&addr.to_canonical())
    }

    /// Every machine, in (app, id) order.
    pub fn machines(&self) -> &[DnsMachine] {
        &self.machines
    }

    /// The machine that owns `addr` (IPv6 or IPv4; an IPv4-mapped IPv6 address counts as IPv4).
    pub fn machine_at(&self, addr: IpAddr) -> Option<&DnsMachine> {
        self.by_addr
            .get(&addr.to_canonical())
            .map(|&index| &self.machines[index])
    }

    pub(crate) fn app(&self, lowercase_name: &str) -> Option<&AppEntry> {
        self.apps.get(lowercase_name)
    }

    pub(crate) fn apps(&self) -> impl Iterator<Item = &AppEntry> {
        self.apps.values()
    }

    pub(crate) fn machine(&self, index: usize) -> &DnsMachine {
        &self.machines[index]
    }

    /// The regions of an app's started machines, sorted, each once.
    pub(crate) fn started_regions(&self, app: &AppEntry) -> BTreeSet<&str> {
        app.machines
            .iter()
            .map(|&i| &self.machines[i])
            .filter(|m| m.started)
            .map(|m| m.region.as_str())
            .collect()
    }
}

fn entry<'a>(apps: &'a mut HashMap<String, AppEntry>, app: &str, org: &str) -> &'a mut AppEntry {
    apps.entry(app.to_ascii_lowercase())
        .or_insert_with(|| AppEntry {
            name: app.to_string(),
            org: org.to_string(),
            machines: Vec::new(),
            services: Vec::new(),
        })
}
