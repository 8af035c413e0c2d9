//! One test per rule of flyctl-behaviour §1–§2 (schema, normalisers, units, validation,
//! groups, flattening), through the public API only.

use std::time::Duration;

use aloft_config::{parse_str, AppConfig, Diagnostics, Format, Loaded, Severity};

fn parse(src: &str) -> Loaded {
    parse_str(src, Format::Toml, "fly.toml")
}

/// Parses a file that must be valid and returns its config.
fn ok(src: &str) -> AppConfig {
    let l = parse(src);
    assert!(
        !l.diagnostics.has_errors(),
        "expected valid, got:\n{}",
        l.diagnostics
    );
    l.config
}

/// Asserts exactly the errors expected: each (line, substring of message or hint).
fn errors(src: &str, expect: &[(usize, &str)]) -> Diagnostics {
    let d = parse(src).diagnostics;
    let errs: Vec<_> = d.errors().collect();
    assert_eq!(errs.len(), expect.len(), "wrong number of errors:\n{d}");
    for (line, text) in expect {
        assert!(
            errs.iter()
                .any(|e| e.location.map(|l| l.line) == Some(*line)
                    && (e.message.contains(text)
                        || e.hint.as_deref().unwrap_or("").contains(text))),
            "no error at line {line} mentioning {text:?}:\n{d}"
        );
    }
    d
}

fn has_warning(d: &Diagnostics, text: &str) -> bool {
    d.warnings()
        .any(|w| w.message.contains(text) || w.hint.as_deref().unwrap_or("").contains(text))
}

fn secs(s: u64) -> Option<aloft_api::GoDuration> {
    Some(aloft_api::GoDuration(Duration::from_secs(s)))
}

// ---- §1.1 loading and normalisation ---------------------------------------------------------

