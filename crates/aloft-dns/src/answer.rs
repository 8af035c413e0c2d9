//! What the private network's names mean: answers for `.internal` and `.flycast` names from a
//! [`DnsTable`] as seen from a [`View`]. Pure: no IO, no wire format.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use hickory_proto::rr::RecordType;

use crate::names::{self, NameForm, Natural};
use crate::table::{AppEntry, DnsMachine, DnsTable};

/// Time to live of every answer, negative ones included (seconds). Short, so that a machine
/// that starts or stops is seen by resolvers that cache within seconds.
pub const TTL: u32 = 5;

/// Whose apps a query sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Every organization's apps: the host, or any source that is no machine's address.
    All,
    /// One organization's apps (no asker region: `top<N>.nearest` starts from any region).
    Org(String),
    /// What a query from this address sees: a machine's address (IPv6 or IPv4) gives its
    /// organization and region; the host's (loopback, or [`DnsTable::with_host_addresses`])
    /// gives [`View::All`]; any other address sees no app.
    Source(IpAddr),
}

/// The result of [`DnsTable::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Status,
    /// Empty for `NxDomain`, `NotOurs`, and for names that exist but have no record of the
    /// asked type (e.g. `A` of `<app>.internal`: the private network is IPv6 only).
    pub records: Vec<AnswerRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The name exists (it may still have no record of the asked type).
    NoError,
    /// No such name in `.internal`/`.flycast`, or an app of another organization.
    NxDomain,
    /// Not a private-network name: the server forwards such queries to the upstream resolvers.
    NotOurs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRecord {
    /// The name asked, lower-case, with the trailing dot.
    pub name: String,
    pub ttl: u32,
    pub data: RecordData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    Aaaa(Ipv6Addr),
    /// One logical text; on the wire it is split into strings of at most 255 bytes, which
    /// clients concatenate.
    Txt(String),
}

impl fmt::Display for AnswerRecord {
    /// Zone-file style, as `dig` prints it: `web.internal. 5 IN AAAA fdaa::1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.data {
            RecordData::Aaaa(ip) => write!(f, "{} {} IN AAAA {ip}", self.name, self.ttl),
            RecordData::Txt(text) => write!(f, "{} {} IN TXT {text:?}", self.name, self.ttl),
        }
    }
}

impl DnsTable {
    /// The answer to `name` (any case, trailing dot optional) of type `rtype` as `view` sees
    /// it: the same answer the server gives a query from that view.
    pub fn lookup(&self, view: &View, name: &str, rtype: RecordType) -> Answer {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = lower.split('.').collect();
        let outcome = if labels.iter().any(|label| label.is_empty()) {
            Outcome::NotOurs
        } else {
            resolve(self, &Asker::of_view(self, view), &labels, rtype)
        };
        let records = |data: Vec<RecordData>| {
            data.into_iter()
                .map(|data| AnswerRecord {
                    name: format!("{lower}."),
                    ttl: TTL,
                    data,
                })
                .collect()
        };
        match outcome {
            Outcome::NotOurs => Answer {
                status: Status::NotOurs,
                records: Vec::new(),
            },
            Outcome::NxDomain => Answer {
                status: Status::NxDomain,
                records: Vec::new(),
            },
            Outcome::Records(data) => Answer {
                status: Status::NoError,
                records: records(data),
            },
        }
    }
}

/// The organization of a source that is neither a machine nor the host: no app has it (an
/// app's org is a non-empty slug).
const NOBODY: &str = "";

/// Who asks: the organization whose apps are visible (`None`: all) and the asker's region.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asker<'a> {
    org: Option<&'a str>,
    region: Option<&'a str>,
}

