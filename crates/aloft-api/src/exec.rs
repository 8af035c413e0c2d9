//! `POST …/machines/{id}/exec` and `GET …/machines/{id}/ps`: running a command in a machine and
//! listing its processes (Fly's `MachineExecRequest`, exec response, `ProcessStat`,
//! `ListenSocket`), with the limits and conventions Aloft answers with.

use serde::{Deserialize, Serialize};

/// Seconds an exec runs when the request gives no `timeout`.
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 30;
/// Longest `timeout` an exec may ask for, in seconds.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 600;
/// Bytes of each of stdout and stderr an exec answer carries; the rest is dropped and the
/// stream ends with [`truncated_note`].
pub const EXEC_OUTPUT_CAP: usize = 1 << 20;
/// Largest `stdin` an exec accepts, in bytes.
pub const MAX_EXEC_STDIN: usize = 1 << 20;
/// Exit code of a command the machine could not find (as a shell answers).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code of a command found but not executable (as a shell answers).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code of a command killed because its `timeout` passed (as `timeout(1)` answers).
pub const EXIT_TIMED_OUT: i32 = 124;

/// The body of an exec request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineExecRequest {
    /// The command and its arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Deprecated by Fly (flyctl still sends it): one string, split as a shell would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// The container of a multi-container machine; Aloft machines have one, so only empty
    /// or `app` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Written to the command's standard input, which is then closed (none: empty input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Seconds before the command is killed (default [`DEFAULT_EXEC_TIMEOUT_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

impl MachineExecRequest {
    /// The argv to run: `command`, else `cmd` split as a shell would. The error says what is
    /// wrong with the request.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        let argv = match (&self.command, &self.cmd) {
            (Some(c), _) if !c.is_empty() => c.clone(),
            (_, Some(cmd)) if !cmd.trim().is_empty() => shlex::split(cmd).ok_or_else(|| {
                format!("cmd {cmd:?} cannot be split into words (an unclosed quote?)")
            })?,
            _ => return Err("give the command to run in `command` (a list of strings)".into()),
        };
        if argv[0].is_empty() {
            return Err("the command's first word (the program) is empty".into());
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("the command contains a NUL byte".into());
        }
        Ok(argv)
    }

    /// The timeout in seconds: the default when unset or 0, refused above the maximum.
    pub fn timeout_secs(&self) -> Result<u64, String> {
        match self.timeout {
            None | Some(0) => Ok(DEFAULT_EXEC_TIMEOUT_SECS),
            Some(t) if t > MAX_EXEC_TIMEOUT_SECS => Err(format!(
                "timeout {t} is longer than the {MAX_EXEC_TIMEOUT_SECS} seconds an exec may run"
            )),
            Some(t) => Ok(t),
        }
    }
}

/// What an exec answers: the command ran (whatever its exit code).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineExecResponse {
    /// The command's exit code; [`EXIT_NOT_FOUND`] / [`EXIT_NOT_EXECUTABLE`] when it could not
    /// be started, [`EXIT_TIMED_OUT`] when its timeout killed it.
    pub exit_code: i32,
    /// The signal that ended it (0: it exited).
    pub exit_signal: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The line a capped output stream ends with.
pub fn truncated_note(dropped: u64) -> String {
    format!("\n[aloft: output truncated, {dropped} more bytes dropped]\n")
}

/// One process of a machine (`GET …/ps`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStat {
    /// The pid as the machine sees it (inside a container: its pid namespace's).
    pub pid: u32,
    /// When the process started, Unix seconds.
    pub stime: u64,
    /// How long it has run, seconds.
    pub rtime: u64,
    /// Its command line, arguments joined by spaces (its name in brackets when it has none).
    pub command: String,
    /// Its working directory (as the agent sees it; `/` inside a container's root).
    pub directory: String,
    /// CPU time used (user + system), milliseconds.
    pub cpu: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    pub listen_sockets: Vec<ListenSocket>,
}

/// A socket a process listens on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListenSocket {
    /// `tcp` or `udp` (IPv4 and IPv6 alike).
    pub proto: String,
    /// `ip:port` (`[ip]:port` for IPv6).
    pub address: String,
}

/// `sort_by` of `ps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessSort {
    Pid,
    Cpu,
    Rss,
    Stime,
    Rtime,
    Command,
}

/// The `sort_by` values `ps` accepts.
pub const PROCESS_SORT_KEYS: &[&str] = &["pid", "cpu", "rss", "stime", "rtime", "command"];

impl ProcessSort {
    /// `sort_by` (empty: pid); `None` for an unknown key.
    pub fn parse(s: &str) -> Option<ProcessSort> {
        Some(match s {
            "" | "pid" => ProcessSort::Pid,
            "cpu" => ProcessSort::Cpu,
            "rss" | "mem" | "memory" => ProcessSort::Rss,
            "stime" => ProcessSort::Stime,
            "rtime" => ProcessSort::Rtime,
            "command" => ProcessSort::Command,
            _ => return None,
        })
    }

    /// Sorts `list` by this key, ascending or descending (ties by pid).
    pub fn sort(self, list: &mut [ProcessStat], descending: bool) {
        list.sort_by(|a, b| {
            let by = match self {
                ProcessSort::Pid => a.pid.cmp(&b.pid),
                ProcessSort::Cpu => a.cpu.cmp(&b.cpu),
                ProcessSort::Rss => a.rss.cmp(&b.rss),
                ProcessSort::Stime => a.stime.cmp(&b.stime),
                ProcessSort::Rtime => a.rtime.cmp(&b.rtime),
                ProcessSort::Command => a.command.cmp(&b.command),
            }
            .then(a.pid.cmp(&b.pid));
            if descending {
                by.reverse()
            } else {
                by
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_wins_and_cmd_is_split_like_a_shell() {
        let r = MachineExecRequest {
            cmd: Some("sh -c 'echo a b'".into()),
            ..Default::default()
        };
        assert_eq!(r.argv().unwrap(), ["sh", "-c", "echo a b"]);
        let r = MachineExecRequest {
            command: Some(vec!["ls".into()]),
            cmd: Some("rm -rf /".into()),
            ..Default::default()
        };
        assert_eq!(r.argv().unwrap(), ["ls"]);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(MachineExecRequest::default()
            .argv()
            .unwrap_err()
            .contains("command"));
        let r = MachineExecRequest {
            cmd: Some("echo 'open".into()),
            ..Default::default()
        };
        assert!(r.argv().unwrap_err().contains("quote"));
        let r = MachineExecRequest {
            timeout: Some(MAX_EXEC_TIMEOUT_SECS + 1),
            ..Default::default()
        };
        assert!(r.timeout_secs().is_err());
        assert_eq!(
            MachineExecRequest::default().timeout_secs(),
            Ok(DEFAULT_EXEC_TIMEOUT_SECS)
        );
    }

    #[test]
    fn sorting_by_rss_descending_puts_the_largest_first() {
        let p = |pid, rss| ProcessStat {
            pid,
            rss,
            ..Default::default()
        };
        let mut list = vec![p(1, 10), p(2, 30), p(3, 20)];
        ProcessSort::parse("rss").unwrap().sort(&mut list, true);
        assert_eq!(list.iter().map(|p| p.pid).collect::<Vec<_>>(), [2, 3, 1]);
        assert!(ProcessSort::parse("nonsense").is_none());
    }
}
