//! The proxy wired into the agent: service ports routed only to the machines (and so the process
//! groups) that carry the service, health-check results in the API, `/v1/proxy` and metrics.
//! Real agent in-process, real python3 HTTP servers as machines, real sockets on 127.0.0.1.

use std::collections::BTreeSet;

use aloft_agent::{Agent, AgentHandle};
use aloft_testkit::ReapOnDrop;
use reqwest::{Client, Method};
use serde_json::{json, Value};

/// An HTTP server answering `<group> <machine id>`; `/healthz` fails while `$FAIL_DIR/<id>` exists.
const SERVER: &str = r#"
import http.server, os
mid = os.environ["FLY_MACHINE_ID"]; group = os.environ["FLY_PROCESS_GROUP"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        failing = os.path.exists(os.path.join(os.environ["FAIL_DIR"], mid))
        code = 500 if (self.path == "/healthz" and failing) else 200
        body = f"{group} {mid}".encode()
        self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// An in-process agent; on drop (a failed test included) its machines are reaped, after the
/// handle and before the data dir (fields drop in this order).
struct Harness {
    agent: AgentHandle,
    http: Client,
    image: tempfile::TempDir,
    fail_dir: tempfile::TempDir,
    _reaper: ReapOnDrop,
    _data: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let data = tempfile::tempdir().unwrap();
        let mut config = crate::common::agent_config(data.path());
        let proxy = config.proxy.as_mut().unwrap();
        proxy.bind_ip = "127.0.0.1".parse().unwrap();
        proxy.port_map = [(80, 0), (9000, 0)].into_iter().collect();
        let agent = Agent::start(config).await.expect("agent starts");
        let image = tempfile::tempdir().unwrap();
        std::fs::write(image.path().join("server.py"), SERVER).unwrap();
        Harness {
            agent,
            // A fresh connection per request: with `concurrency.type = "connections"` the proxy
            // keeps a client connection on the machine it first chose.
            http: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            image,
            fail_dir: tempfile::tempdir().unwrap(),
            _reaper: ReapOnDrop::new(data.path()),
            _data: data,
        }
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.agent.url()))
            .bearer_auth(&self.agent.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// A started machine of `group` whose service listens on external port `port`.
    async fn machine(&self, group: &str, port: u16) -> String {
        let config = json!({
            "image": self.image.path(),
            "init": {"exec": ["python3", "server.py"]},
            "env": {"FAIL_DIR": self.fail_dir.path(), "FLY_PROCESS_GROUP": group},
            "metadata": {"fly_process_group": group, "fly_platform_version": "v2"},
            "services": [{
                "protocol": "tcp", "internal_port": 8080,
                "ports": [{"port": port, "handlers": ["http"]}],
                "checks": [{"type": "http", "path": "/healthz", "interval": "1s", "timeout": "1s", "grace_period": "0s"}],
            }],
        });
        let m = self
            .api(
                Method::POST,
                "/v1/apps/web-app/machines",
                Some(json!({"region": "gru", "config": config})),
            )
            .await;
        let id = m["id"].as_str().unwrap().to_string();
        self.api(
            Method::GET,
            &format!("/v1/apps/web-app/machines/{id}/wait?state=started"),
            None,
        )
        .await;
        id
    }

    /// The local address the proxy serves external `port` on, once bound.
    async fn proxy_addr(&self, port: u16) -> String {
        wait_for(&format!("proxy port {port} bound"), || async {
            let ports = self.api(Method::GET, "/v1/proxy", None).await;
            ports.as_array()?.iter().find(|p| p["port"] == port)?["listen"]
                .as_str()
                .map(str::to_string)
        })
        .await
    }

    async fn check_status(&self, id: &str) -> Vec<String> {
        let m = self
            .api(
                Method::GET,
                &format!("/v1/apps/web-app/machines/{id}"),
                None,
            )
            .await;
        m["checks"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| c["status"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn get(&self, addr: &str) -> Option<String> {
        let resp = self.http.get(format!("http://{addr}/")).send().await.ok()?;
        resp.status().is_success().then_some(())?;
        resp.text().await.ok()
    }
}

async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, what, probe).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ports_reach_only_their_group_and_checks_gate_rotation() {
    let h = Harness::start().await;
    h.api(
        Method::POST,
        "/v1/apps",
        Some(json!({"app_name": "web-app", "org_slug": "personal"})),
    )
    .await;
    let web1 = h.machine("web", 80).await;
    let web2 = h.machine("web", 80).await;
    let worker = h.machine("worker", 9000).await;

    // Checks run and are reported on the machines.
    for id in [&web1, &web2, &worker] {
        wait_for("checks passing", || async {
            let s = h.check_status(id).await;
            (!s.is_empty() && s.iter().all(|s| s == "passing")).then_some(())
        })
        .await;
    }

    let web_addr = h.proxy_addr(80).await;
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let body = h.get(&web_addr).await.expect("web port answers");
        assert!(body.starts_with("web "), "port 80 reached {body:?}");
        seen.insert(body);
    }
    assert_eq!(
        seen.len(),
        2,
        "load spreads over both web machines: {seen:?}"
    );
    let worker_addr = h.proxy_addr(9000).await;
    assert_eq!(
        h.get(&worker_addr).await.unwrap(),
        format!("worker {worker}")
    );

    // web1 fails its check: reported critical, out of rotation; then back.
    std::fs::write(h.fail_dir.path().join(&web1), "").unwrap();
    wait_for("web1 critical", || async {
        h.check_status(&web1)
            .await
            .iter()
            .any(|s| s == "critical")
            .then_some(())
    })
    .await;
    for _ in 0..30 {
        assert_eq!(h.get(&web_addr).await.unwrap(), format!("web {web2}"));
    }
    std::fs::remove_file(h.fail_dir.path().join(&web1)).unwrap();
    wait_for("web1 passing again", || async {
        h.check_status(&web1)
            .await
            .iter()
            .all(|s| s == "passing")
            .then_some(())
    })
    .await;
    wait_for("web1 back in rotation", || async {
        (h.get(&web_addr).await? == format!("web {web1}")).then_some(())
    })
    .await;

    // Metrics count what went through the proxy.
    let resp = h
        .http
        .get(format!("{}/v1/metrics", h.agent.url()))
        .bearer_auth(&h.agent.token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(&web1) && text.contains("web-app"),
        "metrics:\n{text}"
    );

    // A stopped machine leaves the table: every request goes to the other.
    h.api(
        Method::POST,
        &format!("/v1/apps/web-app/machines/{web2}/stop"),
        None,
    )
    .await;
    h.api(
        Method::GET,
        &format!("/v1/apps/web-app/machines/{web2}/wait?state=stopped"),
        None,
    )
    .await;
    for _ in 0..20 {
        assert_eq!(h.get(&web_addr).await.unwrap(), format!("web {web1}"));
    }

    h.api(Method::DELETE, "/v1/apps/web-app?force=true", None)
        .await;
    h.agent.shutdown().await;
}

/// A release whose services take a port another app serves (not both HTTP), or use UDP, is
/// refused before any machine changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_port_clashes_and_udp_before_changing_anything() {
    let h = Harness::start().await;
    for app in ["web-app", "other"] {
        h.api(
            Method::POST,
            "/v1/apps",
            Some(json!({"app_name": app, "org_slug": "personal"})),
        )
        .await;
    }
    h.machine("web", 80).await;

    let release = |protocol: &str| {
        json!({"spec": {
            "image": h.image.path(),
            "default_group": "web",
            "groups": {"web": {
                "image": "",
                "init": {"exec": ["sleep", "30"]},
                // Raw TCP: HTTP services would share port 80 by Host.
                "services": [{"protocol": protocol, "internal_port": 8080, "ports": [{"port": 80, "handlers": []}]}],
            }},
        }})
    };
    for (protocol, expect) in [("tcp", "port 80 is claimed by apps"), ("udp", "udp")] {
        let resp = h
            .http
            .post(format!("{}/v1/apps/other/releases", h.agent.url()))
            .bearer_auth(&h.agent.token)
            .json(&release(protocol))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 422, "{protocol}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.to_lowercase().contains(expect), "{protocol}: {msg}");
    }
    let machines = h.api(Method::GET, "/v1/apps/other/machines", None).await;
    assert_eq!(
        machines.as_array().unwrap().len(),
        0,
        "nothing created: {machines}"
    );
    let releases = h.api(Method::GET, "/v1/apps/other/releases", None).await;
    assert_eq!(
        releases.as_array().unwrap().len(),
        0,
        "no release recorded: {releases}"
    );

    h.api(Method::DELETE, "/v1/apps/web-app?force=true", None)
        .await;
    h.agent.shutdown().await;
}