#[test]
fn format_is_chosen_by_extension() {
    use std::path::Path;
    assert_eq!(Format::from_path(Path::new("fly.json")), Format::Json);
    assert_eq!(Format::from_path(Path::new("x/fly.yaml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("fly.yml")), Format::Yaml);
    assert_eq!(
        Format::from_path(Path::new("fly.production.toml")),
        Format::Toml
    );
    assert_eq!(Format::from_path(Path::new("flyconfig")), Format::Toml);
}

#[test]
fn json_and_yaml_files_load_like_toml() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("fly.json");
    std::fs::write(&json, r#"{"app":"a","processes":{"web":"serve"},"http_service":{"internal_port":"8080","processes":["web"]}}"#)
        .unwrap();
    let yaml = dir.path().join("fly.yaml");
    std::fs::write(&yaml, "app: a\nprocesses:\n  web: serve\nhttp_service:\n  internal_port: 8080\n  processes: [web]\n")
        .unwrap();
    let j = aloft_config::load(&json).unwrap();
    let y = aloft_config::load(&yaml).unwrap();
    assert!(!j.diagnostics.has_errors(), "{}", j.diagnostics);
    assert_eq!(j.config, y.config);
    assert_eq!(j.config.services_for("web")[0].internal_port, 8080);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"app\": \n").unwrap();
    let b = aloft_config::load(&bad).unwrap();
    assert!(b.diagnostics.has_errors());
}

#[test]
fn missing_file_names_the_path() {
    let err = aloft_config::load(std::path::Path::new("/nonexistent/fly.toml")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/fly.toml") && msg.contains("-c"),
        "{msg}"
    );
}

#[test]
fn env_table_or_array_values_stringified() {
    let c = ok("[env]\nA = 1\nB = true\nC = 'x'\n");
    assert_eq!(c.env["A"], "1");
    assert_eq!(c.env["B"], "true");
    let c = ok("[[env]]\nA = '1'\nB = '2'\n[[env]]\nA = '3'\n");
    assert_eq!((c.env["A"].as_str(), c.env["B"].as_str()), ("3", "2"));
}

#[test]
fn processes_legacy_array_and_empty_forms() {
    let c = ok("[[processes]]\nname = 'web'\ncommand = 'serve'\n[[processes]]\nname = 'worker'\n");
    assert_eq!(c.process_names(), ["web", "worker"]);
    assert_eq!(c.processes["worker"], "");
    let c = ok("processes = []\n");
    assert_eq!(c.process_names(), ["app"]);
    // flyctl drops unknown keys and entries without a name; Aloft drops them aloud.
    let d = parse("[[processes]]\nname = 'web'\ncmd = 'serve'\n[[processes]]\ncommand = 'x'\n")
        .diagnostics;
    assert!(!d.has_errors(), "{d}");
    assert!(has_warning(&d, "did you mean `command`?"), "{d}");
    assert!(has_warning(&d, "has no `name`"), "{d}");
    // flyctl writes a numeric name as text.
    assert_eq!(
        ok("[[processes]]\nname = 1\ncommand = 'x'\n").process_names(),
        ["1"]
    );
}

#[test]
fn experimental_string_is_one_word_and_legacy_keys_are_hoisted() {
    let c = ok("[experimental]\ncmd = 'bin/run --x'\nkill_timeout = 30\nmetrics_port = 9091\n");
    let e = c.experimental.as_ref().unwrap();
    assert_eq!(e.cmd.as_deref(), Some(&["bin/run --x".to_string()][..]));
    assert_eq!(c.kill_timeout, secs(30));
    assert_eq!(c.metrics[0].port, 9091);
    assert_eq!(c.metrics[0].path, "/metrics");
    // A top-level kill_timeout wins over the experimental one.
    let c = ok("kill_timeout = 5\n[experimental]\nkill_timeout = 30\n");
    assert_eq!(c.kill_timeout, secs(5));
}

#[test]
fn compute_aliases_merge_into_vm() {
    for src in [
        "[vm]\nsize = 'shared-cpu-2x'\n",
        "[[vm]]\nsize = 'shared-cpu-2x'\n",
        "[compute]\nsize = 'shared-cpu-2x'\n",
        "[[compute]]\nsize = 'shared-cpu-2x'\n",
        "[[computes]]\nsize = 'shared-cpu-2x'\n",
    ] {
        let c = ok(src);
        assert_eq!(c.vm.len(), 1, "{src}");
        assert_eq!(c.guest_for("app").unwrap().unwrap().memory_mb, 512, "{src}");
    }
    let c = ok("[[vm]]\nmemory = 1024\n");
    assert_eq!(c.vm[0].memory, Some(1024));
}

#[test]
fn mount_aliases_merge() {
    for src in [
        "[mount]\nsource='d'\ndestination='/d'\n",
        "[mounts]\nsource='d'\ndestination='/d'\n",
        "[[mounts]]\nsource='d'\ndestination='/d'\n",
    ] {
        let c = ok(src);
        assert_eq!(c.machine_config_for("app").mounts[0].name, "d", "{src}");
    }
}

#[test]
fn checks_as_array_with_names_and_metric_singular() {
    let c = ok("[[checks]]\nname = 'alive'\ntype = 'tcp'\nport = 8080\n[metric]\nport = 9000\n");
    assert!(c.checks.contains_key("alive"));
    assert_eq!(c.metrics[0].port, 9000);
}

#[test]
fn services_legacy_concurrency_string_ports_and_empty_tables() {
    let c = ok("[[services]]\ninternal_port = '8080'\nconcurrency = '12,23'\n[[services.ports]]\nport = '80'\nhandlers = ['http']\n[[services]]\n");
    assert_eq!(c.services.len(), 1, "empty service dropped");
    let s = &c.services_for("app")[0];
    assert_eq!(s.internal_port, 8080);
    assert_eq!(s.ports[0].port, Some(80));
    let cc = s.concurrency.as_ref().unwrap();
    assert_eq!(
        (cc.kind.as_str(), cc.soft_limit, cc.hard_limit),
        ("requests", Some(12), Some(23))
    );
}

/// Buildpacks, builtins and compose are valid Fly config that Aloft cannot build: `config
/// validate` accepts them with a warning at the key, which a deploy turns into an error.
#[test]
fn unbuildable_build_keys_are_warnings_that_deploy_refuses() {
    let d = parse(
        "app = 'a'\n[build]\n  builder = 'paketobuildpacks/builder:base'\n  buildpacks = ['gcr.io/paketo-buildpacks/nodejs']\n  dockerfile = 'Dockerfile'\n  [build.args]\n    A = '1'\n",
    )
    .diagnostics;
    assert!(!d.has_errors(), "{d}");
    let refused: Vec<_> = d.deploy_refusals().collect();
    assert_eq!(refused.len(), 2, "{d}");
    assert_eq!(refused[0].position(), "fly.toml:3:13");
    assert!(refused[0].message.contains("[build] builder"), "{d}");
    assert!(refused[0].hint.as_deref().unwrap().contains("Dockerfile"));
    assert_eq!(refused[1].position(), "fly.toml:4:16");
    assert!(refused[1].message.contains("buildpacks"), "{d}");
    // Keys Aloft builds with are not refused.
    let d = parse("[build]\n  dockerfile = 'Dockerfile.prod'\n  ignorefile = '.ignore'\n  build-target = 'x'\n  compression = 'zstd'\n  compression_level = 3\n  [build.args]\n    A = '1'\n").diagnostics;
    assert_eq!(d.deploy_refusals().count(), 0, "{d}");
    for src in [
        "[build]\nbuiltin = 'go'\n",
        "[build]\nbuiltin = 'go'\n[build.settings]\nx = 1\n",
        "[build.compose]\nfile = 'docker-compose.yml'\n",
    ] {
        let d = parse(src).diagnostics;
        assert!(
            !d.has_errors() && d.deploy_refusals().count() >= 1,
            "{src}: {d}"
        );
    }
}

#[test]
fn build_target_alias() {
    let c = ok("[build]\nbuild_target = 'prod'\n");
    assert_eq!(c.build.unwrap().build_target.as_deref(), Some("prod"));
}

#[test]
fn duration_units_per_field() {
    let c = ok("kill_timeout = 5\n[[services]]\ninternal_port = 1\n[[services.ports]]\nport = 80\n[[services.tcp_checks]]\ninterval = 10000\ntimeout = '2s'\n[checks.a]\ntype = 'tcp'\nport = 1\ninterval = 15000\n");
    assert_eq!(c.kill_timeout, secs(5));
    assert_eq!(c.services[0].tcp_checks[0].interval, secs(10));
    assert_eq!(c.services[0].tcp_checks[0].timeout, secs(2));
    assert_eq!(c.checks["a"].check.interval, secs(15));
    // Everything else: bare = nanoseconds, with a warning.
    let l = parse("[deploy]\nwait_timeout = 300\n");
    assert_eq!(
        l.config.deploy.unwrap().wait_timeout.unwrap().0,
        Duration::from_nanos(300)
    );
    assert!(has_warning(&l.diagnostics, "nanoseconds"));
    let c = ok("[deploy]\nwait_timeout = '10m0s'\n");
    assert_eq!(c.deploy.unwrap().wait_timeout, secs(600));
}

#[test]
fn unknown_keys_are_warnings_with_suggestions() {
    let l =
        parse("app = 'a'\nmachine = 1\n[http_service]\ninternal_port = 8080\nforce_http = true\n");
    assert!(!l.diagnostics.has_errors());
    assert!(has_warning(
        &l.diagnostics,
        "unknown top-level key `machine`"
    ));
    assert!(has_warning(&l.diagnostics, "did you mean `force_https`?"));
}

// ---- §1.3 processes and §2.1 groups ------------------------------------------------------------

#[test]
fn group_list_and_default_group() {
    assert_eq!(ok("").process_names(), ["app"]);
    assert_eq!(ok("").default_process_name(), "app");
    let c = ok("[processes]\nworker = 'w'\nweb = 'x'\n");
    assert_eq!(c.process_names(), ["web", "worker"]);
    assert_eq!(c.default_process_name(), "web");
    let c = ok("[processes]\nzzz = 'a'\nfoo = 'b'\nbar = 'c'\n");
    assert_eq!(c.default_process_name(), "bar");
    let c = ok("[processes]\nzzz = 'a'\napp = 'b'\n");
    assert_eq!(c.default_process_name(), "app");
}

#[test]
fn group_names_aloft_cannot_run_or_reserved_are_refused() {
    // flyctl takes any name; Aloft refuses names its agent cannot run (and the platform's own).
    errors(
        "[processes]\n'web.1' = 'a'\nfly_app_console = 'b'\nok = 'c'\n\"web 2\" = 'd'\n",
        &[
            (2, "cannot be used with Aloft"),
            (3, "reserved"),
            (5, "e.g. 'web-2'"),
        ],
    );
    errors(
        &format!("[processes]\n{} = 'a'\n", "a".repeat(64)),
        &[(2, "1-63")],
    );
}

#[test]
fn group_names_with_underscores_or_capitals_only_warn() {
    // flyctl takes them, and so does the agent; only a hostname-strict client could mind.
    let l = parse("[processes]\nWeb_1 = 'a'\nsidekiq_worker = 'b'\n[http_service]\ninternal_port = 1\nprocesses = ['Web_1']\n");
    assert!(!l.diagnostics.has_errors(), "{}", l.diagnostics);
    assert_eq!(l.config.process_names(), ["Web_1", "sidekiq_worker"]);
    assert!(
        has_warning(&l.diagnostics, "e.g. 'web-1'"),
        "{}",
        l.diagnostics
    );
    assert!(
        has_warning(&l.diagnostics, "e.g. 'sidekiq-worker'"),
        "{}",
        l.diagnostics
    );
    assert_eq!(
        l.config.machine_config_for("sidekiq_worker").metadata["fly_process_group"],
        "sidekiq_worker"
    );
}

#[test]
fn commands_must_shell_split() {
    errors(
        "[processes]\nweb = 'echo \"unclosed'\n",
        &[(2, "cannot be split")],
    );
    errors("console_command = 'a \"b'\n", &[(1, "cannot be split")]);
    errors(
        "[deploy]\nrelease_command = \"x 'y\"\n",
        &[(2, "cannot be split")],
    );
}

// ---- §1.4 http_service, §1.5 services ---------------------------------------------------------

#[test]
fn http_service_expands_first_with_80_and_443() {
    let c = ok("[http_service]\ninternal_port = 3000\nforce_https = true\nauto_stop_machines = 'suspend'\n[[services]]\ninternal_port = 5432\n[[services.ports]]\nport = 5432\n");
    let s = c.services_for("app");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].internal_port, 3000);
    assert_eq!(s[0].ports[0].port, Some(80));
    assert_eq!(s[0].ports[0].handlers, ["http"]);
    assert!(s[0].ports[0].force_https);
    assert_eq!(s[0].ports[1].port, Some(443));
    assert_eq!(s[0].ports[1].handlers, ["http", "tls"]);
    assert!(!s[0].ports[1].force_https);
    assert_eq!(s[0].autostop, Some(aloft_api::AutostopMode::Suspend));
    assert_eq!(s[1].internal_port, 5432);
}

