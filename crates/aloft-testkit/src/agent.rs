//! A real `aloft agent` process for end-to-end tests.
//!
//! It listens on 127.0.0.1 with an OS-assigned port (read back from `<data-dir>/agent.addr`),
//! and its proxy binds 127.0.0.1 unless the test says otherwise (`--proxy-bind`, `--no-proxy`):
//! a test never serves on the host's public addresses, and maps the well-known service ports
//! it uses to free ones (`--port-map 80=0`). On drop — a failed assertion included —
//! the agent is SIGKILLed and every machine it started is reaped (processes and cgroups, see
//! [`crate::reap`]); the data dir is the test's temp dir and goes with it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use crate::wait::wait_for;

/// How long an agent may take to write `agent.addr` (it migrates a store, reaps, binds).
const START_PATIENCE: Duration = Duration::from_secs(60);

/// The `aloft` binary under test: `$ALOFT_BIN`, else the one cargo built beside the test binary
/// (`target/<profile>/aloft`, the test being `target/<profile>/deps/<name>-<hash>`; cargo builds
/// it before the `aloft` crate's integration tests run).
pub fn aloft_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ALOFT_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("aloft"))
        .expect("the test binary lies in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "no aloft binary at {} (build it with `cargo build -p aloft`, or set ALOFT_BIN)",
        bin.display()
    );
    bin
}

/// How to start an agent: [`AgentProc::start`] and [`AgentProc::start_with`] cover most tests.
#[derive(Default)]
pub struct Launch<'a> {
    /// More `aloft agent` flags.
    pub args: &'a [&'a str],
    /// A lower open-file limit (soft and hard) for the agent.
    pub nofile: Option<u32>,
    /// More environment variables.
    pub env: Vec<(&'a str, OsString)>,
    /// Where the agent's stderr goes (else the test's stderr).
    pub log: Option<PathBuf>,
}

/// A running `aloft agent`; SIGKILLed on drop, its machines reaped.
pub struct AgentProc {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub http: Client,
    pub data_dir: PathBuf,
    /// The agent's stderr, when [`Launch::log`] named a file.
    pub log: Option<PathBuf>,
}

impl AgentProc {
    pub fn start(data_dir: &Path) -> AgentProc {
        AgentProc::start_with(data_dir, &[], None)
    }

    /// An agent with more flags, and optionally a lower open-file limit (soft and hard).
    pub fn start_with(data_dir: &Path, args: &[&str], nofile: Option<u32>) -> AgentProc {
        AgentProc::launch(
            data_dir,
            Launch {
                args,
                nofile,
                ..Launch::default()
            },
        )
    }

    pub fn launch(data_dir: &Path, launch: Launch<'_>) -> AgentProc {
        let _ = std::fs::remove_file(data_dir.join("agent.addr"));
        let bin = aloft_bin();
        let mut command = match launch.nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        command
            .args(["agent", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(launch.args);
        let chooses_proxy = launch
            .args
            .iter()
            .any(|a| a.starts_with("--proxy-bind") || *a == "--no-proxy");
        if !chooses_proxy {
            command.args(["--proxy-bind", "127.0.0.1"]);
        }
        if !launch.args.contains(&"--bridge") {
            let (bridge, subnet) = crate::containers::network_for(data_dir);
            command.args(["--bridge", &bridge, "--subnet", &subnet]);
        }
        command.env("ALOFT_LOG", "warn").stdout(Stdio::null());
        for (k, v) in &launch.env {
            command.env(k, v);
        }
        match &launch.log {
            Some(path) => command.stderr(std::fs::File::create(path).expect("agent log file")),
            None => command.stderr(Stdio::inherit()),
        };
        let child = command.spawn().expect("aloft agent starts");
        // Owned from here: a failed start still kills the agent.
        let mut agent = AgentProc {
            child,
            url: String::new(),
            token: String::new(),
            http: Client::new(),
            data_dir: data_dir.to_path_buf(),
            log: launch.log,
        };
        let addr = wait_for(START_PATIENCE, "the agent to write agent.addr", || {
            std::fs::read_to_string(data_dir.join("agent.addr"))
                .ok()
                .filter(|s| s.ends_with('\n'))
        });
        // A bare address, or the URL of a TLS API (`aloft agent --tls`).
        agent.url = match addr.trim() {
            url if url.contains("://") => url.to_string(),
            addr => format!("http://{addr}"),
        };
        agent.token = std::fs::read_to_string(data_dir.join("token"))
            .expect("the agent wrote its token")
            .trim()
            .into();
        agent
    }

    /// SIGKILLs the agent, as a crash would; its machines are left to the next agent on the
    /// data dir (or to [`Drop`]).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERMs the agent and waits for it to exit, as a graceful restart or upgrade would.
    pub fn terminate(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("agent reachable");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    /// Creates app `name` (`POST /v1/apps`), asserting it worked.
    pub async fn create_app(&self, name: &str) -> Value {
        let body = serde_json::json!({ "app_name": name });
        self.ok(Method::POST, "/v1/apps", Some(body)).await
    }

    pub async fn wait_state(&self, app: &str, id: &str, state: &str) {
        let (s, v) = self
            .call(
                Method::GET,
                &format!("/v1/apps/{app}/machines/{id}/wait?state={state}&timeout=30"),
                None,
            )
            .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "machine {id} never became {state}: {v}; events: {}",
            self.events(app, id).await
        );
    }

    pub async fn events(&self, app: &str, id: &str) -> Value {
        self.ok(
            Method::GET,
            &format!("/v1/apps/{app}/machines/{id}/events?limit=50"),
            None,
        )
        .await
    }

    /// The pid of the newest `start` event.
    pub async fn pid(&self, app: &str, id: &str) -> i32 {
        let events = self.events(app, id).await;
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "start")
            .expect("a start event")["request"]["pid"]
            .as_i64()
            .unwrap() as i32
    }

    pub async fn create(&self, app: &str, body: Value) -> String {
        self.ok(
            Method::POST,
            &format!("/v1/apps/{app}/machines"),
            Some(body),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let pid = self.child.id();
        self.kill9();
        crate::reap::reap_machines(&self.data_dir, Some(pid));
    }
}
