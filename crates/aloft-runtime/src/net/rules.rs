//! The nftables tables of a bridge: isolation between organizations, no way in from outside,
//! NAT on the way out. Two tables, both named `aloft-<bridge>` ([`AddressPlan::table`]), so
//! the rules of one bridge are found (and removed) exactly, next to other agents' and the
//! host's own:
//!
//! - `bridge aloft-<bridge>`, chain `prerouting`: IPv6 coming in on a machine's port (its
//!   interface group, [`AddressPlan::port_group`], names bridge and organization) must come
//!   from that organization's /80 (set `port_src`), or be link-local or unspecified (neighbour
//!   discovery): a machine cannot borrow another organization's addresses. Chain `forward`:
//!   frames switched between two ports of a bridge (machine to machine). IPv4 to or from the
//!   subnet is dropped (the private network is IPv6, like Fly's 6PN); IPv6 from a machine's
//!   port, or to or from the host's /64, passes only between addresses of one organization
//!   (the set `same_org`) or when it is neighbour discovery (so link-local addresses carry
//!   nothing else between machines). ARP and everything else pass.
//! - `inet aloft-<bridge>`: `forward` applies the same rules to what is routed (or, with
//!   `br_netfilter` loaded, bridged) from the bridge back onto it, accepts replies going to
//!   the machines and drops every other packet forwarded to the bridge (nothing from outside
//!   opens a connection to a machine); `input` lets packets to a service (Flycast) address
//!   through only from the host itself or from the same organization's /80; `postrouting`
//!   masquerades the machines' IPv4 and IPv6 traffic leaving through any other interface.
//!
//! `same_org` holds one element per organization, `<org /80> . <org /80>`, and `port_src` one,
//! `<port group> . <org /80>`: giving a new organization its number adds an element to each
//! set ([`add_org`]). The whole ruleset is
//! written in one `nft -f -` transaction at setup (tables replaced, elements re-added from the
//! records), so setting up twice leaves exactly one copy. The host itself (the proxy) reaches
//! every machine: its packets are neither forwarded nor switched between ports.
//!
//! Before nftables, the rules were iptables rules marked `-m comment --comment aloft:<bridge>`;
//! [`remove_legacy`] removes those an older agent left.

use super::error::NetError;
use super::host::{HostCommand, Tool};
use super::plan::AddressPlan;

/// `elements = { … };` of a set, or nothing for none.
fn elements(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", items.join(", "))
    }
}

/// The `nft -f` script that replaces both tables of the bridge with the full ruleset, the
/// given organizations (by number) in its sets.
pub fn ruleset(plan: &AddressPlan, orgs: &[u16]) -> String {
    let table = plan.table();
    let bridge = plan.bridge();
    let subnet = plan.subnet();
    let host64 = plan.host64();
    let same_org = format!(
        "set same_org {{ type ipv6_addr . ipv6_addr; flags interval;{} }}",
        elements(orgs.iter().map(|n| {
            let p = plan.org_prefix(*n);
            format!("{p} . {p}")
        }))
    );
    let port_src = format!(
        "set port_src {{ type devgroup . ipv6_addr; flags interval;{} }}",
        elements(orgs.iter().map(|n| format!(
            "{:#x} . {}",
            plan.port_group(*n),
            plan.org_prefix(*n)
        )))
    );
    let ports = format!(
        "meta iifgroup & 0xffff0000 == {:#x}",
        plan.group_mark() << 16
    );
    let nd = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept";
    format!(
        r#"table inet {table}
delete table inet {table}
table inet {table} {{
  {same_org}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" oifname "{bridge}" jump between
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" drop
  }}
  chain between {{
    {nd}
    ip6 saddr . ip6 daddr @same_org accept
    drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    ip6 daddr {host64} ip6 daddr & ::ffff:0:0 == ::f:0:0 jump service
  }}
  chain service {{
    iifname "lo" accept
    iifname "{bridge}" ip6 saddr . ip6 daddr @same_org accept
    drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade
    ip6 saddr {host64} oifname != "{bridge}" masquerade
  }}
}}
table bridge {table}
delete table bridge {table}
table bridge {table} {{
  {same_org}
  {port_src}
  chain prerouting {{
    type filter hook prerouting priority filter; policy accept;
    {ports} ether type ip6 jump source
  }}
  chain source {{
    ip6 saddr {{ ::, fe80::/10 }} accept
    meta iifgroup . ip6 saddr @port_src accept
    drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ip saddr {subnet} drop
    ip daddr {subnet} drop
    {ports} ether type ip6 jump v6
    ip6 saddr {host64} jump v6
    ip6 daddr {host64} jump v6
  }}
  chain v6 {{
    {nd}
    ip6 saddr . ip6 daddr @same_org accept
    drop
  }}
}}
"#
    )
}

