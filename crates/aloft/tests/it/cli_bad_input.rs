//! Bad input to the app commands: each is a clear error, exit 1, and nothing is changed — the
//! commands run against a fake agent on 127.0.0.1 that records every request, and the tests
//! assert that no mutating request (anything but GET/HEAD) was sent, or no request at all when
//! the input can be judged without the agent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use aloft_api::{Guest, Machine, MachineConfig, MachineService, MachineState};
use aloft_deploy::{FrozenPlan, Release, ReleaseSpec, ReleaseStatus};

use crate::common::ok;

/// (method, path, body) of every request.
type Log = Arc<Mutex<Vec<(String, String, String)>>>;

/// A fake agent answering canned JSON; returns its URL and the request log.
fn fake_agent() -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut content_length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; content_length];
            let _ = reader.read_exact(&mut body);
            let mut parts = request_line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            log2.lock().unwrap().push((
                method.clone(),
                path.clone(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            let (status, body) = answer(&method, &path, &String::from_utf8_lossy(&body));
            let ctype = if path.contains("/events") {
                "application/x-ndjson"
            } else {
                "application/json"
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes());
        }
    });
    (url, log)
}

fn machine(id: &str, group: &str, guest: &str) -> Machine {
    let mut config = MachineConfig {
        image: "aloft/demo@sha256:x".into(),
        ..MachineConfig::default()
    };
    config
        .metadata
        .insert("fly_platform_version".into(), "v2".into());
    config
        .metadata
        .insert("fly_process_group".into(), group.into());
    config.guest = Guest::from_preset(guest);
    Machine {
        instance_id: format!("{id}v1"),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        ..Machine::new(id, "gru", MachineState::Started, config)
    }
}

fn release() -> Release {
    let mut web = MachineConfig::default();
    web.services.push(MachineService {
        internal_port: 8080,
        protocol: "tcp".into(),
        ..Default::default()
    });
    Release {
        id: "rel1".into(),
        version: 1,
        app: "demo".into(),
        status: ReleaseStatus::Complete,
        spec: ReleaseSpec {
            image: "aloft/demo@sha256:x".into(),
            groups: BTreeMap::from([
                ("web".to_string(), web),
                ("cron".to_string(), MachineConfig::default()),
            ]),
            default_group: "cron".into(),
            primary_region: Some("gru".into()),
            ..ReleaseSpec::default()
        },
        plan: FrozenPlan::default(),
        desired_counts: BTreeMap::new(),
        image_digest: None,
        created_at: String::new(),
        group_counts: BTreeMap::new(),
        rollback_of: None,
        created_by: None,
        updated_at: String::new(),
        error: None,
        scale: None,
        phase: None,
    }
}

/// A scale operation's version as the fake agent gives it.
const SCALE_OP: u64 = aloft_api::metadata::SCALE_VERSION_BASE + 1;

/// What the agent answers to `POST …/scale`: the plan of the real planner (dry run), or the
/// operation it started.
fn scale_answer(body: &str) -> (&'static str, String) {
    let req: aloft_api::groups::ScaleCountRequest = serde_json::from_str(body).unwrap();
    let counts = req
        .counts
        .iter()
        .map(|(g, c)| {
            let spec = aloft_deploy::scale::CountSpec::parse(c, c).unwrap();
            (g.clone(), spec)
        })
        .collect();
    let base = release();
    let machines = vec![
        machine("w1", "web", "shared-cpu-1x"),
        machine("c1", "cron", "shared-cpu-1x"),
    ];
    let plan = aloft_deploy::scale::plan_count(
        &aloft_deploy::scale::CountRequest {
            counts,
            regions: req.regions.clone(),
            max_per_region: req.max_per_region,
        },
        &base.spec,
        &base.meta(),
        &machines,
    )
    .unwrap();
    if req.dry_run {
        let preview = aloft_deploy::messages::ScalePreview {
            lines: plan.lines.clone(),
            create: plan.create.len(),
            destroy: plan.destroy.clone(),
            desired: plan.desired.clone(),
        };
        return ("200 OK", serde_json::to_string(&preview).unwrap());
    }
    let mut op = base;
    op.version = SCALE_OP;
    op.status = ReleaseStatus::Pending;
    op.scale = Some(aloft_deploy::ScaleWork {
        avoid_volumes: Vec::new(),
        summary: String::new(),
        create: vec![],
        destroy: vec![],
        guest: vec![],
        secrets: vec![],
    });
    ("201 Created", serde_json::to_string(&op).unwrap())
}

