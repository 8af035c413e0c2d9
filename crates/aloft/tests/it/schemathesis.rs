//! Schemathesis (property-based API testing, PyPI) against a real `aloft agent` process
//! (127.0.0.1, OS-assigned port, temp data dir) with the OpenAPI description of the agent
//! (`crates/aloft-agent/openapi.json`): a bounded number of generated requests per operation,
//! valid and invalid, must never get a 5xx, break a connection or time out, and the agent must
//! still be alive and answering afterwards, with no panic in its log.
//!
//! Schemathesis is installed by `scripts/install-test-deps.sh` into a venv
//! (`$ALOFT_TEST_VENV`, default `~/.cache/aloft-test-venv`). Without it the test is skipped,
//! unless `CI` is set: then it fails.
//!
//! Every operation is fuzzed. Path parameters name the fixtures created here most of the time
//! (schemathesis dictionaries), so app- and machine-scoped routes reach real code rather than
//! 404s; destructive operations (deleting an app or a machine, leases that would lock the main
//! machine for the whole run, releases) get fixtures of their own. What could harm the host is
//! kept out by `tests/schemathesis/hooks.py`: a generated machine never runs a program that
//! exists here (its program name is replaced by a path that does not exist), and the agent's
//! own `PATH` is an empty directory. Service ports bind 127.0.0.1 only.
//!
//! Knobs: `ALOFT_SCHEMATHESIS_EXAMPLES` (per operation, default 50), `ALOFT_SCHEMATHESIS_SEED`,
//! `ALOFT_SCHEMATHESIS_REPORT_DIR` (HAR and JUnit reports of every request go there),
//! `ALOFT_SCHEMATHESIS_ARGS` (more CLI arguments, e.g. `--mode positive`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aloft_testkit::agent::Launch;
use aloft_testkit::{wait_for_async, AgentProc};
use reqwest::Method;
use serde_json::json;

const DEFAULT_EXAMPLES: u32 = 50;
const DEFAULT_SEED: u64 = 20_240_601;

