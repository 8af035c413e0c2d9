//! Test harness: real HTTP servers on 127.0.0.1 standing in for machines, machine records
//! pointing at them, a fake `MachineControl` that starts and stops those servers, and small
//! clients. Everything binds OS-assigned ports and is torn down when dropped.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_api::{Machine, MachineCheck, MachineConfig, MachinePort, MachineService, MachineState};
use aloft_proxy::{
    BoxFuture, ControlError, MachineControl, Proxy, ProxyConfig, ProxyHandle, RouteTable,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a test server saw.
#[derive(Default)]
pub struct Stats {
    pub hits: AtomicUsize,
    pub in_flight: AtomicU32,
    pub max_in_flight: AtomicU32,
    /// Status `/health` answers with.
    pub health_status: AtomicU16,
    pub last_headers: Mutex<Option<http::HeaderMap>>,
}

/// An HTTP server standing in for a machine's app. Answers its name; `/health` answers
/// `health_status`; `/slow` waits 200 ms.
pub struct TestServer {
    pub name: String,
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(name: &str) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(
            name,
            listener,
            Arc::new(Stats {
                health_status: AtomicU16::new(200),
                ..Default::default()
            }),
        )
    }

    /// Serves on a given address (to "restart" a machine on its host port).
    pub async fn start_on(name: &str, addr: SocketAddr, stats: Arc<Stats>) -> TestServer {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        Self::serve(name, socket.listen(1024).unwrap(), stats)
    }

    fn serve(name: &str, listener: TcpListener, stats: Arc<Stats>) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let (n, st) = (name.to_string(), stats.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the task kills them all, like a crash.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (n, st) = (n.clone(), st.clone());
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| respond(n.clone(), st.clone(), req));
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        TestServer {
            name: name.to_string(),
            addr,
            stats,
            task,
        }
    }

    /// Kills the server and every open connection at once.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    name: String,
    stats: Arc<Stats>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/health" {
        let status = stats.health_status.load(Ordering::SeqCst);
        let mut r = Response::new(Full::new(Bytes::from("health")));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        return Ok(r);
    }
    stats.hits.fetch_add(1, Ordering::SeqCst);
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    *stats.last_headers.lock().unwrap() = Some(req.headers().clone());
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    let text = if body.is_empty() {
        name
    } else {
        format!("{name}:{}", String::from_utf8_lossy(&body))
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// A web service on ports 80 (http) and 443 (tls+http) to `internal`.
pub fn http_service(internal: u16) -> MachineService {
    MachineService {
        protocol: "tcp".into(),
        internal_port: internal,
        ports: vec![
            MachinePort {
                port: Some(80),
                handlers: vec!["http".into()],
                ..Default::default()
            },
            MachinePort {
                port: Some(443),
                handlers: vec!["http".into(), "tls".into()],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// An http check on `/health` every 50 ms.
pub fn health_check() -> MachineCheck {
    MachineCheck {
        kind: Some("http".into()),
        path: Some("/health".into()),
        interval: Some(Duration::from_millis(50).into()),
        timeout: Some(Duration::from_millis(500).into()),
        grace_period: Some(Duration::ZERO.into()),
        ..Default::default()
    }
}

/// A machine record whose service internal port maps to `host` on 127.0.0.1.
pub fn machine(
    id: &str,
    group: &str,
    services: Vec<MachineService>,
    host: Option<SocketAddr>,
) -> Machine {
    let mut config = MachineConfig {
        image: "img".into(),
        services,
        ..Default::default()
    };
    config
        .metadata
        .insert("fly_process_group".into(), group.into());
    let host_ports = match host {
        Some(a) => config
            .services
            .iter()
            .map(|s| (s.internal_port, a.port()))
            .collect(),
        None => BTreeMap::new(),
    };
    Machine {
        instance_id: "01HEPA330HZ37A78TK080NAK1M".into(),
        host_ports,
        ..Machine::new(id, "ams", MachineState::Started, config)
    }
}

/// A config for tests: loopback, OS-assigned ports for `ports` and 80/443, short timeouts.
pub fn test_config(ports: &[u16]) -> ProxyConfig {
    ProxyConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        port_map: ports.iter().chain(&[80, 443]).map(|p| (*p, 0)).collect(),
        region: "ams".into(),
        queue_timeout: Duration::from_secs(3),
        start_timeout: Duration::from_secs(5),
        header_read_timeout: Duration::from_millis(500),
        autostop_interval: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// Waits until `cond` holds, polling; panics with `what` after the kit's patience.
pub async fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    aloft_testkit::wait_until(aloft_testkit::PATIENCE, what, cond).await
}

/// Waits until external `port` listens and returns its local address.
pub async fn bound(proxy: &ProxyHandle, port: u16) -> SocketAddr {
    let mut rx = proxy.bound_watch();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = rx.borrow_and_update().get(&port) {
            return r.clone().unwrap_or_else(|e| panic!("port {port}: {e}"));
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("port never bound");
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

/// One GET on a fresh connection: (status, headers, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, http::HeaderMap, String) {
    get_with(addr, path, &[]).await
}

/// [`get`] with extra request headers.
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = request(path, headers);
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).to_string())
}

/// A GET for `example.test` with extra headers.
fn request(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(path).header("host", "example.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

/// A keep-alive client connection for many requests.
pub struct KeepAlive {
    tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    pub async fn connect(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeepAlive { tx }
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.get_with(path, &[]).await
    }

    /// [`KeepAlive::get`] with extra request headers.
    pub async fn get_with(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        self.tx.ready().await.map_err(|e| e.to_string())?;
        let req = request(path, headers);
        let resp = self.tx.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).to_string()))
    }
}

/// Machines of one app as the agent would hold them, pushed to the proxy on every change.
pub struct Fleet {
    pub app: String,
    pub primary: String,
    pub machines: Mutex<Vec<Machine>>,
    pub servers: Arc<Mutex<BTreeMap<String, TestServer>>>,
    pub tx: watch::Sender<RouteTable>,
    /// Delay between "process started" and the server listening (an app's boot time).
    pub boot_delay: Duration,
    pub starts: AtomicUsize,
    pub stops: AtomicUsize,
}

impl Fleet {
    pub fn new(
        app: &str,
        machines: Vec<Machine>,
        servers: Vec<(String, TestServer)>,
    ) -> (Arc<Fleet>, watch::Receiver<RouteTable>) {
        let table = RouteTable::from_machines(&[aloft_proxy::AppRoutes::new(
            app.to_string(),
            "ams".to_string(),
            machines.clone(),
        )]);
        let (tx, rx) = watch::channel(table);
        let fleet = Fleet {
            app: app.into(),
            primary: "ams".into(),
            machines: Mutex::new(machines),
            servers: Arc::new(Mutex::new(servers.into_iter().collect())),
            tx,
            boot_delay: Duration::from_millis(200),
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
        };
        (Arc::new(fleet), rx)
    }

    pub fn push(&self) {
        let machines = self.machines.lock().unwrap().clone();
        self.tx
            .send_replace(RouteTable::from_machines(&[aloft_proxy::AppRoutes::new(
                self.app.clone(),
                self.primary.clone(),
                machines,
            )]));
    }

    pub fn set_state(&self, id: &str, state: MachineState) {
        for m in self
            .machines
            .lock()
            .unwrap()
            .iter_mut()
            .filter(|m| m.id == id)
        {
            m.state = state;
        }
        self.push();
    }

    pub fn state(&self, id: &str) -> MachineState {
        self.machines
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.id == id)
            .unwrap()
            .state
    }

    fn host_addr(&self, id: &str) -> SocketAddr {
        let machines = self.machines.lock().unwrap();
        let m = machines.iter().find(|m| m.id == id).unwrap();
        let port = *m.host_ports.values().next().unwrap();
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

impl MachineControl for Fleet {
    fn start<'a>(&'a self, _app: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.starts.fetch_add(1, Ordering::SeqCst);
            if self.state(id) == MachineState::Started {
                return Ok(());
            }
            let addr = self.host_addr(id);
            let stats = self
                .servers
                .lock()
                .unwrap()
                .get(id)
                .map(|s| s.stats.clone())
                .unwrap_or_default();
            // The process is up now; the app listens after its boot delay (refused meanwhile).
            let delay = self.boot_delay;
            let (id_owned, servers) = (id.to_string(), self.servers.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let server = TestServer::start_on(&id_owned, addr, stats).await;
                servers.lock().unwrap().insert(id_owned, server);
            });
            self.set_state(id, MachineState::Started);
            Ok(())
        })
    }

    fn stop<'a>(
        &'a self,
        _app: &'a str,
        id: &'a str,
        _suspend: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.stops.fetch_add(1, Ordering::SeqCst);
            if let Some(s) = self.servers.lock().unwrap().remove(id) {
                s.kill();
            }
            self.set_state(id, MachineState::Stopped);
            Ok(())
        })
    }
}

