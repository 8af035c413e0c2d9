//! The DNS bench's three parts (driven by `bench/dns.sh`):
//!
//! - `bench records DIR APPS`: writes `DIR/names.txt` (the queried names, `NAME TYPE` per
//!   line, dnsperf's format) and `DIR/dnsmasq.conf` (the same records for dnsmasq, taken from
//!   the server's own answers so both serve exactly the same data);
//! - `bench serve APPS`: runs the server on 127.0.0.1 (OS-assigned port) over that table,
//!   prints `listening ADDR`, serves until killed;
//! - `bench compare ADDR ADDR NAMES`: asks both servers every name and fails unless they give
//!   the same records (order aside);
//! - `bench load ADDR NAMES SECONDS CONCURRENCY`: a closed-loop UDP load (CONCURRENCY queries
//!   in flight, each its own socket, names in turn) on one thread; prints answers/s and p50/p99
//!   latency.

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_dns::{DnsConfig, DnsMachine, DnsServer, DnsTable, RecordData, RecordType, Status, View};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::Name;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["records", dir, apps] => records(dir, apps.parse().expect("APPS is a number")),
        ["serve", apps] => serve(apps.parse().expect("APPS is a number")),
        ["compare", a, b, names] => compare(
            a.parse().expect("ADDR is host:port"),
            b.parse().expect("ADDR is host:port"),
            names,
        ),
        ["load", addr, names, seconds, concurrency] => load(
            addr.parse().expect("ADDR is host:port"),
            names,
            Duration::from_secs(seconds.parse().expect("SECONDS is a number")),
            concurrency.parse().expect("CONCURRENCY is a number"),
        ),
        _ => {
            eprintln!(
                "usage: bench records DIR APPS | bench serve APPS | bench compare ADDR ADDR NAMES | bench load ADDR NAMES SECONDS CONCURRENCY"
            );
            std::process::exit(2);
        }
    }
}

/// APPS apps of 4 started machines each (groups app/worker, regions ams/fra), in 5 orgs.
fn table(apps: u16) -> DnsTable {
    let mut machines = Vec::new();
    for app in 0..apps {
        for n in 0..4u16 {
            machines.push(DnsMachine {
                id: format!("m{app:03}{n}"),
                app: format!("app{app:03}"),
                org: format!("org{}", app % 5),
                group: if n % 2 == 0 { "app" } else { "worker" }.into(),
                region: if n < 2 { "ams" } else { "fra" }.into(),
                started: true,
                ip6: Ipv6Addr::new(0xfdaa, 0, 0, 1, app % 5, 0, app, n + 1),
                ip4: None,
            });
        }
    }
    DnsTable::new(machines, Vec::new())
}

/// The names asked of each app: every AAAA form and one TXT.
fn names(apps: u16) -> Vec<(String, RecordType)> {
    let mut names = Vec::new();
    for app in 0..apps {
        let app = format!("app{app:03}");
        names.push((format!("{app}.internal"), RecordType::AAAA));
        names.push((format!("worker.process.{app}.internal"), RecordType::AAAA));
        names.push((format!("ams.{app}.internal"), RecordType::AAAA));
        names.push((
            format!("{}1.vm.{app}.internal", app.replace("app", "m")),
            RecordType::AAAA,
        ));
        names.push((format!("vms.{app}.internal"), RecordType::TXT));
    }
    names
}

fn records(dir: &str, apps: u16) {
    let table = table(apps);
    let mut names_txt = String::new();
    let mut conf = String::from("no-resolv\nno-hosts\nlocal=/internal/\n");
    for (name, rtype) in names(apps) {
        writeln!(names_txt, "{name} {rtype}").unwrap();
        let answer = table.lookup(&View::All, &name, rtype);
        assert_eq!(answer.status, Status::NoError, "{name}");
        assert!(!answer.records.is_empty(), "{name}");
        for record in answer.records {
            match record.data {
                RecordData::Aaaa(ip) => writeln!(conf, "host-record={name},{ip}").unwrap(),
                RecordData::Txt(text) => writeln!(conf, "txt-record={name},\"{text}\"").unwrap(),
            }
        }
    }
    std::fs::write(format!("{dir}/names.txt"), names_txt).unwrap();
    std::fs::write(format!("{dir}/dnsmasq.conf"), conf).unwrap();
}

