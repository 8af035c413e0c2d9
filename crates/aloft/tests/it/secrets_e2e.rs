//! `aloft secrets` against a real agent process (process runtime): a secret is in the machine's
//! environment (over the config's `env`) and nowhere else — not in any API answer, the SQLite
//! files, the agent's log, machine logs or events; setting one restarts the started machines
//! (unless `--stage`, then `secrets deploy` does); bad input is refused with a 4xx and changes
//! nothing; the key file is 0600; an agent given another key fails the machine's start with a
//! clear reason instead of panicking.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{aloft_stdin, ok, wait_for, AgentProc, PATIENCE};
use aloft_testkit::agent::Launch;

/// Values no other bytes of a test contain by chance.
const V1: &str = "s3cr3t-Value-One-9f1c2e";
const V2: &str = "s3cr3t-Value-Two-7a4b8d";
const KEY_VALUE: &str = "api-KEY-value-5e6f70";

/// What the machine last saw in `$DB_PASSWORD` (it writes it at every start).
fn seen(dir: &Path, id: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(format!("seen-{id}"))).ok()
}

fn wait_seen(dir: &Path, id: &str, want: &str) {
    wait_for(PATIENCE, &format!("machine {id} to see {want:?}"), || {
        seen(dir, id).filter(|s| s == want)
    });
}

async fn secrets(agent: &AgentProc, app: &str) -> Value {
    agent
        .ok(Method::GET, &format!("/v1/apps/{app}/secrets"), None)
        .await
}

/// Every answer a client can get about the app and its machine, as one string.
async fn every_answer(agent: &AgentProc, app: &str, id: &str) -> String {
    let mut out = String::new();
    let mut paths = vec![
        format!("/v1/apps/{app}"),
        "/v1/apps?org_slug=personal".to_string(),
        format!("/v1/apps/{app}/machines"),
        format!("/v1/apps/{app}/machines/{id}"),
        format!("/v1/apps/{app}/machines/{id}/events"),
        format!("/v1/apps/{app}/machines/{id}/versions"),
        format!("/v1/apps/{app}/machines/{id}/metadata"),
        format!("/v1/apps/{app}/secrets"),
        format!("/v1/apps/{app}/releases"),
    ];
    let releases = agent
        .ok(Method::GET, &format!("/v1/apps/{app}/releases"), None)
        .await;
    for r in releases.as_array().unwrap() {
        paths.push(format!("/v1/apps/{app}/releases/{}", r["version"]));
    }
    for p in paths {
        let (_, v) = agent.call(Method::GET, &p, None).await;
        out.push_str(&v.to_string());
    }
    // Release events and logs are NDJSON.
    for r in releases.as_array().unwrap() {
        let url = format!(
            "{}/v1/apps/{app}/releases/{}/events",
            agent.url, r["version"]
        );
        out.push_str(&text(agent, &url).await);
    }
    out.push_str(&text(agent, &format!("{}/v1/apps/{app}/logs", agent.url)).await);
    out
}

