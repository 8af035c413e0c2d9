//! Every field of Fly's Machines API schema (`shared/spec/machines-openapi.json`) that a client
//! can send survives a trip through Aloft's wire types. A field the types do not know would be
//! dropped by serde without a word, and the agent could neither honour nor refuse it: "nothing
//! accepted is silently ignored" starts here. What the agent does not implement it refuses by
//! name (see `refuse_unsupported` in the agent's controller); this test only proves it gets to
//! see every field.

use std::path::PathBuf;

use aloft_api::exec::MachineExecRequest;
use aloft_api::machine::{
    CreateAppRequest, CreateMachineRequest, StopRequest, UpdateMachineRequest,
};
use aloft_api::volumes::{CreateVolumeRequest, ExtendVolumeRequest, UpdateVolumeRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

fn openapi() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/spec/machines-openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (CI must have shared/ beside the checkout)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("the openapi document is JSON")
}

/// A value for every property of `schema`, recursively, shaped so Aloft's types accept it.
fn sample(doc: &Value, schema: &Value, name: &str, depth: usize) -> Value {
    if let Some(reference) = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str())
    {
        let key = reference.trim_start_matches("#/components/schemas/");
        if key == "fly.Duration" {
            return json!("10s");
        }
        return sample(doc, &doc["components"]["schemas"][key], name, depth + 1);
    }
    assert!(depth < 20, "schema nests too deep at {name}");
    if let Some(first) = schema["enum"].get(0) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("object") => match schema["properties"].as_object() {
            Some(props) => Value::Object(
                props
                    .iter()
                    .map(|(k, s)| (k.clone(), sample(doc, s, k, depth + 1)))
                    .collect(),
            ),
            None => match schema.get("additionalProperties") {
                Some(inner) if inner.is_object() && inner.get("type") != Some(&json!("object")) => {
                    json!({ "key": sample(doc, inner, name, depth + 1) })
                }
                _ => json!({}),
            },
        },
        Some("array") => json!([sample(doc, &schema["items"], name, depth + 1)]),
        Some("integer") => json!(string_sample_int(name)),
        Some("boolean") => json!(true),
        _ => json!(string_sample(name)),
    }
}

fn string_sample_int(name: &str) -> u64 {
    match name {
        "cpus" => 1,
        "memory_mb" => 256,
        _ => 1,
    }
}

/// Strings some of Aloft's types parse (a duration, a signal, a policy…).
fn string_sample(name: &str) -> &'static str {
    match name {
        "signal" => "SIGTERM",
        "policy" => "always",
        "cpu_kind" => "shared",
        "protocol" => "tcp",
        "type" => "tcp",
        "method" => "GET",
        "guest_path" | "path" => "/x",
        "url_prefix" => "/static",
        "raw_value" => "eA==",
        "schedule" => "daily",
        "autostop" => "stop",
        "size" => "shared-cpu-1x",
        "image" => "registry.example/app:1",
        "version" => "v1",
        _ => "x",
    }
}

/// Paths of keys present in `sent` but absent from `kept`.
fn dropped(sent: &Value, kept: &Value, at: &str, out: &mut Vec<String>) {
    match (sent, kept) {
        (Value::Object(s), Value::Object(k)) => {
            for (key, v) in s {
                let path = format!("{at}.{key}");
                match k.get(key) {
                    Some(kv) => dropped(v, kv, &path, out),
                    None => out.push(path),
                }
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (i, v) in s.iter().enumerate() {
                match k.get(i) {
                    Some(kv) => dropped(v, kv, &format!("{at}[{i}]"), out),
                    None => out.push(format!("{at}[{i}]")),
                }
            }
        }
        _ => {}
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(schema_name: &str) -> Vec<String> {
    let doc = openapi();
    let schema = &doc["components"]["schemas"][schema_name];
    assert!(schema.is_object(), "no schema {schema_name} in the openapi");
    let sent = sample(&doc, schema, schema_name, 0);
    let parsed: T = serde_json::from_value(sent.clone())
        .unwrap_or_else(|e| panic!("{schema_name} sample {sent:#} does not parse: {e}"));
    let kept = serde_json::to_value(&parsed).expect("serializes");
    let mut out = Vec::new();
    dropped(&sent, &kept, schema_name, &mut out);
    out
}

#[test]
fn create_machine_request_keeps_every_fly_field() {
    assert_eq!(
        round_trip::<CreateMachineRequest>("CreateMachineRequest"),
        Vec::<String>::new()
    );
}

#[test]
fn update_machine_request_keeps_every_fly_field() {
    assert_eq!(
        round_trip::<UpdateMachineRequest>("UpdateMachineRequest"),
        Vec::<String>::new()
    );
}

#[test]
fn stop_request_keeps_every_fly_field() {
    assert_eq!(
        round_trip::<StopRequest>("StopRequest"),
        Vec::<String>::new()
    );
}

#[test]
fn create_app_request_keeps_every_fly_field() {
    assert_eq!(
        round_trip::<CreateAppRequest>("CreateAppRequest"),
        Vec::<String>::new()
    );
}

#[test]
fn exec_request_keeps_every_fly_field() {
    assert_eq!(
        round_trip::<MachineExecRequest>("MachineExecRequest"),
        Vec::<String>::new()
    );
}

#[test]
fn volume_requests_keep_every_fly_field() {
    assert_eq!(
        round_trip::<CreateVolumeRequest>("CreateVolumeRequest"),
        Vec::<String>::new()
    );
    assert_eq!(
        round_trip::<UpdateVolumeRequest>("UpdateVolumeRequest"),
        Vec::<String>::new()
    );
    assert_eq!(
        round_trip::<ExtendVolumeRequest>("ExtendVolumeRequest"),
        Vec::<String>::new()
    );
}

#[test]
fn the_check_finds_a_dropped_field() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct OnlySignal {
        signal: Option<String>,
    }
    assert_eq!(
        round_trip::<OnlySignal>("StopRequest"),
        vec!["StopRequest.timeout".to_string()]
    );
}
