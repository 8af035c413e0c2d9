//! The HTTP API: routes, auth (`auth`, `scope`), request ids and JSON errors. Handlers only
//! parse requests into the controller's typed actions and shape its answers.

mod apps;
mod auth;
mod certs;
mod console;
pub mod error;
mod exec;
pub mod extract;
mod files;
mod groups;
mod images;
mod leases;
mod machines;
mod misc;
mod network;
mod oci;
mod proxy;
mod releases;
mod respond;
pub mod scope;
mod secrets;
pub mod serve;
mod tokens;
mod volumes;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::controller::Controller;
use error::HttpError;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub ctl: Arc<Controller>,
    /// Releases, images and group counts (`crate::deploy`).
    pub deploy: Arc<crate::deploy::Deployer>,
    /// The proxy (for `/metrics` and `/v1/proxy`), when the agent runs one.
    pub routing: Option<Arc<crate::routing::Routing>>,
    /// ACME issuance (`aloft certs add --acme`), with the proxy.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// The private network's DNS server (`aloft dig`).
    pub dns: Arc<crate::dns::Dns>,
    /// API tokens: who calls, what they may do, what they changed.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// Region shown in `fly-request-id`.
    pub region: Arc<String>,
    /// Machines' own metrics, served after the proxy's on `/v1/metrics`.
    pub metrics: Arc<crate::metrics_scrape::Scraper>,
}

