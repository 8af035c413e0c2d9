//! Attacks on a real `aloft agent` process: what an attacker or an unlucky operator does to it
//! (kill -9 loops during start-up, exhausting its connections, slow clients, a full disk, other
//! apps' ports and images). Each test says which fault of the hardening issue it guards.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{alive, setup, AgentProc};
use rand::Rng;
use reqwest::Method;
use serde_json::json;

/// Fault 6: an agent restarted right after a `kill -9` must not be refused because the dead
/// agent's lock is still held (by the dying process, or by a child between fork and exec).
/// The loop kills agents at random moments of their start-up, while they relaunch machines.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loop_during_start_up_never_locks_the_next_agent_out() {
    let (tmp, image, image_s) = setup();
    let data = tmp.path().join("data");
    let ids = {
        let agent = AgentProc::start(&data);
        agent.create_app("loop").await;
        let config = json!({"image": image_s, "init": {"exec": ["/bin/sh", "-c", "echo $$ >> starts-$FLY_MACHINE_ID.log; exec sleep 300"]}});
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = agent.create("loop", json!({"config": config})).await;
            agent.wait_state("loop", &id, "started").await;
            ids.push(id);
        }
        ids
        // Dropped: kill -9.
    };
    let mut rng = rand::thread_rng();
    for round in 0..20 {
        let stderr_path = tmp.path().join(format!("agent-{round}.err"));
        let mut child = aloft_testkit::KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_aloft"))
                .args(["agent", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(&data)
                .env("ALOFT_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .unwrap(),
        );
        // The moment of the kill is the point of the test: anywhere in the start-up.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..250)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "round {round}: the agent exited by itself ({status}) instead of starting: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let agent = AgentProc::start(&data);
    for id in &ids {
        agent.wait_state("loop", id, "started").await;
        let log = image.join(format!("starts-{id}.log"));
        common::wait_for(Duration::from_secs(10), "exactly one live process", || {
            let starts = std::fs::read_to_string(&log).unwrap();
            let live = starts
                .lines()
                .filter_map(|l| l.parse().ok())
                .filter(|p| alive(*p))
                .count();
            (live == 1).then_some(())
        });
    }
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// A request body of `mib` MiB of zeros, produced chunk by chunk (the client holds none of it).
fn zeros(mib: usize) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let stream =
        futures_util::stream::iter((0..mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    reqwest::Body::wrap_stream(stream)
}

/// Fault 7 (uploads): image uploads are streamed to disk while hashed, not held in memory, and
/// only a few run at once. Before the fix three 300 MB uploads took the agent past 1.6 GB.
#[tokio::test(flavor = "multi_thread")]
async fn large_image_uploads_do_not_grow_the_agent() {
    let (tmp, _image, _) = setup();
    let agent = AgentProc::start(&tmp.path().join("data"));
    agent.create_app("big").await;
    let before = peak_rss_mib(agent.child.id());
    let wrong = "0".repeat(64);
    let upload = || {
        agent
            .http
            .put(format!("{}/v1/apps/big/images/{wrong}", agent.url))
            .bearer_auth(&agent.token)
            .body(zeros(200))
            .send()
    };
    let (a, b, c) = tokio::join!(upload(), upload(), upload());
    let mut statuses = Vec::new();
    for r in [a, b, c] {
        let resp = r.expect("the agent answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if status == 400 {
            assert!(text.contains("digest mismatch"), "{text}");
        }
        statuses.push(status);
    }
    statuses.sort();
    println!("statuses: {statuses:?}");
    // Two are received and refused for their digest; the third waits for no slot: 429.
    assert!(
        statuses.iter().all(|s| *s == 400 || *s == 429) && statuses.contains(&400),
        "{statuses:?}"
    );
    let peak = peak_rss_mib(agent.child.id());
    println!("agent peak RSS: {before} MiB before, {peak} MiB after 3 × 200 MiB uploads");
    assert!(
        peak < before + 100,
        "the uploads were held in memory: peak RSS {peak} MiB (was {before} MiB)"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("data/images"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A machine's HTTP server answering `ok <machine id>` on `$PORT`.
const HTTP_SERVER: &str = r#"
import http.server, os
mid = os.environ["FLY_MACHINE_ID"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"ok {mid}".encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Opens up to N connections to HOST:PORT, each sending half a request head, prints how many
/// it holds, then holds them until killed.
const FLOOD: &str = r#"
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(n):
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.send(b"GET /v1/apps HTTP/1.1\r\nHost: agent\r\n")
        held.append(s)
    except OSError:
        break
print(len(held), flush=True)
time.sleep(600)
"#;

/// Fault 4: idle and half-sent API connections are capped and timed out, so a flood of them
/// (no token needed) neither exhausts the agent's open files, which the proxy shares, nor keeps
/// the API unavailable. Before the fix the proxy stopped accepting (`Too many open files`).
#[tokio::test(flavor = "multi_thread")]
async fn api_connection_floods_leave_the_proxy_serving() {
    use std::io::{BufRead, Read, Write};

    let (tmp, image, image_s) = setup();
    std::fs::write(image.join("server.py"), HTTP_SERVER).unwrap();
    let agent = AgentProc::start_with(
        &tmp.path().join("data"),
        &[
            "--proxy-bind",
            "127.0.0.1",
            "--port-map",
            "9000=0",
            "--max-api-connections",
            "64",
            "--api-header-timeout",
            "1s",
        ],
        Some(256),
    );
    agent.create_app("site").await;
    let config = json!({"image": image_s, "init": {"exec": ["python3", "server.py"]},
        "services": [{"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 9000, "handlers": ["http"]}]}]});
    let id = agent.create("site", json!({"config": config})).await;
    agent.wait_state("site", &id, "started").await;
    let proxy = common::wait_for_async(common::PATIENCE, "the proxy serving port 9000", || async {
        let ports = agent.ok(Method::GET, "/v1/proxy", None).await;
        let addr = ports.as_array()?.iter().find(|p| p["port"] == 9000)?["listen"]
            .as_str()?
            .to_string();
        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.starts_with("ok ").then_some(addr)
    })
    .await;

    // A slow client: half a request head, then nothing. The agent hangs up on it.
    let api_addr = agent.url.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&api_addr).unwrap();
    slow.write_all(b"GET /v1/apps HTTP/1.1\r\nHost: agent\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "a half-sent request head keeps its connection open: {closed:?}"
    );

    // A flood of 600 such clients against an agent limited to 256 open files.
    let (host, port) = api_addr.rsplit_once(':').unwrap();
    let mut flood = aloft_testkit::KillOnDrop(
        Command::new("python3")
            .args(["-c", FLOOD, host, port, "600"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut held = String::new();
    std::io::BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut held)
        .unwrap();
    println!("flood holds {} connections", held.trim());
    for i in 0..30 {
        let body = reqwest::Client::new()
            .get(format!("http://{proxy}/"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} through the proxy during the flood: {e}"))
            .text()
            .await
            .unwrap();
        assert_eq!(body, format!("ok {id}"));
    }
    // The API itself comes back while the flood goes on: idle slots are timed out.
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(60),
        agent.call(Method::GET, "/v1/apps", None),
    )
    .await
    .expect("the API answers during the flood");
    assert!(status.is_success());
    let _ = flood.kill();
    let _ = flood.wait();
}

/// A tmpfs mounted for a test; unmounted (lazily if still busy) on drop.
struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn new(dir: &std::path::Path, size: &str) -> TmpfsMount {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {}",
            dir.display()
        );
        TmpfsMount(dir.to_path_buf())
    }

    /// Free bytes of the filesystem.
    fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().unwrap());
        parts.next().unwrap() * parts.next().unwrap()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Fault 5: a machine whose output would fill the data dir's disk has its log lines dropped
/// above a free-space threshold, and on a disk that is full anyway (another writer), stop and
/// destroy still work (the store's reserve), and start answers 507, never 422.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_neither_traps_a_runaway_machine_nor_loses_state() {
    let root = if is_root() {
        Ok(())
    } else {
        Err("mounting a small tmpfs for the data dir needs root".to_string())
    };
    if !common::privileged_or_skip(
        "a_full_disk_neither_traps_a_runaway_machine_nor_loses_state",
        root,
    ) {
        return;
    }
    let (tmp, image, image_s) = setup();
    let data = tmp.path().join("data");
    let disk = TmpfsMount::new(&data, "40m");
    let agent = AgentProc::start_with(&data, &["--log-min-free-mb", "20", "--no-proxy"], None);
    agent.create_app("noisy").await;
    let config = json!({"image": image_s, "init": {"exec": ["/bin/sh", "-c", "exec yes 'a line of output that never ends'"]}});
    let noisy = agent.create("noisy", json!({"config": config})).await;
    agent.wait_state("noisy", &noisy, "started").await;
    let pid = agent.pid("noisy", &noisy).await;

    // The logs take what is free above 20 MiB, then stop growing while the machine runs on.
    common::wait_for(
        Duration::from_secs(60),
        "logs to reach the threshold",
        || (disk.free() < 21 << 20).then_some(()),
    );
    for _ in 0..20 {
        let free = disk.free();
        assert!(
            free >= 19 << 20,
            "logs went below the threshold: {free} bytes free"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(pid), "the machine runs on");

    // Another writer fills the disk to the last byte.
    let filled = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if=/dev/zero of={}/filler bs=1M 2>/dev/null; true",
            data.display()
        ))
        .status()
        .unwrap();
    assert!(filled.success());
    assert!(disk.free() < 1 << 20, "the disk is full");

    // Stop and destroy still work, and the machine is really gone.
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/noisy/machines/{noisy}/stop"),
            None,
        )
        .await;
    common::wait_for(
        Duration::from_secs(10),
        "the machine's process gone",
        || (!alive(pid)).then_some(()),
    );
    let (status, body) = agent
        .call(
            Method::DELETE,
            &format!("/v1/apps/noisy/machines/{noisy}?force=true"),
            None,
        )
        .await;
    assert!(
        status.is_success(),
        "destroy on a full disk: {status} {body}"
    );

    // Starting on a full disk is the disk's fault, not the config's.
    let parked = json!({"skip_launch": true, "config": {"image": image_s, "init": {"exec": ["sleep", "60"]}}});
    let (status, body) = agent
        .call(Method::POST, "/v1/apps/noisy/machines", Some(parked))
        .await;
    if status.is_success() {
        let id = body["id"].as_str().unwrap().to_string();
        let (status, body) = agent
            .call(
                Method::POST,
                &format!("/v1/apps/noisy/machines/{id}/start"),
                None,
            )
            .await;
        assert!(
            status.is_success() || status.as_u16() == 507,
            "start on a full disk: {status} {body}"
        );
    } else {
        assert_eq!(status.as_u16(), 507, "create on a full disk: {body}");
    }

    // Space comes back: everything works again.
    std::fs::remove_file(data.join("filler")).unwrap();
    let again = json!({"config": {"image": image_s, "init": {"exec": ["sleep", "60"]}}});
    let id = agent.create("noisy", again).await;
    agent.wait_state("noisy", &id, "started").await;
    let _ = image;
    drop(agent);
    drop(disk);
}

/// Fault 3 through a real agent: a crash-looping release whose agent is killed while it waits
/// on the new machine is resumed by the next agent, which must check the machine again and fail
/// the release. Before the fix it was marked complete about a millisecond after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_resumed_after_kill_9_still_fails_a_crash_loop() {
    let (tmp, _image, image_s) = setup();
    let data = tmp.path().join("data");
    let mut agent = AgentProc::start_with(&data, &["--no-proxy"], None);
    agent.create_app("crashy").await;
    let spec = json!({"spec": {
        "image": image_s,
        "default_group": "app",
        "groups": {"app": {"image": "", "init": {"exec": ["/bin/sh", "-c", "sleep 0.2; exit 3"]}}},
    }});
    let release = agent
        .ok(Method::POST, "/v1/apps/crashy/releases", Some(spec))
        .await;
    let version = release["version"].as_u64().unwrap();
    let events = |agent: &AgentProc| {
        agent
            .http
            .get(format!(
                "{}/v1/apps/crashy/releases/{version}/events",
                agent.url
            ))
            .bearer_auth(&agent.token)
            .send()
    };
    // Kill the agent while the release waits on its new machine.
    common::wait_for_async(common::PATIENCE, "the release waiting", || async {
        let text = events(&agent).await.ok()?.text().await.ok()?;
        text.contains("\"waiting\"").then_some(())
    })
    .await;
    agent.kill9();

    let agent = AgentProc::start_with(&data, &["--no-proxy"], None);
    let path = format!("/v1/apps/crashy/releases/{version}");
    let finished =
        common::wait_for_async(common::PATIENCE, "the resumed release to end", || async {
            let r = agent.ok(Method::GET, &path, None).await;
            let status = r["status"].as_str()?.to_string();
            (status != "running" && status != "pending").then_some(r)
        })
        .await;
    assert_eq!(
        finished["status"], "failed",
        "a resumed crash-looping release: {finished}"
    );
    let text = events(&agent).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("crash-looping") || text.contains("exited"),
        "{text}"
    );
}
