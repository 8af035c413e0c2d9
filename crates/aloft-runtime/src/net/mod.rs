//! Machine networking: a network namespace per container machine, with a private IPv6 address
//! in its organization's network and an IPv4 address on a bridge of the host that the proxy
//! routes to, isolation between organizations, and NAT for outbound traffic.
//!
//! Each machine listens on its own `internal_port` at its own addresses (several machines of
//! one app on one host all listen on 8080), sees only its own loopback, and reaches the
//! outside through the host.
//!
//! # Addresses
//!
//! The address plan lives in `plan` alone. IPv4: a subnet (`10.209.0.0/16` by default); the
//! bridge holds its first address, the machines' gateway; a machine gets the lowest free one.
//! IPv6 (the private network, like Fly's 6PN): the host has a /64 of a ULA — configured
//! ([`NetConfig::subnet6`]) or subnet 1 of a random `fdaa:XXXX:XXXX::/48` made once and kept in
//! the state directory — and the bridge holds `<host /64>::1`, the IPv6 gateway (where the
//! machines' DNS server listens). An organization (an app's `org_slug`) gets a 16-bit number on
//! first use, recorded; its addresses on this host are `<host /64>:<org>::/80`. A machine's
//! IPv6 address is `<host /64>:<org>:0:<n>` (`n` the offset of its IPv4 address, so both are
//! given together), a service (Flycast) address `<host /64>:<org>:f:<n>`
//! ([`Network::reserve_service_address`], held by the bridge so the proxy can listen there).
//! A machine keeps both addresses from its first attach until it is detached (destroyed).
//!
//! # What it does to the host
//!
//! [`Network::setup`] (idempotent; an agent calls it at every start):
//! - a bridge (`aloft0` by default) with IPv6 enabled and router advertisements ignored,
//!   holding both gateway addresses (IPv6 without duplicate address detection), brought up;
//!   the recorded service addresses are put back on it;
//! - `net.ipv4.ip_forward = 1` and `net.ipv6.conf.all.forwarding = 1` — before turning IPv6
//!   forwarding on, each interface whose `accept_ra` is 1 is set to 2, so the host keeps the
//!   addresses and routes it learns from router advertisements;
//! - two nftables tables named `aloft-<bridge>`, one `inet` and one `bridge`, written whole in
//!   one `nft -f -` transaction (`rules` has the ruleset and why): IPv6 between machines only
//!   within one organization's /80 (any port), and nothing over link-local addresses; a
//!   machine's port takes IPv6 only from its organization's /80 (no borrowed source
//!   addresses); no IPv4 between machines; a service address
//!   only from its organization's machines (and the host); nothing forwarded from another
//!   interface opens a connection to a machine; the machines' IPv4 and IPv6 traffic leaving
//!   through another interface is masqueraded; ARP and neighbour discovery pass. A new
//!   organization adds one element to a set in each table. The host itself (the proxy)
//!   reaches every machine, over IPv4 as before;
//! - iptables rules an older agent marked `aloft:<bridge>` are removed;
//! - a host whose own firewall drops forwarded packets (an iptables or ip6tables `FORWARD`
//!   policy of DROP, as Docker sets) would drop the machines' outbound traffic, and nftables
//!   cannot overrule another table's drop: there two rules marked `aloft:<bridge>` go first in
//!   its `FORWARD` chain (from the bridge; answers to it). The nftables tables still decide
//!   what passes; teardown removes the rules.
//!
//! [`Network::attach`] per machine: the namespace `aloft-<machine_id>` at
//! `/run/netns/aloft-<machine_id>` (made as `ip netns add` makes it; the path the container
//! runtime gives runc), a veth pair whose host end (`av` + 12 hex digits of a hash of bridge and
//! machine id) is a port of the bridge, in an interface group naming bridge and organization
//! (which the rules read), and whose other end is `eth0` in the namespace with both
//! addresses, `lo` up, and default routes via both gateways. [`Network::detach`] removes
//! namespace and veth and frees the addresses.
//!
//! # What it leaves behind
//!
//! Addresses are recorded in the state directory, one file per machine (`records`), written
//! before anything is created on the host and removed after everything is gone: an agent killed
//! at any moment finds every machine it wired. Next to them, `host.state.json` keeps the /48,
//! the organization numbers and the service addresses. A restarted agent calls `setup` again
//! and `attach` for each machine it re-adopts (which finds the namespace and veth in place and
//! keeps the addresses; a machine recorded before IPv6 gets its IPv6 address then), then
//! [`Network::reap_unknown`] with the machines it kept. Bridge, tables and forwarding stay when
//! the agent stops (machines outlive the agent); [`Network::teardown`] removes bridge and
//! tables (tests; uninstalling) and leaves forwarding on, since other software may rely on it.
//!
//! One agent owns one bridge: two agents on one host need different bridge names and subnets
//! that do not overlap (their veth and table names differ, being derived from the bridge;
//! namespace names carry only the machine id, which is random). Within a process, calls are
//! serialised by one mutex.
//!
//! # Limits
//!
//! Machines hold `CAP_NET_RAW` (as in Docker), so one can send packets with a forged source
//! address. The rules stop it from using another organization's addresses, but not an unused
//! address of its own organization's /80, a link-local one, or an unused IPv4 address of the
//! subnet towards the host: a service on the host must not take a source address inside the
//! machines' networks that belongs to no machine for the host itself (the `.internal` DNS
//! server must give such a source no view, not the host's). Binding each port to its exact
//! addresses would take an nftables element per machine, written in the hot path.
//!
//! # Netlink, nftables
//!
//! Interfaces, addresses, routes and namespaces are changed over netlink in process (`netlink`,
//! on rtnetlink): no `ip` process runs. On the 2-core development machine (shared, debug
//! build; `bench/netns.sh`) an attach of a new machine takes ~8–16 ms (namespace, veth pair,
//! addresses, routes; 25 ms when it ran `ip`), attaching an attached machine ~0.5 ms (4.4 ms),
//! a detach ~33 ms, nearly all of it the kernel's deletion of the veth pair (the same with
//! `ip`). So attach a machine once, when it is created or first started, and detach it when it
//! is destroyed: the attachment and its addresses stay across stop and start, and a start pays
//! nothing. The nftables rules change only at setup and when an organization is first seen,
//! through the `nft` command (`host`), whose messages are passed on. Crates were weighed: the
//! `nftables` crate runs the same command (with a JSON ruleset), and `rustables` (netlink) is
//! GPL-3.0; the text ruleset stays, one readable `nft -f` script that `rules` tests.

