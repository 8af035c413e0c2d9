//! Volumes end to end: a real `aloft agent`, `aloft volumes`, and a container machine (a
//! static busybox image pushed to the agent) with the volume mounted at `/data`.
//!
//! Root only (loop devices, containers); skipped with a printed reason elsewhere, failed under
//! `ALOFT_REQUIRE_PRIVILEGED_TESTS=1`. The harness's drop unmounts and frees what the agent
//! left (`aloft_testkit::volumes`); each test checks that nothing of its volumes is left.

use std::process::{Command, Output, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{can_run_containers, privileged_or_skip, push_busybox, AgentProc};

const APP: &str = "vols";

fn aloft(agent: &AgentProc, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .env("ALOFT_API_URL", &agent.url)
        .env("ALOFT_API_TOKEN", &agent.token)
        .env_remove("ALOFT_APP")
        .stdin(Stdio::null())
        .output()
        .expect("aloft runs")
}

fn ok(agent: &AgentProc, args: &[&str]) -> String {
    let out = aloft(agent, args);
    let text = crate::common::combined(&out);
    assert!(out.status.success(), "aloft {args:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn can_run() -> Result<(), String> {
    can_run_containers()?;
    for tool in ["mkfs.ext4", "losetup", "resize2fs", "fsfreeze"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!(
                "{tool} is not installed (apt-get install e2fsprogs util-linux)"
            ));
        }
    }
    Ok(())
}

/// Runs `script` with busybox sh in the machine; (exit code, stdout, stderr).
async fn sh(agent: &AgentProc, id: &str, script: &str) -> (i64, String, String) {
    let v = agent
        .ok(
            Method::POST,
            &format!("/v1/apps/{APP}/machines/{id}/exec"),
            Some(json!({"command": ["/bin/busybox", "sh", "-c", script], "timeout": 120})),
        )
        .await;
    (
        v["exit_code"].as_i64().unwrap(),
        v["stdout"].as_str().unwrap().to_string(),
        v["stderr"].as_str().unwrap().to_string(),
    )
}

