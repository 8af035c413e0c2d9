//! Scoped API tokens against an in-process agent: what each kind reaches (403 elsewhere, naming
//! the token), 401 for unknown, expired and revoked tokens, bad requests to `/v1/tokens`, the
//! app's events naming the token that changed it, and no secret in the database's files.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{status_and_body, Harness};

/// The in-process agent of these tests, without the proxy.
async fn start() -> Harness {
    Harness::start_with(|config| config.proxy = None).await
}

impl Harness {
    /// `method path` with `token`; the status and the JSON (or text) body.
    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        status_and_body(self.request(token, method, path, body, &[]).await).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call_as(&self.token, method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    /// A new token's text and id.
    async fn create_token(&self, body: Value) -> (String, String) {
        let v = self.admin(Method::POST, "/v1/tokens", Some(body)).await;
        (
            v["token"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap().to_string(),
        )
    }

    fn machine_body(&self) -> Value {
        json!({"region": "gru", "skip_launch": true, "config": {
            "image": self.image(),
            "init": {"exec": ["sleep", "30"]}}})
    }

    async fn stop(mut self) {
        for app in ["a", "b"] {
            self.call_as(
                &self.token,
                Method::DELETE,
                &format!("/v1/apps/{app}?force=true"),
                None,
            )
            .await;
        }
        self.agent.take().unwrap().shutdown().await;
    }
}

fn assert_status(got: (StatusCode, Value), want: StatusCode, what: &str) -> Value {
    assert_eq!(got.0, want, "{what}: {}", got.1);
    got.1
}

fn message(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn each_kind_reaches_its_routes_and_changes_are_recorded_with_its_name() {
    let h = start().await;
    for app in ["a", "b"] {
        h.admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"app_name": app, "org_slug": "personal"})),
        )
        .await;
    }
    let (deploy, _) = h
        .create_token(json!({"kind": "deploy", "app": "a", "name": "ci-a"}))
        .await;
    let (reader, _) = h
        .create_token(json!({"kind": "readonly", "name": "dash"}))
        .await;
    let (reader_a, _) = h
        .create_token(json!({"kind": "readonly", "app": "a"}))
        .await;
    let machine = Some(h.machine_body());

    // The deploy token: its app, read and write; nothing else.
    let created = assert_status(
        h.call_as(
            &deploy,
            Method::POST,
            "/v1/apps/a/machines",
            machine.clone(),
        )
        .await,
        StatusCode::OK,
        "deploy token creates a machine of its app",
    );
    let id = created["id"].as_str().unwrap();
    assert_status(
        h.call_as(
            &deploy,
            Method::GET,
            &format!("/v1/apps/a/machines/{id}"),
            None,
        )
        .await,
        StatusCode::OK,
        "deploy token reads its app",
    );
    assert_status(
        h.call_as(&deploy, Method::GET, "/v1/regions", None).await,
        StatusCode::OK,
        "deploy token reads the regions",
    );
    let denied = assert_status(
        h.call_as(
            &deploy,
            Method::POST,
            "/v1/apps/b/machines",
            machine.clone(),
        )
        .await,
        StatusCode::FORBIDDEN,
        "deploy token of a on app b",
    );
    let m = message(&denied);
    assert!(
        m.contains("ci-a") && m.contains("app a") && m.contains("app b"),
        "{m}"
    );
    for (method, path, body) in [
        (Method::GET, "/v1/apps/b/machines", None),
        (Method::GET, "/v1/apps", None),
        (Method::DELETE, "/v1/apps/a", None),
        (Method::POST, "/v1/tokens", Some(json!({"kind": "org"}))),
        (Method::GET, "/v1/tokens", None),
        (Method::POST, "/v1/images/gc", None),
    ] {
        let what = format!("deploy token: {method} {path}");
        let body = assert_status(
            h.call_as(&deploy, method, path, body).await,
            StatusCode::FORBIDDEN,
            &what,
        );
        assert_eq!(body["status"], "forbidden", "{what}: {body}");
    }

    // Read-only tokens: reads only; one bound to an app reads only that app.
    assert_status(
        h.call_as(&reader, Method::GET, "/v1/apps/b/machines", None)
            .await,
        StatusCode::OK,
        "readonly reads any app",
    );
    assert_status(
        h.call_as(&reader, Method::GET, "/v1/apps", None).await,
        StatusCode::OK,
        "readonly lists apps",
    );
    let denied = assert_status(
        h.call_as(
            &reader,
            Method::POST,
            "/v1/apps/a/machines",
            machine.clone(),
        )
        .await,
        StatusCode::FORBIDDEN,
        "readonly creates a machine",
    );
    assert!(message(&denied).contains("dash"), "{denied}");
    assert_status(
        h.call_as(&reader, Method::GET, "/v1/tokens", None).await,
        StatusCode::FORBIDDEN,
        "readonly lists tokens",
    );
    assert_status(
        h.call_as(&reader_a, Method::GET, "/v1/apps/a", None).await,
        StatusCode::OK,
        "readonly of a reads a",
    );
    assert_status(
        h.call_as(&reader_a, Method::GET, "/v1/apps/b", None).await,
        StatusCode::FORBIDDEN,
        "readonly of a reads b",
    );

    // Nothing was changed by the refused requests.
    let listed = h.admin(Method::GET, "/v1/apps/b/machines", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");

    // The app's events: the deploy token's change and the read-only token's attempt, by name;
    // reads are not recorded.
    let events = h.admin(Method::GET, "/v1/apps/a/events", None).await;
    let lines: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["actor"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ci-a (") && l.ends_with("POST /v1/apps/a/machines → 200")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dash (") && l.ends_with("→ 403")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("GET ")), "{lines:?}");
    assert_eq!(
        lines.len(),
        5,
        "two tokens of a created, two requests by the deploy token (one refused), one \
         refused: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("data-dir (data-dir) created deploy token ci-a (")),
        "{lines:?}"
    );
    // Events of b hold the deploy token's refused attempt.
    let events_b = h.admin(Method::GET, "/v1/apps/b/events", None).await;
    assert_eq!(events_b.as_array().unwrap().len(), 1, "{events_b}");

    // Uses show in the list.
    let tokens = h.admin(Method::GET, "/v1/tokens", None).await;
    let ci = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-a")
        .unwrap();
    assert!(ci["last_used_at"].is_string(), "{ci}");
    assert!(
        ci.get("token").is_none() && !ci.to_string().contains(&deploy[20..]),
        "{ci}"
    );
    h.stop().await;
}

