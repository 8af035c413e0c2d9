//! Release commands and the `canary` and `bluegreen` strategies end to end (issue 13 items 1,
//! 2, 5): a real agent, process-runtime machines, the CLI's output, the release's events, and
//! for blue-green a bounded client hitting the app through the agent's proxy.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{api_get, common, group, release_events, World, WEB_SERVICE};
use common::{wait_for, AgentProc};

/// The release command: appends `<label> RELEASE_COMMAND FLY_PROCESS_GROUP <unix ns>` to
/// `$STATE_DIR/release.log`, prints a line, sleeps `$2` seconds, then appends `<label> end`.
const RELEASE_SH: &str = r#"#!/bin/sh
echo "$1 $RELEASE_COMMAND $FLY_PROCESS_GROUP $(date +%s%N)" >> "$STATE_DIR/release.log"
echo "migrating for $1"
sleep "${2:-0}"
echo "$1 end" >> "$STATE_DIR/release.log"
"#;

/// A group command that cannot run: it exits at once.
const BROKEN_SH: &str = "#!/bin/sh\necho \"broken $*\"\nexit 3\n";

/// A web server on `$PORT` (the service's internal port), recording its label.
const SERVER_SH: &str = "#!/bin/sh\necho \"$*\" > \"$STATE_DIR/$FLY_MACHINE_ID\"\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n";

fn write_scripts(w: &World) {
    let app = w.tmp.path().join("app");
    std::fs::write(app.join("release.sh"), RELEASE_SH).unwrap();
    std::fs::write(app.join("broken.sh"), BROKEN_SH).unwrap();
    std::fs::write(app.join("server.sh"), SERVER_SH).unwrap();
}

/// fly.toml with each group's full command (`extra` after `[processes]`).
fn config_cmds(w: &World, groups: &[(&str, &str)], extra: &str) {
    w.config(&[], "");
    let mut toml = std::fs::read_to_string(w.tmp.path().join("app/fly.toml")).unwrap();
    for (g, cmd) in groups {
        toml.push_str(&format!("{g} = \"{cmd}\"\n"));
    }
    toml.push('\n');
    toml.push_str(extra);
    std::fs::write(w.tmp.path().join("app/fly.toml"), toml).unwrap();
}

