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
    assert_allowed("aloft-client", &["aloft-api", "aloft-deploy", "aloft-oci"]);
    assert_allowed("aloft-oci", &[]);
    assert_allowed("aloft-dns", &[]);
    assert_allowed("aloft-acme", &[]);
}

#[test]
fn the_test_kit_knows_no_aloft_crate_and_is_only_a_dev_dependency() {
    // Any crate's tests may use it without a dependency cycle, and no product code links it.
    assert_allowed("aloft-testkit", &[]);
    for krate in all_crates() {
        assert!(
            !normal_dependencies(&krate).contains(&"aloft-testkit".to_string()),
            "{krate} lists aloft-testkit under [dependencies]; it belongs under [dev-dependencies]"
        );
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

/// HTTP crates that serve or speak the protocol.
const HTTP_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "hyper-util",
    "http",
    "http-body-util",
    "tower-http",
    "reqwest",
];

#[test]
fn http_lives_only_at_the_edges() {
    // The agent serves the API, the proxy serves the machines' ports, aloft-client calls the
    // API (the CLI only through it); the domain crates (config, deploy planning, runtime, store,
    // wire types) know nothing of HTTP.
    let may = |krate: &str, dep: &str| match krate {
        "aloft-agent" | "aloft-proxy" => dep != "reqwest",
        // The client crate, and the test kit's (it calls the API of agents under test).
        "aloft-client" | "aloft-testkit" => dep == "reqwest",
        // The ACME client's HTTPS connection to the CA (instant-acme's hyper client, built
        // with the roots we trust).
        "aloft-acme" => dep == "hyper-util",
        _ => false,
    };
    for krate in all_crates() {
        for dep in normal_dependencies(&krate) {
            if HTTP_CRATES.contains(&dep.as_str()) {
                assert!(
                    may(&krate, &dep),
                    "{krate} must not depend on {dep} (ARCHITECTURE.md: HTTP only in the agent, the proxy and aloft-client)"
                );
            }
        }
    }
}

/// Lines of `krate`'s sources that are not comments, with their file.
fn code_lines(krate: &str) -> Vec<(PathBuf, String)> {
    sources(krate)
        .into_iter()
        .flat_map(|(path, text)| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| (path.clone(), l.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn routes_and_error_statuses_live_in_aloft_api() {
    // aloft-deploy knows nothing of HTTP: no route path, no status constant; the paths every
    // client and the agent use are `aloft_api::routes`.
    for (path, line) in code_lines("aloft-deploy") {
        assert!(
            !line.contains("\"/v1/") && !line.contains("STATUS_"),
            "aloft-deploy/src/{}: `{}` — routes and error statuses belong in aloft_api::routes",
            path.display(),
            line.trim()
        );
    }
    // The client takes its paths from aloft_api::routes too.
    for (path, line) in code_lines("aloft-client") {
        assert!(
            !line.contains("\"/v1/"),
            "aloft-client/src/{}: `{}` — use aloft_api::routes",
            path.display(),
            line.trim()
        );
    }
}

#[test]
fn the_cli_finds_the_agent_without_asking_the_agent_crate() {
    // `aloft` embeds the agent (`aloft agent`, `aloft up`), but where a client finds an agent
    // (file names, default address, data dir) is shared through aloft-api and aloft-client.
    for (path, line) in code_lines("aloft") {
        for name in [
            "TOKEN_FILE",
            "ADDR_FILE",
            "DEFAULT_LISTEN",
            "local_defaults",
            "default_data_dir",
        ] {
            assert!(
                !(line.contains("aloft_agent") && line.contains(name)),
                "aloft/src/{}: `{}` — take {name} from aloft_api::local or aloft_client",
                path.display(),
                line.trim()
            );
        }
    }
}

#[test]
fn aloft_api_does_no_io() {
    for (path, line) in code_lines("aloft-api") {
        for io in [
            "std::fs",
            "std::net",
            "std::env",
            "std::process",
            "tokio",
            "async ",
        ] {
            assert!(
                !line.contains(io),
                "aloft-api/src/{}: `{}` — aloft-api is pure data (ARCHITECTURE.md)",
                path.display(),
                line.trim()
            );
        }
    }
}

/// Every `.rs` file of `krate`'s `src`, with its path relative to `src`.
fn sources(krate: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p.strip_prefix(root).unwrap().to_path_buf(), text));
            }
        }
    }
    let root = crates_dir().join(krate).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

