//! The private network end to end: a real agent, the real CLI, container machines of two apps
//! in two organizations. What a machine sees is checked from inside it (`runc exec` into the
//! running container: its own `/etc/resolv.conf`, its own network namespace): `.internal`
//! names, connections to another machine's private address, Flycast.
//!
//! Root only, with buildah, runc and tini installed (skipped otherwise, failed under
//! `ALOFT_REQUIRE_PRIVILEGED_TESTS=1`). The agent's drop reaps every container, namespace,
//! bridge and nftables table it made.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    can_run_containers as can_run, private_image_store, privileged_or_skip, AgentProc, BUSYBOX,
};
use aloft_testkit::wait_for;

const PATIENCE: Duration = Duration::from_secs(60);

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /etc /w && echo "root:x:0:0::/:/bin/sh" > /etc/passwd && echo "root:x:0:" > /etc/group
COPY serve.sh /serve.sh
CMD ["/bin/sh", "/serve.sh"]
"#;

/// Every machine serves its id on port 7000 (all addresses, IPv4 and IPv6).
const SERVE_SH: &str = r#"#!/bin/sh
echo "$FLY_MACHINE_ID" > /w/id
echo "serving $FLY_MACHINE_ID at $FLY_PRIVATE_IP"
exec httpd -f -p 7000 -h /w
"#;

/// An external port no other test uses: Flycast listens on it.
const FLYCAST_PORT: u16 = 17431;

