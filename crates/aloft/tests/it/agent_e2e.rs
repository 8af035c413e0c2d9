//! End to end against a real `aloft agent` process: machine lifecycle with signals the child
//! observes, the on-failure restart policy, OOM kills under a memory limit, and a `kill -9` of
//! the agent followed by a restart.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{alive, setup, wait_for, AgentProc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_with_signals_the_child_observes() {
    let (tmp, image, image_s) = setup();
    // The service's port 80 is served on a free loopback port, never the host's port 80.
    let agent = AgentProc::start_with(&tmp.path().join("data"), &["--port-map", "80=0"], None);
    agent
        .ok(
            Method::POST,
            "/v1/apps",
            Some(json!({"app_name": "life", "org_slug": "personal"})),
        )
        .await;
    let script = r#"trap 'echo "got INT" >> signals.log; exit 0' INT
trap 'echo "got USR1" >> signals.log' USR1
echo "$FLY_MACHINE_ID $FLY_REGION $FLY_APP_NAME $PORT" > env.out
while :; do sleep 0.05; done"#;
    let id = agent
        .create(
            "life",
            json!({"region": "bog", "config": {"image": format!("dir://{image_s}"),
            "init": {"exec": ["/bin/sh", "-c", script]},
            "services": [{"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 80}]}]}}),
        )
        .await;
    agent.wait_state("life", &id, "started").await;
    let m = agent
        .ok(Method::GET, &format!("/v1/apps/life/machines/{id}"), None)
        .await;
    let host_port = m["host_ports"]["8080"]
        .as_u64()
        .expect("a host port for 8080");
    let env = wait_for(Duration::from_secs(10), "env.out", || {
        std::fs::read_to_string(image.join("env.out"))
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    assert_eq!(env.trim(), format!("{id} bog life {host_port}"));

    // signal by number and by name
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/life/machines/{id}/signal"),
            Some(json!({"signal": 10})),
        )
        .await;
    wait_for(Duration::from_secs(10), "USR1", || {
        std::fs::read_to_string(image.join("signals.log"))
            .ok()
            .filter(|s| s.contains("got USR1"))
    });

    let pid1 = agent.pid("life", &id).await;
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/life/machines/{id}/stop"),
            Some(json!({"signal": "SIGINT", "timeout": "10s"})),
        )
        .await;
    agent.wait_state("life", &id, "stopped").await;
    let log = std::fs::read_to_string(image.join("signals.log")).unwrap();
    assert!(
        log.contains("got INT"),
        "the child did not see SIGINT: {log}"
    );
    assert!(!alive(pid1), "process {pid1} survived stop");
    let events = agent.events("life", &id).await;
    let exit = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "exit")
        .unwrap();
    assert_eq!(exit["request"]["exit_event"]["requested_stop"], true);

    let (s, v) = agent
        .call(
            Method::POST,
            &format!("/v1/apps/life/machines/{id}/start"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["previous_state"], "stopped");
    agent.wait_state("life", &id, "started").await;
    let pid2 = wait_for(Duration::from_secs(10), "new pid", || {
        let pid = futures_block(agent.pid("life", &id));
        (pid != pid1).then_some(pid)
    });
    assert!(alive(pid2));

    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/life/machines/{id}/restart?signal=SIGTERM&timeout=5"),
            None,
        )
        .await;
    agent.wait_state("life", &id, "started").await;
    let pid3 = agent.pid("life", &id).await;
    assert_ne!(pid3, pid2);
    assert!(!alive(pid2) && alive(pid3));

    let (s, v) = agent
        .call(
            Method::DELETE,
            &format!("/v1/apps/life/machines/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{v}");
    assert!(alive(pid3), "a refused destroy killed the machine");
    agent
        .ok(
            Method::DELETE,
            &format!("/v1/apps/life/machines/{id}?kill=true"),
            None,
        )
        .await;
    agent.wait_state("life", &id, "destroyed").await;
    wait_for(Duration::from_secs(10), "process gone", || {
        (!alive(pid3)).then_some(())
    });
    let logs = agent
        .http
        .get(format!("{}/v1/apps/life/logs?machine={id}", agent.url))
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "logs are NDJSON: {logs}"
    );
}

/// Runs a future to completion from sync code inside the multi-thread runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn on_failure_restarts_up_to_max_retries_then_stops() {
    let (tmp, image, image_s) = setup();
    let agent = AgentProc::start(&tmp.path().join("data"));
    agent.create_app("crashy").await;
    let id = agent
        .create(
            "crashy",
            json!({"config": {"image": image_s,
            "init": {"exec": ["/bin/sh", "-c", "echo run >> runs.log; exit 3"]},
            "restart": {"policy": "on-failure", "max_retries": 2}}}),
        )
        .await;
    agent.wait_state("crashy", &id, "stopped").await;
    let runs = std::fs::read_to_string(image.join("runs.log")).unwrap();
    assert_eq!(runs.lines().count(), 3, "one run and two retries");
    let events = agent.events("crashy", &id).await;
    let exits: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "exit")
        .collect();
    assert_eq!(exits.len(), 3, "{events}");
    assert_eq!(exits[0]["request"]["exit_event"]["exit_code"], 3);
    assert_eq!(exits[0]["request"]["exit_event"]["restarting"], false);
    assert_eq!(exits[0]["status"], "stopped");
    assert_eq!(exits[1]["request"]["exit_event"]["restarting"], true);
    let m = agent
        .ok(Method::GET, &format!("/v1/apps/crashy/machines/{id}"), None)
        .await;
    assert_eq!(m["state"], "stopped");
}

/// The OOM test's memory hog: refuses (exit 99) unless its own cgroup limits memory to at most
/// 512 MiB, then doubles a string until the limit stops it.
const HOG: &str = r#"
v1=/sys/fs/cgroup/memory$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes
v2=/sys/fs/cgroup$(grep '^0::' /proc/self/cgroup | cut -d: -f3)/memory.max
lim=$(cat "$v1" 2>/dev/null || cat "$v2" 2>/dev/null)
case "$lim" in ''|max|*[!0-9]*) exit 99;; esac
[ "$lim" -le 536870912 ] || exit 99
x=aaaaaaaa; while :; do x="$x$x"; done
"#;

