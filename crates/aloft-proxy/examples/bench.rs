//! Helper for `bench/proxy.sh`: a tiny app server, the aloft proxy over a static routing table,
//! and an in-process autostart latency measurement.
//!
//! ```text
//! bench backend <port>                 # answers "hello\n" on 127.0.0.1:<port>
//! bench proxy <listen port> <backend port> [apps]
//! bench proxy-tls <listen port> <backend port> <cert.pem> <key.pem>
//! bench autostart [iterations] [boot ms]
//! ```
//!
//! `proxy` with `apps` > 1 serves that many apps on the port, `app1.localhost`…, each with a
//! machine on the backend: requests are routed by `Host` (the Host-routing cost). `proxy-tls`
//! serves the app on a `tls`+`http` port with the given certificate (HTTPS figures).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_api::{Concurrency, Machine, MachineConfig, MachinePort, MachineService, MachineState};
use aloft_proxy::{BoxFuture, ControlError, MachineControl, Proxy, ProxyConfig, RouteTable};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// As in the `aloft` binary, so the proxy is measured with the allocator it runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("backend") => rt.block_on(async {
            let l = TcpListener::bind(("127.0.0.1", arg(1, 0) as u16))
                .await
                .expect("bind backend");
            println!("backend on {}", l.local_addr().unwrap());
            serve_hello(l).await
        }),
        Some("proxy") => rt.block_on(run_proxy(
            arg(1, 0) as u16,
            arg(2, 0) as u16,
            arg(3, 1) as usize,
            None,
        )),
        Some("proxy-tls") => {
            let (Some(cert), Some(key)) = (args.get(3), args.get(4)) else {
                eprintln!("usage: bench proxy-tls <listen> <backend> <cert.pem> <key.pem>");
                std::process::exit(2);
            };
            let files = aloft_proxy::CertFiles {
                cert: cert.into(),
                key: key.into(),
            };
            rt.block_on(run_proxy(
                arg(1, 0) as u16,
                arg(2, 0) as u16,
                1,
                Some(files),
            ))
        }
        Some("autostart") => rt.block_on(autostart(arg(1, 20) as usize, arg(2, 100))),
        _ => {
            eprintln!(
                "usage: bench backend <port> | proxy <listen> <backend> [apps] | proxy-tls <listen> <backend> <cert> <key> | autostart [n] [boot_ms]"
            );
            std::process::exit(2);
        }
    }
}

async fn serve_hello(l: TcpListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    b"hello\n",
                ))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

fn service() -> MachineService {
    service_on(80, &["http"])
}

fn service_on(port: u16, handlers: &[&str]) -> MachineService {
    MachineService {
        protocol: "tcp".into(),
        internal_port: 8080,
        ports: vec![MachinePort {
            port: Some(port),
            handlers: handlers.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }],
        concurrency: Some(Concurrency {
            kind: "requests".into(),
            soft_limit: Some(1000),
            hard_limit: None,
        }),
        ..Default::default()
    }
}

fn machine(id: &str, state: MachineState, host_port: u16) -> Machine {
    let config = MachineConfig {
        image: "bench".into(),
        services: vec![service()],
        ..Default::default()
    };
    Machine {
        instance_id: "01HEPA330HZ37A78TK080NAK1M".into(),
        host_ports: BTreeMap::from([(8080, host_port)]),
        ..Machine::new(id, "local", state, config)
    }
}

fn config(listen: u16) -> ProxyConfig {
    ProxyConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        port_map: BTreeMap::from([(80, listen)]),
        // ALOFT_H1_FAST_PATH=0: every request through hyper (for A/B runs).
        h1_fast_path: std::env::var("ALOFT_H1_FAST_PATH").map_or(true, |v| v != "0"),
        ..Default::default()
    }
}

