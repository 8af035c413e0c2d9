//! `GET /v1/regions` and `GET /v1/apps/{app}/logs` (Aloft extensions).

use std::convert::Infallible;

use aloft_runtime::{LogLine, LogQuery};
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;

use super::error::{HttpError, HttpResult};
use super::extract::{Params, P};
use super::AppState;
use crate::controller::actions::ReadLogs;

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
pub async fn logs(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
) -> HttpResult<Response> {
    st.ctl.get_app(&app).await?;
    let limit = q
        .uint("limit", false)?
        .map(|l| l as usize)
        .unwrap_or(DEFAULT_LOG_LINES);
    if limit > MAX_LOG_LINES {
        return Err(HttpError::bad_request(format!(
            "limit must be at most {MAX_LOG_LINES}"
        )));
    }
    let nonempty = |key: &str| q.get(key).filter(|s| !s.is_empty()).map(str::to_string);
    let action = ReadLogs {
        query: LogQuery {
            app: None,
            group: nonempty("group"),
            machine_id: nonempty("machine").or_else(|| nonempty("instance")),
            region: nonempty("region"),
            limit: Some(limit),
        },
        follow: q.bool("follow", false)?,
    };
    let logs = st.ctl.logs(&app, action).await?;
    let mut text = String::new();
    for line in &logs.backlog {
        text.push_str(&ndjson_line(line));
    }
    let body = match logs.live {
        None => Body::from(text),
        Some(live) => {
            let first = futures_util::stream::once(async move { Ok::<_, Infallible>(text) });
            let rest = live.map(|line| Ok::<_, Infallible>(ndjson_line(&line)));
            Body::from_stream(first.chain(rest))
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn ndjson_line(line: &LogLine) -> String {
    let mut s = serde_json::to_string(line).unwrap_or_default();
    s.push('\n');
    s
}
