//! Machines as containers, end to end: a real `aloft agent` (127.0.0.1, OS-assigned port, temp
//! data dir, its own bridge and subnet) and the real CLI, which builds the app's Dockerfile with
//! buildah (FROM scratch + the static busybox of busybox-static: no registry is reachable here),
//! pushes it and deploys it. Machines are runc containers under the agent's shims.
//!
//! Root only, with buildah, runc and tini installed (skipped otherwise, failed under
//! `ALOFT_REQUIRE_PRIVILEGED_TESTS=1`). Each test has its own image store (vfs, through
//! `CONTAINERS_STORAGE_CONF`), and the agent's drop reaps every shim, container, mount,
//! namespace and bridge it made.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    can_run_containers as can_run, private_image_store, privileged_or_skip, AgentProc, BUSYBOX,
};
use aloft_testkit::wait_for;

const PATIENCE: Duration = Duration::from_secs(60);

/// The base every test image starts from: busybox with its applets, `/etc/passwd` with an
/// `app` user (uid 1000), and a stage that makes a file with RUN.
const BASE: &str = r#"FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /etc /www && echo "root:x:0:0::/:/bin/sh" > /etc/passwd \
 && echo "app:x:1000:1000::/www:/bin/sh" >> /etc/passwd \
 && echo "root:x:0:" > /etc/group && echo "app:x:1000:" >> /etc/group
FROM base AS assets
RUN echo "made in the assets stage" > /made-by-run
"#;

/// The entrypoint of the test images: says who and where it runs, leaves facts about its
/// surroundings in /www for the tests to fetch over HTTP, then runs its arguments (the CMD).
const ENTRY_SH: &str = r#"#!/bin/sh
echo "entry: $*"
echo "$GREETING from $(hostname) as $(id -u) in $(pwd), PORT=$PORT"
echo "$FLY_MACHINE_ID" > /www/id
touch "/www/marker-$FLY_MACHINE_ID"
ls /proc | grep -c '^[0-9]' > /www/pids
if [ -e "$HOST_PATH" ]; then echo visible > /www/host; else echo hidden > /www/host; fi
exec "$@"
"#;

/// Fields drop in order: the agent first (its drop reaps the containers, mounts, namespaces
/// and bridge its data dir records), then the temp dir holding that data dir.
struct World {
    agent: AgentProc,
    tmp: tempfile::TempDir,
    app: String,
}

impl World {
    fn new(test: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["app", "data"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        private_image_store(tmp.path());
        std::fs::copy(BUSYBOX, tmp.path().join("app/busybox")).unwrap();
        std::fs::write(tmp.path().join("app/entry.sh"), ENTRY_SH).unwrap();
        let agent = AgentProc::start_with(
            &tmp.path().join("data"),
            &["--port-map", "80=0", "--port-map", "443=0"],
            None,
        );
        let w = World {
            tmp,
            agent,
            app: format!("ct-{test}"),
        };
        w.ok(&["apps", "create", &w.app]);
        w
    }

    fn app_dir(&self) -> PathBuf {
        self.tmp.path().join("app")
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.app_dir().join(name), text).unwrap();
    }

    /// fly.toml: the app plus `extra`.
    fn config(&self, extra: &str) {
        self.write(
            "fly.toml",
            &format!(
                "app = \"{}\"\nprimary_region = \"gru\"\nkill_timeout = \"2s\"\n\n[env]\nHOST_PATH = \"{}\"\n\n{extra}",
                self.app,
                self.tmp.path().display()
            ),
        );
    }

    fn aloft(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(args)
            .current_dir(self.app_dir())
            .env("ALOFT_API_URL", &self.agent.url)
            .env("ALOFT_API_TOKEN", &self.agent.token)
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.tmp.path().join("storage.conf"),
            )
            .env_remove("ALOFT_APP")
            .stdin(Stdio::null())
            .output()
            .expect("aloft runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.aloft(args);
        let text = crate::common::combined(&out);
        assert!(out.status.success(), "aloft {args:?} failed:\n{text}");
        text
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.aloft(args);
        let text = crate::common::combined(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "aloft {args:?} should fail:\n{text}"
        );
        text
    }

