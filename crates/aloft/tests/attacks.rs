//! Attacks on a real `aloft agent` process: what an attacker or an unlucky operator does to it
//! (kill -9 loops during start-up, exhausting its connections, slow clients, a full disk, other
//! apps' ports and images). Each test says which fault of the hardening issue it guards.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{alive, setup, AgentProc};
use rand::Rng;
use reqwest::Method;
use serde_json::json;

/// Fault 6: an agent restarted right after a `kill -9` must not be refused because the dead
/// agent's lock is still held (by the dying process, or by a child between fork and exec).
/// The loop kills agents at random moments of their start-up, while they relaunch machines.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loop_during_start_up_never_locks_the_next_agent_out() {
    let (tmp, image, image_s) = setup();
    let data = tmp.path().join("data");
    let ids = {
        let agent = AgentProc::start(&data);
        agent
            .ok(Method::POST, "/v1/apps", Some(json!({"app_name": "loop"})))
            .await;
        let config = json!({"image": image_s, "init": {"exec": ["/bin/sh", "-c", "echo $$ >> starts-$FLY_MACHINE_ID.log; exec sleep 300"]}});
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = agent.create("loop", json!({"config": config})).await;
            agent.wait_state("loop", &id, "started").await;
            ids.push(id);
        }
        ids
        // Dropped: kill -9.
    };
    let mut rng = rand::thread_rng();
    for round in 0..20 {
        let stderr_path = tmp.path().join(format!("agent-{round}.err"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(["agent", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("ALOFT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        // The moment of the kill is the point of the test: anywhere in the start-up.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..250)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "round {round}: the agent exited by itself ({status}) instead of starting: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let agent = AgentProc::start(&data);
    for id in &ids {
        agent.wait_state("loop", id, "started").await;
        let log = image.join(format!("starts-{id}.log"));
        common::wait_for(Duration::from_secs(10), "exactly one live process", || {
            let starts = std::fs::read_to_string(&log).unwrap();
            let live = starts
                .lines()
                .filter_map(|l| l.parse().ok())
                .filter(|p| alive(*p))
                .count();
            (live == 1).then_some(())
        });
    }
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// A request body of `mib` MiB of zeros, produced chunk by chunk (the client holds none of it).
fn zeros(mib: usize) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let stream =
        futures_util::stream::iter((0..mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    reqwest::Body::wrap_stream(stream)
}

/// Fault 7 (uploads): image uploads are streamed to disk while hashed, not held in memory, and
/// only a few run at once. Before the fix three 300 MB uploads took the agent past 1.6 GB.
#[tokio::test(flavor = "multi_thread")]
async fn large_image_uploads_do_not_grow_the_agent() {
    let (tmp, _image, _) = setup();
    let agent = AgentProc::start(&tmp.path().join("data"));
    agent
        .ok(Method::POST, "/v1/apps", Some(json!({"app_name": "big"})))
        .await;
    let before = peak_rss_mib(agent.child.id());
    let wrong = "0".repeat(64);
    let upload = || {
        agent
            .http
            .put(format!("{}/v1/apps/big/images/{wrong}", agent.url))
            .bearer_auth(&agent.token)
            .body(zeros(200))
            .send()
    };
    let (a, b, c) = tokio::join!(upload(), upload(), upload());
    let mut statuses = Vec::new();
    for r in [a, b, c] {
        let resp = r.expect("the agent answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if status == 400 {
            assert!(text.contains("digest mismatch"), "{text}");
        }
        statuses.push(status);
    }
    statuses.sort();
    println!("statuses: {statuses:?}");
    // Two are received and refused for their digest; the third waits for no slot: 429.
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 429) && statuses.contains(&400),
        "{statuses:?}"
    );
    let peak = peak_rss_mib(agent.child.id());
    println!("agent peak RSS: {before} MiB before, {peak} MiB after 3 × 200 MiB uploads");
    assert!(
        peak < before + 100,
        "the uploads were held in memory: peak RSS {peak} MiB (was {before} MiB)"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("data/images"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
