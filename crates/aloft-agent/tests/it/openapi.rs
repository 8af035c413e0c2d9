//! `openapi.json` describes exactly the routes the router serves (method + path).

use std::collections::BTreeSet;

fn normalise(path: &str) -> String {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn openapi_matches_the_router() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).expect("openapi.json is JSON");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_ascii_uppercase(), normalise(path)));
        }
    }
    let served: BTreeSet<(String, String)> = aloft_agent::api::routes()
        .list
        .iter()
        .map(|(m, p)| (m.as_str().to_string(), normalise(p)))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in openapi.json but not served: {extra:?}"
    );
    assert_eq!(
        served.len(),
        aloft_agent::api::routes().list.len(),
        "a route is registered twice"
    );
}
