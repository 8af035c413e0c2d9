//! Binds a listener for every external port in the routing table and drops listeners of ports
//! that disappear. A port the agent may not bind is reported (per port, with the flag that maps
//! it elsewhere) without stopping the other ports.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::core::BoundPorts;
use crate::core::Core;
use crate::table::RouteTable;
use crate::tasks::AbortOnDrop;

pub(crate) async fn manage(
    core: Arc<Core>,
    mut table: watch::Receiver<RouteTable>,
    bound: watch::Sender<BoundPorts>,
) {
    // Dropping the map (when this task is aborted) stops every accept loop.
    let mut running: BTreeMap<u16, Vec<AbortOnDrop>> = BTreeMap::new();
    loop {
        let wanted: Vec<u16> = {
            let t = table.borrow_and_update();
            core.on_table(&t);
            t.ports.keys().copied().collect()
        };
        running.retain(|port, _tasks| {
            let keep = wanted.contains(port);
            if !keep {
                tracing::info!(port, "proxy: no longer listening");
            }
            keep
        });
        let mut report = bound.borrow().clone();
        report.retain(|p, _| wanted.contains(p));
        for port in wanted {
            if running.contains_key(&port) {
                continue;
            }
            // Retry ports that failed before: the cause (another process) may be gone.
            let local = core.cfg().port_map.get(&port).copied().unwrap_or(port);
            let addr = SocketAddr::new(core.cfg().bind_ip, local);
            match bind_all(&core, port, addr) {
                Ok((actual, tasks)) => {
                    tracing::info!(port, %actual, workers = tasks.len(), "proxy: listening");
                    report.insert(port, Ok(actual));
                    running.insert(port, tasks);
                }
                Err(e) => {
                    let msg = bind_error(port, addr, &e);
                    tracing::error!("{msg}");
                    report.insert(port, Err(msg));
                }
            }
        }
        bound.send_replace(report);
        if table.changed().await.is_err() {
            break;
        }
    }
    drop(running);
}

/// Binds `addr` once per worker runtime (SO_REUSEPORT: the kernel spreads connections) and
/// starts an accept loop on each; without workers, one listener on the current runtime.
fn bind_all(
    core: &Arc<Core>,
    port: u16,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, Vec<AbortOnDrop>)> {
    if core.workers().is_empty() {
        let listener = bind(addr, false)?;
        let actual = listener.local_addr()?;
        return Ok((
            actual,
            vec![AbortOnDrop(tokio::spawn(accept_loop(
                core.clone(),
                listener,
                port,
            )))],
        ));
    }
    let mut actual = addr;
    let mut tasks = Vec::new();
    for (i, handle) in core.workers().iter().enumerate() {
        // The listener registers with the reactor of the runtime it is created in.
        let _guard = handle.enter();
        // On error, dropping `tasks` stops the loops already started.
        let listener = bind(actual, true)?;
        if i == 0 {
            // With port 0 the first bind picks the port; the others share it.
            actual = listener.local_addr()?;
        }
        tasks.push(AbortOnDrop(handle.spawn(accept_loop(
            core.clone(),
            listener,
            port,
        ))));
    }
    Ok((actual, tasks))
}

fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The message for a port the agent cannot bind: what, why, and the flag that fixes it.
pub fn bind_error(port: u16, addr: SocketAddr, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; run the agent with `--port-map {port}=<free port>` \
             (for example --port-map {port}={}) to serve it on another local port",
            8000 + port % 1000
        ),
        io::ErrorKind::AddrInUse => format!(
            "another process already listens there; stop it or run the agent with `--port-map {port}=<free port>`"
        ),
        _ => format!("map it to another local port with `--port-map {port}=<free port>`"),
    };
    format!("cannot listen on external port {port} ({addr}): {e}; {hint}")
}

async fn accept_loop(core: Arc<Core>, listener: TcpListener, port: u16) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                tokio::spawn(crate::tcp::handle(core.clone(), stream, port, client));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                tracing::warn!(port, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
