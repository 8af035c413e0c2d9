//! `/v1/apps/{app}/machines…` handlers: parse, validate, call the controller.

use std::time::Duration;

use aloft_api::{
    CreateMachineRequest, GoDuration, MachineState, StopRequest, UpdateMachineRequest,
};
use aloft_store::MachineFilter;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::error::{HttpError, HttpResult};
use super::extract::{nonce, Body, OptBody, Params, P};
use super::AppState;
use crate::controller::actions::{
    Action, CreateMachine, DeleteMachine, ListMachines, Outcome, StopHow, UpdateMachine, WaitFor,
    WaitMachine,
};

type MachinePath = P<(String, String)>;

/// Longest `wait`, in seconds.
const MAX_WAIT_SECS: u64 = 60;
const DEFAULT_EVENTS: usize = 20;
const MAX_EVENTS: usize = 50;
/// States the `state` list filter accepts.
const LIST_STATES: &[&str] = &[
    "created",
    "starting",
    "started",
    "stopping",
    "stopped",
    "suspended",
    "failed",
    "destroyed",
    "replacing",
    "restarting",
    "destroying",
];

pub async fn list(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
) -> HttpResult<axum::response::Response> {
    let mut states = Vec::new();
    for s in q.all("state") {
        match MachineState::parse(&s).filter(|_| LIST_STATES.contains(&s.as_str())) {
            Some(st) => states.push(st),
            None => {
                return Err(HttpError::bad_request(format!(
                    "state {s:?} is not one of {}",
                    LIST_STATES.join(", ")
                )))
            }
        }
    }
    let include_deleted =
        q.bool("include_deleted", false)? || states.contains(&MachineState::Destroyed);
    let filter = MachineFilter {
        region: q
            .get("region")
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        states,
        include_deleted,
        metadata: q.prefixed("metadata."),
    };
    if !q.bool("summary", false)? {
        let json = st.ctl.list_machines_json(&app, filter).await?;
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response());
    }
    let machines = st
        .ctl
        .list_machines(
            &app,
            ListMachines {
                filter,
                summary: true,
            },
        )
        .await?;
    let list: Vec<MachineSummary<'_>> = machines.iter().map(MachineSummary::from).collect();
    Ok(json_response(&list, list.len() * 400))
}

/// JSON into a buffer sized up front (long lists otherwise pay for repeated regrowth).
fn json_response<T: serde::Serialize>(value: &T, capacity: usize) -> axum::response::Response {
    let mut buf = Vec::with_capacity(capacity + 2);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            buf,
        )
            .into_response(),
        Err(e) => HttpError::internal(format!("cannot encode the response: {e}")).into_response(),
    }
}

/// A machine in a `summary=true` list: no config, checks, events, host_status or nonce.
#[derive(serde::Serialize)]
struct MachineSummary<'a> {
    id: &'a str,
    name: &'a str,
    state: MachineState,
    region: &'a str,
    instance_id: &'a str,
    private_ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_ref: Option<&'a aloft_api::ImageRef>,
    created_at: &'a str,
    updated_at: &'a str,
    cordoned: bool,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    host_ports: &'a std::collections::BTreeMap<u16, u16>,
}

impl<'a> From<&'a aloft_api::Machine> for MachineSummary<'a> {
    fn from(m: &'a aloft_api::Machine) -> Self {
        MachineSummary {
            id: &m.id,
            name: &m.name,
            state: m.state,
            region: &m.region,
            instance_id: &m.instance_id,
            private_ip: &m.private_ip,
            image_ref: m.image_ref.as_ref(),
            created_at: &m.created_at,
            updated_at: &m.updated_at,
            cordoned: m.cordoned,
            host_ports: &m.host_ports,
        }
    }
}

pub async fn create(
    State(st): State<AppState>,
    P(app): P<String>,
    Body(request): Body<CreateMachineRequest>,
) -> HttpResult<Outcome> {
    let action = CreateMachine { request };
    Ok(st
        .ctl
        .execute(Action::CreateMachine { app, action })
        .await?)
}