#[tokio::test]
async fn unknown_expired_and_revoked_tokens_get_401_saying_which() {
    let h = start().await;
    let (short, _) = h
        .create_token(json!({"kind": "org", "name": "short", "expiry": "1s"}))
        .await;
    let (revoked, revoked_id) = h.create_token(json!({"kind": "org", "name": "gone"})).await;
    assert_status(
        h.call_as(&revoked, Method::GET, "/v1/apps", None).await,
        StatusCode::OK,
        "before revocation",
    );
    let v = h
        .admin(Method::DELETE, &format!("/v1/tokens/{revoked_id}"), None)
        .await;
    assert!(v["revoked_at"].is_string(), "{v}");
    let body = assert_status(
        h.call_as(&revoked, Method::GET, "/v1/apps", None).await,
        StatusCode::UNAUTHORIZED,
        "revoked",
    );
    assert!(
        message(&body).contains("gone") && message(&body).contains("revoked"),
        "{body}"
    );

    // A forged secret under the revoked token's id is only "not recognised".
    let forged = format!("{}{}", &revoked[..revoked.len() - 4], "0000");
    let body = assert_status(
        h.call_as(&forged, Method::GET, "/v1/apps", None).await,
        StatusCode::UNAUTHORIZED,
        "forged",
    );
    assert!(message(&body).contains("not recognised"), "{body}");
    assert!(!message(&body).contains("gone"), "{body}");

    let body = aloft_testkit::wait_for_async(
        Duration::from_secs(10),
        "the 1s token to expire",
        || async {
            let (status, body) = h.call_as(&short, Method::GET, "/v1/apps", None).await;
            (status == StatusCode::UNAUTHORIZED).then_some(body)
        },
    )
    .await;
    let m = message(&body);
    assert!(m.contains("short") && m.contains("expired"), "{body}");
    h.stop().await;
}

#[tokio::test]
async fn bad_token_requests_are_4xx_and_create_nothing() {
    let h = start().await;
    h.admin(
        Method::POST,
        "/v1/apps",
        Some(json!({"app_name": "a", "org_slug": "personal"})),
    )
    .await;
    for (body, want, needle) in [
        (
            json!({"kind": "admin"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "admin",
        ),
        (json!({"kind": "deploy"}), StatusCode::BAD_REQUEST, "-a APP"),
        (
            json!({"kind": "deploy", "app": "ghost"}),
            StatusCode::NOT_FOUND,
            "ghost",
        ),
        (
            json!({"kind": "org", "app": "a"}),
            StatusCode::BAD_REQUEST,
            "no app",
        ),
        (
            json!({"kind": "org", "expiry": "soon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "soon",
        ),
        (
            json!({"kind": "org", "expiry": "0s"}),
            StatusCode::BAD_REQUEST,
            "expiry",
        ),
        (
            json!({"kind": "org", "name": ""}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
    ] {
        let what = body.to_string();
        let got = assert_status(
            h.call_as(&h.token, Method::POST, "/v1/tokens", Some(body))
                .await,
            want,
            &what,
        );
        assert!(message(&got).contains(needle), "{what}: {got}");
    }
    let got = assert_status(
        h.call_as(&h.token, Method::DELETE, "/v1/tokens/nope", None)
            .await,
        StatusCode::NOT_FOUND,
        "revoking an unknown id",
    );
    assert!(message(&got).contains("nope"), "{got}");
    let got = assert_status(
        h.call_as(&h.token, Method::DELETE, "/v1/tokens/data-dir", None)
            .await,
        StatusCode::BAD_REQUEST,
        "revoking the data-dir token",
    );
    assert!(message(&got).contains("<data-dir>/token"), "{got}");
    let tokens = h.admin(Method::GET, "/v1/tokens", None).await;
    assert_eq!(
        tokens.as_array().unwrap().len(),
        1,
        "only data-dir: {tokens}"
    );
    h.stop().await;
}

#[tokio::test]
async fn no_secret_is_readable_from_the_store_files() {
    let h = start().await;
    let (token, _) = h
        .create_token(json!({"kind": "org", "name": "grep-me"}))
        .await;
    let secret = token.rsplit('_').next().unwrap().to_string();
    let data = h.agent.as_ref().unwrap().data_dir.clone();
    let mut read = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("state.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in [secret.as_str(), h.token.as_str()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{name} holds a token secret"
            );
        }
        if bytes.windows(7).any(|w| w == b"grep-me") {
            read.push(name);
        }
    }
    assert!(
        !read.is_empty(),
        "the token's row was in the files searched"
    );
    h.stop().await;
}
