//! Deploys end to end: a real `aloft agent` process (127.0.0.1, OS-assigned port, temp data dir)
//! driven by the real `aloft` CLI, replaying every command block of Fly.io's process-groups
//! guide; a kill -9 of the agent in the middle of a 30-machine deploy; bad input.
//!
//! Machines run `sh run.sh <label>` (the group command, a CMD) behind the ENTRYPOINT
//! `sh entry.sh` (`[experimental] entrypoint`: the app has no Dockerfile, so it runs on the
//! process runtime). Both write what they ran to
//! `<state>/<machine id>` and `<state>/<machine id>.entry`, so the tests check each machine's
//! real argv. Every process started here runs in a directory under the test's temp dir; the
//! tests check that none is left when they end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common;

mod metrics;
mod small_print;
mod standbys;
mod strategies;

use aloft_testkit::KillOnDrop;
use common::{wait_for, AgentProc};

/// One app directory with its agent.
/// Fields drop in order: the agent first (its drop reaps what its data dir records), then the
/// temp dir holding that data dir.
struct World {
    agent: AgentProc,
    tmp: tempfile::TempDir,
    app: String,
}

const RUN_SH: &str = r#"#!/bin/sh
# The group command (CMD): records its label, then idles until stopped.
echo "$*" > "$STATE_DIR/$FLY_MACHINE_ID"
exec sleep 100000
"#;

const ENTRY_SH: &str = r#"#!/bin/sh
# The image ENTRYPOINT: records what it was given, then runs it.
echo "entry $*" > "$STATE_DIR/$FLY_MACHINE_ID.entry"
exec "$@"
"#;

impl World {
    /// An app and its agent, without the proxy.
    fn new(app: &str) -> World {
        World::with_agent(app, &["--no-proxy"])
    }