async fn text(agent: &AgentProc, url: &str) -> String {
    agent
        .http
        .get(url)
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The bytes of the agent's SQLite files (database, WAL, shared memory).
fn store_bytes(data: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        if let Ok(b) = std::fs::read(data.join(name)) {
            bytes.extend(b);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn assert_nowhere(what: &str, bytes: &[u8]) {
    for v in [V1, V2, KEY_VALUE] {
        assert!(!contains(bytes, v), "{what} holds a secret value");
    }
}

#[tokio::test]
async fn secrets_reach_machines_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent_log = tmp.path().join("agent.log");
    let mut agent = AgentProc::launch(
        &data,
        Launch {
            env: vec![("ALOFT_LOG", "debug".into())],
            log: Some(agent_log.clone()),
            ..Launch::default()
        },
    );
    let app = "vault";
    agent.create_app(app).await;
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let script = format!(
        "printf %s \"$DB_PASSWORD\" > {dir}/seen-$FLY_MACHINE_ID.tmp && mv {dir}/seen-$FLY_MACHINE_ID.tmp {dir}/seen-$FLY_MACHINE_ID; echo started; exec sleep 3600",
        dir = out_dir.display()
    );
    let id = agent
        .create(
            app,
            json!({"config": {
                "image": tmp.path().display().to_string(),
                "env": {"DB_PASSWORD": "from-env", "MODE": "env"},
                "init": {"exec": ["/bin/sh", "-c", script]},
            }}),
        )
        .await;
    agent.wait_state(app, &id, "started").await;
    wait_seen(&out_dir, &id, "from-env");
    let pid0 = agent.pid(app, &id).await;
    // A machine that is not started is left alone by the restarts.
    let idle = agent
        .create(
            app,
            json!({"skip_launch": true, "config": {
                "image": tmp.path().display().to_string(),
                "init": {"exec": ["/bin/sh", "-c", script]},
            }}),
        )
        .await;

    // Set two secrets: the started machine is restarted and sees the secret over [env].
    let out = ok(&aloft_stdin(
        &agent,
        &[
            "secrets",
            "set",
            &format!("DB_PASSWORD={V1}"),
            "API_KEY=-",
            "-a",
            app,
        ],
        Some(KEY_VALUE),
    ));
    assert!(out.contains("Restarting the machines of vault"), "{out}");
    wait_seen(&out_dir, &id, V1);
    agent.wait_state(app, &id, "started").await;
    let pid1 = agent.pid(app, &id).await;
    assert_ne!(pid0, pid1, "a new process");
    let machine = agent
        .ok(Method::GET, &format!("/v1/apps/{app}/machines/{id}"), None)
        .await;
    assert_eq!(
        machine["config"]["metadata"]["aloft_secrets"], "API_KEY,DB_PASSWORD",
        "the config names the secrets: {machine}"
    );
    assert_eq!(machine["config"]["env"]["DB_PASSWORD"], "from-env");

    let list = secrets(&agent, app).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["API_KEY", "DB_PASSWORD"]);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "deployed" && s["digest"].as_str().unwrap().len() == 16));
    let table = ok(&aloft_stdin(&agent, &["secrets", "list", "-a", app], None));
    assert!(
        table.contains("NAME") && table.contains("DIGEST") && table.contains("Deployed"),
        "{table}"
    );

    // --stage: stored, no restart; `secrets deploy` restarts.
    let digest_before = list[1]["digest"].clone();
    let out = ok(&aloft_stdin(
        &agent,
        &[
            "secrets",
            "set",
            &format!("DB_PASSWORD={V2}"),
            "--stage",
            "-a",
            app,
        ],
        None,
    ));
    assert!(out.contains("staged"), "{out}");
    let list = secrets(&agent, app).await;
    assert_eq!(list[1]["status"], "staged");
    assert_ne!(
        list[1]["digest"], digest_before,
        "a new value, a new digest"
    );
    assert_eq!(agent.pid(app, &id).await, pid1, "staging restarts nothing");
    assert_eq!(seen(&out_dir, &id).as_deref(), Some(V1));
    ok(&aloft_stdin(
        &agent,
        &["secrets", "deploy", "-a", app],
        None,
    ));
    wait_seen(&out_dir, &id, V2);
    // ...and gets the newest values when it starts.
    assert_eq!(seen(&out_dir, &idle), None, "never started by a restart");
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/{app}/machines/{idle}/start"),
            None,
        )
        .await;
    wait_seen(&out_dir, &idle, V2);
    assert_eq!(secrets(&agent, app).await[1]["status"], "deployed");

    // Import (dotenv from stdin) and unset.
    ok(&aloft_stdin(
        &agent,
        &["secrets", "import", "--stage", "-a", app],
        Some("# comment\nexport EXTRA='x y'\n"),
    ));
    // --detach returns once the restart is under way; the agent finishes it.
    let out = ok(&aloft_stdin(
        &agent,
        &[
            "secrets", "unset", "API_KEY", "EXTRA", "--detach", "-a", app,
        ],
        None,
    ));
    assert!(out.contains("it goes on without this command"), "{out}");
    agent.wait_state(app, &id, "started").await;
    let machine = wait_for_metadata(&agent, app, &id, "DB_PASSWORD").await;
    assert_eq!(machine["state"], "started");

    // Bad input: a 4xx, nothing changed.
    let before = secrets(&agent, app).await;
    let pid = agent.pid(app, &id).await;
    let huge = "x".repeat(70 * 1024);
    for (values, status) in [
        (json!({"1BAD": "v"}), StatusCode::BAD_REQUEST),
        (json!({"BAD-NAME": "v"}), StatusCode::BAD_REQUEST),
        (json!({"FLY_APP_NAME": "v"}), StatusCode::BAD_REQUEST),
        (json!({"PORT": "1"}), StatusCode::BAD_REQUEST),
        (json!({"OK": "a\u{0}b"}), StatusCode::BAD_REQUEST),
        (json!({"OK": huge}), StatusCode::PAYLOAD_TOO_LARGE),
        (json!({"OK": "v", "NOPE": null}), StatusCode::NOT_FOUND),
        (json!({}), StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = agent
            .call(
                Method::POST,
                &format!("/v1/apps/{app}/secrets"),
                Some(json!({ "values": values })),
            )
            .await;
        assert_eq!(s, status, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (s, _) = agent
        .call(
            Method::POST,
            "/v1/apps/nope/secrets",
            Some(json!({"values": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(secrets(&agent, app).await, before, "nothing changed");
    assert_eq!(agent.pid(app, &id).await, pid, "nothing restarted");
    let out = aloft_stdin(&agent, &["secrets", "set", "1BAD=v", "-a", app], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        crate::common::combined(&out).contains("not a valid environment variable name"),
        "{}",
        crate::common::combined(&out)
    );

    // The value is nowhere but in the machine.
    // Each place looked at holds the secrets' names (the right files, real answers).
    let answers = every_answer(&agent, app, &id).await;
    assert!(answers.contains("DB_PASSWORD") && answers.contains("started"));
    assert_nowhere("the API's answers", answers.as_bytes());
    let store = store_bytes(&data);
    assert!(
        contains(&store, "DB_PASSWORD"),
        "the secrets table is in these files"
    );
    assert_nowhere("the SQLite files", &store);
    let log = std::fs::read(&agent_log).unwrap();
    assert!(
        contains(&log, "launched") && contains(&log, "secrets operation created"),
        "the debug log shows the launches and operations"
    );
    assert_nowhere("the agent's log", &log);
    let mode = std::fs::metadata(data.join("secrets.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    // Another key: the machine's start fails, saying why; the agent lives on.
    agent.kill9();
    let other_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let agent = AgentProc::launch(
        &data,
        Launch {
            env: vec![("ALOFT_SECRETS_KEY", other_key.into())],
            ..Launch::default()
        },
    );
    agent.wait_state(app, &id, "failed").await;
    let events = agent.events(app, &id).await.to_string();
    assert!(events.contains("not the one it was set with"), "{events}");
    assert_nowhere("events after a failed start", events.as_bytes());
    let (s, v) = agent
        .call(
            Method::POST,
            &format!("/v1/apps/{app}/machines/{id}/start"),
            None,
        )
        .await;
    assert!(s.is_client_error(), "{s} {v}");
    assert!(
        v["error"].as_str().unwrap().contains("ALOFT_SECRETS_KEY"),
        "{v}"
    );
}

async fn wait_for_metadata(agent: &AgentProc, app: &str, id: &str, names: &str) -> Value {
    aloft_testkit::wait_for_async(
        PATIENCE,
        "the machine to start with the new secrets",
        || async {
            let m = agent
                .ok(Method::GET, &format!("/v1/apps/{app}/machines/{id}"), None)
                .await;
            (m["config"]["metadata"]["aloft_secrets"] == names && m["state"] == "started")
                .then_some(m)
        },
    )
    .await
}
