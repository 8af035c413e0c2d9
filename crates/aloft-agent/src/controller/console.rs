//! Console sessions (`aloft ssh console`): a command on a pseudo-terminal in a running machine,
//! its terminal carried over two channels so the transport (a WebSocket, in `api/console.rs`)
//! stays at the edge.
//!
//! Sessions are bounded: [`MAX_SESSIONS_PER_MACHINE`] on one machine, [`MAX_SESSIONS_TOTAL`] on
//! the agent; one more is refused before anything starts. A session holds its place until it
//! is over, however it ends. When the input channel closes (the client went away) the session is
//! hung up: its process group gets SIGHUP and what is left of it is killed
//! (`aloft_runtime::ConsoleSession::finish`), so no process and no session outlive the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_api::console::{MAX_SESSIONS_PER_MACHINE, MAX_SESSIONS_TOTAL};
use aloft_runtime::{ConsoleRequest, ConsoleSession, RuntimeError};
use tokio::sync::mpsc;

use aloft_api::metadata::{CONSOLE_GROUP, PROCESS_GROUP};

use super::actions::DeleteMachine;
use super::{Controller, DomainError, DomainResult};

/// How long output still in the terminal is read after the command ended.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// What the client sends.
#[derive(Debug)]
pub enum ConsoleInput {
    /// Typed bytes.
    Bytes(Vec<u8>),
    /// The client's terminal has a new size.
    Resize { cols: u16, rows: u16 },
}

/// What the session sends.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// What the terminal shows.
    Bytes(Vec<u8>),
    /// The command ended with this exit code; nothing follows.
    Exit(i32),
}

/// The sessions running now, per machine.
#[derive(Default)]
pub struct ConsoleSessions {
    by_machine: Arc<Mutex<HashMap<String, usize>>>,
}

impl ConsoleSessions {
    /// Takes a place for a session on `machine`, or says why there is none.
    fn take(&self, machine: &str) -> DomainResult<SessionPlace> {
        let mut map = self.by_machine.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = map.values().sum();
        if total >= MAX_SESSIONS_TOTAL {
            return Err(DomainError::TooManySessions {
                message: format!(
                    "the agent runs {total} console sessions, as many as it allows at once; \
                     try again when one has ended"
                ),
                agent_wide: true,
            });
        }
        let here = map.entry(machine.to_string()).or_default();
        if *here >= MAX_SESSIONS_PER_MACHINE {
            return Err(DomainError::TooManySessions {
                message: format!(
                    "machine {machine} has {here} console sessions open, as many as one machine \
                     allows; close one and try again"
                ),
                agent_wide: false,
            });
        }
        *here += 1;
        Ok(SessionPlace {
            machine: machine.to_string(),
            by_machine: self.by_machine.clone(),
        })
    }

    /// How many sessions run on `machine` now.
    pub fn count(&self, machine: &str) -> usize {
        let map = self.by_machine.lock().unwrap_or_else(|e| e.into_inner());
        map.get(machine).copied().unwrap_or(0)
    }
}

/// A session's place, given back when dropped.
struct SessionPlace {
    machine: String,
    by_machine: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SessionPlace {
    fn drop(&mut self) {
        let mut map = self.by_machine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.machine) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.machine);
            }
        }
    }
}

/// A started session (see [`Controller::open_console`]); [`OpenConsole::run`] carries it.
pub struct OpenConsole {
    session: ConsoleSession,
    _place: SessionPlace,
    /// The machine is an `aloft console` machine: destroy it once the session is over.
    pub ephemeral: bool,
}

impl Controller {
    /// Starts `req` on a terminal in the running machine `id` of `app`.
    pub async fn open_console(
        &self,
        app: &str,
        id: &str,
        req: ConsoleRequest,
    ) -> DomainResult<OpenConsole> {
        self.running_record(app, id, "open a console on").await?;
        let ephemeral = self.is_console_machine(app, id).await;
        let place = self.consoles.take(id)?;
        let session = self.sup.console(id, &req).await.map_err(|e| match e {
            RuntimeError::Spawn { source, argv, .. } => DomainError::invalid_request(format!(
                "cannot start {:?} in machine {id}: {source}",
                argv.first().map(String::as_str).unwrap_or_default()
            )),
            e => super::exec::not_running_or_failure(id, e),
        })?;
        Ok(OpenConsole {
            session,
            _place: place,
            ephemeral,
        })
    }

