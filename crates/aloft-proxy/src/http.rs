//! The `http` handler's entry: one client connection (plain or TLS-terminated) served by the
//! h1 fast path (`h1/`) until a request needs hyper, then by the hyper path (`hyper_path/`)
//! for good; or by the hyper path alone when `ProxyConfig::h1_fast_path` is off. Both
//! back-ends send requests through the request lifecycle (`lifecycle/`) and shape headers by
//! the header policy (`headers.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::core::Core;
use crate::lifecycle::ConnCtx;
use crate::options::HttpOptions;
use crate::table::{Bind, PortRoute};

/// Serves one client connection with the http handler.
pub(crate) async fn serve<IO>(
    core: Arc<Core>,
    io: IO,
    bind: Bind,
    client: SocketAddr,
    tls: bool,
    route: Option<&PortRoute>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ConnCtx::new(bind, client, tls, &core.cfg().region));
    // Connection timeouts are the app's when the connection is known to be for one app (a
    // listener of one app, or TLS with the SNI of one); the proxy's defaults otherwise.
    let defaults = HttpOptions::default();
    let opts = route.map_or(&defaults, |r| &r.options.http_options);
    let header_timeout = opts
        .headers_read_timeout
        .unwrap_or(core.cfg().header_read_timeout);
    if !core.cfg().h1_fast_path {
        crate::hyper_path::serve(core, ctx, io, header_timeout).await;
        return;
    }
    let timeouts = crate::h1::Timeouts {
        header: header_timeout,
        idle: opts.idle_timeout.unwrap_or(crate::h1::KEEP_ALIVE_IDLE),
    };
    if let Some(rest) = crate::h1::serve(&core, &ctx, io, timeouts).await {
        crate::hyper_path::serve(core, ctx, rest, header_timeout).await;
    }
}