mod error;
mod host;
mod netlink;
mod plan;
mod records;
mod rules;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub use error::NetError;
pub use ipnet::{Ipv4Net, Ipv6Net};
pub use plan::NetConfig;

use plan::{check_machine_id, check_org, netns_name, AddressPlan, PREFIX6};
use records::{HostState, Record, Records, Service};

use netlink::NETNS_DIR;

/// A machine's place on the network: what the container runtime and the proxy need.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attachment {
    /// The network namespace file, given to the OCI runtime as the container's netns path.
    pub netns_path: PathBuf,
    /// The machine's IPv4 address; the proxy routes to `ip:internal_port`.
    pub ip: Ipv4Addr,
    /// The bridge's IPv4 address: the machine's default route, and how it reaches the host.
    pub gateway: Ipv4Addr,
    /// The IPv4 subnet's prefix length.
    pub prefix: u8,
    /// The machine's private IPv6 address (`FLY_PRIVATE_IP`), in its organization's /80.
    pub ip6: Ipv6Addr,
    /// The bridge's IPv6 address (`<host /64>::1`): the machine's IPv6 default route.
    pub gateway6: Ipv6Addr,
    /// The host IPv6 network's prefix length (64).
    pub prefix6: u8,
    /// The organization's addresses on this host (`<host /64>:<org>::/80`): the machines and
    /// service addresses this machine may reach.
    pub org_prefix: Ipv6Net,
    /// The host end of the machine's veth pair (a port of the bridge).
    pub host_veth: String,
}

/// What the lock guards: the machines' records and the host's.
struct State {
    records: Records,
    host: HostState,
}

/// The host's machine network: one bridge, its subnets and rules, and the machines attached.
pub struct Network {
    plan: AddressPlan,
    state_dir: PathBuf,
    state: Mutex<State>,
    /// Namespaces [`Network::reserve`] made and [`Network::connect`] has not wired yet: their
    /// veth (if one is still listed) belonged to a namespace that is gone.
    fresh: Mutex<BTreeSet<String>>,
}

