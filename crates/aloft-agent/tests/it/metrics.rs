//! Machines' own metrics (`config.metrics`, `[metrics]` of fly.toml) scraped by the agent and
//! served on `GET /v1/metrics` with `app`, `process_group`, `machine` and `region` labels.
//! Real agent in-process (no proxy: the endpoint serves machines' metrics without one), real
//! python3 HTTP servers as host-process machines, each answering on the host port mapped to
//! its metrics port: well, with an error, too slowly, or with too large a body.

use aloft_agent::metrics_scrape::ScrapeSettings;
use aloft_agent::AgentHandle;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

use crate::common::{status_and_body, Harness};

/// A metrics endpoint on `$ALOFT_PORT_9091` whose answer `$MODE` chooses.
const SERVER: &str = r##"
import http.server, os, time
mode = os.environ["MODE"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if mode == "slow":
            time.sleep(30)
        if mode == "error":
            self.send_response(500); self.send_header("content-length", "0"); self.end_headers()
            return
        if mode == "huge":
            body = b"big_total 1\n" * 20000
        else:
            body = (
                "# HELP shop_orders_total Orders taken.\n"
                "# TYPE shop_orders_total counter\n"
                f'shop_orders_total{{path="{self.path}",app="mine"}} 42\n'
            ).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["ALOFT_PORT_9091"])), H).serve_forever()
"##;

/// The shared in-process agent, without a proxy and with quick scrapes, and the server script
/// in its image directory.
struct World(Harness);

impl World {
    async fn start() -> World {
        let h = Harness::start_with(|config| {
            config.proxy = None;
            config.metrics = ScrapeSettings {
                interval: Duration::from_millis(200),
                timeout: Duration::from_secs(2),
                max_body_bytes: 64 << 10,
                concurrency: 2,
            };
        })
        .await;
        std::fs::write(h.image.path().join("server.py"), SERVER).unwrap();
        World(h)
    }

    fn agent(&self) -> &AgentHandle {
        self.0.agent.as_ref().unwrap()
    }

    /// `method path` with the agent's token; must succeed. JSON when it parses, else the text.
    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let resp = self
            .0
            .request(&self.0.token, method.clone(), path, body, &[])
            .await;
        let (status, value) = status_and_body(resp).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// A started machine of `group` running the server in `mode`, scraped at `path` unless
    /// `path` is `None` (no `[metrics]`).
    async fn machine(&self, group: &str, mode: &str, path: Option<&str>) -> String {
        let mut config = json!({
            "image": self.0.image.path(),
            "init": {"exec": ["python3", "server.py"]},
            "env": {"MODE": mode},
            "metadata": {"fly_process_group": group, "fly_platform_version": "v2"},
        });
        if let Some(path) = path {
            config["metrics"] = json!({"port": 9091, "path": path});
        } else {
            // The server still needs its port: a check on it maps one, but nothing scrapes it.
            config["checks"] = json!({"alive": {"type": "tcp", "port": 9091, "interval": "1m"}});
        }
        let m = self
            .api(
                Method::POST,
                "/v1/apps/shop/machines",
                Some(json!({"region": "ams", "config": config})),
            )
            .await;
        let id = m["id"].as_str().unwrap().to_string();
        self.api(
            Method::GET,
            &format!("/v1/apps/shop/machines/{id}/wait?state=started"),
            None,
        )
        .await;
        id
    }

    async fn metrics(&self) -> String {
        match self.api(Method::GET, "/v1/metrics", None).await {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => panic!("not text: {other}"),
        }
    }

    /// Waits until `/v1/metrics` satisfies `ok`; returns that text.
    async fn metrics_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, what, || async {
            let text = self.metrics().await;
            ok(&text).then_some(text)
        })
        .await
    }
}

fn labels(group: &str, id: &str) -> String {
    format!(r#"app="shop",process_group="{group}",machine="{id}",region="ams""#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_are_scraped_with_their_labels_and_failures_show_as_down() {
    let h = World::start().await;
    h.api(
        Method::POST,
        "/v1/apps",
        Some(json!({"app_name": "shop", "org_slug": "personal"})),
    )
    .await;
    let web = h.machine("web", "ok", Some("/stats")).await;
    let quiet = h.machine("worker", "ok", None).await;
    let failing = h.machine("bad", "error", Some("/metrics")).await;
    let slow = h.machine("slow", "slow", Some("/metrics")).await;
    let huge = h.machine("huge", "huge", Some("/metrics")).await;

    let sample = format!(
        r#"shop_orders_total{{path="/stats",exported_app="mine",{}}} 42"#,
        labels("web", &web)
    );
    let down =
        |group: &str, id: &str| format!("aloft_metrics_scrape_up{{{}}} 0", labels(group, id));
    // Each failure says why (the first scrapes may find a server not listening yet).
    let why = |id: &str| h.agent().metrics.last_error(id).unwrap_or_default();
    let text = h
        .metrics_until("every scraped machine reported", |t| {
            t.contains(&sample)
                && t.contains(&down("bad", &failing))
                && t.contains(&down("slow", &slow))
                && t.contains(&down("huge", &huge))
                && why(&failing).contains("answered 500")
                && why(&slow).contains("no complete answer within")
                && why(&huge).contains("larger than 65536 bytes")
        })
        .await;
    // Names, type and help as the machine wrote them.
    assert!(
        text.contains("# HELP shop_orders_total Orders taken.\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE shop_orders_total counter\n"),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE shop_orders_total").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "aloft_metrics_scrape_up{{{}}} 1",
            labels("web", &web)
        )),
        "{text}"
    );
    // A machine without [metrics] is not scraped.
    assert!(!text.contains(&quiet), "{quiet} has no [metrics]:\n{text}");
    // Nothing of a failed scrape is served; the agent's output stays one valid exposition.
    assert!(!text.contains("big_total"), "{text}");
    prom_text_format_parser::Scrape::parse(&text).unwrap();
    assert_eq!(h.agent().metrics.last_error(&web), None);

    // A stopped machine leaves the output.
    h.api(
        Method::POST,
        &format!("/v1/apps/shop/machines/{web}/stop"),
        Some(json!({})),
    )
    .await;
    h.metrics_until("the stopped machine's samples gone", |t| !t.contains(&web))
        .await;
}