/// Fields drop in order: the agent first (its drop reaps what it made), then the temp dir.
struct World {
    agent: AgentProc,
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("data")).unwrap();
        private_image_store(tmp.path());
        let agent = AgentProc::start_with(&tmp.path().join("data"), &[], None);
        World { agent, tmp }
    }

    /// Creates app `name` in `org` with the processes `[processes]` gives, from the test image.
    fn app(&self, name: &str, org: &str, fly_toml_extra: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(BUSYBOX, dir.join("busybox")).unwrap();
        std::fs::write(dir.join("serve.sh"), SERVE_SH).unwrap();
        std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
        std::fs::write(
            dir.join("fly.toml"),
            format!(
                "app = \"{name}\"\nprimary_region = \"gru\"\nkill_timeout = \"2s\"\n\n{fly_toml_extra}"
            ),
        )
        .unwrap();
        self.ok(&dir, &["apps", "create", name, "--org", org]);
        dir
    }

    fn aloft(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(args)
            .current_dir(dir)
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

    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.aloft(dir, args);
        let text = crate::common::combined(&out);
        assert!(out.status.success(), "aloft {args:?} failed:\n{text}");
        text
    }

    fn machines(&self, dir: &Path, app: &str) -> Vec<Value> {
        let text = self.ok(dir, &["machine", "list", "-a", app, "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The machine of `group`, once it is started with a private address.
    fn started(&self, dir: &Path, app: &str, group: &str) -> Value {
        wait_for(
            PATIENCE,
            &format!("a started {group} machine of {app}"),
            || {
                self.machines(dir, app).into_iter().find(|m| {
                    m["config"]["metadata"]["fly_process_group"] == group
                        && m["state"] == "started"
                        && !m["private_ip"].as_str().unwrap_or("").is_empty()
                })
            },
        )
    }

    /// Runs `args` inside the running container of machine `id` (its files, its network).
    fn exec(&self, id: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.agent.data_dir.join("runtime/runc"))
            .args(["exec", id])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("runc runs");
        (out.status.success(), crate::common::combined(&out))
    }

    /// `GET /id` from inside machine `id` to `host` (a name or an address) on `port`, with
    /// busybox `nc` (its static `wget` crashes in a FROM-scratch image); (success, response).
    fn get_id(&self, id: &str, host: &str, port: u16) -> (bool, String) {
        let script = format!("printf 'GET /id HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
        let (ok, text) = self.exec(id, &["sh", "-c", &script]);
        (ok && text.starts_with("HTTP/1.1 200"), text)
    }

    /// `aloft dig --short` as machines of `app` see it, one answer per line.
    fn dig(&self, dir: &Path, app: &str, query: &[&str]) -> Vec<String> {
        let mut args = vec!["dig", "--short", "-a", app];
        args.extend_from_slice(query);
        let out = self.aloft(dir, &args);
        crate::common::combined(&out)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn skip(test: &str) -> bool {
    let ready = can_run().and_then(|()| {
        which("runc")
            .then_some(())
            .ok_or_else(|| "runc is not installed".to_string())
    });
    !privileged_or_skip(test, ready)
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn ip(m: &Value) -> String {
    m["private_ip"].as_str().unwrap().to_string()
}

fn id(m: &Value) -> String {
    m["id"].as_str().unwrap().to_string()
}

const TWO_GROUPS: &str =
    "[processes]\nweb = \"/bin/sh /serve.sh\"\nworker = \"/bin/sh /serve.sh\"\n";

#[test]
fn machines_find_and_reach_each_other_by_name_within_their_organization_only() {
    if skip("machines_find_and_reach_each_other_by_name_within_their_organization_only") {
        return;
    }
    let w = World::new();
    let a_dir = w.app("pn-a", "acme", TWO_GROUPS);
    let b_dir = w.app("pn-b", "rival", "");
    w.ok(&a_dir, &["deploy", "-a", "pn-a"]);
    w.ok(&b_dir, &["deploy", "-a", "pn-b"]);
    let web = w.started(&a_dir, "pn-a", "web");
    let worker = w.started(&a_dir, "pn-a", "worker");
    let rival = w.started(&b_dir, "pn-b", "app");
    let worker_ip = ip(&worker);
    assert!(
        worker_ip.parse::<std::net::Ipv6Addr>().is_ok(),
        "private_ip is the IPv6 address: {worker}"
    );

    // Inside web: its resolv.conf points at the agent's server, which knows the worker group.
    let (_, resolv) = w.exec(&id(&web), &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver"), "{resolv}");
    let (ok, env) = w.exec(&id(&web), &["sh", "-c", "echo $FLY_PRIVATE_IP"]);
    assert!(
        ok && env.trim() == ip(&web),
        "FLY_PRIVATE_IP {env:?} vs {web}"
    );
    let name = "worker.process.pn-a.internal";
    let (ok, looked) = w.exec(&id(&web), &["nslookup", "-type=AAAA", name]);
    assert!(
        ok && looked.contains(&worker_ip),
        "nslookup {name}:\n{looked}"
    );
    let (ok, body) = w.get_id(&id(&web), name, 7000);
    assert!(
        ok && body.contains(&id(&worker)),
        "web → worker by name: {body}"
    );

    // The other organization neither resolves the name nor reaches the address.
    let (_, looked) = w.exec(&id(&rival), &["nslookup", "-type=AAAA", name]);
    assert!(
        !looked.contains(&worker_ip),
        "another org resolved {name}:\n{looked}"
    );
    let (ok, body) = w.get_id(&id(&rival), &worker_ip, 7000);
    assert!(!ok, "another org reached the worker: {body}");
    assert_eq!(
        w.dig(&b_dir, "pn-b", &["TXT", "_apps.internal"]),
        vec!["\"pn-b\""]
    );

    // Names follow machines: a stopped worker leaves the group's name, a started one is back.
    w.ok(&a_dir, &["machine", "stop", "-a", "pn-a", &id(&worker)]);
    wait_for(
        Duration::from_secs(10),
        "the stopped worker to leave DNS",
        || (!w.dig(&a_dir, "pn-a", &[name]).contains(&worker_ip)).then_some(()),
    );
    w.ok(&a_dir, &["machine", "start", "-a", "pn-a", &id(&worker)]);
    wait_for(PATIENCE, "the started worker to be back in DNS", || {
        w.dig(&a_dir, "pn-a", &[name])
            .contains(&worker_ip)
            .then_some(())
    });
    // The address stayed the machine's across stop and start.
    assert_eq!(ip(&w.started(&a_dir, "pn-a", "worker")), worker_ip);
    assert_eq!(
        w.dig(
            &a_dir,
            "pn-a",
            &[&format!("{}.vm.pn-a.internal", id(&worker))]
        ),
        vec![worker_ip.clone()]
    );

    // A machine moved to another group answers under that group's name.
    w.ok(
        &a_dir,
        &[
            "machine",
            "update",
            "-a",
            "pn-a",
            "--metadata",
            "fly_process_group=web",
            "--yes",
            &id(&worker),
        ],
    );
    wait_for(PATIENCE, "the moved machine under web.process", || {
        let web_names = w.dig(&a_dir, "pn-a", &["web.process.pn-a.internal"]);
        let worker_names = w.dig(&a_dir, "pn-a", &[name]);
        (web_names.contains(&worker_ip) && !worker_names.contains(&worker_ip)).then_some(())
    });
}

#[test]
fn flycast_serves_the_organization_and_not_the_host() {
    if skip("flycast_serves_the_organization_and_not_the_host") {
        return;
    }
    let w = World::new();
    let service = format!(
        "{TWO_GROUPS}\n[[services]]\ninternal_port = 7000\nprotocol = \"tcp\"\nprocesses = [\"worker\"]\n\
         [[services.ports]]\nport = {FLYCAST_PORT}\n"
    );
    let a_dir = w.app("fc-a", "acme", &service);
    let b_dir = w.app("fc-b", "rival", "");
    let text = w.ok(&a_dir, &["ips", "allocate-v6", "--private", "-a", "fc-a"]);
    assert!(text.contains("private"), "{text}");
    w.ok(&a_dir, &["deploy", "-a", "fc-a"]);
    w.ok(&b_dir, &["deploy", "-a", "fc-b"]);
    let web = w.started(&a_dir, "fc-a", "web");
    w.started(&a_dir, "fc-a", "worker");
    let rival = w.started(&b_dir, "fc-b", "app");
    // A group with a service gets two machines on a first deploy (as flyctl does).
    let workers: Vec<String> = w
        .machines(&a_dir, "fc-a")
        .iter()
        .filter(|m| m["config"]["metadata"]["fly_process_group"] == "worker")
        .map(id)
        .collect();
    let list: Vec<Value> =
        serde_json::from_str(&w.ok(&a_dir, &["ips", "list", "-a", "fc-a", "--json"])).unwrap();
    let flycast = list[0]["address"].as_str().unwrap().to_string();
    assert_eq!(list[0]["type"], "private_v6");
    assert_eq!(
        w.dig(&a_dir, "fc-a", &["fc-a.flycast"]),
        vec![flycast.clone()]
    );

    let body = wait_for(PATIENCE, "web → worker through Flycast", || {
        let (ok, body) = w.get_id(&id(&web), "fc-a.flycast", FLYCAST_PORT);
        ok.then_some(body)
    });
    let answered = body.lines().last().unwrap_or("").trim().to_string();
    assert!(
        workers.contains(&answered),
        "Flycast reached another machine than the workers {workers:?}: {body}"
    );

    let (ok, body) = w.get_id(&id(&rival), &flycast, FLYCAST_PORT);
    if ok {
        let rules = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        let (_, addrs) = w.exec(&id(&rival), &["ip", "-6", "addr"]);
        panic!(
            "another org ({} at {}) reached the Flycast address {flycast}: {body}\n{addrs}\n{}",
            id(&rival),
            ip(&rival),
            String::from_utf8_lossy(&rules.stdout)
        );
    }
    // The app has only a private address: nothing serves it on the host's loopback.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", FLYCAST_PORT)).is_err(),
        "the Flycast-only service is served on 127.0.0.1:{FLYCAST_PORT}"
    );

    // Released, the address leaves DNS.
    w.ok(&a_dir, &["ips", "release", &flycast, "-a", "fc-a"]);
    wait_for(
        Duration::from_secs(10),
        "the released address to leave DNS",
        || {
            w.dig(&a_dir, "fc-a", &["fc-a.flycast"])
                .is_empty()
                .then_some(())
        },
    );
}
