//! The printer: everything a command shows goes through one [`Printer`], made once in `main`
//! from the resolved output settings and passed to every command (inside
//! `commands::Context`). Commands never print with `println!`/`eprintln!` (an architecture test
//! checks it).
//!
//! - Results (tables, JSON values, the lines a command exists to print) go to stdout.
//! - Progress-free remarks (`Nothing deployed.`), diagnostics, warnings, errors and prompts go
//!   to stderr, so `aloft … --json | jq` and pipes see results only.
//! - Modes: plain text, or JSON with the global `--json` (commands ask [`Printer::json`]).
//! - Colour only when stdout is a terminal and `NO_COLOR` is not set (decided in `settings`);
//!   [`Printer::paint`] is the only place that emits ANSI codes (`anstyle`).
//!
//! A write to a closed stdout (`aloft machine list | head -1`) is ignored rather than a panic;
//! [`Printer::try_line`] reports it for commands that stream until the reader goes away.

use std::fmt::Display;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;

use anstyle::Style;
use anyhow::{bail, Context as _};
use serde::Serialize;

/// How the printer prints, as resolved by `settings::OutputSettings`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    /// Print JSON values instead of tables and text (`--json`).
    pub json: bool,
    /// Colour labels with ANSI codes.
    pub colour: bool,
}

type Sink = Mutex<Box<dyn Write + Send>>;

/// The one way commands print; see the module doc for what goes where.
pub struct Printer {
    mode: Mode,
    out: Sink,
    /// Shared with [`Notes`] handles.
    err: std::sync::Arc<Sink>,
}

/// A handle that prints notes on the printer's stderr from wherever a library calls back
/// (e.g. a TLS handshake pinning a certificate), without borrowing the printer.
#[derive(Clone)]
pub struct Notes(std::sync::Arc<Sink>);

impl Notes {
    /// A remark on stderr, as [`Printer::note`].
    pub fn note(&self, text: impl Display) {
        let _ = Printer::write(&self.0, &format!("{text}\n"));
    }
}

impl Printer {
    /// A printer on the process's stdout and stderr.
    pub fn new(mode: Mode) -> Printer {
        Printer::with_sinks(
            mode,
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
        )
    }

    /// A printer on the given writers (tests capture output this way).
    pub fn with_sinks(
        mode: Mode,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Printer {
        Printer {
            mode,
            out: Mutex::new(out),
            err: std::sync::Arc::new(Mutex::new(err)),
        }
    }

    /// Whether the user asked for JSON (`--json`).
    pub fn json(&self) -> bool {
        self.mode.json
    }

    fn write(sink: &Sink, text: &str) -> std::io::Result<()> {
        // A poisoned lock only means another thread panicked mid-write: keep printing.
        let mut w = sink.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(text.as_bytes())?;
        w.flush()
    }

    /// A result line on stdout.
    pub fn line(&self, text: impl Display) {
        let _ = self.try_line(text);
    }

    /// A result line on stdout; `Err` when stdout is closed (the reader went away).
    pub fn try_line(&self, text: impl Display) -> std::io::Result<()> {
        Printer::write(&self.out, &format!("{text}\n"))
    }

    /// Text on stdout exactly as given (blocks that carry their own newlines).
    pub fn text(&self, text: &str) {
        let _ = Printer::write(&self.out, text);
    }

    /// Bytes on stdout exactly as given, flushed (a console session's terminal output).
    pub fn raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.out.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(bytes)?;
        w.flush()
    }

    /// Rows under a header on stdout, columns padded to the widest cell (flyctl style).
    pub fn table(&self, title: Option<&str>, header: &[&str], rows: &[Vec<String>]) {
        self.text(&render_table(title, header, rows));
    }

