//! `GET /v1/proxy` (where each service port listens) and `GET /v1/metrics` (Prometheus text:
//! the proxy's metrics, when it runs, then the scrape gauges and samples of machines with
//! `[metrics]`, `crate::metrics_scrape`). Both are Aloft extensions and need the API token
//! like every other route.

use aloft_api::ProxyPort;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{HttpError, HttpResult};
use super::AppState;

fn handlers(o: &aloft_proxy::options::PortOptions) -> Vec<String> {
    let mut h = Vec::new();
    if o.tls {
        h.push("tls".to_string());
    }
    if o.http {
        h.push("http".to_string());
    }
    if o.proxy_proto.is_some() {
        h.push("proxy_proto".to_string());
    }
    h
}

fn routing(st: &AppState) -> HttpResult<&crate::routing::Routing> {
    st.routing
        .as_deref()
        .ok_or_else(|| HttpError::not_found("this agent runs without a proxy"))
}

pub async fn ports(State(st): State<AppState>) -> HttpResult<Json<Vec<ProxyPort>>> {
    let routing = routing(&st)?;
    let table = routing.table();
    let bound = routing.proxy.bound_ports();
    // One entry per app on a port (HTTP ports are shared by several apps).
    let ports = table
        .ports
        .iter()
        .flat_map(|(port, listener)| listener.routes.iter().map(move |r| (*port, r)))
        .map(|(port, route)| {
            let (listen, error) = match bound.get(&port) {
                Some(Ok(addr)) => (Some(addr.to_string()), None),
                Some(Err(e)) => (None, Some(e.clone())),
                None => (None, Some("not bound yet".to_string())),
            };
            ProxyPort {
                port,
                app: route.app.clone(),
                listen,
                error,
                handlers: handlers(&route.options),
            }
        })
        .collect();
    Ok(Json(ports))
}

pub async fn metrics(State(st): State<AppState>) -> HttpResult<Response> {
    let mut text = match &st.routing {
        Some(routing) => routing.proxy.render_metrics(),
        None => String::new(),
    };
    st.metrics.render_into(&mut text);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
