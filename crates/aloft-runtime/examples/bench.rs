//! Runtime figures for `bench/runtime.sh`: launch latency (call → running process, i.e. fork,
//! exec, pid record, log readers) over N machines running `sleep`, the agent-side RSS with M
//! machines supervised, and stop latency. Prints figures; asserts nothing.
//!
//! Usage: `cargo run --release -p aloft-runtime --example bench -- [N] [M]` (defaults 200 1000).
//! `BENCH_CGROUPS=1` turns cgroup limits on (root only).

use std::time::{Duration, Instant};

use aloft_api::MachineConfig;
use aloft_runtime::{CgroupMode, LaunchSpec, Runtime, RuntimeConfig, Tuning};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200);
    let m = args.get(1).copied().unwrap_or(1000).max(n);
    let data = tempfile::tempdir().expect("temp dir");
    let image = tempfile::tempdir().expect("temp dir");
    let cgroups = if std::env::var("BENCH_CGROUPS").is_ok_and(|v| v == "1") {
        CgroupMode::Auto
    } else {
        CgroupMode::Off
    };
    let parent = format!("aloft-bench-{}", std::process::id());
    let tuning = Tuning {
        cgroups,
        cgroup_parent: parent.clone(),
        ..Tuning::default()
    };
    let config = RuntimeConfig {
        data_dir: data.path().to_path_buf(),
        logs: aloft_runtime::LogLimits::with_file_bytes(1 << 20),
        containers: None,
    };
    let (rt, mut events) = Runtime::with_tuning(config, tuning).expect("runtime");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let rss_before = rss_kib();

    let spec = |i: usize| {
        let mut config = MachineConfig::default();
        config.init.exec = Some(vec!["sleep".into(), "100000".into()]);
        LaunchSpec {
            machine_id: format!("{i:014x}"),
            app: "bench".into(),
            org: "personal".into(),
            region: "gru".into(),
            instance_id: "v1".into(),
            image_dir: image.path().to_path_buf(),
            image_ref: "dir://bench".into(),
            image_entrypoint: Vec::new(),
            image_cmd: Vec::new(),
            config,
            host_ports: Default::default(),
            container: None,
            secrets: Default::default(),
            volumes: Vec::new(),
        }
    };
    let mut launch = Vec::with_capacity(m);
    for i in 0..m {
        let t = Instant::now();
        rt.launch(spec(i)).await.expect("launch");
        launch.push(t.elapsed());
    }
    let rss_after = rss_kib();
    let mut first: Vec<Duration> = launch[..n].to_vec();
    first.sort();
    println!("limits enforced (cgroups):     {}", rt.limits_enforced());
    println!(
        "launch → running, {n} machines: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&first, 0.5),
        percentile(&first, 0.99),
        first[n - 1]
    );
    let mut all = launch.clone();
    all.sort();
    println!(
        "launch → running, {m} machines: p50 {:?}  p99 {:?}",
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    println!(
        "agent RSS: {} KiB before, {} KiB with {m} machines ({:.1} KiB per machine)",
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before)) as f64 / m as f64
    );

    let mut stop = Vec::with_capacity(m);
    for i in 0..m {
        let t = Instant::now();
        rt.stop(&format!("{i:014x}"), libc::SIGTERM, Duration::from_secs(5))
            .await
            .expect("stop");
        stop.push(t.elapsed());
    }
    stop.sort();
    println!(
        "stop (SIGTERM → exited), {m} machines: p50 {:?}  p99 {:?}",
        percentile(&stop, 0.5),
        percentile(&stop, 0.99)
    );
    for hierarchy in ["memory", "cpu", ""] {
        let _ = std::fs::remove_dir(
            std::path::Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(&parent),
        );
    }
}
