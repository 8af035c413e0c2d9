//! Standby machines end to end (flyctl-behaviour §3.3 step 6, §3.4, §4.1, §5.2, §6.1; issue 14
//! item 5) with the real CLI: deploy gives a group without services one machine and a stopped
//! standby watching it; redeploys update it and leave it stopped; a group that gains services
//! turns it into an ordinary machine; `scale count` counts it; `machine clone --standby-for`;
//! `status` marks it; `--ha=false` makes none.

use serde_json::Value;

use super::{group, World, WEB_SERVICE};

fn by_group<'a>(ms: &'a [Value], g: &str) -> Vec<&'a Value> {
    ms.iter().filter(|m| group(m) == g).collect()
}

fn standbys(m: &Value) -> Vec<String> {
    m["config"]["standbys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_group_without_services_gets_a_standby_that_stays_stopped() {
    let w = World::new("standby");
    w.config(&[("web", "web-server"), ("cron", "cron-job")], WEB_SERVICE);
    let out = w.deploy(&[]);
    assert!(
        out.contains(" * create 1 \"cron\" machine and 1 standby machine for it"),
        "{out}"
    );
    let ms = w.machines();
    assert_eq!(
        by_group(&ms, "web").len(),
        2,
        "web has services: 2 machines"
    );
    let cron = by_group(&ms, "cron");
    assert_eq!(cron.len(), 2, "1 cron machine and its standby");
    let (standby, first): (Vec<&Value>, Vec<&Value>) =
        cron.iter().partition(|m| !standbys(m).is_empty());
    let (standby, first) = (standby[0], first[0]);
    let first_id = first["id"].as_str().unwrap();
    let standby_id = standby["id"].as_str().unwrap().to_string();
    assert_eq!(standbys(standby), [first_id]);
    assert_eq!(standby["config"]["env"]["FLY_STANDBY_FOR"], first_id);
    assert_ne!(standby["state"], "started", "{standby}");
    assert_eq!(first["state"], "started");
    assert!(
        !w.state_dir().join(&standby_id).exists(),
        "the standby's command never ran"
    );

    let status = w.ok(&["status"]);
    assert!(
        status.contains("cron†") && status.contains(&standby_id),
        "{status}"
    );
    assert!(
        status.contains(
            "† Standby machine (it will take over only in case of host hardware failure)"
        ),
        "{status}"
    );

    // A redeploy updates the standby and leaves it stopped, still watching.
    w.config(
        &[("web", "web-server"), ("cron", "cron-job-2")],
        WEB_SERVICE,
    );
    w.deploy(&[]);
    let ms = w.machines();
    let s = ms.iter().find(|m| m["id"] == standby_id.as_str()).unwrap();
    assert_eq!(s["config"]["metadata"]["fly_release_version"], "2");
    assert_ne!(s["state"], "started", "{s}");
    assert_eq!(standbys(s), [first_id]);
    assert_eq!(s["config"]["env"]["FLY_STANDBY_FOR"], first_id);
    assert_eq!(by_group(&ms, "cron").len(), 2, "no second standby");

    // `scale count` counts the standby: cron=3 adds one ordinary machine.
    w.ok(&["scale", "count", "cron=3", "--yes"]);
    let ms = w.machines();
    let cron = by_group(&ms, "cron");
    assert_eq!(cron.len(), 3);
    assert_eq!(
        cron.iter().filter(|m| !standbys(m).is_empty()).count(),
        1,
        "the new machine is not a standby"
    );

    // A clone of the first machine made a standby of it by hand.
    let out = w.ok(&["machine", "clone", first_id, "--standby-for", "source"]);
    assert!(out.contains("Cloned"), "{out}");
    let ms = w.machines();
    let clones: Vec<&Value> = ms
        .iter()
        .filter(|m| standbys(m) == [first_id] && m["id"] != standby_id.as_str())
        .collect();
    assert_eq!(clones.len(), 1, "{ms:?}");
    assert_ne!(clones[0]["state"], "started");

    // The group gains a service: its standbys become ordinary machines.
    let cron_service =
        "[[services]]\ninternal_port = 9999\nprotocol = \"tcp\"\nprocesses = [\"cron\"]\n";
    w.config(
        &[("web", "web-server"), ("cron", "cron-job-2")],
        &format!("{WEB_SERVICE}\n{cron_service}"),
    );
    w.deploy(&[]);
    for m in by_group(&w.machines(), "cron") {
        assert!(standbys(m).is_empty(), "{m}");
        assert!(m["config"]["env"].get("FLY_STANDBY_FOR").is_none(), "{m}");
    }
}

#[test]
fn ha_false_gives_no_standby() {
    let w = World::new("nostandby");
    w.config(&[("web", "web-server"), ("cron", "cron-job")], WEB_SERVICE);
    let out = w.deploy(&["--ha=false"]);
    assert!(!out.contains("standby"), "{out}");
    let ms = w.machines();
    assert_eq!(by_group(&ms, "web").len(), 1);
    assert_eq!(by_group(&ms, "cron").len(), 1);
    assert!(ms.iter().all(|m| standbys(m).is_empty()));
    let status = w.ok(&["status"]);
    assert!(!status.contains('†'), "{status}");
}
