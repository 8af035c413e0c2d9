//! Running `nft` (and `iptables`/`ip6tables`, only to open a host firewall whose `FORWARD`
//! policy drops, and to remove what older agents added) on the host, and
//! turning failures into errors that say what to do (a missing package, missing privileges, a
//! missing kernel module): [`hint`] reads netlink's answers too. Kernel settings
//! (`/proc/sys`) are written here as well.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::error::NetError;

/// A program this module runs, with the Debian package that has it.
#[derive(Clone, Copy, Debug)]
pub enum Tool {
    Nft,
    Iptables,
    Ip6tables,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Nft => "nft",
            Tool::Iptables => "iptables",
            Tool::Ip6tables => "ip6tables",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Tool::Nft => "nftables",
            Tool::Iptables | Tool::Ip6tables => "iptables",
        }
    }

    /// Whether the program is there.
    pub fn installed(self) -> bool {
        self.program().is_some()
    }

    /// The program's path: from `PATH`, else the sbin directories that a non-root `PATH` lacks.
    fn program(self) -> Option<PathBuf> {
        let name = self.name();
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }

    fn missing(self) -> NetError {
        NetError::ToolMissing {
            tool: self.name(),
            package: self.package(),
        }
    }

    /// Arguments every invocation gets: iptables waits for the xtables lock instead of failing
    /// when another process (another agent, a test) changes rules at the same moment.
    fn fixed_args(self) -> &'static [&'static str] {
        match self {
            Tool::Nft => &[],
            Tool::Iptables | Tool::Ip6tables => &["-w", "10"],
        }
    }
}

/// One command on the host, with what it is for (`bridge aloft0`).
pub struct HostCommand<'a> {
    tool: Tool,
    args: Vec<String>,
    stdin: Option<String>,
    target: &'a str,
}

impl<'a> HostCommand<'a> {
    pub fn new(tool: Tool, target: &'a str, args: &[&str]) -> HostCommand<'a> {
        let mut all: Vec<String> = tool.fixed_args().iter().map(|a| a.to_string()).collect();
        all.extend(args.iter().map(|a| a.to_string()));
        HostCommand {
            tool,
            args: all,
            stdin: None,
            target,
        }
    }

    /// `nft -f -` reading `script`: one transaction, all of it or nothing.
    pub fn nft_script(target: &'a str, script: &str) -> HostCommand<'a> {
        let mut command = HostCommand::new(Tool::Nft, target, &["-f", "-"]);
        command.stdin = Some(script.to_string());
        command
    }

    /// Runs it; its stdout when it exits 0.
    pub fn run(&self) -> Result<String, NetError> {
        let output = self.output()?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(self.failure(&output))
        }
    }

    /// Runs a command that asks a question: `Ok(true)` on exit 0, `Ok(false)` on exit 1 (how
    /// `nft list table` and `iptables -S` say "no"), an error otherwise or when stderr shows a
    /// missing privilege.
    pub fn check(&self) -> Result<bool, NetError> {
        Ok(self.query()?.is_some())
    }

    /// Like [`check`](Self::check), with the answer's stdout.
    pub fn query(&self) -> Result<Option<String>, NetError> {
        let output = self.output()?;
        match output.status.code() {
            Some(0) => Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned())),
            Some(1) if hint(&stderr(&output)) != PRIVILEGE_HINT => Ok(None),
            _ => Err(self.failure(&output)),
        }
    }

    fn output(&self) -> Result<Output, NetError> {
        let program = self.tool.program().ok_or_else(|| self.tool.missing())?;
        let mut command = Command::new(program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C");
        let spawned = command.spawn().and_then(|mut child| {
            if let (Some(input), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
                pipe.write_all(input.as_bytes())?;
            }
            child.wait_with_output()
        });
        spawned.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.tool.missing(),
            _ => NetError::Command {
                target: self.target.to_string(),
                command: self.display(),
                stderr: e.to_string(),
                hint: "check that the program can be run by the agent's user",
            },
        })
    }

    fn failure(&self, output: &Output) -> NetError {
        let stderr = stderr(output);
        NetError::Command {
            target: self.target.to_string(),
            command: self.display(),
            hint: hint(&stderr),
            stderr: if stderr.is_empty() {
                format!("{}", output.status)
            } else {
                stderr
            },
        }
    }

    /// The command line as a person would type it (batch input shown after `<<<`).
    fn display(&self) -> String {
        let mut line = self.tool.name().to_string();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&shlex::try_quote(arg).unwrap_or_else(|_| arg.into()));
        }
        if let Some(input) = &self.stdin {
            line.push_str(" <<< ");
            line.push_str(&format!("{:?}", input.trim_end()));
        }
        line
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

