//! End to end: autostop stops idle machines through `MachineControl`, never below
//! `min_machines_running`, and a request to a stopped service starts a machine and is held
//! until the app answers.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aloft_api::{AutostopMode, MachineState};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_machine_is_stopped_and_a_request_starts_it_again() {
    let server = TestServer::start("m1").await;
    let mut svc = http_service(8080);
    svc.autostop = Some(AutostopMode::Stop);
    let m = machine("m1", "web", vec![svc], Some(server.addr));
    let (fleet, rx) = Fleet::new("app", vec![m], vec![("m1".into(), server)]);
    let mut cfg = test_config(&[80]);
    cfg.autostop_interval = Duration::from_millis(50);
    cfg.idle_window = Duration::from_millis(300);
    let proxy = spawn(cfg, &fleet, rx);
    let addr = bound(&proxy, 80).await;
    assert_eq!(get(addr, "/").await.2, "m1");

    wait_for("autostop", || fleet.state("m1") == MachineState::Stopped).await;
    assert_eq!(fleet.stops.load(Ordering::SeqCst), 1);

    // The app needs `boot_delay` (200 ms) after start before it listens: the request waits.
    let t0 = Instant::now();
    let (status, _, body) = get(addr, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "m1"),
        "autostarted request must succeed"
    );
    assert!(
        t0.elapsed() >= fleet.boot_delay,
        "answered before the app could have booted"
    );
    assert_eq!(fleet.starts.load(Ordering::SeqCst), 1);
    assert_eq!(fleet.state("m1"), MachineState::Started);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_a_stopped_machine_start_it_once() {
    let server = TestServer::start("m1").await;
    let addr_m = server.addr;
    server.kill();
    drop(server);
    let mut svc = http_service(8080);
    svc.autostop = Some(AutostopMode::Stop);
    let mut m = machine("m1", "web", vec![svc], Some(addr_m));
    m.state = MachineState::Stopped;
    let (fleet, rx) = Fleet::new("app", vec![m], vec![]);
    let proxy = spawn(test_config(&[80]), &fleet, rx);
    let addr = bound(&proxy, 80).await;
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { get(addr, "/").await }))
        .collect();
    for c in clients {
        let (status, _, body) = c.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "m1"));
    }
    assert_eq!(
        fleet.starts.load(Ordering::SeqCst),
        1,
        "one start for all waiting requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autostop_keeps_min_machines_running_and_autostart_false_is_honoured() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let mut svc = http_service(8080);
    svc.autostop = Some(AutostopMode::Stop);
    svc.autostart = Some(false);
    svc.min_machines_running = Some(1);
    let machines = vec![
        machine("a", "web", vec![svc.clone()], Some(a.addr)),
        machine("b", "web", vec![svc], Some(b.addr)),
    ];
    let (fleet, rx) = Fleet::new("app", machines, vec![("a".into(), a), ("b".into(), b)]);
    let mut cfg = test_config(&[80]);
    cfg.idle_window = Duration::ZERO;
    let proxy = spawn(cfg, &fleet, rx);
    let addr = bound(&proxy, 80).await;
    assert_eq!(proxy.autostop_now().await.len(), 1, "one machine per pass");
    assert!(
        proxy.autostop_now().await.is_empty(),
        "never below min_machines_running"
    );
    assert!(proxy.autostop_now().await.is_empty());
    let running: Vec<_> = ["a", "b"]
        .into_iter()
        .filter(|id| fleet.state(id) == MachineState::Started)
        .collect();
    assert_eq!(running.len(), 1);
    // With autostart = false, requests go to the running machine only and nothing starts.
    for _ in 0..10 {
        assert_eq!(get(addr, "/").await.2, running[0]);
    }
    assert_eq!(fleet.starts.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_machine_is_not_stopped() {
    let a = TestServer::start("a").await;
    let mut svc = http_service(8080);
    svc.autostop = Some(AutostopMode::Stop);
    let (fleet, rx) = Fleet::new(
        "app",
        vec![machine("a", "web", vec![svc], Some(a.addr))],
        vec![("a".into(), a)],
    );
    let mut cfg = test_config(&[80]);
    cfg.idle_window = Duration::from_secs(60);
    let proxy = spawn(cfg, &fleet, rx);
    let addr = bound(&proxy, 80).await;
    assert_eq!(get(addr, "/").await.0, 200);
    assert!(
        proxy.autostop_now().await.is_empty(),
        "machine active within the idle window"
    );
    assert_eq!(fleet.state("a"), MachineState::Started);
}
