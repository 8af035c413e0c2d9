//! The Machines API against an in-process agent (real store, real runtime, real sockets on
//! 127.0.0.1): errors are 4xx JSON and change nothing; leases; metadata; versions; regions.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{status_and_body, Harness};

/// The in-process agent of these tests: service ports on loopback, the given regions.
async fn start(regions: &[&str]) -> Harness {
    Harness::start_with(|config| {
        config.regions = regions.iter().map(|r| r.to_string()).collect();
        // Service ports on loopback only, whatever a test's machines ask for.
        config.proxy.as_mut().unwrap().bind_ip = "127.0.0.1".parse().unwrap();
        // The host's "public" address, so shared IPv4 allocation needs no default route.
        config.public_addresses.ipv4 = Some("203.0.113.7".parse().unwrap());
    })
    .await
}

impl Harness {
    /// A request with the agent's token; `body` is sent verbatim when it is a string.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let resp = self.request(&self.token, method, path, body, headers).await;
        assert!(
            resp.headers().contains_key("fly-request-id"),
            "{path}: no fly-request-id"
        );
        status_and_body(resp).await
    }

    /// [`Self::call`] without extra headers.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, body, &[]).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.send(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn create_app(&self, name: &str) {
        self.ok(
            Method::POST,
            "/v1/apps",
            Some(json!({"app_name": name, "org_slug": "personal"})),
        )
        .await;
    }

    /// `GET path` with the token, the response as it comes (status, streamed body).
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// Creates `app` with one parked machine; returns the machine's id.
    async fn app_with_parked_machine(&self, app: &str) -> String {
        self.create_app(app).await;
        let m = self.parked_machine(app).await;
        m["id"].as_str().unwrap().to_string()
    }

    /// A machine created with skip_launch (no process).
    async fn parked_machine(&self, app: &str) -> Value {
        let body = json!({"region": "gru", "skip_launch": true,
            "config": {"image": self.image(), "init": {"exec": ["sleep", "30"]}, "metadata": {"fly_process_group": "app"}}});
        self.ok(
            Method::POST,
            &format!("/v1/apps/{app}/machines"),
            Some(body),
        )
        .await
    }

    async fn machine(&self, app: &str, id: &str) -> Value {
        let mut m = self
            .ok(Method::GET, &format!("/v1/apps/{app}/machines/{id}"), None)
            .await;
        m.as_object_mut().unwrap().remove("events");
        m
    }

    async fn stop_all(mut self) {
        let (_, apps) = self.send(Method::GET, "/v1/apps", None).await;
        for app in apps["apps"].as_array().cloned().unwrap_or_default() {
            let name = app["name"].as_str().unwrap();
            self.send(Method::DELETE, &format!("/v1/apps/{name}?force=true"), None)
                .await;
        }
        self.agent.take().unwrap().shutdown().await;
    }
}

fn assert_json_error(status: StatusCode, body: &Value, what: &str) {
    assert!(
        status.is_client_error(),
        "{what}: expected 4xx, got {status} {body}"
    );
    let has_error = body
        .get("error")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let has_envelope = body.get("status") == Some(&json!("error")) && body.get("message").is_some();
    assert!(
        has_error || has_envelope,
        "{what}: not a JSON error: {body}"
    );
}

/// Every route with real ids filled in.
fn all_routes(app: &str, id: &str) -> Vec<(Method, String)> {
    aloft_agent::api::routes()
        .list
        .iter()
        .map(|(m, p)| {
            (
                m.clone(),
                p.replace("{app}", app)
                    .replace("{id}", id)
                    .replace("{key}", "fly_process_group"),
            )
        })
        .collect()
}