impl<'a> Asker<'a> {
    /// A machine's address sees its organization; the host (loopback, or an address the table
    /// names as the host's) sees all; any other source sees nothing: a container that sends
    /// from an address no machine holds (it keeps `CAP_NET_RAW`) must not get the host's view.
    pub(crate) fn of_source(table: &'a DnsTable, source: IpAddr) -> Self {
        match table.machine_at(source) {
            Some(machine) => Asker {
                org: Some(&machine.org),
                region: Some(&machine.region),
            },
            None if source.to_canonical().is_loopback() || table.is_host(source) => {
                Asker::default()
            }
            None => Asker {
                org: Some(NOBODY),
                region: None,
            },
        }
    }

    fn of_view(table: &'a DnsTable, view: &'a View) -> Self {
        match view {
            View::All => Asker::default(),
            View::Org(org) => Asker {
                org: Some(org),
                region: None,
            },
            View::Source(ip) => Asker::of_source(table, *ip),
        }
    }

    fn sees(&self, org: &str) -> bool {
        self.org.is_none_or(|mine| mine == org)
    }
}

/// What a name means for one asker; `Records(vec![])` is "the name exists, no such record".
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    NotOurs,
    NxDomain,
    Records(Vec<RecordData>),
}

/// `labels`: lower-case, leftmost first, no root label.
pub(crate) fn resolve(
    table: &DnsTable,
    asker: &Asker<'_>,
    labels: &[&str],
    rtype: RecordType,
) -> Outcome {
    let Some(form) = names::parse(labels) else {
        return Outcome::NotOurs;
    };
    let wanted = match form.natural() {
        Natural::Aaaa => matches!(rtype, RecordType::AAAA | RecordType::ANY),
        Natural::Txt => matches!(rtype, RecordType::TXT | RecordType::ANY),
        Natural::Nothing => false,
    };
    match form {
        NameForm::NoSuchName => Outcome::NxDomain,
        NameForm::Apex => Outcome::Records(Vec::new()),
        NameForm::Apps => {
            let mut apps: Vec<&str> = table
                .apps()
                .filter(|app| asker.sees(&app.org))
                .map(|app| app.name.as_str())
                .collect();
            apps.sort_unstable();
            Outcome::Records(txt(wanted, apps.join(",")))
        }
        NameForm::Instances => {
            let entries: Vec<String> = table
                .machines()
                .iter()
                .filter(|m| m.started && asker.sees(&m.org))
                .map(|m| {
                    format!(
                        "instance={},app={},ip={},region={}",
                        m.id, m.app, m.ip6, m.region
                    )
                })
                .collect();
            Outcome::Records(txt(wanted, entries.join(";")))
        }
        NameForm::App(app)
        | NameForm::Region { app, .. }
        | NameForm::Process { app, .. }
        | NameForm::Vm { app, .. }
        | NameForm::Nearest { app, .. }
        | NameForm::Vms(app)
        | NameForm::Regions(app)
        | NameForm::Flycast(app) => {
            let Some(entry) = table.app(app).filter(|entry| asker.sees(&entry.org)) else {
                return Outcome::NxDomain;
            };
            of_app(table, asker, entry, &form, wanted)
        }
    }
}