#[test]
fn services_need_processes_when_there_are_several_groups() {
    errors(
        "[processes]\nweb = 'a'\nworker = 'b'\n[http_service]\ninternal_port = 1\n[[services]]\ninternal_port = 2\nprocesses = ['web']\n[[services.ports]]\nport = 9\n",
        &[(4, "has no `processes`")],
    );
    // A single group is unambiguous: the service applies to it.
    let c = ok("[processes]\nweb = 'a'\n[http_service]\ninternal_port = 1\n");
    assert_eq!(c.services_for("web").len(), 1);
}

#[test]
fn service_problems() {
    let d = errors(
        "[[services]]\nprotocol = 'sctp'\n[[services.ports]]\nhandlers = ['http']\n[[services]]\ninternal_port = 1\n",
        &[(1, "no `internal_port`"), (2, "unknown protocol"), (3, "has no `port`")],
    );
    assert!(has_warning(&d, "no ports"));
    let d = parse("[[services]]\ninternal_port = 1\n[[services.ports]]\nport = 80\n[[services.http_checks]]\ninterval = '500ms'\n").diagnostics;
    assert!(has_warning(&d, "outside 1s..1m"));
}

#[test]
fn same_port_in_different_groups_warns() {
    let d = parse("[processes]\nweb = 'a'\napi = 'b'\n[http_service]\ninternal_port = 1\nprocesses = ['web']\n[[services]]\ninternal_port = 2\nprocesses = ['api']\n[[services.ports]]\nport = 443\n").diagnostics;
    assert!(!d.has_errors(), "{d}");
    assert!(
        has_warning(&d, "balance connections across both groups"),
        "{d}"
    );
    // Same groups: no warning.
    let d = parse("[http_service]\ninternal_port = 1\n[[services]]\ninternal_port = 2\n[[services.ports]]\nport = 443\n").diagnostics;
    assert!(!has_warning(&d, "balance"), "{d}");
}

