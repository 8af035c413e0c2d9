//! Machines as containers, driven through the runtime alone: a busybox image made of one
//! layer, run by runc under the shim of the `aloft` binary (built beside this test by
//! `cargo test --workspace`). Root only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aloft_api::MachineConfig;
use aloft_runtime::{
    CgroupMode, ContainerConfig, ContainerImage, LaunchSpec, LogQuery, Runtime, RuntimeConfig,
    RuntimeEvent,
};
use aloft_testkit::{privileged_or_skip, wait_until};

use crate::common::{spec, tuning, PATIENCE};

/// The `aloft` binary next to this test's (`target/<profile>/aloft`).
fn aloft_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().and_then(Path::parent).ok_or("no target dir")?;
    let bin = profile_dir.join("aloft");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is not built (cargo test --workspace builds it; or cargo build -p aloft)",
            bin.display()
        ))
    }
}

fn can_run() -> Result<ContainerConfig, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("containers need root".into());
    }
    let mut config = ContainerConfig::detect(None, None)?;
    config.shim_exe = aloft_binary()?;
    if !Path::new("/usr/bin/busybox").is_file() {
        return Err("/usr/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    Ok(config)
}

/// A one-layer image with a static busybox at /bin/busybox.
fn busybox_layer(dir: &Path) -> ContainerImage {
    let layer = dir.join("layer");
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::copy("/usr/bin/busybox", layer.join("bin/busybox")).unwrap();
    std::fs::write(
        layer.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(layer.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    ContainerImage {
        layers: vec![layer],
        env: vec!["GREETING=hello".into()],
        workdir: "/tmp".into(),
        user: "app".into(),
    }
}

fn container_spec(id: &str, image_dir: &Path, image: ContainerImage, script: &str) -> LaunchSpec {
    let mut config = MachineConfig::default();
    config.init.exec = Some(vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
    ]);
    LaunchSpec {
        container: Some(image),
        secrets: Default::default(),
        volumes: Vec::new(),
        ..spec(id, image_dir, config)
    }
}

#[tokio::test]
async fn a_container_runs_its_image_as_its_user_and_is_stopped_whole() {
    let config = can_run();
    if !privileged_or_skip(
        "a_container_runs_its_image_as_its_user_and_is_stopped_whole",
        config.as_ref().map(|_| ()).map_err(Clone::clone),
    ) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let image_dir = tempfile::tempdir().unwrap();
    let tuning = tuning(CgroupMode::Auto);
    let _parent = CgroupParent(tuning.cgroup_parent.clone());
    let (rt, mut rx) = Runtime::with_tuning(
        RuntimeConfig {
            data_dir: data.path().to_path_buf(),
            logs: aloft_runtime::LogLimits::with_file_bytes(1 << 20),
            containers: Some(config),
        },
        tuning,
    )
    .unwrap();
    let image = busybox_layer(image_dir.path());
    let id = "c0ffee00000001";
    let script = "echo \"$GREETING from $(/bin/busybox hostname) as $(/bin/busybox id -u) in $(/bin/busybox pwd)\"; \
                  /bin/busybox sleep 1000 & /bin/busybox sleep 1000; echo never";
    let pid = rt
        .launch(container_spec(id, image_dir.path(), image, script))
        .await
        .expect("launch");
    assert!(matches!(
        rx.recv().await,
        Some(RuntimeEvent::Started { pid: p, .. }) if p == pid
    ));
    let query = LogQuery {
        machine_id: Some(id.into()),
        ..LogQuery::default()
    };
    wait_until(PATIENCE, "the container's greeting in its logs", || {
        rt.logs()
            .query(&query)
            .iter()
            .any(|l| l.message == format!("hello from {id} as 1000 in /tmp"))
    })
    .await;
    rt.stop(id, libc::SIGTERM, Duration::from_secs(5))
        .await
        .expect("stop");
    // The init and both sleeps are gone: nothing of the container survives its stop.
    wait_until(PATIENCE, "the container's init to be gone", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    let leftovers = with_env(&format!("FLY_MACHINE_ID={id}"));
    assert!(leftovers.is_empty(), "processes left: {leftovers:?}");
    drop(rt);
}

/// Removes the test's cgroup parent from every hierarchy on drop: runc makes it in all of them
/// (the runtime itself only in memory and cpu).
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            let parent = h.path().join(&self.0);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// Pids whose environment holds `pair`.
fn with_env(pair: &str) -> Vec<u32> {
    aloft_testkit::procs::all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| e.split(|b| *b == 0).any(|kv| kv == pair.as_bytes()))
        })
        .collect()
}