pub async fn get(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.ctl.get_machine(&app, &id).await?))
}

pub async fn update(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
    Body(request): Body<UpdateMachineRequest>,
) -> HttpResult<Outcome> {
    let action = UpdateMachine {
        request,
        nonce: nonce(&headers),
    };
    Ok(st
        .ctl
        .execute(Action::UpdateMachine { app, id, action })
        .await?)
}

pub async fn delete(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
    q: Params,
) -> HttpResult<Outcome> {
    let force = q.bool("force", false)? || q.bool("kill", false)?;
    let action = DeleteMachine {
        force,
        nonce: nonce(&headers),
    };
    Ok(st
        .ctl
        .execute(Action::DestroyMachine { app, id, action })
        .await?)
}

pub async fn start(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
) -> HttpResult<Outcome> {
    let nonce = nonce(&headers);
    Ok(st
        .ctl
        .execute(Action::StartMachine { app, id, nonce })
        .await?)
}

/// A signal given by name or number (string or JSON number).
fn parse_signal(v: &Value) -> HttpResult<i32> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(HttpError::bad_request(format!(
                "signal must be a name or a number, got {other}"
            )))
        }
    };
    aloft_api::signal_number(&s).ok_or_else(|| {
        let names: Vec<&str> = aloft_api::SIGNALS.iter().map(|(n, _)| *n).collect();
        HttpError::bad_request(format!(
            "unknown signal {s:?}; use one of {}",
            names.join(", ")
        ))
    })
}

pub async fn stop(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
    OptBody(body): OptBody<StopRequest>,
) -> HttpResult<Outcome> {
    let body = body.unwrap_or_default();
    let signal = body
        .signal
        .as_deref()
        .map(|s| parse_signal(&Value::String(s.into())))
        .transpose()?;
    let how = StopHow {
        signal,
        timeout: body.timeout.map(GoDuration::as_duration),
    };
    let nonce = nonce(&headers);
    let action = Action::StopMachine {
        app,
        id,
        how,
        nonce,
    };
    Ok(st.ctl.execute(action).await?)
}

pub async fn restart(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
    q: Params,
) -> HttpResult<Outcome> {
    let signal = q
        .get("signal")
        .filter(|s| !s.is_empty())
        .map(|s| parse_signal(&Value::String(s.into())))
        .transpose()?;
    let timeout = match q.get("timeout").map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(t) => Some(match t.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => aloft_api::duration::parse_go_duration(t)
                .map_err(|e| HttpError::bad_request(format!("timeout: {e}")))?,
        }),
    };
    let action = Action::RestartMachine {
        app,
        id,
        how: StopHow { signal, timeout },
        nonce: nonce(&headers),
    };
    Ok(st.ctl.execute(action).await?)
}

#[derive(serde::Deserialize)]
pub struct SignalBody {
    signal: Value,
}

pub async fn signal(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
    Body(body): Body<SignalBody>,
) -> HttpResult<Outcome> {
    let action = Action::SignalMachine {
        app,
        id,
        signal: parse_signal(&body.signal)?,
        nonce: nonce(&headers),
    };
    Ok(st.ctl.execute(action).await?)
}

pub async fn wait(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    q: Params,
) -> HttpResult<impl IntoResponse> {
    let mut states = Vec::new();
    for s in q.all("state") {
        let w = if s == "settled" {
            WaitFor::Settled
        } else {
            WaitFor::State(MachineState::parse(&s).ok_or_else(|| {
                HttpError::bad_request(format!(
                    "cannot wait for state {s:?}; use started, stopped, suspended, destroyed, failed or settled"
                ))
            })?)
        };
        states.push(w);
    }
    if states.is_empty() {
        states.push(WaitFor::State(MachineState::Started));
    }
    let secs = q.uint("timeout", true)?.unwrap_or(MAX_WAIT_SECS);
    if secs > MAX_WAIT_SECS {
        return Err(HttpError::bad_request(format!(
            "timeout must be at most {MAX_WAIT_SECS} seconds, got {secs}"
        )));
    }
    let instance_id = q
        .get("instance_id")
        .or(q.get("version"))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let action = WaitMachine {
        states,
        timeout: Duration::from_secs(secs.max(1)),
        instance_id,
    };
    match st.ctl.wait_machine(&app, &id, action).await? {
        Some((state, version)) => Ok(Json(
            json!({"ok": true, "state": state, "version": version}),
        )),
        None => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            "deadline_exceeded",
            format!("machine {id} did not reach the requested state within {secs}s"),
        )),
    }
}

