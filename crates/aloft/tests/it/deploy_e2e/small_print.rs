//! flyctl's small print (issue 14, item 6), with the real CLI and a real agent: a bare
//! `scale count N` names its group when there are several; scale-down keeps regions even and
//! takes stopped machines first; `scale vm` warns when fly.toml's `[[vm]]` will undo it; `status`
//! says `deployed`; `machine status` shows event times as dates; a superseded release says
//! `superseded`; a destroyed machine's logs stay readable by its id; the agent's log file has no
//! colour codes; `aloft --help` names the agent's environment variables.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use aloft_testkit::agent::Launch;
use aloft_testkit::KillOnDrop;
use serde_json::Value;

use super::{api_get, common, count_map, group, World};
use common::{wait_for, AgentProc};

/// Region → number of the app's machines there.
fn regions(w: &World) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in w.machines() {
        *out.entry(m["region"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

/// Asserts that `text` contains each of `parts`.
fn assert_has_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} in:\n{text}");
    }
}

fn ids(w: &World) -> Vec<String> {
    w.machines()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_bare_scale_count_names_its_group_when_the_app_has_several() {
    let w = World::new("several");
    w.config(&[("web", "web")], "");
    w.deploy(&[]);
    // One group: a bare count is that group's.
    w.ok(&["scale", "count", "2", "--yes"]);
    assert_eq!(w.counts(), count_map(&[("web", 2)]));

    w.config(&[("web", "web"), ("worker", "worker")], "");
    w.deploy(&[]);
    let before = w.counts();
    let err = w.fails(&["scale", "count", "3", "--yes"]);
    assert_has_all(
        &err,
        &[
            "several process groups",
            "['web', 'worker']",
            "scale count N -g GROUP",
            "scale count web=N worker=N",
        ],
    );
    assert_eq!(w.counts(), before, "nothing changed");
    w.ok(&["scale", "count", "3", "-g", "worker", "--yes"]);
    assert_eq!(w.counts()["worker"], 3);
}

#[test]
fn scale_down_keeps_regions_even_and_takes_stopped_machines_first() {
    let w = World::new("spread");
    w.config(&[("web", "web")], "");
    w.deploy(&[]);
    w.ok(&["scale", "count", "web=4", "--region", "gru,bog", "--yes"]);
    // Machines of other regions are kept: gru 4, bog 2.
    w.ok(&["scale", "count", "web=4", "--region", "gru", "--yes"]);
    assert_eq!(regions(&w), count_map(&[("gru", 4), ("bog", 2)]));
    let stopped = w
        .machines()
        .iter()
        .find(|m| m["region"] == "bog")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .unwrap();
    w.stop(&stopped);

    // gru gives two (4 → 2); then, 2 and 2, bog's stopped machine goes before any running one;
    // then gru's; 1 and 1 is left.
    w.ok(&["scale", "count", "2", "--yes"]);
    assert_eq!(regions(&w), count_map(&[("gru", 1), ("bog", 1)]));
    assert!(
        !ids(&w).contains(&stopped),
        "the stopped machine went first"
    );
    assert!(w
        .machines()
        .iter()
        .all(|m| m["state"] == "started" && group(m) == "web"));
}

#[test]
fn scale_vm_warns_when_a_vm_section_of_fly_toml_will_undo_it() {
    let w = World::new("sizes");
    let vm = "[[vm]]\nsize = \"shared-cpu-1x\"\nprocesses = [\"web\"]\n";
    w.config(&[("web", "web"), ("worker", "worker")], vm);
    w.deploy(&[]);

    let text = w.ok(&["scale", "vm", "shared-cpu-2x", "-g", "web"]);
    assert_has_all(
        &text,
        &[
            "warning: fly.toml has a [[vm]] section for group 'web'",
            "machines now: size=shared-cpu-2x memory=512MB",
            "fly.toml: size=shared-cpu-1x memory=256MB",
            "The next `aloft deploy` sets the machines back",
        ],
    );
    let web = w
        .machines()
        .into_iter()
        .filter(|m| group(m) == "web")
        .collect::<Vec<Value>>();
    assert!(
        web.iter().all(|m| m["config"]["guest"]["memory_mb"] == 512),
        "applied, not refused: {web:?}"
    );
    // No [[vm]] for worker: the next deploy keeps what scale set, nothing to warn about.
    let text = w.ok(&["scale", "memory", "512", "-g", "worker"]);
    assert!(!text.contains("warning"), "{text}");
}

/// The `App` block's `Status = …` value of `aloft status`.
fn status_line(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        (words.len() == 3 && words[0] == "Status" && words[1] == "=").then(|| words[2].to_string())
    })
}

#[test]
fn status_says_deployed_once_a_release_completed() {
    let w = World::new("shown");
    let before = w.ok(&["status", "-a", "shown"]);
    assert_eq!(status_line(&before).as_deref(), Some("pending"), "{before}");
    assert_eq!(api_get(&w, "/v1/apps/shown")["status"], "pending");
    w.config(&[("web", "web")], "");
    w.deploy(&[]);
    let after = w.ok(&["status"]);
    assert_eq!(status_line(&after).as_deref(), Some("deployed"), "{after}");
    let json: Value = serde_json::from_str(&w.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["Status"], "deployed");
    assert_eq!(json["Deployed"], true);
    // The Machines API says so too, as Fly's does.
    assert_eq!(api_get(&w, "/v1/apps/shown")["status"], "deployed");
}

