//! Every path of `aloft_api::routes` (what `aloft-client` calls) is served by the agent's router,
//! with the method the client uses: client and server cannot drift apart.

use aloft_api::routes;
use axum::http::Method;

/// Whether `path` fills `template` (`{name}` matches one non-empty segment).
fn fills(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') && t.ends_with('}') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

#[test]
fn the_router_serves_every_path_the_client_calls() {
    let served = aloft_agent::api::routes().list;
    let calls = [
        (Method::GET, routes::apps()),
        (Method::POST, routes::apps()),
        (Method::GET, routes::app("a")),
        (Method::DELETE, routes::app("a")),
        (Method::GET, routes::machines("a")),
        (Method::POST, routes::machines("a")),
        (Method::GET, routes::machine("a", "m")),
        (Method::POST, routes::machine("a", "m")),
        (Method::DELETE, routes::machine("a", "m")),
        (Method::POST, routes::machine_start("a", "m")),
        (Method::POST, routes::machine_stop("a", "m")),
        (Method::GET, routes::machine_wait("a", "m")),
        (Method::POST, routes::machine_metadata("a", "m", "k")),
        (Method::GET, routes::proxy()),
        (Method::GET, routes::regions()),
        (Method::GET, routes::releases("a")),
        (Method::POST, routes::releases("a")),
        (Method::GET, routes::release("a", 1)),
        (Method::GET, routes::release_events("a", 1)),
        (Method::PUT, routes::image("a", "ab")),
        (Method::GET, routes::image("a", "ab")),
        (Method::GET, routes::process_groups("a")),
        (Method::PUT, routes::group_count("a", "web")),
        (Method::POST, routes::scale("a")),
        (Method::GET, routes::logs("a")),
        (Method::HEAD, routes::blob("a", "sha256:ab")),
        (Method::GET, routes::blob_upload("a", "sha256:ab")),
        (Method::PATCH, routes::blob("a", "sha256:ab")),
        (Method::PUT, routes::blob("a", "sha256:ab")),
        (Method::PUT, routes::manifest("a", "sha256:ab")),
        (Method::GET, routes::oci_images("a")),
        (Method::GET, routes::oci_image("a", "sha256:ab")),
        (Method::GET, routes::image_stats()),
        (Method::POST, routes::image_gc()),
        (Method::POST, routes::tokens()),
        (Method::GET, routes::tokens()),
        (Method::DELETE, routes::token("abc")),
        (Method::GET, routes::app_events("a")),
    ];
    let unserved: Vec<String> = calls
        .iter()
        .filter(|(m, p)| !served.iter().any(|(sm, t)| sm == m && fills(t, p)))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        unserved.is_empty(),
        "aloft_api::routes paths the agent does not serve: {unserved:?}"
    );
    // The matcher itself tells paths apart.
    assert!(!fills("/v1/apps/{app}/machines", "/v1/apps/a/releases"));
    assert!(!fills("/v1/apps/{app}", "/v1/apps/"));
}