/// A real `aloft agent` on `<root>/data` (the test kit's harness: SIGKILLed on drop, its
/// machines reaped), its stderr in `<root>/agent.log`, and an empty `PATH`: machines inherit
/// it, so bare program names resolve nowhere.
fn start_agent(root: &Path) -> AgentProc {
    let empty_path = root.join("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();
    AgentProc::launch(
        &root.join("data"),
        Launch {
            args: &["--proxy-bind", "127.0.0.1"],
            env: vec![("PATH", empty_path.into_os_string())],
            log: Some(root.join("agent.log")),
            ..Launch::default()
        },
    )
}

/// A started machine of `app` that sleeps.
async fn machine(agent: &AgentProc, app: &str, image: &str) -> String {
    agent
        .create(
            app,
            json!({"config": {"image": image, "init": {"exec": ["/bin/sleep", "3600"]}}}),
        )
        .await
}

/// The schemathesis CLI of the test venv, if installed.
fn schemathesis() -> Option<PathBuf> {
    let venv = match std::env::var_os("ALOFT_TEST_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/aloft-test-venv"),
    };
    let bin = venv.join("bin/schemathesis");
    bin.is_file().then_some(bin)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A TOML basic string (JSON string escapes are TOML ones).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

struct Fixtures {
    image: String,
    machine: String,
    updated_machine: String,
    lease_machine: String,
    doomed_machine: String,
}

/// Schemathesis configuration: auth, and dictionaries that make path parameters (and machine
/// images) name the fixtures most of the time.
fn config(agent: &AgentProc, f: &Fixtures) -> String {
    let bind = |param: &str, dict: &str, p: f64| {
        format!(
            "{} = {{ dictionary = {}, probability = {p} }}",
            toml_str(param),
            toml_str(dict)
        )
    };
    let params = |app: &str, machine: &str| {
        [
            bind("path.app_name", app, 0.8),
            bind("path.machine_id", machine, 0.8),
            bind("path.key", "key", 0.5),
            bind("path.version", "version", 0.8),
            bind("body.config.image", "image", 0.5),
            bind("body.spec.image", "image", 0.5),
            bind("body.app_name", "new_app", 0.5),
        ]
    };
    let dict = |name: &str, values: &[&str]| {
        let values: Vec<String> = values.iter().map(|v| toml_str(v)).collect();
        format!("{name} = {{ values = [{}] }}\n", values.join(", "))
    };
    let mut s = String::new();
    s += &format!(
        "headers = {{ Authorization = {} }}\n\n[dictionaries]\n",
        toml_str(&format!("Bearer {}", agent.token))
    );
    s += &dict("app", &["fuzz"]);
    s += &dict("doomed_app", &["fuzz-doomed"]);
    s += &dict("release_app", &["fuzz-rel"]);
    s += &dict("machine", &[&f.machine]);
    s += &dict("updated_machine", &[&f.updated_machine]);
    s += &dict("lease_machine", &[&f.lease_machine]);
    s += &dict("doomed_machine", &[&f.doomed_machine]);
    s += &dict("new_app", &["fuzz-new-1", "fuzz-new-2", "fuzz-new-3"]);
    s += &dict("key", &["role", "fly_process_group"]);
    s += "version = { values = [1] }\n";
    s += &dict("image", &[&f.image, &format!("dir://{}", f.image)]);
    s += &format!("\n[parameters]\n{}\n", params("app", "machine").join("\n"));
    // Operations with fixtures of their own (the selections do not overlap).
    for (select, app, machine) in [
        // Deleting the app would leave every other operation with 404s.
        (
            "include-name = \"DELETE /apps/{app_name}\"",
            "doomed_app",
            "machine",
        ),
        // Likewise for the main machine.
        (
            "include-name = \"DELETE /apps/{app_name}/machines/{machine_id}\"",
            "app",
            "doomed_machine",
        ),
        // A lease with a long TTL would lock the main machine for the rest of the run (updates
        // take leases too, with `lease_ttl`).
        ("include-path-regex = \"/lease$\"", "app", "lease_machine"),
        (
            "include-name = \"POST /apps/{app_name}/machines/{machine_id}\"",
            "app",
            "updated_machine",
        ),
        // Releases replace the machines of their app.
        (
            "include-path-regex = \"/(releases|process_groups)\"",
            "release_app",
            "machine",
        ),
    ] {
        s += &format!(
            "\n[[operations]]\n{select}\nparameters = {{ {} }}\n",
            params(app, machine).join(", ")
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_crash() {
    let Some(st) = schemathesis() else {
        let why = "schemathesis is not installed (run scripts/install-test-deps.sh; it installs \
                   it into $ALOFT_TEST_VENV, default ~/.cache/aloft-test-venv)";
        assert!(!in_ci(), "CI is set and {why}");
        eprintln!("SKIPPED schemathesis_finds_no_server_error_and_no_crash: {why}");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The image's default command (for generated configs that name none) is harmless. It is a
    // CMD without ENTRYPOINT, so a generated `cmd` is a whole argv, checked by the hooks.
    let image = tmp.path().join("image");
    std::fs::create_dir_all(image.join(".aloft")).unwrap();
    std::fs::write(
        image.join(".aloft/image.json"),
        r#"{"cmd": ["/bin/sleep", "3600"]}"#,
    )
    .unwrap();
    let image = image.display().to_string();
    let mut agent = start_agent(tmp.path());

    for app in ["fuzz", "fuzz-doomed", "fuzz-rel"] {
        agent
            .ok(
                Method::POST,
                "/v1/apps",
                Some(json!({"app_name": app, "org_slug": "personal"})),
            )
            .await;
    }
    let fixtures = Fixtures {
        machine: machine(&agent, "fuzz", &image).await,
        updated_machine: machine(&agent, "fuzz", &image).await,
        lease_machine: machine(&agent, "fuzz", &image).await,
        doomed_machine: machine(&agent, "fuzz", &image).await,
        image: image.clone(),
    };
    machine(&agent, "fuzz-doomed", &image).await;
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/fuzz/machines/{}/metadata/role", fixtures.machine),
            Some(json!({"value": "main"})),
        )
        .await;
    agent
        .ok(
            Method::POST,
            "/v1/apps/fuzz-rel/releases",
            Some(json!({"spec": {
                "image": image,
                "default_group": "app",
                "groups": {"app": {"image": "", "init": {"exec": ["/bin/sleep", "3600"]}}},
            }})),
        )
        .await;
    wait_for_async(Duration::from_secs(60), "release 1 to end", || async {
        let r = agent
            .ok(Method::GET, "/v1/apps/fuzz-rel/releases/1", None)
            .await;
        ["complete", "failed", "interrupted", "superseded"]
            .contains(&r["status"].as_str().unwrap_or(""))
    })
    .await;

    let config_file = tmp.path().join("schemathesis.toml");
    std::fs::write(&config_file, config(&agent, &fixtures)).unwrap();
    let examples: u32 = env_or("ALOFT_SCHEMATHESIS_EXAMPLES", DEFAULT_EXAMPLES);
    let seed: u64 = env_or("ALOFT_SCHEMATHESIS_SEED", DEFAULT_SEED);
    // The description the agent serves (the same document as the file in the repository).
    let served = agent.ok(Method::GET, "/v1/openapi.json", None).await;
    let on_disk: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../aloft-agent/openapi.json"
    )))
    .unwrap();
    assert_eq!(served, on_disk, "GET /v1/openapi.json serves openapi.json");
    let openapi = tmp.path().join("openapi.json");
    std::fs::write(&openapi, serde_json::to_vec(&served).unwrap()).unwrap();
    let openapi = openapi.to_str().unwrap().to_string();
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/hooks.py");
    let mut cmd = Command::new(&st);
    cmd.arg("--config-file")
        .arg(&config_file)
        .args(["run", &openapi, "--url", &format!("{}/v1", agent.url)])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        // One worker: CPython 3.11's ast module is not thread-safe (gh-106905), and hypothesis
        // parses sources when describing strategies.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none"])
        .args(["--no-color"])
        .env("SCHEMATHESIS_HOOKS", hooks)
        .current_dir(tmp.path());
    if let Some(dir) = std::env::var_os("ALOFT_SCHEMATHESIS_REPORT_DIR") {
        cmd.args(["--report", "har,junit", "--report-dir"]).arg(dir);
    }
    if let Ok(extra) = std::env::var("ALOFT_SCHEMATHESIS_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    eprintln!("running {cmd:?}");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "schemathesis ran {examples} examples per operation (seed {seed}) in {:.0?}",
        started.elapsed()
    );

    let alive = agent.child.try_wait().unwrap();
    assert!(
        alive.is_none(),
        "the agent died ({alive:?}) during the run; schemathesis said:\n{output}"
    );
    let log = std::fs::read_to_string(agent.log.as_ref().unwrap()).unwrap();
    assert!(
        !log.contains("panicked"),
        "the agent panicked:\n{log}\nschemathesis said:\n{output}"
    );
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{output}\nagent log:\n{log}",
        out.status
    );
    // Still answering.
    agent.ok(Method::GET, "/v1/apps", None).await;
    let lines: Vec<&str> = output.lines().collect();
    eprintln!("{}", lines[lines.len().saturating_sub(12)..].join("\n"));
}