fn answer(method: &str, path: &str, body: &str) -> (&'static str, String) {
    let machines = vec![
        machine("w1", "web", "shared-cpu-1x"),
        machine("c1", "cron", "shared-cpu-1x"),
    ];
    let not_found = |what: &str| {
        (
            "404 Not Found",
            format!(r#"{{"error":"{what} not found"}}"#),
        )
    };
    match (method, path) {
        ("GET", "/v1/apps/demo") => (
            "200 OK",
            r#"{"id":"demo","name":"demo","status":"deployed","organization":{"name":"p","slug":"personal"}}"#.into(),
        ),
        ("GET", "/v1/apps/demo/releases") => ("200 OK", serde_json::to_string(&vec![release()]).unwrap()),
        ("GET", "/v1/apps/demo/process_groups") => ("200 OK", r#"{"counts":{}}"#.into()),
        ("HEAD", p) if p.starts_with("/v1/apps/demo/images/") => ("404 Not Found", String::new()),
        ("PUT", p) if p.starts_with("/v1/apps/demo/images/") => (
            "201 Created",
            r#"{"digest":"sha256:x","size":1,"image_ref":"aloft/demo@sha256:x"}"#.into(),
        ),
        ("POST", "/v1/apps/demo/scale") => scale_answer(body),
        ("GET", p) if p.starts_with(&format!("/v1/apps/demo/releases/{SCALE_OP}/events")) => (
            "200 OK",
            [
                format!(r#"{{"seq":1,"at":"t","event":{{"type":"started","version":{SCALE_OP},"resumed":false}}}}"#),
                r#"{"seq":2,"at":"t","event":{"type":"destroyed","id":"w1","group":"web"}}"#.to_string(),
                r#"{"seq":3,"at":"t","event":{"type":"finished","status":"complete","error":null}}"#.to_string(),
                String::new(),
            ]
            .join("\n"),
        ),
        ("POST", "/v1/apps/demo/releases?dry_run=true") => {
            // The agent's planner over the fake agent's machines.
            let req: aloft_deploy::messages::CreateReleaseRequest = serde_json::from_str(body).unwrap();
            let machines = vec![
                machine("w1", "web", "shared-cpu-1x"),
                machine("c1", "cron", "shared-cpu-1x"),
            ];
            let plan = aloft_deploy::plan::plan_deploy(
                &req.spec,
                &machines,
                &BTreeMap::new(),
                req.process_groups.as_deref(),
            )
            .unwrap();
            ("200 OK", serde_json::to_string(&plan).unwrap())
        }
        ("POST", "/v1/apps/demo/releases") => {
            let mut r = release();
            r.version = 2;
            r.status = ReleaseStatus::Pending;
            ("201 Created", serde_json::to_string(&r).unwrap())
        }
        ("GET", p) if p.starts_with("/v1/apps/demo/releases/2/events") => (
            "200 OK",
            concat!(
                r#"{"seq":1,"at":"t","event":{"type":"started","version":2,"resumed":false}}"#,
                "\n",
                r#"{"seq":2,"at":"t","event":{"type":"finished","status":"complete","error":null}}"#,
                "\n"
            )
            .into(),
        ),
        ("GET", "/v1/apps/demo/machines") => ("200 OK", serde_json::to_string(&machines).unwrap()),
        ("GET", p) if p.starts_with("/v1/apps/demo/machines/") => {
            let id = p.trim_start_matches("/v1/apps/demo/machines/");
            match machines.iter().find(|m| m.id == id) {
                Some(m) => ("200 OK", serde_json::to_string(m).unwrap()),
                None => not_found(&format!("machine {id}")),
            }
        }
        _ => ("200 OK", "{}".into()),
    }
}

fn aloft(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .env("ALOFT_API_URL", url)
        .env("ALOFT_API_TOKEN", "t")
        .env_remove("ALOFT_APP")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Requests that may change something: all but reads and dry runs.
fn mutations(log: &Log) -> Vec<(String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(m, _, _)| m != "GET" && m != "HEAD")
        .filter(|(_, path, body)| {
            !body.contains("\"dry_run\":true") && !path.ends_with("dry_run=true")
        })
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect()
}

/// Runs the command; asserts exit 1, that stderr contains `needle`, and that nothing was changed.
fn refused(args: &[&str], needle: &str) -> Log {
    let (url, log) = fake_agent();
    let out = aloft(&url, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: stderr {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(mutations(&log), vec![], "{args:?} changed something");
    log
}

#[test]
fn unknown_group_in_scale_count() {
    refused(
        &["scale", "count", "db=3", "-a", "demo", "--yes"],
        "unknown process group \"db\"",
    );
    refused(
        &["scale", "count", "3", "-g", "db", "-a", "demo", "--yes"],
        "['cron', 'web']",
    );
}

#[test]
fn bad_region_is_refused_before_any_request() {
    let log = refused(
        &[
            "scale", "count", "web=2", "--region", "gru,xyz", "-a", "demo", "--yes",
        ],
        "unknown region \"xyz\"",
    );
    assert!(log.lock().unwrap().is_empty());
    let log = refused(
        &["machine", "clone", "w1", "--region", "zzz", "-a", "demo"],
        "unknown region \"zzz\"",
    );
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn size_and_memory_out_of_range() {
    let log = refused(
        &["scale", "vm", "shared-cpu-3x", "-g", "web", "-a", "demo"],
        "unknown VM size \"shared-cpu-3x\"",
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "a size is judged without the agent"
    );
    refused(
        &[
            "scale",
            "vm",
            "shared-cpu-1x",
            "--vm-memory",
            "4096",
            "-g",
            "web",
            "-a",
            "demo",
        ],
        "above the maximum of 2048 MB",
    );
    refused(
        &["scale", "memory", "4096", "-g", "web", "-a", "demo"],
        "above the maximum of 2048 MB",
    );
    refused(
        &["scale", "memory", "300", "-g", "web", "-a", "demo"],
        "multiple of 256 MB",
    );
    refused(
        &["scale", "memory", "lots", "-g", "web", "-a", "demo"],
        "invalid memory \"lots\"",
    );
    refused(
        &["scale", "memory", "512", "-g", "nope", "-a", "demo"],
        "unknown process group \"nope\"",
    );
    refused(
        &["scale", "memory", "512", "-a", "demo"],
        "requires specifying a group",
    );
}

#[test]
fn unknown_machine_id() {
    refused(
        &["machine", "destroy", "nope", "--force", "-a", "demo"],
        "machine nope not found in app demo",
    );
    refused(
        &["machine", "stop", "w1", "nope", "-a", "demo"],
        "machine nope not found",
    );
    refused(
        &[
            "machine",
            "update",
            "nope",
            "--metadata",
            "fly_process_group=app",
            "--yes",
            "-a",
            "demo",
        ],
        "machine nope not found",
    );
}

#[test]
fn started_machine_needs_force_and_prompts_need_yes() {
    refused(
        &["machine", "destroy", "c1", "-a", "demo"],
        "destroy it with --force",
    );
    refused(&["scale", "count", "web=3", "-a", "demo"], "pass --yes");
    refused(
        &[
            "machine",
            "update",
            "w1",
            "--metadata",
            "fly_process_group=cron",
            "-a",
            "demo",
        ],
        "pass --yes",
    );
    refused(&["apps", "destroy", "demo"], "pass --yes");
}

#[test]
fn invalid_fly_toml_is_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fly.toml");
    std::fs::write(
        &path,
        "app = \"demo\"\n[processes]\nweb = \"python3 'unclosed\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let log = refused(&["deploy", "-c", p, "--yes"], "is not valid");
    assert!(log.lock().unwrap().is_empty());
    let missing = dir.path().join("missing.toml");
    let log = refused(
        &["deploy", "-c", missing.to_str().unwrap()],
        "does not exist",
    );
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn no_app_and_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("fly.toml");
    refused(&["status", "-c", missing.to_str().unwrap()], "no app given");
}

/// The same fake agent does see changes when the input is good: the assertions above can fail.
#[test]
fn good_input_does_change_things() {
    let (url, log) = fake_agent();
    let out = aloft(
        &url,
        &["scale", "count", "-1", "-g", "web", "-a", "demo", "--yes"],
    );
    let stdout = ok(&out);
    assert!(
        stdout.contains("  -1 machines for group 'web' on region 'gru' of size 'shared-cpu-1x'"),
        "{stdout}"
    );
    assert!(stdout.contains("Destroyed w1 [web]"), "{stdout}");
    let changes = mutations(&log);
    // The agent carries the scale out: one request, after the dry run shown to the user.
    assert_eq!(
        changes,
        vec![("POST".to_string(), "/v1/apps/demo/scale".to_string())]
    );
}

/// The example's fly.toml alone in a temp dir: no Dockerfile, so the directory is packed and
/// uploaded (the process runtime) and nothing is built.
fn example_config(tmp: &std::path::Path) -> std::path::PathBuf {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/process-groups/fly.toml");
    let config = tmp.join("fly.toml");
    std::fs::copy(example, &config).unwrap();
    config
}

/// `deploy` uploads the directory once and posts the per-group spec; the agent's progress is
/// streamed until the release finishes.
#[test]
fn deploy_posts_the_release_of_the_config() {
    let (url, log) = fake_agent();
    let tmp = tempfile::tempdir().unwrap();
    let config = example_config(tmp.path());
    let out = aloft(
        &url,
        &["deploy", "-c", config.to_str().unwrap(), "-a", "demo"],
    );
    let stdout = ok(&out);
    assert!(
        stdout.contains("Process groups have changed. This will:\n * create 1 \"worker\" machine"),
        "{stdout}"
    );
    assert!(stdout.contains("Release v2 deployed"), "{stdout}");
    let entries = log.lock().unwrap().clone();
    let put = entries
        .iter()
        .find(|(m, p, _)| m == "PUT" && p.contains("/images/"))
        .expect("image uploaded");
    let hex = put.1.rsplit('/').next().unwrap().to_string();
    let post = entries
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/v1/apps/demo/releases")
        .expect("release posted");
    let req: aloft_deploy::messages::CreateReleaseRequest = serde_json::from_str(&post.2).unwrap();
    assert_eq!(
        req.image_digest.as_deref(),
        Some(format!("sha256:{hex}").as_str())
    );
    assert_eq!(req.spec.image, format!("aloft/demo@sha256:{hex}"));
    assert_eq!(req.spec.group_names(), vec!["cron", "web", "worker"]);
    assert_eq!(
        req.spec.groups["cron"].init.cmd,
        Some(vec!["sh".to_string(), "cron.sh".to_string()])
    );
    assert!(req.confirmed_destroy.is_empty());
    assert!(req
        .spec
        .source
        .as_deref()
        .unwrap_or("")
        .contains("[processes]"));
}

/// A group removed from fly.toml: its machines are listed, and without --yes (no terminal)
/// nothing is uploaded or changed; with --yes they are confirmed by id.
#[test]
fn deploy_lists_machines_it_would_destroy_and_needs_yes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fly.toml");
    std::fs::write(&path, "app = \"demo\"\n[processes]\nweb = \"sleep 60\"\n").unwrap();
    let p = path.to_str().unwrap();
    let (url, log) = fake_agent();
    let out = aloft(&url, &["deploy", "-c", p]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(" * destroy 1 \"cron\" machine (c1)"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    assert_eq!(mutations(&log), vec![]);

    let (url, log) = fake_agent();
    let out = aloft(&url, &["deploy", "-c", p, "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = log.lock().unwrap().clone();
    let post = entries
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/v1/apps/demo/releases")
        .unwrap();
    let req: aloft_deploy::messages::CreateReleaseRequest = serde_json::from_str(&post.2).unwrap();
    assert_eq!(req.confirmed_destroy, vec!["c1".to_string()]);
}
