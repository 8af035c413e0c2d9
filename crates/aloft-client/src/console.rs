//! `Client::console`: a console session in a machine over a WebSocket (`aloft ssh console`).
//!
//! The WebSocket is an HTTP/1.1 upgrade of a request sent like every other one, through the
//! client's own transport (plain TCP, TLS with its pinned certificate, or an `ssh://` tunnel's
//! unix socket), then framed by tokio-tungstenite on the upgraded connection. Frames are
//! `aloft_api::console`'s: binary terminal bytes both ways, JSON control text frames.

use aloft_api::console::{ConsoleControl, ConsoleParams};
use aloft_api::routes;
use anyhow::{anyhow, bail, Context};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::Client;

type Socket = WebSocketStream<reqwest::Upgraded>;

/// What the session sends back.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// Bytes for the local terminal.
    Output(Vec<u8>),
    /// The command ended with this exit code; the session is over.
    Exit(i32),
}

/// The sending half of a console session.
pub struct ConsoleWriter {
    sink: SplitSink<Socket, Message>,
}

/// The receiving half of a console session.
pub struct ConsoleReader {
    stream: SplitStream<Socket>,
    machine: String,
}

impl Client {
    /// Opens a console session on machine `id` of `app`. Refusals (the machine does not run,
    /// too many sessions, a bad command) are [`crate::StatusError`]s.
    pub async fn console(
        &self,
        app: &str,
        id: &str,
        params: &ConsoleParams,
    ) -> anyhow::Result<(ConsoleWriter, ConsoleReader)> {
        let path = routes::machine_console(app, id);
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let rb = self
            .request(Method::GET, &path)
            .query(&params.query())
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", &key);
        let resp = self.send(Method::GET, &path, rb).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            bail!(
                "the agent at {} answered {} instead of opening the console (an agent older \
                 than consoles, or a proxy in between that does not pass WebSockets?)",
                self.base_url(),
                resp.status()
            );
        }
        let accept = resp
            .headers()
            .get("sec-websocket-accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if accept != derive_accept_key(key.as_bytes()) {
            bail!("the agent's WebSocket answer does not match the request (sec-websocket-accept)");
        }
        let upgraded = resp
            .upgrade()
            .await
            .with_context(|| format!("opening the console of machine {id}"))?;
        let socket = WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
        let (sink, stream) = socket.split();
        Ok((
            ConsoleWriter { sink },
            ConsoleReader {
                stream,
                machine: id.to_string(),
            },
        ))
    }
}

impl ConsoleWriter {
    /// Sends typed bytes.
    pub async fn input(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.sink
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .context("sending to the console")
    }

    /// Tells the session the terminal's new size.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> anyhow::Result<()> {
        let text = serde_json::to_string(&ConsoleControl::Resize { cols, rows })?;
        self.sink
            .send(Message::Text(text.into()))
            .await
            .context("sending the terminal size to the console")
    }

    /// Ends the session from this side (the machine's command is hung up).
    pub async fn close(&mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let _ = self.sink.close().await;
    }
}

impl ConsoleReader {
    /// The next thing the session sends; an error when the connection ends without an exit.
    pub async fn next(&mut self) -> anyhow::Result<ConsoleEvent> {
        loop {
            let msg = self.stream.next().await.ok_or_else(|| self.lost(None))?;
            match msg.map_err(|e| self.lost(Some(e.to_string())))? {
                Message::Binary(b) => return Ok(ConsoleEvent::Output(b.to_vec())),
                Message::Text(t) => match serde_json::from_str::<ConsoleControl>(t.as_str()) {
                    Ok(ConsoleControl::Exit { code }) => return Ok(ConsoleEvent::Exit(code)),
                    Ok(ConsoleControl::Error { message }) => {
                        bail!("console of machine {}: {message}", self.machine)
                    }
                    // Nothing else comes from an agent; a newer one may say more.
                    Ok(ConsoleControl::Resize { .. }) | Err(_) => continue,
                },
                Message::Close(_) => return Err(self.lost(None)),
                _ => continue,
            }
        }
    }

    fn lost(&self, why: Option<String>) -> anyhow::Error {
        anyhow!(
            "the console connection to machine {} ended before the command did{}",
            self.machine,
            why.map(|w| format!(": {w}")).unwrap_or_default()
        )
    }
}
