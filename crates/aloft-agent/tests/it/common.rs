//! Helpers shared by the tests of an in-process agent: its config and [`Harness`].

use std::path::Path;

use aloft_agent::{Agent, AgentConfig, AgentHandle, NetConfig};
use aloft_testkit::ReapOnDrop;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

/// An agent config on `data_dir`: API on 127.0.0.1 with an OS-assigned port, and the container
/// network of that data dir (`aloft_testkit::containers::network_for`: its own bridge and
/// subnet, which the kit's reaping removes), never the host's default `aloft0`.
pub fn agent_config(data_dir: &Path) -> AgentConfig {
    let mut config = AgentConfig::new(data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let (bridge, subnet) = aloft_testkit::containers::network_for(data_dir);
    config.network = NetConfig {
        bridge,
        subnet: subnet.parse().unwrap(),
        subnet6: None,
    };
    config
}

/// An in-process agent on a temp data dir; on drop (a failed test included) its machines are
/// reaped, after the handle and before the data dir (fields drop in this order).
pub struct Harness {
    pub agent: Option<AgentHandle>,
    pub http: Client,
    pub url: String,
    /// The agent's own (org) token.
    pub token: String,
    /// An empty directory: the "image" of process-runtime machines.
    pub image: tempfile::TempDir,
    _reaper: ReapOnDrop,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts an agent with the config of [`agent_config`] changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut AgentConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = agent_config(&dir.path().join("data"));
        adjust(&mut config);
        let agent = Agent::start(config).await.expect("agent starts");
        Harness {
            url: agent.url(),
            token: agent.token.clone(),
            agent: Some(agent),
            http: Client::new(),
            image: tempfile::tempdir().unwrap(),
            _reaper: ReapOnDrop::new(dir.path().join("data")),
            _dir: dir,
        }
    }

    /// The image directory as a string, for machine configs.
    pub fn image(&self) -> String {
        self.image.path().display().to_string()
    }

    /// Sends `method path` with `token` and `headers`; `body` is sent verbatim when it is a
    /// string, as JSON otherwise.
    pub async fn request(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match body {
            Some(Value::String(raw)) => req.body(raw),
            Some(v) => req.json(&v),
            None => req,
        };
        req.send().await.expect("request sent")
    }
}

/// A response's status and body: JSON when it parses, else the text (`Null` when empty).
pub async fn status_and_body(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}
