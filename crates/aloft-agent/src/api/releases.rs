//! `/v1/apps/{app}/releases…`: deploys carried out by the agent (paths in
//! `aloft_api::routes`, bodies in `aloft_deploy::messages`).

use std::convert::Infallible;

use aloft_deploy::messages::ReleaseEventRecord;
use aloft_deploy::DeployEvent;
use axum::body::Body as HttpBody;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::error::{HttpError, HttpResult};
use super::extract::{Body, Params, P};
use super::AppState;
use crate::deploy::actions::{DeployAction, DeployOutcome};
use crate::deploy::ReleaseKey;

pub async fn list(State(st): State<AppState>, P(app): P<String>) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.deploy.releases(&app).await?))
}

/// The `{version}` of a path, once the app is known to exist (so an unknown app is a 404).
async fn version_of(st: &AppState, app: &str, version: &str) -> HttpResult<u64> {
    st.ctl.get_app(app).await?;
    version.trim_start_matches('v').parse().map_err(|_| {
        HttpError::bad_request(format!(
            "release version {version:?} must be a positive integer"
        ))
    })
}

pub async fn get(
    State(st): State<AppState>,
    P((app, version)): P<(String, String)>,
) -> HttpResult<impl IntoResponse> {
    let version = version_of(&st, &app, &version).await?;
    Ok(Json(st.deploy.release(&app, version).await?))
}

/// `201 Release`; `?dry_run=true` → `200 DeployPlan`; `409 confirmation_required` with the
/// machines to destroy.
pub async fn create(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
    request: Request,
) -> HttpResult<DeployOutcome> {
    release_action(st, app, q, request, |app, request, dry_run, by| {
        DeployAction::CreateRelease {
            app,
            request: Box::new(request),
            dry_run,
            by,
        }
    })
    .await
}

/// `201 Release` of the rollback; `?dry_run=true` → `200 DeployPlan`; `409
/// confirmation_required` with the surplus machines to destroy.
pub async fn rollback(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
    request: Request,
) -> HttpResult<DeployOutcome> {
    release_action(st, app, q, request, |app, request, dry_run, by| {
        DeployAction::Rollback {
            app,
            request,
            dry_run,
            by,
        }
    })
    .await
}

/// A request that makes a release: `?dry_run`, the app checked before the body (an unknown app
/// is a 404 whatever the body), the body `B` parsed, the asking token's name kept.
async fn release_action<B: serde::de::DeserializeOwned + Send>(
    st: AppState,
    app: String,
    q: Params,
    request: Request,
    action: impl FnOnce(String, B, bool, Option<String>) -> DeployAction,
) -> HttpResult<DeployOutcome> {
    let dry_run = q.bool("dry_run", false)?;
    st.ctl.get_app(&app).await?;
    let by = caller_name(&request);
    let Body(body) = Body::<B>::from_request(request, &()).await?;
    Ok(st.deploy.execute(action(app, body, dry_run, by)).await?)
}

/// The name of the token the request came with (`api::auth` put it there).
fn caller_name(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<crate::tokens::Caller>()
        .map(|c| c.name.clone())
}

fn lines(records: &[ReleaseEventRecord]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn has_finished(records: &[ReleaseEventRecord]) -> bool {
    records
        .iter()
        .any(|r| matches!(r.event, DeployEvent::Finished { .. }))
}

/// NDJSON of the release's events with `seq > after`. With `follow=true` the stream stays open
/// until the `finished` event has been sent (or the release is finished without one).
pub async fn events(
    State(st): State<AppState>,
    P((app, version)): P<(String, String)>,
    q: Params,
) -> HttpResult<Response> {
    let version = version_of(&st, &app, &version).await?;
    let after = q.uint("after", false)?.unwrap_or(0);
    let follow = q.bool("follow", false)?;
    // Subscribe before the first read so no event falls between the two.
    let notices = st.deploy.subscribe();
    st.deploy.release(&app, version).await?;
    let first = st.deploy.events(&app, version, after).await?;
    if !follow {
        return Ok(ndjson(HttpBody::from(lines(&first))));
    }
    let key = ReleaseKey { app, version };
    let last = first.last().map_or(after, |r| r.seq);
    let done = has_finished(&first);
    let head = futures_util::stream::once({
        let text = lines(&first);
        async move { Ok::<_, Infallible>(text) }
    });
    let tail = futures_util::stream::unfold(
        (st, key, notices, last, done),
        |(st, key, mut notices, last, done)| async move {
            if done {
                return None;
            }
            loop {
                // Wait for news of this release, then read everything new from the store.
                let mut news = false;
                match notices.recv().await {
                    Ok(k) => news |= k == key,
                    Err(RecvError::Lagged(_)) => news = true,
                    Err(RecvError::Closed) => return None,
                }
                loop {
                    match notices.try_recv() {
                        Ok(k) => news |= k == key,
                        Err(TryRecvError::Lagged(_)) => news = true,
                        Err(_) => break,
                    }
                }
                if !news {
                    continue;
                }
                let records = match st.deploy.events(&key.app, key.version, last).await {
                    Ok(r) => r,
                    Err(_) => return None,
                };
                if records.is_empty() {
                    continue;
                }
                let last = records.last().map_or(last, |r| r.seq);
                let done = has_finished(&records);
                let text = lines(&records);
                return Some((Ok::<_, Infallible>(text), (st, key, notices, last, done)));
            }
        },
    );
    Ok(ndjson(HttpBody::from_stream(
        futures_util::StreamExt::chain(head, tail),
    )))
}

fn ndjson(body: HttpBody) -> Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