/// Spawns a proxy over `fleet`.
pub fn spawn(
    config: ProxyConfig,
    fleet: &Arc<Fleet>,
    rx: watch::Receiver<RouteTable>,
) -> ProxyHandle {
    Proxy::spawn(config, rx, fleet.clone()).unwrap()
}

/// A proxy (port 80) over machines of app `app`, started, each `(id, region, address)`, all
/// carrying `svc`.
pub async fn regional_proxy(
    machines: &[(&str, &str, SocketAddr)],
    svc: &MachineService,
) -> (Arc<Fleet>, ProxyHandle, SocketAddr) {
    regional_proxy_with(test_config(&[80]), machines, svc).await
}

/// [`regional_proxy`] with another config.
pub async fn regional_proxy_with(
    config: ProxyConfig,
    machines: &[(&str, &str, SocketAddr)],
    svc: &MachineService,
) -> (Arc<Fleet>, ProxyHandle, SocketAddr) {
    let records = machines
        .iter()
        .map(|(id, region, addr)| {
            let mut m = machine(id, "web", vec![svc.clone()], Some(*addr));
            m.region = region.to_string();
            m
        })
        .collect();
    let (fleet, rx) = Fleet::new("app", records, vec![]);
    let proxy = spawn(config, &fleet, rx);
    let addr = bound(&proxy, 80).await;
    (fleet, proxy, addr)
}
