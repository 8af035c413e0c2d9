//! `aloft config validate|show` end to end: the built binary on files in a temp dir.

use std::path::Path;
use std::process::{Command, Output};

fn aloft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run aloft")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const VALID: &str = "app = 'demo'\nprimary_region = 'ams'\n\
[processes]\nweb = 'bin/server --port 8080'\nworker = 'bin/worker'\n\
[http_service]\ninternal_port = 8080\nprocesses = ['web']\nunknown_thing = 1\n\
[[vm]]\nsize = 'shared-cpu-2x'\n\
[[vm]]\nsize = 'performance-1x'\nprocesses = ['worker']\n";

const THREE_MISTAKES: &str = "app = 'demo'\n\
[processes]\nweb = 'serve'\n\
[http_service]\ninternal_port = 8080\nprocesses = ['wbe']\n\
[[vm]]\nsize = 'shared-cpu-3x'\n\
[[restart]]\npolicy = 'sometimes'\n";

#[test]
fn validate_accepts_a_valid_file_with_default_path_and_prints_warnings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), VALID).unwrap();
    let out = aloft(dir.path(), &["config", "validate"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: unknown key `unknown_thing`"),
        "{err}"
    );
    assert!(err.contains("fly.toml:9:1"), "{err}");
    assert!(err.contains("is valid"), "{err}");
    assert!(out.stdout.is_empty(), "diagnostics go to stderr");
}

#[test]
fn validate_reports_every_error_with_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.toml"), THREE_MISTAKES).unwrap();
    let out = aloft(dir.path(), &["config", "validate", "-c", "app.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "app.toml:6:",
        "undefined process group 'wbe'",
        "hint: defined groups are ['web']",
        "app.toml:8:",
        "unknown VM size \"shared-cpu-3x\"",
        "shared-cpu-2x",
        "app.toml:10:",
        "unknown restart policy",
        "3 error(s)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // The source line and a caret are shown.
    assert!(
        err.contains("6 | processes = ['wbe']") && err.contains('^'),
        "{err}"
    );
}

#[test]
fn errors_and_warnings_are_printed_apart() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!("{THREE_MISTAKES}bogus = 1\n");
    std::fs::write(dir.path().join("fly.toml"), src).unwrap();
    let err = text(&aloft(dir.path(), &["config", "validate"]).stderr);
    let last_error = err.rfind("error:").unwrap();
    let first_warning = err.find("warning:").unwrap();
    assert!(
        last_error < first_warning,
        "errors first, then warnings:\n{err}"
    );
}

#[test]
fn missing_file_names_path_and_suggests_c() {
    let dir = tempfile::tempdir().unwrap();
    let out = aloft(dir.path(), &["config", "validate"]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("fly.toml") && err.contains("-c"), "{err}");
}

#[test]
fn show_text_lists_groups_default_and_machine_configs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), VALID).unwrap();
    let out = aloft(dir.path(), &["config", "show"]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(s.contains("Process groups: web, worker"), "{s}");
    assert!(s.contains("Default group:  web"), "{s}");
    assert!(s.contains("[web]") && s.contains("[worker]"), "{s}");
    assert!(s.contains("bin/server --port 8080"), "{s}");
    assert!(s.contains("performance-1x"), "{s}");
    assert!(s.contains("tcp 8080 <- 80[http] 443[http,tls]"), "{s}");
}

#[test]
fn show_json_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), VALID).unwrap();
    let out = aloft(dir.path(), &["config", "show", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["app"], "demo");
    assert_eq!(v["primary_region"], "ams");
    assert_eq!(v["default_process_group"], "web");
    let web = &v["process_groups"]["web"];
    assert_eq!(
        web["machine_config"]["init"]["cmd"],
        serde_json::json!(["bin/server", "--port", "8080"])
    );
    assert_eq!(web["machine_config"]["env"]["FLY_PROCESS_GROUP"], "web");
    assert_eq!(
        web["machine_config"]["metadata"]["fly_platform_version"],
        "v2"
    );
    assert_eq!(web["guest"]["cpus"], 2);
    assert_eq!(
        v["process_groups"]["worker"]["guest"]["cpu_kind"],
        "performance"
    );
    assert!(v["process_groups"]["worker"]["machine_config"]
        .get("services")
        .is_none());
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(v["warnings"][0]["location"]["line"], 9);
}

#[test]
fn show_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), THREE_MISTAKES).unwrap();
    let out = aloft(dir.path(), &["config", "show", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("not valid"));
}

#[test]
fn json_and_yaml_configs_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fly.json"),
        r#"{"app":"j","processes":{"web":"a"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fly.yaml"),
        "app: y\nprocesses:\n  web: a\n",
    )
    .unwrap();
    for (file, app) in [("fly.json", "j"), ("fly.yaml", "y")] {
        let out = aloft(dir.path(), &["config", "show", "--json", "-c", file]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["app"], app);
        assert_eq!(v["default_process_group"], "web");
    }
}
