//! The API's HTTP server: axum's router behind hyper, with the limits an exposed server needs.
//!
//! * At most [`Limits::max_api_connections`] connections are served at once. A slot is taken
//!   *before* `accept`, so clients past the cap wait in the kernel's listen backlog and cost the
//!   agent no file descriptor: a flood of API connections cannot starve the proxy (which shares
//!   the agent's open-file limit) nor the runtime.
//! * A client has [`Limits::api_header_timeout`] to send a request head, and that long again between
//!   requests on a kept-alive connection (hyper restarts the timer when a connection goes idle);
//!   a request body that sends nothing for [`Limits::api_body_idle_timeout`] is cut off. Responses
//!   that stream for long (`logs?follow`, release events, `wait`) are not limited.
//! * With TLS (`aloft agent --tls`), the handshake runs in the connection's own task, within
//!   [`Limits::api_header_timeout`]: a client that stalls it holds its slot, never `accept`.
//!   ALPN picks HTTP/2 or HTTP/1.1 (hyper_util's auto builder serves both either way).
//! * `accept` errors (EMFILE when the process is out of descriptors anyway) back off instead of
//!   spinning.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::settings::Limits;

/// How long in-flight connections get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The service every connection gets (the router behind the body idle timeout).
type ApiService = tower_http::timeout::RequestBodyTimeout<Router>;

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` fires, then lets
/// connections finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: &Limits,
    mut shutdown: oneshot::Receiver<()>,
) {
    let service = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.api_body_idle_timeout,
        ))
        .service(router);
    let slots = Arc::new(Semaphore::new(limits.max_api_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.api_header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.api_header_timeout)
        .keep_alive_timeout(limits.api_header_timeout);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (service, builder, watcher) = (service.clone(), builder.clone(), graceful.watcher());
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(stream, service, builder, watcher, slot));
            }
            Some(acceptor) => {
                let handshake_timeout = limits.api_header_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, service, builder, watcher, slot).await
                        }
                        Ok(Err(e)) => tracing::debug!("API TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(
                            "API TLS handshake not done within {handshake_timeout:?}; dropped"
                        ),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("API connections still open after {SHUTDOWN_GRACE:?}; dropping them");
    }
}

/// Serves one connection (plain or TLS) until it ends or shutdown's grace runs out; the slot is
/// given back at the end.
async fn serve_connection<S>(
    stream: S,
    service: ApiService,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("API connection ended: {e}");
    }
    drop(slot);
}
