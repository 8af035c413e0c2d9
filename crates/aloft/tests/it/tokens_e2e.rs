//! Scoped API tokens end to end: a real `aloft agent` process driven by the real CLI. A deploy
//! token made with `aloft tokens create deploy` deploys, scales and reads its app and nothing
//! else; read-only tokens read; revoked and expired tokens are refused; the app's events name
//! the token that changed it; the database files never hold a secret.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common;
use common::{wait_for, AgentProc};

const RUN_SH: &str = "#!/bin/sh\nexec sleep 100000\n";

/// Fields drop in order: the agent first (its drop reaps its machines), then the temp dir.
struct World {
    agent: AgentProc,
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("run.sh"), RUN_SH).unwrap();
        std::fs::write(
            app.join("fly.toml"),
            "app = \"tok-a\"\nprimary_region = \"gru\"\nkill_timeout = \"1s\"\n\n[processes]\napp = \"sh run.sh\"\n",
        )
        .unwrap();
        let agent = AgentProc::start_with(&tmp.path().join("data"), &["--no-proxy"], None);
        World { agent, tmp }
    }

    /// `aloft args` in the app directory with `token`.
    fn aloft(&self, token: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(args)
            .current_dir(self.tmp.path().join("app"))
            .env("ALOFT_API_URL", &self.agent.url)
            .env("ALOFT_API_TOKEN", token)
            .env_remove("ALOFT_APP")
            .stdin(Stdio::null())
            .output()
            .expect("aloft runs")
    }

    fn ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.aloft(token, args);
        assert!(
            out.status.success(),
            "aloft {args:?} failed:\n{}",
            common::combined(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, token: &str, args: &[&str]) -> String {
        let out = self.aloft(token, args);
        let text = common::combined(&out);
        assert!(!out.status.success(), "aloft {args:?} succeeded:\n{text}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn admin(&self, args: &[&str]) -> String {
        self.ok(&self.agent.token.clone(), args)
    }

    fn json(&self, token: &str, args: &[&str]) -> Value {
        let text = self.ok(token, args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// A new token of `args` (`tokens create …`), as printed on stdout.
    fn create_token(&self, args: &[&str]) -> String {
        let mut all = vec!["tokens", "create"];
        all.extend_from_slice(args);
        let out = self.aloft(&self.agent.token, &all);
        assert!(out.status.success(), "{}", common::combined(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("shown only once"), "{stderr}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every `state.db*` file of the data dir holds none of `secrets`; some hold `marker`.
fn assert_no_secret_in_db_files(data: &Path, secrets: &[&str], marker: &str) {
    let mut seen = false;
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("state.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for s in secrets {
            assert!(!contains(&bytes, s), "{name} holds a token secret");
        }
        seen |= contains(&bytes, marker);
    }
    assert!(
        seen,
        "no database file holds {marker:?}: the grep looked nowhere"
    );
}

#[test]
fn a_deploy_token_deploys_scales_and_reads_its_app_and_nothing_else() {
    let w = World::new();
    w.admin(&["apps", "create", "tok-a"]);
    w.admin(&["apps", "create", "tok-b"]);
    // The app comes from fly.toml, as for `fly tokens create deploy`.
    let deploy = w.create_token(&["deploy", "--name", "ci deploy"]);
    assert!(deploy.starts_with("aloft_deploy_"), "{deploy}");

    // Deploy (packs the directory, uploads it, creates the release), scale, read.
    // --ha=false: no standby (it would stay stopped); the test waits for two started machines.
    w.ok(&deploy, &["deploy", "--yes", "--ha=false"]);
    w.ok(&deploy, &["scale", "count", "app=2", "--yes"]);
    let machines = wait_for(Duration::from_secs(60), "two started machines", || {
        let ms = w.json(&deploy, &["machine", "list", "-a", "tok-a", "--json"]);
        let ms = ms.as_array().unwrap().clone();
        (ms.len() == 2 && ms.iter().all(|m| m["state"] == "started")).then_some(ms)
    });
    assert_eq!(machines.len(), 2);
    w.ok(&deploy, &["status"]);
    w.ok(&deploy, &["logs", "--no-tail"]);
    w.ok(&deploy, &["releases"]);

    // Not another app, not the app's deletion, not tokens.
    for args in [
        &["status", "-a", "tok-b"][..],
        &["machine", "list", "-a", "tok-b"],
        &["apps", "destroy", "tok-a", "--yes"],
        &["apps", "create", "tok-c"],
        &["tokens", "create", "org"],
        &["tokens", "list"],
    ] {
        let err = w.fails(&deploy, args);
        assert!(
            err.contains("403") && err.contains("ci deploy"),
            "{args:?}: {err}"
        );
    }

    // A read-only token reads, and changes nothing.
    let reader = w.create_token(&["readonly", "-n", "dash", "-x", "1h"]);
    w.ok(&reader, &["status", "-a", "tok-b"]);
    let err = w.fails(&reader, &["scale", "count", "app=1", "--yes"]);
    assert!(err.contains("403") && err.contains("dash"), "{err}");

    // The app's events name the deploy token for its changes; reads are not there.
    let events = w.json(&w.agent.token, &["apps", "events", "-a", "tok-a", "--json"]);
    let events = events.as_array().unwrap();
    let by_deploy: Vec<&str> = events
        .iter()
        .filter(|e| e["actor"].as_str().unwrap().starts_with("ci deploy ("))
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        by_deploy
            .iter()
            .any(|m| m.starts_with("POST /v1/apps/tok-a/releases → 201")),
        "{events:?}"
    );
    assert!(
        by_deploy
            .iter()
            .any(|m| m.starts_with("POST /v1/apps/tok-a/scale → 201")),
        "{events:?}"
    );
    assert!(
        by_deploy
            .iter()
            .any(|m| m.starts_with("DELETE /v1/apps/tok-a → 403")),
        "the refused attempt is recorded too: {events:?}"
    );
    assert!(
        !by_deploy.iter().any(|m| m.starts_with("GET ")),
        "{events:?}"
    );
    let table = w.admin(&["apps", "events", "-a", "tok-a"]);
    assert!(
        table.contains("ACTOR") && table.contains("ci deploy"),
        "{table}"
    );

    // No secret in the database or its WAL.
    let secret = |t: &str| t.rsplit('_').next().unwrap().to_string();
    let (s1, s2) = (secret(&deploy), secret(&reader));
    assert_no_secret_in_db_files(&w.agent.data_dir, &[&s1, &s2, &w.agent.token], "ci deploy");

    // Revoked: 401 from then on, saying so.
    let tokens = w.json(&w.agent.token, &["tokens", "list", "--json"]);
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci deploy")
        .map(|t| t["id"].as_str().unwrap().to_string())
        .unwrap();
    assert!(
        tokens.to_string().find(&s1).is_none(),
        "tokens list shows no secret"
    );
    let out = w.admin(&["tokens", "revoke", &id]);
    assert!(out.contains(&id), "{out}");
    let err = w.fails(&deploy, &["status"]);
    assert!(err.contains("401") && err.contains("revoked"), "{err}");
    let list = w.admin(&["tokens", "list"]);
    assert!(
        list.contains("data-dir") && list.contains("REVOKED"),
        "{list}"
    );
}

#[test]
fn bad_token_commands_fail_with_what_to_do() {
    let w = World::new();
    w.admin(&["apps", "create", "tok-a"]);
    let out = w.aloft(&w.agent.token, &["tokens", "create", "admin"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::combined(&out));
    assert!(common::combined(&out).contains("org, deploy or readonly"));
    for (args, needle) in [
        (&["tokens", "create", "deploy", "-a", "ghost"][..], "ghost"),
        (&["tokens", "create", "org", "-a", "tok-a"], "no app"),
        (&["tokens", "revoke", "nope"], "nope"),
        (&["tokens", "revoke", "data-dir"], "restart"),
    ] {
        let err = w.fails(&w.agent.token, args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = w.aloft(&w.agent.token, &["tokens", "create", "org", "-x", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::combined(&out));
    // A deploy token with no app anywhere (no -a, no fly.toml there).
    let out = Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(["tokens", "create", "deploy"])
        .current_dir(w.tmp.path())
        .env("ALOFT_API_URL", &w.agent.url)
        .env("ALOFT_API_TOKEN", &w.agent.token)
        .env_remove("ALOFT_APP")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-a APP"),
        "{}",
        common::combined(&out)
    );
    // An expired token (1s) gets a 401 naming it.
    let short = w.create_token(&["readonly", "-n", "brief", "-x", "1s"]);
    let err = wait_for(Duration::from_secs(10), "the 1s token to expire", || {
        let out = w.aloft(&short, &["apps", "list"]);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    assert!(
        err.contains("401") && err.contains("brief") && err.contains("expired"),
        "{err}"
    );
}
