//! `GET …/machines/{id}/console`: an interactive session on a pseudo-terminal in a running
//! machine, over a WebSocket (the request is an HTTP/1.1 upgrade).
//!
//! The query names what runs and the terminal's size ([`ConsoleParams`]). Once upgraded,
//! binary frames carry terminal bytes both ways (what the user types to the machine, what the
//! terminal shows back); text frames carry [`ConsoleControl`] JSON: `resize` from the client,
//! `exit` from the agent when the command ended (the last frame before the close), `error`
//! from the agent when the session could not start or broke. A client that goes away hangs
//! the terminal up: the command's process group gets SIGHUP, and whatever is left of it is
//! killed shortly after.

use serde::{Deserialize, Serialize};

/// What runs when the request names no command (Fly's `ssh console` gives a shell).
pub const DEFAULT_CONSOLE_COMMAND: &str = "/bin/sh";
/// Columns and rows of a terminal whose size the client did not give.
pub const DEFAULT_TERMINAL_SIZE: (u16, u16) = (80, 24);
/// Largest number of columns or rows a client may ask for.
pub const MAX_TERMINAL_SIDE: u16 = 1000;
/// `TERM` of a session whose client did not give one.
pub const DEFAULT_TERM: &str = "xterm";
/// Sessions one machine runs at once; one more is a 429.
pub const MAX_SESSIONS_PER_MACHINE: usize = 8;
/// Sessions the agent runs at once over all machines; one more is a 503.
pub const MAX_SESSIONS_TOTAL: usize = 64;

/// The query of a console request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleParams {
    /// The command, split as a shell would (`None`: [`DEFAULT_CONSOLE_COMMAND`]).
    pub cmd: Option<String>,
    pub cols: u16,
    pub rows: u16,
    /// The client's `TERM`.
    pub term: String,
}

impl Default for ConsoleParams {
    fn default() -> Self {
        ConsoleParams {
            cmd: None,
            cols: DEFAULT_TERMINAL_SIZE.0,
            rows: DEFAULT_TERMINAL_SIZE.1,
            term: DEFAULT_TERM.to_string(),
        }
    }
}

impl ConsoleParams {
    /// The query string pairs (for the client).
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("cols", self.cols.to_string()),
            ("rows", self.rows.to_string()),
            ("term", self.term.clone()),
        ];
        if let Some(cmd) = &self.cmd {
            q.push(("cmd", cmd.clone()));
        }
        q
    }

    /// Reads the query pairs: `cmd`, `cols`, `rows`, `term`; anything else is refused by name.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut p = ConsoleParams::default();
        for (k, v) in pairs {
            match k {
                "cmd" => p.cmd = Some(v.to_string()).filter(|c| !c.trim().is_empty()),
                "cols" => p.cols = side("cols", v)?,
                "rows" => p.rows = side("rows", v)?,
                "term" => {
                    if v.is_empty()
                        || v.len() > 64
                        || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
                    {
                        return Err(format!(
                            "term {v:?} is not a terminal type (like xterm-256color)"
                        ));
                    }
                    p.term = v.to_string();
                }
                other => {
                    return Err(format!(
                    "unknown query parameter {other:?}: a console takes cmd, cols, rows and term"
                ))
                }
            }
        }
        Ok(p)
    }

    /// The argv to run: `cmd` split as a shell would, else [`DEFAULT_CONSOLE_COMMAND`].
    pub fn argv(&self) -> Result<Vec<String>, String> {
        let Some(cmd) = &self.cmd else {
            return Ok(vec![DEFAULT_CONSOLE_COMMAND.to_string()]);
        };
        let argv = shlex::split(cmd).ok_or_else(|| {
            format!("cmd {cmd:?} cannot be split into words (an unclosed quote?)")
        })?;
        if argv.first().is_none_or(|a| a.is_empty()) {
            return Err("the command's first word (the program) is empty".into());
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("the command contains a NUL byte".into());
        }
        Ok(argv)
    }
}

fn side(name: &str, v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if (1..=MAX_TERMINAL_SIDE).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} {v:?} is not a number from 1 to {MAX_TERMINAL_SIDE}"
        )),
    }
}

/// A control message (a text frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConsoleControl {
    /// Client → agent: the terminal's new size.
    Resize { cols: u16, rows: u16 },
    /// Agent → client: the command ended with this exit code (128 + N when killed by signal N).
    Exit { code: i32 },
    /// Agent → client: the session could not start or broke; the message says why.
    Error { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_default_to_a_shell() {
        let p = ConsoleParams {
            cmd: Some("sh -c 'exit 3'".into()),
            cols: 120,
            rows: 40,
            term: "xterm-256color".into(),
        };
        let q = p.query();
        let back = ConsoleParams::parse(q.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.argv().unwrap(), ["sh", "-c", "exit 3"]);
        assert_eq!(
            ConsoleParams::parse([]).unwrap().argv().unwrap(),
            [DEFAULT_CONSOLE_COMMAND]
        );
    }

    #[test]
    fn bad_params_are_refused_by_name() {
        for (k, v, says) in [
            ("cols", "0", "cols"),
            ("rows", "99999", "rows"),
            ("rows", "x", "rows"),
            ("term", "a b", "term"),
            ("user", "root", "\"user\""),
        ] {
            let e = ConsoleParams::parse([(k, v)]).unwrap_err();
            assert!(e.contains(says), "{k}={v}: {e}");
        }
        let unclosed = ConsoleParams::parse([("cmd", "echo 'x")]).unwrap();
        assert!(unclosed.argv().unwrap_err().contains("unclosed quote"));
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let r: ConsoleControl =
            serde_json::from_str(r#"{"type":"resize","cols":3,"rows":4}"#).unwrap();
        assert_eq!(r, ConsoleControl::Resize { cols: 3, rows: 4 });
        assert_eq!(
            serde_json::to_string(&ConsoleControl::Exit { code: 3 }).unwrap(),
            r#"{"type":"exit","code":3}"#
        );
    }
}