    fn with_agent(app: &str, agent_args: &[&str]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["app", "state", "data"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        let appdir = tmp.path().join("app");
        std::fs::write(appdir.join("run.sh"), RUN_SH).unwrap();
        std::fs::write(appdir.join("entry.sh"), ENTRY_SH).unwrap();
        let agent = AgentProc::start_with(&tmp.path().join("data"), agent_args, None);
        let w = World {
            tmp,
            agent,
            app: app.into(),
        };
        w.ok(&["apps", "create", app]);
        w
    }

    fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Writes fly.toml: the app, `[env] STATE_DIR`, the given process groups (label = command
    /// argument of run.sh) and `extra` TOML.
    fn config(&self, groups: &[(&str, &str)], extra: &str) {
        let mut toml = format!(
            "app = \"{}\"\nprimary_region = \"gru\"\nkill_signal = \"SIGTERM\"\nkill_timeout = \"2s\"\n\n[experimental]\nentrypoint = [\"sh\", \"entry.sh\"]\n\n[env]\nSTATE_DIR = \"{}\"\n\n[processes]\n",
            self.app,
            self.state_dir().display()
        );
        for (g, label) in groups {
            toml.push_str(&format!("{g} = \"sh run.sh {label}\"\n"));
        }
        toml.push('\n');
        toml.push_str(extra);
        std::fs::write(self.tmp.path().join("app/fly.toml"), toml).unwrap();
    }

    /// `aloft ARGS` in the app directory against this agent, stdin /dev/null, not started yet.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_aloft"));
        command
            .args(args)
            .current_dir(self.tmp.path().join("app"))
            .env("ALOFT_API_URL", &self.agent.url)
            .env("ALOFT_API_TOKEN", &self.agent.token)
            .env_remove("ALOFT_APP")
            .stdin(Stdio::null());
        command
    }

    fn aloft(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("aloft runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.aloft(args);
        let text = common::combined(&out);
        assert!(out.status.success(), "aloft {args:?} failed:\n{text}");
        text
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.aloft(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "aloft {args:?} should fail with 1:\n{}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    fn machines(&self) -> Vec<Value> {
        let text = self.ok(&["machine", "list", "-a", &self.app, "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Group → machine count.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in self.machines() {
            *out.entry(group(&m).to_string()).or_default() += 1;
        }
        out
    }

    /// Waits until every machine but the standbys (which stay stopped) is started and has
    /// written its state file; returns the label each runs (its group command's argument), by
    /// machine id.
    fn labels(&self) -> BTreeMap<String, String> {
        wait_for(Duration::from_secs(60), "machines running", || {
            let ms = self.machines();
            let mut out = BTreeMap::new();
            for m in ms.iter().filter(|m| !is_standby(m)) {
                if m["state"] != "started" {
                    return None;
                }
                let id = m["id"].as_str().unwrap();
                // Empty while a restarted machine's `echo` rewrites it (truncate, then write).
                let label = std::fs::read_to_string(self.state_dir().join(id))
                    .ok()
                    .filter(|l| !l.trim().is_empty())?;
                out.insert(id.to_string(), label.trim().to_string());
            }
            Some(out)
        })
    }

    /// `aloft machine stop ID`, then waits until the machine is stopped.
    fn stop(&self, id: &str) {
        self.ok(&["machine", "stop", id]);
        wait_for(Duration::from_secs(20), "the machine to stop", || {
            self.machines()
                .iter()
                .any(|m| m["id"] == id && m["state"] == "stopped")
                .then_some(())
        });
    }

    fn deploy(&self, extra: &[&str]) -> String {
        let mut args = vec!["deploy"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// Processes whose working directory is under this test's temp dir.
    fn processes(&self) -> Vec<u32> {
        processes_under(self.tmp.path())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The machines die with the agent (PR_SET_PDEATHSIG); make sure none is left. After a
        // failure, only clean up (the agent's own drop reaps what is left): a panic while one
        // unwinds would abort the whole test binary.
        self.agent.kill9();
        if std::thread::panicking() {
            return;
        }
        let tmp = self.tmp.path().to_path_buf();
        let left = wait_for(Duration::from_secs(10), "machine processes to exit", || {
            let p = processes_under(&tmp);
            p.is_empty().then_some(p)
        });
        assert!(left.is_empty());
    }
}

fn processes_under(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) {
            if cwd.starts_with(dir) {
                out.push(pid);
            }
        }
    }
    out
}

/// A standby machine (deploy gives one to a group without services): it stays stopped.
fn is_standby(m: &Value) -> bool {
    m["config"]["standbys"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

fn group(m: &Value) -> &str {
    m["config"]["metadata"]["fly_process_group"]
        .as_str()
        .unwrap_or("")
}

fn ids_of<'a>(ms: &'a [Value], g: &str) -> Vec<&'a str> {
    ms.iter()
        .filter(|m| group(m) == g)
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

fn count_map(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(g, n)| (g.to_string(), *n)).collect()
}

const WEB_SERVICE: &str = "[http_service]\ninternal_port = 8080\nprocesses = [\"web\"]\n";

/// Every command block of the process-groups guide, in order.
#[test]
fn the_process_groups_guide() {
    let w = World::new("guide");
    let web_cron = [("web", "web-server"), ("cron", "cron-job")];

    // fly deploy: web (it has a service: 2 machines) and cron (1 and a stopped standby), each
    // its own command, behind the image ENTRYPOINT.
    w.config(&web_cron, WEB_SERVICE);
    w.deploy(&[]);
    assert_eq!(w.counts(), count_map(&[("web", 2), ("cron", 2)]));
    let labels = w.labels();
    for m in w.machines().into_iter().filter(|m| !is_standby(m)) {
        let id = m["id"].as_str().unwrap();
        let want = if group(&m) == "web" {
            "web-server"
        } else {
            "cron-job"
        };
        assert_eq!(labels[id], want, "machine {id} of {}", group(&m));
        let entry = std::fs::read_to_string(w.state_dir().join(format!("{id}.entry"))).unwrap();
        assert_eq!(
            entry.trim(),
            format!("entry sh run.sh {want}"),
            "the group command is the CMD: the ENTRYPOINT still runs first"
        );
        assert_eq!(m["config"]["metadata"]["fly_release_version"], "1");
    }
    let first_ids: Vec<String> = labels.keys().cloned().collect();

    // Add a group and deploy: its machine is created, the others are updated in place.
    w.config(
        &[
            ("web", "web-server"),
            ("cron", "cron-job"),
            ("worker", "worker-loop"),
        ],
        WEB_SERVICE,
    );
    w.deploy(&[]);
    assert_eq!(
        w.counts(),
        count_map(&[("web", 2), ("cron", 2), ("worker", 2)])
    );
    let labels = w.labels();
    for id in &first_ids {
        assert!(
            labels.contains_key(id),
            "{id} was kept and updated in place"
        );
    }
    let ms = w.machines();
    let running: Vec<Value> = ms.iter().filter(|m| !is_standby(m)).cloned().collect();
    let worker = ids_of(&running, "worker")[0].to_string();
    assert_eq!(labels[&worker], "worker-loop");

    // Remove it: without --yes (no terminal) the deploy refuses and changes nothing.
    w.config(&web_cron, WEB_SERVICE);
    let before = w.machines();
    let err = w.fails(&["deploy"]);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(w.machines().len(), before.len());
    assert!(ids_of(&w.machines(), "worker").contains(&worker.as_str()));
    let out = w.deploy(&["--yes"]);
    assert!(out.contains(&worker), "the plan lists the machine: {out}");
    assert_eq!(w.counts(), count_map(&[("web", 2), ("cron", 2)]));

    // fly scale count web=8 cron=2 (cron's standby counts: it has 2 already)
    w.ok(&["scale", "count", "web=8", "cron=2", "--yes"]);
    assert_eq!(w.counts(), count_map(&[("web", 8), ("cron", 2)]));
    let labels = w.labels();
    for m in w.machines().into_iter().filter(|m| !is_standby(m)) {
        let want = if group(&m) == "web" {
            "web-server"
        } else {
            "cron-job"
        };
        assert_eq!(labels[m["id"].as_str().unwrap()], want);
    }

    // fly scale count web=4 --region gru,bog → 2 + 2
    w.ok(&["scale", "count", "web=4", "--region", "gru,bog", "--yes"]);
    let ms = w.machines();
    let mut regions: BTreeMap<String, usize> = BTreeMap::new();
    for m in ms.iter().filter(|m| group(m) == "web") {
        *regions
            .entry(m["region"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(regions, count_map(&[("bog", 2), ("gru", 2)]));
    assert_eq!(ids_of(&ms, "cron").len(), 2);

    // fly machine clone --region gru ID: same group, release and guest; runs the web command.
    let source = ms
        .iter()
        .find(|m| group(m) == "web" && m["region"] == "bog")
        .unwrap();
    let out = w.ok(&[
        "machine",
        "clone",
        "--region",
        "gru",
        source["id"].as_str().unwrap(),
    ]);
    let ms = w.machines();
    let clone = ms
        .iter()
        .find(|m| m["id"] != source["id"] && out.contains(m["id"].as_str().unwrap()))
        .expect("the clone is listed");
    assert_eq!(group(clone), "web");
    assert_eq!(clone["region"], "gru");
    assert_eq!(
        clone["config"]["metadata"]["fly_release_version"],
        source["config"]["metadata"]["fly_release_version"]
    );
    assert_eq!(clone["config"]["guest"], source["config"]["guest"]);
    assert_eq!(w.labels()[clone["id"].as_str().unwrap()], "web-server");
    assert_eq!(w.counts()["web"], 5);

    // fly machine stop ID; fly machine destroy ID. A started machine needs --force.
    let clone_id = clone["id"].as_str().unwrap().to_string();
    w.stop(&clone_id);
    w.ok(&["machine", "destroy", &clone_id]);
    let ms = w.machines();
    assert!(!ms.iter().any(|m| m["id"] == clone_id.as_str()));
    let started = ids_of(&ms, "web")[0].to_string();
    let err = w.fails(&["machine", "destroy", &started]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(w.machines().len(), ms.len(), "nothing destroyed");
    w.ok(&["machine", "destroy", "--force", &started]);
    assert_eq!(w.counts(), count_map(&[("web", 3), ("cron", 2)]));

    // fly scale vm performance-2x -g web; fly scale memory 4096 -g web: only web changes.
    let cron_guest =
        w.machines().iter().find(|m| group(m) == "cron").unwrap()["config"]["guest"].clone();
    w.ok(&["scale", "vm", "performance-2x", "-g", "web"]);
    for m in w.machines() {
        let g = &m["config"]["guest"];
        if group(&m) == "web" {
            assert_eq!(
                (g["cpu_kind"].as_str(), g["cpus"].as_u64()),
                (Some("performance"), Some(2))
            );
        } else {
            assert_eq!(*g, cron_guest, "cron's guest is untouched");
        }
    }
    // One machine at a time: each started web machine runs again (started after its update)
    // before the next one is updated, so the group keeps serving.
    let ts = |e: &Value| e["timestamp"].as_i64().unwrap();
    let mut steps: Vec<(i64, i64)> = w
        .machines()
        .iter()
        .filter(|m| group(m) == "web" && m["state"] == "started")
        .map(|m| {
            let events = m["events"].as_array().unwrap();
            let updated = events
                .iter()
                .filter(|e| e["type"] == "update")
                .map(ts)
                .max()
                .unwrap_or_else(|| panic!("no update event: {m}"));
            let started = events
                .iter()
                .filter(|e| e["type"] == "start" && ts(e) >= updated)
                .map(ts)
                .min()
                .unwrap_or_else(|| panic!("not started after its update: {m}"));
            (updated, started)
        })
        .collect();
    steps.sort();
    assert!(steps.len() >= 2, "{steps:?}");
    for pair in steps.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "updated before the previous one ran: {steps:?}"
        );
    }
    w.ok(&["scale", "memory", "4096", "-g", "web"]);
    for m in w.machines() {
        let g = &m["config"]["guest"];
        if group(&m) == "web" {
            assert_eq!(g["memory_mb"], 4096);
            assert_eq!(g["cpu_kind"], "performance");
        } else {
            assert_eq!(*g, cron_guest, "cron's guest is untouched");
        }
    }
    let labels = w.labels();
    // web 3, cron 1 (and its standby, which does not run).
    assert!(labels.len() == 4 && labels.values().all(|l| !l.is_empty()));

    // fly machine update --metadata fly_process_group=app ID, then deploy with an `app` group:
    // the machine moves and runs app's command. A machine moved to a group the config does not
    // define is destroyed by the deploy, after the prompt.
    let ms = w.machines();
    let mover = ids_of(&ms, "web")[0].to_string();
    let ghost = ids_of(&ms, "cron")[0].to_string();
    w.ok(&[
        "machine",
        "update",
        "--metadata",
        "fly_process_group=app",
        "--yes",
        &mover,
    ]);
    w.ok(&[
        "machine",
        "update",
        "--metadata",
        "fly_process_group=ghost",
        "--yes",
        &ghost,
    ]);
    w.config(
        &[
            ("app", "app-main"),
            ("web", "web-server"),
            ("cron", "cron-job"),
        ],
        WEB_SERVICE,
    );
    let err = w.fails(&["deploy"]);
    assert!(err.contains("--yes"), "{err}");
    assert!(w.machines().iter().any(|m| m["id"] == ghost.as_str()));
    w.deploy(&["--yes"]);
    let ms = w.machines();
    assert!(
        !ms.iter().any(|m| m["id"] == ghost.as_str()),
        "ghost destroyed"
    );
    assert_eq!(
        ids_of(&ms, "app"),
        vec![mover.as_str()],
        "moved, not created"
    );
    assert_eq!(
        w.counts(),
        count_map(&[("app", 1), ("web", 2), ("cron", 1)])
    );
    assert_eq!(
        w.labels()[&mover],
        "app-main",
        "the moved machine runs app's command"
    );

    // Beyond Fly: a group scaled to 0 stays at 0 on the next deploy.
    w.ok(&["scale", "count", "cron=0", "--yes"]);
    assert_eq!(w.counts().get("cron"), None);
    w.deploy(&[]);
    assert_eq!(w.counts(), count_map(&[("app", 1), ("web", 2)]));

    let releases: Vec<Value> =
        serde_json::from_str(&w.ok(&["releases", "-a", "guide", "--json"])).unwrap();
    assert_eq!(releases.len(), 5);
    assert!(
        releases.iter().all(|r| r["status"] == "complete"),
        "{releases:?}"
    );
    assert_eq!(releases[0]["version"], 5, "newest first");

    // fly platform regions: the agent hosts every region code by default.
    let regions: Vec<Value> =
        serde_json::from_str(&w.ok(&["platform", "regions", "--json"])).unwrap();
    let codes: Vec<&str> = regions.iter().filter_map(|r| r["code"].as_str()).collect();
    assert!(
        codes.contains(&"gru") && codes.contains(&"bog"),
        "{codes:?}"
    );
}

/// kill -9 of the agent while a deploy updates 30 machines; after a restart the release
/// completes with exactly 30 machines at the new release, each running the new command once.
#[test]
fn kill_9_in_the_middle_of_a_30_machine_deploy() {
    let mut w = World::new("crash");
    // One machine at a time, each waited on: the deploy takes long enough to be interrupted.
    let deploy = "[deploy]\nmax_unavailable = 1\n";
    w.config(&[("web", "v1")], deploy);
    // --ha=false: no standby for this service-less group, the test counts machines.
    w.deploy(&["--ha=false"]);
    w.ok(&["scale", "count", "web=30", "--yes"]);
    assert_eq!(w.labels().len(), 30);

    w.config(&[("web", "v2")], deploy);
    let out = w.deploy(&["--detach"]);
    assert!(out.contains("Release v2 created"), "{out}");
    let at_v2 = |ms: &[Value]| {
        ms.iter()
            .filter(|m| m["config"]["metadata"]["fly_release_version"] == "2")
            .count()
    };
    let done = wait_for(Duration::from_secs(60), "some machines updated", || {
        let n = at_v2(&w.machines());
        (n >= 3).then_some(n)
    });
    w.agent.kill9();
    assert!(
        done < 30,
        "killed in the middle (after {done} of 30 updates)"
    );

    w.agent = AgentProc::start_with(&w.tmp.path().join("data"), &["--no-proxy"], None);
    let release = wait_for(Duration::from_secs(120), "release v2 to finish", || {
        let out = w.aloft(&["releases", "-a", "crash", "--json"]);
        let rs: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        let r = rs.into_iter().find(|r| r["version"] == 2)?;
        (r["status"] != "running" && r["status"] != "pending").then_some(r)
    });
    assert_eq!(release["status"], "complete", "{release}");
    let ms = w.machines();
    assert_eq!(ms.len(), 30, "exactly the expected machines");
    assert_eq!(at_v2(&ms), 30);
    let labels = w.labels();
    assert!(labels.values().all(|l| l == "v2"), "{labels:?}");
    // One process tree (sh → sleep, exec'd: one process) per machine: no orphans, no doubles.
    let procs = wait_for(Duration::from_secs(20), "one process per machine", || {
        let p = w.processes();
        (p.len() == 30).then_some(p)
    });
    assert_eq!(procs.len(), 30);
}

/// Bad input: a clear error, exit code 1, and the machines exactly as before.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let w = World::new("bad");
    w.config(&[("web", "web-server"), ("cron", "cron-job")], WEB_SERVICE);
    w.deploy(&[]);
    let snapshot = || {
        let mut v: Vec<(String, String, String, Value)> = w
            .machines()
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["instance_id"].as_str().unwrap().to_string(),
                    m["state"].as_str().unwrap().to_string(),
                    m["config"]["guest"].clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    w.labels();
    let before = snapshot();
    let cases: &[(&[&str], &str)] = &[
        (&["scale", "count", "nope=3", "--yes"], "nope"),
        (
            &["scale", "count", "web=3", "--region", "zzz", "--yes"],
            "zzz",
        ),
        (
            &["scale", "vm", "galactic-64x", "-g", "web"],
            "galactic-64x",
        ),
        (&["scale", "memory", "999999", "-g", "web"], "999999"),
        (&["scale", "memory", "100", "-g", "web"], "100"),
        (
            &["machine", "destroy", "--force", "00000000000000"],
            "00000000000000",
        ),
        (&["machine", "stop", "00000000000000"], "00000000000000"),
        (
            &["logs", "-g", "nope", "--no-tail"],
            "its groups: cron, web",
        ),
        (
            &["logs", "--machine", "00000000000000", "--no-tail"],
            "00000000000000",
        ),
    ];
    for (args, needle) in cases {
        let err = w.fails(args);
        assert!(err.contains(needle), "aloft {args:?}: {err}");
        assert_eq!(snapshot(), before, "aloft {args:?} changed machines");
    }
    // An invalid fly.toml: the error points into the file; nothing is deployed.
    std::fs::write(
        w.tmp.path().join("app/fly.toml"),
        "app = \"bad\"\n[processes]\nweb = 42\n",
    )
    .unwrap();
    let err = w.fails(&["deploy", "--yes"]);
    assert!(err.contains("fly.toml:3"), "{err}");
    assert_eq!(snapshot(), before);
    let releases: Vec<Value> =
        serde_json::from_str(&w.ok(&["releases", "-a", "bad", "--json"])).unwrap();
    assert_eq!(releases.len(), 1, "no release recorded");
}

/// The agent's release and image routes at the HTTP level (what the CLI relies on): content-
/// addressed uploads, 409 `confirmation_required` for unconfirmed destroys, `dry_run`, and the
/// NDJSON progress stream that ends with `finished`.
#[test]
fn release_and_image_routes() {
    let w = World::new("routes");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1/apps/routes{p}", w.agent.url);
    let token = w.agent.token.clone();
    let send = |method: reqwest::Method, p: &str, body: Option<Vec<u8>>| {
        let mut req = http.request(method, url(p)).bearer_auth(&token);
        if let Some(b) = body {
            req = req.body(b);
        }
        rt.block_on(async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    };
    let packed = aloft_deploy::image::pack_dir(&w.tmp.path().join("app")).unwrap();
    let hex = packed.digest.strip_prefix("sha256:").unwrap().to_string();
    let path = format!("/images/{hex}");

    assert_eq!(send(reqwest::Method::HEAD, &path, None).0, 404);
    let (s, body) = send(
        reqwest::Method::PUT,
        &format!("/images/{}", "0".repeat(64)),
        Some(packed.tar.clone()),
    );
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("digest mismatch"), "{body}");
    let (s, body) = send(reqwest::Method::PUT, &path, Some(packed.tar.clone()));
    assert_eq!(s, 201, "{body}");
    assert_eq!(send(reqwest::Method::PUT, &path, Some(packed.tar)).0, 200);
    assert_eq!(send(reqwest::Method::HEAD, &path, None).0, 200);

    let spec = |groups: &[&str]| {
        let groups: serde_json::Map<String, Value> = groups
            .iter()
            .map(|g| {
                (
                    g.to_string(),
                    serde_json::json!({"init": {"cmd": ["sh", "run.sh", g]},
                                       "env": {"STATE_DIR": w.state_dir()}}),
                )
            })
            .collect();
        // No standby for these service-less groups: the test counts one machine per group.
        serde_json::json!({"image": "", "groups": groups, "default_group": groups.keys().next().unwrap(), "deploy": {"ha": false}})
    };
    let post = |body: Value, q: &str| {
        send(
            reqwest::Method::POST,
            &format!("/releases{q}"),
            Some(serde_json::to_vec(&body).unwrap()),
        )
    };
    let (s, body) = post(
        serde_json::json!({"spec": spec(&["web"]), "image_digest": format!("sha256:{}", "1".repeat(64))}),
        "",
    );
    assert_eq!(s, 404, "unknown image: {body}");
    let (s, body) = post(
        serde_json::json!({"spec": spec(&["web"]), "image_digest": packed.digest, "process_groups": ["nope"]}),
        "",
    );
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("nope"), "{body}");

    let (s, body) = post(
        serde_json::json!({"spec": spec(&["web"]), "image_digest": packed.digest}),
        "",
    );
    assert_eq!(s, 201, "{body}");
    let release: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(release["version"], 1);
    let (s, stream) = send(reqwest::Method::GET, "/releases/1/events?follow=true", None);
    assert_eq!(s, 200);
    let events: Vec<Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.last().unwrap()["event"]["type"],
        "finished",
        "{stream}"
    );
    assert_eq!(events.last().unwrap()["event"]["status"], "complete");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let (_, tail) = send(
        reqwest::Method::GET,
        &format!("/releases/1/events?after={}", seqs.len() - 1),
        None,
    );
    assert_eq!(tail.lines().count(), 1, "after=N resumes the stream");
    let web = ids_of(&w.machines(), "web")
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    assert_eq!(web.len(), 1);

    // Dropping `web` destroys its machine: refused until confirmed, plannable with dry_run.
    let drop_web = serde_json::json!({"spec": spec(&["cron"]), "image_digest": packed.digest});
    let (s, body) = post(drop_web.clone(), "?dry_run=true");
    assert_eq!(s, 200, "{body}");
    let plan: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plan["frozen"]["destroy"][0]["id"], web[0].as_str());
    let (s, body) = post(drop_web.clone(), "");
    assert_eq!(s, 409, "{body}");
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["status"], "confirmation_required");
    assert_eq!(refusal["destroy"][0]["id"], web[0].as_str());
    assert_eq!(ids_of(&w.machines(), "web").len(), 1, "nothing destroyed");
    let mut confirmed = drop_web;
    confirmed["confirmed_destroy"] = serde_json::json!(web);
    let (s, body) = post(confirmed, "");
    assert_eq!(s, 201, "{body}");
    wait_for(Duration::from_secs(30), "release v2 to finish", || {
        let (_, r) = send(reqwest::Method::GET, "/releases/2", None);
        let r: Value = serde_json::from_str(&r).ok()?;
        (r["status"] == "complete").then_some(())
    });
    assert_eq!(w.counts(), count_map(&[("cron", 1)]));
}

/// An agent without a proxy runs no health checks: a deploy of machines that have checks does
/// not wait for results that never come (it would fail after `--wait-timeout`).
#[test]
fn checks_without_a_proxy_do_not_hold_a_deploy() {
    let w = World::new("nochecks");
    let checks = "[[http_service.checks]]\npath = \"/health\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\n[checks.alive]\ntype = \"tcp\"\nport = 8080\n";
    let extra = format!("{WEB_SERVICE}{checks}");
    w.config(&[("web", "web-server")], &extra);
    w.deploy(&["--wait-timeout", "5s"]);
    w.labels();
    // A redeploy updates started machines: the step that waits for their checks.
    w.config(&[("web", "web-server-2")], &extra);
    w.deploy(&["--wait-timeout", "5s"]);
    for m in w.machines() {
        assert_eq!(m["config"]["checks"]["alive"]["type"], "tcp", "{m}");
        let results = m["checks"].as_array().map_or(0, Vec::len);
        assert_eq!(results, 0, "no checker, no results: {m}");
    }
    // The new command runs (its label file is written just after the start).
    wait_for(
        Duration::from_secs(30),
        "the new command on every machine",
        || {
            w.labels()
                .values()
                .all(|l| l == "web-server-2")
                .then_some(())
        },
    );
}

/// A group whose command cannot run fails the deploy with its log lines (flyctl's smoke check)
/// instead of a "complete" release of a crash-looping machine; `--smoke-checks=false` skips it.
#[test]
fn a_crash_looping_group_fails_the_deploy_with_its_logs() {
    let w = World::new("crashy");
    std::fs::write(
        w.tmp.path().join("app/broken.sh"),
        "echo 'cannot find module ./missing.js' >&2\nexit 3\n",
    )
    .unwrap();
    w.config(&[("web", "web-server"), ("broken", "x")], "");
    let toml = std::fs::read_to_string(w.tmp.path().join("app/fly.toml"))
        .unwrap()
        .replace("broken = \"sh run.sh x\"", "broken = \"sh broken.sh\"");
    std::fs::write(w.tmp.path().join("app/fly.toml"), toml).unwrap();

    let err = w.fails(&["deploy", "--yes"]);
    assert!(err.contains("crash-looping"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert!(err.contains("cannot find module ./missing.js"), "{err}");
    let releases: Vec<Value> =
        serde_json::from_str(&w.ok(&["releases", "-a", "crashy", "--json"])).unwrap();
    assert_eq!(releases[0]["status"], "failed", "{releases:?}");

    w.deploy(&["--smoke-checks=false"]);
    let releases: Vec<Value> =
        serde_json::from_str(&w.ok(&["releases", "-a", "crashy", "--json"])).unwrap();
    assert_eq!(releases[0]["status"], "complete", "{releases:?}");
}

/// Starts `aloft ARGS` with stdout piped; returns once it printed a line containing `marker`.
fn spawn_until(w: &World, args: &[&str], marker: &str) -> KillOnDrop {
    use std::io::BufRead;
    let mut child = KillOnDrop(
        w.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("aloft runs"),
    );
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => return child,
            Some(Ok(_)) => {}
            _ => {
                let status = child.wait();
                panic!("aloft {args:?} ended ({status:?}) before printing {marker:?}");
            }
        }
    }
}

/// `scale count` is carried out by the agent (architecture issue, item 3): a kill -9 of the CLI
/// in the middle of `scale count web=50`, and of the agent in the middle of the same, leave a
/// group that converges to exactly 50, and `scale show` and the remembered counts agree.
#[test]
fn kill_9_of_the_cli_and_of_the_agent_in_the_middle_of_scale_count() {
    let mut w = World::new("fifty");
    w.config(&[("web", "v1")], "");
    w.deploy(&["--ha=false"]);
    let web = |w: &World| w.machines().iter().filter(|m| group(m) == "web").count();
    let started_files = |w: &World| std::fs::read_dir(w.state_dir()).unwrap().count();

    // Both killed the moment the agent has taken the operation.
    let mut cli = spawn_until(
        &w,
        &["scale", "count", "web=50", "--yes"],
        "Scaling in the agent",
    );
    w.agent.kill9();
    let _ = cli.kill();
    let _ = cli.wait();
    let at_kill = started_files(&w);
    println!("{at_kill} of 50 machines had started when the agent was killed");
    assert!(
        at_kill < 50,
        "killed in the middle ({at_kill} machines had started)"
    );

    w.agent = AgentProc::start_with(&w.tmp.path().join("data"), &["--no-proxy"], None);
    wait_for(
        Duration::from_secs(120),
        "the scale operation to finish",
        || scale_ops_finished(&w).then_some(()),
    );
    assert_eq!(web(&w), 50, "exactly 50");
    let show: Vec<Value> =
        serde_json::from_str(&w.ok(&["scale", "show", "-a", "fifty", "--json"])).unwrap();
    let row = show.iter().find(|r| r["Process"] == "web").unwrap();
    assert_eq!(row["Count"], 50, "{show:?}");
    let counts = w.ok(&["scale", "count", "web=50", "--yes"]);
    assert!(counts.contains("already scaled"), "{counts}");

    // The CLI alone killed: the agent goes on.
    let mut cli = spawn_until(
        &w,
        &["scale", "count", "web=60", "--yes"],
        "Scaling in the agent",
    );
    let _ = cli.kill();
    let _ = cli.wait();
    wait_for(
        Duration::from_secs(120),
        "the second operation to finish",
        || scale_ops_finished(&w).then_some(()),
    );
    assert_eq!(web(&w), 60);
    assert_eq!(w.labels().len(), 60, "each machine started once");
}

/// `scale vm` is carried out by the agent too (architecture issue, item 3): the CLI killed
/// (kill -9) right after the agent took the operation, then the agent killed while the group
/// was half updated and started again: every machine of the group ends with the new guest,
/// updated exactly once (one new machine version each); the other group is untouched; `scale
/// show` agrees, and a following deploy keeps the size.
#[test]
fn kill_9_of_the_cli_and_of_the_agent_in_the_middle_of_scale_vm() {
    let mut w = World::new("vmsize");
    w.config(&[("web", "v1"), ("cron", "c1")], "");
    w.deploy(&["--ha=false"]);
    w.ok(&["scale", "count", "web=3", "--yes"]);
    let web_ids: Vec<String> = ids_of(&w.machines(), "web")
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(web_ids.len(), 3);
    let cron_id = ids_of(&w.machines(), "cron")[0].to_string();
    let versions = |w: &World, id: &str| {
        api_get(w, &format!("/v1/apps/{}/machines/{id}/versions", w.app))
            .as_array()
            .map_or(0, Vec::len)
    };
    let before: Vec<usize> = web_ids.iter().map(|id| versions(&w, id)).collect();
    let cron_before = versions(&w, &cron_id);
    let is_new = |m: &Value| {
        m["config"]["guest"]["cpu_kind"] == "performance" && m["config"]["guest"]["cpus"] == 2
    };

    let mut cli = spawn_until(
        &w,
        &["scale", "vm", "performance-2x", "-g", "web"],
        "Scaling in the agent",
    );
    let _ = cli.kill();
    let _ = cli.wait();
    // The first machine updated: it is watched for a crash loop (3 s) before the next is touched.
    wait_for(
        Duration::from_secs(30),
        "the first web machine updated",
        || w.machines().iter().any(is_new).then_some(()),
    );
    w.agent.kill9();

    w.agent = AgentProc::start_with(&w.tmp.path().join("data"), &["--no-proxy"], None);
    wait_for(
        Duration::from_secs(120),
        "the scale vm operation to finish",
        || scale_ops_finished(&w).then_some(()),
    );
    // The operation was resumed with part of the group left to update.
    let op = api_get(&w, &format!("/v1/apps/{}/releases", w.app))
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scale"]["guest"].is_array())
        .map(|r| r["version"].as_u64().unwrap())
        .max()
        .expect("a scale vm operation");
    let events = release_events(&w, op);
    let resumed_at = events
        .iter()
        .position(|e| e["type"] == "started" && e["resumed"] == true)
        .unwrap_or_else(|| panic!("the operation was resumed: {events:?}"));
    let updating_before = events[..resumed_at]
        .iter()
        .filter(|e| e["type"] == "updating")
        .count();
    assert!(
        (1..3).contains(&updating_before),
        "killed with the group half updated: {events:?}"
    );

    for m in w.machines() {
        if group(&m) == "web" {
            assert!(is_new(&m), "{m}");
            assert_eq!(m["config"]["guest"]["memory_mb"], 4096);
        } else {
            assert_eq!(m["config"]["guest"]["cpu_kind"], "shared", "cron untouched");
        }
    }
    let after: Vec<usize> = web_ids.iter().map(|id| versions(&w, id)).collect();
    let once: Vec<usize> = before.iter().map(|n| n + 1).collect();
    assert_eq!(after, once, "each web machine updated exactly once");
    assert_eq!(versions(&w, &cron_id), cron_before, "cron not updated");
    assert_eq!(w.labels().len(), 4, "every machine runs");

    let show: Vec<Value> =
        serde_json::from_str(&w.ok(&["scale", "show", "-a", "vmsize", "--json"])).unwrap();
    let row = show.iter().find(|r| r["Process"] == "web").unwrap();
    assert_eq!(
        (&row["CPUKind"], &row["CPUs"], &row["Memory"], &row["Count"]),
        (
            &Value::from("performance"),
            &Value::from(2),
            &Value::from(4096),
            &Value::from(3)
        ),
        "{show:?}"
    );

    // A deploy (fly.toml has no [[vm]]) keeps the size.
    w.config(&[("web", "v2"), ("cron", "c2")], "");
    w.deploy(&[]);
    let ms = w.machines();
    wait_for(Duration::from_secs(30), "web machines to run v2", || {
        let labels = w.labels();
        ids_of(&ms, "web")
            .iter()
            .all(|id| labels[*id] == "v2")
            .then_some(())
    });
    for m in &ms {
        if group(m) == "web" {
            assert!(is_new(m), "the deploy kept the size: {m}");
            assert_eq!(
                m["config"]["metadata"]["fly_release_version"], "2",
                "deployed"
            );
        }
    }
}

/// `POST …/scale/guest` refuses, before anything is recorded or changed: 422 for a missing or
/// unknown group, no size nor memory, an unknown size, memory the size cannot have, memory this
/// host cannot give; 409 while another release of the app runs. A dry run plans only.
#[test]
fn scale_vm_refusals_through_the_api() {
    let w = World::new("vmrefuse");
    w.config(&[("web", "v1"), ("cron", "c1")], "");
    w.deploy(&["--ha=false"]); // one machine a group: no standby
    let path = format!("/v1/apps/{}/scale/guest", w.app);
    let web = ids_of(&w.machines(), "web")[0].to_string();
    let versions = |w: &World| {
        api_get(w, &format!("/v1/apps/{}/machines/{web}/versions", w.app))
            .as_array()
            .map_or(0, Vec::len)
    };
    let before = versions(&w);
    let mut cases = vec![
        (
            r#"{"group":"nope","size":"performance-2x"}"#,
            "unknown process group \"nope\"",
        ),
        (
            r#"{"size":"performance-2x"}"#,
            "requires specifying a group",
        ),
        (r#"{"group":"web"}"#, "give a size, memory_mb or both"),
        (
            r#"{"group":"web","size":"galactic-64x"}"#,
            "unknown VM size \"galactic-64x\"",
        ),
        (
            r#"{"group":"web","memory_mb":4096}"#,
            "above the maximum of 2048 MB",
        ),
        (r#"{"group":"web","memory_mb":300}"#, "multiple of 256 MB"),
    ];
    let host_mb = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024;
    if host_mb < 131072 {
        cases.push((
            r#"{"group":"web","size":"performance-16x","memory_mb":131072}"#,
            "insufficient memory",
        ));
    }
    for (body, needle) in cases {
        let (status, answer) = api_post(&w, &path, body);
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{body}: {answer}"
        );
    }
    let (status, plan) = api_post(
        &w,
        &path,
        r#"{"group":"web","size":"shared-cpu-2x","dry_run":true}"#,
    );
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["updates"][0]["id"], web.as_str(), "{plan}");
    assert_eq!(versions(&w), before, "nothing changed");
    let releases = api_get(&w, &format!("/v1/apps/{}/releases", w.app));
    assert!(
        releases
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("scale").is_none()),
        "no operation recorded: {releases}"
    );

    let (status, op) = api_post(&w, &path, r#"{"group":"web","size":"shared-cpu-2x"}"#);
    assert_eq!(status, 201, "{op}");
    // The operation watches its first machine 3 s for a crash loop: it still runs.
    let (status, answer) = api_post(&w, &path, r#"{"group":"web","size":"shared-cpu-4x"}"#);
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("is running"),
        "{answer}"
    );
    wait_for(Duration::from_secs(60), "the operation to finish", || {
        scale_ops_finished(&w).then_some(())
    });
    assert_eq!(versions(&w), before + 1);
    let m = w
        .machines()
        .into_iter()
        .find(|m| m["id"] == web.as_str())
        .unwrap();
    assert_eq!(m["config"]["guest"]["cpus"], 2, "{m}");
}

/// `POST` of a JSON body to an agent route: the status and the answer.
fn api_post(w: &World, path: &str, body: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {}", w.agent.token))
        .args(["-d", body, "-w", "\n%{http_code}"])
        .arg(format!("{}{path}", w.agent.url))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').unwrap_or_else(|| panic!("{text}"));
    let answer = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status.trim().parse().unwrap(), answer)
}

/// `GET` of an agent route, as JSON.
/// The events of release (or scale operation) `version`, in order.
fn release_events(w: &World, version: u64) -> Vec<Value> {
    let out = Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", w.agent.token))
        .arg(format!(
            "{}/v1/apps/{}/releases/{version}/events",
            w.agent.url, w.app
        ))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].clone())
        .collect()
}