/// Size of /data in the machine, 1K blocks (`df`).
async fn df_kb(agent: &AgentProc, id: &str) -> u64 {
    let (code, out, err) = sh(agent, id, "df -k /data | tail -1").await;
    assert_eq!(code, 0, "{err}");
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn machine_config(image: &str, volume: &str) -> Value {
    json!({"config": {
        "image": image,
        "init": {"exec": ["/bin/busybox", "sh", "-c",
            "echo boot >> /data/boots; exec /bin/busybox sleep 100000"]},
        "mounts": [{"volume": volume, "path": "/data"}],
        "stop_config": {"signal": "SIGKILL"},
    }})
}

#[tokio::test(flavor = "multi_thread")]
async fn volume_data_lives_through_restarts_updates_and_a_killed_agent() {
    let test = "volume_data_lives_through_restarts_updates_and_a_killed_agent";
    if !privileged_or_skip(test, can_run()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut agent = AgentProc::start(&data);
    agent.create_app(APP).await;
    let image = push_busybox(&agent, APP, tmp.path()).await;

    // Bad names and sizes are refused, naming the rule.
    let bad = aloft(
        &agent,
        &["volumes", "create", "My-Data", "-a", APP, "--yes"],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("only lowercase letters, digits and _"),
        "{}",
        crate::common::combined(&bad)
    );
    let bad = aloft(
        &agent,
        &["volumes", "create", "data", "-s", "501", "-a", APP],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("1 to 500 GB"));
    let (s, v) = agent
        .call(
            Method::POST,
            &format!("/v1/apps/{APP}/volumes"),
            Some(json!({"name": "data", "size_gb": 1, "encrypt": true})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `encrypt`"),
        "{v}"
    );

    let created: Value = serde_json::from_str(&ok(
        &agent,
        &["volumes", "create", "data", "-s", "1", "-a", APP, "--json"],
    ))
    .unwrap();
    let vol = created[0]["id"].as_str().unwrap().to_string();
    assert_eq!(created[0]["size_gb"], 1);

    // A host-process machine cannot mount it: refused, saying what to do.
    let dir_image = tmp.path().join("dir-image");
    std::fs::create_dir(&dir_image).unwrap();
    let (s, v) = agent
        .call(
            Method::POST,
            &format!("/v1/apps/{APP}/machines"),
            Some(
                json!({"config": {"image": format!("dir://{}", dir_image.display()),
                "init": {"exec": ["sleep", "100"]},
                "mounts": [{"volume": vol, "path": "/data"}]}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("host process"), "{v}");

    let id = agent.create(APP, machine_config(&image, &vol)).await;
    agent.wait_state(APP, &id, "started").await;
    let (_, out, _) = sh(&agent, &id, "echo kept > /data/file; cat /data/boots").await;
    assert_eq!(out, "boot\n");
    let listed = ok(&agent, &["volumes", "list", "-a", APP]);
    assert!(
        listed.contains("ATTACHED VM") && listed.contains(&id),
        "{listed}"
    );

    // Attaching a volume in use, or destroying it, is refused, naming the machine.
    let (s, v) = agent
        .call(
            Method::POST,
            &format!("/v1/apps/{APP}/machines"),
            Some(machine_config(&image, &vol)),
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&id), "{v}");
    let refused = aloft(&agent, &["volumes", "destroy", &vol, "-a", APP, "--yes"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(&format!("attached to machine {id}")),
        "{}",
        crate::common::combined(&refused)
    );

    // Stop and start.
    ok(&agent, &["machine", "stop", &id, "-a", APP]);
    agent.wait_state(APP, &id, "stopped").await;
    ok(&agent, &["machine", "start", &id, "-a", APP]);
    agent.wait_state(APP, &id, "started").await;
    assert_eq!(sh(&agent, &id, "cat /data/boots").await.1, "boot\nboot\n");

    // An update (new env) keeps the volume; swapping it is refused.
    let mut update = machine_config(&image, &vol);
    update["config"]["env"] = json!({"V": "2"});
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/{APP}/machines/{id}"),
            Some(update.clone()),
        )
        .await;
    agent.wait_state(APP, &id, "started").await;
    wait_boots(&agent, &id, 3).await;
    update["config"]["mounts"][0]["volume"] = json!("vol_other");
    let (s, v) = agent
        .call(
            Method::POST,
            &format!("/v1/apps/{APP}/machines/{id}"),
            Some(update),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("swapped"), "{v}");

    // The agent is killed: the container and its volume stay; a new agent adopts it and
    // mounts nothing twice.
    agent.kill9();
    agent = AgentProc::start(&data);
    agent.wait_state(APP, &id, "started").await;
    let (_, out, _) = sh(&agent, &id, "cat /data/file; echo more >> /data/file").await;
    assert_eq!(out, "kept\n");
    let attached = aloft_testkit::volumes::volume_leftovers(&data);
    assert_eq!(
        attached.len(),
        2,
        "one mount and one loop device: {attached:?}"
    );

    // The size holds: writing past it fails inside the machine with ENOSPC.
    let (code, out, err) = sh(
        &agent,
        &id,
        "dd if=/dev/zero of=/data/fill bs=1048576 count=1300; echo rc=$?",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "rc=1"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(df_kb(&agent, &id).await < 1_100_000);
    sh(&agent, &id, "rm /data/fill").await;

    // Extend: online where the host allows it, else at the next start (needs_restart).
    let before = df_kb(&agent, &id).await;
    let ext: Value = serde_json::from_str(&ok(
        &agent,
        &["volumes", "extend", &vol, "-s", "2", "-a", APP, "--json"],
    ))
    .unwrap();
    assert_eq!(ext["volume"]["size_gb"], 2);
    if ext["needs_restart"] == json!(true) {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"NOTE: this host refuses online resizing; the volume grows at the next start\n",
        );
        ok(&agent, &["machine", "stop", &id, "-a", APP]);
        agent.wait_state(APP, &id, "stopped").await;
        ok(&agent, &["machine", "start", &id, "-a", APP]);
        agent.wait_state(APP, &id, "started").await;
    }
    let after = df_kb(&agent, &id).await;
    assert!(after > before + 900_000, "{before} → {after} KiB");
    assert!(sh(&agent, &id, "cat /data/file")
        .await
        .1
        .starts_with("kept\nmore\n"));

    // A snapshot and a fork give the data back, in new volumes.
    let snap: Value = serde_json::from_str(&ok(
        &agent,
        &["volumes", "snapshots", "create", &vol, "-a", APP, "--json"],
    ))
    .unwrap();
    let listed = ok(&agent, &["volumes", "snapshots", "list", &vol, "-a", APP]);
    assert!(listed.contains(snap["id"].as_str().unwrap()), "{listed}");
    let fork: Value = serde_json::from_str(&ok(
        &agent,
        &[
            "volumes", "fork", &vol, "--name", "copy", "-a", APP, "--json",
        ],
    ))
    .unwrap();
    let restored = agent
        .ok(
            Method::POST,
            &format!("/v1/apps/{APP}/volumes"),
            Some(json!({"name": "restored", "snapshot_id": snap["id"]})),
        )
        .await;
    assert_eq!(restored["size_gb"], 2);

    // Destroying the machine keeps its volume, unattached; then it can be destroyed.
    ok(&agent, &["machine", "destroy", &id, "-a", APP, "--force"]);
    let v: Value =
        serde_json::from_str(&ok(&agent, &["volumes", "show", &vol, "-a", APP, "--json"])).unwrap();
    assert_eq!(v["state"], "created");
    assert!(v.get("attached_machine_id").is_none(), "{v}");

    for copy in [
        fork["id"].as_str().unwrap(),
        restored["id"].as_str().unwrap(),
    ] {
        let m = agent.create(APP, machine_config(&image, copy)).await;
        agent.wait_state(APP, &m, "started").await;
        let (_, out, _) = sh(&agent, &m, "cat /data/file").await;
        assert!(out.starts_with("kept\nmore\n"), "{copy}: {out}");
        ok(&agent, &["machine", "destroy", &m, "-a", APP, "--force"]);
    }
    for v in [
        &vol,
        fork["id"].as_str().unwrap(),
        restored["id"].as_str().unwrap(),
    ] {
        ok(&agent, &["volumes", "destroy", v, "-a", APP, "--yes"]);
    }
    assert!(ok(&agent, &["volumes", "list", "-a", APP, "--json"]).trim() == "[]");
    let left = aloft_testkit::volumes::volume_leftovers(&data);
    assert!(left.is_empty(), "{left:?}");
}

/// Waits until the machine has booted `n` times (its init appends a line per boot).
async fn wait_boots(agent: &AgentProc, id: &str, n: usize) {
    crate::common::wait_for_async(
        crate::common::PATIENCE,
        &format!("machine {id} booted {n} times"),
        || async move {
            let (code, out, _) = sh(agent, id, "cat /data/boots").await;
            code == 0 && out.lines().count() >= n
        },
    )
    .await;
}
