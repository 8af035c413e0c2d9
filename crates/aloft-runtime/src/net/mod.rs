//! Machine networking: a network namespace per container machine, with a private address on a
//! bridge of the host that the proxy routes to, and NAT for its outbound traffic.
//!
//! Each machine listens on its own `internal_port` at its own address (several machines of one
//! app on one host all listen on 8080), sees only its own loopback, and reaches the outside
//! through the host.
//!
//! # What it does to the host
//!
//! [`Network::setup`] (idempotent; an agent calls it at every start):
//! - a bridge (`aloft0` by default) holding the subnet's first address, the machines' gateway
//!   (`10.209.0.1/16` by default), brought up;
//! - `net.ipv4.ip_forward = 1`;
//! - three iptables rules, each marked `-m comment --comment aloft:<bridge>`: MASQUERADE in
//!   `nat POSTROUTING` for the subnet leaving through any other interface, and at the top of
//!   `filter FORWARD` an ACCEPT of what comes from the bridge and of the replies going back to
//!   it (so a host whose FORWARD policy is DROP still lets machines out).
//!
//! Not done here yet (issue 12): filtering between machines on the bridge, and between machines
//! and host services listening on the gateway address or on all addresses: a machine reaches
//! those. It does not reach the host's 127.0.0.1 (the kernel never routes loopback addresses
//! from another interface; inside the namespace, 127.0.0.1 is the machine's own `lo`).
//!
//! [`Network::attach`] per machine: the namespace `aloft-<machine_id>` (`ip netns add`, so
//! `/run/netns/aloft-<machine_id>`, the path the container runtime gives runc), a veth pair whose
//! host end (`av` + 12 hex digits of a hash of bridge and machine id) is a port of the bridge and
//! whose other end is `eth0` in the namespace with the machine's address, `lo` up, and a default
//! route via the gateway. [`Network::detach`] removes namespace and veth and frees the address.
//!
//! # What it leaves behind
//!
//! Addresses are recorded in the state directory, one file per machine (`records`), written
//! before anything is created on the host and removed after everything is gone: an agent killed
//! at any moment finds every machine it wired. A restarted agent calls `setup` again and
//! `attach` for each machine it re-adopts (which finds the namespace and veth in place and keeps
//! the address), then [`Network::reap_unknown`] with the machines it kept. Bridge, rules and
//! `ip_forward` stay when the agent stops (machines outlive the agent); [`Network::teardown`]
//! removes bridge and rules (tests; uninstalling) and leaves `ip_forward` on, since other
//! software may rely on it.
//!
//! One agent owns one bridge: two agents on one host need different bridge names and subnets
//! that do not overlap (their veth names differ, being derived from the bridge; namespace names
//! carry only the machine id, which is random). Within a process, calls are serialised by one
//! mutex, commands included.
//!
//! # Why `ip` and `iptables`
//!
//! Every change goes through iproute2's `ip` and `iptables` (`host`), the tools an operator uses
//! to look at the result, with their error messages passed on. The price is process starts: an
//! attach runs three (`netns add`, then one `ip -batch` for each side of the veth), ~23 ms in all
//! on the 2-core development machine; attaching an attached machine runs two (~6 ms); a detach
//! one (~30 ms: deleting a veth waits for the kernel). So attach a machine once, when it is
//! created or first started, and detach it when it is destroyed: the attachment and its address
//! stay across stop and start (as issue 12 wants of the private address), and a start pays
//! nothing. Netlink in process (`rtnetlink`) would save the process starts at the cost of an
//! async netlink stack and namespace handling of our own; issue 12 asks for that move, and it
//! stays inside `host` and `rules`.
//!
//! # How issue 12 (the private network) grows from here
//!
//! The address plan lives in `plan` alone: the per-host IPv6 ULA /64 joins the IPv4 subnet
//! there, and [`Attachment`] (non-exhaustive) gains the IPv6 address, kept in the same machine
//! record (a new field; old records read as IPv4-only). Isolation between organizations and
//! Flycast become more rules in `rules`, still found by their comment. Moving the hot path to
//! netlink and nftables, as that issue asks, replaces `host` and `rules` behind the same
//! `Network` API. `.internal` DNS needs nothing here beyond the gateway address to listen on.

mod error;
mod host;
mod plan;
mod records;
mod rules;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub use error::NetError;
pub use ipnet::Ipv4Net;
pub use plan::NetConfig;

use host::{HostCommand, Tool};
use plan::{check_machine_id, netns_name, AddressPlan, GUEST_IFNAME};
use records::Records;

/// Where `ip netns` keeps namespace files.
const NETNS_DIR: &str = "/run/netns";

/// A machine's place on the network: what the container runtime and the proxy need.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attachment {
    /// The network namespace file, given to the OCI runtime as the container's netns path.
    pub netns_path: PathBuf,
    /// The machine's address; the proxy routes to `ip:internal_port`.
    pub ip: Ipv4Addr,
    /// The bridge's address: the machine's default route, and how it reaches the host.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The host end of the machine's veth pair (a port of the bridge).
    pub host_veth: String,
}

