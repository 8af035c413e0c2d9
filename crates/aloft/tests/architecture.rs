//! Tidy test: the crate dependency rules of ARCHITECTURE.md, checked on the manifests.

use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Names of the `[dependencies]` (not dev-dependencies) of a crate's manifest.
fn normal_dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(crates_dir().join(krate).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("reading {krate}/Cargo.toml: {e}"));
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            if let Some(name) = line.split(['=', '.', ' ']).next() {
                deps.push(name.to_string());
            }
        }
    }
    deps
}

fn all_crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(crates_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_allowed(krate: &str, allowed_internal: &[&str]) {
    for dep in normal_dependencies(krate) {
        if dep.starts_with("aloft") {
            assert!(
                allowed_internal.contains(&dep.as_str()),
                "{krate} must not depend on {dep} (see ARCHITECTURE.md, dependency rules)"
            );
        }
    }
}

#[test]
fn library_crates_respect_their_boundaries() {
    let crates = all_crates();
    assert!(
        crates.contains(&"aloft-api".to_string()),
        "found crates: {crates:?}"
    );
    assert_allowed("aloft-api", &[]);
    assert_allowed("aloft-config", &["aloft-api"]);
    assert_allowed("aloft-runtime", &["aloft-api"]);
    assert_allowed("aloft-proxy", &["aloft-api"]);
    if crates.contains(&"aloft-deploy".to_string()) {
        assert_allowed("aloft-deploy", &["aloft-api", "aloft-config"]);
    }
}

#[test]
fn only_the_agent_knows_the_store_and_only_the_store_knows_sqlite() {
    for krate in all_crates() {
        let deps = normal_dependencies(&krate);
        if krate != "aloft-agent" {
            assert!(
                !deps.contains(&"aloft-store".to_string()),
                "{krate} must not depend on aloft-store"
            );
        }
        if krate != "aloft" {
            assert!(
                !deps.contains(&"aloft-agent".to_string()),
                "{krate} must not depend on aloft-agent"
            );
        }
        if krate != "aloft-store" {
            assert!(
                !deps.contains(&"rusqlite".to_string()),
                "{krate} must not depend on rusqlite"
            );
        }
    }
}
