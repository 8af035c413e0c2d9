//! The client itself: one method per route; error answers become [`StatusError`].
//!
//! Base URL and token: `ALOFT_API_URL` / `ALOFT_API_TOKEN`, else the local agent's
//! ([`crate::local::local_defaults`]: `<data-dir>/agent.addr` and `<data-dir>/token`). Errors say
//! what failed, on which URL, and what to do (e.g. start the agent).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::groups::{ScaleCountRequest, ScaleGuestRequest};
use aloft_api::images::ImageInfo;
use aloft_api::network::{AllocateIpRequest, DnsAnswer, IpAddress, IpKind};
use aloft_api::routes;
use aloft_api::tokens::{AppEvent, CreateTokenRequest, CreatedToken, TokenInfo};
use aloft_api::volumes::{
    CreateVolumeRequest, ExtendVolumeRequest, ExtendVolumeResponse, UpdateVolumeRequest, Volume,
    VolumeSnapshot,
};
use aloft_api::{
    App, CreateAppRequest, CreateMachineRequest, ErrorResponse, ListAppsResponse, LogLine, Machine,
    MachineState, ProxyPort, StopRequest,
};
use aloft_deploy::messages::{
    CreateReleaseRequest, ReleaseEventRecord, RollbackRequest, ScalePreview,
};
use aloft_deploy::Release;
use anyhow::{anyhow, Context};
use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The agent answered with an error status (not 2xx); kept with the status so callers can react
/// to 404/409.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status} from {method} {url})")]
pub struct StatusError {
    pub status: StatusCode,
    pub method: Method,
    pub url: String,
    pub message: String,
    /// The `status` field of the error body (`name_taken`, `confirmation_required`…).
    pub code: Option<String>,
    /// The raw body, for errors that carry more (e.g. the machines a deploy would destroy).
    pub body: String,
}

/// Returns the [`StatusError`] inside an anyhow error, if that is what it is.
pub fn status_error(err: &anyhow::Error) -> Option<&StatusError> {
    err.downcast_ref::<StatusError>()
}

/// Whether `err` is an API 404.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    status_error(err).is_some_and(|e| e.status == StatusCode::NOT_FOUND)
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// What the transport keeps alive for this client (an SSH tunnel): dropped with the last
    /// clone.
    _keep_alive: Option<Arc<dyn Any + Send + Sync>>,
}

impl Client {
    pub fn new(base: impl Into<String>, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client builds");
        Client::with_transport(http, base, token, None)
    }

    /// A client over `http` (e.g. one that connects through a unix socket) that keeps
    /// `keep_alive` (the transport's guard) until its last clone is dropped.
    pub(crate) fn with_transport(
        http: reqwest::Client,
        base: impl Into<String>,
        token: Option<String>,
        keep_alive: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Client {
        Client {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            token,
            _keep_alive: keep_alive,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t.trim());
        }
        rb
    }

