//! The address plan, in one place: which bridge, which subnet, which address is the gateway,
//! which addresses machines may get, and how host objects are named after a machine. Pure: no IO.
//!
//! IPv6 (the private network of issue 12): the host holds one /64 (`host64`); an organization's
//! addresses on this host are the /80 `<host64>:<org>::/80`, where `org` is the organization's
//! 16-bit number on this host. Inside it the interface id is laid out `<org:16>:<kind:16>:<n:32>`:
//! kind 0 is a machine (`n` is the offset of its IPv4 address in the subnet, so the two are
//! given together and never collide), kind `0xf` a service (Flycast) address. The bridge holds
//! `<host64>::1`, the machines' IPv6 gateway.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
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
    /// The host's private IPv6 /64 (a ULA such as `fdaa:…`); `None`: a random
    /// `fdaa:XXXX:XXXX::/48` is made once, kept in the state directory, and the host takes its
    /// subnet 1.
    pub subnet6: Option<Ipv6Net>,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            bridge: "aloft0".to_string(),
            subnet: "10.209.0.0/16".parse().expect("a valid subnet"),
            subnet6: None,
        }
    }
}

/// Kind of an IPv6 address inside an organization's /80: a machine's.
pub const KIND_MACHINE: u16 = 0;
/// Kind of an IPv6 address inside an organization's /80: a service (Flycast) address.
pub const KIND_SERVICE: u16 = 0xf;
/// Prefix length of the host's IPv6 network.
pub const PREFIX6: u8 = 64;
/// Prefix length of an organization's addresses on a host.
pub const ORG_PREFIX6: u8 = 80;

/// A checked [`NetConfig`]: the addresses machines get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPlan {
    bridge: String,
    subnet: Ipv4Net,
    host64: Ipv6Net,
}

impl AddressPlan {
    /// Checks the bridge name and the subnet (its network address, room for a gateway and at
    /// least one machine), and the IPv6 /64 (`host64`: the configured one, else the host's
    /// subnet 1 of the generated /48).
    pub fn new(config: &NetConfig, host64: Ipv6Net) -> Result<AddressPlan, NetError> {
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
        if host64.prefix_len() != PREFIX6 || host64.network() != host64.addr() {
            return Err(NetError::Config(format!(
                "IPv6 subnet {host64} is not a /64 network address: give one such as fdaa:1:2:3::/64"
            )));
        }
        Ok(AddressPlan {
            bridge: config.bridge.clone(),
            subnet,
            host64,
        })
    }

    /// The host's /64 when `config` names none: subnet 1 of the generated `/48`.
    pub fn host64_of(config: &NetConfig, generated48: Ipv6Net) -> Ipv6Net {
        config.subnet6.unwrap_or_else(|| {
            let base = u128::from(generated48.network()) | (1u128 << 64);
            Ipv6Net::new(Ipv6Addr::from(base), PREFIX6).expect("a /64")
        })
    }

    /// The host's IPv6 /64.
    pub fn host64(&self) -> Ipv6Net {
        self.host64
    }

    /// The bridge's IPv6 address, the machines' IPv6 gateway: `<host64>::1`.
    pub fn gateway6(&self) -> Ipv6Addr {
        self.address6(0, 0, 1)
    }

    /// An organization's addresses on this host: `<host64>:<org>::/80`.
    pub fn org_prefix(&self, org: u16) -> Ipv6Net {
        Ipv6Net::new(self.address6(org, 0, 0), ORG_PREFIX6).expect("a /80")
    }

    /// A machine's IPv6 address: `<host64>:<org>:0:<n>` with `n` its IPv4 address's offset in
    /// the subnet (unique while the IPv4 address is).
    pub fn machine_ip6(&self, org: u16, ip: Ipv4Addr) -> Ipv6Addr {
        let n = u32::from(ip) - u32::from(self.subnet.network());
        self.address6(org, KIND_MACHINE, n)
    }

    /// The `n`th service (Flycast) address of an organization: `<host64>:<org>:f:<n>`.
    pub fn service_ip6(&self, org: u16, n: u32) -> Ipv6Addr {
        self.address6(org, KIND_SERVICE, n)
    }

