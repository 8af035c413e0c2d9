//! The harness of the end-to-end tests that drive a real `aloft agent` process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

/// A running `aloft agent`; killed (SIGKILL) on drop.
pub struct AgentProc {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub http: Client,
}

impl AgentProc {
    pub fn start(data_dir: &Path) -> AgentProc {
        AgentProc::start_with(data_dir, &[], None)
    }

    /// An agent with more flags, and optionally a lower open-file limit (soft and hard).
    pub fn start_with(data_dir: &Path, args: &[&str], nofile: Option<u32>) -> AgentProc {
        let _ = std::fs::remove_file(data_dir.join("agent.addr"));
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_aloft"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_aloft")),
        };
        let child = command
            .args(["agent", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("ALOFT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("aloft agent starts");
        let addr = wait_for(Duration::from_secs(30), "agent.addr", || {
            std::fs::read_to_string(data_dir.join("agent.addr"))
                .ok()
                .filter(|s| s.ends_with('\n'))
        });
        let token = std::fs::read_to_string(data_dir.join("token")).unwrap();
        AgentProc {
            child,
            url: format!("http://{}", addr.trim()),
            token: token.trim().into(),
            http: Client::new(),
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
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
        self.kill9();
    }
}

pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

pub fn setup() -> (tempfile::TempDir, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).unwrap();
    let image_s = image.display().to_string();
    (tmp, image, image_s)
}

/// Polls `probe` every 50 ms until it gives a value (at most 30 s).
pub async fn wait_for_async<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Set (by `.ci/run`) where tests that need root, cgroups or mounts must run: their skips
/// become failures, so a CI that lost its privileges cannot pass by skipping them.
pub const REQUIRE_PRIVILEGED: &str = "ALOFT_REQUIRE_PRIVILEGED_TESTS";

/// Whether a privileged test can go on: `Err(why)` prints a skip line, or fails the test when
/// [`REQUIRE_PRIVILEGED`] is set.
pub fn privileged_or_skip(test: &str, can: Result<(), String>) -> bool {
    let Err(why) = can else { return true };
    assert!(
        std::env::var_os(REQUIRE_PRIVILEGED).is_none(),
        "{test} cannot run here ({why}) but {REQUIRE_PRIVILEGED} is set"
    );
    // Straight to stderr: libtest captures `eprintln!` of passing tests, and a skip must show.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    false
}