// ---- every `processes` reference must exist (§9) -----------------------------------------------

#[test]
fn every_processes_reference_is_checked() {
    let src = "[processes]\nweb = 'a'\n\
[http_service]\ninternal_port = 1\nprocesses = ['web']\n\
[[vm]]\nprocesses = ['wbe']\n\
[[mounts]]\nsource = 'd'\ndestination = '/d'\nprocesses = ['db']\n\
[checks.c]\ntype = 'tcp'\nport = 1\nprocesses = ['x1']\n\
[[files]]\nguest_path = '/a'\nraw_value = 'x'\nprocesses = ['x2']\n\
[[metrics]]\nport = 9\nprocesses = ['x3']\n\
[[restart]]\npolicy = 'always'\nprocesses = ['x4']\n";
    // flyctl refuses undefined groups in services and [[restart]] only; elsewhere the section
    // simply applies to no machine, which Aloft says in a warning.
    let d = errors(src, &[(25, "'x4'")]);
    let warned: Vec<usize> = d
        .warnings()
        .filter(|w| w.message.contains("names undefined process group"))
        .map(|w| w.location.unwrap().line)
        .collect();
    assert_eq!(warned, [7, 11, 15, 19, 22], "{d}");
    assert!(
        d.items
            .iter()
            .filter(|i| i.message.contains("names undefined process group"))
            .all(|e| e.hint.as_deref() == Some("defined groups are ['web']")),
        "{d}"
    );
    errors(
        "[processes]\nweb = 'a'\n[http_service]\ninternal_port = 1\nprocesses = ['wbe']\n[[services]]\ninternal_port = 2\nprocesses = ['x']\n",
        &[(5, "'wbe'"), (8, "'x'")],
    );
}

// ---- §1.6 checks ------------------------------------------------------------------------------