/// Hardening fault 1: a machine created or updated straight through the Machines API (not a
/// deploy; `aloft machine clone` is a create) in app B may not take an external port app A
/// serves. Before the fix the create answered 200 and the proxy stopped serving A's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_api_cannot_take_another_apps_port() {
    let h = Harness::start().await;
    for app in ["web-app", "intruder"] {
        h.api(
            Method::POST,
            "/v1/apps",
            Some(json!({"app_name": app, "org_slug": "personal"})),
        )
        .await;
    }
    let web = h.machine("web", 80).await;
    let web_addr = h.proxy_addr(80).await;
    wait_for("web serves", || async { h.get(&web_addr).await }).await;

    // Raw TCP: an HTTP service would share port 80 with A by Host.
    let service = |protocol: &str| json!([{"protocol": protocol, "internal_port": 8080, "ports": [{"port": 80, "handlers": []}]}]);
    let config = |services: Value| json!({"image": h.image.path(), "init": {"exec": ["sleep", "300"]}, "services": services});
    let call = |method: Method, path: String, body: Value| {
        let req = h
            .http
            .request(method, format!("{}{path}", h.agent.url()))
            .bearer_auth(&h.agent.token)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let create = "/v1/apps/intruder/machines".to_string();
    let (status, body) = call(
        Method::POST,
        create.clone(),
        json!({"config": config(service("tcp"))}),
    )
    .await;
    assert_eq!(status, 422, "create: {body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("port 80") && msg.contains("web-app"),
        "names the port and its owner: {msg}"
    );
    let (status, body) = call(
        Method::POST,
        create.clone(),
        json!({"config": config(service("udp"))}),
    )
    .await;
    assert_eq!(status, 422, "udp is refused, not dropped: {body}");

    // A machine without services, then an update that adds port 80: refused, unchanged.
    let (status, body) = call(Method::POST, create, json!({"config": config(json!([]))})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let version = body["instance_id"].clone();
    let (status, body) = call(
        Method::POST,
        format!("/v1/apps/intruder/machines/{id}"),
        json!({"config": config(service("tcp"))}),
    )
    .await;
    assert_eq!(status, 422, "update: {body}");
    let after = h
        .api(
            Method::GET,
            &format!("/v1/apps/intruder/machines/{id}"),
            None,
        )
        .await;
    assert_eq!(after["instance_id"], version, "the machine did not change");

    // A's port is still served by A, by new connections.
    for _ in 0..10 {
        assert_eq!(h.get(&web_addr).await.unwrap(), format!("web {web}"));
    }
    // The owner itself may add machines on its port.
    h.machine("web", 80).await;

    for app in ["web-app", "intruder"] {
        h.api(Method::DELETE, &format!("/v1/apps/{app}?force=true"), None)
            .await;
    }
    h.agent.shutdown().await;
}
