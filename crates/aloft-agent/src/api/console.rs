//! `GET …/machines/{id}/console`: a console session over a WebSocket (frames as
//! `aloft_api::console` describes them). Everything that can be refused is refused before the
//! upgrade, as an HTTP answer: a bad query, a request that is no WebSocket upgrade, a machine
//! that does not run, too many sessions, a command that cannot start. Then the frames are
//! carried to and from `controller::console`, which runs the session. The machine of an
//! `aloft console` (group `fly_app_console`) is destroyed when its session is over.

use aloft_api::console::{ConsoleControl, ConsoleParams, MAX_TERMINAL_SIDE};
use aloft_runtime::ConsoleRequest;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::error::{HttpError, HttpResult};
use super::extract::{Params, P};
use super::AppState;
use crate::controller::console::{ConsoleInput, ConsoleOutput, OpenConsole};

pub async fn console(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    q: Params,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> HttpResult<Response> {
    st.ctl.check_machine(&app, &id).await?;
    let params = ConsoleParams::parse(q.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(HttpError::bad_request)?;
    let argv = params.argv().map_err(HttpError::bad_request)?;
    let ws = ws.map_err(|e| {
        HttpError::bad_request(format!(
            "a console is a WebSocket: send GET with `Connection: upgrade` and `Upgrade: \
             websocket` ({})",
            e.body_text()
        ))
    })?;
    let req = ConsoleRequest {
        argv,
        cols: params.cols,
        rows: params.rows,
        term: params.term,
    };
    let open = st.ctl.open_console(&app, &id, req).await?;
    let ctl = st.ctl.clone();
    Ok(ws.on_upgrade(move |socket| async move {
        let ephemeral = open.ephemeral;
        carry(socket, open).await;
        // An `aloft console` machine lives as long as its session, however that ended.
        if ephemeral {
            ctl.destroy_console_machine(&app, &id).await;
        }
    }))
}

/// Carries frames between the client and the session until one of them ends.
async fn carry(socket: WebSocket, open: OpenConsole) {
    let (mut sink, mut stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let session = tokio::spawn(open.run(in_rx, out_tx));
    // Client → session. When the client goes (close frame, error, end), `in_tx` drops: the
    // session hangs up.
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let input = match msg {
                Message::Binary(b) => ConsoleInput::Bytes(b.to_vec()),
                Message::Text(t) => match control(t.as_str()) {
                    Ok(input) => input,
                    Err(why) => {
                        tracing::debug!("console: {why}");
                        continue;
                    }
                },
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if in_tx.send(input).await.is_err() {
                return;
            }
        }
    });
    // Session → client.
    while let Some(out) = out_rx.recv().await {
        let sent = match out {
            ConsoleOutput::Bytes(b) => sink.send(Message::Binary(b.into())).await,
            ConsoleOutput::Exit(code) => {
                let exit =
                    serde_json::to_string(&ConsoleControl::Exit { code }).unwrap_or_default();
                let _ = sink.send(Message::Text(exit.into())).await;
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
        };
        if sent.is_err() {
            break;
        }
    }
    reader.abort();
    if let Err(e) = session.await {
        tracing::error!("console session task failed: {e}");
    }
}

/// A control frame from the client: only `resize` is one.
fn control(text: &str) -> Result<ConsoleInput, String> {
    match serde_json::from_str::<ConsoleControl>(text) {
        Ok(ConsoleControl::Resize { cols, rows })
            if (1..=MAX_TERMINAL_SIDE).contains(&cols)
                && (1..=MAX_TERMINAL_SIDE).contains(&rows) =>
        {
            Ok(ConsoleInput::Resize { cols, rows })
        }
        Ok(other) => Err(format!(
            "control frame {other:?} is not a resize a client may send"
        )),
        Err(e) => Err(format!(
            "control frame {text:?} is not a console control: {e}"
        )),
    }
}