#[test]
fn top_level_check_rules() {
    errors(
        "[checks.a]\nport = 1\n[checks.b]\ntype = 'tcp'\nport = 1\ninterval = '1s'\n[checks.c]\ntype = 'http'\nport = 1\ntimeout = '61s'\n[checks.d]\ntype = 'grpc'\n",
        &[(1, "has no `type`"), (6, "below the minimum of 2s"), (10, "above the maximum of 60s"), (12, "unknown check type")],
    );
    // Port defaults to the group's http_service port; method is upper-cased.
    let c = ok("[http_service]\ninternal_port = 3000\n[checks.h]\ntype = 'http'\npath = '/up'\nmethod = 'get'\n");
    let ck = &c.machine_config_for("app").checks["h"];
    assert_eq!(ck.port, Some(3000));
    assert_eq!(ck.method.as_deref(), Some("GET"));
    // No port and no http_service: a warning, not an error.
    let d = parse("[checks.h]\ntype = 'tcp'\n").diagnostics;
    assert!(!d.has_errors() && has_warning(&d, "has no port"), "{d}");
}

// ---- §1.7 mounts ------------------------------------------------------------------------------

#[test]
fn mount_rules() {
    errors(
        "[[mounts]]\nsource = 'd'\ndestination = '/d'\ninitial_size = '500mb'\n[[mounts]]\nsource = 'e'\ndestination = '/e'\nprocesses = ['app']\nauto_extend_size_threshold = 80\n",
        &[(4, "at least 1 GB"), (5, "auto-extend needs both")],
    );
    // Two mounts for one group: flyctl takes it and mounts the first; so does Aloft, with a
    // warning.
    let l = parse("[[mounts]]\nsource = 'd'\ndestination = '/d'\n[[mounts]]\nsource = 'e'\ndestination = '/e'\n");
    assert!(!l.diagnostics.has_errors(), "{}", l.diagnostics);
    assert!(
        has_warning(&l.diagnostics, "more than one [[mounts]]"),
        "{}",
        l.diagnostics
    );
    let mounts = l.config.machine_config_for("app").mounts;
    assert_eq!((mounts.len(), mounts[0].name.as_str()), (1, "d"));
    let c = ok("[[mounts]]\nsource = 'd'\ndestination = '/d'\ninitial_size = '10gb'\nauto_extend_size_threshold = 80\nauto_extend_size_increment = '1GB'\nauto_extend_size_limit = '10GB'\n");
    let m = &c.machine_config_for("app").mounts[0];
    assert_eq!(
        (
            m.size_gb,
            m.extend_threshold_percent,
            m.add_size_gb,
            m.size_gb_limit
        ),
        (Some(10), Some(80), Some(1), Some(10))
    );
    errors(
        "[[mounts]]\nsource = 'd'\ndestination = '/d'\n[deploy]\nstrategy = 'canary'\n",
        &[(5, "canary")],
    );
    errors(
        "[[mounts]]\nsource = 'd'\ndestination = '/d'\n[deploy]\nstrategy = 'bluegreen'\n",
        &[(5, "bluegreen strategy cannot be used with [[mounts]]")],
    );
}

// ---- §1.8 vm ----------------------------------------------------------------------------------

#[test]
fn guest_computation_order() {
    let g = |src: &str| ok(src).guest_for("app").unwrap().unwrap();
    let x = g("[[vm]]\nsize = 'performance-2x'\n");
    assert_eq!(
        (x.cpu_kind.as_str(), x.cpus, x.memory_mb),
        ("performance", 2, 4096)
    );
    let x = g("[[vm]]\nsize = 'shared-cpu-2x'\nmemory = '1gb'\n");
    assert_eq!((x.cpus, x.memory_mb), (2, 1024));
    // Inline fields beat size and memory.
    let x = g("[[vm]]\nsize = 'shared-cpu-1x'\nmemory = '512mb'\ncpus = 2\nmemory_mb = 2048\n");
    assert_eq!((x.cpus, x.memory_mb), (2, 2048));
    // Only cpu_kind: the default preset, which is what Fly does (resets machines to 256 MB).
    let x = g("[[vm]]\ncpu_kind = 'shared'\n");
    assert_eq!((x.cpus, x.memory_mb), (1, 256));
    let x = g("host_dedication_id = 'h1'\n[[vm]]\nsize = 'shared-cpu-1x'\n");
    assert_eq!(x.host_dedication_id.as_deref(), Some("h1"));
    // No [[vm]]: None, deploy keeps existing guests.
    assert_eq!(ok("").guest_for("app").unwrap(), None);
    assert_eq!(ok("").machine_config_for("app").guest, None);
}