/// Routes in the order they are registered, as `(METHOD, path)`; the OpenAPI test compares it
/// with `openapi.json`.
pub struct ApiRoutes {
    by_path: Vec<(&'static str, MethodRouter<AppState>)>,
    pub list: Vec<(Method, &'static str)>,
}

impl ApiRoutes {
    fn new() -> ApiRoutes {
        ApiRoutes {
            by_path: Vec::new(),
            list: Vec::new(),
        }
    }

    fn add<H, T>(&mut self, method: Method, path: &'static str, handler: H)
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("standard method");
        let mr = on(filter, handler);
        match self.by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => {
                let prev = std::mem::take(existing);
                *existing = prev.merge(mr);
            }
            None => self.by_path.push((path, mr)),
        }
        self.list.push((method, path));
    }
}

/// Every route the agent serves.
pub fn routes() -> ApiRoutes {
    use Method as M;
    let mut t = ApiRoutes::new();
    t.add(M::GET, "/v1/openapi.json", misc::openapi);
    t.add(M::GET, "/v1/regions", misc::regions);
    t.add(M::GET, "/v1/proxy", proxy::ports);
    t.add(M::GET, "/v1/metrics", proxy::metrics);
    t.add(M::POST, "/v1/apps", apps::create);
    t.add(M::GET, "/v1/apps", apps::list);
    t.add(M::GET, "/v1/apps/{app}", apps::get);
    t.add(M::DELETE, "/v1/apps/{app}", apps::delete);
    t.add(M::GET, "/v1/apps/{app}/events", tokens::app_events);
    t.add(M::GET, "/v1/apps/{app}/logs", misc::logs);
    t.add(M::GET, "/v1/apps/{app}/certificates", certs::list);
    t.add(M::POST, "/v1/apps/{app}/certificates", certs::add);
    t.add(M::GET, "/v1/apps/{app}/certificates/{hostname}", certs::get);
    t.add(
        M::DELETE,
        "/v1/apps/{app}/certificates/{hostname}",
        certs::remove,
    );
    t.add(M::GET, "/v1/apps/{app}/volumes", volumes::list);
    t.add(M::POST, "/v1/apps/{app}/volumes", volumes::create);
    t.add(M::GET, "/v1/apps/{app}/volumes/{id}", volumes::get);
    t.add(M::POST, "/v1/apps/{app}/volumes/{id}", volumes::update);
    t.add(M::DELETE, "/v1/apps/{app}/volumes/{id}", volumes::destroy);
    t.add(
        M::PUT,
        "/v1/apps/{app}/volumes/{id}/extend",
        volumes::extend,
    );
    t.add(
        M::GET,
        "/v1/apps/{app}/volumes/{id}/snapshots",
        volumes::snapshots,
    );
    t.add(
        M::POST,
        "/v1/apps/{app}/volumes/{id}/snapshots",
        volumes::snapshot,
    );
    t.add(M::GET, "/v1/apps/{app}/releases", releases::list);
    t.add(M::POST, "/v1/apps/{app}/releases", releases::create);
    t.add(
        M::POST,
        "/v1/apps/{app}/releases/rollback",
        releases::rollback,
    );
    t.add(M::GET, "/v1/apps/{app}/releases/{version}", releases::get);
    t.add(
        M::GET,
        "/v1/apps/{app}/releases/{version}/events",
        releases::events,
    );
    t.add(M::PUT, "/v1/apps/{app}/images/{hex}", images::put);
    t.add(M::GET, "/v1/apps/{app}/images/{hex}", images::get);
    t.add(M::HEAD, "/v1/apps/{app}/blobs/{digest}", oci::head_blob);
    t.add(M::PATCH, "/v1/apps/{app}/blobs/{digest}", oci::patch_blob);
    t.add(M::PUT, "/v1/apps/{app}/blobs/{digest}", oci::put_blob);
    t.add(
        M::GET,
        "/v1/apps/{app}/blobs/{digest}/upload",
        oci::upload_offset,
    );
    t.add(
        M::PUT,
        "/v1/apps/{app}/manifests/{digest}",
        oci::put_manifest,
    );
    t.add(M::GET, "/v1/apps/{app}/oci-images", oci::list);
    t.add(M::GET, "/v1/apps/{app}/oci-images/{digest}", oci::show);
    t.add(M::GET, "/v1/images/stats", oci::stats);
    t.add(M::POST, "/v1/images/gc", oci::gc);
    t.add(M::GET, "/v1/apps/{app}/ips", network::list_ips);
    t.add(M::POST, "/v1/apps/{app}/ips", network::allocate_ip);
    t.add(
        M::DELETE,
        "/v1/apps/{app}/ips/{address}",
        network::release_ip,
    );
    t.add(M::GET, "/v1/apps/{app}/dns", network::dns);
    t.add(M::GET, "/v1/apps/{app}/process_groups", groups::list);
    t.add(M::POST, "/v1/apps/{app}/scale", groups::scale);
    t.add(M::POST, "/v1/apps/{app}/scale/guest", groups::scale_guest);
    t.add(
        M::PUT,
        "/v1/apps/{app}/process_groups/{group}/count",
        groups::set_count,
    );
    t.add(M::GET, "/v1/apps/{app}/machines", machines::list);
    t.add(M::POST, "/v1/apps/{app}/machines", machines::create);
    t.add(M::GET, "/v1/apps/{app}/machines/{id}", machines::get);
    t.add(M::POST, "/v1/apps/{app}/machines/{id}", machines::update);
    t.add(M::DELETE, "/v1/apps/{app}/machines/{id}", machines::delete);
    t.add(
        M::POST,
        "/v1/apps/{app}/machines/{id}/start",
        machines::start,
    );
    t.add(M::POST, "/v1/apps/{app}/machines/{id}/stop", machines::stop);
    t.add(
        M::POST,
        "/v1/apps/{app}/machines/{id}/restart",
        machines::restart,
    );
    t.add(
        M::POST,
        "/v1/apps/{app}/machines/{id}/signal",
        machines::signal,
    );
    t.add(M::GET, "/v1/apps/{app}/machines/{id}/wait", machines::wait);
    t.add(
        M::POST,
        "/v1/apps/{app}/machines/{id}/cordon",
        machines::cordon,
    );
    t.add(
        M::POST,
        "/v1/apps/{app}/machines/{id}/uncordon",
        machines::uncordon,
    );
    t.add(
        M::GET,
        "/v1/apps/{app}/machines/{id}/events",
        machines::events,
    );
    t.add(
        M::GET,
        "/v1/apps/{app}/machines/{id}/versions",
        machines::versions,
    );
    t.add(
        M::GET,
        "/v1/apps/{app}/machines/{id}/metadata",
        machines::metadata,
    );
    t.add(
        M::GET,
        "/v1/apps/{app}/machines/{id}/metadata/{key}",
        machines::metadata_get,
    );
    t.add(
        M::POST,
        "/v1/apps/{app}/machines/{id}/metadata/{key}",
        machines::metadata_set,
    );
    t.add(
        M::DELETE,
        "/v1/apps/{app}/machines/{id}/metadata/{key}",
        machines::metadata_delete,
    );
    t.add(
        M::POST,
        "/v1/apps/{app}/machines/{id}/lease",
        leases::acquire,
    );
    t.add(M::GET, "/v1/apps/{app}/machines/{id}/lease", leases::get);
    t.add(
        M::DELETE,
        "/v1/apps/{app}/machines/{id}/lease",
        leases::release,
    );
    t.add(M::POST, "/v1/tokens", tokens::create);
    t.add(M::GET, "/v1/tokens", tokens::list);
    t.add(M::DELETE, "/v1/tokens/{id}", tokens::revoke);
    t.add(M::GET, "/v1/apps/{app}/secrets", secrets::list);
    t.add(M::POST, "/v1/apps/{app}/secrets", secrets::update);
    t.add(M::POST, "/v1/apps/{app}/secrets/deploy", secrets::deploy);
    t.add(M::POST, "/v1/apps/{app}/machines/{id}/exec", exec::exec);
    t.add(M::GET, "/v1/apps/{app}/machines/{id}/ps", exec::ps);
    t.add(
        M::GET,
        "/v1/apps/{app}/machines/{id}/console",
        console::console,
    );
    t.add(M::GET, "/v1/apps/{app}/machines/{id}/files", files::get);
    t.add(M::PUT, "/v1/apps/{app}/machines/{id}/files", files::put);
    t
}

/// The full router: routes + JSON fallbacks + auth + `fly-request-id`. Authentication runs on
/// every request, authorization (`scope`) on matched routes.
pub fn router(state: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    for (path, mr) in routes().by_path {
        r = r.route(path, mr);
    }
    r.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authorize,
    ))
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        request_id,
    ))
    .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> HttpError {
    HttpError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn request_id(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&crate::ids::request_id(&st.region)) {
        resp.headers_mut().insert("fly-request-id", v);
    }
    resp
}