/// Writes the whole ruleset (replacing what the tables held).
pub fn ensure(plan: &AddressPlan, orgs: &[u16], target: &str) -> Result<(), NetError> {
    HostCommand::nft_script(target, &ruleset(plan, orgs)).run()?;
    Ok(())
}

/// The `nft -f` script that lets an organization's machines reach each other.
pub fn add_org_script(plan: &AddressPlan, org: u16) -> String {
    let table = plan.table();
    let (prefix, group) = (plan.org_prefix(org), plan.port_group(org));
    format!(
        "add element inet {table} same_org {{ {prefix} . {prefix} }}\n\
         add element bridge {table} same_org {{ {prefix} . {prefix} }}\n\
         add element bridge {table} port_src {{ {group:#x} . {prefix} }}\n"
    )
}

/// Adds an organization to the sets of both tables (idempotent).
pub fn add_org(plan: &AddressPlan, org: u16, target: &str) -> Result<(), NetError> {
    HostCommand::nft_script(target, &add_org_script(plan, org)).run()?;
    Ok(())
}

/// Removes both tables of the bridge (those missing are skipped).
pub fn remove_all(plan: &AddressPlan, target: &str) -> Result<(), NetError> {
    let table = plan.table();
    for family in ["inet", "bridge"] {
        let listed =
            HostCommand::new(Tool::Nft, target, &["list", "table", family, &table]).check()?;
        if listed {
            HostCommand::new(Tool::Nft, target, &["delete", "table", family, &table]).run()?;
        }
    }
    Ok(())
}

/// Removes every iptables and ip6tables rule marked with this bridge's comment (an older
/// agent's, or [`open_host_firewall`]'s), if they are installed (a host without them has none).
pub fn remove_legacy(plan: &AddressPlan, target: &str) -> Result<(), NetError> {
    let comment = plan.rule_comment();
    for tool in [Tool::Iptables, Tool::Ip6tables] {
        if !tool.installed() {
            continue;
        }
        for table in ["nat", "filter"] {
            let Some(listing) = HostCommand::new(tool, target, &["-t", table, "-S"]).query()?
            else {
                continue;
            };
            for spec in ours(&listing, &comment) {
                let mut delete = vec!["-t", table, "-D"];
                delete.extend(spec.iter().map(String::as_str));
                HostCommand::new(tool, target, &delete).run()?;
            }
        }
    }
    Ok(())
}

/// Opens the host's own firewall to the bridge when its iptables `FORWARD` policy drops (Docker
/// sets DROP): a drop in another table cannot be overruled from nftables, so without these the
/// machines' outbound traffic would be dropped. Two rules per family, marked with the bridge's
/// comment (so [`remove_legacy`] removes them): packets from the bridge, and the answers to
/// them. Isolation stays with the nftables tables, whose drops still apply. A host without
/// iptables, or whose policy accepts, gets nothing. Idempotent: call after [`remove_legacy`].
pub fn open_host_firewall(plan: &AddressPlan, target: &str) -> Result<(), NetError> {
    let comment = plan.rule_comment();
    let bridge = plan.bridge();
    for tool in [Tool::Iptables, Tool::Ip6tables] {
        if !tool.installed() {
            continue;
        }
        let Some(listing) = HostCommand::new(tool, target, &["-S", "FORWARD"]).query()? else {
            continue;
        };
        if !forward_policy_drops(&listing) {
            continue;
        }
        for rule in host_firewall_rules(bridge, &comment) {
            let mut insert = vec!["-I", "FORWARD", "1"];
            insert.extend(rule.iter().copied());
            HostCommand::new(tool, target, &insert).run()?;
        }
    }
    Ok(())
}

/// Whether an `iptables -S FORWARD` listing has a policy that drops (`-P FORWARD DROP`).
pub fn forward_policy_drops(listing: &str) -> bool {
    listing.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words == ["-P", "FORWARD", "DROP"]
    })
}

/// The `FORWARD` rules of [`open_host_firewall`]: from the bridge, and answers to the bridge.
fn host_firewall_rules<'a>(bridge: &'a str, comment: &'a str) -> [Vec<&'a str>; 2] {
    let mark = ["-m", "comment", "--comment", comment, "-j", "ACCEPT"];
    let from = ["-i", bridge];
    let answers = [
        "-o",
        bridge,
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
    ];
    [
        from.iter().chain(&mark).copied().collect(),
        answers.iter().chain(&mark).copied().collect(),
    ]
}

