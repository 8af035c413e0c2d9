//! Robustness: `parse_str` + validation + flattening never panic, whatever the input — arbitrary
//! bytes, arbitrary TOML documents, and documents built from fly.toml's own keys with values of
//! random types (which reach deep into the normalisers). Bounded case counts keep CI fast.

use aloft_config::{parse_str, Format};
use proptest::prelude::*;

/// Everything a caller does with a loaded config.
fn exercise(src: &str, format: Format) {
    let loaded = parse_str(src, format, "fly.toml");
    let _ = loaded.diagnostics.to_string();
    let c = &loaded.config;
    for g in c.process_names() {
        let _ = c.machine_config_for(&g);
        let _ = c.guest_for(&g);
        let _ = c.services_for(&g);
    }
    let _ = c.default_process_name();
    let _ = serde_json::to_string(c).unwrap();
}

const KEYS: &[&str] = &[
    "app",
    "primary_region",
    "kill_signal",
    "kill_timeout",
    "swap_size_mb",
    "processes",
    "env",
    "http_service",
    "services",
    "checks",
    "mounts",
    "mount",
    "vm",
    "compute",
    "restart",
    "files",
    "metrics",
    "statics",
    "experimental",
    "deploy",
    "build",
    "internal_port",
    "ports",
    "port",
    "handlers",
    "concurrency",
    "size",
    "memory",
    "cpus",
    "cpu_kind",
    "memory_mb",
    "source",
    "destination",
    "initial_size",
    "policy",
    "guest_path",
    "raw_value",
    "type",
    "interval",
    "timeout",
    "grace_period",
    "tcp_checks",
    "http_checks",
    "name",
    "command",
    "cmd",
    "entrypoint",
    "strategy",
    "auto_stop_machines",
    "start_port",
    "end_port",
    "web",
    "worker",
    "app",
];

/// Values of every TOML type, including nested tables and arrays of tables, keyed by fly.toml
/// names so that normalisers see plausible-but-wrong shapes.
fn value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        (0i64..70000).prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        "[a-z0-9 ,'\"\\\\.-]{0,12}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "1gb",
            "10s",
            "0",
            "shared-cpu-1x",
            "web",
            "12,23",
            "-5",
            "1e9",
            "suspend"
        ])
        .prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or_default()),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..5).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::btree_map(prop::sample::select(KEYS), value(), 0..8).prop_map(|m| {
        serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let s = String::from_utf8_lossy(&bytes);
        exercise(&s, Format::Toml);
        exercise(&s, Format::Json);
        exercise(&s, Format::Yaml);
    }

    #[test]
    fn toml_looking_text_never_panics(s in "(\\[{1,2}[a-z_.]{1,12}\\]{1,2}\n|[a-z_]{1,14} = ([0-9]{1,6}|'[^'\n]{0,10}'|\\[[^\n]{0,12}\\]|true|\\{[^\n]{0,12}\\})\n){0,12}") {
        exercise(&s, Format::Toml);
    }

    #[test]
    fn arbitrary_documents_never_panic(doc in document()) {
        // The same document as TOML (where representable), JSON and YAML.
        if let Ok(toml) = toml_edit::ser::to_string(&doc) {
            exercise(&toml, Format::Toml);
        }
        exercise(&doc.to_string(), Format::Json);
        exercise(&serde_norway::to_string(&doc).unwrap_or_default(), Format::Yaml);
    }
}