    /// `<host64>:<org>:<kind>:<n>`.
    fn address6(&self, org: u16, kind: u16, n: u32) -> Ipv6Addr {
        let id = (u128::from(org) << 48) | (u128::from(kind) << 32) | u128::from(n);
        Ipv6Addr::from(u128::from(self.host64.network()) | id)
    }

    /// The interface group (`ip link set … group`) of a machine's veth host end: this bridge's
    /// 16-bit mark, then the organization's number. The nftables rules read the organization of
    /// the port a frame comes in on from it (`meta iifgroup`), so a machine cannot borrow
    /// another organization's addresses.
    pub fn port_group(&self, org: u16) -> u32 {
        (self.group_mark() << 16) | u32::from(org)
    }

    /// The high half of this bridge's port groups: a hash of the bridge name, never 0 (the
    /// group of every other interface).
    pub fn group_mark(&self) -> u32 {
        let digest = Sha256::new()
            .chain_update(b"group\0")
            .chain_update(self.bridge.as_bytes())
            .finalize();
        u32::from(u16::from_be_bytes([digest[0], digest[1]]).max(1))
    }

    /// The nftables tables of this bridge (one `inet`, one `bridge`, both of this name).
    pub fn table(&self) -> String {
        format!("aloft-{}", self.bridge)
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

    /// The rule comment that marked the iptables rules of this bridge (before nftables).
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

/// Organization slugs are recorded and shown in errors: a plain alphabet only, so a slug never
/// turns into something else on the way.
pub fn check_org(slug: &str) -> Result<(), NetError> {
    let why = if slug.is_empty() {
        "it is empty"
    } else if slug.len() > 64 {
        "it is longer than 64 characters"
    } else if !slug
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "it has characters other than letters, digits, '_' and '-'"
    } else {
        return Ok(());
    };
    Err(NetError::OrgSlug {
        slug: slug.to_string(),
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
        AddressPlan::new(
            &NetConfig {
                bridge: bridge.to_string(),
                subnet: subnet.parse().unwrap(),
                subnet6: None,
            },
            "fdaa:1:2:1::/64".parse().unwrap(),
        )
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_plan_is_aloft0_on_10_209() {
        let plan = AddressPlan::new(&NetConfig::default(), "fdaa::/64".parse().unwrap()).unwrap();
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

    #[test]
    fn ipv6_addresses_follow_the_org_kind_n_layout() {
        let plan = plan("br", "10.1.2.0/24").unwrap();
        assert_eq!(
            plan.gateway6(),
            "fdaa:1:2:1::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            plan.machine_ip6(5, ip("10.1.2.7")),
            "fdaa:1:2:1:5:0:0:7".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            plan.service_ip6(0x12, 1),
            "fdaa:1:2:1:12:f:0:1".parse::<Ipv6Addr>().unwrap()
        );
        let org5 = plan.org_prefix(5);
        assert_eq!(org5.to_string(), "fdaa:1:2:1:5::/80");
        assert!(org5.contains(&plan.machine_ip6(5, ip("10.1.2.200"))));
        assert!(org5.contains(&plan.service_ip6(5, 3)));
        assert!(!org5.contains(&plan.machine_ip6(6, ip("10.1.2.2"))));
        assert_eq!(plan.table(), "aloft-br");
        assert_eq!(plan.port_group(5) >> 16, plan.group_mark());
        assert_eq!(plan.port_group(5) & 0xffff, 5);
        let other = super::tests::plan("br2", "10.1.3.0/24").unwrap();
        assert_ne!(plan.group_mark(), other.group_mark());
    }

    #[test]
    fn the_host_takes_subnet_1_of_a_generated_48_unless_configured() {
        let generated: Ipv6Net = "fdaa:abcd:ef01::/48".parse().unwrap();
        let mut config = NetConfig::default();
        assert_eq!(
            AddressPlan::host64_of(&config, generated).to_string(),
            "fdaa:abcd:ef01:1::/64"
        );
        config.subnet6 = Some("fd00:9::/64".parse().unwrap());
        assert_eq!(
            AddressPlan::host64_of(&config, generated).to_string(),
            "fd00:9::/64"
        );
        let err = AddressPlan::new(&config, "fd00:9::/56".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a /64"), "{err}");
    }
}