#[test]
fn vm_empty_strings_and_zero_counts_are_unset() {
    // flyctl overlays only the guest fields that are set: "" and 0 leave the preset alone.
    let x = ok("[[vm]]\nsize = ''\nmemory = ''\ncpu_kind = ''\ncpus = 0\nmemory_mb = 0\ngpus = 0\npersist_rootfs = ''\n")
        .guest_for("app")
        .unwrap()
        .unwrap();
    assert_eq!(
        (x.cpu_kind.as_str(), x.cpus, x.memory_mb, x.persist_rootfs),
        ("shared", 1, 256, None)
    );
    let x = ok("[[vm]]\nsize = 'shared-cpu-2x'\ncpus = 0\n")
        .guest_for("app")
        .unwrap()
        .unwrap();
    assert_eq!((x.cpus, x.memory_mb), (2, 512));
    // `memory = 0` is still an error, as in flyctl.
    errors("[[vm]]\nmemory = 0\n", &[(2, "cannot be zero")]);
}

#[test]
fn sizes_take_every_unit_spelling_flyctl_takes() {
    // go-units: a unit letter, an optional `i`, an optional `b`, any case.
    let g = |m: &str| {
        ok(&format!("[[vm]]\nmemory = '{m}'\n"))
            .guest_for("app")
            .unwrap()
            .unwrap()
            .memory_mb
    };
    assert_eq!(
        (g("1gi"), g("2Gi"), g("512Mi"), g("1 GB")),
        (1024, 2048, 512, 1024)
    );
    let size = |v: &str| {
        ok(&format!(
            "[[mounts]]\nsource = 'd'\ndestination = '/d'\ninitial_size = '{v}'\n"
        ))
        .machine_config_for("app")
        .mounts[0]
            .size_gb
    };
    assert_eq!(
        (size("10gi"), size("3G"), size("2000mb")),
        (Some(10), Some(3), Some(2))
    );
    errors(
        "[[mounts]]\nsource = 'd'\ndestination = '/d'\ninitial_size = '10 gallons'\n",
        &[(4, "initial_size")],
    );
}

#[test]
fn vm_errors_have_hints() {
    let d = errors(
        "[[vm]]\nsize = 'shared-cpu-3x'\n[[vm]]\nmemory = 0\nprocesses = ['app']\n[[vm]]\ncpu_kind = 'shared'\nmemory = '64gb'\nprocesses = ['app']\n",
        &[(2, "unknown VM size"), (4, "cannot be zero"), (6, "cannot run")],
    );
    let e = d
        .errors()
        .find(|e| e.message.contains("unknown VM size"))
        .unwrap();
    let hint = e.hint.as_deref().unwrap();
    assert!(
        hint.contains("shared-cpu-2x") && !hint.contains("performance"),
        "{hint}"
    );
}

#[test]
fn vm_without_processes_applies_to_all_groups_explicit_last_wins() {
    let c = ok("[processes]\nweb = 'a'\nworker = 'b'\nbatch = 'c'\n\
[[vm]]\nsize = 'shared-cpu-2x'\n\
[[vm]]\nsize = 'shared-cpu-4x'\n\
[[vm]]\nsize = 'performance-1x'\nprocesses = ['worker']\n\
[[vm]]\nsize = 'performance-2x'\nprocesses = ['worker']\n");
    let size = |g: &str| c.guest_for(g).unwrap().unwrap().size_name();
    assert_eq!(size("web"), "shared-cpu-2x", "first generic entry");
    assert_eq!(size("batch"), "shared-cpu-2x");
    assert_eq!(size("worker"), "performance-2x", "last explicit entry");
    let c = ok("[processes]\nweb = 'a'\nworker = 'b'\n[[vm]]\nsize = 'performance-1x'\nprocesses = ['worker']\n");
    assert_eq!(c.guest_for("web").unwrap(), None);
}

// ---- §1.9 deploy ------------------------------------------------------------------------------

#[test]
fn deploy_section() {
    let c = ok("[deploy]\nstrategy = 'bluegreen'\nrelease_command = 'migrate'\nrelease_command_timeout = '10m'\n[deploy.release_command_vm]\nsize = 'shared-cpu-2x'\n");
    let d = c.deploy.unwrap();
    assert_eq!(d.strategy.as_deref(), Some("bluegreen"));
    assert_eq!(d.release_command_timeout, secs(600));
    assert_eq!(
        d.release_command_vm.unwrap().size.as_deref(),
        Some("shared-cpu-2x")
    );
    let d = errors(
        "[deploy]\nstrategy = 'yolo'\n",
        &[(2, "unknown deploy strategy")],
    );
    assert!(d
        .errors()
        .next()
        .unwrap()
        .hint
        .as_deref()
        .unwrap()
        .contains("rolling"));
}

// ---- §1.11 restart, files, metrics ------------------------------------------------------------

