//! The local terminal of a console session (`aloft ssh console`, `aloft console`): whether
//! stdin is one, its size, and raw mode (rustix termios) for as long as a [`RawMode`] guard
//! lives.
//!
//! In raw mode every key goes to the machine as typed (Ctrl-C is byte 3 for the remote
//! terminal to turn into SIGINT there), nothing is echoed locally, and output is written as it
//! comes. The guard restores the settings it found when dropped: on return, on error and on a
//! panic (unwinding drops it), so the user's shell never inherits a raw terminal.

use std::io::IsTerminal;

use rustix::termios::{self, OptionalActions, Termios};

/// Whether stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's size as (columns, rows), when stdin is a terminal.
pub fn size() -> Option<(u16, u16)> {
    let ws = termios::tcgetwinsize(std::io::stdin()).ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Raw mode on stdin until dropped (see the module doc).
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode.
    pub fn enable() -> anyhow::Result<RawMode> {
        let saved = termios::tcgetattr(std::io::stdin())
            .map_err(|e| anyhow::anyhow!("cannot read the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}
