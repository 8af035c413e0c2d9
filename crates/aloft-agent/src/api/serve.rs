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
//! * `accept` errors (EMFILE when the process is out of descriptors anyway) back off instead of
//!   spinning.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use crate::settings::Limits;

/// How long in-flight connections get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` fires, then lets connections finish for up to
/// [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
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
        let service = TowerToHyperService::new(service.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("API connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("API connections still open after {SHUTDOWN_GRACE:?}; dropping them");
    }
}