const PRIVILEGE_HINT: &str = "run the agent as root or with CAP_NET_ADMIN";

/// What to do about a failed command, read from what it printed.
pub fn hint(stderr: &str) -> &'static str {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("operation not permitted")
        || lower.contains("permission denied")
        || lower.contains("must be root")
    {
        PRIVILEGE_HINT
    } else if lower.contains("could not process rule") {
        "the kernel lacks an nftables module (load them: modprobe nf_tables nft_ct nft_nat \
         nft_masq nft_chain_nat nf_tables_bridge), or another program holds the table"
    } else if lower.contains("table does not exist")
        || lower.contains("can't initialize")
        || lower.contains("no chain/target/match")
        || lower.contains("extension")
    {
        "the kernel lacks a netfilter module (load it: modprobe iptable_nat xt_comment \
         xt_conntrack, or nf_tables), or iptables' backend does not match the host's"
    } else if lower.contains("file exists") {
        "a network interface or namespace of that name already exists: remove it, or configure \
         another bridge name"
    } else if lower.contains("unknown device type") || lower.contains("not supported") {
        "the kernel lacks veth or bridge support (modprobe veth bridge)"
    } else {
        "check the host's network setup (ip link, ip netns, nft list ruleset) and try again"
    }
}

/// Fails with the package to install when `nft` is missing, before anything on the host is
/// changed.
pub fn require_tools() -> Result<(), NetError> {
    Tool::Nft.program().ok_or_else(|| Tool::Nft.missing())?;
    Ok(())
}

/// Writes a kernel setting (`/proc/sys/...`) unless it already has the value.
pub fn sysctl(bridge: &str, path: &str, value: &str) -> Result<(), NetError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| NetError::Sysctl {
        bridge: bridge.to_string(),
        path: path.into(),
        source,
    })
}

/// Turns IPv6 forwarding on (`net.ipv6.conf.all.forwarding = 1`) unless it is on. A router
/// ignores router advertisements where `accept_ra` is 1, so the host would lose the addresses
/// and default routes it learnt from them: each interface that accepts them now is set to 2
/// (accept them while forwarding) first.
pub fn enable_ipv6_forwarding(bridge: &str) -> Result<(), NetError> {
    let conf = std::path::Path::new("/proc/sys/net/ipv6/conf");
    let all = conf.join("all/forwarding");
    if std::fs::read_to_string(&all).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    let interfaces = std::fs::read_dir(conf).map_err(|source| NetError::Sysctl {
        bridge: bridge.to_string(),
        path: conf.to_path_buf(),
        source,
    })?;
    for entry in interfaces.flatten() {
        let name = entry.file_name();
        if ["all", "default", "lo"].iter().any(|n| name == *n) {
            continue;
        }
        let accept_ra = entry.path().join("accept_ra");
        if std::fs::read_to_string(&accept_ra).is_ok_and(|v| v.trim() == "1") {
            sysctl(bridge, &accept_ra.to_string_lossy(), "2")?;
        }
    }
    sysctl(bridge, &all.to_string_lossy(), "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_failures_say_to_run_as_root() {
        assert_eq!(
            hint("RTNETLINK answers: Operation not permitted"),
            PRIVILEGE_HINT
        );
        assert_eq!(
            hint("iptables v1.8.9 (nf_tables): Permission denied (you must be root)"),
            PRIVILEGE_HINT
        );
        assert!(hint("RTNETLINK answers: File exists").contains("already exists"));
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        assert!(Tool::Nft.installed(), "nftables is a test dependency");
        assert_eq!(
            Tool::Nft.missing().to_string(),
            "`nft` is not installed, and machine networking needs it: install the \
             nftables package (apt-get install nftables)"
        );
    }

    #[test]
    fn commands_are_shown_as_typed() {
        let cmd = HostCommand::new(
            Tool::Iptables,
            "bridge b",
            &["-C", "FORWARD", "--comment", "aloft:b x"],
        );
        assert_eq!(
            cmd.display(),
            "iptables -w 10 -C FORWARD --comment 'aloft:b x'"
        );
        let script = HostCommand::nft_script("b", "delete table inet aloft-b\n");
        assert_eq!(
            script.display(),
            r#"nft -f - <<< "delete table inet aloft-b""#
        );
    }
}