impl Network {
    /// Creates the bridge with the gateway addresses (IPv4 and IPv6) and brings it up, enables
    /// IPv4 and IPv6 forwarding, writes the bridge's nftables tables (removing iptables rules an
    /// older agent left), and puts back the recorded service addresses; reads the allocations
    /// recorded in `state_dir` (and makes the IPv6 /48 there on first use when `config` names
    /// no IPv6 subnet). Idempotent.
    pub fn setup(config: NetConfig, state_dir: &Path) -> Result<Network, NetError> {
        let mut host_state = HostState::load(state_dir)?;
        let prefix48 = host_state
            .prefix48
            .and_then(|a| Ipv6Net::new(a, 48).ok())
            .unwrap_or_else(random_prefix48);
        let plan = AddressPlan::new(&config, AddressPlan::host64_of(&config, prefix48))?;
        host::require_tools()?;
        let records = Records::load(state_dir)?;
        if config.subnet6.is_none() && host_state.prefix48.is_none() {
            host_state.prefix48 = Some(prefix48.network());
            host_state.save(state_dir)?;
        }
        let network = Network {
            plan,
            state_dir: state_dir.to_path_buf(),
            state: Mutex::new(State {
                records,
                host: host_state,
            }),
            fresh: Mutex::new(BTreeSet::new()),
        };
        let target = network.bridge_target();
        let bridge = network.plan.bridge();
        network.ensure_bridge()?;
        host::sysctl(bridge, "/proc/sys/net/ipv4/ip_forward", "1")?;
        host::enable_ipv6_forwarding(bridge)?;
        rules::remove_legacy(&network.plan, &target)?;
        rules::open_host_firewall(&network.plan, &target)?;
        let state = network.lock();
        let orgs: Vec<u16> = state.host.orgs.values().copied().collect();
        rules::ensure(&network.plan, &orgs, &target)?;
        let services: Vec<(IpAddr, u8)> = state
            .host
            .services
            .values()
            .map(|s| (s.ip.into(), 128))
            .collect();
        drop(state);
        if !services.is_empty() {
            netlink::add_addresses(&target, bridge, &services)?;
        }
        Ok(network)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        self.plan.bridge()
    }

