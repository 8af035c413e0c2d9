//! Which of Fly's private-network names a query name is: a pure parse of lower-case labels
//! (leftmost first, no trailing root label) into a [`NameForm`].

/// The authoritative zones: `internal` (machines) and `flycast` (private service addresses).
pub(crate) const INTERNAL: &str = "internal";
pub(crate) const FLYCAST: &str = "flycast";

/// A name inside one of our zones. Names of our zones that match no form are
/// [`NameForm::NoSuchName`] (NXDOMAIN); names outside them are not ours (`parse` gives `None`)
/// and are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameForm<'a> {
    /// `internal` or `flycast` itself.
    Apex,
    /// TXT `_apps.internal`.
    Apps,
    /// TXT `_instances.internal`.
    Instances,
    /// `<app>.internal`.
    App(&'a str),
    /// `<region>.<app>.internal`.
    Region { app: &'a str, region: &'a str },
    /// `<group>.process.<app>.internal`.
    Process { app: &'a str, group: &'a str },
    /// `<id>.vm.<app>.internal`.
    Vm { app: &'a str, id: &'a str },
    /// `top<n>.nearest.of.<app>.internal`.
    Nearest { app: &'a str, n: usize },
    /// TXT `vms.<app>.internal`.
    Vms(&'a str),
    /// TXT `regions.<app>.internal`.
    Regions(&'a str),
    /// `<app>.flycast`.
    Flycast(&'a str),
    /// In our zones, but no name of ours.
    NoSuchName,
}

/// The record type a name form answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Natural {
    Aaaa,
    Txt,
    Nothing,
}

impl NameForm<'_> {
    pub(crate) fn natural(&self) -> Natural {
        match self {
            NameForm::Apps | NameForm::Instances | NameForm::Vms(_) | NameForm::Regions(_) => {
                Natural::Txt
            }
            NameForm::App(_)
            | NameForm::Region { .. }
            | NameForm::Process { .. }
            | NameForm::Vm { .. }
            | NameForm::Nearest { .. }
            | NameForm::Flycast(_) => Natural::Aaaa,
            NameForm::Apex | NameForm::NoSuchName => Natural::Nothing,
        }
    }
}

/// `labels` are lower-case, leftmost first, without the root. `None`: not one of our zones.
pub(crate) fn parse<'a>(labels: &[&'a str]) -> Option<NameForm<'a>> {
    let (&zone, rest) = labels.split_last()?;
    if zone == FLYCAST {
        return Some(match rest {
            [] => NameForm::Apex,
            [app] => NameForm::Flycast(app),
            _ => NameForm::NoSuchName,
        });
    }
    if zone != INTERNAL {
        return None;
    }
    Some(match rest {
        [] => NameForm::Apex,
        ["_apps"] => NameForm::Apps,
        ["_instances"] => NameForm::Instances,
        [app] => NameForm::App(app),
        ["vms", app] => NameForm::Vms(app),
        ["regions", app] => NameForm::Regions(app),
        [region, app] => NameForm::Region { app, region },
        [group, "process", app] => NameForm::Process { app, group },
        [id, "vm", app] => NameForm::Vm { app, id },
        [top, "nearest", "of", app] => match nearest_count(top) {
            Some(n) => NameForm::Nearest { app, n },
            None => NameForm::NoSuchName,
        },
        _ => NameForm::NoSuchName,
    })
}

/// `top3` → 3. Zero, signs and leading `+` are no count.
fn nearest_count(label: &str) -> Option<usize> {
    let digits = label.strip_prefix("top")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(name: &str) -> Option<NameForm<'_>> {
        let labels: Vec<&str> = name.split('.').collect();
        parse(&labels)
    }

    #[test]
    fn every_form_is_recognised() {
        assert_eq!(form("internal"), Some(NameForm::Apex));
        assert_eq!(form("_apps.internal"), Some(NameForm::Apps));
        assert_eq!(form("_instances.internal"), Some(NameForm::Instances));
        assert_eq!(form("web.internal"), Some(NameForm::App("web")));
        assert_eq!(form("vms.web.internal"), Some(NameForm::Vms("web")));
        assert_eq!(form("regions.web.internal"), Some(NameForm::Regions("web")));
        assert_eq!(
            form("ams.web.internal"),
            Some(NameForm::Region {
                app: "web",
                region: "ams"
            })
        );
        assert_eq!(
            form("worker.process.web.internal"),
            Some(NameForm::Process {
                app: "web",
                group: "worker"
            })
        );
        assert_eq!(
            form("abc123.vm.web.internal"),
            Some(NameForm::Vm {
                app: "web",
                id: "abc123"
            })
        );
        assert_eq!(
            form("top2.nearest.of.web.internal"),
            Some(NameForm::Nearest { app: "web", n: 2 })
        );
        assert_eq!(form("web.flycast"), Some(NameForm::Flycast("web")));
        assert_eq!(form("flycast"), Some(NameForm::Apex));
    }

    #[test]
    fn unknown_shapes_in_our_zones_are_no_such_name_and_others_are_not_ours() {
        for name in [
            "a.b.c.web.internal",
            "top0.nearest.of.web.internal",
            "top.nearest.of.web.internal",
            "top-1.nearest.of.web.internal",
            "topx.nearest.of.web.internal",
            "a.b.flycast",
        ] {
            assert_eq!(form(name), Some(NameForm::NoSuchName), "{name}");
        }
        assert_eq!(form("example.com"), None);
        assert_eq!(form("internal.example.com"), None);
    }
}
