//! Binds a listener for every external port in the routing table (on the proxy's bind address)
//! and for every Flycast address and port, and drops listeners that disappear. A port the agent may not bind is reported (per port, with the flag that maps
//! it elsewhere) without stopping the other ports.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::core::Core;
pub use crate::core::{BoundFlycast, BoundPorts};
use crate::table::{Bind, RouteTable};
use crate::tasks::AbortOnDrop;

pub(crate) async fn manage(
    core: Arc<Core>,
    mut table: watch::Receiver<RouteTable>,
    bound: watch::Sender<BoundPorts>,
    flycast: watch::Sender<BoundFlycast>,
) {
    // Dropping the map (when this task is aborted) stops every accept loop.
    let mut running: BTreeMap<Bind, Vec<AbortOnDrop>> = BTreeMap::new();
    loop {
        let wanted: BTreeSet<Bind> = {
            let t = table.borrow_and_update();
            core.on_table(&t);
            t.ports
                .keys()
                .map(|p| Bind::Public(*p))
                .chain(t.flycast.keys().map(|a| Bind::Flycast(*a)))
                .collect()
        };
        running.retain(|b, _tasks| {
            let keep = wanted.contains(b);
            if !keep {
                tracing::info!(listener = ?b, "proxy: no longer listening");
            }
            keep
        });
        let mut report = bound.borrow().clone();
        report.retain(|p, _| wanted.contains(&Bind::Public(*p)));
        let mut flycast_report = flycast.borrow().clone();
        flycast_report.retain(|a, _| wanted.contains(&Bind::Flycast(*a)));
        for b in wanted {
            if running.contains_key(&b) {
                continue;
            }
            // Retry ports that failed before: the cause (another process) may be gone.
            // Flycast addresses are private: the port map (for unprivileged agents) does not
            // apply to them.
            let addr = match b {
                Bind::Public(port) => {
                    let local = core.cfg().port_map.get(&port).copied().unwrap_or(port);
                    SocketAddr::new(core.cfg().bind_ip, local)
                }
                Bind::Flycast(addr) => addr,
            };
            let result = match bind_all(&core, b, addr) {
                Ok((actual, tasks)) => {
                    tracing::info!(listener = ?b, %actual, workers = tasks.len(), "proxy: listening");
                    running.insert(b, tasks);
                    Ok(actual)
                }
                Err(e) => {
                    let msg = match b {
                        Bind::Public(port) => bind_error(port, addr, &e),
                        Bind::Flycast(_) => format!(
                            "cannot listen on Flycast address {addr}: {e}; the address must be \
                             on one of this host's interfaces (the agent adds it when the app's \
                             private address is allocated)"
                        ),
                    };
                    tracing::error!("{msg}");
                    Err(msg)
                }
            };
            match b {
                Bind::Public(port) => report.insert(port, result),
                Bind::Flycast(a) => flycast_report.insert(a, result),
            };
        }
        bound.send_replace(report);
        flycast.send_replace(flycast_report);
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
    port: Bind,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, Vec<AbortOnDrop>)> {
    if core.workers().is_empty() {
        let listener = bind(addr)?;
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
        let listener = bind(actual)?;
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

/// SO_REUSEPORT always: worker threads share a port, and a Flycast address's listener
/// (`addr:port`) coexists with the wildcard one of the same port, the kernel preferring the
/// more specific address.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
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

async fn accept_loop(core: Arc<Core>, listener: TcpListener, port: Bind) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                tokio::spawn(crate::tcp::handle(core.clone(), stream, port, client));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                tracing::warn!(listener = ?port, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
