//! The address plan, in one place: which bridge, which subnet, which address is the gateway,
//! which addresses machines may get, and how host objects are named after a machine. Pure: no IO.
//!
//! Issue 12 (the private network) adds its IPv6 prefix here, next to the IPv4 subnet, so every
//! address a machine gets is decided by this module.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::error::NetError;

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME: usize = 15;

/// Prefix of network namespace names: a machine's namespace is `/run/netns/aloft-<machine_id>`.
pub const NETNS_PREFIX: &str = "aloft-";

/// The name of the interface inside a machine's namespace.
pub const GUEST_IFNAME: &str = "eth0";

/// How the host's machine network is laid out. One agent owns one bridge: two agents must be
/// given different bridge names and subnets that do not overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The bridge's interface name, at most 15 characters.
    pub bridge: String,
    /// The machines' subnet: the bridge takes its first address (the gateway), machines the
    /// others up to the broadcast address.
    pub subnet: Ipv4Net,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            bridge: "aloft0".to_string(),
            subnet: "10.209.0.0/16".parse().expect("a valid subnet"),
        }
    }
}

/// A checked [`NetConfig`]: the addresses machines get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPlan {
    bridge: String,
    subnet: Ipv4Net,
}

impl AddressPlan {
    /// Checks the bridge name and the subnet (its network address, room for a gateway and at
    /// least one machine).
    pub fn new(config: &NetConfig) -> Result<AddressPlan, NetError> {
        check_ifname(&config.bridge)?;
        let subnet = config.subnet;
        if subnet.network() != subnet.addr() {
            return Err(NetError::Config(format!(
                "subnet {subnet} has host bits set: use its network address, {}",
                subnet.trunc()
            )));
        }
        if subnet.prefix_len() > 30 {
            return Err(NetError::Config(format!(
                "subnet {subnet} is too small: a gateway and at least one machine need a /30 or larger"
            )));
        }
        Ok(AddressPlan {
            bridge: config.bridge.clone(),
            subnet,
        })
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn prefix(&self) -> u8 {
        self.subnet.prefix_len()
    }

    /// The bridge's address, the machines' default route: the subnet's first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// Whether a machine may hold `ip`: inside the subnet, neither network, gateway nor
    /// broadcast address.
    pub fn is_machine_address(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.gateway()
            && ip != self.subnet.broadcast()
    }

    /// How many machines the subnet holds.
    pub fn capacity(&self) -> usize {
        // hosts() leaves out network and broadcast; the gateway takes one more.
        self.subnet.hosts().count() - 1
    }

    /// The lowest address machines may hold that is not in `taken`.
    pub fn lowest_free(&self, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.subnet
            .hosts()
            .find(|ip| self.is_machine_address(*ip) && !taken.contains(ip))
    }

    /// The host end of a machine's veth pair: `av` and 12 hex digits of a hash of bridge and
    /// machine id, so it fits the 15 characters of an interface name and two agents (two
    /// bridges) never derive the same name for their machines.
    pub fn host_veth(&self, machine_id: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.bridge.as_bytes())
            .chain_update([0])
            .chain_update(machine_id.as_bytes())
            .finalize();
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("av{hex}")
    }

    /// The rule comment that marks the iptables rules of this bridge.
    pub fn rule_comment(&self) -> String {
        format!("aloft:{}", self.bridge)
    }
}

/// A machine's network namespace name (`ip netns` keeps it at `/run/netns/<name>`).
pub fn netns_name(machine_id: &str) -> String {
    format!("{NETNS_PREFIX}{machine_id}")
}

/// Machine ids become file names and namespace names: only a safe alphabet gets through.
pub fn check_machine_id(id: &str) -> Result<(), NetError> {
    let why = if id.is_empty() {
        "it is empty"
    } else if id.len() > 64 {
        "it is longer than 64 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "it has characters other than letters, digits, '_' and '-'"
    } else {
        return Ok(());
    };
    Err(NetError::MachineId {
        id: id.to_string(),
        why,
    })
}

