//! Accepted connections: TLS termination when the port has the `tls` handler, then either the
//! `http` handler or a raw TCP splice to a machine (with an optional PROXY protocol header).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::core::Core;
use crate::machines::BOOT_POLL;
use crate::proxy_proto;
use crate::table::PortRoute;

/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handles one accepted connection on external port `port`.
pub(crate) async fn handle(core: Arc<Core>, stream: TcpStream, port: u16, client: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Some(route) = core.route(port) else {
        return;
    };
    let local = stream.local_addr().unwrap_or(client);
    if route.options.tls {
        let acceptor = core
            .tls()
            .acceptor(&route.options.tls_options, route.options.http);
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%client, port, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%client, port, "TLS handshake timed out");
                return;
            }
        };
        if route.options.http {
            crate::http::serve(core, tls, port, client, true, &route).await;
        } else {
            splice(core, tls, &route, client, local).await;
        }
    } else if route.options.http {
        crate::http::serve(core, stream, port, client, false, &route).await;
    } else {
        splice(core, stream, &route, client, local).await;
    }
}

/// Raw TCP: one lease for the connection's lifetime, refused connections retried on another
/// machine, nothing to the client but a close when no machine takes it.
async fn splice<IO>(
    core: Arc<Core>,
    mut client_io: IO,
    route: &Arc<PortRoute>,
    client: SocketAddr,
    local: SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut exclude: Vec<String> = Vec::new();
    let mut attempts = 0;
    while attempts < core.cfg().max_attempts {
        attempts += 1;
        let lease = match core.selector().acquire(route, &exclude).await {
            Ok(l) => l,
            Err(reason) => {
                core.selector().count_unavailable(route);
                tracing::info!(app = %route.app, port = route.port, %client, "closing connection: {}", reason.0);
                return;
            }
        };
        let Some(addr) = lease.backend.addr else {
            continue;
        };
        let t0 = Instant::now();
        let connected = tokio::time::timeout(
            core.cfg().upstream_connect_timeout,
            TcpStream::connect(addr),
        )
        .await;
        let mut upstream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                lease.metrics().error();
                if core.machines().booting(&lease.backend.machine_id, t0) {
                    attempts -= 1;
                    tokio::time::sleep(BOOT_POLL).await;
                } else {
                    core.health().mark_refused(&lease.backend.machine_id);
                    exclude.push(lease.backend.machine_id.clone());
                }
                continue;
            }
        };
        let _ = upstream.set_nodelay(true);
        core.machines().connected(&lease.backend.machine_id);
        lease.metrics().record(0, t0.elapsed());
        if let Some(v) = route.options.proxy_proto {
            if upstream
                .write_all(&proxy_proto::header(v, client, local))
                .await
                .is_err()
            {
                lease.metrics().error();
                return;
            }
        }
        let _ = tokio::io::copy_bidirectional(&mut client_io, &mut upstream).await;
        drop(lease);
        return;
    }
    core.selector().count_unavailable(route);
}