    /// The machines' IPv4 subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.plan.subnet()
    }

    /// The bridge's IPv4 address, the machines' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.plan.gateway()
    }

    /// The host's private IPv6 /64.
    pub fn subnet6(&self) -> Ipv6Net {
        self.plan.host64()
    }

    /// The bridge's IPv6 address, the machines' IPv6 gateway (where their DNS server listens).
    pub fn gateway6(&self) -> Ipv6Addr {
        self.plan.gateway6()
    }

    /// The organization's addresses on this host (its /80), numbering it if it is new.
    pub fn org_prefix(&self, org: &str) -> Result<Ipv6Net, NetError> {
        check_org(org)?;
        let mut state = self.lock();
        let n = self.org_number(&mut state, org)?;
        Ok(self.plan.org_prefix(n))
    }

    /// Gives the machine of organization `org` its namespace, veth pair and addresses (the
    /// lowest free IPv4 address and an IPv6 address in the organization's /80, or those it
    /// already holds). Idempotent: attaching an attached machine, also after an agent restart,
    /// finds the namespace and veth in place and keeps the addresses; what is missing is made
    /// again.
    pub fn attach(&self, machine_id: &str, org: &str) -> Result<Attachment, NetError> {
        self.reserve(machine_id, org)?;
        self.connect(machine_id, org)
    }

    /// The first half of [`Network::attach`]: the machine's addresses (recorded) and its network
    /// namespace (created if missing), nothing more — enough for a container to be started in
    /// the namespace while [`Network::connect`] wires it, so the two overlap. A machine recorded
    /// by an older agent (IPv4 only) gets its IPv6 address here.
    pub fn reserve(&self, machine_id: &str, org: &str) -> Result<Attachment, NetError> {
        check_machine_id(machine_id)?;
        check_org(org)?;
        let mut state = self.lock();
        let record = self.address_for(&mut state, machine_id, org)?.0;
        if !netns_path(machine_id).exists() {
            netlink::create_netns(&self.machine_target(machine_id), &netns_path(machine_id))?;
            self.fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(machine_id.to_string());
        }
        Ok(self.attachment_at(machine_id, &record))
    }

    /// The organization's number: the recorded one, else the lowest free one, recorded and
    /// let through the nftables rules now.
    fn org_number(&self, state: &mut State, org: &str) -> Result<u16, NetError> {
        if let Some(n) = state.host.orgs.get(org) {
            return Ok(*n);
        }
        let taken: BTreeSet<u16> = state.host.orgs.values().copied().collect();
        let n = (1..=u16::MAX)
            .find(|n| !taken.contains(n))
            .ok_or_else(|| NetError::OrgsFull {
                slug: org.to_string(),
                bridge: self.plan.bridge().to_string(),
            })?;
        state.host.orgs.insert(org.to_string(), n);
        let added = state
            .host
            .save(&self.state_dir)
            .and_then(|()| rules::add_org(&self.plan, n, &self.bridge_target()));
        if let Err(e) = added {
            state.host.orgs.remove(org);
            let _ = state.host.save(&self.state_dir);
            return Err(e);
        }
        Ok(n)
    }

    /// The machine's addresses: those on record when they fit the plan and the organization,
    /// else new ones, recorded now. `true` when the namespace may hold other addresses (it was
    /// given another IPv4 address, or an IPv6 address of another organization).
    fn address_for(
        &self,
        state: &mut State,
        machine_id: &str,
        org: &str,
    ) -> Result<(Record, bool), NetError> {
        let org_n = self.org_number(state, org)?;
        let current = state.records.get(machine_id).flatten().cloned();
        let ip = match &current {
            Some(r) if self.plan.is_machine_address(r.ipv4) => r.ipv4,
            _ => {
                let taken: BTreeSet<Ipv4Addr> = state
                    .records
                    .machines()
                    .filter(|(id, _)| id.as_str() != machine_id)
                    .filter_map(|(_, r)| r.as_ref().map(|r| r.ipv4))
                    .collect();
                self.plan
                    .lowest_free(&taken)
                    .ok_or_else(|| NetError::SubnetFull {
                        machine: machine_id.to_string(),
                        subnet: self.plan.subnet().to_string(),
                        bridge: self.plan.bridge().to_string(),
                        capacity: self.plan.capacity(),
                    })?
            }
        };
        let record = Record {
            ipv4: ip,
            ipv6: Some(self.plan.machine_ip6(org_n, ip)),
            org: Some(org.to_string()),
        };
        let readdressed = match &current {
            None => true,
            Some(old) => {
                old.ipv4 != record.ipv4 || old.ipv6.is_some_and(|v6| Some(v6) != record.ipv6)
            }
        };
        if current.as_ref() != Some(&record) {
            state.records.put(machine_id, record.clone())?;
        }
        Ok((record, readdressed))
    }

    /// The second half of [`Network::attach`]: the veth pair on the bridge and the addresses
    /// and routes inside the namespace (which is created first if missing). Idempotent.
    pub fn connect(&self, machine_id: &str, org: &str) -> Result<Attachment, NetError> {
        check_machine_id(machine_id)?;
        check_org(org)?;
        let mut state = self.lock();
        let target = self.machine_target(machine_id);
        let (record, readdressed) = self.address_for(&mut state, machine_id, org)?;
        let attachment = self.attachment_at(machine_id, &record);
        let group = self.plan.port_group(self.org_number(&mut state, org)?);

        let path = netns_path(machine_id);
        let reserved_fresh = self
            .fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(machine_id);
        let fresh_ns = reserved_fresh || !path.exists();
        if !path.exists() {
            netlink::create_netns(&target, &path)?;
        }
        let veth_exists = link_exists(&attachment.host_veth);
        let a = &attachment;
        netlink::wire(
            &target,
            &netlink::HostEnd {
                bridge: self.plan.bridge(),
                veth: &a.host_veth,
                group,
                // Its peer was in a namespace that is gone: make the pair anew.
                delete_first: veth_exists && fresh_ns,
                create: fresh_ns || !veth_exists,
            },
            &netlink::Guest {
                netns: &path,
                ip: a.ip,
                prefix: a.prefix,
                gateway: a.gateway,
                ip6: a.ip6,
                prefix6: a.prefix6,
                gateway6: a.gateway6,
                // A namespace found in place whose record was lost or had other addresses.
                flush: readdressed && veth_exists && !fresh_ns,
            },
        )?;
        Ok(attachment)
    }

    /// The machine's attachment on record, if it has one that fits the plan (no look at the
    /// host). A machine recorded by an older agent, without an IPv6 address, has none until
    /// its next [`Network::reserve`].
    pub fn attachment(&self, machine_id: &str) -> Option<Attachment> {
        check_machine_id(machine_id).ok()?;
        let state = self.lock();
        let record = state.records.get(machine_id)??;
        let ip6 = record.ipv6?;
        (self.plan.is_machine_address(record.ipv4) && self.plan.host64().contains(&ip6))
            .then(|| self.attachment_at(machine_id, record))
    }

    /// The machine's IPv4 address on record (no look at the host) — also for a machine an
    /// older agent recorded without IPv6, which has no [`Attachment`] until its next
    /// [`Network::reserve`] but is reached (by the proxy) at this address meanwhile.
    pub fn ip(&self, machine_id: &str) -> Option<Ipv4Addr> {
        check_machine_id(machine_id).ok()?;
        let state = self.lock();
        let ip = state.records.get(machine_id)??.ipv4;
        self.plan.is_machine_address(ip).then_some(ip)
    }

    /// Removes the machine's veth pair and namespace and frees its addresses. Idempotent.
    pub fn detach(&self, machine_id: &str) -> Result<(), NetError> {
        check_machine_id(machine_id)?;
        let mut state = self.lock();
        self.detach_locked(&mut state.records, machine_id)
    }

    /// Machines with an attachment on record, in id order.
    pub fn attached(&self) -> Vec<String> {
        let state = self.lock();
        state.records.machines().map(|(id, _)| id.clone()).collect()
    }

    /// Detaches every recorded machine not in `keep` (what a dead agent left and the new one
    /// does not re-adopt); returns those it detached.
    pub fn reap_unknown(&self, keep: &[String]) -> Result<Vec<String>, NetError> {
        let mut state = self.lock();
        let unknown: Vec<String> = state
            .records
            .machines()
            .map(|(id, _)| id.clone())
            .filter(|id| !keep.contains(id))
            .collect();
        for id in &unknown {
            self.detach_locked(&mut state.records, id)?;
        }
        Ok(unknown)
    }

    /// A service (Flycast) address of organization `org` for `key` (an app, say): the one
    /// recorded for `key`, else the organization's lowest free one
    /// (`<host /64>:<org>:f:<n>`), recorded. It is added to the bridge (without duplicate
    /// address detection), so a proxy on the host can listen on it; only machines of `org`
    /// reach it. Idempotent; asking again with another organization moves the key to a new
    /// address of that organization.
    pub fn reserve_service_address(&self, org: &str, key: &str) -> Result<Ipv6Addr, NetError> {
        check_org(org)?;
        check_service_key(key)?;
        let mut state = self.lock();
        let org_n = self.org_number(&mut state, org)?;
        let prefix = self.plan.org_prefix(org_n);
        let ip = match state.host.services.get(key) {
            Some(s) if s.org == org && prefix.contains(&s.ip) => s.ip,
            _ => {
                let taken: BTreeSet<Ipv6Addr> = state
                    .host
                    .services
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .map(|(_, s)| s.ip)
                    .collect();
                let ip = (1..=u32::MAX)
                    .map(|n| self.plan.service_ip6(org_n, n))
                    .find(|ip| !taken.contains(ip))
                    .expect("fewer than 2^32 service addresses");
                let old = state.host.services.insert(
                    key.to_string(),
                    Service {
                        org: org.to_string(),
                        ip,
                    },
                );
                if let Err(e) = state.host.save(&self.state_dir) {
                    match old {
                        Some(old) => state.host.services.insert(key.to_string(), old),
                        None => state.host.services.remove(key),
                    };
                    return Err(e);
                }
                if let Some(old) = old {
                    self.remove_bridge_address(old.ip)?;
                }
                ip
            }
        };
        netlink::add_addresses(
            &self.bridge_target(),
            self.plan.bridge(),
            &[(ip.into(), 128)],
        )?;
        Ok(ip)
    }

    /// Frees the service address of `key` (removed from the bridge). Idempotent.
    pub fn release_service_address(&self, key: &str) -> Result<(), NetError> {
        let mut state = self.lock();
        let Some(service) = state.host.services.remove(key) else {
            return Ok(());
        };
        if let Err(e) = state.host.save(&self.state_dir) {
            state.host.services.insert(key.to_string(), service);
            return Err(e);
        }
        self.remove_bridge_address(service.ip)
    }

    /// Every service address on record: `(key, organization, address)`, in key order.
    pub fn service_addresses(&self) -> Vec<(String, String, Ipv6Addr)> {
        let state = self.lock();
        state
            .host
            .services
            .iter()
            .map(|(key, s)| (key.clone(), s.org.clone(), s.ip))
            .collect()
    }

    /// Detaches every machine and removes the bridge and its nftables tables (and iptables
    /// rules an older agent left). For tests and uninstalling: an agent that stops leaves the
    /// network in place. The host's records (IPv6 /48, organizations, service addresses) stay.
    pub fn teardown(&self) -> Result<(), NetError> {
        let mut state = self.lock();
        let all: Vec<String> = state.records.machines().map(|(id, _)| id.clone()).collect();
        for id in &all {
            self.detach_locked(&mut state.records, id)?;
        }
        let target = self.bridge_target();
        rules::remove_all(&self.plan, &target)?;
        rules::remove_legacy(&self.plan, &target)?;
        netlink::delete_link(&target, self.plan.bridge())
    }

    fn detach_locked(&self, records: &mut Records, machine_id: &str) -> Result<(), NetError> {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(machine_id);
        let veth = self.plan.host_veth(machine_id);
        let target = self.machine_target(machine_id);
        if link_exists(&veth) {
            // Deleting one end deletes the pair, even while a process holds the namespace.
            netlink::delete_link(&target, &veth)?;
        }
        netlink::delete_netns(&target, &netns_path(machine_id))?;
        records.remove(machine_id)
    }

    /// Makes the bridge if missing (refusing an interface of its name that is not a bridge),
    /// gives it the gateway addresses and brings it up.
    fn ensure_bridge(&self) -> Result<(), NetError> {
        let bridge = self.plan.bridge();
        let target = self.bridge_target();
        netlink::ensure_bridge(&target, bridge)?;
        // IPv6 on (a host may turn it off for new interfaces), router advertisements ignored
        // (the bridge is the machines' router, not a client of theirs).
        let conf = format!("/proc/sys/net/ipv6/conf/{bridge}");
        host::sysctl(bridge, &format!("{conf}/disable_ipv6"), "0")?;
        host::sysctl(bridge, &format!("{conf}/accept_ra"), "0")?;
        netlink::add_addresses(
            &target,
            bridge,
            &[
                (self.plan.gateway().into(), self.plan.prefix()),
                (self.plan.gateway6().into(), PREFIX6),
            ],
        )
    }

    /// Removes a service address from the bridge if it holds it.
    fn remove_bridge_address(&self, ip: Ipv6Addr) -> Result<(), NetError> {
        netlink::del_address(&self.bridge_target(), self.plan.bridge(), ip.into())
    }

    fn attachment_at(&self, machine_id: &str, record: &Record) -> Attachment {
        let ip6 = record
            .ipv6
            .unwrap_or_else(|| self.plan.machine_ip6(0, record.ipv4));
        Attachment {
            netns_path: netns_path(machine_id),
            ip: record.ipv4,
            gateway: self.plan.gateway(),
            prefix: self.plan.prefix(),
            ip6,
            gateway6: self.plan.gateway6(),
            prefix6: PREFIX6,
            org_prefix: Ipv6Net::new(ip6, plan::ORG_PREFIX6).expect("a /80").trunc(),
            host_veth: self.plan.host_veth(machine_id),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the records is one atomic file write: a panic elsewhere leaves them
        // consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bridge_target(&self) -> String {
        format!("bridge {}", self.plan.bridge())
    }

    fn machine_target(&self, machine_id: &str) -> String {
        format!("machine {machine_id} on bridge {}", self.plan.bridge())
    }
}

/// Whether `state_dir` records any machine (an agent that finds none need not set the network
/// up to clean after a previous one).
pub fn machines_recorded(state_dir: &Path) -> bool {
    Records::any_in(state_dir)
}

/// A random `fdaa:XXXX:XXXX::/48`.
fn random_prefix48() -> Ipv6Net {
    let [a, b, c, d] = rand::random::<[u8; 4]>();
    let base = (0xfdaau128 << 112) | (u128::from(u32::from_be_bytes([a, b, c, d])) << 80);
    Ipv6Net::new(Ipv6Addr::from(base), 48).expect("a /48")
}

/// Service keys are recorded and shown: 1–128 printable characters.
fn check_service_key(key: &str) -> Result<(), NetError> {
    if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
        return Err(NetError::Config(format!(
            "service address key {key:?} must be 1–128 printable characters"
        )));
    }
    Ok(())
}

/// Where `ip netns` keeps the machine's namespace file.
fn netns_path(machine_id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(netns_name(machine_id))
}

/// Whether the agent's network namespace has an interface of this name (sysfs shows those of
/// the namespace it was mounted in: the agent's own).
fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}