    /// Whether `id` is an `aloft console` machine (group [`CONSOLE_GROUP`]).
    async fn is_console_machine(&self, app: &str, id: &str) -> bool {
        self.record(app, id).await.is_ok_and(|rec| {
            rec.config.metadata.get(PROCESS_GROUP).map(String::as_str) == Some(CONSOLE_GROUP)
        })
    }

    /// Destroys the `aloft console` machine whose session ended (whatever its state).
    pub async fn destroy_console_machine(&self, app: &str, id: &str) {
        let action = DeleteMachine {
            force: true,
            nonce: None,
        };
        if let Err(e) = self.destroy_machine(app, id, action).await {
            tracing::warn!(machine = id, "cannot destroy the console machine: {e}");
        }
    }

    /// Destroys the `aloft console` machines a previous agent left (their sessions died with
    /// it): start-up, after reconcile.
    pub(super) async fn destroy_console_leftovers(&self) -> DomainResult<Vec<String>> {
        let live = self.db(|s| s.read(|tx| tx.live_machines())).await?;
        let mut destroyed = Vec::new();
        for rec in live.into_iter().filter(|r| {
            r.config.metadata.get(PROCESS_GROUP).map(String::as_str) == Some(CONSOLE_GROUP)
        }) {
            self.destroy_console_machine(&rec.app, &rec.id).await;
            destroyed.push(rec.id);
        }
        Ok(destroyed)
    }
}

impl OpenConsole {
    /// Carries the session until the command ends (its exit code is sent last) or `input`
    /// closes (the client is gone: the session is hung up). Returns the exit code.
    pub async fn run(
        self,
        mut input: mpsc::Receiver<ConsoleInput>,
        output: mpsc::Sender<ConsoleOutput>,
    ) -> i32 {
        let OpenConsole {
            mut session,
            _place,
            ..
        } = self;
        let terminal = session.terminal();
        let mut reader = {
            let (terminal, output) = (terminal.clone(), output.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    match terminal.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if output
                                .send(ConsoleOutput::Bytes(buf[..n].to_vec()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            })
        };
        let client_gone = loop {
            tokio::select! {
                got = input.recv() => match got {
                    None => break true,
                    Some(ConsoleInput::Bytes(b)) => {
                        // A failed write: the command is going; its exit comes next.
                        let _ = terminal.write_all(&b).await;
                    }
                    Some(ConsoleInput::Resize { cols, rows }) => {
                        let _ = terminal.resize(cols, rows);
                    }
                },
                _ = session.wait() => break false,
            }
        };
        let code = session.finish().await;
        if client_gone {
            reader.abort();
        } else {
            // The terminal's last output, then the exit code.
            if tokio::time::timeout(OUTPUT_DRAIN, &mut reader)
                .await
                .is_err()
            {
                tracing::debug!("console output still open after the command ended");
                reader.abort();
            }
            let _ = output.send(ConsoleOutput::Exit(code)).await;
        }
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_per_machine_and_in_total_and_given_back_when_dropped() {
        let sessions = ConsoleSessions::default();
        let mut held: Vec<SessionPlace> = (0..MAX_SESSIONS_PER_MACHINE)
            .map(|_| sessions.take("m0").unwrap())
            .collect();
        let refused = sessions.take("m0").err().unwrap();
        assert!(matches!(
            refused,
            DomainError::TooManySessions {
                agent_wide: false,
                ..
            }
        ));
        held.pop();
        assert_eq!(sessions.count("m0"), MAX_SESSIONS_PER_MACHINE - 1);
        held.push(sessions.take("m0").unwrap());
        // Fill the agent with other machines' sessions.
        let mut n = 1;
        while held.len() < MAX_SESSIONS_TOTAL {
            held.push(
                sessions
                    .take(&format!("m{}", n / MAX_SESSIONS_PER_MACHINE + 1))
                    .unwrap(),
            );
            n += 1;
        }
        let refused = sessions.take("another").err().unwrap();
        assert!(matches!(
            refused,
            DomainError::TooManySessions {
                agent_wide: true,
                ..
            }
        ));
        drop(held);
        assert_eq!(sessions.count("m0"), 0);
        assert!(sessions.take("another").is_ok());
    }
}
