//! Machine networking on a real host (root only): namespaces, addresses, reachability with real
//! TCP connections, NAT, loopback isolation, cleanup and idempotence.
//!
//! Every test has its own bridge and /24 (derived from the process id and a per-test number),
//! so tests running in parallel, other runs of this binary and a real agent's `aloft0` never
//! share one; a fixture tears the bridge, its rules and its namespaces down on drop, panics
//! included. Code inside a namespace runs on a thread that entered it with setns(2): sockets it
//! makes stay in that namespace.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use aloft_runtime::net::{NetConfig, NetError, Network};
use nix::sched::{setns, CloneFlags};

const PATIENCE: Duration = Duration::from_secs(10);

/// Whether this host lets the tests change its network.
fn can_network() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root to create bridges and network namespaces".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Err(format!("`{tool}` is missing (apt-get install {package})"));
        }
    }
    Ok(())
}

/// A bridge name and subnet of this test alone, and the state directory; tears everything down
/// on drop.
struct Fixture {
    config: NetConfig,
    state: tempfile::TempDir,
}

impl Fixture {
    /// `None` (test skipped) where the host does not allow it. `n` is unique per test.
    fn new(test: &str, n: u8) -> Option<Fixture> {
        if !aloft_testkit::privileged_or_skip(test, can_network()) {
            return None;
        }
        let pid = std::process::id();
        let config = NetConfig {
            bridge: format!("alt{}-{n}", pid % 100_000),
            // 10.210–10.249: clear of the default 10.209.0.0/16 of a real agent.
            subnet: format!("10.{}.{n}.0/24", 210 + pid % 40).parse().unwrap(),
        };
        Some(Fixture {
            config,
            state: tempfile::tempdir().unwrap(),
        })
    }

    /// `Network::setup` on this fixture's bridge and state (again: as a restarted agent).
    fn setup(&self) -> Network {
        Network::setup(self.config.clone(), self.state.path()).expect("network setup")
    }

    /// `10.x.n.last`.
    fn address(&self, last: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.config.subnet.network().octets();
        Ipv4Addr::new(a, b, c, last)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let result = Network::setup(self.config.clone(), self.state.path())
            .and_then(|network| network.teardown());
        if let Err(e) = result {
            eprintln!("teardown of {} failed: {e}", self.config.bridge);
        }
    }
}

/// Runs `f` on a thread inside the network namespace at `netns`.
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
    thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns into the machine's namespace");
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// Accepts `count` connections on `listener`, answering each with `greeting` and its peer's
/// address; returns the peers.
fn serve(
    listener: TcpListener,
    greeting: &'static str,
    count: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    thread::spawn(move || {
        (0..count)
            .map(|_| {
                let (mut stream, peer) = listener.accept().expect("accept");
                stream.write_all(greeting.as_bytes()).expect("answer");
                peer
            })
            .collect()
    })
}

