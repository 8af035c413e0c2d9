//! `POST …/machines/{id}/exec` and `GET …/machines/{id}/ps`: parse and check the request, ask
//! the controller, answer JSON. Limits and conventions (timeout, output cap, exit codes of a
//! command that cannot start or times out) are `aloft_api::exec`'s.

use std::time::Duration;

use aloft_api::exec::{
    MachineExecRequest, MachineExecResponse, ProcessSort, ProcessStat, MAX_EXEC_STDIN,
    PROCESS_SORT_KEYS,
};
use axum::extract::State;
use axum::Json;

use super::error::{HttpError, HttpResult};
use super::extract::{Body, Params, P};
use super::AppState;

pub async fn exec(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    Body(body): Body<MachineExecRequest>,
) -> HttpResult<Json<MachineExecResponse>> {
    st.ctl.check_machine(&app, &id).await?;
    let argv = body.argv().map_err(HttpError::bad_request)?;
    let timeout = body.timeout_secs().map_err(HttpError::bad_request)?;
    if let Some(c) = body
        .container
        .as_deref()
        .filter(|c| !c.is_empty() && *c != "app")
    {
        return Err(HttpError::bad_request(format!(
            "machine {id} has one container, \"app\"; there is no container {c:?}"
        )));
    }
    if body
        .stdin
        .as_ref()
        .is_some_and(|s| s.len() > MAX_EXEC_STDIN)
    {
        return Err(HttpError::bad_request(format!(
            "stdin is longer than the {MAX_EXEC_STDIN} bytes an exec accepts"
        )));
    }
    let answer = st
        .ctl
        .exec_machine(&app, &id, argv, body.stdin, Duration::from_secs(timeout))
        .await?;
    Ok(Json(answer))
}

pub async fn ps(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    q: Params,
) -> HttpResult<Json<Vec<ProcessStat>>> {
    st.ctl.check_machine(&app, &id).await?;
    let sort_by = q.get("sort_by").unwrap_or_default();
    let sort = ProcessSort::parse(sort_by).ok_or_else(|| {
        HttpError::bad_request(format!(
            "sort_by {sort_by:?} is not one of {}",
            PROCESS_SORT_KEYS.join(", ")
        ))
    })?;
    let descending = match q.get("order").unwrap_or_default() {
        "" | "asc" => false,
        "desc" => true,
        other => {
            return Err(HttpError::bad_request(format!(
                "order {other:?} is not asc or desc"
            )))
        }
    };
    Ok(Json(
        st.ctl
            .machine_processes(&app, &id, sort, descending)
            .await?,
    ))
}