/// The rules in an `iptables -S` listing that carry `comment`, as `CHAIN SPEC…` (the `-A`
/// dropped), ready for `iptables -D`.
pub fn ours(listing: &str, comment: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(shlex::split)
        .filter(|words| words.first().is_some_and(|w| w == "-A"))
        .filter(|words| {
            words
                .windows(2)
                .any(|pair| pair[0] == "--comment" && pair[1] == comment)
        })
        .map(|words| words[1..].to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::plan::NetConfig;

    fn plan() -> AddressPlan {
        AddressPlan::new(
            &NetConfig {
                bridge: "br7".into(),
                subnet: "10.7.0.0/24".parse().unwrap(),
                subnet6: None,
            },
            "fdaa:1:2:1::/64".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_ruleset_replaces_both_tables_of_the_bridge() {
        let plan = plan();
        let script = ruleset(&plan, &[3]);
        for family in ["inet", "bridge"] {
            // Made (so that deleting cannot fail), deleted, written anew: one transaction.
            assert!(script.contains(&format!(
                "table {family} aloft-br7\ndelete table {family} aloft-br7\ntable {family} aloft-br7 {{"
            )));
        }
        assert_eq!(
            script
                .matches("elements = { fdaa:1:2:1:3::/80 . fdaa:1:2:1:3::/80 }")
                .count(),
            2
        );
        assert!(script.contains(r#"ip saddr 10.7.0.0/24 oifname != "br7" masquerade"#));
        assert!(script.contains(r#"ip6 saddr fdaa:1:2:1::/64 oifname != "br7" masquerade"#));
        assert!(script.contains(r#"oifname "br7" drop"#));
        assert!(script.contains(&format!(
            "elements = {{ {:#x} . fdaa:1:2:1:3::/80 }}",
            plan.port_group(3)
        )));
        assert!(!ruleset(&plan, &[]).contains("elements"));
    }

    #[test]
    fn only_a_dropping_forward_policy_opens_the_host_firewall() {
        assert!(forward_policy_drops(
            "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n"
        ));
        assert!(!forward_policy_drops(
            "-P FORWARD ACCEPT\n-A FORWARD -j DROP\n"
        ));
        assert!(!forward_policy_drops(""));
        let rules = host_firewall_rules("br7", "aloft:br7");
        assert_eq!(
            rules[0].join(" "),
            "-i br7 -m comment --comment aloft:br7 -j ACCEPT"
        );
        assert_eq!(
            rules[1].join(" "),
            "-o br7 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment aloft:br7 -j ACCEPT"
        );
        // What `remove_legacy` finds of them in a listing.
        let listing = format!(
            "-P FORWARD DROP\n-A FORWARD {}\n-A FORWARD {}\n-A FORWARD -j DOCKER-USER\n",
            rules[0].join(" "),
            rules[1].join(" ")
        );
        assert_eq!(ours(&listing, "aloft:br7").len(), 2);
    }

    #[test]
    fn a_new_org_is_one_element_in_each_set() {
        let plan = plan();
        assert_eq!(
            add_org_script(&plan, 3),
            format!(
                "add element inet aloft-br7 same_org {{ fdaa:1:2:1:3::/80 . fdaa:1:2:1:3::/80 }}\n\
                 add element bridge aloft-br7 same_org {{ fdaa:1:2:1:3::/80 . fdaa:1:2:1:3::/80 }}\n\
                 add element bridge aloft-br7 port_src {{ {:#x} . fdaa:1:2:1:3::/80 }}\n",
                plan.port_group(3)
            )
        );
    }

    #[test]
    fn only_legacy_rules_with_exactly_our_comment_are_ours() {
        let listing = r#"-P POSTROUTING ACCEPT
-A POSTROUTING -s 10.7.0.0/24 ! -o br7 -m comment --comment "aloft:br7" -j MASQUERADE
-A POSTROUTING -s 10.8.0.0/24 ! -o br70 -m comment --comment "aloft:br70" -j MASQUERADE
-A POSTROUTING -o eth0 -j MASQUERADE
"#;
        assert_eq!(
            ours(listing, "aloft:br7"),
            vec![
                "POSTROUTING -s 10.7.0.0/24 ! -o br7 -m comment --comment aloft:br7 -j MASQUERADE"
                    .split(' ')
                    .map(String::from)
                    .collect::<Vec<_>>()
            ]
        );
    }
}