#[tokio::test]
async fn missing_or_wrong_auth_is_401_and_changes_nothing() {
    let h = start(&[]).await;
    let id = &h.app_with_parked_machine("authz").await;
    let before = h.machine("authz", id).await;
    for (method, path) in all_routes("authz", id) {
        for auth in [None, Some("Bearer nope"), Some("Basic abc"), Some("Bearer")] {
            let mut req = h
                .http
                .request(method.clone(), format!("{}{path}", h.url))
                .body(r#"{"config":{"image":"/"}}"#);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            if method != Method::HEAD {
                // A HEAD answer has no body.
                assert_json_error(status, &body, &format!("{method} {path}"));
            }
        }
    }
    assert_eq!(h.machine("authz", id).await, before);
    assert!(h.ok(Method::GET, "/v1/apps/authz", None).await["name"] == "authz");
    // FlyV1 and comma-separated token lists are accepted.
    let resp = h
        .http
        .get(format!("{}/v1/apps", h.url))
        .header("authorization", format!("FlyV1 other,{}", h.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    h.stop_all().await;
}

#[tokio::test]
async fn malformed_bodies_and_unknown_ids_are_4xx_json_and_change_nothing() {
    let h = start(&[]).await;
    let id = h.app_with_parked_machine("errs").await;
    let before = h.machine("errs", &id).await;
    // Bodies every body-taking endpoint refuses, then wrong types per endpoint.
    let universal = [
        json!("{"),
        json!("[]"),
        json!("not json"),
        json!("\"text\""),
        json!(""),
    ];
    let config_bad = vec![
        json!({}),
        json!({"config": 5}),
        json!({"config": {"image": 7}}),
        json!({"config": {"image": "/", "guest": {"cpus": "many"}}}),
        json!({"config": {"image": "/", "restart": {"policy": 3}}}),
        json!({"config": {"image": "/", "env": ["A=1"]}}),
    ];
    let specific: Vec<(String, Vec<Value>)> = vec![
        (
            "/v1/apps".into(),
            vec![json!({"app_name": 12}), json!({"name": ["x"]})],
        ),
        ("/v1/apps/errs/machines".into(), config_bad.clone()),
        (format!("/v1/apps/errs/machines/{id}"), config_bad),
        (
            format!("/v1/apps/errs/machines/{id}/stop"),
            vec![
                json!({"signal": 7.5}),
                json!({"timeout": true}),
                json!({"signal": "SIGNOPE"}),
            ],
        ),
        (
            format!("/v1/apps/errs/machines/{id}/signal"),
            vec![
                json!({}),
                json!({"signal": {"x": 1}}),
                json!({"signal": 99}),
            ],
        ),
        (
            format!("/v1/apps/errs/machines/{id}/metadata/k"),
            vec![json!({}), json!({"value": 3})],
        ),
        (
            format!("/v1/apps/errs/machines/{id}/lease"),
            vec![
                json!({"ttl": "soon"}),
                json!({"ttl": -1}),
                json!({"ttl": 0}),
            ],
        ),
    ];
    for (path, bodies) in &specific {
        for body in universal
            .iter()
            .filter(|b| **b != json!("") || !path.ends_with("/stop") && !path.ends_with("/lease"))
            .chain(bodies)
        {
            let (status, v) = h.send(Method::POST, path, Some(body.clone())).await;
            assert!(
                status != StatusCode::INTERNAL_SERVER_ERROR,
                "{path} {body}: 500 {v}"
            );
            assert_json_error(status, &v, &format!("POST {path} {body}"));
        }
    }
    let now = h.machine("errs", &id).await;
    assert_eq!(now, before, "refused requests changed the machine");
    assert_eq!(h.ok(Method::GET, "/v1/apps", None).await["total_apps"], 1);

    // Unknown app, unknown machine: 404 JSON on every route that names them.
    for (app, mid) in [("no-such-app", id.as_str()), ("errs", "00000000000000")] {
        for (method, path) in all_routes(app, mid) {
            if !path.contains(app) || (app == "errs" && !path.contains(mid)) {
                continue;
            }
            let body = json!({"config": {"image": h.image(), "init": {"exec": ["true"]}}, "signal": "SIGTERM", "value": "v", "app_name": "x"});
            let (status, v) = h.send(method.clone(), &path, Some(body)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
            if method != Method::HEAD {
                // A HEAD answer has no body.
                assert_json_error(status, &v, &path);
            }
        }
    }

    // Unknown routes and methods.
    let (s, v) = h.send(Method::GET, "/v1/nothing/here", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_json_error(s, &v, "unknown route");
    let (s, v) = h.send(Method::PUT, "/v1/apps", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_json_error(s, &v, "wrong method");

    // Bad query parameters.
    for q in [
        format!("/v1/apps/errs/machines/{id}/wait?timeout=abc"),
        format!("/v1/apps/errs/machines/{id}/wait?timeout=61"),
        format!("/v1/apps/errs/machines/{id}/wait?state=bogus"),
        format!("/v1/apps/errs/machines/{id}/events?limit=0"),
        format!("/v1/apps/errs/machines/{id}/events?limit=x"),
        "/v1/apps/errs/machines?state=bogus".to_string(),
        "/v1/apps/errs/machines?summary=maybe".to_string(),
        "/v1/apps/errs/logs?limit=-1".to_string(),
    ] {
        let (s, v) = h.send(Method::GET, &q, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert_json_error(s, &v, &q);
    }
    let (s, v) = h
        .send(
            Method::POST,
            &format!("/v1/apps/errs/machines/{id}/restart?timeout=forever"),
            None,
        )
        .await;
    assert!(s.is_client_error(), "{v}");
    let (s, v) = h
        .send(
            Method::POST,
            &format!("/v1/apps/errs/machines/{id}/signal"),
            Some(json!({"signal": "SIGNOPE"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Invalid configs.
    for (config, needle) in [
        (json!({"image": "/definitely/missing"}), "does not exist"),
        (
            json!({"image": "nginx:latest", "init": {"exec": ["x"]}}),
            "directory images",
        ),
        (json!({"image": h.image()}), "nothing to run"),
        (
            json!({"image": h.image(), "init": {"exec": ["x"]}, "restart": {"policy": "sometimes"}}),
            "restart.policy",
        ),
        (
            json!({"image": h.image(), "init": {"exec": ["x"]}, "guest": {"cpus": 1, "memory_mb": 100, "cpu_kind": "shared"}}),
            "guest",
        ),
        (
            json!({"image": h.image(), "init": {"exec": ["x"]}, "services": [{"internal_port": 0}]}),
            "internal_port",
        ),
    ] {
        let (s, v) = h
            .send(
                Method::POST,
                "/v1/apps/errs/machines",
                Some(json!({"config": config})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{config}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let list = h.ok(Method::GET, "/v1/apps/errs/machines", None).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "failed creates left nothing behind"
    );
    h.stop_all().await;
}

#[tokio::test]
async fn apps_names_regions_and_filters() {
    let h = start(&["gru", "bog"]).await;
    let (s, v) = h
        .send(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "shop", "org_slug": "personal"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"].as_str().unwrap().len(), 16);
    let (s, v) = h
        .send(Method::POST, "/v1/apps", Some(json!({"app_name": "shop"})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["status"], "name_taken");
    let (s, _) = h
        .send(
            Method::POST,
            "/v1/apps",
            Some(json!({"app_name": "Bad Name"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    let regions = h.ok(Method::GET, "/v1/regions", None).await;
    let codes: Vec<&str> = regions
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["gru", "bog"]);
    let (s, v) = h.send(Method::POST, "/v1/apps/shop/machines", Some(json!({"region": "iad", "config": {"image": h.image(), "init": {"exec": ["true"]}}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"].as_str().unwrap().contains("gru, bog"), "{v}");

    let mk = |region: &str, group: &str, name: Option<&str>| {
        let mut b = json!({"region": region, "skip_launch": true,
            "config": {"image": h.image(), "init": {"exec": ["true"]}, "metadata": {"fly_process_group": group}}});
        if let Some(n) = name {
            b["name"] = json!(n);
        }
        b
    };
    let a = h
        .ok(
            Method::POST,
            "/v1/apps/shop/machines",
            Some(mk("gru", "web", Some("web-1"))),
        )
        .await;
    assert_eq!(a["state"], "created");
    assert_eq!(a["events"][0]["type"], "launch");
    assert_eq!(a["id"].as_str().unwrap().len(), 14);
    h.ok(
        Method::POST,
        "/v1/apps/shop/machines",
        Some(mk("bog", "worker", None)),
    )
    .await;
    let (s, _) = h
        .send(
            Method::POST,
            "/v1/apps/shop/machines",
            Some(mk("bog", "worker", Some("web-1"))),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "duplicate name");
    let count = |q: &str| {
        let q = q.to_string();
        let h = &h;
        async move {
            h.ok(Method::GET, &format!("/v1/apps/shop/machines{q}"), None)
                .await
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("").await, 2);
    assert_eq!(count("?region=bog").await, 1);
    assert_eq!(count("?metadata.fly_process_group=web").await, 1);
    assert_eq!(count("?state=created").await, 2);
    assert_eq!(count("?state=started,stopped").await, 0);
    let summary = h
        .ok(Method::GET, "/v1/apps/shop/machines?summary=true", None)
        .await;
    assert!(summary[0].get("config").is_none());
    let app = h.ok(Method::GET, "/v1/apps/shop", None).await;
    assert_eq!(app["machine_count"], 2);
    h.stop_all().await;
}

#[tokio::test]
async fn metadata_versions_and_optimistic_updates() {
    let h = start(&[]).await;
    h.create_app("meta").await;
    let m = h.parked_machine("meta").await;
    let id = m["id"].as_str().unwrap();
    let v1 = m["instance_id"].as_str().unwrap().to_string();
    let base = format!("/v1/apps/meta/machines/{id}");

    let (s, _) = h
        .send(
            Method::POST,
            &format!("{base}/metadata/role"),
            Some(json!({"value": "primary"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        h.ok(Method::GET, &format!("{base}/metadata"), None).await["role"],
        "primary"
    );
    assert_eq!(
        h.ok(Method::GET, &format!("{base}/metadata/role"), None)
            .await["value"],
        "primary"
    );
    let (s, _) = h
        .send(Method::DELETE, &format!("{base}/metadata/role"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .send(Method::GET, &format!("{base}/metadata/role"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        h.machine("meta", id).await["instance_id"],
        v1.as_str(),
        "metadata writes keep the version"
    );

    let config = json!({"image": h.image(), "init": {"exec": ["sleep", "5"]}, "env": {"A": "1"}});
    let (s, v) = h
        .send(
            Method::POST,
            &base,
            Some(json!({"config": config, "current_version": "01STALE", "skip_launch": true})),
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{v}");
    assert_eq!(h.machine("meta", id).await["instance_id"], v1.as_str());
    let updated = h
        .ok(
            Method::POST,
            &base,
            Some(json!({"config": config, "current_version": v1, "skip_launch": true})),
        )
        .await;
    let v2 = updated["instance_id"].as_str().unwrap();
    assert_ne!(v2, v1);
    assert_eq!(
        updated["state"], "created",
        "skip_launch keeps a parked machine down"
    );
    let versions = h.ok(Method::GET, &format!("{base}/versions"), None).await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[0]["version"], v2);
    assert_eq!(versions[0]["user_config"]["env"]["A"], "1");
    let events = h
        .ok(Method::GET, &format!("{base}/events?limit=1"), None)
        .await;
    assert_eq!(events[0]["type"], "update");
    h.stop_all().await;
}

#[tokio::test]
async fn leases_block_other_clients() {
    let h = start(&[]).await;
    let id = &h.app_with_parked_machine("lease").await;
    let base = format!("/v1/apps/lease/machines/{id}");

    let (s, v) = h.send(Method::GET, &format!("{base}/lease"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["status"], "error");
    let (s, v) = h
        .send(Method::POST, &format!("{base}/lease?ttl=60"), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "success");
    let nonce = v["data"]["nonce"].as_str().unwrap().to_string();
    // A second client cannot take it…
    let (s, v) = h
        .send(
            Method::POST,
            &format!("{base}/lease"),
            Some(json!({"ttl": 30})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["status"], "error");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("lease currently held"),
        "{v}"
    );
    // …nor change the machine without the nonce.
    let before = h.machine("lease", id).await;
    for (method, path, body) in [
        (Method::POST, format!("{base}/cordon"), None),
        (Method::POST, format!("{base}/start"), None),
        (Method::POST, format!("{base}/stop"), None),
        (
            Method::POST,
            format!("{base}/metadata/k"),
            Some(json!({"value": "v"})),
        ),
        (
            Method::POST,
            base.clone(),
            Some(
                json!({"config": {"image": h.image(), "init": {"exec": ["true"]}}, "skip_launch": true}),
            ),
        ),
        (Method::DELETE, base.clone(), None),
    ] {
        let (s, v) = h.send(method.clone(), &path, body.clone()).await;
        assert_eq!(s, StatusCode::CONFLICT, "{method} {path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("fly-machine-lease-nonce"),
            "{v}"
        );
        let (s, _) = h
            .call(method, &path, body, &[("fly-machine-lease-nonce", "wrong")])
            .await;
        assert_eq!(s, StatusCode::CONFLICT);
    }
    assert_eq!(
        h.machine("lease", id).await,
        before,
        "refused calls changed nothing"
    );
    // The holder can.
    let (s, v) = h
        .call(
            Method::POST,
            &format!("{base}/cordon"),
            None,
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h.machine("lease", id).await["cordoned"], true);
    // Refresh with the nonce keeps it; release needs it.
    let (s, v) = h
        .call(
            Method::POST,
            &format!("{base}/lease"),
            Some(json!({"ttl": 120})),
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["data"]["nonce"], nonce.as_str());
    let (s, _) = h.send(Method::DELETE, &format!("{base}/lease"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("{base}/lease"),
            None,
            &[("fly-machine-lease-nonce", "nope")],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = h
        .call(
            Method::DELETE,
            &format!("{base}/lease"),
            None,
            &[("fly-machine-lease-nonce", &nonce)],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["ok"], true);
    h.ok(Method::POST, &format!("{base}/uncordon"), None).await;

    // An expired lease no longer counts.
    let (s, _) = h
        .send(Method::POST, &format!("{base}/lease?ttl=1"), None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _) = h.send(Method::POST, &format!("{base}/cordon"), None).await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(s, StatusCode::CONFLICT);
        assert!(std::time::Instant::now() < deadline, "lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // lease_ttl on create returns the nonce.
    let created = h.ok(Method::POST, "/v1/apps/lease/machines",
        Some(json!({"skip_launch": true, "lease_ttl": 30, "config": {"image": h.image(), "init": {"exec": ["true"]}}}))).await;
    assert_eq!(created["nonce"].as_str().unwrap().len(), 12);
    h.stop_all().await;
}

#[tokio::test]
async fn wait_times_out_with_408_and_returns_when_the_state_comes() {
    let h = start(&[]).await;
    let id = h.app_with_parked_machine("waits").await;
    let (s, v) = h
        .send(
            Method::GET,
            &format!("/v1/apps/waits/machines/{id}/wait?state=started&timeout=1s"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT);
    assert_json_error(s, &v, "wait timeout");
    // Settled includes created.
    let v = h
        .ok(
            Method::GET,
            &format!("/v1/apps/waits/machines/{id}/wait?state=settled&timeout=1"),
            None,
        )
        .await;
    assert_eq!(v["state"], "created");
    // A waiter is woken by the change (destroy), not by polling.
    let waiter = {
        let (http, url, token, id) = (h.http.clone(), h.url.clone(), h.token.clone(), id.clone());
        tokio::spawn(async move {
            http.get(format!(
                "{url}/v1/apps/waits/machines/{id}/wait?state=started&state=destroyed&timeout=30"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
        })
    };
    h.ok(
        Method::DELETE,
        &format!("/v1/apps/waits/machines/{id}"),
        None,
    )
    .await;
    let v = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["state"], "destroyed");
    let list = h
        .ok(
            Method::GET,
            "/v1/apps/waits/machines?include_deleted=true",
            None,
        )
        .await;
    assert_eq!(list[0]["state"], "destroyed");
    assert_eq!(
        h.ok(Method::GET, "/v1/apps/waits/machines", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    h.stop_all().await;
}

#[tokio::test]
async fn update_relaunches_a_running_machine_and_logs_follow() {
    let h = start(&[]).await;
    h.create_app("upd").await;
    let script = "echo \"v=$V\"; while :; do sleep 0.2; echo tick; done";
    let config = |v: &str| {
        json!({"image": h.image(), "env": {"V": v}, "init": {"exec": ["/bin/sh", "-c", script]},
        "metadata": {"fly_process_group": "worker"}})
    };
    let m = h
        .ok(
            Method::POST,
            "/v1/apps/upd/machines",
            Some(json!({"region": "gru", "config": config("1")})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    let v1 = m["instance_id"].as_str().unwrap().to_string();
    h.ok(
        Method::GET,
        &format!("/v1/apps/upd/machines/{id}/wait?state=started&timeout=30"),
        None,
    )
    .await;

    // Follow the logs of the worker group: the backlog, then new lines as they come.
    let resp = h
        .get("/v1/apps/upd/logs?group=worker&region=gru&follow=true&limit=5")
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = resp;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.matches("\"tick\"").count() < 3 {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("log lines keep coming")
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    for line in seen.lines() {
        let l: Value = serde_json::from_str(line).expect("NDJSON");
        assert_eq!(l["machine_id"], id.as_str());
        assert_eq!(l["group"], "worker");
    }
    drop(resp);

    // A full-config update of a started machine relaunches it on the new version.
    let updated = h
        .ok(
            Method::POST,
            &format!("/v1/apps/upd/machines/{id}"),
            Some(json!({"config": config("2"), "current_version": v1})),
        )
        .await;
    let v2 = updated["instance_id"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    let w = h
        .ok(
            Method::GET,
            &format!("/v1/apps/upd/machines/{id}/wait?state=started&version={v2}&timeout=30"),
            None,
        )
        .await;
    assert_eq!(w["version"], v2.as_str());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let logs = h
            .get(&format!("/v1/apps/upd/logs?machine={id}&limit=1000"))
            .await
            .text()
            .await
            .unwrap();
        if logs.contains("v=2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new version never ran: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = h
        .ok(
            Method::GET,
            &format!("/v1/apps/upd/machines/{id}/events"),
            None,
        )
        .await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(&kinds[..3], ["start", "exit", "update"], "{kinds:?}");
    h.stop_all().await;
}

#[tokio::test]
async fn auto_destroy_machines_are_destroyed_when_they_exit() {
    let h = start(&[]).await;
    h.create_app("oneshot").await;
    let m = h
        .ok(Method::POST, "/v1/apps/oneshot/machines",
            Some(json!({"config": {"image": h.image(), "auto_destroy": true, "restart": {"policy": "no"}, "init": {"exec": ["true"]}}})))
        .await;
    let id = m["id"].as_str().unwrap();
    let w = h
        .ok(
            Method::GET,
            &format!("/v1/apps/oneshot/machines/{id}/wait?state=destroyed&timeout=30"),
            None,
        )
        .await;
    assert_eq!(w["state"], "destroyed");
    let events = h
        .ok(
            Method::GET,
            &format!("/v1/apps/oneshot/machines/{id}/events"),
            None,
        )
        .await;
    assert_eq!(events[0]["type"], "destroy");
    assert_eq!(events[1]["type"], "exit");
    h.stop_all().await;
}

/// The list comes from cached JSON entries with check results spliced in: each entry must be the
/// machine exactly as `GET …/machines/{id}` shows it (with the newest 5 events instead of 10),
/// after changes of state, metadata and checks.
#[tokio::test(flavor = "multi_thread")]
async fn each_listed_machine_is_the_machine_as_get_shows_it() {
    let h = start(&["gru"]).await;
    h.create_app("same").await;
    let parked = h.parked_machine("same").await;
    // A started machine with a service check: the proxy has not run it yet, so the API shows it
    // as a pending `warning` result.
    let checked = h
        .ok(
            Method::POST,
            "/v1/apps/same/machines",
            Some(json!({"region": "gru", "config": {"image": h.image(),
                "init": {"exec": ["sleep", "30"]},
                "metadata": {"fly_process_group": "web"},
                "services": [{"protocol": "tcp", "internal_port": 8080,
                    "ports": [{"port": 0}],
                    "checks": [{"type": "tcp", "interval": "1h", "grace_period": "1h"}]}]}})),
        )
        .await;
    let id = checked["id"].as_str().unwrap().to_string();
    h.ok(
        Method::GET,
        &format!("/v1/apps/same/machines/{id}/wait?state=started&timeout=10"),
        None,
    )
    .await;
    // Check results are live state the proxy may report between the list and the GETs: a
    // difference must go away on a second look (a stale cached entry would never).
    let compare = || async {
        let mut last = String::new();
        for _ in 0..20 {
            let list = h.ok(Method::GET, "/v1/apps/same/machines", None).await;
            let list = list.as_array().unwrap().clone();
            assert_eq!(list.len(), 2);
            let mut differs = None;
            for entry in &list {
                let id = entry["id"].as_str().unwrap();
                let mut got = h
                    .ok(Method::GET, &format!("/v1/apps/same/machines/{id}"), None)
                    .await;
                got["events"].as_array_mut().unwrap().truncate(5);
                if entry != &got {
                    differs = Some(format!("list entry {entry}\nGET {got}"));
                }
            }
            match differs {
                None => return list,
                Some(d) => last = d,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("a list entry differs from its GET: {last}");
    };
    let list = compare().await;
    let with_checks = list.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(
        with_checks["checks"][0]["status"], "warning",
        "{with_checks}"
    );
    assert!(list
        .iter()
        .any(|m| m["id"] == parked["id"] && m.get("checks").is_none()));

    // Changes after the entries were cached: metadata, then a stop (state and events).
    h.ok(
        Method::POST,
        &format!("/v1/apps/same/machines/{id}/metadata/role"),
        Some(json!({"value": "primary"})),
    )
    .await;
    h.ok(
        Method::POST,
        &format!("/v1/apps/same/machines/{id}/stop"),
        None,
    )
    .await;
    h.ok(
        Method::GET,
        &format!("/v1/apps/same/machines/{id}/wait?state=stopped&timeout=10"),
        None,
    )
    .await;
    let list = compare().await;
    let stopped = list.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["config"]["metadata"]["role"], "primary");
    h.stop_all().await;
}

/// Hardening fault 2: an image uploaded to app A cannot be run by app B (by naming its digest in
/// a machine config or a release spec), and an upload whose symlinks leave the image is refused.
#[tokio::test(flavor = "multi_thread")]
async fn uploaded_images_belong_to_their_app_and_stay_inside_themselves() {
    let h = start(&[]).await;
    h.create_app("owner").await;
    h.create_app("thief").await;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("run.sh"), "exec sleep 30\n").unwrap();
    let packed = aloft_deploy::image::pack_dir(src.path()).unwrap();
    let hex = packed.digest.strip_prefix("sha256:").unwrap().to_string();
    let put = |app: &str, hex: &str, body: Vec<u8>| {
        h.http
            .put(format!("{}/v1/apps/{app}/images/{hex}", h.url))
            .bearer_auth(&h.token)
            .body(body)
            .send()
    };
    let resp = put("owner", &hex, packed.tar.clone()).await.unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());

    let config = |image: String| json!({"config": {"image": image, "init": {"exec": ["/bin/sh", "run.sh"]}}});
    for image in [
        format!("aloft/thief@sha256:{hex}"),
        format!("aloft/owner@sha256:{hex}"),
    ] {
        let (status, body) = h
            .send(
                Method::POST,
                "/v1/apps/thief/machines",
                Some(config(image.clone())),
            )
            .await;
        assert_eq!(status, 422, "{image}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("not been uploaded to app \"thief\""),
            "{body}"
        );
    }
    let spec = json!({"spec": {
        "image": format!("aloft/owner@sha256:{hex}"),
        "default_group": "app",
        "groups": {"app": {"image": "", "init": {"exec": ["/bin/sh", "run.sh"]}}},
    }});
    let (status, body) = h
        .send(Method::POST, "/v1/apps/thief/releases", Some(spec))
        .await;
    assert_eq!(status, 422, "release: {body}");
    let (_, list) = h.send(Method::GET, "/v1/apps/thief/machines", None).await;
    assert_eq!(list, json!([]), "nothing created in the thief app");
    // The owner runs it.
    h.ok(
        Method::POST,
        "/v1/apps/owner/machines",
        Some(config(format!("aloft/owner@sha256:{hex}"))),
    )
    .await;

    // A tar with a link out of the image: refused, nothing stored.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    let mut b = tar::Builder::new(Vec::new());
    b.append_link(&mut header, "etc", "/etc").unwrap();
    let evil = b.into_inner().unwrap();
    let evil_hex = aloft_deploy::image::digest_of(&evil)
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let resp = put("owner", &evil_hex, evil).await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("outside the image"), "{text}");
    let (status, _) = h
        .send(
            Method::GET,
            &format!("/v1/apps/owner/images/{evil_hex}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    h.stop_all().await;
}

/// Hardening fault 7 (bounds): a group count over the agent's limit is refused and not stored;
/// a machine whose memory does not fit the host (its RAM × overcommit, minus what started
/// machines hold) is refused with Fly's error, on create (412), start and update (409).
#[tokio::test(flavor = "multi_thread")]
async fn group_counts_and_machine_memory_are_bounded() {
    let host_mb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        / 1024.0;
    let h = Harness::start_with(|config| {
        config.proxy = None;
        config.limits.max_group_count = 50;
        // Room for 768 MiB of started machines on any host.
        config.limits.memory_overcommit = 800.0 / host_mb;
    })
    .await;
    h.create_app("bounded").await;

    let (status, body) = h
        .send(
            Method::PUT,
            "/v1/apps/bounded/process_groups/web/count",
            Some(json!({"count": 1_000_000})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("50"),
        "names the limit: {body}"
    );
    let counts = h
        .ok(Method::GET, "/v1/apps/bounded/process_groups", None)
        .await;
    assert_eq!(counts["counts"], json!({}), "nothing stored");
    h.ok(
        Method::PUT,
        "/v1/apps/bounded/process_groups/web/count",
        Some(json!({"count": 50})),
    )
    .await;

    let machine = |mb: u32, skip_launch: bool| {
        json!({"skip_launch": skip_launch, "config": {"image": h.image(), "init": {"exec": ["sleep", "60"]},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": mb}}})
    };
    // 512 MiB started: fits.
    let first = h
        .ok(
            Method::POST,
            "/v1/apps/bounded/machines",
            Some(machine(512, false)),
        )
        .await;
    let first_id = first["id"].as_str().unwrap().to_string();
    h.ok(
        Method::GET,
        &format!("/v1/apps/bounded/machines/{first_id}/wait?state=started"),
        None,
    )
    .await;
    // Another 512 MiB: 1024 > 768, refused as Fly refuses, nothing created.
    let (status, body) = h
        .send(
            Method::POST,
            "/v1/apps/bounded/machines",
            Some(machine(512, false)),
        )
        .await;
    assert_eq!(status, 412, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("insufficient memory available"),
        "{body}"
    );
    let list = h.ok(Method::GET, "/v1/apps/bounded/machines", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing created: {list}");
    // Parked (skip_launch) reserves nothing; starting it does not fit: 409.
    let parked = h
        .ok(
            Method::POST,
            "/v1/apps/bounded/machines",
            Some(machine(512, true)),
        )
        .await;
    let parked_id = parked["id"].as_str().unwrap();
    let (status, body) = h
        .send(
            Method::POST,
            &format!("/v1/apps/bounded/machines/{parked_id}/start"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // The started machine may grow within the budget, not past it.
    let (status, body) = h
        .send(
            Method::POST,
            &format!("/v1/apps/bounded/machines/{first_id}"),
            Some(machine(1024, false)),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // Stopping the first frees its memory: the parked one starts.
    h.ok(
        Method::POST,
        &format!("/v1/apps/bounded/machines/{first_id}/stop"),
        None,
    )
    .await;
    h.ok(
        Method::POST,
        &format!("/v1/apps/bounded/machines/{parked_id}/start"),
        None,
    )
    .await;
    h.stop_all().await;
}

/// Hardening fault 8: config fields the agent cannot honour yet are refused, naming the field,
/// instead of being accepted and dropped.
#[tokio::test(flavor = "multi_thread")]
async fn unsupported_config_fields_are_refused_not_dropped() {
    let h = start(&[]).await;
    h.create_app("strict").await;
    let with = |key: &str, value: Value| {
        let mut config = json!({"image": h.image(), "init": {"exec": ["sleep", "30"]}});
        config[key] = value;
        json!({"config": config})
    };
    for (key, value, expect) in [
        (
            "mounts",
            json!([{"volume": "vol_1", "path": "/data"}]),
            "config.mounts",
        ),
        (
            "files",
            json!([{"guest_path": "/etc/app.conf", "raw_value": "aGk="}]),
            "config.files",
        ),
        ("schedule", json!("fortnightly"), "not one of hourly, daily"),
    ] {
        let (status, body) = h
            .send(
                Method::POST,
                "/v1/apps/strict/machines",
                Some(with(key, value)),
            )
            .await;
        assert_eq!(status, 422, "{key}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(expect), "{key}: {msg}");
    }
    let list = h.ok(Method::GET, "/v1/apps/strict/machines", None).await;
    assert_eq!(list, json!([]), "nothing created");
    h.stop_all().await;
}

/// Fields of Fly's schema the agent does not implement (the wire types keep them: a test of
/// `aloft-api` checks every field of the openapi) are refused by name on create and update;
/// their unset forms are accepted.
#[tokio::test(flavor = "multi_thread")]
async fn fly_only_fields_are_refused_by_name() {
    let h = start(&[]).await;
    h.create_app("flyonly").await;
    let base = json!({"image": h.image(), "init": {"exec": ["sleep", "30"]}});
    let service = |extra: Value| {
        let mut s = json!({"protocol": "tcp", "internal_port": 8080});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        json!([s])
    };
    let cases = [
        (
            json!({"processes": [{"cmd": ["x"], "ignore_app_secrets": true}]}),
            "config.processes",
        ),
        (
            json!({"disable_machine_autostart": true}),
            "config.disable_machine_autostart",
        ),
        (
            json!({"services": service(json!({"force_instance_key": "k"}))}),
            "config.services[0].force_instance_key",
        ),
    ];
    for (fields, expect) in cases {
        let mut config = base.clone();
        for (k, v) in fields.as_object().unwrap() {
            config[k] = v.clone();
        }
        let (status, body) = h
            .send(
                Method::POST,
                "/v1/apps/flyonly/machines",
                Some(json!({"config": config})),
            )
            .await;
        assert_eq!(status, 422, "{expect}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(expect),
            "{expect}: {body}"
        );
    }
    let (status, body) = h
        .send(
            Method::POST,
            "/v1/apps/flyonly/machines",
            Some(json!({"config": base, "lsvd": true})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("lsvd"),
        "{body}"
    );
    assert_eq!(
        h.ok(Method::GET, "/v1/apps/flyonly/machines", None).await,
        json!([]),
        "nothing created"
    );

    // Their unset forms ask for nothing and are taken, on create and on update.
    let mut quiet = base.clone();
    quiet["disable_machine_autostart"] = json!(false);
    quiet["processes"] = json!([]);
    let m = h
        .ok(
            Method::POST,
            "/v1/apps/flyonly/machines",
            Some(json!({"config": quiet, "lsvd": false, "skip_launch": true})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    let (status, body) = h
        .send(
            Method::POST,
            &format!("/v1/apps/flyonly/machines/{id}"),
            Some(json!({"config": base, "lsvd": true})),
        )
        .await;
    assert_eq!(status, 422, "update: {body}");

    let (status, body) = h
        .send(
            Method::POST,
            "/v1/apps",
            Some(json!({"app_name": "subs", "enable_subdomains": true})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("enable_subdomains"),
        "{body}"
    );
    let (status, _) = h.send(Method::GET, "/v1/apps/subs", None).await;
    assert_eq!(status, 404, "the app was not created");
    h.stop_all().await;
}

#[tokio::test]
async fn ips_are_allocated_by_the_rules_and_bad_requests_change_nothing() {
    let h = start(&[]).await;
    h.create_app("ips-a").await;
    let ips = "/v1/apps/ips-a/ips";
    let shared = h
        .ok(Method::POST, ips, Some(json!({"type": "shared_v4"})))
        .await;
    assert_eq!(shared["address"], "203.0.113.7");
    assert_eq!(shared["type"], "shared_v4");
    assert_eq!(shared["region"], "global");

    // Refusals, each 4xx JSON naming what to do, none changing the list.
    let (s, v) = h
        .send(Method::POST, ips, Some(json!({"type": "shared_v4"})))
        .await;
    assert_json_error(s, &v, "a second shared address");
    assert!(v["error"].as_str().unwrap().contains("already has"), "{v}");
    let (s, v) = h.send(Method::POST, ips, Some(json!({"type": "v4"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--shared"), "{v}");
    let (s, v) = h
        .send(
            Method::POST,
            ips,
            Some(json!({"type": "shared_v4", "region": "ams"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    for bad in [
        json!({"type": "bogus"}),
        json!({}),
        json!({"type": "v4", "x": 1}),
    ] {
        let (s, v) = h.send(Method::POST, ips, Some(bad.clone())).await;
        assert_json_error(s, &v, &format!("body {bad}"));
    }
    let (s, v) = h
        .send(
            Method::POST,
            "/v1/apps/nope/ips",
            Some(json!({"type": "shared_v4"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = h
        .send(Method::DELETE, "/v1/apps/ips-a/ips/192.0.2.9", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let list = h.ok(Method::GET, ips, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Released, it is gone.
    h.ok(Method::DELETE, "/v1/apps/ips-a/ips/203.0.113.7", None)
        .await;
    assert_eq!(h.ok(Method::GET, ips, None).await, json!([]));

    // dig: bad names and types are 422; an unknown .internal name is NXDOMAIN.
    for q in [
        "name=a..b",
        "name=",
        "name=x.internal&type=BOGUS",
        &format!("name={}", "a".repeat(300)),
    ] {
        let (s, v) = h
            .send(Method::GET, &format!("/v1/apps/ips-a/dns?{q}"), None)
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {v}");
    }
    let v = h
        .ok(
            Method::GET,
            "/v1/apps/ips-a/dns?name=nothing.ips-a.internal",
            None,
        )
        .await;
    assert_eq!(v["rcode"], "NXDOMAIN", "{v}");
    assert_eq!(v["authoritative"], true, "{v}");
    assert_eq!(v["org"], "personal", "{v}");
    h.stop_all().await;
}
