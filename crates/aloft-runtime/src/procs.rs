//! A machine's processes as `ps` shows them ([`aloft_api::exec::ProcessStat`]), read from
//! `/proc/<pid>/{stat,cmdline,cwd,status,fd}` and the listening sockets of each process's network
//! namespace (`/proc/<pid>/net/{tcp,tcp6,udp,udp6}`, matched to the process by socket inode).
//! Which pids belong to a machine is the supervisor's (cgroup, session or pid namespace).

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aloft_api::exec::{ListenSocket, ProcessStat};

use crate::process;

/// TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// UDP state of a bound, unconnected socket (`TCP_CLOSE`, the kernel reuses the names).
const UDP_UNCONNECTED: &str = "07";

/// The processes `pids` (those that vanished meanwhile are left out), in pid order.
pub(crate) fn describe(pids: &[u32]) -> Vec<ProcessStat> {
    let clock = Clock::now();
    // Socket tables, read once per network namespace.
    let mut tables: HashMap<String, HashMap<u64, ListenSocket>> = HashMap::new();
    let mut list = Vec::new();
    for &pid in pids {
        let Some(stat) = process::proc_stat(pid) else {
            continue;
        };
        if stat.state == 'Z' || stat.state == 'X' {
            continue;
        }
        let netns = fs::read_link(format!("/proc/{pid}/ns/net"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("pid {pid}"));
        let sockets = tables.entry(netns).or_insert_with(|| listening(pid));
        let mut listen: Vec<ListenSocket> = socket_inodes(pid)
            .into_iter()
            .filter_map(|inode| sockets.get(&inode).cloned())
            .collect();
        listen.sort();
        listen.dedup();
        let started = clock.boot_secs + stat.start_time / clock.ticks;
        list.push(ProcessStat {
            pid: fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| namespace_pid(&s))
                .unwrap_or(pid),
            stime: started,
            rtime: clock.now_secs.saturating_sub(started),
            command: fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| command_line(&b))
                .ok()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| format!("[{}]", comm(pid))),
            directory: fs::read_link(format!("/proc/{pid}/cwd"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cpu: (stat.utime + stat.stime) * 1000 / clock.ticks,
            rss: stat.rss_pages * clock.page_size,
            listen_sockets: listen,
        });
    }
    list
}

/// What turns /proc's ticks and pages into seconds and bytes.
struct Clock {
    ticks: u64,
    page_size: u64,
    boot_secs: u64,
    now_secs: u64,
}

impl Clock {
    fn now() -> Clock {
        // SAFETY: sysconf only reads a system constant.
        #[allow(unsafe_code)]
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Clock {
            ticks: u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100),
            page_size: u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096),
            boot_secs: fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| boot_time(&s))
                .unwrap_or(0),
            now_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// `btime` of `/proc/stat`: boot time, Unix seconds.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The pid in the innermost pid namespace (`NSpid:` of `/proc/<pid>/status`, last column).
fn namespace_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|p| p.parse().ok())
}

/// `/proc/<pid>/cmdline` (NUL-separated) as one line.
fn command_line(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The inodes of the sockets `pid` holds open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let target = fs::read_link(e.ok()?.path()).ok()?;
        let target = target.to_str()?;
        target
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// Listening sockets of `pid`'s network namespace by inode.
fn listening(pid: u32) -> HashMap<u64, ListenSocket> {
    let mut by_inode = HashMap::new();
    for (file, proto, state) in [
        ("tcp", "tcp", TCP_LISTEN),
        ("tcp6", "tcp", TCP_LISTEN),
        ("udp", "udp", UDP_UNCONNECTED),
        ("udp6", "udp", UDP_UNCONNECTED),
    ] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            by_inode.extend(parse_socket_table(&text, proto, state));
        }
    }
    by_inode
}

/// The sockets in `state` of a `/proc/net/{tcp,udp}[6]` table, by inode.
fn parse_socket_table(text: &str, proto: &str, state: &str) -> Vec<(u64, ListenSocket)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.get(3)? != &state {
                return None;
            }
            let (ip, port) = f.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            let address = match parse_ip(ip)? {
                IpAddr::V4(v4) => format!("{v4}:{port}"),
                IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            };
            Some((
                inode,
                ListenSocket {
                    proto: proto.to_string(),
                    address,
                },
            ))
        })
        .collect()
}

/// An address as the kernel prints it: 32-bit words in hex, each in host byte order.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn socket_tables_give_listening_addresses_by_inode() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2C4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";
        let found = parse_socket_table(tcp, "tcp", TCP_LISTEN);
        assert_eq!(
            found,
            [(
                4242,
                ListenSocket {
                    proto: "tcp".into(),
                    address: "127.0.0.1:8080".into()
                }
            )]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0000000000000000 100 0 0 10 0
";
        let found = parse_socket_table(tcp6, "tcp", TCP_LISTEN);
        assert_eq!(found[0].1.address, "[::]:80");
        assert_eq!(found[1].1.address, "[::1]:81");
    }

    #[test]
    fn status_cmdline_and_boot_time_are_read() {
        let status = "Name:\tsleep\nPid:\t31337\nNSpid:\t31337\t7\nPPid:\t1\n";
        assert_eq!(namespace_pid(status), Some(7));
        assert_eq!(namespace_pid("Name:\tx\n"), None);
        assert_eq!(command_line(b"sh\0-c\0echo hi\0"), "sh -c echo hi");
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\nprocesses 9\n"),
            Some(1700000000)
        );
    }

    #[test]
    fn own_listening_socket_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = describe(&[std::process::id()]);
        assert_eq!(me.len(), 1);
        assert!(
            me[0]
                .listen_sockets
                .iter()
                .any(|s| s.proto == "tcp" && s.address == format!("127.0.0.1:{port}")),
            "{:?}",
            me[0].listen_sockets
        );
        assert!(me[0].rss > 0);
        assert!(!me[0].command.is_empty());
    }
}