fn serve(apps: u16) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()], Vec::new());
        // The bench's load comes from one address; the agent's default would drop most of it.
        config.per_source_qps = None;
        let (_sender, receiver) = tokio::sync::watch::channel(Arc::new(table(apps)));
        let handle = DnsServer::spawn(config, receiver).await.unwrap();
        println!("listening {}", handle.local_addrs()[0]);
        std::future::pending::<()>().await;
    });
}

/// The queries of a names file (`NAME TYPE` per line), encoded, id 0.
fn read_queries(names_path: &str) -> Vec<Vec<u8>> {
    std::fs::read_to_string(names_path)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, rtype) = line.split_once(' ').unwrap();
            let mut message = Message::new();
            message
                .set_message_type(MessageType::Query)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(true);
            message.add_query(Query::query(
                Name::from_ascii(name).unwrap(),
                rtype.parse().unwrap(),
            ));
            message.to_vec().unwrap()
        })
        .collect()
}

fn compare(a: SocketAddr, b: SocketAddr, names_path: &str) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let ask = |server: SocketAddr, query: &[u8]| -> Vec<String> {
        let mut buf = vec![0; 65536];
        for _ in 0..5 {
            socket.send_to(query, server).unwrap();
            while let Ok(len) = socket.recv(&mut buf) {
                let Ok(answer) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if answer.id() == u16::from_be_bytes([query[0], query[1]]) {
                    let mut records: Vec<String> = answer
                        .answers()
                        .iter()
                        .map(|r| r.data().to_string())
                        .collect();
                    records.sort();
                    return records;
                }
            }
        }
        panic!("{server} did not answer");
    };
    for (n, mut query) in read_queries(names_path).into_iter().enumerate() {
        query[..2].copy_from_slice(&(n as u16).to_be_bytes());
        let (from_a, from_b) = (ask(a, &query), ask(b, &query));
        let name = Message::from_vec(&query).unwrap().queries()[0].to_string();
        assert!(!from_a.is_empty(), "{a} has no records for {name}");
        assert_eq!(from_a, from_b, "{a} and {b} differ for {name}");
    }
}

fn load(server: SocketAddr, names_path: &str, duration: Duration, concurrency: usize) {
    let queries = Arc::new(read_queries(names_path));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (latencies, lost) = runtime.block_on(async {
        let deadline = Instant::now() + duration;
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let queries = Arc::clone(&queries);
            tasks.push(tokio::spawn(async move {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                socket.connect(server).await.unwrap();
                let mut latencies = Vec::new();
                let mut lost = 0u64;
                let mut buf = vec![0; 65536];
                let mut i = worker;
                let mut id = 0u16;
                while Instant::now() < deadline {
                    let mut query = queries[i % queries.len()].clone();
                    i += 1;
                    id = id.wrapping_add(1);
                    query[..2].copy_from_slice(&id.to_be_bytes());
                    let sent = Instant::now();
                    socket.send(&query).await.unwrap();
                    let answered = tokio::time::timeout(Duration::from_secs(1), async {
                        loop {
                            let len = socket.recv(&mut buf).await.unwrap();
                            if len >= 12 && buf[..2] == id.to_be_bytes() {
                                return;
                            }
                        }
                    })
                    .await;
                    match answered {
                        Ok(()) => latencies.push(sent.elapsed().as_micros() as u64),
                        Err(_) => lost += 1,
                    }
                }
                (latencies, lost)
            }));
        }
        let mut all = Vec::new();
        let mut lost = 0;
        for task in tasks {
            let (latencies, l) = task.await.unwrap();
            all.extend(latencies);
            lost += l;
        }
        (all, lost)
    });
    let mut latencies = latencies;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "answers/s {:.0} p50_us {} p99_us {} lost {lost}",
        latencies.len() as f64 / duration.as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
    );
}