/// The names of one app that `asker` may see.
fn of_app(
    table: &DnsTable,
    asker: &Asker<'_>,
    app: &AppEntry,
    form: &NameForm<'_>,
    wanted: bool,
) -> Outcome {
    let started = || {
        app.machines
            .iter()
            .map(|&i| table.machine(i))
            .filter(|m| m.started)
    };
    let addresses = |machines: &mut dyn Iterator<Item = &DnsMachine>| -> Vec<RecordData> {
        if wanted {
            machines.map(|m| RecordData::Aaaa(m.ip6)).collect()
        } else {
            Vec::new()
        }
    };
    let records = match form {
        NameForm::App(_) => addresses(&mut started()),
        NameForm::Region { region, .. } => {
            addresses(&mut started().filter(|m| m.region.eq_ignore_ascii_case(region)))
        }
        NameForm::Process { group, .. } => {
            addresses(&mut started().filter(|m| m.group.eq_ignore_ascii_case(group)))
        }
        NameForm::Vm { id, .. } => {
            // Any state: the address is the machine's from creation to destruction.
            let Some(machine) = app
                .machines
                .iter()
                .map(|&i| table.machine(i))
                .find(|m| m.id.eq_ignore_ascii_case(id))
            else {
                return Outcome::NxDomain;
            };
            addresses(&mut std::iter::once(machine))
        }
        NameForm::Nearest { n, .. } => {
            let here = |m: &&DnsMachine| asker.region.is_some_and(|r| m.region == r);
            let mut nearest = started().filter(here).chain(started().filter(|m| !here(m)));
            addresses(&mut nearest.by_ref().take(*n))
        }
        NameForm::Vms(_) => {
            let entries: Vec<String> = started()
                .map(|m| format!("{} {}", m.id, m.region))
                .collect();
            txt(wanted, entries.join(","))
        }
        NameForm::Regions(_) => {
            let regions: Vec<&str> = table.started_regions(app).into_iter().collect();
            txt(wanted, regions.join(","))
        }
        NameForm::Flycast(_) if wanted => {
            app.services.iter().copied().map(RecordData::Aaaa).collect()
        }
        _ => Vec::new(),
    };
    Outcome::Records(records)
}