#[test]
fn restart_rules() {
    let c = ok("[[restart]]\npolicy = 'always'\n[[restart]]\npolicy = 'never'\nretries = 3\n");
    let r = c.machine_config_for("app").restart.unwrap();
    assert_eq!(
        (r.policy.as_str(), r.max_retries),
        ("no", Some(3)),
        "last match wins, never → no"
    );
    errors(
        "[[restart]]\npolicy = 'sometimes'\n",
        &[(2, "unknown restart policy")],
    );
    // [restart] as a single table is accepted.
    assert_eq!(ok("[restart]\npolicy = 'on-failure'\n").restart.len(), 1);
}

#[test]
fn files_apply_per_group_and_encode() {
    let c = ok("[processes]\nweb = 'a'\nworker = 'b'\n\
[[files]]\nguest_path = '/etc/a'\nraw_value = 'hello'\nprocesses = ['worker']\n\
[[files]]\nguest_path = '/etc/s'\nsecret_name = 'S'\n");
    let web = c.machine_config_for("web").files;
    let worker = c.machine_config_for("worker").files;
    assert_eq!(
        web.len(),
        1,
        "no-processes file goes to the default group only"
    );
    assert_eq!(web[0].secret_name.as_deref(), Some("S"));
    assert_eq!(worker.len(), 1);
    assert_eq!(worker[0].raw_value.as_deref(), Some("aGVsbG8="));
    errors("[[files]]\nguest_path = '/x'\n", &[(1, "has no content")]);
    errors(
        "[[files]]\nguest_path = 'rel'\nraw_value = 'x'\n",
        &[(2, "absolute")],
    );
}

#[test]
fn local_files_are_read_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf.txt"), "hi").unwrap();
    std::fs::write(
        dir.path().join("fly.toml"),
        "[[files]]\nguest_path = '/c'\nlocal_path = 'conf.txt'\n",
    )
    .unwrap();
    let l = aloft_config::load(&dir.path().join("fly.toml")).unwrap();
    assert_eq!(
        l.config.machine_config_for("app").files[0]
            .raw_value
            .as_deref(),
        Some("aGk=")
    );
}

#[test]
fn metrics_first_match() {
    let c = ok("[[metrics]]\nport = 9000\n[[metrics]]\nport = 9001\npath = '/m'\n");
    assert_eq!(c.machine_config_for("app").metrics.unwrap().port, 9000);
}

// ---- §2.3–§2.4 flattening ---------------------------------------------------------------------

#[test]
fn command_is_cmd_never_entrypoint() {
    let c = ok(
        "[processes]\nweb = \"bundle exec puma -C 'config/puma.rb'\"\nworker = ''\n\
[experimental]\nentrypoint = ['/init']\ncmd = ['default']\n",
    );
    let web = c.machine_config_for("web");
    assert_eq!(
        web.init.cmd.unwrap(),
        ["bundle", "exec", "puma", "-C", "config/puma.rb"]
    );
    assert_eq!(
        web.init.entrypoint.as_deref(),
        Some(&["/init".to_string()][..]),
        "entrypoint applies to all groups"
    );
    let worker = c.machine_config_for("worker");
    assert_eq!(
        worker.init.cmd.unwrap(),
        ["default"],
        "experimental.cmd is the fallback for empty commands"
    );
    assert_eq!(
        worker.init.entrypoint.as_deref(),
        Some(&["/init".to_string()][..])
    );
    assert_eq!(ok("").machine_config_for("app").init.cmd, None);
}

#[test]
fn env_metadata_stop_swap_statics() {
    let c = ok("primary_region = 'ams'\nkill_signal = 'SIGTERM'\nkill_timeout = '30s'\nswap_size_mb = 512\n\
[processes]\nweb = 'a'\nworker = 'b'\n[env]\nA = 'b'\n[[statics]]\nguest_path = '/app/public'\nurl_prefix = '/static'\n");
    for g in ["web", "worker"] {
        let mc = c.machine_config_for(g);
        assert_eq!(mc.env["A"], "b");
        assert_eq!(mc.env["FLY_PROCESS_GROUP"], g);
        assert_eq!(mc.env["PRIMARY_REGION"], "ams");
        assert_eq!(mc.metadata["fly_process_group"], g);
        assert_eq!(mc.metadata["fly_platform_version"], "v2");
        let sc = mc.stop_config.unwrap();
        assert_eq!(
            (sc.signal.as_deref(), sc.timeout),
            (Some("SIGTERM"), secs(30))
        );
        assert_eq!(mc.init.swap_size_mb, Some(512));
        assert_eq!(mc.statics.len(), 1, "statics apply to every group");
    }
    let mc = ok("").machine_config_for("app");
    assert_eq!(mc.stop_config, None);
    assert!(!mc.env.contains_key("PRIMARY_REGION"));
    errors("kill_signal = 'SIGFOO'\n", &[(1, "unknown kill_signal")]);
}