fn release_log(w: &World) -> Vec<String> {
    std::fs::read_to_string(w.state_dir().join("release.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// Machine id → instance id (its version): equal maps mean no machine changed.
fn versions(w: &World) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = w
        .machines()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["instance_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn release(w: &World, version: u64) -> Value {
    let rs: Vec<Value> =
        serde_json::from_str(&w.ok(&["releases", "-a", &w.app, "--json"])).unwrap();
    rs.into_iter().find(|r| r["version"] == version).unwrap()
}

/// A release command runs once per deploy, in a machine of the new release with
/// `RELEASE_COMMAND=1`, before any machine is updated; its output is in the deploy's; its
/// machine is destroyed.
#[test]
fn a_release_command_runs_once_before_any_machine_changes() {
    let w = World::new("relcmd");
    write_scripts(&w);
    let with_command = |label: &str| {
        format!("{WEB_SERVICE}\n[deploy]\nrelease_command = \"sh release.sh {label}\"\n")
    };
    w.config(&[("web", "v1")], &with_command("r1"));
    let out = w.deploy(&[]);
    assert!(out.contains("release_command | migrating for r1"), "{out}");
    assert!(out.contains("Release command succeeded"), "{out}");
    assert_eq!(release_log(&w).len(), 2, "{:?}", release_log(&w));

    w.config(&[("web", "v2")], &with_command("r2"));
    let out = w.deploy(&[]);
    assert!(out.contains("migrating for r2"), "{out}");
    let log = release_log(&w);
    let runs: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("r2 ") && !l.ends_with(" end"))
        .collect();
    assert_eq!(runs.len(), 1, "once per deploy: {log:?}");
    let words: Vec<&str> = runs[0].split(' ').collect();
    assert_eq!(words[1..3], ["1", "fly_app_release_command"], "{log:?}");
    let ran_at_ms: i64 = words[3].parse::<i64>().unwrap() / 1_000_000;

    // Before any machine changed: every machine's update event of this deploy is later.
    let ms = w.machines();
    assert_eq!(
        ms.len(),
        2,
        "only the web machines: the command's machine is gone"
    );
    assert!(ms.iter().all(|m| group(m) == "web"));
    for m in &ms {
        let full = api_get(
            &w,
            &format!("/v1/apps/relcmd/machines/{}", m["id"].as_str().unwrap()),
        );
        let updated = full["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "update")
            .map(|e| e["timestamp"].as_i64().unwrap())
            .max()
            .expect("the machine was updated");
        assert!(
            updated >= ran_at_ms,
            "update at {updated} before the command at {ran_at_ms}"
        );
    }
    let ev = release_events(&w, 2);
    let finished = ev
        .iter()
        .position(|e| e["type"] == "release_command_finished")
        .unwrap();
    let first_update = ev.iter().position(|e| e["type"] == "updating").unwrap();
    assert!(finished < first_update);
    assert_eq!(of_type(&ev, "release_command_started").len(), 1);
    // `--skip-release-command` runs none.
    w.config(&[("web", "v3")], &with_command("r3"));
    w.deploy(&["--skip-release-command"]);
    assert!(!release_log(&w).iter().any(|l| l.starts_with("r3")));
}

/// A release command that fails (exit 1) or does not exist fails the deploy with what it said,
/// and every machine stays on the old release.
#[test]
fn a_failing_or_missing_release_command_changes_no_machine() {
    let w = World::new("relfail");
    write_scripts(&w);
    w.config(&[("web", "v1")], WEB_SERVICE);
    w.deploy(&[]);
    let before = versions(&w);

    let failing =
        "[deploy]\nrelease_command = \"sh -c 'echo cannot migrate: table locked; exit 1'\"\n";
    w.config(&[("web", "v2")], &format!("{WEB_SERVICE}\n{failing}"));
    let out = w.aloft(&["deploy"]);
    let text = common::combined(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("release command failed - aborting deployment"),
        "{text}"
    );
    assert!(text.contains("exit code 1"), "{text}");
    assert!(
        text.contains("cannot migrate: table locked"),
        "the command's output: {text}"
    );
    assert_eq!(versions(&w), before, "no machine changed");
    let r = release(&w, 2);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["phase"], "release_command", "{r}");
    let table = w.ok(&["releases", "-a", "relfail"]);
    assert!(
        table.contains("PHASE") && table.contains("release_command"),
        "{table}"
    );

    let missing = "[deploy]\nrelease_command = \"no-such-migrate-tool --all\"\n";
    w.config(&[("web", "v3")], &format!("{WEB_SERVICE}\n{missing}"));
    let out = w.aloft(&["deploy"]);
    let text = common::combined(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("release command failed"), "{text}");
    assert!(
        text.contains("no-such-migrate-tool"),
        "names the command: {text}"
    );
    assert_eq!(versions(&w), before, "no machine changed");
    let labels = w.labels();
    assert!(labels.values().all(|l| l == "v1"), "{labels:?}");
}

/// kill -9 of the agent while a slow release command runs: after the restart the release
/// ends complete; the command ran exactly once more (the interrupted run started it and never
/// finished; the resumed run ran it to its end) and the release has exactly one recorded
/// outcome.
#[test]
fn kill_9_during_a_release_command_gives_one_outcome() {
    let mut w = World::new("relkill");
    write_scripts(&w);
    let cfg = "[deploy]\nrelease_command = \"sh release.sh slow 3\"\n";
    w.config(&[("web", "v1")], cfg);
    // --ha=false: no standby for this service-less group, the test counts machines.
    w.deploy(&["--detach", "--ha=false"]);
    wait_for(
        Duration::from_secs(30),
        "the release command to start",
        || {
            release_log(&w)
                .iter()
                .any(|l| l.starts_with("slow 1"))
                .then_some(())
        },
    );
    w.agent.kill9();
    w.agent = AgentProc::start_with(&w.tmp.path().join("data"), &["--no-proxy"], None);
    let r = wait_for(Duration::from_secs(60), "release v1 to finish", || {
        let out = w.aloft(&["releases", "-a", "relkill", "--json"]);
        let rs: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        let r = rs.into_iter().find(|r| r["version"] == 1)?;
        (r["status"] != "running" && r["status"] != "pending").then_some(r)
    });
    assert_eq!(r["status"], "complete", "{r}");
    let log = release_log(&w);
    let starts = log.iter().filter(|l| l.starts_with("slow 1")).count();
    let ends = log.iter().filter(|l| *l == "slow end").count();
    assert_eq!(
        (starts, ends),
        (2, 1),
        "started twice, ran to its end once: {log:?}"
    );
    let ev = release_events(&w, 1);
    assert_eq!(of_type(&ev, "release_command_finished").len(), 1, "{ev:?}");
    assert_eq!(of_type(&ev, "release_command_started").len(), 2, "{ev:?}");
    let ms = w.machines();
    assert_eq!(
        ms.len(),
        1,
        "web only; both command machines destroyed: {ms:?}"
    );
}

/// Canary with a broken new version: exactly one new machine per group, the deploy fails,
/// the old machines are untouched and the canaries are gone.
#[test]
fn a_broken_canary_fails_the_deploy_with_old_machines_untouched() {
    let w = World::new("canary");
    write_scripts(&w);
    let groups_v1 = [("web", "sh run.sh v1"), ("worker", "sh run.sh w1")];
    config_cmds(&w, &groups_v1, WEB_SERVICE);
    w.deploy(&[]);
    let before = versions(&w);
    assert_eq!(before.len(), 4, "web 2, worker 1 and its standby");

    let broken = [
        ("web", "sh broken.sh web"),
        ("worker", "sh broken.sh worker"),
    ];
    config_cmds(&w, &broken, WEB_SERVICE);
    let out = w.aloft(&["deploy", "--strategy", "canary"]);
    let text = common::combined(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("canary"), "{text}");
    assert_eq!(
        versions(&w),
        before,
        "old machines untouched, canaries destroyed"
    );
    let ev = release_events(&w, 2);
    let mut created: Vec<&str> = of_type(&ev, "canary_created")
        .iter()
        .map(|e| e["group"].as_str().unwrap())
        .collect();
    created.sort();
    assert_eq!(created, ["web", "worker"], "one canary per group: {ev:?}");
    assert!(of_type(&ev, "created").is_empty() && of_type(&ev, "updating").is_empty());
    assert_eq!(of_type(&ev, "canary_destroyed").len(), 2);

    // A healthy canary: then the groups roll.
    let groups_v2 = [("web", "sh run.sh v2"), ("worker", "sh run.sh w2")];
    config_cmds(&w, &groups_v2, WEB_SERVICE);
    let out = w.deploy(&["--strategy", "canary"]);
    assert!(
        out.contains("Canary") && out.contains("is healthy"),
        "{out}"
    );
    let labels = w.labels();
    let mut got: Vec<&str> = labels.values().map(String::as_str).collect();
    got.sort();
    assert_eq!(got, ["v2", "v2", "w2"]);
    assert_eq!(release(&w, 3)["spec"]["deploy"]["strategy"], "canary");
}

/// The proxy's local address of `port`.
fn proxy_listen(w: &World, port: u16) -> String {
    let proxy = api_get(w, "/v1/proxy");
    proxy
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("no listener for port {port}: {proxy}"))["listen"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One `GET /` with `Connection: close`; whether it was answered 200.
fn get_ok(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: bg.localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

/// A client hitting `addr` one request after another until dropped; counts answers.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: String) -> Load {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if get_ok(&addr) {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// (answered, failed) so far.
    fn counts(&self) -> (usize, usize) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const CHECKED_SERVICE: &str = r#"
[http_service]
internal_port = 8080
processes = ["web"]

[http_service.concurrency]
type = "requests"

[[http_service.checks]]
grace_period = "0s"
interval = "300ms"
timeout = "1s"
method = "GET"
path = "/"
"#;

/// Blue-green under steady load through the proxy: no request fails during the switch, the
/// greens replace the blues; a failing green leaves the blues serving and is destroyed.
#[test]
fn blue_green_switches_under_load_and_a_failing_green_leaves_blue_serving() {
    let w = World::with_agent(
        "bg",
        &[
            "--proxy-bind",
            "127.0.0.1",
            "--port-map",
            "80=0",
            "--port-map",
            "443=0",
        ],
    );
    write_scripts(&w);
    config_cmds(&w, &[("web", "sh server.sh v1")], CHECKED_SERVICE);
    w.deploy(&[]);
    w.ok(&["scale", "count", "web=3", "--yes"]);
    wait_for(Duration::from_secs(60), "3 healthy machines", || {
        let ms = w.machines();
        (ms.len() == 3 && ms.iter().all(|m| m["state"] == "started")).then_some(())
    });
    let addr = proxy_listen(&w, 80);
    wait_for(Duration::from_secs(30), "the app to answer", || {
        get_ok(&addr).then_some(())
    });
    let blue = versions(&w);

    let load = Load::start(addr.clone());
    config_cmds(&w, &[("web", "sh server.sh v2")], CHECKED_SERVICE);
    let out = w.deploy(&["--strategy", "bluegreen"]);
    assert!(
        out.contains("Traffic switched from 3 blue to 3 green machines"),
        "{out}"
    );
    let green = versions(&w);
    assert_eq!(green.len(), 3);
    assert!(
        green.iter().all(|g| blue.iter().all(|b| b.0 != g.0)),
        "all new machines"
    );
    let labels = w.labels();
    assert!(labels.values().all(|l| l == "v2"), "{labels:?}");
    let (ok, failed) = load.counts();
    assert_eq!(
        failed, 0,
        "no request failed during the switch ({ok} answered)"
    );
    assert!(ok > 0);
    assert_eq!(release(&w, 2)["phase"], "switched");

    // A green that never becomes healthy: the deploy fails, blue (v2) keeps serving.
    config_cmds(&w, &[("web", "sh broken.sh v3")], CHECKED_SERVICE);
    let out = w.aloft(&["deploy", "--strategy", "bluegreen", "--wait-timeout", "20s"]);
    let text = common::combined(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("blue ones keep serving"), "{text}");
    assert_eq!(versions(&w), green, "greens destroyed, blues untouched");
    let ev = release_events(&w, 3);
    assert_eq!(of_type(&ev, "green_destroyed").len(), 3, "{ev:?}");
    assert!(of_type(&ev, "traffic_switched").is_empty());
    assert_eq!(
        release(&w, 3)["phase"],
        "green",
        "failed while greens were made"
    );
    let before = load.counts().0;
    wait_for(Duration::from_secs(10), "blue still answering", || {
        (load.counts().0 > before + 5).then_some(())
    });
    let (ok, failed) = load.counts();
    drop(load);
    assert_eq!(failed, 0, "no request failed ({ok} answered)");
}

/// Strategy names that do not exist are refused, naming the valid ones; bluegreen without
/// checks is refused before anything changes.
#[test]
fn unknown_strategies_and_bluegreen_without_checks_are_refused() {
    let w = World::new("strat");
    w.config(&[("web", "v1")], WEB_SERVICE);
    w.deploy(&[]);
    let before = versions(&w);
    let err = w.fails(&["deploy", "--strategy", "sideways"]);
    assert!(err.contains("\"sideways\""), "{err}");
    assert!(
        err.contains("rolling, immediate, canary, bluegreen"),
        "{err}"
    );
    w.config(
        &[("web", "v2")],
        &format!("{WEB_SERVICE}\n[deploy]\nstrategy = \"yolo\"\n"),
    );
    let err = w.fails(&["deploy"]);
    assert!(err.contains("unknown deploy strategy \"yolo\""), "{err}");
    assert!(err.contains("bluegreen"), "{err}");
    w.config(&[("web", "v2")], WEB_SERVICE);
    let err = w.fails(&["deploy", "--strategy", "bluegreen"]);
    assert!(err.contains("needs health checks"), "{err}");
    assert_eq!(versions(&w), before);
}