/// One TXT record, or none when the text is empty or the type was not asked for.
fn txt(wanted: bool, text: String) -> Vec<RecordData> {
    if wanted && !text.is_empty() {
        vec![RecordData::Txt(text)]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{DnsMachine, DnsService};
    use std::net::Ipv4Addr;

    fn machine(id: &str, app: &str, org: &str, group: &str, region: &str, n: u16) -> DnsMachine {
        DnsMachine {
            id: id.into(),
            app: app.into(),
            org: org.into(),
            group: group.into(),
            region: region.into(),
            started: true,
            ip6: Ipv6Addr::new(0xfdaa, 0, 0, 1, n, 0, 0, 1),
            ip4: Some(Ipv4Addr::new(10, 0, 0, n as u8)),
        }
    }

    fn table() -> DnsTable {
        let mut stopped = machine("m4", "web", "acme", "worker", "ams", 4);
        stopped.started = false;
        DnsTable::new(
            vec![
                machine("m3", "web", "acme", "worker", "fra", 3),
                machine("m1", "web", "acme", "app", "ams", 1),
                machine("m2", "web", "acme", "worker", "ams", 2),
                stopped,
                machine("o1", "other", "globex", "app", "fra", 9),
            ],
            vec![DnsService {
                app: "web".into(),
                org: "acme".into(),
                ip6: "fdaa:0:0:1:1:f::1".parse().unwrap(),
            }],
        )
    }

    fn ip(n: u16) -> RecordData {
        RecordData::Aaaa(Ipv6Addr::new(0xfdaa, 0, 0, 1, n, 0, 0, 1))
    }

    fn data(view: &View, name: &str, rtype: RecordType) -> Vec<RecordData> {
        let answer = table().lookup(view, name, rtype);
        assert_eq!(answer.status, Status::NoError, "{name}");
        answer.records.into_iter().map(|r| r.data).collect()
    }

    fn text(view: &View, name: &str) -> String {
        match data(view, name, RecordType::TXT).as_slice() {
            [RecordData::Txt(text)] => text.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn address_names_answer_started_machines_in_id_order() {
        let all = View::All;
        let aaaa = RecordType::AAAA;
        assert_eq!(data(&all, "web.internal", aaaa), vec![ip(1), ip(2), ip(3)]);
        assert_eq!(data(&all, "ams.web.internal", aaaa), vec![ip(1), ip(2)]);
        assert_eq!(
            data(&all, "worker.process.web.internal", aaaa),
            vec![ip(2), ip(3)]
        );
        assert_eq!(
            data(&all, "m4.vm.web.internal", aaaa),
            vec![ip(4)],
            "stopped too"
        );
        assert_eq!(data(&all, "WEB.Internal.", aaaa), vec![ip(1), ip(2), ip(3)]);
        assert_eq!(
            data(&all, "web.flycast", aaaa),
            vec![RecordData::Aaaa("fdaa:0:0:1:1:f::1".parse().unwrap())]
        );
        assert!(data(&all, "lhr.web.internal", aaaa).is_empty());
        assert!(data(&all, "web.internal", RecordType::A).is_empty());
    }

    #[test]
    fn nearest_puts_the_askers_region_first() {
        let aaaa = RecordType::AAAA;
        let from_fra = View::Source(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(
            data(&from_fra, "top1.nearest.of.web.internal", aaaa),
            vec![ip(3)]
        );
        assert_eq!(
            data(&from_fra, "top5.nearest.of.web.internal", aaaa),
            vec![ip(3), ip(1), ip(2)]
        );
        assert_eq!(
            data(&View::All, "top2.nearest.of.web.internal", aaaa),
            vec![ip(1), ip(2)]
        );
    }

    #[test]
    fn txt_names_have_fly_formats() {
        let all = View::All;
        assert_eq!(text(&all, "vms.web.internal"), "m1 ams,m2 ams,m3 fra");
        assert_eq!(text(&all, "regions.web.internal"), "ams,fra");
        assert_eq!(text(&all, "_apps.internal"), "other,web");
        assert_eq!(
            text(&View::Org("globex".into()), "_instances.internal"),
            "instance=o1,app=other,ip=fdaa::1:9:0:0:1,region=fra"
        );
    }

    #[test]
    fn views_hide_other_organizations() {
        let acme = View::Source(IpAddr::V6(Ipv6Addr::new(0xfdaa, 0, 0, 1, 1, 0, 0, 1)));
        let t = table();
        assert_eq!(
            t.lookup(&acme, "other.internal", RecordType::AAAA).status,
            Status::NxDomain
        );
        assert_eq!(text(&acme, "_apps.internal"), "web");
        assert_eq!(
            t.lookup(&View::Org("globex".into()), "web.flycast", RecordType::AAAA)
                .status,
            Status::NxDomain
        );
        let host = View::Source("127.0.0.1".parse().unwrap());
        assert_eq!(text(&host, "_apps.internal"), "other,web");
    }

    #[test]
    fn sources_neither_machine_nor_host_see_no_app() {
        let stranger: IpAddr = "fdaa::1:1:0:0:99".parse().unwrap();
        let t = table();
        for name in ["web.internal", "other.internal"] {
            assert_eq!(
                t.lookup(&View::Source(stranger), name, RecordType::AAAA)
                    .status,
                Status::NxDomain,
                "{name}"
            );
        }
        let gateway: IpAddr = "fdaa::1".parse().unwrap();
        assert_eq!(
            t.lookup(&View::Source(gateway), "web.internal", RecordType::AAAA)
                .status,
            Status::NxDomain,
            "an unnamed host address is a stranger"
        );
        let t = t.with_host_addresses(vec![gateway]);
        assert_eq!(
            t.lookup(&View::Source(gateway), "web.internal", RecordType::AAAA)
                .status,
            Status::NoError
        );
    }

    #[test]
    fn unknown_names_are_nxdomain_and_other_zones_not_ours() {
        let t = table();
        for name in ["nope.internal", "m9.vm.web.internal", "x.y.z.web.internal"] {
            assert_eq!(
                t.lookup(&View::All, name, RecordType::AAAA).status,
                Status::NxDomain,
                "{name}"
            );
        }
        assert_eq!(
            t.lookup(&View::All, "example.com", RecordType::A).status,
            Status::NotOurs
        );
    }

    #[test]
    fn records_print_like_dig() {
        let answer = table().lookup(&View::All, "m1.vm.web.internal", RecordType::AAAA);
        assert_eq!(
            answer.records[0].to_string(),
            "m1.vm.web.internal. 5 IN AAAA fdaa::1:1:0:0:1"
        );
    }
}
