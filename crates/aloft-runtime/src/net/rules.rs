//! The iptables rules of a bridge: NAT for traffic leaving the host, and FORWARD accepts for the
//! machines' traffic and its replies. Each carries the comment `aloft:<bridge>`, so the rules of
//! one bridge are found (and removed) exactly, next to other agents' and the host's own.

use super::error::NetError;
use super::host::{HostCommand, Tool};
use super::plan::AddressPlan;

/// One rule: table, chain, the match and target, and whether it goes first in its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub spec: Vec<String>,
    /// FORWARD accepts go first, ahead of a host's reject-everything rule (ufw, Docker's
    /// DROP policy); NAT is appended.
    pub first: bool,
}

/// The rules a bridge needs.
pub fn rules_for(plan: &AddressPlan) -> Vec<Rule> {
    let bridge = plan.bridge();
    let subnet = plan.subnet().to_string();
    let comment = plan.rule_comment();
    // The comment goes just before the target, where `iptables -S` lists it.
    let spec = |matches: &[&str], target: &str| -> Vec<String> {
        let marked = ["-m", "comment", "--comment", &comment, "-j", target];
        matches
            .iter()
            .chain(&marked)
            .map(|w| w.to_string())
            .collect()
    };
    vec![
        Rule {
            table: "nat",
            chain: "POSTROUTING",
            spec: spec(&["-s", &subnet, "!", "-o", bridge], "MASQUERADE"),
            first: false,
        },
        Rule {
            table: "filter",
            chain: "FORWARD",
            spec: spec(&["-i", bridge], "ACCEPT"),
            first: true,
        },
        Rule {
            table: "filter",
            chain: "FORWARD",
            spec: spec(
                &[
                    "-o",
                    bridge,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED",
                ],
                "ACCEPT",
            ),
            first: true,
        },
    ]
}

/// Adds each rule that is not there yet (checked with `iptables -C`, so running it twice adds
/// nothing).
pub fn ensure(plan: &AddressPlan, target: &str) -> Result<(), NetError> {
    for rule in rules_for(plan) {
        let spec: Vec<&str> = rule.spec.iter().map(String::as_str).collect();
        let mut check = vec!["-t", rule.table, "-C", rule.chain];
        check.extend(&spec);
        if HostCommand::new(Tool::Iptables, target, &check).check()? {
            continue;
        }
        let mut add = vec!["-t", rule.table];
        if rule.first {
            add.extend(["-I", rule.chain, "1"]);
        } else {
            add.extend(["-A", rule.chain]);
        }
        add.extend(&spec);
        HostCommand::new(Tool::Iptables, target, &add).run()?;
    }
    Ok(())
}

/// Removes every rule that carries this bridge's comment, in the tables this module writes to,
/// including rules an older version added with other matches.
pub fn remove_all(plan: &AddressPlan, target: &str) -> Result<(), NetError> {
    let comment = plan.rule_comment();
    for table in ["nat", "filter"] {
        let listing = HostCommand::new(Tool::Iptables, target, &["-t", table, "-S"]).run()?;
        for spec in ours(&listing, &comment) {
            let mut delete = vec!["-t", table, "-D"];
            delete.extend(spec.iter().map(String::as_str));
            HostCommand::new(Tool::Iptables, target, &delete).run()?;
        }
    }
    Ok(())
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

    #[test]
    fn a_bridge_gets_nat_and_forward_rules_marked_with_its_name() {
        let plan = AddressPlan::new(&NetConfig {
            bridge: "br7".into(),
            subnet: "10.7.0.0/24".parse().unwrap(),
        })
        .unwrap();
        let rules = rules_for(&plan);
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0].spec.join(" "),
            "-s 10.7.0.0/24 ! -o br7 -m comment --comment aloft:br7 -j MASQUERADE"
        );
        assert!(rules
            .iter()
            .all(|r| r.spec.contains(&"aloft:br7".to_string())));
    }

    #[test]
    fn only_rules_with_exactly_our_comment_are_ours() {
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
