//! End to end: real servers as machines, the proxy in between, real sockets on 127.0.0.1.
//! Routing to the right process group, spreading, health checks, retries when a machine dies,
//! hard limits, no-machine answers, metrics and bind errors.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::{Concurrency, MachinePort, MachineService, MachineState};
use aloft_proxy::{Proxy, ProxyConfig, RouteTable};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_traffic_never_reaches_workers_and_spreads_across_web_machines() {
    let webs = [
        TestServer::start("w1").await,
        TestServer::start("w2").await,
        TestServer::start("w3").await,
    ];
    let worker = TestServer::start("worker").await;
    // The worker group has its own service on another port; port 80 is the web group's.
    let worker_svc = MachineService {
        protocol: "tcp".into(),
        internal_port: 9000,
        ports: vec![MachinePort {
            port: Some(9999),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut machines: Vec<_> = webs
        .iter()
        .map(|s| machine(&s.name, "web", vec![http_service(8080)], Some(s.addr)))
        .collect();
    // A failing top-level check is informational: w1 must stay in rotation.
    machines[0].config.checks.insert(
        "db".into(),
        aloft_api::MachineCheck {
            kind: Some("tcp".into()),
            port: Some(5432),
            ..health_check()
        },
    );
    machines.push(machine(
        "worker",
        "worker",
        vec![worker_svc],
        Some(worker.addr),
    ));
    let (fleet, rx) = Fleet::new("app", machines, vec![]);
    let proxy = spawn(test_config(&[80, 443, 9999]), &fleet, rx);
    let addr = bound(&proxy, 80).await;
    let mut checks = proxy.checks();
    wait_for("the top-level check to fail", || {
        checks
            .borrow_and_update()
            .get("w1")
            .is_some_and(|c| c.iter().any(|c| c.name == "db" && c.status == "critical"))
    })
    .await;
    assert!(!proxy.failing("w1"));

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..120 {
        let (status, headers, body) = get(addr, "/").await;
        assert_eq!(status, 200);
        assert!(headers.contains_key("fly-request-id"));
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(
        worker.stats.hits.load(Ordering::SeqCst),
        0,
        "a web request reached the worker"
    );
    assert!(!seen.contains_key("worker"));
    for w in &webs {
        assert!(
            seen.get(&w.name).copied().unwrap_or(0) > 10,
            "load not spread: {seen:?}"
        );
    }

    // The forwarding headers reach the app.
    let h = webs
        .iter()
        .find_map(|w| w.stats.last_headers.lock().unwrap().clone())
        .unwrap();
    assert_eq!(h["fly-client-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], "80");
    assert_eq!(h["fly-region"], "ams");
    assert_eq!(h["via"], "1.1 aloft");
    assert_eq!(h["host"], "example.test");

    let metrics = proxy.render_metrics();
    assert!(
        metrics.contains(
            "aloft_proxy_service_requests_total{app=\"app\",service=\"8080\",code=\"2xx\"} 120"
        ),
        "{metrics}"
    );

    // Dropping the handle stops listening and every check task.
    drop(proxy);
    wait_for("the port to close", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_machine_leaves_rotation_and_comes_back() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let mut svc = http_service(8080);
    svc.checks = vec![health_check()];
    let machines = vec![
        machine("a", "web", vec![svc.clone()], Some(a.addr)),
        machine("b", "web", vec![svc], Some(b.addr)),
    ];
    let (fleet, rx) = Fleet::new("app", machines, vec![]);
    let proxy = spawn(test_config(&[80]), &fleet, rx);
    let addr = bound(&proxy, 80).await;
    let mut checks = proxy.checks();
    wait_for("both machines passing", || {
        let r = checks.borrow_and_update();
        ["a", "b"].iter().all(|m| {
            r.get(*m)
                .is_some_and(|c| c.iter().all(|c| c.status == "passing"))
        })
    })
    .await;
    assert_eq!(checks.borrow()["a"][0].name, "servicecheck-00-http-8080");

    a.stats.health_status.store(500, Ordering::SeqCst);
    wait_for("a failing", || proxy.failing("a")).await;
    let report = checks.borrow_and_update().clone();
    assert_eq!(report["a"][0].status, "critical");
    assert!(report["a"][0].output.contains("500"), "{:?}", report["a"]);
    let before = a.stats.hits.load(Ordering::SeqCst);
    for _ in 0..30 {
        assert_eq!(get(addr, "/").await.2, "b");
    }
    assert_eq!(
        a.stats.hits.load(Ordering::SeqCst),
        before,
        "failing machine still got traffic"
    );
    assert_eq!(
        fleet.starts.load(Ordering::SeqCst) + fleet.stops.load(Ordering::SeqCst),
        0,
        "checks never restart machines"
    );

    a.stats.health_status.store(200, Ordering::SeqCst);
    wait_for("a passing again", || !proxy.failing("a")).await;
    let mut back = false;
    for _ in 0..60 {
        if get(addr, "/").await.2 == "a" {
            back = true;
            break;
        }
    }
    assert!(back, "machine did not return to rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_machine_under_load_loses_no_request() {
    let servers = [
        TestServer::start("a").await,
        TestServer::start("b").await,
        TestServer::start("c").await,
    ];
    let mut svc = http_service(8080);
    svc.concurrency = Some(Concurrency {
        kind: "requests".into(),
        soft_limit: Some(20),
        hard_limit: None,
    });
    let machines = servers
        .iter()
        .map(|s| machine(&s.name, "web", vec![svc.clone()], Some(s.addr)))
        .collect();
    let (fleet, rx) = Fleet::new("app", machines, vec![]);
    let proxy = spawn(test_config(&[80]), &fleet, rx);
    let addr = bound(&proxy, 80).await;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut c = KeepAlive::connect(addr).await;
            let mut failures = Vec::new();
            for _ in 0..150 {
                match c.get("/").await {
                    Ok((200, _)) => {}
                    other => failures.push(format!("{other:?}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    wait_for("load under way", || done.load(Ordering::SeqCst) > 100).await;
    servers[0].kill();
    let killed_at = done.load(Ordering::SeqCst);
    for c in clients {
        let failures = c.await.unwrap();
        assert!(failures.is_empty(), "requests lost: {failures:?}");
    }
    assert!(
        done.load(Ordering::SeqCst) > killed_at,
        "no request ran after the kill"
    );
    let metrics = proxy.render_metrics();
    let errors_a = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "aloft_proxy_machine_errors_total{app=\"app\",service=\"8080\",machine=\"a\"} ",
            )
        })
        .map(|n| n.parse::<u64>().unwrap());
    assert!(
        errors_a.unwrap_or(0) >= 1,
        "the dead machine's failures were retried, so they must be counted: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_limit_is_respected_under_concurrent_clients() {
    let servers = [TestServer::start("a").await, TestServer::start("b").await];
    let mut svc = http_service(8080);
    svc.concurrency = Some(Concurrency {
        kind: "requests".into(),
        soft_limit: Some(1),
        hard_limit: Some(2),
    });
    let machines = servers
        .iter()
        .map(|s| machine(&s.name, "web", vec![svc.clone()], Some(s.addr)))
        .collect();
    let (fleet, rx) = Fleet::new("app", machines, vec![]);
    let proxy = spawn(test_config(&[80]), &fleet, rx);
    let addr = bound(&proxy, 80).await;
    let clients: Vec<_> = (0..12)
        .map(|_| tokio::spawn(async move { get(addr, "/slow").await.0 }))
        .collect();
    for c in clients {
        assert_eq!(
            c.await.unwrap(),
            200,
            "queued requests must be served once capacity frees"
        );
    }
    for s in &servers {
        let max = s.stats.max_in_flight.load(Ordering::SeqCst);
        assert!(
            max <= 2,
            "machine {} had {max} requests in flight with hard_limit 2",
            s.name
        );
        assert!(max >= 1);
    }
    assert_eq!(
        servers
            .iter()
            .map(|s| s.stats.hits.load(Ordering::SeqCst))
            .sum::<usize>(),
        12
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_machine_means_503_with_a_reason_for_http_and_close_for_tcp() {
    let mut svc = http_service(8080);
    svc.autostart = Some(false);
    svc.ports.push(MachinePort {
        port: Some(7000),
        ..Default::default()
    });
    let mut m = machine("m", "web", vec![svc], Some("127.0.0.1:1".parse().unwrap()));
    m.state = MachineState::Stopped;
    let (fleet, rx) = Fleet::new("app", vec![m], vec![]);
    let mut cfg = test_config(&[80, 7000]);
    cfg.queue_timeout = Duration::from_millis(200);
    // Also cover the proxy running on the caller's runtime (no worker threads).
    cfg.workers = 0;
    let proxy = spawn(cfg, &fleet, rx);
    let (status, _, body) = get(bound(&proxy, 80).await, "/").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("no started, healthy machine of app app serves port 80"),
        "{body}"
    );

    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(bound(&proxy, 7000).await)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed after a bounded wait");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(proxy
        .render_metrics()
        .contains("aloft_proxy_unavailable_total{app=\"app\",port=\"80\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_with_proxy_protocol() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An app that echoes back the first line it receives (the PROXY header).
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        loop {
            let (mut s, _) = upstream.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256];
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
            });
        }
    });
    for (version, expect) in [
        (None, "PROXY TCP4 127.0.0.1 127.0.0.1 "),
        (Some("v2"), "\r\n\r\n\0\r\nQUIT\n"),
    ] {
        let svc = MachineService {
            protocol: "tcp".into(),
            internal_port: 5432,
            ports: vec![MachinePort {
                port: Some(5432),
                handlers: vec!["proxy_proto".into()],
                proxy_proto_options: version.map(|v| serde_json::json!({ "version": v })),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (fleet, rx) = Fleet::new(
            "db",
            vec![machine("m", "app", vec![svc], Some(up_addr))],
            vec![],
        );
        let proxy = spawn(test_config(&[5432]), &fleet, rx);
        let mut s = tokio::net::TcpStream::connect(bound(&proxy, 5432).await)
            .await
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(got.starts_with(expect), "{got:?}");
    }
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_cannot_be_bound_is_reported_with_the_mapping_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let s = TestServer::start("a").await;
    let (_tx, rx) =
        tokio::sync::watch::channel(RouteTable::from_machines(&[aloft_proxy::AppRoutes::new(
            "app",
            "ams",
            vec![machine("a", "web", vec![http_service(8080)], Some(s.addr))],
        )]));
    let mut cfg = ProxyConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        ..Default::default()
    };
    cfg.port_map.insert(80, taken_port);
    cfg.port_map.insert(443, 0);
    let proxy = Proxy::spawn(cfg, rx, Arc::new(aloft_proxy::NoControl)).unwrap();
    let mut rx = proxy.bound_watch();
    wait_for("ports reported", || rx.borrow_and_update().len() == 2).await;
    let ports = proxy.bound_ports();
    let err = ports[&80].clone().unwrap_err();
    assert!(err.contains("external port 80"), "{err}");
    assert!(err.contains("--port-map 80="), "{err}");
    assert!(ports[&443].is_ok(), "other ports still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_hard_limit_queues_raw_tcp_until_a_slot_frees() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Two "machines" that echo and count open connections.
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max_open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..2 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let (open, max_open) = (open.clone(), max_open.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let (open, max_open) = (open.clone(), max_open.clone());
                tokio::spawn(async move {
                    let n = open.fetch_add(1, Ordering::SeqCst) + 1;
                    max_open.fetch_max(n, Ordering::SeqCst);
                    let mut buf = [0u8; 64];
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }));
    }
    let svc = |internal| MachineService {
        protocol: "tcp".into(),
        internal_port: internal,
        ports: vec![MachinePort {
            port: Some(6000),
            ..Default::default()
        }],
        concurrency: Some(Concurrency {
            kind: "connections".into(),
            soft_limit: Some(1),
            hard_limit: Some(1),
        }),
        ..Default::default()
    };
    let machines = vec![
        machine("a", "app", vec![svc(7000)], Some(addrs[0])),
        machine("b", "app", vec![svc(7000)], Some(addrs[1])),
    ];
    let (fleet, rx) = Fleet::new("tcp", machines, vec![]);
    let proxy = spawn(test_config(&[6000]), &fleet, rx);
    let addr = bound(&proxy, 6000).await;
    async fn echo(s: &mut tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 4];
        s.write_all(b"ping").await.is_ok()
            && s.read_exact(&mut buf).await.is_ok()
            && &buf == b"ping"
    }
    let mut c1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut c2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(echo(&mut c1).await && echo(&mut c2).await);
    // Both machines are at their hard limit: a third client waits in the queue...
    let mut c3 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let third = tokio::spawn(async move { echo(&mut c3).await });
    tokio::task::yield_now().await;
    assert!(!third.is_finished());
    // ...and is served as soon as one connection closes.
    drop(c1);
    assert!(
        third.await.unwrap(),
        "queued connection was not served after a slot freed"
    );
    assert_eq!(
        max_open.load(Ordering::SeqCst),
        2,
        "never more than one connection per machine"
    );
    drop(c2);
    tasks.iter().for_each(|t| t.abort());
}
