//! `GET /v1/regions` and `GET /v1/apps/{app}/logs` (Aloft extensions).

use std::convert::Infallible;

use aloft_runtime::LogQuery;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::broadcast::error::RecvError;

use super::extract::{Params, P};
use super::AppState;
use crate::error::{ApiError, ApiResult};

/// Most lines a single logs request returns before following.
const MAX_LOG_LINES: usize = 10_000;
const DEFAULT_LOG_LINES: usize = 100;

/// The OpenAPI description of this API (`crates/aloft-agent/openapi.json`, embedded): what a
/// client generator or schemathesis reads.
pub async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}

pub async fn regions(State(st): State<AppState>) -> impl IntoResponse {
    Json(st.ctl.regions().list())
}

/// NDJSON `LogLine`s, oldest first; with `follow=true` the response stays open and new lines
/// are streamed as they are captured.
pub async fn logs(State(st): State<AppState>, P(app): P<String>, q: Params) -> ApiResult<Response> {
    st.ctl.get_app(&app).await?;
    let limit = q
        .uint("limit", false)?
        .map(|l| l as usize)
        .unwrap_or(DEFAULT_LOG_LINES);
    if limit > MAX_LOG_LINES {
        return Err(ApiError::bad_request(format!(
            "limit must be at most {MAX_LOG_LINES}"
        )));
    }
    let follow = q.bool("follow", false)?;
    let query = LogQuery {
        app: Some(app),
        group: q.get("group").filter(|s| !s.is_empty()).map(str::to_string),
        machine_id: q
            .get("machine")
            .or(q.get("instance"))
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        region: q
            .get("region")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        limit: Some(limit),
    };
    let sup = st.ctl.supervisor().clone();
    // Subscribe before reading the backlog so no line falls between the two.
    let rx = follow.then(|| sup.log_subscribe());
    let q2 = query.clone();
    let backlog = tokio::task::spawn_blocking(move || sup.log_query(&q2))
        .await
        .map_err(|e| ApiError::internal(format!("reading logs failed: {e}")))?;
    let last_ts = backlog.last().map(|l| l.timestamp.clone());
    let mut text = String::new();
    for line in &backlog {
        text.push_str(&serde_json::to_string(line).unwrap_or_default());
        text.push('\n');
    }
    let body = match rx {
        None => Body::from(text),
        Some(rx) => {
            let first = futures_util::stream::once(async move { Ok::<_, Infallible>(text) });
            let rest = futures_util::stream::unfold(
                (rx, query, last_ts),
                |(mut rx, query, last_ts)| async move {
                    loop {
                        match rx.recv().await {
                            Ok(line)
                                if query.matches(&line)
                                    && last_ts
                                        .as_deref()
                                        .is_none_or(|t| line.timestamp.as_str() > t) =>
                            {
                                let mut s = serde_json::to_string(&line).unwrap_or_default();
                                s.push('\n');
                                return Some((Ok::<_, Infallible>(s), (rx, query, None)));
                            }
                            Ok(_) | Err(RecvError::Lagged(_)) => continue,
                            Err(RecvError::Closed) => return None,
                        }
                    }
                },
            );
            Body::from_stream(futures_util::StreamExt::chain(first, rest))
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
