//! Helpers: a server over a test table, clients over UDP and TCP, and a test double of an
//! upstream resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aloft_dns::{DnsConfig, DnsHandle, DnsMachine, DnsServer, DnsService, DnsTable};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

/// The host's (not a machine's) address: sees every organization.
pub const HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Machine m1 of app `web` (org `acme`) asks from here.
pub const WEB_M1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Machine s1 of app `shop` (org `globex`) asks from here.
pub const SHOP_S1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

pub fn ip6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfdaa, 0, 0, 1, 1, 0, 0, n)
}

pub fn machine(id: &str, app: &str, org: &str, group: &str, region: &str, n: u16) -> DnsMachine {
    DnsMachine {
        id: id.into(),
        app: app.into(),
        org: org.into(),
        group: group.into(),
        region: region.into(),
        started: true,
        ip6: ip6(n),
        ip4: None,
    }
}

/// `web` (acme): m1 app/ams (asks from 127.0.0.2), m2 worker/ams, m3 worker/fra, m4 worker/ams
/// stopped, a Flycast address; `shop` (globex): s1 app/fra (asks from 127.0.0.3).
pub fn fleet() -> (Vec<DnsMachine>, Vec<DnsService>) {
    let mut m1 = machine("m1", "web", "acme", "app", "ams", 1);
    m1.ip4 = Some(Ipv4Addr::new(127, 0, 0, 2));
    let mut m4 = machine("m4", "web", "acme", "worker", "ams", 4);
    m4.started = false;
    let mut s1 = machine("s1", "shop", "globex", "app", "fra", 9);
    s1.ip4 = Some(Ipv4Addr::new(127, 0, 0, 3));
    let machines = vec![
        m1,
        machine("m2", "web", "acme", "worker", "ams", 2),
        machine("m3", "web", "acme", "worker", "fra", 3),
        m4,
        s1,
    ];
    let services = vec![DnsService {
        app: "web".into(),
        org: "acme".into(),
        ip6: flycast_ip(),
    }];
    (machines, services)
}

pub fn flycast_ip() -> Ipv6Addr {
    "fdaa:0:0:1:1:f::1".parse().unwrap()
}

/// A running server and the sender of its table.
pub struct Dns {
    pub handle: DnsHandle,
    pub addr: SocketAddr,
    pub table: watch::Sender<Arc<DnsTable>>,
}

pub async fn start(configure: impl FnOnce(&mut DnsConfig)) -> Dns {
    let (machines, services) = fleet();
    start_with_table(DnsTable::new(machines, services), configure).await
}

pub async fn start_with_table(table: DnsTable, configure: impl FnOnce(&mut DnsConfig)) -> Dns {
    let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse().unwrap()], Vec::new());
    configure(&mut config);
    let (sender, receiver) = watch::channel(Arc::new(table));
    let handle = DnsServer::spawn(config, receiver).await.unwrap();
    let addr = handle.local_addrs()[0];
    assert_ne!(addr.port(), 0, "spawn reports the bound port");
    Dns {
        handle,
        addr,
        table: sender,
    }
}

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

pub fn query_message(name: &str, rtype: RecordType) -> Message {
    let mut message = Message::new();
    message
        .set_id(NEXT_ID.fetch_add(1, Ordering::Relaxed))
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message
}

/// How long a test waits for one answer before sending again (UDP may drop on a busy host)…
pub const ATTEMPT: Duration = Duration::from_secs(2);
/// …and how many times: only turns a hang into a failure.
pub const ATTEMPTS: usize = 10;

/// Sends `bytes` from `from` over UDP until a datagram answers (same id), and returns it.
pub async fn exchange_udp(server: SocketAddr, from: IpAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind((from, 0)).await.unwrap();
    for _ in 0..ATTEMPTS {
        socket.send_to(bytes, server).await.unwrap();
        if let Some(answer) = receive_answer(&socket, bytes, ATTEMPT).await {
            return answer;
        }
    }
    panic!("no UDP answer from {server} to a query from {from}");
}

/// The next datagram on `socket` with the id of `query`, within `wait`.
pub async fn receive_answer(socket: &UdpSocket, query: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0; 65536];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
        let len = received.ok()?.unwrap();
        if len >= 2 && buf[..2] == query[..2] {
            return Some(buf[..len].to_vec());
        }
    }
}