/// Whether `word` looks like `2026-01-02T03:04:05.678Z`.
fn is_rfc3339_millis(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && word.chars().filter(|c| c.is_ascii_digit()).count() == 17
}

#[test]
fn machine_status_shows_event_times_as_dates() {
    let w = World::new("events");
    w.config(&[("web", "web")], "");
    w.deploy(&[]);
    let id = ids(&w).remove(0);
    let json: Value = serde_json::from_str(&w.ok(&["machine", "status", &id, "--json"])).unwrap();
    let events = json["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{json}");
    let text = w.ok(&["machine", "status", &id]);
    for e in events {
        let ms = e["timestamp"].as_i64().unwrap().to_string();
        assert!(!text.contains(&ms), "raw epoch ms {ms} shown:\n{text}");
    }
    let dates = text
        .split_whitespace()
        .filter(|w| is_rfc3339_millis(w))
        .count();
    assert_eq!(dates, events.len(), "one date per event:\n{text}");
}

#[test]
fn a_superseded_release_says_superseded() {
    let w = World::new("twice");
    // One machine at a time: the release is still going when the next one comes.
    let deploy = "[deploy]\nmax_unavailable = 1\n";
    w.config(&[("web", "v1")], deploy);
    w.deploy(&[]);
    w.ok(&["scale", "count", "web=10", "--yes"]);
    w.config(&[("web", "v2")], deploy);
    let out = w.deploy(&["--detach"]);
    assert!(out.contains("Release v2 created"), "{out}");
    w.config(&[("web", "v3")], deploy);
    w.deploy(&[]);

    let releases: Vec<Value> = serde_json::from_str(&w.ok(&["releases", "--json"])).unwrap();
    let v = |n: u64| {
        releases
            .iter()
            .find(|r| r["version"] == n)
            .unwrap_or_else(|| panic!("v{n} in {releases:?}"))
    };
    assert_eq!(v(2)["status"], "superseded", "{releases:?}");
    assert_eq!(v(2)["error"], "a newer release took over");
    assert_eq!(v(3)["status"], "complete");
    let table = w.ok(&["releases"]);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("v2"))
        .unwrap_or_else(|| panic!("a v2 row in {table}"));
    assert!(row.contains("superseded"), "{row}");
    assert!(
        !row.contains("failed") && !row.contains("unhealthy"),
        "{row}"
    );
}

const TALK_SH: &str = "#!/bin/sh\necho \"said-by $FLY_MACHINE_ID\"\nexec sleep 100000\n";

#[test]
fn logs_of_a_destroyed_machine_stay_readable_by_its_id() {
    let w = World::new("gone");
    let appdir = w.tmp.path().join("app");
    std::fs::write(appdir.join("talk.sh"), TALK_SH).unwrap();
    w.config(&[("web", "x")], "");
    let toml = std::fs::read_to_string(appdir.join("fly.toml")).unwrap();
    std::fs::write(
        appdir.join("fly.toml"),
        toml.replace("sh run.sh x", "sh talk.sh"),
    )
    .unwrap();
    w.deploy(&[]);
    let id = ids(&w).remove(0);
    let said = format!("said-by {id}");
    let logs = |w: &World| w.ok(&["logs", "--no-tail", "--machine", &id]);
    wait_for(Duration::from_secs(30), "the machine's line", || {
        logs(&w).contains(&said).then_some(())
    });

    w.ok(&["machine", "destroy", &id, "--force"]);
    assert!(!ids(&w).contains(&id), "destroyed");
    let out = logs(&w);
    assert!(out.contains(&said), "{out}");
    // Following a machine that writes no more prints its lines and ends.
    let mut follow = KillOnDrop(
        w.command(&["logs", "--machine", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = wait_for(
        Duration::from_secs(30),
        "logs of a gone machine to end",
        || follow.try_wait().unwrap(),
    );
    assert!(status.success());
    // An id the agent has no lines of is still refused.
    let err = w.fails(&["logs", "--no-tail", "--machine", "0000000000nope"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn the_agents_log_file_has_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("agent.log");
    let _agent = AgentProc::launch(
        &tmp.path().join("data"),
        Launch {
            args: &["--no-proxy"],
            env: vec![("ALOFT_LOG", "info".into())],
            log: Some(log.clone()),
            ..Launch::default()
        },
    );
    let text = wait_for(
        Duration::from_secs(10),
        "the agent's first log line",
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("agent listening"))
        },
    );
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
}

#[test]
fn help_names_the_environment_of_the_agent() {
    let long = common::ok(&common::run_aloft(&["--help"], &[], None));
    assert_has_all(
        &long,
        &[
            "ALOFT_API_URL",
            "ALOFT_API_TOKEN",
            "ALOFT_CONTEXT",
            "ALOFT_APP",
        ],
    );
    let short = common::ok(&common::run_aloft(&["-h"], &[], None));
    assert_has_all(&short, &["ALOFT_API_URL", "ALOFT_API_TOKEN"]);
}