/// Connects to `addr` and reads what the server says.
fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, PATIENCE)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn iptables_rules(table: &str) -> String {
    let out = Command::new("iptables")
        .args(["-w", "10", "-t", table, "-S"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn count_rules(table: &str, bridge: &str) -> usize {
    let comment = format!("--comment \"aloft:{bridge}\"");
    iptables_rules(table)
        .lines()
        .filter(|l| l.contains(&comment))
        .count()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

#[test]
fn two_machines_get_their_own_addresses_and_both_serve_8080() {
    let Some(fx) = Fixture::new(
        "two_machines_get_their_own_addresses_and_both_serve_8080",
        1,
    ) else {
        return;
    };
    let net = fx.setup();
    let a = net.attach("machine-a").unwrap();
    let b = net.attach("machine-b").unwrap();

    assert_eq!(
        a.ip,
        fx.address(2),
        "the lowest free address past the gateway"
    );
    assert_eq!(b.ip, fx.address(3));
    assert_eq!(a.gateway, fx.address(1));
    assert_eq!(a.prefix, 24);
    assert_eq!(a.netns_path, PathBuf::from("/run/netns/aloft-machine-a"));
    assert!(a.netns_path.exists() && b.netns_path.exists());

    // Both listen on 8080, each in its own namespace.
    let server_a = serve(
        in_netns(&a.netns_path, || TcpListener::bind("0.0.0.0:8080")).unwrap(),
        "I am a",
        1,
    );
    let server_b = serve(
        in_netns(&b.netns_path, || TcpListener::bind("0.0.0.0:8080")).unwrap(),
        "I am b",
        1,
    );
    assert_eq!(fetch(SocketAddr::new(a.ip.into(), 8080)).unwrap(), "I am a");
    assert_eq!(fetch(SocketAddr::new(b.ip.into(), 8080)).unwrap(), "I am b");
    // The host reached them from the gateway address, not through NAT.
    assert_eq!(server_a.join().unwrap()[0].ip(), IpAddr::from(a.gateway));
    server_b.join().unwrap();

    assert_eq!(net.attached(), vec!["machine-a", "machine-b"]);
    assert_eq!(net.attachment("machine-a"), Some(a));
    assert_eq!(net.attachment("machine-c"), None);
}

#[test]
fn a_machine_reaches_the_host_at_the_gateway_but_not_the_hosts_loopback() {
    let Some(fx) = Fixture::new(
        "a_machine_reaches_the_host_at_the_gateway_but_not_the_hosts_loopback",
        2,
    ) else {
        return;
    };
    let net = fx.setup();
    let m = net.attach("machine-gw").unwrap();

    let on_gateway = TcpListener::bind((m.gateway, 0)).unwrap();
    let gateway_addr = on_gateway.local_addr().unwrap();
    let host_side = serve(on_gateway, "host", 1);
    let answer = in_netns(&m.netns_path, move || fetch(gateway_addr));
    assert_eq!(answer.unwrap(), "host");
    assert_eq!(host_side.join().unwrap()[0].ip(), IpAddr::from(m.ip));

    // A host service on 127.0.0.1: the host reaches it, the machine does not, neither at
    // 127.0.0.1 (its own loopback) nor through the gateway.
    let loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = loopback.local_addr().unwrap().port();
    let control = serve(loopback, "loopback", 1);
    assert_eq!(
        fetch(SocketAddr::from(([127, 0, 0, 1], port))).unwrap(),
        "loopback"
    );
    control.join().unwrap();
    let gateway = m.gateway;
    let (via_loopback, via_gateway) = in_netns(&m.netns_path, move || {
        (
            fetch(SocketAddr::from(([127, 0, 0, 1], port))),
            fetch(SocketAddr::new(gateway.into(), port)),
        )
    });
    assert_eq!(
        via_loopback.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert_eq!(
        via_gateway.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

/// An "outside" host: a namespace on a veth link of its own (not the bridge), removed on drop.
struct Outside {
    netns: String,
    host_end: String,
    host_ip: Ipv4Addr,
    ip: Ipv4Addr,
}

impl Outside {
    fn new(n: u8) -> Outside {
        let pid = std::process::id();
        let outside = Outside {
            netns: format!("alofttest-out-{pid}-{n}"),
            host_end: format!("ato{}-{n}", pid % 100_000),
            host_ip: Ipv4Addr::new(172, 31, (pid % 250) as u8, 1),
            ip: Ipv4Addr::new(172, 31, (pid % 250) as u8, 2),
        };
        ip(&["netns", "add", &outside.netns]);
        ip(&[
            "link",
            "add",
            &outside.host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.netns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", outside.host_ip),
            "dev",
            &outside.host_end,
        ]);
        ip(&["link", "set", "dev", &outside.host_end, "up"]);
        ip(&[
            "-n",
            &outside.netns,
            "addr",
            "add",
            &format!("{}/30", outside.ip),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &outside.netns, "link", "set", "dev", "eth0", "up"]);
        outside
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &self.host_end])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

#[test]
fn outbound_traffic_leaves_through_nat_with_the_hosts_address() {
    let Some(fx) = Fixture::new(
        "outbound_traffic_leaves_through_nat_with_the_hosts_address",
        3,
    ) else {
        return;
    };
    let net = fx.setup();
    let m = net.attach("machine-out").unwrap();
    let outside = Outside::new(3);

    let listener = in_netns(&outside.path(), || TcpListener::bind("0.0.0.0:0")).unwrap();
    let target = SocketAddr::new(outside.ip.into(), listener.local_addr().unwrap().port());
    let server = serve(listener, "outside", 1);
    let answer = in_netns(&m.netns_path, move || fetch(target));
    assert_eq!(answer.unwrap(), "outside");
    let peer = server.join().unwrap()[0];
    assert_eq!(
        peer.ip(),
        IpAddr::from(outside.host_ip),
        "masqueraded to the host's address on the way out, not the machine's {}",
        m.ip
    );
}

#[test]
fn detach_removes_namespace_and_veth_and_frees_the_address() {
    let Some(fx) = Fixture::new("detach_removes_namespace_and_veth_and_frees_the_address", 4)
    else {
        return;
    };
    let net = fx.setup();
    let a = net.attach("machine-d1").unwrap();
    let b = net.attach("machine-d2").unwrap();
    assert!(link_exists(&a.host_veth));

    net.detach("machine-d1").unwrap();
    assert!(!a.netns_path.exists());
    assert!(
        !link_exists(&a.host_veth),
        "ip link still lists {}",
        a.host_veth
    );
    assert_eq!(net.attachment("machine-d1"), None);
    assert_eq!(net.attached(), vec!["machine-d2"]);
    net.detach("machine-d1").expect("detaching twice is fine");

    let c = net.attach("machine-d3").unwrap();
    assert_eq!(c.ip, a.ip, "the freed address is given again");
    assert_ne!(c.ip, b.ip);
}

#[test]
fn a_restarted_agent_finds_its_machines_where_it_left_them() {
    let Some(fx) = Fixture::new("a_restarted_agent_finds_its_machines_where_it_left_them", 5)
    else {
        return;
    };
    let first = fx.setup();
    first.attach("machine-r0").unwrap();
    let m = first.attach("machine-r1").unwrap();
    assert_eq!(
        first.attach("machine-r1").unwrap(),
        m,
        "attach is idempotent"
    );
    let listener = in_netns(&m.netns_path, || TcpListener::bind("0.0.0.0:8080")).unwrap();
    drop(first); // the agent dies: nothing is removed

    let second = fx.setup();
    assert_eq!(second.attached(), vec!["machine-r0", "machine-r1"]);
    assert_eq!(second.attachment("machine-r1").as_ref(), Some(&m));
    let again = second.attach("machine-r1").unwrap();
    assert_eq!(again, m, "same address and namespace after the restart");
    // The socket made before the restart is still reached: the namespace was kept, not remade.
    let server = serve(listener, "still here", 1);
    assert_eq!(
        fetch(SocketAddr::new(m.ip.into(), 8080)).unwrap(),
        "still here"
    );
    server.join().unwrap();

    // The new agent re-adopts machine-r1 only: the other one is reaped.
    assert_eq!(
        second.reap_unknown(&["machine-r1".to_string()]).unwrap(),
        vec!["machine-r0"]
    );
    assert_eq!(second.attached(), vec!["machine-r1"]);
    assert!(!Path::new("/run/netns/aloft-machine-r0").exists());
}

#[test]
fn setup_twice_adds_each_rule_once_and_teardown_removes_all() {
    let Some(fx) = Fixture::new(
        "setup_twice_adds_each_rule_once_and_teardown_removes_all",
        6,
    ) else {
        return;
    };
    let bridge = fx.config.bridge.clone();
    let net = fx.setup();
    let _again = fx.setup();
    assert_eq!(count_rules("nat", &bridge), 1);
    assert_eq!(count_rules("filter", &bridge), 2);
    assert!(iptables_rules("nat").contains(&format!(
        "-A POSTROUTING -s {} ! -o {bridge} -m comment --comment \"aloft:{bridge}\" -j MASQUERADE",
        fx.config.subnet
    )));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let m = net.attach("machine-t").unwrap();

    net.teardown().unwrap();
    assert_eq!(count_rules("nat", &bridge), 0);
    assert_eq!(count_rules("filter", &bridge), 0);
    assert!(!link_exists(&bridge));
    assert!(!m.netns_path.exists());
    assert!(net.attached().is_empty());
    net.teardown().expect("teardown twice is fine");
}

#[test]
fn concurrent_attaches_get_distinct_addresses() {
    let Some(fx) = Fixture::new("concurrent_attaches_get_distinct_addresses", 7) else {
        return;
    };
    let net = Arc::new(fx.setup());
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let net = net.clone();
            thread::spawn(move || net.attach(&format!("machine-c{i}")).unwrap().ip)
        })
        .collect();
    let mut ips: Vec<Ipv4Addr> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    ips.sort();
    let expected: Vec<Ipv4Addr> = (2..8).map(|last| fx.address(last)).collect();
    assert_eq!(ips, expected);
}

#[test]
fn bad_input_is_refused_before_anything_is_made() {
    let Some(fx) = Fixture::new("bad_input_is_refused_before_anything_is_made", 8) else {
        return;
    };
    let net = fx.setup();
    let err = net.attach("../../etc").unwrap_err();
    assert!(matches!(err, NetError::MachineId { .. }), "{err}");
    assert!(err.to_string().contains("../../etc"), "{err}");
    assert!(net.attached().is_empty());
    assert!(net.detach("a b").is_err());

    let too_long = NetConfig {
        bridge: "a-much-too-long-bridge".into(),
        subnet: fx.config.subnet,
    };
    let err = Network::setup(too_long, fx.state.path()).err().unwrap();
    assert!(err.to_string().contains("15 characters"), "{err}");
    assert!(!link_exists("a-much-too-long"));
}

#[test]
fn attach_makes_again_what_went_missing() {
    let Some(fx) = Fixture::new("attach_makes_again_what_went_missing", 9) else {
        return;
    };
    let net = fx.setup();
    let m = net.attach("machine-fix").unwrap();

    // The veth pair is deleted behind the agent's back: attach makes a new one.
    ip(&["link", "del", "dev", &m.host_veth]);
    assert_eq!(net.attach("machine-fix").unwrap(), m);
    let server = serve(
        in_netns(&m.netns_path, || TcpListener::bind("0.0.0.0:8080")).unwrap(),
        "repaired",
        1,
    );
    assert_eq!(
        fetch(SocketAddr::new(m.ip.into(), 8080)).unwrap(),
        "repaired"
    );
    server.join().unwrap();

    // So is the namespace (its veth goes with it).
    ip(&["netns", "del", "aloft-machine-fix"]);
    let again = net.attach("machine-fix").unwrap();
    assert_eq!(again, m);
    let server = serve(
        in_netns(&again.netns_path, || TcpListener::bind("0.0.0.0:8080")).unwrap(),
        "made anew",
        1,
    );
    assert_eq!(
        fetch(SocketAddr::new(m.ip.into(), 8080)).unwrap(),
        "made anew"
    );
    server.join().unwrap();
}
