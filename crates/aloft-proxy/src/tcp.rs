//! Accepted connections: TLS termination when the port has the `tls` handler, then either the
//! `http` handler or a raw TCP splice to a machine (with an optional PROXY protocol header).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::core::Core;
use crate::machines::BOOT_POLL;
use crate::proxy_proto;
use crate::table::{Bind, PortRoute};

/// Handles one accepted connection on the listener at `bind`.
pub(crate) async fn handle(core: Arc<Core>, stream: TcpStream, bind: Bind, client: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Some(listener) = core.listener(bind) else {
        return;
    };
    let local = stream.local_addr().unwrap_or(client);
    // Every app on a shared listener serves it with the same handlers.
    let Some(first) = listener.routes.first() else {
        return;
    };
    let (tls, http) = (first.options.tls, first.options.http);
    if tls {
        let Some((stream, sni)) = crate::tls::accept(core.tls(), &listener, stream, client).await
        else {
            return;
        };
        // The app the client asked for by SNI sets the connection's timeouts.
        let route = listener.route_for(sni.as_deref()).cloned();
        if http {
            crate::http::serve(core, stream, bind, client, true, route.as_deref()).await;
        } else if let Some(route) = route {
            splice(core, stream, &route, client, local).await;
        }
    } else if http {
        crate::http::serve(
            core,
            stream,
            bind,
            client,
            false,
            listener.only().map(|r| &**r),
        )
        .await;
    } else {
        splice(core, stream, first, client, local).await;
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
