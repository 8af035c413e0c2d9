//! Shared helpers of the runtime's end-to-end tests: a runtime on a temp dir with fast
//! backoff, specs that run shell snippets, and waiting for events or conditions with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aloft_api::{MachineConfig, MachineRestart};
use aloft_runtime::{CgroupMode, LaunchSpec, Runtime, RuntimeConfig, RuntimeEvent, Tuning};
pub use aloft_testkit::procs::{alive, start_time};
use tokio::sync::mpsc::UnboundedReceiver;

/// Generous: CI machines are slow and busy; nothing here waits this long when things work.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Harness {
    pub rt: Option<Runtime>,
    pub rx: UnboundedReceiver<RuntimeEvent>,
    pub data: tempfile::TempDir,
    pub image: tempfile::TempDir,
    pub cgroup_parent: Option<String>,
}

/// A unique cgroup parent per harness, so tests never touch a real agent's machines.
pub fn unique_parent() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "aloft-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn tuning(cgroups: CgroupMode) -> Tuning {
    Tuning {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        cgroups,
        cgroup_parent: unique_parent(),
        ..Tuning::default()
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(CgroupMode::Off)
    }

    pub fn with(cgroups: CgroupMode) -> Harness {
        let data = tempfile::tempdir().unwrap();
        let image = tempfile::tempdir().unwrap();
        let t = tuning(cgroups);
        let parent = t.cgroup_parent.clone();
        let (rt, rx) = Runtime::with_tuning(config(data.path()), t).unwrap();
        Harness {
            rt: Some(rt),
            rx,
            data,
            image,
            cgroup_parent: Some(parent),
        }
    }

    pub fn rt(&self) -> &Runtime {
        self.rt.as_ref().unwrap()
    }

    /// A spec running `sh -c script` in the image dir, with restart policy `policy`.
    pub fn sh(&self, id: &str, script: &str, policy: &str, max_retries: Option<u32>) -> LaunchSpec {
        let mut config = MachineConfig::default();
        config.init.exec = Some(vec!["sh".into(), "-c".into(), script.into()]);
        config.restart = Some(MachineRestart {
            policy: policy.into(),
            max_retries,
        });
        spec(id, self.image.path(), config)
    }

    /// Launches `id` (restart policy `always`) as a shell that starts a background child and
    /// waits; returns the shell's pid and, once it has written it, the child's.
    pub async fn launch_with_child(&self, id: &str) -> (u32, u32) {
        let script = "sleep 1000 & echo $! > child; sleep 1000 & wait";
        let pid = self
            .rt()
            .launch(self.sh(id, script, "always", None))
            .await
            .unwrap();
        let child_file = self.file("child");
        wait_for("the child pid", || {
            std::fs::read_to_string(&child_file).is_ok_and(|s| s.ends_with('\n'))
        })
        .await;
        (pid, read_pid(&child_file))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.image.path().join(name)
    }

    pub async fn event(&mut self) -> RuntimeEvent {
        match tokio::time::timeout(PATIENCE, self.rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("event stream closed"),
            Err(_) => panic!("no runtime event within {PATIENCE:?}"),
        }
    }

    /// The next `Exited` event, asserting that only events of `machine_id` come before it.
    pub async fn exited(&mut self, machine_id: &str) -> (aloft_api::ExitEvent, u32) {
        loop {
            match self.event().await {
                RuntimeEvent::Exited {
                    machine_id: m,
                    exit,
                    restart_count,
                    ..
                } => {
                    assert_eq!(m, machine_id);
                    return (exit, restart_count);
                }
                RuntimeEvent::Started { machine_id: m, .. } => assert_eq!(m, machine_id),
            }
        }
    }

    pub async fn started(&mut self, machine_id: &str) -> u32 {
        match self.event().await {
            RuntimeEvent::Started {
                machine_id: m, pid, ..
            } => {
                assert_eq!(m, machine_id);
                pid
            }
            other => panic!("expected Started of {machine_id}, got {other:?}"),
        }
    }
}

impl Drop for Harness {
    /// Kills whatever a failed test left running and removes its cgroups.
    fn drop(&mut self) {
        if let Some(rt) = &self.rt {
            for id in rt.supervised() {
                if let Some(pid) = rt.pid(&id) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Some(parent) = &self.cgroup_parent {
            for hierarchy in ["memory", "cpu", ""] {
                let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(parent);
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten().filter(|e| e.path().is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

pub fn config(data: &Path) -> RuntimeConfig {
    RuntimeConfig {
        data_dir: data.to_path_buf(),
        logs: aloft_runtime::LogLimits::with_file_bytes(1 << 20),
        containers: None,
    }
}

pub fn spec(id: &str, image: &Path, config: MachineConfig) -> LaunchSpec {
    LaunchSpec {
        machine_id: id.into(),
        app: "testapp".into(),
        org: "personal".into(),
        region: "gru".into(),
        instance_id: format!("{id}-v1"),
        image_dir: image.to_path_buf(),
        image_ref: format!("dir://{}", image.display()),
        image_entrypoint: Vec::new(),
        image_cmd: Vec::new(),
        config,
        host_ports: BTreeMap::new(),
        container: None,
        secrets: Default::default(),
        volumes: Vec::new(),
    }
}

/// Polls `cond` until it holds, panicking with `what` after [`PATIENCE`].
pub async fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    aloft_testkit::wait_until(PATIENCE, what, cond).await
}

/// Whether the process `pid` that started at `start` is still alive (not a reused pid).
pub fn alive_since(pid: u32, start: Option<u64>) -> bool {
    alive(pid) && start_time(pid) == start
}

pub fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