    /// Sends a request; non-2xx answers become [`StatusError`], transport errors say how to fix them.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        rb: RequestBuilder,
    ) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.base);
        let resp = rb.send().await.map_err(|e| {
            if let Some(tls) = crate::tls::handshake_failure(&e, &self.base) {
                tls
            } else if e.is_connect() {
                anyhow!(
                    "cannot reach the aloft agent at {}: {e}. Start one with `aloft agent` (or use `aloft up`), \
                     or point ALOFT_API_URL at yours",
                    self.base
                )
            } else {
                anyhow!("{method} {url} failed: {e}")
            }
        })?;
        // 101: an upgrade (a console's WebSocket) the caller takes over.
        if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let parsed: Option<ErrorResponse> = serde_json::from_str(&body).ok();
        let message = match &parsed {
            Some(e) => e.error.clone(),
            None if body.trim().is_empty() => {
                status.canonical_reason().unwrap_or("error").to_string()
            }
            None => body.trim().to_string(),
        };
        Err(StatusError {
            status,
            method,
            url,
            message,
            code: parsed.and_then(|e| e.status),
            body,
        }
        .into())
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let mut rb = self.request(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = self.send(method.clone(), path, rb).await?;
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {method} {path}"))?;
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer to {method} {path}: {text}"))
    }

    async fn no_content(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<()> {
        let mut rb = self.request(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send(method, path, rb).await.map(drop)
    }

    // ---- apps

    /// Where the agent's proxy listens for each service port (`GET /v1/proxy`).
    pub async fn proxy_ports(&self) -> anyhow::Result<Vec<ProxyPort>> {
        self.json(Method::GET, &routes::proxy(), None::<&()>).await
    }

    /// The regions the agent hosts (`GET /v1/regions`).
    pub async fn regions(&self) -> anyhow::Result<Vec<aloft_api::regions::RegionInfo>> {
        self.json(Method::GET, &routes::regions(), None::<&()>)
            .await
    }

    pub async fn list_apps(&self) -> anyhow::Result<Vec<App>> {
        let r: ListAppsResponse = self
            .json(
                Method::GET,
                &format!("{}?org_slug=personal", routes::apps()),
                None::<&()>,
            )
            .await?;
        Ok(r.apps)
    }

    pub async fn get_app(&self, app: &str) -> anyhow::Result<App> {
        self.json(Method::GET, &routes::app(app), None::<&()>).await
    }

    pub async fn create_app(&self, app: &str, org: &str) -> anyhow::Result<App> {
        let req = CreateAppRequest {
            app_name: Some(app.to_string()),
            org_slug: Some(org.to_string()),
            ..Default::default()
        };
        self.json(Method::POST, &routes::apps(), Some(&req)).await
    }

    pub async fn delete_app(&self, app: &str) -> anyhow::Result<()> {
        self.no_content(
            Method::DELETE,
            &format!("{}?force=true", routes::app(app)),
            None::<&()>,
        )
        .await
    }

    // ---- the private network

    /// The app's IP addresses (`GET /v1/apps/{app}/ips`).
    pub async fn list_ips(&self, app: &str) -> anyhow::Result<Vec<IpAddress>> {
        self.json(Method::GET, &routes::ips(app), None::<&()>).await
    }

    /// Gives the app an address of this kind (`POST /v1/apps/{app}/ips`).
    pub async fn allocate_ip(
        &self,
        app: &str,
        kind: IpKind,
        region: Option<String>,
    ) -> anyhow::Result<IpAddress> {
        let req = AllocateIpRequest { kind, region };
        self.json(Method::POST, &routes::ips(app), Some(&req)).await
    }

    /// Takes an address from the app (`DELETE /v1/apps/{app}/ips/{address}`).
    pub async fn release_ip(&self, app: &str, address: &str) -> anyhow::Result<IpAddress> {
        self.json(Method::DELETE, &routes::ip(app, address), None::<&()>)
            .await
    }

    /// What a machine of the app would get for `name` (`GET /v1/apps/{app}/dns`).
    pub async fn dig(&self, app: &str, name: &str, rtype: &str) -> anyhow::Result<DnsAnswer> {
        let path = format!(
            "{}?name={}&type={}",
            routes::dns(app),
            urlencode(name),
            urlencode(rtype)
        );
        self.json(Method::GET, &path, None::<&()>).await
    }

    // ---- certificates (custom hostnames)

    /// The app's hostnames and their certificates (`GET …/certificates`).
    pub async fn list_certificates(
        &self,
        app: &str,
    ) -> anyhow::Result<Vec<aloft_api::certs::Certificate>> {
        self.json(Method::GET, &routes::certificates(app), None::<&()>)
            .await
    }

    /// Adds a hostname to the app, or replaces its certificate (`POST …/certificates`).
    pub async fn add_certificate(
        &self,
        app: &str,
        req: &aloft_api::certs::AddCertificate,
    ) -> anyhow::Result<aloft_api::certs::Certificate> {
        self.json(Method::POST, &routes::certificates(app), Some(req))
            .await
    }

    /// One hostname of the app (`GET …/certificates/{hostname}`).
    pub async fn get_certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> anyhow::Result<aloft_api::certs::Certificate> {
        self.json(
            Method::GET,
            &routes::certificate(app, hostname),
            None::<&()>,
        )
        .await
    }

    /// Removes a hostname from the app (`DELETE …/certificates/{hostname}`).
    pub async fn remove_certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> anyhow::Result<aloft_api::certs::Certificate> {
        self.json(
            Method::DELETE,
            &routes::certificate(app, hostname),
            None::<&()>,
        )
        .await
    }

    // ---- machines

    pub async fn list_machines(&self, app: &str) -> anyhow::Result<Vec<Machine>> {
        self.json(Method::GET, &routes::machines(app), None::<&()>)
            .await
    }

    pub async fn get_machine(&self, app: &str, id: &str) -> anyhow::Result<Machine> {
        self.json(Method::GET, &routes::machine(app, id), None::<&()>)
            .await
    }

    pub async fn create_machine(
        &self,
        app: &str,
        req: &CreateMachineRequest,
    ) -> anyhow::Result<Machine> {
        self.json(Method::POST, &routes::machines(app), Some(req))
            .await
    }

    pub async fn destroy_machine(&self, app: &str, id: &str, force: bool) -> anyhow::Result<()> {
        let q = if force { "?force=true" } else { "" };
        self.no_content(
            Method::DELETE,
            &format!("{}{q}", routes::machine(app, id)),
            None::<&()>,
        )
        .await
    }

    pub async fn start_machine(&self, app: &str, id: &str) -> anyhow::Result<()> {
        self.no_content(Method::POST, &routes::machine_start(app, id), None::<&()>)
            .await
    }

    pub async fn stop_machine(&self, app: &str, id: &str, req: &StopRequest) -> anyhow::Result<()> {
        self.no_content(Method::POST, &routes::machine_stop(app, id), Some(req))
            .await
    }

    pub async fn set_metadata(
        &self,
        app: &str,
        id: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({ "value": value });
        self.no_content(
            Method::POST,
            &routes::machine_metadata(app, id, key),
            Some(&body),
        )
        .await
    }

    /// Waits until the machine is started and every one of its checks passes (a machine
    /// without checks: once started). Fails when it stops or the checks still fail at `timeout`,
    /// naming the checks.
    pub async fn wait_healthy(&self, app: &str, id: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.wait_machine(app, id, MachineState::Started, timeout)
            .await?;
        loop {
            let m = self.get_machine(app, id).await?;
            if m.state != MachineState::Started {
                return Err(anyhow!("machine {id} is {} instead of started", m.state));
            }
            if m.checks.iter().all(|c| c.status == "passing") {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let failing: Vec<String> = m
                    .checks
                    .iter()
                    .filter(|c| c.status != "passing")
                    .map(|c| format!("{} is {}", c.name, c.status))
                    .collect();
                return Err(anyhow!(
                    "machine {id} is not healthy after {}s: {}",
                    timeout.as_secs(),
                    failing.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to `timeout`, in 60 s API calls) for the machine to reach `state`.
    pub async fn wait_machine(
        &self,
        app: &str,
        id: &str,
        state: MachineState,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
                .clamp(1, 60);
            let path = format!(
                "{}?state={state}&timeout={left}",
                routes::machine_wait(app, id)
            );
            match self.no_content(Method::GET, &path, None::<&()>).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if status_error(&e)
                        .is_some_and(|a| a.status == StatusCode::REQUEST_TIMEOUT)
                        && tokio::time::Instant::now() < deadline => {}
                Err(e) => return Err(e.context(format!("waiting for machine {id} to be {state}"))),
            }
        }
    }

    // ---- releases, images, group counts, logs (Aloft routes)

    pub async fn list_releases(&self, app: &str) -> anyhow::Result<Vec<Release>> {
        self.json(Method::GET, &routes::releases(app), None::<&()>)
            .await
    }

    /// The newest release whose status is `complete`, if any.
    pub async fn current_release(&self, app: &str) -> anyhow::Result<Option<Release>> {
        let releases = match self.list_releases(app).await {
            Ok(r) => r,
            Err(e)
                if is_not_found(&e)
                    && status_error(&e)
                        .is_some_and(|a| a.message.starts_with("no such endpoint")) =>
            {
                return Err(e.context("this agent does not serve releases yet"))
            }
            Err(e) => return Err(e),
        };
        Ok(releases
            .into_iter()
            .filter(|r| r.status == aloft_deploy::ReleaseStatus::Complete && r.is_deploy())
            .max_by_key(|r| r.version))
    }

    /// `scale count` by the agent: the plan (`dry_run`, or nothing to change) or the operation
    /// it started.
    pub async fn scale(&self, app: &str, req: &ScaleCountRequest) -> anyhow::Result<ScaleAnswer> {
        self.post_scale(&routes::scale(app), req).await
    }

    /// `scale vm|memory` by the agent: the plan (`dry_run`, or no machine to change) or the
    /// operation it started.
    pub async fn scale_guest(
        &self,
        app: &str,
        req: &ScaleGuestRequest,
    ) -> anyhow::Result<ScaleAnswer<aloft_deploy::scale::GuestPlan>> {
        self.post_scale(&routes::scale_guest(app), req).await
    }

    async fn post_scale<P: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &impl serde::Serialize,
    ) -> anyhow::Result<ScaleAnswer<P>> {
        let path = path.to_string();
        let rb = self.request(Method::POST, &path).json(req);
        let resp = self.send(Method::POST, &path, rb).await?;
        let created = resp.status() == reqwest::StatusCode::CREATED;
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of POST {path}"))?;
        let unexpected = || format!("unexpected answer to POST {path}: {text}");
        Ok(if created {
            ScaleAnswer::Started(Box::new(
                serde_json::from_str(&text).with_context(unexpected)?,
            ))
        } else {
            ScaleAnswer::Plan(serde_json::from_str(&text).with_context(unexpected)?)
        })
    }

    /// The agent's plan of a release (`dry_run`): nothing is recorded or changed.
    pub async fn plan_release(
        &self,
        app: &str,
        req: &CreateReleaseRequest,
    ) -> anyhow::Result<aloft_deploy::plan::DeployPlan> {
        let path = format!("{}?dry_run=true", routes::releases(app));
        self.json(Method::POST, &path, Some(req)).await
    }

    pub async fn create_release(
        &self,
        app: &str,
        req: &CreateReleaseRequest,
    ) -> anyhow::Result<Release> {
        self.json(Method::POST, &routes::releases(app), Some(req))
            .await
    }

    /// The agent's plan of a rollback (`dry_run`): nothing is recorded or changed.
    pub async fn plan_rollback(
        &self,
        app: &str,
        req: &RollbackRequest,
    ) -> anyhow::Result<aloft_deploy::plan::DeployPlan> {
        let path = format!("{}?dry_run=true", routes::release_rollback(app));
        self.json(Method::POST, &path, Some(req)).await
    }

    /// Rolls the app back to an earlier release (a new release).
    pub async fn rollback(&self, app: &str, req: &RollbackRequest) -> anyhow::Result<Release> {
        self.json(Method::POST, &routes::release_rollback(app), Some(req))
            .await
    }

    /// Streams the events of a release (NDJSON) to `on_event` until the stream ends.
    pub async fn follow_release(
        &self,
        app: &str,
        version: u64,
        after: u64,
        mut on_event: impl FnMut(ReleaseEventRecord),
    ) -> anyhow::Result<()> {
        let path = format!(
            "{}?follow=true&after={after}",
            routes::release_events(app, version)
        );
        let resp = self
            .send(Method::GET, &path, self.request(Method::GET, &path))
            .await?;
        ndjson(resp, |line| {
            let rec: ReleaseEventRecord = serde_json::from_str(line)
                .with_context(|| format!("unexpected release event: {line}"))?;
            on_event(rec);
            Ok(true)
        })
        .await
    }

    pub async fn image_exists(&self, app: &str, hex: &str) -> anyhow::Result<bool> {
        let path = routes::image(app, hex);
        match self
            .send(Method::HEAD, &path, self.request(Method::HEAD, &path))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn upload_image(
        &self,
        app: &str,
        hex: &str,
        tar: Vec<u8>,
    ) -> anyhow::Result<ImageInfo> {
        let path = routes::image(app, hex);
        let rb = self
            .request(Method::PUT, &path)
            .header("content-type", "application/x-tar")
            .body(tar);
        let resp = self.send(Method::PUT, &path, rb).await?;
        let text = resp.text().await?;
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer to PUT {path}: {text}"))
    }

    /// Streams log lines; `follow` keeps the stream open. `on_line` returns false to stop.
    pub async fn logs(
        &self,
        app: &str,
        query: &[(&str, String)],
        mut on_line: impl FnMut(LogLine) -> bool,
    ) -> anyhow::Result<()> {
        let mut path = routes::logs(app);
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        if !qs.is_empty() {
            path = format!("{path}?{}", qs.join("&"));
        }
        let resp = self
            .send(Method::GET, &path, self.request(Method::GET, &path))
            .await?;
        ndjson(resp, |line| match serde_json::from_str::<LogLine>(line) {
            Ok(l) => Ok(on_line(l)),
            Err(_) => Ok(true),
        })
        .await
    }

    // ---- API tokens and app events

    /// Creates a token (`POST /v1/tokens`, org tokens only); the answer is the only place its
    /// text appears.
    pub async fn create_token(&self, req: &CreateTokenRequest) -> anyhow::Result<CreatedToken> {
        self.json(Method::POST, &routes::tokens(), Some(req)).await
    }

    /// Every token, secrets never included (`GET /v1/tokens`).
    pub async fn list_tokens(&self) -> anyhow::Result<Vec<TokenInfo>> {
        self.json(Method::GET, &routes::tokens(), None::<&()>).await
    }

    /// Revokes a token (`DELETE /v1/tokens/{id}`).
    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<TokenInfo> {
        self.json(Method::DELETE, &routes::token(&urlencode(id)), None::<&()>)
            .await
    }

    /// The app's newest `limit` events, newest first (`GET /v1/apps/{app}/events`).
    pub async fn app_events(&self, app: &str, limit: Option<u64>) -> anyhow::Result<Vec<AppEvent>> {
        let mut path = routes::app_events(app);
        if let Some(limit) = limit {
            path = format!("{path}?limit={limit}");
        }
        self.json(Method::GET, &path, None::<&()>).await
    }

    // ---- secrets

    /// The app's secrets: names, digests, status, dates (`GET /v1/apps/{app}/secrets`).
    pub async fn list_secrets(
        &self,
        app: &str,
    ) -> anyhow::Result<Vec<aloft_api::secrets::AppSecret>> {
        self.json(Method::GET, &routes::secrets(app), None::<&()>)
            .await
    }

    /// Sets (a value) and unsets (`None`) secrets in one change (`POST …/secrets`); unless
    /// `req.stage`, the agent then restarts the app's started machines (the answer's `release`).
    pub async fn update_secrets(
        &self,
        app: &str,
        req: &aloft_api::secrets::UpdateSecrets,
    ) -> anyhow::Result<aloft_api::secrets::SecretsUpdated> {
        self.json(Method::POST, &routes::secrets(app), Some(req))
            .await
    }

    /// Restarts the app's started machines onto its staged secrets (`POST …/secrets/deploy`).
    pub async fn deploy_secrets(
        &self,
        app: &str,
    ) -> anyhow::Result<aloft_api::secrets::SecretsUpdated> {
        self.json(Method::POST, &routes::secrets_deploy(app), None::<&()>)
            .await
    }

    // ---- tls
    /// A client whose `https://` connections use `tls` (see [`crate::tls`]); the same timeouts
    /// as [`Client::new`]'s (the connect timeout covers the TLS handshake).
    pub(crate) fn with_tls(
        base: impl Into<String>,
        token: Option<String>,
        tls: rustls::ClientConfig,
    ) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .use_preconfigured_tls(tls)
            .build()
            .expect("reqwest client builds");
        Client {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            token,
            _keep_alive: None,
        }
    }

    // ---- volumes

    /// The app's volumes, destroyed ones left out (`GET /v1/apps/{app}/volumes`).
    pub async fn list_volumes(&self, app: &str) -> anyhow::Result<Vec<Volume>> {
        self.json(Method::GET, &routes::volumes(app), None::<&()>)
            .await
    }

    /// One volume (`GET …/volumes/{id}`).
    pub async fn get_volume(&self, app: &str, id: &str) -> anyhow::Result<Volume> {
        self.json(Method::GET, &routes::volume(app, id), None::<&()>)
            .await
    }

    /// A new volume: empty, from a snapshot (`snapshot_id`) or a fork of another volume
    /// (`source_volume_id`) (`POST …/volumes`).
    pub async fn create_volume(
        &self,
        app: &str,
        req: &CreateVolumeRequest,
    ) -> anyhow::Result<Volume> {
        self.json(Method::POST, &routes::volumes(app), Some(req))
            .await
    }

    /// Changes a volume's settings (`POST …/volumes/{id}`).
    pub async fn update_volume(
        &self,
        app: &str,
        id: &str,
        req: &UpdateVolumeRequest,
    ) -> anyhow::Result<Volume> {
        self.json(Method::POST, &routes::volume(app, id), Some(req))
            .await
    }

    /// Destroys an unattached volume and its data (`DELETE …/volumes/{id}`).
    pub async fn destroy_volume(&self, app: &str, id: &str) -> anyhow::Result<Volume> {
        self.json(Method::DELETE, &routes::volume(app, id), None::<&()>)
            .await
    }

    /// Grows a volume to `size_gb`, online (`PUT …/volumes/{id}/extend`).
    pub async fn extend_volume(
        &self,
        app: &str,
        id: &str,
        size_gb: u32,
    ) -> anyhow::Result<ExtendVolumeResponse> {
        let req = ExtendVolumeRequest { size_gb };
        self.json(Method::PUT, &routes::volume_extend(app, id), Some(&req))
            .await
    }

    /// A volume's snapshots, oldest first (`GET …/volumes/{id}/snapshots`).
    pub async fn list_volume_snapshots(
        &self,
        app: &str,
        id: &str,
    ) -> anyhow::Result<Vec<VolumeSnapshot>> {
        self.json(Method::GET, &routes::volume_snapshots(app, id), None::<&()>)
            .await
    }

    /// Takes a snapshot of a volume now (`POST …/volumes/{id}/snapshots`).
    pub async fn create_volume_snapshot(
        &self,
        app: &str,
        id: &str,
    ) -> anyhow::Result<VolumeSnapshot> {
        self.json(
            Method::POST,
            &routes::volume_snapshots(app, id),
            None::<&()>,
        )
        .await
    }

    // ---- exec and ps

    /// Runs a command in a running machine and waits for its answer (exit code, output).
    pub async fn exec_machine(
        &self,
        app: &str,
        id: &str,
        req: &aloft_api::exec::MachineExecRequest,
    ) -> anyhow::Result<aloft_api::exec::MachineExecResponse> {
        self.json(Method::POST, &routes::machine_exec(app, id), Some(req))
            .await
    }

    /// The processes of a running machine, sorted by `sort_by` (`pid`, `cpu`, `rss`…) in
    /// `order` (`asc`/`desc`); empty strings leave the agent's default.
    pub async fn machine_processes(
        &self,
        app: &str,
        id: &str,
        sort_by: &str,
        order: &str,
    ) -> anyhow::Result<Vec<aloft_api::exec::ProcessStat>> {
        let path = format!(
            "{}?sort_by={}&order={}",
            routes::machine_ps(app, id),
            urlencode(sort_by),
            urlencode(order)
        );
        self.json(Method::GET, &path, None::<&()>).await
    }
}

/// Reads an NDJSON body line by line; `f` returns false to stop early.
async fn ndjson(
    resp: Response,
    mut f: impl FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.context("the stream broke")?);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim();
            if !line.is_empty() && !f(line)? {
                return Ok(());
            }
        }
    }
    let rest = String::from_utf8_lossy(&buf);
    if !rest.trim().is_empty() {
        f(rest.trim())?;
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a future on a fresh current-thread runtime (commands are synchronous at the top).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
        .block_on(f)
}

/// What `POST …/scale` (or `…/scale/guest`, with its plan `P`) answered.
pub enum ScaleAnswer<P = ScalePreview> {
    /// The plan: a dry run, or nothing to change (the counts are recorded then).
    Plan(P),
    /// The operation the agent runs now; follow it as a release.
    Started(Box<Release>),
}