    fn machines(&self) -> Vec<Value> {
        let text = self.ok(&["machine", "list", "-a", &self.app, "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn logs(&self) -> String {
        self.ok(&["logs", "-a", &self.app, "--no-tail"])
    }

    fn api(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sf", "-H"])
            .arg(format!("Authorization: Bearer {}", self.agent.token))
            .arg(format!("{}{path}", self.agent.url))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {path} failed");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The proxy's listener for external port 80.
    fn http_port(&self) -> String {
        self.api("/v1/proxy")
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == 80)
            .map(|p| p["listen"].as_str().unwrap().to_string())
            .expect("port 80 is served")
    }

    /// GET through the proxy with extra headers; the raw response (status line, headers, body).
    fn get_raw(&self, path: &str, headers: &[&str]) -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-i", "-H"])
            .arg(format!("Host: {}", self.app));
        for h in headers {
            cmd.arg("-H").arg(h);
        }
        let out = cmd
            .arg(format!("http://{}{path}", self.http_port()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET through the proxy (optionally pinned to one machine); (status, body).
    fn get(&self, path: &str, machine: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Host: {}", self.app));
        if let Some(id) = machine {
            cmd.arg("-H").arg(format!("Fly-Force-Instance-Id: {id}"));
        }
        let out = cmd
            .arg(format!("http://{}{path}", self.http_port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.trim().to_string())
    }

    fn stats(&self) -> Value {
        self.api("/v1/images/stats")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The agent's drop reaps shims, containers, mounts, namespaces and the bridge.
        self.agent.kill9();
    }
}

/// Pids of processes whose environment holds `FLY_MACHINE_ID=<id>`.
fn processes_of(id: &str) -> Vec<u32> {
    let pair = format!("FLY_MACHINE_ID={id}");
    aloft_testkit::procs::all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| e.split(|b| *b == 0).any(|kv| kv == pair.as_bytes()))
        })
        .collect()
}

fn ids(ms: &[Value]) -> Vec<String> {
    ms.iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

const WEB_DOCKERFILE: &str = r#"FROM base
COPY --from=assets /made-by-run /www/made-by-run
ENV GREETING=hi
WORKDIR /www
COPY entry.sh /entry.sh
RUN echo ok > /www/healthz && chown -R 1000:1000 /www \
 && mkdir -p /srv/static/docs && echo "static hello" > /srv/static/hello.txt \
 && echo "<h1>docs</h1>" > /srv/static/docs/index.html
USER app
ENTRYPOINT ["/bin/sh", "/entry.sh"]
CMD ["sleep", "1000"]
"#;

const WEB_SERVICE: &str = r#"[processes]
web = "httpd -f -p 8080 -h /www"

[http_service]
internal_port = 8080
auto_stop_machines = "off"
min_machines_running = 2
processes = ["web"]

[[http_service.checks]]
interval = "1s"
timeout = "1s"
path = "/healthz"

[[statics]]
guest_path = "/srv/static"
url_prefix = "/static"
index_document = "index.html"
"#;

#[test]
fn a_dockerfile_app_runs_as_isolated_containers_behind_the_proxy() {
    if !privileged_or_skip(
        "a_dockerfile_app_runs_as_isolated_containers_behind_the_proxy",
        can_run(),
    ) {
        return;
    }
    let w = World::new("web");
    w.write("Dockerfile", &format!("{BASE}{WEB_DOCKERFILE}"));
    w.config(WEB_SERVICE);
    let out = w.ok(&["deploy"]);
    assert!(out.contains("STEP"), "the build streams its steps:\n{out}");
    w.ok(&["scale", "count", "web=2", "--yes"]);
    let ms = wait_for(PATIENCE, "two started web machines", || {
        let ms = w.machines();
        (ms.len() == 2 && ms.iter().all(|m| m["state"] == "started")).then_some(ms)
    });
    let ids = ids(&ms);
    // Each has its own private address, and no host port: both listen on 8080.
    let ips: BTreeSet<&str> = ms
        .iter()
        .map(|m| m["private_ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "distinct private addresses: {ms:?}");
    assert!(ms.iter().all(|m| m.get("host_ports").is_none()));
    // The group command replaced CMD and kept ENTRYPOINT; ENV, WORKDIR and USER applied; the
    // platform sets PORT to the internal port.
    let logs = wait_for(PATIENCE, "both machines' greetings", || {
        let logs = w.logs();
        ids.iter()
            .all(|id| logs.contains(&format!("hi from {id} as 1000 in /www, PORT=8080")))
            .then_some(logs)
    });
    assert!(logs.contains("entry: httpd -f -p 8080 -h /www"), "{logs}");
    // Both are reached through the proxy; a RUN of another stage made a file of the image.
    wait_for(
        PATIENCE,
        "both machines answering through the proxy",
        || {
            let seen: BTreeSet<String> = (0..20).map(|_| w.get("/id", None).1).collect();
            ids.iter().all(|id| seen.contains(id)).then_some(())
        },
    );
    assert_eq!(
        w.get("/made-by-run", None),
        (200, "made in the assets stage".to_string())
    );
    // [[statics]] are served by the proxy from the image (httpd serves only /www).
    let hello = w.get_raw("/static/hello.txt", &[]);
    assert!(hello.starts_with("HTTP/1.1 200"), "{hello}");
    assert!(hello.contains("content-type: text/plain"), "{hello}");
    assert!(hello.ends_with("static hello\n"), "{hello}");
    let etag = hello
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an ETag")
        .trim()
        .to_string();
    let again = w.get_raw("/static/hello.txt", &[&format!("If-None-Match: {etag}")]);
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");
    assert_eq!(
        w.get("/static/docs", None),
        (200, "<h1>docs</h1>".to_string())
    );
    assert_eq!(
        w.get("/static/missing.txt", None).0,
        404,
        "not in the image: the app's 404"
    );
    // Each machine has its own files and processes, and does not see the host's.
    let (a, b) = (&ids[0], &ids[1]);
    assert_eq!(w.get(&format!("/marker-{a}"), Some(a)).0, 200);
    assert_eq!(w.get(&format!("/marker-{a}"), Some(b)).0, 404);
    for id in &ids {
        let (_, pids) = w.get("/pids", Some(id));
        let n: u32 = pids.parse().unwrap_or(u32::MAX);
        assert!(
            n < 10,
            "machine {id} sees {n} processes: not its own pid namespace"
        );
        assert_eq!(w.get("/host", Some(id)), (200, "hidden".to_string()));
    }
    // Destroy leaves no process of any machine behind.
    let host_pids: Vec<Vec<u32>> = ids.iter().map(|id| processes_of(id)).collect();
    assert!(host_pids.iter().all(|p| !p.is_empty()), "{host_pids:?}");
    w.ok(&["apps", "destroy", &w.app, "--yes"]);
    for id in &ids {
        wait_for(PATIENCE, "no process of a destroyed machine", || {
            processes_of(id).is_empty().then_some(())
        });
        assert!(!Path::new(&format!("/run/netns/aloft-{id}")).exists());
    }
}

#[test]
fn a_memory_hog_is_oom_killed_alone() {
    if !privileged_or_skip("a_memory_hog_is_oom_killed_alone", can_run()) {
        return;
    }
    let w = World::new("oom");
    w.write("Dockerfile", &format!("{BASE}{WEB_DOCKERFILE}"));
    // `tail` keeps a line it has not finished: /dev/zero has no newline.
    let config = WEB_SERVICE.replace(
        "[processes]\n",
        "[processes]\nhog = \"sh -c 'head -c 2000m /dev/zero | tail'\"\n",
    );
    w.config(&format!(
        "{config}\n[[vm]]\nmemory = \"256mb\"\n\n[[restart]]\npolicy = \"never\"\nprocesses = [\"hog\"]\n"
    ));
    // The release fails (the hog never becomes healthy); what matters is who dies.
    let _ = w.aloft(&["deploy"]);
    let hog = wait_for(PATIENCE, "the hog killed for memory", || {
        w.machines().into_iter().find(|m| {
            m["config"]["metadata"]["fly_process_group"] == "hog"
                && m["events"].as_array().unwrap().iter().any(|e| {
                    e["type"] == "exit" && e["request"]["exit_event"]["oom_killed"] == true
                })
        })
    });
    let web: Vec<Value> = w
        .machines()
        .into_iter()
        .filter(|m| m["config"]["metadata"]["fly_process_group"] == "web")
        .collect();
    assert!(!web.is_empty());
    for m in &web {
        assert_eq!(m["state"], "started", "{m}");
        let exits = m["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "exit")
            .count();
        assert_eq!(exits, 0, "a web machine exited too: {m}");
    }
    assert_ne!(hog["id"], web[0]["id"]);
}

/// Logs a digest of `$DB_PASSWORD` (never the value), then sleeps.
const SECRET_DOCKERFILE: &str = r#"FROM base
ENV DB_PASSWORD=from-image
CMD ["sh", "-c", "echo \"secret digest: $(printf %s \"$DB_PASSWORD\" | sha256sum | cut -c1-16)\"; exec sleep 3600"]
"#;

/// The first 16 hex digits of the sha256 of `value` (what SECRET_DOCKERFILE's machine logs).
fn sha16(value: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..16].to_string()
}

/// A container machine gets an app secret over its image's ENV, after a restart the secret's
/// change causes; its bundle's config.json (which holds the environment) is mode 0600.
#[test]
fn a_secret_reaches_a_container_over_the_image_env() {
    if !privileged_or_skip("a_secret_reaches_a_container_over_the_image_env", can_run()) {
        return;
    }
    let w = World::new("secrets");
    w.write("Dockerfile", &format!("{BASE}{SECRET_DOCKERFILE}"));
    w.config("");
    w.ok(&["deploy"]);
    let image_line = format!("secret digest: {}", sha16("from-image"));
    wait_for(PATIENCE, "the image's value logged", || {
        w.logs().contains(&image_line).then_some(())
    });
    let value = "container-Secret-3c9d1e";
    w.ok(&[
        "secrets",
        "set",
        &format!("DB_PASSWORD={value}"),
        "-a",
        &w.app,
    ]);
    let secret_line = format!("secret digest: {}", sha16(value));
    let logs = wait_for(PATIENCE, "the secret's value seen", || {
        let logs = w.logs();
        logs.contains(&secret_line).then_some(logs)
    });
    assert!(!logs.contains(value), "the value is not logged");
    let id = w.machines()[0]["id"].as_str().unwrap().to_string();
    let bundle = w
        .tmp
        .path()
        .join(format!("data/runtime/containers/{id}/config.json"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bundle).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", bundle.display());
}

const TICKER_DOCKERFILE: &str = r#"FROM base
COPY entry.sh /entry.sh
WORKDIR /www
ENTRYPOINT ["/bin/sh", "/entry.sh"]
CMD ["sh", "-c", "n=0; while true; do echo tick $n; n=$((n+1)); sleep 0.1; done"]
"#;

/// The tick numbers a machine logged, in order.
fn ticks(logs: &str, id: &str) -> Vec<u64> {
    logs.lines()
        .filter(|l| l.contains(&format!("[{id}]")))
        .filter_map(|l| l.split("tick ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn pid_of(w: &World, id: &str) -> String {
    std::fs::read_to_string(
        w.tmp
            .path()
            .join(format!("data/runtime/containers/{id}/init.pid")),
    )
    .unwrap()
    .trim()
    .to_string()
}

fn events_of(w: &World, id: &str) -> Vec<String> {
    w.machines().into_iter().find(|m| m["id"] == id).unwrap()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["type"].as_str().unwrap(),
                e["status"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn containers_outlive_the_agent_and_are_adopted_with_their_logs() {
    if !privileged_or_skip(
        "containers_outlive_the_agent_and_are_adopted_with_their_logs",
        can_run(),
    ) {
        return;
    }
    let mut w = World::new("adopt");
    w.write("Dockerfile", &format!("{BASE}{TICKER_DOCKERFILE}"));
    w.config("[[restart]]\npolicy = \"always\"\n");
    // --ha=false: no standby (it would stay stopped); the test waits for two ticking machines.
    w.ok(&["deploy", "--ha=false"]);
    w.ok(&["scale", "count", "app=2", "--yes"]);
    let ids = wait_for(PATIENCE, "two ticking machines", || {
        let ms = w.machines();
        let logs = w.logs();
        (ms.len() == 2 && ids(&ms).iter().all(|id| ticks(&logs, id).len() > 3)).then(|| ids(&ms))
    });
    let (keep, die) = (&ids[0], &ids[1]);
    let pid_keep = pid_of(&w, keep);
    let events_keep = events_of(&w, keep);
    let events_die = events_of(&w, die);

    // kill -9 of the agent: the containers go on; one of them dies while no agent watches.
    let data = w.tmp.path().join("data");
    w.agent.kill9();
    let pid_die = pid_of(&w, die);
    assert!(
        Path::new(&format!("/proc/{pid_keep}")).exists(),
        "a container died with the agent"
    );
    Command::new("kill")
        .args(["-9", &pid_die])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500)); // ticks logged while no agent runs
    w.agent = AgentProc::start_with(&data, &["--port-map", "80=0", "--port-map", "443=0"], None);

    // The running one is adopted: same pid, no new event; its logs have no gap.
    wait_for(
        PATIENCE,
        "the dead one restarted once by its policy",
        || {
            let ev = events_of(&w, die);
            (ev.len() >= events_die.len() + 2).then_some(())
        },
    );
    assert_eq!(pid_of(&w, keep), pid_keep);
    assert_eq!(
        events_of(&w, keep),
        events_keep,
        "the adopted machine got events"
    );
    let ev = events_of(&w, die);
    let new: Vec<&String> = ev[..ev.len() - events_die.len()].iter().collect();
    assert_eq!(
        new.iter().filter(|e| e.starts_with("exit/")).count(),
        1,
        "one exit for the container that died meanwhile: {ev:?}"
    );
    assert_eq!(
        new.iter().filter(|e| e.starts_with("start/")).count(),
        1,
        "{ev:?}"
    );
    let logs = wait_for(PATIENCE, "ticks after the restart", || {
        let logs = w.logs();
        let t = ticks(&logs, keep);
        (t.len() > 20).then_some(logs)
    });
    let t = ticks(&logs, keep);
    let gaps: Vec<(u64, u64)> = t
        .windows(2)
        .filter(|p| p[1] != p[0] + 1)
        .map(|p| (p[0], p[1]))
        .collect();
    assert!(
        gaps.is_empty(),
        "ticks lost while the agent was down: {gaps:?}"
    );

    // A graceful restart (SIGTERM) leaves them running too.
    let pid_die_now = pid_of(&w, die);
    w.agent.terminate();
    w.agent = AgentProc::start_with(&data, &["--port-map", "80=0", "--port-map", "443=0"], None);
    wait_for(PATIENCE, "the agent answering", || {
        (w.machines().len() == 2).then_some(())
    });
    assert_eq!(pid_of(&w, keep), pid_keep);
    assert_eq!(pid_of(&w, die), pid_die_now);
    assert_eq!(events_of(&w, keep), events_keep);
}

#[test]
fn a_redeploy_that_changes_one_layer_uploads_only_that_layer() {
    if !privileged_or_skip(
        "a_redeploy_that_changes_one_layer_uploads_only_that_layer",
        can_run(),
    ) {
        return;
    }
    let w = World::new("layers");
    w.write(
        "Dockerfile",
        &format!("{BASE}FROM base\nCOPY entry.sh /entry.sh\nCOPY version /version\nCMD [\"sleep\", \"1000\"]\n"),
    );
    w.write("version", "1\n");
    w.config("");
    w.ok(&["deploy"]);
    let before = w.stats();
    w.write("version", "2\n");
    let out = w.ok(&["deploy"]);
    let after = w.stats();
    let sent =
        after["blobs_received"].as_u64().unwrap() - before["blobs_received"].as_u64().unwrap();
    // The changed layer and the new config; the busybox layers are not sent again.
    assert_eq!(sent, 2, "blobs sent by the redeploy ({out})");
    assert!(
        after["blobs_present_skipped"].as_u64().unwrap()
            > before["blobs_present_skipped"].as_u64().unwrap()
    );
    // `--build-only --push` ships an image without a release; `--image` deploys it later.
    w.write("version", "3\n");
    let out = w.ok(&["deploy", "--build-only", "--push"]);
    let image = out
        .lines()
        .find_map(|l| l.strip_prefix("Deploy it with: aloft deploy --image "))
        .unwrap_or_else(|| panic!("no image to deploy in:\n{out}"))
        .trim()
        .to_string();
    let version = || w.ok(&["releases", "-a", &w.app]).lines().count();
    let releases = version();
    w.ok(&["deploy", "--image", &image]);
    assert_eq!(version(), releases + 1);
    let m = &w.machines()[0];
    assert_eq!(m["config"]["image"], image.as_str());
    assert_eq!(m["image_ref"]["repository"], w.app.as_str());
}

#[test]
fn bad_images_are_clear_errors_that_change_nothing() {
    if !privileged_or_skip("bad_images_are_clear_errors_that_change_nothing", can_run()) {
        return;
    }
    let w = World::new("bad");
    w.config("");
    // A Dockerfile whose RUN fails: the failing step is named, nothing is deployed.
    w.write("Dockerfile", &format!("{BASE}FROM base\nRUN exit 3\n"));
    let err = w.fails(&["deploy"]);
    assert!(err.contains("RUN exit 3"), "{err}");
    // An image that does not exist.
    let err = w.fails(&["deploy", "--image", "localhost/aloft-no-such-image:1"]);
    assert!(err.contains("localhost/aloft-no-such-image:1"), "{err}");
    assert!(w.machines().is_empty());
    assert!(w.ok(&["releases", "-a", &w.app]).lines().count() <= 1);
    // An image whose ENTRYPOINT is missing: the machine fails with a reason naming it.
    w.write(
        "Dockerfile",
        &format!("{BASE}FROM base\nENTRYPOINT [\"/no/such/binary\"]\n"),
    );
    let err = w.fails(&["deploy"]);
    let ms = w.machines();
    assert_eq!(ms.len(), 1, "{err}");
    let m = &ms[0];
    let failure = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == "failed" || e["type"] == "exit")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        format!("{err}{failure}").contains("/no/such/binary"),
        "the error names what is missing:\n{err}\n{m}"
    );
}

#[test]
fn exec_and_ps_run_inside_the_container() {
    if !privileged_or_skip("exec_and_ps_run_inside_the_container", can_run()) {
        return;
    }
    let w = World::new("exec");
    w.write("Dockerfile", &format!("{BASE}{WEB_DOCKERFILE}"));
    w.config(WEB_SERVICE);
    w.ok(&["deploy"]);
    let id = wait_for(PATIENCE, "a started web machine", || {
        let ms = w.machines();
        ms.iter()
            .find(|m| m["state"] == "started")
            .map(|m| m["id"].as_str().unwrap().to_string())
    });
    let exec = |args: &[&str]| {
        let mut all = vec!["machine", "exec", id.as_str(), "-a", w.app.as_str()];
        all.extend_from_slice(args);
        w.aloft(&all)
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // Inside the container: its hostname, the image's USER, WORKDIR and ENV.
    let out = exec(&[
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; id -u; pwd; echo $GREETING; echo err >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{id}\n{id}\n1000\n/www\nhi\n"));
    assert_eq!(text(&out.stderr), "err\n");

    let out = exec(&["--", "no-such-cmd"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no-such-cmd"),
        "{}",
        text(&out.stderr)
    );

    let out = exec(&["--timeout", "1", "--", "sh", "-c", "sleep 1000 & sleep 999"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    wait_for(PATIENCE, "the timed-out command's sleeps gone", || {
        !processes_of(&id).iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        })
    });

    // ps: pids as the container sees them (tini is 1) and httpd's socket on 8080.
    let list: Value =
        serde_json::from_str(&w.ok(&["machine", "ps", &id, "-a", &w.app, "--json"])).unwrap();
    let list = list.as_array().unwrap();
    assert!(list.iter().any(|p| p["pid"] == 1), "{list:?}");
    let httpd = list
        .iter()
        .find(|p| p["command"].as_str().unwrap().starts_with("httpd"))
        .unwrap_or_else(|| panic!("httpd in {list:?}"));
    assert!(
        httpd["listen_sockets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["proto"] == "tcp" && s["address"].as_str().unwrap().ends_with(":8080")),
        "{httpd}"
    );
}

#[test]
fn a_console_and_copies_run_in_the_container() {
    if !privileged_or_skip("a_console_and_copies_run_in_the_container", can_run()) {
        return;
    }
    let w = World::new("console");
    w.write("Dockerfile", &format!("{BASE}{WEB_DOCKERFILE}"));
    w.config(WEB_SERVICE);
    w.ok(&["deploy"]);
    let id = wait_for(PATIENCE, "a started web machine", || {
        let ms = w.machines();
        ms.iter()
            .find(|m| m["state"] == "started")
            .map(|m| m["id"].as_str().unwrap().to_string())
    });
    let mut t = crate::console_e2e::Terminal::run(
        &w.agent,
        &["ssh", "console", "-a", &w.app, "--machine", &id],
    );
    // The container's user, directory, environment and hostname, on a terminal of our size.
    t.type_in("echo $(id -u) $(pwd) $GREETING $(hostname) $TERM; stty size\r");
    t.expect(0, &format!("1000 /www hi {id} xterm-256color"));
    // runc sizes the container's terminal from ours just after the command started, so a
    // very first `stty size` may still see the container's terminal unsized: ask until set.
    wait_for(PATIENCE, "stty size to show our size", || {
        let since = t.len();
        t.type_in("stty size\r");
        std::thread::sleep(Duration::from_millis(300));
        t.seen()[since..].contains("24 80")
    });
    t.resize(90, 30);
    wait_for(PATIENCE, "stty size to show the new size", || {
        let since = t.len();
        t.type_in("stty size\r");
        std::thread::sleep(Duration::from_millis(300));
        t.seen()[since..].contains("30 90")
    });
    t.type_in("sleep 4545\r");
    wait_for(PATIENCE, "the sleep to run in the container", || {
        processes_of(&id).iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x004545"))
        })
    });
    t.type_in("\x03");
    wait_for(PATIENCE, "Ctrl-C to end the sleep", || {
        !processes_of(&id).iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x004545"))
        })
    });
    t.type_in("exit 4\r");
    assert_eq!(t.exit_code(), Some(4), "terminal: {}", t.seen());

    // A client killed mid-session: runc is hung up, and so is the command in the container.
    let mut t = crate::console_e2e::Terminal::run(
        &w.agent,
        &[
            "ssh",
            "console",
            "-a",
            &w.app,
            "--machine",
            &id,
            "--command",
            "sleep 4646",
        ],
    );
    let sleeping = || {
        processes_of(&id).iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x004646"))
        })
    };
    wait_for(PATIENCE, "the console's sleep to run", sleeping);
    t.child.kill().unwrap();
    t.child.wait().unwrap();
    wait_for(PATIENCE, "the console's sleep gone with its client", || {
        !sleeping()
    });
}
