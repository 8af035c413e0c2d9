//! `aloft context add|use|list|show|rm` and `-C`: named agents in the user's config dir, used
//! by every command but `aloft up`; unknown contexts fail fast with what to do.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{fails, ok, run_aloft, AgentProc};

/// The CLI with its config dir in `home` and no agent from the environment.
fn aloft(home: &Path, args: &[&str], stdin: &str) -> Output {
    let config = home.join("config");
    // The local agent's data dir: empty, so "local" reaches nothing.
    let no_agent = home.join("no-agent");
    run_aloft(
        args,
        &[
            ("HOME", home.as_os_str()),
            ("XDG_CONFIG_HOME", config.as_os_str()),
            ("ALOFT_DATA_DIR", no_agent.as_os_str()),
        ],
        Some(stdin),
    )
}

#[tokio::test]
async fn a_context_names_an_agent_for_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let agent = AgentProc::start(&home.join("data"));
    agent.create_app("shop").await;

    let out = ok(&aloft(
        home,
        &["context", "add", "prod", &agent.url, "--token-stdin"],
        &format!("{}\n", agent.token),
    ));
    assert!(out.contains("Added context `prod`"), "{out}");
    let file = home.join("config/aloft/contexts.toml");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the file keeps a token");

    // -C picks it; without it the local agent (none runs) is used.
    let out = ok(&aloft(home, &["-C", "prod", "apps", "list"], ""));
    assert!(out.contains("shop"), "{out}");
    let out = fails(&aloft(home, &["apps", "list"], ""));
    assert!(out.contains("cannot reach the aloft agent"), "{out}");

    // `use` makes it current; list marks it; the token is never printed.
    ok(&aloft(home, &["context", "use", "prod"], ""));
    assert!(ok(&aloft(home, &["apps", "list"], "")).contains("shop"));
    assert_eq!(ok(&aloft(home, &["context", "show"], "")).trim(), "prod");
    let list = ok(&aloft(home, &["context", "list"], ""));
    assert!(
        list.contains("prod *") && list.contains(&agent.url),
        "{list}"
    );
    assert!(!list.contains(&agent.token), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&aloft(home, &["context", "list", "--json"], ""))).unwrap();
    assert_eq!(json[1]["name"], "prod");
    assert_eq!(json[1]["current"], true);
    assert_eq!(json[1]["token"], true);
    // -C local wins over the current context.
    let out = fails(&aloft(home, &["-C", "local", "apps", "list"], ""));
    assert!(out.contains("cannot reach the aloft agent"), "{out}");

    // The current context is removed only with --force; local is current then.
    let out = fails(&aloft(home, &["context", "rm", "prod"], ""));
    assert!(out.contains("--force"), "{out}");
    ok(&aloft(home, &["context", "rm", "prod", "--force"], ""));
    assert_eq!(ok(&aloft(home, &["context", "show"], "")).trim(), "local");
}

#[test]
fn bad_contexts_are_refused_fast_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let started = Instant::now();
    let out = fails(&aloft(home, &["-C", "nope", "status", "-a", "shop"], ""));
    assert!(
        out.contains("no context named `nope`") && out.contains("aloft context add nope"),
        "{out}"
    );
    let out = fails(&aloft(home, &["context", "use", "nope"], ""));
    assert!(out.contains("no context named `nope`"), "{out}");
    for (args, says) in [
        (vec!["context", "add", "local", "http://h:1"], "built-in"),
        (
            vec!["context", "add", "a b", "http://h:1"],
            "invalid context name",
        ),
        (vec!["context", "add", "x", "h:1"], "not an agent URL"),
        (vec!["context", "add", "x", "ftp://h"], "unknown scheme"),
        (
            vec!["context", "add", "x", "https://h:1", "--fingerprint", "abc"],
            "invalid fingerprint",
        ),
        (vec!["context", "rm", "local"], "built in"),
    ] {
        let out = fails(&aloft(home, &args, ""));
        assert!(out.contains(says), "{args:?}: {out}");
    }
    assert!(
        !home.join("config/aloft/contexts.toml").exists(),
        "nothing was written"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