fn api_get(w: &World, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", w.agent.token))
        .arg(format!("{}{path}", w.agent.url))
        .output()
        .expect("curl runs");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Whether every scale operation of the app (releases above the scale base) has finished
/// complete; read from the API (`aloft releases` lists deploys only).
fn scale_ops_finished(w: &World) -> bool {
    let out = Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", w.agent.token))
        .arg(format!("{}/v1/apps/{}/releases", w.agent.url, w.app))
        .output()
        .expect("curl runs");
    let Ok(releases) = serde_json::from_slice::<Vec<Value>>(&out.stdout) else {
        return false;
    };
    let ops: Vec<&Value> = releases
        .iter()
        .filter(|r| r.get("scale").is_some())
        .collect();
    !ops.is_empty() && ops.iter().all(|r| r["status"] == "complete")
}

/// Through a real agent *with its proxy* (the other deploy tests run `--no-proxy`): the deploy
/// waits until the health checks the proxy runs pass, an idle machine is stopped by autostop,
/// and a request to its service starts it again (autostart).
#[test]
fn health_gated_deploy_autostop_and_autostart_through_the_proxy() {
    let w = World::with_agent(
        "gated",
        &[
            "--proxy-bind",
            "127.0.0.1",
            "--port-map",
            "80=0",
            "--port-map",
            "443=0",
            "--idle-window",
            "2s",
        ],
    );
    let service = r#"
[http_service]
internal_port = 8080
auto_stop_machines = "stop"
auto_start_machines = true
min_machines_running = 0
processes = ["web"]

[[http_service.checks]]
grace_period = "0s"
interval = "500ms"
timeout = "1s"
method = "GET"
path = "/"
"#;
    std::fs::write(
        w.tmp.path().join("app/server.sh"),
        "#!/bin/sh\necho \"$*\" > \"$STATE_DIR/$FLY_MACHINE_ID\"\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n",
    )
    .unwrap();
    w.config(&[], service);
    let config = std::fs::read_to_string(w.tmp.path().join("app/fly.toml"))
        .unwrap()
        .replace("[processes]\n", "[processes]\nweb = \"sh server.sh web\"\n");
    std::fs::write(w.tmp.path().join("app/fly.toml"), config).unwrap();

    let out = w.deploy(&[]);
    assert!(
        out.contains("is healthy"),
        "the deploy waited for the checks:\n{out}"
    );
    let ms = w.machines();
    for m in &ms {
        let checks = &m["checks"];
        assert!(
            checks
                .as_array()
                .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["status"] == "passing")),
            "{checks}"
        );
    }

    // The proxy's local address of port 80.
    let curl = |args: &[&str]| Command::new("curl").args(args).output().expect("curl runs");
    let proxy: Vec<Value> = serde_json::from_slice(
        &curl(&[
            "-sf",
            "-H",
            &format!("Authorization: Bearer {}", w.agent.token),
            &format!("{}/v1/proxy", w.agent.url),
        ])
        .stdout,
    )
    .unwrap();
    let listen = proxy.iter().find(|p| p["port"] == 80).unwrap()["listen"]
        .as_str()
        .unwrap()
        .to_string();
    let get = || {
        curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{listen}/"),
        ])
    };
    assert_eq!(String::from_utf8_lossy(&get().stdout), "200");

    // Idle past the window: autostop stops every machine (min_machines_running = 0).
    let started = |w: &World| {
        w.machines()
            .iter()
            .filter(|m| m["state"] == "started")
            .count()
    };
    wait_for(Duration::from_secs(30), "autostop", || {
        (started(&w) == 0).then_some(())
    });
    // A request starts one and is answered.
    assert_eq!(
        String::from_utf8_lossy(&get().stdout),
        "200",
        "autostart answered"
    );
    assert!(started(&w) >= 1);
    assert_eq!(w.machines().len(), ms.len(), "started again, not created");
}