pub async fn ask_from(server: SocketAddr, from: IpAddr, name: &str, rtype: RecordType) -> Message {
    let query = query_message(name, rtype).to_vec().unwrap();
    let answer = Message::from_vec(&exchange_udp(server, from, &query).await).unwrap();
    assert_eq!(answer.message_type(), MessageType::Response);
    answer
}

pub async fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    ask_from(server, HOST, name, rtype).await
}

/// One query over a new TCP connection.
pub async fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let query = query_message(name, rtype).to_vec().unwrap();
    let mut stream = TcpStream::connect(server).await.unwrap();
    let answer = exchange_tcp(&mut stream, &query)
        .await
        .expect("a TCP answer");
    Message::from_vec(&answer).unwrap()
}

/// Writes one framed query and reads one framed answer; `None` if the server closed first.
pub async fn exchange_tcp(stream: &mut TcpStream, query: &[u8]) -> Option<Vec<u8>> {
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.ok()?;
    let read = async {
        let len = stream.read_u16().await.ok()?;
        let mut answer = vec![0; usize::from(len)];
        stream.read_exact(&mut answer).await.ok()?;
        Some(answer)
    };
    tokio::time::timeout(ATTEMPT * ATTEMPTS as u32, read)
        .await
        .expect("the server neither answered nor closed")
}

pub fn aaaa(message: &Message) -> Vec<Ipv6Addr> {
    message
        .answers()
        .iter()
        .map(|record| match record.data() {
            RData::AAAA(ip) => ip.0,
            other => panic!("not an AAAA: {other:?}"),
        })
        .collect()
}

/// The text of the one TXT answer (its strings concatenated).
pub fn txt(message: &Message) -> String {
    match message.answers() {
        [record] => match record.data() {
            RData::TXT(txt) => txt
                .iter()
                .map(|s| String::from_utf8(s.to_vec()).unwrap())
                .collect(),
            other => panic!("not a TXT: {other:?}"),
        },
        other => panic!("not one TXT answer: {other:?}"),
    }
}

pub fn assert_code(message: &Message, code: ResponseCode) {
    assert_eq!(message.response_code(), code, "{message:?}");
}

/// A test double of an upstream resolver on 127.0.0.1: answers every question with
/// `A 192.0.2.1` (`Answering`), receives and never answers (`Silent`), or answers over UDP
/// truncated (TC, no records) and fully over TCP on the same port (`Truncating`).
pub struct FakeUpstream {
    pub addr: SocketAddr,
    /// UDP queries received.
    pub received: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Answering,
    Silent,
    Truncating,
}

/// The double's answer to `query` (`truncated`: TC set, no records).
fn upstream_answer(query: &[u8], truncated: bool) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut answer = Message::new();
    answer
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_available(true)
        .set_truncated(truncated);
    answer.add_queries(query.queries().iter().cloned());
    if !truncated {
        let name = query.queries().first()?.name().clone();
        answer.add_answer(Record::from_rdata(name, 60, RData::A(A(UPSTREAM_ANSWER))));
    }
    answer.to_vec().ok()
}

pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

impl FakeUpstream {
    pub async fn spawn(mode: Upstream) -> FakeUpstream {
        // UDP and TCP on one port: a port the OS gave for UDP may be taken for TCP by another
        // process, so try a few until both bind.
        let (socket, tcp) = loop {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if mode != Upstream::Truncating {
                break (socket, None);
            }
            match tokio::net::TcpListener::bind(socket.local_addr().unwrap()).await {
                Ok(listener) => break (socket, Some(listener)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("binding the fake upstream's TCP port: {e}"),
            }
        };
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&received);
        let mut tasks = vec![tokio::spawn(async move {
            let mut buf = vec![0; 65536];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                if mode == Upstream::Silent {
                    continue;
                }
                if let Some(answer) = upstream_answer(&buf[..len], mode == Upstream::Truncating) {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        })];
        if let Some(listener) = tcp {
            tasks.push(tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let Ok(len) = stream.read_u16().await else {
                        continue;
                    };
                    let mut query = vec![0; usize::from(len)];
                    if stream.read_exact(&mut query).await.is_err() {
                        continue;
                    }
                    if let Some(answer) = upstream_answer(&query, false) {
                        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        let _ = stream.write_all(&framed).await;
                    }
                }
            }));
        }
        FakeUpstream {
            addr,
            received,
            tasks,
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