/// The host's machine network: one bridge, its subnet and rules, and the machines attached.
pub struct Network {
    plan: AddressPlan,
    records: Mutex<Records>,
    /// Namespaces [`Network::reserve`] made and [`Network::connect`] has not wired yet: their
    /// veth (if one is still listed) belonged to a namespace that is gone.
    fresh: Mutex<BTreeSet<String>>,
}

impl Network {
    /// Creates the bridge with the gateway address and brings it up, enables IPv4 forwarding,
    /// and adds the NAT and FORWARD rules that are missing; reads the allocations recorded in
    /// `state_dir`. Idempotent.
    pub fn setup(config: NetConfig, state_dir: &Path) -> Result<Network, NetError> {
        let plan = AddressPlan::new(&config)?;
        host::require_tools()?;
        let records = Records::load(state_dir)?;
        let network = Network {
            plan,
            records: Mutex::new(records),
            fresh: Mutex::new(BTreeSet::new()),
        };
        network.ensure_bridge()?;
        host::sysctl(network.plan.bridge(), "/proc/sys/net/ipv4/ip_forward", "1")?;
        rules::ensure(&network.plan, &network.bridge_target())?;
        Ok(network)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        self.plan.bridge()
    }

    /// The machines' subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.plan.subnet()
    }

    /// The bridge's address, the machines' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.plan.gateway()
    }

    /// Gives the machine its namespace, veth pair and address (the lowest free one, or the one
    /// it already holds). Idempotent: attaching an attached machine, also after an agent
    /// restart, finds the namespace and veth in place and keeps the address; what is missing is
    /// made again.
    pub fn attach(&self, machine_id: &str) -> Result<Attachment, NetError> {
        self.reserve(machine_id)?;
        self.connect(machine_id)
    }

    /// The first half of [`Network::attach`]: the machine's address (recorded) and its network
    /// namespace (created if missing), nothing more — enough for a container to be started in
    /// the namespace while [`Network::connect`] wires it, so the two overlap.
    pub fn reserve(&self, machine_id: &str) -> Result<Attachment, NetError> {
        check_machine_id(machine_id)?;
        let mut records = self.lock();
        let ip = self.address_for(&mut records, machine_id)?.0;
        let ns = netns_name(machine_id);
        if !netns_path(machine_id).exists() {
            let target = self.machine_target(machine_id);
            HostCommand::new(Tool::Ip, &target, &["netns", "add", &ns]).run()?;
            self.fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(machine_id.to_string());
        }
        Ok(self.attachment_at(machine_id, ip))
    }

    /// The machine's address: the one on record, else the lowest free one, recorded now.
    /// `true` when it is new.
    fn address_for(
        &self,
        records: &mut MutexGuard<'_, Records>,
        machine_id: &str,
    ) -> Result<(Ipv4Addr, bool), NetError> {
        Ok(match records.get(machine_id) {
            Some(Some(ip)) if self.plan.is_machine_address(ip) => (ip, false),
            _ => {
                let taken: BTreeSet<Ipv4Addr> = records
                    .machines()
                    .filter(|(id, _)| id.as_str() != machine_id)
                    .filter_map(|(_, ip)| *ip)
                    .collect();
                let ip = self
                    .plan
                    .lowest_free(&taken)
                    .ok_or_else(|| NetError::SubnetFull {
                        machine: machine_id.to_string(),
                        subnet: self.plan.subnet().to_string(),
                        bridge: self.plan.bridge().to_string(),
                        capacity: self.plan.capacity(),
                    })?;
                records.put(machine_id, ip)?;
                (ip, true)
            }
        })
    }

    /// The second half of [`Network::attach`]: the veth pair on the bridge and the address and
    /// routes inside the namespace (which is created first if missing). Idempotent.
    pub fn connect(&self, machine_id: &str) -> Result<Attachment, NetError> {
        check_machine_id(machine_id)?;
        let mut records = self.lock();
        let target = self.machine_target(machine_id);
        let (ip, fresh_address) = self.address_for(&mut records, machine_id)?;

        let ns = netns_name(machine_id);
        let veth = self.plan.host_veth(machine_id);
        let reserved_fresh = self
            .fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(machine_id);
        let fresh_ns = reserved_fresh || !netns_path(machine_id).exists();
        if !netns_path(machine_id).exists() {
            HostCommand::new(Tool::Ip, &target, &["netns", "add", &ns]).run()?;
        }
        let veth_exists = link_exists(&veth);
        let bridge = self.plan.bridge();
        let mut outside = Vec::new();
        if veth_exists && fresh_ns {
            // Its peer was in a namespace that is gone: make the pair anew.
            outside.push(format!("link del dev {veth}"));
        }
        if fresh_ns || !veth_exists {
            outside.push(format!(
                "link add {veth} type veth peer name {GUEST_IFNAME} netns {ns}"
            ));
        }
        outside.push(format!("link set dev {veth} master {bridge} up"));
        HostCommand::ip_batch(&target, None, &outside).run()?;

        let (gateway, prefix) = (self.plan.gateway(), self.plan.prefix());
        let mut inside = Vec::new();
        if fresh_address && veth_exists && !fresh_ns {
            // A namespace found in place whose record was lost or outside the subnet.
            inside.push(format!("addr flush dev {GUEST_IFNAME}"));
        }
        inside.extend([
            format!("addr replace {ip}/{prefix} dev {GUEST_IFNAME}"),
            format!("link set dev {GUEST_IFNAME} up"),
            "link set dev lo up".to_string(),
            format!("route replace default via {gateway} dev {GUEST_IFNAME}"),
        ]);
        HostCommand::ip_batch(&target, Some(&ns), &inside).run()?;
        Ok(self.attachment_at(machine_id, ip))
    }

    /// The machine's attachment on record, if it has one (no look at the host).
    pub fn attachment(&self, machine_id: &str) -> Option<Attachment> {
        check_machine_id(machine_id).ok()?;
        let ip = self.lock().get(machine_id)??;
        self.plan
            .is_machine_address(ip)
            .then(|| self.attachment_at(machine_id, ip))
    }

    /// Removes the machine's veth pair and namespace and frees its address. Idempotent.
    pub fn detach(&self, machine_id: &str) -> Result<(), NetError> {
        check_machine_id(machine_id)?;
        let mut records = self.lock();
        self.detach_locked(&mut records, machine_id)
    }

    /// Machines with an attachment on record, in id order.
    pub fn attached(&self) -> Vec<String> {
        self.lock().machines().map(|(id, _)| id.clone()).collect()
    }

    /// Detaches every recorded machine not in `keep` (what a dead agent left and the new one
    /// does not re-adopt); returns those it detached.
    pub fn reap_unknown(&self, keep: &[String]) -> Result<Vec<String>, NetError> {
        let mut records = self.lock();
        let unknown: Vec<String> = records
            .machines()
            .map(|(id, _)| id.clone())
            .filter(|id| !keep.contains(id))
            .collect();
        for id in &unknown {
            self.detach_locked(&mut records, id)?;
        }
        Ok(unknown)
    }

    /// Detaches every machine and removes the bridge and every rule marked with its comment.
    /// For tests and uninstalling: an agent that stops leaves the network in place.
    pub fn teardown(&self) -> Result<(), NetError> {
        let mut records = self.lock();
        let all: Vec<String> = records.machines().map(|(id, _)| id.clone()).collect();
        for id in &all {
            self.detach_locked(&mut records, id)?;
        }
        let target = self.bridge_target();
        rules::remove_all(&self.plan, &target)?;
        if link_exists(self.plan.bridge()) {
            HostCommand::new(
                Tool::Ip,
                &target,
                &["link", "del", "dev", self.plan.bridge()],
            )
            .run()?;
        }
        Ok(())
    }

    fn detach_locked(&self, records: &mut Records, machine_id: &str) -> Result<(), NetError> {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(machine_id);
        let veth = self.plan.host_veth(machine_id);
        let ns = netns_name(machine_id);
        let mut commands = Vec::new();
        if link_exists(&veth) {
            // Deleting one end deletes the pair, even while a process holds the namespace.
            commands.push(format!("link del dev {veth}"));
        }
        if netns_path(machine_id).exists() {
            commands.push(format!("netns del {ns}"));
        }
        if !commands.is_empty() {
            HostCommand::ip_batch(&self.machine_target(machine_id), None, &commands).run()?;
        }
        records.remove(machine_id)
    }

    /// Makes the bridge if missing (refusing an interface of its name that is not a bridge),
    /// gives it the gateway address and brings it up.
    fn ensure_bridge(&self) -> Result<(), NetError> {
        let bridge = self.plan.bridge();
        let target = self.bridge_target();
        let details = HostCommand::new(
            Tool::Ip,
            &target,
            &["-d", "-o", "link", "show", "dev", bridge],
        )
        .query()?;
        match details {
            Some(line) if !line.split_whitespace().any(|w| w == "bridge") => {
                return Err(NetError::NotABridge {
                    bridge: bridge.to_string(),
                })
            }
            Some(_) => {}
            None => {
                HostCommand::new(
                    Tool::Ip,
                    &target,
                    &["link", "add", "name", bridge, "type", "bridge"],
                )
                .run()?;
            }
        }
        let address = format!("{}/{}", self.plan.gateway(), self.plan.prefix());
        HostCommand::ip_batch(
            &target,
            None,
            &[
                format!("addr replace {address} dev {bridge}"),
                format!("link set dev {bridge} up"),
            ],
        )
        .run()?;
        Ok(())
    }

    fn attachment_at(&self, machine_id: &str, ip: Ipv4Addr) -> Attachment {
        Attachment {
            netns_path: netns_path(machine_id),
            ip,
            gateway: self.plan.gateway(),
            prefix: self.plan.prefix(),
            host_veth: self.plan.host_veth(machine_id),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // Every change to the records is one atomic file write: a panic elsewhere leaves them
        // consistent.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bridge_target(&self) -> String {
        format!("bridge {}", self.plan.bridge())
    }

    fn machine_target(&self, machine_id: &str) -> String {
        format!("machine {machine_id} on bridge {}", self.plan.bridge())
    }
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