/// `aloft releases rollback`: a later deploy changed commands, groups, counts and the image; the
/// rollback brings back every group's command, the earlier image and the counts that release
/// had, as a new release marked live; unknown and live versions are refused.
#[test]
fn rollback_restores_image_commands_and_counts_of_every_group() {
    let w = World::new("back");
    let app_file = w.tmp.path().join("app/version.txt");
    std::fs::write(&app_file, "1").unwrap();
    w.config(&[("web", "web-v1"), ("worker", "worker-v1")], WEB_SERVICE);
    w.deploy(&[]);
    // worker: 1 machine and its standby.
    assert_eq!(w.counts(), count_map(&[("web", 2), ("worker", 2)]));
    let releases = |w: &World| -> Vec<Value> {
        serde_json::from_str(&w.ok(&["releases", "-a", "back", "--json"])).unwrap()
    };
    let v1_image = releases(&w)[0]["spec"]["image"]
        .as_str()
        .unwrap()
        .to_string();

    // Scaling is not a release: web=3 later is not what v1 restores.
    w.ok(&["scale", "count", "web=3", "--yes"]);
    std::fs::write(&app_file, "2").unwrap();
    w.config(&[("web", "web-v2"), ("jobs", "jobs-v2")], WEB_SERVICE);
    w.deploy(&["--yes"]);
    assert_eq!(w.counts(), count_map(&[("web", 3), ("jobs", 2)]));
    let v2 = &releases(&w)[0];
    assert_ne!(v2["spec"]["image"], v1_image.as_str(), "a new image");

    let out = w.ok(&["releases", "rollback", "-a", "back", "--yes"]);
    assert!(out.contains("rollback to v1"), "{out}");
    assert_eq!(w.counts(), count_map(&[("web", 2), ("worker", 2)]));
    let ms = w.machines();
    let running: Vec<Value> = ms.iter().filter(|m| !is_standby(m)).cloned().collect();
    let labels = w.labels();
    for id in ids_of(&running, "web") {
        assert_eq!(labels[id], "web-v1");
    }
    for id in ids_of(&running, "worker") {
        assert_eq!(labels[id], "worker-v1");
    }
    for m in &ms {
        assert_eq!(m["config"]["image"], v1_image.as_str(), "{m}");
    }
    let v3 = &releases(&w)[0];
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["rollback_of"], 1);
    assert_eq!(v3["status"], "complete");
    assert_eq!(v3["spec"]["image"], v1_image.as_str());
    let table = w.ok(&["releases", "-a", "back"]);
    let line = table.lines().find(|l| l.starts_with("v3")).unwrap();
    assert!(
        line.contains("live") && line.contains("Rollback to v1"),
        "{table}"
    );

    // Bad input changes nothing.
    let err = w.fails(&["releases", "rollback", "9", "-a", "back", "--yes"]);
    assert!(err.contains("has no release v9"), "{err}");
    let err = w.fails(&["releases", "rollback", "v3", "-a", "back", "--yes"]);
    assert!(err.contains("live release"), "{err}");
    let out = w.aloft(&["releases", "rollback", "x1", "-a", "back"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert_eq!(releases(&w).len(), 3);
}