fn memory_cgroup_available() -> Result<(), String> {
    if !nix_is_root() {
        return Err("not running as root".into());
    }
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    if v1 || v2 {
        Ok(())
    } else {
        Err("no cgroup memory controller".into())
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_oom_killed_while_its_neighbour_runs() {
    if !common::privileged_or_skip(
        "a_memory_hog_is_oom_killed_while_its_neighbour_runs",
        memory_cgroup_available(),
    ) {
        return;
    }
    let (tmp, _image, image_s) = setup();
    let agent = AgentProc::start(&tmp.path().join("data"));
    agent.create_app("mem").await;
    let guest = json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 256});
    let calm = agent
        .create("mem", json!({"config": {"image": image_s, "guest": guest, "init": {"exec": ["sleep", "300"]}}}))
        .await;
    agent.wait_state("mem", &calm, "started").await;
    // Doubles a shell string until the 256 MB limit stops it — after checking, from inside,
    // that its own cgroup has that limit (v1 or v2): without one it exits 99 instead of eating
    // the host's memory.
    let hog = agent
        .create(
            "mem",
            json!({"config": {"image": image_s, "guest": guest, "restart": {"policy": "no"},
            "init": {"exec": ["/bin/sh", "-c", HOG]}}}),
        )
        .await;
    agent.wait_state("mem", &hog, "stopped").await;
    let events = agent.events("mem", &hog).await;
    let exit = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "exit")
        .expect("an exit event");
    assert_ne!(
        exit["request"]["exit_event"]["exit_code"], 99,
        "the hog found no memory limit on its own cgroup: the runtime did not enforce it"
    );
    assert_eq!(
        exit["request"]["exit_event"]["oom_killed"], true,
        "{events}"
    );
    let m = agent
        .ok(Method::GET, &format!("/v1/apps/mem/machines/{calm}"), None)
        .await;
    assert_eq!(m["state"], "started", "the neighbour kept running");
    assert!(alive(agent.pid("mem", &calm).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_agent_then_restart_relaunches_exactly_once() {
    let (tmp, image, image_s) = setup();
    let data = tmp.path().join("data");
    let mut agent = AgentProc::start(&data);
    agent.create_app("durable").await;
    // Each machine also leaves a background child: the parent-death signal kills only the main
    // process when the agent dies, so this one survives the agent and only the next agent's
    // reaping (process group, cgroup) can end it.
    let config = json!({"image": image_s, "init": {"exec": ["/bin/sh", "-c", "sleep 301 & echo $! >> orphans-$FLY_MACHINE_ID.log; echo $$ >> starts-$FLY_MACHINE_ID.log; exec sleep 300"]}});
    let a = agent
        .create("durable", json!({"name": "a", "config": config}))
        .await;
    let b = agent
        .create("durable", json!({"name": "b", "config": config}))
        .await;
    let parked = agent
        .create(
            "durable",
            json!({"name": "parked", "skip_launch": true, "config": config}),
        )
        .await;
    agent.wait_state("durable", &a, "started").await;
    agent.wait_state("durable", &b, "started").await;
    let stopped = agent
        .create("durable", json!({"name": "stopped", "config": config}))
        .await;
    agent.wait_state("durable", &stopped, "started").await;
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/durable/machines/{stopped}/stop"),
            None,
        )
        .await;
    agent.wait_state("durable", &stopped, "stopped").await;
    let old = [
        agent.pid("durable", &a).await,
        agent.pid("durable", &b).await,
    ];

    // A second agent on the same data dir is refused before it touches anything.
    let second = Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(["agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("ALOFT_LOG", "warn")
        .output()
        .expect("second agent runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second agent must not start");
    assert!(
        stderr.contains("in use by another agent")
            && stderr.contains(&agent.child.id().to_string()),
        "refusal names the holder: {stderr}"
    );
    assert!(
        old.iter().all(|p| alive(*p)),
        "the refused agent reaped nothing"
    );
    assert_eq!(agent.pid("durable", &a).await, old[0]);

    // The lock dies with the agent: the next one starts.
    agent.kill9();
    let orphans: Vec<i32> = [&a, &b]
        .iter()
        .flat_map(|id| {
            std::fs::read_to_string(image.join(format!("orphans-{id}.log")))
                .unwrap()
                .lines()
                .map(|l| l.parse::<i32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        orphans.iter().all(|p| alive(*p)),
        "the background children outlive the killed agent (the test needs them to)"
    );
    let agent = AgentProc::start(&data);
    for pid in &orphans {
        wait_for(
            Duration::from_secs(10),
            "the old background child reaped",
            || (!alive(*pid)).then_some(()),
        );
    }
    for id in [&a, &b] {
        agent.wait_state("durable", id, "started").await;
    }
    for pid in old {
        wait_for(Duration::from_secs(10), "old process gone", || {
            (!alive(pid)).then_some(())
        });
    }
    for id in [&a, &b] {
        let starts = std::fs::read_to_string(image.join(format!("starts-{id}.log"))).unwrap();
        let pids: Vec<i32> = starts.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(
            pids.len(),
            2,
            "machine {id} launched once before and exactly once after: {pids:?}"
        );
        assert_eq!(
            pids.iter().filter(|p| alive(**p)).count(),
            1,
            "exactly one live process for {id}"
        );
        let events = agent.events("durable", id).await;
        assert!(
            events
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "exit" && e["request"]["agent_restarted"] == true),
            "events say the agent restarted: {events}"
        );
    }
    let list = agent
        .ok(Method::GET, "/v1/apps/durable/machines", None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 4, "state intact");
    let state_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of(&parked), "created");
    assert_eq!(state_of(&stopped), "stopped");
    assert!(!image.join(format!("starts-{parked}.log")).exists());
}

/// Reconcile after a kill -9 in the middle of a stop: the machine caught `stopping` ends
/// `stopped` (not relaunched), and its process does not survive the restart (architecture
/// issue: this branch had no test).
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_stop_then_restart_settles_it_stopped() {
    let (tmp, _image, image_s) = setup();
    let data = tmp.path().join("data");
    let mut agent = AgentProc::start(&data);
    agent.create_app("settle").await;
    // Ignores SIGTERM, so a stop waits out its 60 s timeout: long enough to be caught.
    let config = json!({"image": image_s, "stop_config": {"signal": "SIGTERM", "timeout": "60s"},
        "init": {"exec": ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"]}});
    let id = agent.create("settle", json!({"config": config})).await;
    agent.wait_state("settle", &id, "started").await;
    let pid = agent.pid("settle", &id).await;
    // The stop blocks for the timeout: fire it without waiting for the answer.
    let stop = agent
        .http
        .post(format!("{}/v1/apps/settle/machines/{id}/stop", agent.url))
        .bearer_auth(&agent.token);
    tokio::spawn(async move {
        let _ = stop.send().await;
    });
    let path = format!("/v1/apps/settle/machines/{id}");
    common::wait_for_async(common::PATIENCE, "the machine stopping", || async {
        let m = agent.ok(Method::GET, &path, None).await;
        (m["state"] == "stopping").then_some(())
    })
    .await;
    agent.kill9();

    let agent = AgentProc::start(&data);
    agent.wait_state("settle", &id, "stopped").await;
    wait_for(
        Duration::from_secs(10),
        "the stopped machine's process gone",
        || (!alive(pid)).then_some(()),
    );
    let events = agent.events("settle", &id).await;
    let starts = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "start")
        .count();
    assert_eq!(starts, 1, "not relaunched: {events}");
}
