//! Rules that span sections, run after decoding (which already checked each field):
//! group names, every `processes` reference, services in multi-group apps, one mount per group,
//! canary + mounts, top-level checks without a port, and services of different groups sharing an
//! external port. Where these go beyond flyctl (§9: a typo that makes a section apply to nobody,
//! a second mount for a group) they warn; they refuse only what flyctl refuses or Aloft cannot
//! run (see the table in the crate docs).

use std::collections::BTreeMap;

use aloft_api::metadata::RESERVED_GROUPS;

use crate::decode::{Spans, Undefined};
use crate::diag::{Sink, Span};
use crate::model::AppConfig;

/// `['a', 'b']`, the way flyctl lists groups in errors.
pub fn format_groups(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A DNS label: 1–63 of `a-z0-9-`, starting and ending with a letter or digit. Group names end
/// up in `<group>.process.<app>.internal`; a group name that is not one still works (see
/// [`is_group_name`]) but draws a warning.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A name Aloft can run a process group under: 1–63 ASCII letters, digits, `-` or `_`, the rule
/// the agent applies at deploy and scale. flyctl checks nothing; Aloft needs the name to be one
/// DNS label (`<group>.process.<app>.internal`; its resolver takes `_` and compares case
/// insensitively) and a safe word in machine metadata and logs.
pub fn is_group_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Web_1` → `web-1`: the nearest DNS label, for hints.
fn nearest_dns_label(name: &str) -> Option<String> {
    let fixed: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_string();
    is_dns_label(&fixed).then_some(fixed)
}

pub(crate) fn validate(c: &AppConfig, spans: &Spans, sink: &mut Sink) {
    let groups = c.process_names();
    let listed = format_groups(&groups);

    for (name, span) in &spans.groups {
        if RESERVED_GROUPS.contains(&name.as_str()) || name.starts_with("fly_app_") {
            sink.error(
                span,
                format!("process group name '{name}' is reserved for the platform's own machines"),
                Some("pick another name, e.g. 'release' or 'console'".into()),
            );
        } else if !is_group_name(name) {
            sink.error(
                span,
                format!(
                    "process group name '{name}' cannot be used with Aloft (flyctl does not check \
                     group names, but Aloft's agent takes 1-63 letters, digits, '-' or '_')"
                ),
                Some(format!(
                    "rename the group; it becomes a DNS label (<group>.process.<app>.internal){}",
                    nearest_dns_label(name)
                        .map(|f| format!(", e.g. '{f}'"))
                        .unwrap_or_default()
                )),
            );
        } else if !is_dns_label(name) {
            sink.warn(
                span,
                format!(
                    "process group name '{name}' is not a lowercase DNS hostname label; \
                     '{name}.process.<app>.internal' resolves in Aloft, but some clients refuse \
                     names with '_' or capitals"
                ),
                Some(format!(
                    "prefer lowercase letters, digits and '-'{}",
                    nearest_dns_label(name)
                        .map(|f| format!(", e.g. '{f}'"))
                        .unwrap_or_default()
                )),
            );
        }
    }

    for r in &spans.refs {
        if !groups.contains(&r.name) {
            let hint = if c.processes.is_empty() {
                format!(
                    "without [processes] the only group is 'app'; define [processes] with a '{}' entry, or use 'app'",
                    r.name
                )
            } else {
                format!("defined groups are {listed}")
            };
            let message = format!(
                "{}: `processes` names undefined process group '{}'",
                r.section, r.name
            );
            match r.undefined {
                Undefined::Refused => sink.error(&r.span, message, Some(hint)),
                // flyctl takes it; the entry simply reaches no machine. Said, not silent.
                Undefined::Ignored => sink.warn(
                    &r.span,
                    format!("{message}, so the entry applies to no machine for that name"),
                    Some(hint),
                ),
            }
        }
    }

    // Services must say which groups they serve once there is a choice. flyctl demands it as
    // soon as [processes] exists; with a single group the default group *is* that group, so
    // there is nothing ambiguous and real single-group files omit it (we accept them).
    if c.processes.len() > 1 {
        let n = c.processes.len();
        let msg = |name: &str| {
            format!("{name} has no `processes`, but the app has {n} process group(s) {listed}")
        };
        let hint = Some(format!(
            "add e.g. `processes = ['{}']`",
            c.default_process_name()
        ));
        if let Some(h) = &c.http_service {
            if h.processes.is_empty() {
                sink.error(&spans.http_service, msg("[http_service]"), hint.clone());
            }
        }
        for (i, s) in c.services.iter().enumerate() {
            if s.processes.is_empty() {
                sink.error(
                    &spans.services[i],
                    msg(&format!("[[services]] #{}", i + 1)),
                    hint.clone(),
                );
            }
        }
    }

    // At most one mount per group (flyctl checks this only with --process-groups).
    let mut mounts_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in c.mounts.iter().enumerate() {
        for g in c.groups_of(&m.processes) {
            if !groups.contains(&g) {
                continue;
            }
            if let Some(first) = mounts_of.get(&g) {
                // flyctl takes this (it refuses it only under `deploy --process-groups`) and
                // mounts the first; Aloft does the same, aloud.
                sink.warn(
                    &spans.mounts[i],
                    format!(
                        "group '{g}' has more than one [[mounts]] section (#{} and #{}); its machines \
                         get only #{} (a machine takes one volume), #{} is ignored for it",
                        first + 1,
                        i + 1,
                        first + 1,
                        i + 1
                    ),
                    Some("give each mount its own `processes`, or remove one".into()),
                );
            } else {
                mounts_of.insert(g, i);
            }
        }
        if m.processes.is_empty() && groups.len() > 1 {
            sink.warn(
                &spans.mounts[i],
                format!(
                    "[[mounts]] #{} has no `processes`, so it applies only to the default group '{}'",
                    i + 1,
                    c.default_process_name()
                ),
                Some("list the groups that need the volume: `processes = [..]`".into()),
            );
        }
    }
    // Both create extra machines of a group, which a volume cannot follow (flyctl refuses too).
    if let Some(strategy @ ("canary" | "bluegreen")) =
        c.deploy.as_ref().and_then(|d| d.strategy.as_deref())
    {
        if !c.mounts.is_empty() {
            sink.error(
                &spans.deploy_strategy,
                format!("the {strategy} strategy cannot be used with [[mounts]]"),
                Some("use \"rolling\" (the default) or \"immediate\"".into()),
            );
        }
    }

    // Top-level checks without a port take the group's [http_service] port.
    for (name, check) in &c.checks {
        if check.port.is_some() {
            continue;
        }
        for g in c.groups_of(&check.processes) {
            let has_http = c
                .http_service
                .as_ref()
                .is_some_and(|h| c.applies_to(&h.processes, &g));
            if groups.contains(&g) && !has_http {
                sink.warn(
                    &spans.checks.get(name).cloned().flatten(),
                    format!("check '{name}' for process group '{g}' has no port and the group has no [http_service]"),
                    Some("set `port = <port>` in the check; it cannot run without one".into()),
                );
            }
        }
    }

    port_overlaps(c, spans, sink);
}

/// Two services of different groups on one external port: the proxy balances across both.
fn port_overlaps(c: &AppConfig, spans: &Spans, sink: &mut Sink) {
    struct Exposed {
        name: String,
        groups: Vec<String>,
        ports: Vec<(std::ops::RangeInclusive<u16>, Span)>,
    }
    let mut all = vec![];
    if let Some(h) = &c.http_service {
        all.push(Exposed {
            name: "[http_service]".into(),
            groups: c.groups_of(&h.processes),
            ports: vec![
                (80..=80, spans.http_service.clone()),
                (443..=443, spans.http_service.clone()),
            ],
        });
    }
    for (i, s) in c.services.iter().enumerate() {
        let ports = s
            .ports
            .iter()
            .zip(spans.service_ports.get(i).into_iter().flatten())
            .map(|(p, span)| {
                let r = match p.port {
                    Some(p) => p..=p,
                    None => p.start_port.unwrap_or(1)..=p.end_port.unwrap_or(u16::MAX),
                };
                (r, span.clone())
            })
            .collect();
        all.push(Exposed {
            name: format!("[[services]] #{}", i + 1),
            groups: c.groups_of(&s.processes),
            ports,
        });
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let defined = |g: &Vec<String>| -> Vec<String> {
                g.iter()
                    .filter(|n| c.process_names().contains(n))
                    .cloned()
                    .collect()
            };
            let mut ga = defined(&a.groups);
            let mut gb = defined(&b.groups);
            if ga.is_empty() || gb.is_empty() {
                continue; // undefined groups are reported on their own
            }
            ga.sort();
            gb.sort();
            if ga == gb {
                continue;
            }
            'pair: for (ra, _) in &a.ports {
                for (rb, span_b) in &b.ports {
                    if ra.start() <= rb.end() && rb.start() <= ra.end() {
                        let port = (*ra.start()).max(*rb.start());
                        sink.warn(
                            span_b,
                            format!(
                                "{} (groups {}) and {} (groups {}) both expose port {port}; the proxy will \
                                 balance connections across both groups",
                                a.name,
                                format_groups(&ga),
                                b.name,
                                format_groups(&gb)
                            ),
                            Some("give each group its own external port unless they serve the same thing".into()),
                        );
                        break 'pair;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_the_agent_and_dns_labels_are_the_stricter_subset() {
        for ok in ["web", "Web_1", "sidekiq_worker", "-x", &"a".repeat(63)] {
            assert!(is_group_name(ok), "{ok}");
        }
        for bad in ["", "web.1", "a b", "wéb", &"a".repeat(64)] {
            assert!(!is_group_name(bad), "{bad}");
        }
        assert!(is_dns_label("web-1") && !is_dns_label("Web_1") && !is_dns_label("-x"));
        assert_eq!(nearest_dns_label("Web_1").as_deref(), Some("web-1"));
        assert_eq!(nearest_dns_label("__"), None);
    }
}