    /// A value as pretty JSON on stdout.
    pub fn json_value<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        self.line(serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// A remark on stderr: what happened besides the result (`Nothing deployed.`), the agent's
    /// own status lines, validation summaries.
    pub fn note(&self, text: impl Display) {
        let _ = Printer::write(&self.err, &format!("{text}\n"));
    }

    /// Text on stderr exactly as given (diagnostics blocks carry their own newlines).
    pub fn note_text(&self, text: &str) {
        let _ = Printer::write(&self.err, text);
    }

    /// A handle printing notes on this printer's stderr.
    pub fn notes(&self) -> Notes {
        Notes(self.err.clone())
    }

    /// `warning: …` on stderr.
    pub fn warn(&self, text: impl Display) {
        self.note(format_args!("warning: {text}"));
    }

    /// `error: …` on stderr, then each cause that adds something (library errors often repeat
    /// their source in their own message).
    pub fn error(&self, err: &anyhow::Error) {
        self.note(format_args!("error: {err}"));
        let mut said = err.to_string();
        for cause in err.chain().skip(1) {
            let text = cause.to_string();
            if !said.contains(&text) {
                self.note(format_args!("  caused by: {text}"));
            }
            said.push_str(&text);
        }
    }

    /// `text` in `style` when colour is on, else `text` unchanged.
    pub fn paint(&self, style: Style, text: &str) -> String {
        if self.mode.colour {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }

    /// Asks `question` on the terminal (prompt on stderr). Without a terminal on stdin,
    /// refuses with a message telling to pass `--yes`: nothing has been changed when this
    /// returns an error or `false`.
    pub fn confirm(&self, question: &str, yes: bool) -> anyhow::Result<bool> {
        if yes {
            return Ok(true);
        }
        if !std::io::stdin().is_terminal() {
            bail!("{question} — refusing to go on without confirmation: stdin is not a terminal; pass --yes");
        }
        self.note_text(&format!("? {question} [y/N] "));
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the answer")?;
        Ok(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    }
}

/// The text of [`Printer::table`].
pub fn render_table(title: Option<&str>, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    if let Some(title) = title {
        out.push_str(title);
        out.push('\n');
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(header.to_vec()));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
pub mod capture {
    //! A printer whose stdout and stderr are kept in memory, for tests.

    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::{Mode, Printer};

    /// A shared in-memory writer.
    #[derive(Clone, Default)]
    pub struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A printer and its captured (stdout, stderr).
    pub fn printer(mode: Mode) -> (Printer, Buffer, Buffer) {
        let (out, err) = (Buffer::default(), Buffer::default());
        let p = Printer::with_sinks(mode, Box::new(out.clone()), Box::new(err.clone()));
        (p, out, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_go_to_stdout_and_remarks_to_stderr() {
        let (p, out, err) = capture::printer(Mode::default());
        p.line("Release v2 deployed");
        p.table(
            Some("Regions"),
            &["NAME", "CODE"],
            &[vec!["Amsterdam, Netherlands".into(), "ams".into()]],
        );
        p.warn("checks still failing");
        p.note("Nothing deployed.");
        assert_eq!(
            out.text(),
            "Release v2 deployed\nRegions\nNAME                    CODE\nAmsterdam, Netherlands  ams\n"
        );
        assert_eq!(
            err.text(),
            "warning: checks still failing\nNothing deployed.\n"
        );
    }

    #[test]
    fn json_values_are_pretty_on_stdout() {
        let (p, out, err) = capture::printer(Mode {
            json: true,
            colour: false,
        });
        assert!(p.json());
        p.json_value(&serde_json::json!({"name": "demo"})).unwrap();
        assert_eq!(out.text(), "{\n  \"name\": \"demo\"\n}\n");
        assert_eq!(err.text(), "");
    }

    #[test]
    fn paint_colours_only_when_colour_is_on() {
        let cyan = Style::new().fg_color(Some(anstyle::AnsiColor::Cyan.into()));
        let (plain, _, _) = capture::printer(Mode::default());
        assert_eq!(plain.paint(cyan, "web"), "web");
        let (colour, _, _) = capture::printer(Mode {
            json: false,
            colour: true,
        });
        assert_eq!(colour.paint(cyan, "web"), "\x1b[36mweb\x1b[0m");
    }

    #[test]
    fn errors_name_only_causes_that_add_something() {
        let (p, _, err) = capture::printer(Mode::default());
        let e = anyhow::anyhow!("connection refused")
            .context("cannot reach the agent: connection refused")
            .context("listing machines");
        p.error(&e);
        assert_eq!(
            err.text(),
            "error: listing machines\n  caused by: cannot reach the agent: connection refused\n"
        );
    }

    #[test]
    fn table_cells_pad_to_the_widest_and_trim_the_end() {
        let text = render_table(
            None,
            &["A", "B", "C"],
            &[vec!["long".into(), "".into(), "x".into()]],
        );
        assert_eq!(text, "A     B  C\nlong     x\n");
    }
}