fn check_ifname(name: &str) -> Result<(), NetError> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_IFNAME {
        "is longer than 15 characters (Linux's limit for interface names)"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        "may only have letters, digits, '_', '-' and '.'"
    } else if name == "." || name == ".." {
        "is not a usable interface name"
    } else {
        return Ok(());
    };
    Err(NetError::Config(format!("bridge name {name:?} {problem}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(bridge: &str, subnet: &str) -> Result<AddressPlan, NetError> {
        AddressPlan::new(&NetConfig {
            bridge: bridge.to_string(),
            subnet: subnet.parse().unwrap(),
        })
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_plan_is_aloft0_on_10_209() {
        let plan = AddressPlan::new(&NetConfig::default()).unwrap();
        assert_eq!(plan.bridge(), "aloft0");
        assert_eq!(plan.gateway(), ip("10.209.0.1"));
        assert_eq!(plan.prefix(), 16);
        assert_eq!(plan.capacity(), 65533);
        assert_eq!(plan.lowest_free(&BTreeSet::new()), Some(ip("10.209.0.2")));
    }

    #[test]
    fn machines_get_the_lowest_free_address_past_the_gateway() {
        let plan = plan("br", "10.1.2.0/24").unwrap();
        let mut taken = BTreeSet::from([ip("10.1.2.2"), ip("10.1.2.4")]);
        assert_eq!(plan.lowest_free(&taken), Some(ip("10.1.2.3")));
        taken.insert(ip("10.1.2.3"));
        assert_eq!(plan.lowest_free(&taken), Some(ip("10.1.2.5")));
    }

    #[test]
    fn network_gateway_and_broadcast_are_never_given_out() {
        let plan = plan("br", "10.1.2.0/30").unwrap();
        assert_eq!(plan.capacity(), 1);
        assert!(!plan.is_machine_address(ip("10.1.2.0")));
        assert!(!plan.is_machine_address(ip("10.1.2.1")));
        assert!(plan.is_machine_address(ip("10.1.2.2")));
        assert!(!plan.is_machine_address(ip("10.1.2.3")));
        assert!(!plan.is_machine_address(ip("10.1.3.2")));
        let full = BTreeSet::from([ip("10.1.2.2")]);
        assert_eq!(plan.lowest_free(&full), None);
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let msg = |r: Result<AddressPlan, NetError>| r.unwrap_err().to_string();
        assert!(msg(plan("br", "10.1.2.5/24")).contains("use its network address, 10.1.2.0/24"));
        assert!(msg(plan("br", "10.1.2.0/31")).contains("too small"));
        assert!(msg(plan("a-very-long-bridge", "10.1.2.0/24")).contains("15 characters"));
        assert!(msg(plan("", "10.1.2.0/24")).contains("empty"));
        assert!(msg(plan("br/x", "10.1.2.0/24")).contains("may only have"));
    }

    #[test]
    fn veth_names_fit_linux_and_differ_per_bridge_and_machine() {
        let a = plan("aloft0", "10.1.2.0/24").unwrap();
        let b = plan("aloft1", "10.1.3.0/24").unwrap();
        let name = a.host_veth("machine-1");
        assert_eq!(name.len(), 14);
        assert!(name.starts_with("av"));
        assert_eq!(
            name,
            a.host_veth("machine-1"),
            "stable: found again after a restart"
        );
        assert_ne!(name, a.host_veth("machine-2"));
        assert_ne!(name, b.host_veth("machine-1"));
    }

    #[test]
    fn machine_ids_are_checked_before_they_name_anything() {
        assert!(check_machine_id("3d8d9e1f2a4b6c").is_ok());
        assert!(check_machine_id("m_1-A").is_ok());
        for bad in ["", "../etc", "a b", "x.json", &"a".repeat(65)] {
            assert!(check_machine_id(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(netns_name("abc"), "aloft-abc");
    }
}