async fn cordon_action(
    st: &AppState,
    app: String,
    id: String,
    cordoned: bool,
    headers: &HeaderMap,
) -> HttpResult<Outcome> {
    let action = Action::Cordon {
        app,
        id,
        cordoned,
        nonce: nonce(headers),
    };
    Ok(st.ctl.execute(action).await?)
}

pub async fn cordon(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
) -> HttpResult<Outcome> {
    cordon_action(&st, app, id, true, &headers).await
}

pub async fn uncordon(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    headers: HeaderMap,
) -> HttpResult<Outcome> {
    cordon_action(&st, app, id, false, &headers).await
}

pub async fn events(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
    q: Params,
) -> HttpResult<impl IntoResponse> {
    let limit = q
        .uint("limit", false)?
        .map(|l| l as usize)
        .unwrap_or(DEFAULT_EVENTS);
    if limit == 0 || limit > MAX_EVENTS {
        return Err(HttpError::bad_request(format!(
            "limit must be 1 to {MAX_EVENTS}"
        )));
    }
    Ok(Json(st.ctl.machine_events(&app, &id, limit).await?))
}

pub async fn versions(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
) -> HttpResult<impl IntoResponse> {
    let versions = st.ctl.machine_versions(&app, &id).await?;
    let out: Vec<Value> = versions
        .into_iter()
        .map(|v| json!({"version": v.instance_id, "user_config": v.config, "created_at": v.created_at}))
        .collect();
    Ok(Json(out))
}

pub async fn metadata(
    State(st): State<AppState>,
    P((app, id)): MachinePath,
) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.ctl.metadata(&app, &id).await?))
}

fn check_key(key: &str) -> HttpResult<()> {
    if key.is_empty() || key.len() > 256 || key.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(HttpError::bad_request(format!(
            "metadata key {key:?} must be 1-256 characters without spaces"
        )));
    }
    Ok(())
}

pub async fn metadata_get(
    State(st): State<AppState>,
    P((app, id, key)): P<(String, String, String)>,
) -> HttpResult<impl IntoResponse> {
    let md = st.ctl.metadata(&app, &id).await?;
    let v = md
        .get(&key)
        .ok_or_else(|| HttpError::not_found(format!("machine {id} has no metadata key {key:?}")))?;
    Ok(Json(json!({"value": v})))
}

#[derive(serde::Deserialize)]
pub struct MetadataBody {
    value: String,
}

async fn write_metadata(
    st: &AppState,
    (app, id, key): (String, String, String),
    value: Option<String>,
    headers: &HeaderMap,
) -> HttpResult<Outcome> {
    check_key(&key)?;
    let action = Action::WriteMetadata {
        app,
        id,
        key,
        value,
        nonce: nonce(headers),
    };
    Ok(st.ctl.execute(action).await?)
}

pub async fn metadata_set(
    State(st): State<AppState>,
    P((app, id, key)): P<(String, String, String)>,
    headers: HeaderMap,
    Body(body): Body<MetadataBody>,
) -> HttpResult<Outcome> {
    write_metadata(&st, (app, id, key), Some(body.value), &headers).await
}

pub async fn metadata_delete(
    State(st): State<AppState>,
    P((app, id, key)): P<(String, String, String)>,
    headers: HeaderMap,
) -> HttpResult<Outcome> {
    write_metadata(&st, (app, id, key), None, &headers).await
}
