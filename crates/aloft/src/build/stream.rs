//! Running the image tools (buildah, skopeo): a tool that is not installed is an error naming
//! the package; a streamed run shows each line of the tool's stdout and stderr on the terminal
//! as it comes (through the [`Printer`], to stderr) and keeps the last lines, from which a
//! failure is explained.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::printer::Printer;

/// How many of the last output lines a run keeps.
const TAIL_LINES: usize = 200;

/// A tool the build module runs, and what to say when it is missing.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub program: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
    /// What else the user can do without it.
    pub otherwise: &'static str,
}

pub const BUILDAH: Tool = Tool {
    program: "buildah",
    package: "buildah",
    otherwise: "or set [build] image (or --image) to a prebuilt image, or remove the Dockerfile \
                to run the app as host processes (the process runtime)",
};

pub const SKOPEO: Tool = Tool {
    program: "skopeo",
    package: "skopeo",
    otherwise: "or build the image from a Dockerfile instead of naming it with [build] image / \
                --image",
};

/// How a run ended: its status and its last lines (stdout and stderr interleaved as read).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub tail: VecDeque<String>,
}

impl Finished {
    /// The last lines as one text (for errors).
    pub fn tail_text(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A command of `tool` with these arguments; stdin closed.
pub fn command<I, S>(tool: &Tool, args: I) -> tokio::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(tool.program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// The error of a tool that could not be started.
fn spawn_error(tool: &Tool, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow!(
            "{} is not installed: install it with `apt-get install {}` (Debian, Ubuntu), {}",
            tool.program,
            tool.package,
            tool.otherwise
        )
    } else {
        anyhow!(e).context(format!("starting {}", tool.program))
    }
}

/// Runs the command, showing every line of its output as it comes when `show` is set.
pub async fn run(
    tool: &Tool,
    mut cmd: tokio::process::Command,
    printer: &Printer,
    show: bool,
) -> anyhow::Result<Finished> {
    tracing::debug!(command = ?cmd.as_std(), "running");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(tool, e))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).split(b'\n');
    let mut err = BufReader::new(child.stderr.take().expect("piped")).split(b'\n');
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut keep = |bytes: Vec<u8>| {
        let line = String::from_utf8_lossy(&bytes)
            .trim_end_matches('\r')
            .to_string();
        if show {
            printer.note(&line);
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let (mut out_open, mut err_open) = (true, true);
    let reading = format!("reading the output of {}", tool.program);
    while out_open || err_open {
        // `next_segment` is cancel-safe: a line half read by the branch that lost stays buffered.
        tokio::select! {
            line = out.next_segment(), if out_open => match line.context(reading.clone())? {
                Some(l) => keep(l),
                None => out_open = false,
            },
            line = err.next_segment(), if err_open => match line.context(reading.clone())? {
                Some(l) => keep(l),
                None => err_open = false,
            },
        }
    }
    let status = child
        .wait()
        .await
        .with_context(|| format!("waiting for {}", tool.program))?;
    Ok(Finished { status, tail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::capture;

    #[tokio::test]
    async fn a_missing_tool_names_its_package_and_the_alternatives() {
        let (p, _, _) = capture::printer(Default::default());
        let tool = Tool {
            program: "aloft-test-no-such-builder",
            ..BUILDAH
        };
        let err = run(&tool, command(&tool, ["build"]), &p, true)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "aloft-test-no-such-builder is not installed: install it with `apt-get install buildah`"
            ),
            "{err}"
        );
        assert!(
            err.contains("[build] image") && err.contains("remove the Dockerfile"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn output_is_shown_line_by_line_and_its_tail_kept() {
        let (p, out, err) = capture::printer(Default::default());
        let sh = Tool {
            program: "sh",
            ..BUILDAH
        };
        let script = "echo one; echo two >&2; printf 'no newline'; exit 3";
        let finished = run(&sh, command(&sh, ["-c", script]), &p, true)
            .await
            .unwrap();
        assert_eq!(finished.status.code(), Some(3));
        let mut shown: Vec<String> = err.text().lines().map(str::to_string).collect();
        shown.sort();
        assert_eq!(shown, vec!["no newline", "one", "two"]);
        assert_eq!(out.text(), "", "tool output is a remark, on stderr");
        assert_eq!(finished.tail.len(), 3);
        let (p, _, err) = capture::printer(Default::default());
        run(&sh, command(&sh, ["-c", "echo quiet"]), &p, false)
            .await
            .unwrap();
        assert_eq!(err.text(), "");
    }
}
