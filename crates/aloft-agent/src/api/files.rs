//! `GET`/`PUT …/machines/{id}/files?path=P` (`aloft machine cp`): a tar of a path in the
//! machine, or a tar unpacked there (`aloft_api::copy`); streamed both ways.

use aloft_api::copy::CopiedIn;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};

use super::error::{HttpError, HttpResult};
use super::extract::{Params, P};
use super::AppState;

fn path_of(q: &Params) -> HttpResult<String> {
    if let Some((k, _)) = q.0.iter().find(|(k, _)| k != "path") {
        return Err(HttpError::bad_request(format!(
            "unknown query parameter {k:?}: a copy takes only path"
        )));
    }
    q.get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| HttpError::bad_request("give the path in the machine: ?path=/some/file"))
}

pub async fn get(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    q: Params,
) -> HttpResult<Response> {
    st.ctl.check_machine(&app, &id).await?;
    let path = path_of(&q)?;
    let rx = st.ctl.copy_out(&app, &id, path).await?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

pub async fn put(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    q: Params,
    req: Request,
) -> HttpResult<Json<CopiedIn>> {
    st.ctl.check_machine(&app, &id).await?;
    let path = path_of(&q)?;
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(|e| e.to_string())
        .boxed();
    let bytes = st.ctl.copy_in(&app, &id, path, body).await?;
    Ok(Json(CopiedIn { bytes }))
}