#[test]
fn every_module_says_what_it_is() {
    let mut missing = Vec::new();
    for krate in all_crates() {
        for (path, text) in sources(&krate) {
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with("#!"));
            if !first.is_some_and(|l| l.starts_with("//!")) {
                missing.push(format!("{krate}/src/{}", path.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc comment: {missing:?}"
    );
}

/// The top-level module of a source file (`h1/head.rs` → `h1`), `None` for the crate root.
fn top_module(path: &Path) -> Option<String> {
    let first = path.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Top-level modules each top-level module uses through `crate::…` (comments aside).
fn module_graph(
    krate: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (path, text) in sources(krate) {
        let Some(from) = top_module(&path) else {
            continue;
        };
        let uses = graph.entry(from.clone()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let to: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != from {
                    uses.insert(to);
                }
            }
        }
    }
    graph
}

#[test]
fn no_module_cycles_inside_a_crate() {
    for krate in all_crates() {
        let graph = module_graph(&krate);
        // Depth-first search for a back edge; reports the cycle it closes.
        fn visit(
            node: &str,
            graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut std::collections::BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = stack.iter().position(|n| n == node) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            stack.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(c) = visit(next, graph, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = Default::default();
        for node in graph.keys() {
            if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
                panic!(
                    "{krate}: modules use each other in a circle: {} (ARCHITECTURE.md: no module cycles)",
                    cycle.join(" → ")
                );
            }
        }
    }
}

#[test]
fn the_agent_controller_knows_no_http() {
    // ARCHITECTURE.md (aloft-agent): the controller and the deploy engine answer domain errors
    // and outcomes; status codes are chosen only in `api/`.
    const HTTP_WORDS: &[&str] = &["axum", "hyper", "http::", "StatusCode", "tower"];
    let mut found = Vec::new();
    for (path, text) in sources("aloft-agent") {
        let domain = path.starts_with("controller") || path.starts_with("deploy");
        if !domain {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in HTTP_WORDS {
                if line.contains(word) {
                    found.push(format!("src/{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "aloft-agent's controller/ and deploy/ must not know HTTP (map in api/ instead):\n{}",
        found.join("\n")
    );
}

/// Lines of code (comments aside) of `text` that contain one of `needles`, as `path:line`.
fn lines_with(path: &Path, text: &str, needles: &[&str]) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| needles.iter().any(|n| l.contains(n)))
        .map(|(i, l)| format!("{}:{}: {}", path.display(), i + 1, l.trim()))
        .collect()
}

#[test]
fn commands_print_only_through_the_printer() {
    // ARCHITECTURE.md (CLI): the printer decides plain or JSON, colour, and stdout or stderr.
    let needles = [
        "println!",
        "print!(",
        "eprintln!",
        "eprint!(",
        "io::stdout",
        "io::stderr",
    ];
    let found: Vec<String> = sources("aloft")
        .iter()
        .filter(|(path, _)| path.starts_with("commands"))
        .flat_map(|(path, text)| lines_with(path, text, &needles))
        .collect();
    assert!(
        found.is_empty(),
        "commands print only through the Printer (crates/aloft/src/printer.rs):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cli_reads_the_environment_only_in_settings() {
    // ARCHITECTURE.md (CLI): flags > environment > fly.toml > defaults, resolved in settings.rs.
    let needles = ["env::var", "env::vars", "env = \"", "try_from_env"];
    let found: Vec<String> = sources("aloft")
        .iter()
        .filter(|(path, _)| path != Path::new("settings.rs"))
        .flat_map(|(path, text)| lines_with(path, text, &needles))
        .collect();
    assert!(
        found.is_empty(),
        "the CLI reads environment variables only in crates/aloft/src/settings.rs:\n{}",
        found.join("\n")
    );
}