async fn run_proxy(listen: u16, backend: u16, apps: usize, tls: Option<aloft_proxy::CertFiles>) {
    let port = if tls.is_some() { 443 } else { 80 };
    let routes: Vec<aloft_proxy::AppRoutes> = if apps <= 1 {
        let mut m = machine("m1", MachineState::Started, backend);
        if tls.is_some() {
            m.config.services = vec![service_on(443, &["tls", "http"])];
        }
        vec![aloft_proxy::AppRoutes::new("bench", "local", vec![m])]
    } else {
        (1..=apps)
            .map(|i| aloft_proxy::AppRoutes {
                hostnames: vec![format!("app{i}.localhost")],
                ..aloft_proxy::AppRoutes::new(
                    format!("app{i}"),
                    "local",
                    vec![machine(&format!("m{i}"), MachineState::Started, backend)],
                )
            })
            .collect()
    };
    let table = RouteTable::from_machines(&routes);
    let (_tx, rx) = watch::channel(table);
    let mut cfg = config(listen);
    if let Some(files) = tls {
        cfg.port_map = BTreeMap::from([(443, listen)]);
        cfg.tls = aloft_proxy::TlsSource::Files(BTreeMap::from([("*".to_string(), files)]));
    }
    let proxy = Proxy::spawn(cfg, rx, Arc::new(aloft_proxy::NoControl)).expect("proxy");
    let mut bound = proxy.bound_watch();
    loop {
        if let Some(r) = bound.borrow_and_update().get(&port) {
            match r {
                Ok(a) => println!("aloft proxy on {a}"),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
            break;
        }
        let _ = bound.changed().await;
    }
    std::future::pending::<()>().await;
}

/// A machine whose app listens `boot` after its start.
struct Fake {
    tx: watch::Sender<RouteTable>,
    port: u16,
    boot: Duration,
    server: Mutex<Option<JoinHandle<()>>>,
    /// When the app started listening after the latest start.
    ready_at: Arc<Mutex<Option<Instant>>>,
}

impl Fake {
    fn push(&self, state: MachineState) {
        self.tx
            .send_replace(RouteTable::from_machines(&[aloft_proxy::AppRoutes::new(
                "bench",
                "local",
                vec![machine("m1", state, self.port)],
            )]));
    }
}

impl MachineControl for Fake {
    fn start<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            let (port, boot, ready) = (self.port, self.boot, self.ready_at.clone());
            *self.server.lock().unwrap() = Some(tokio::spawn(async move {
                tokio::time::sleep(boot).await;
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.set_reuseaddr(true).expect("SO_REUSEADDR");
                socket
                    .bind(SocketAddr::from(([127, 0, 0, 1], port)))
                    .expect("rebind app port");
                let l = socket.listen(1024).expect("listen");
                *ready.lock().unwrap() = Some(Instant::now());
                serve_hello(l).await
            }));
            self.push(MachineState::Started);
            Ok(())
        })
    }
    fn stop<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            let server = self.server.lock().unwrap().take();
            if let Some(t) = server {
                // Wait until the aborted task has dropped its listener: the next start binds
                // the same port, which fails while a socket still listens there.
                t.abort();
                let _ = t.await;
            }
            self.push(MachineState::Stopped);
            Ok(())
        })
    }
}

/// Request to a stopped machine until the response, minus the app's own boot time (from the
/// start call until its listener is up), over `n` stop/start cycles.
async fn autostart(n: usize, boot_ms: u64) {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (tx, rx) = watch::channel(RouteTable::default());
    let fake = Arc::new(Fake {
        tx,
        port,
        boot: Duration::from_millis(boot_ms),
        server: Mutex::new(None),
        ready_at: Arc::default(),
    });
    fake.push(MachineState::Stopped);
    let proxy = Proxy::spawn(config(0), rx, fake.clone()).expect("proxy");
    let mut bound = proxy.bound_watch();
    let addr: SocketAddr = loop {
        if let Some(Ok(a)) = bound.borrow_and_update().get(&80) {
            break *a;
        }
        let _ = bound.changed().await;
    };
    let mut overheads = Vec::new();
    for _ in 0..n {
        *fake.ready_at.lock().unwrap() = None;
        let t0 = Instant::now();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("/")
            .header("host", "bench")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        let total = t0.elapsed();
        assert!(status.is_success(), "autostarted request failed: {status}");
        let ready = fake.ready_at.lock().unwrap().expect("app became ready");
        // Boot time = from the request (≈ the start call) until the app listened.
        let boot = ready.duration_since(t0);
        overheads.push(total.saturating_sub(boot));
        fake.stop("bench", "m1", false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    overheads.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "autostart: {n} cycles, app boot {boot_ms} ms; proxy overhead beyond boot: p50 {:.2} ms, max {:.2} ms",
        ms(overheads[n / 2]),
        ms(overheads[n - 1])
    );
}