#[test]
fn unlisted_sections_apply_to_the_default_group_only() {
    let c = ok("[processes]\nweb = 'a'\nworker = 'b'\n\
[[mounts]]\nsource = 'd'\ndestination = '/d'\n\
[checks.c]\ntype = 'tcp'\nport = 1\n\
[[restart]]\npolicy = 'always'\n\
[[metrics]]\nport = 9\n\
[[vm]]\nsize = 'shared-cpu-2x'\n");
    let web = c.machine_config_for("web");
    let worker = c.machine_config_for("worker");
    assert_eq!((web.mounts.len(), web.checks.len()), (1, 1));
    assert!(web.restart.is_some() && web.metrics.is_some());
    assert_eq!((worker.mounts.len(), worker.checks.len()), (0, 0));
    assert!(worker.restart.is_none() && worker.metrics.is_none());
    // ...whereas [[vm]] without processes applies to both.
    assert_eq!(web.guest, worker.guest);
    assert!(worker.guest.is_some());
}

#[test]
fn three_separate_mistakes_give_three_located_errors() {
    let src = "app = 'demo'\n\
[processes]\n\
web = 'serve'\n\
[http_service]\n\
internal_port = 8080\n\
processes = ['wbe']\n\
[[vm]]\n\
size = 'shared-cpu-3x'\n\
[[restart]]\n\
policy = 'sometimes'\n";
    let d = errors(
        src,
        &[
            (6, "'wbe'"),
            (8, "unknown VM size"),
            (10, "unknown restart policy"),
        ],
    );
    let text = d.to_string();
    assert!(text.contains("fly.toml:6:"), "{text}");
    assert!(text.contains("fly.toml:8:"), "{text}");
    assert!(text.contains("fly.toml:10:"), "{text}");
    assert!(text.contains("3 error(s)"), "{text}");
    assert!(d
        .items
        .iter()
        .all(|i| i.severity == Severity::Error || i.severity == Severity::Warning));
}

#[test]
fn config_json_round_trips_through_parse_str() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/full.toml"))
        .unwrap();
    let c = ok(&src);
    let json = serde_json::to_string(&c).unwrap();
    let again = parse_str(&json, Format::Json, "release.json");
    assert!(!again.diagnostics.has_errors(), "{}", again.diagnostics);
    assert_eq!(again.config, c);
    for g in c.process_names() {
        assert_eq!(
            again.config.machine_config_for(&g),
            c.machine_config_for(&g)
        );
    }
}

// ---- values flyctl writes as text or reads in another form -------------------------------------

#[test]
fn env_lists_and_tables_become_text_with_a_warning() {
    let l = parse("[env]\nA = [1, 'b']\nB = { y = 2, x = true }\nC = 1.5\n");
    assert!(!l.diagnostics.has_errors(), "{}", l.diagnostics);
    let env = &l.config.env;
    assert_eq!(
        (env["A"].as_str(), env["B"].as_str(), env["C"].as_str()),
        ("[1 b]", "map[x:true y:2]", "1.5")
    );
    assert_eq!(l.diagnostics.warnings().count(), 2, "{}", l.diagnostics);
    assert!(has_warning(&l.diagnostics, "write the value as a string"));
}

#[test]
fn check_headers_as_a_list_of_name_value_tables() {
    let c = ok("[[services]]\ninternal_port = 1\n[[services.ports]]\nport = 80\n[[services.http_checks]]\npath = '/'\nheaders = [{ name = 'X-A', value = 'a' }, { name = 'X-B' }]\n");
    let h = &c.services[0].http_checks[0].headers;
    assert_eq!((h["X-A"].as_str(), h["X-B"].as_str()), ("a", ""));
    errors(
        "[checks.c]\ntype = 'http'\nport = 1\nheaders = [{ value = 'a' }]\n",
        &[(4, "has no `name`")],
    );
}

#[test]
fn legacy_processes_entries_that_are_not_tables_are_skipped_aloud() {
    let l = parse("processes = ['web', { name = 'worker', command = 'w' }]\n");
    assert!(!l.diagnostics.has_errors(), "{}", l.diagnostics);
    assert_eq!(l.config.process_names(), ["worker"]);
    assert!(
        has_warning(&l.diagnostics, "defines no group"),
        "{}",
        l.diagnostics
    );
}

#[test]
fn fractional_durations_drop_the_fraction_like_go() {
    assert_eq!(ok("kill_timeout = 5.7\n").kill_timeout, secs(5));
    let c = ok("[[services]]\ninternal_port = 1\n[[services.ports]]\nport = 80\n[[services.tcp_checks]]\ninterval = 15000.9\n");
    assert_eq!(c.services[0].tcp_checks[0].interval, secs(15));
}
