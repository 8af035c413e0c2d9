//! Bad input: malformed and oversized queries, strange opcodes, TCP clients that send nothing
//! or garbage, and floods. After each, the server answers others.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::common::*;

async fn still_answers(server: SocketAddr) {
    let answer = ask(server, "web.internal", RecordType::AAAA).await;
    assert_eq!(aaaa(&answer).len(), 3, "the server still answers");
}

/// Sends `bytes` once and returns the answer if one comes within a short wait.
async fn answer_to(server: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let socket = UdpSocket::bind((HOST, 0)).await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let answer = receive_answer(&socket, bytes, Duration::from_millis(500)).await?;
    Some(Message::from_vec(&answer).unwrap())
}

#[tokio::test]
async fn malformed_queries_get_formerr_or_nothing() {
    let dns = start(|_| {}).await;
    let good = query_message("web.internal", RecordType::AAAA)
        .to_vec()
        .unwrap();
    // Header says one question, body is cut off.
    let cut = &good[..good.len() - 3];
    let answer = exchange_udp(dns.addr, HOST, cut).await;
    assert_code(&Message::from_vec(&answer).unwrap(), ResponseCode::FormErr);
    // A compression pointer pointing at itself.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x1c, 0x00, 0x01]);
    let answer = exchange_udp(dns.addr, HOST, &looped).await;
    assert_code(&Message::from_vec(&answer).unwrap(), ResponseCode::FormErr);
    // Too short for a header, and a response (never answered: no loops).
    for bytes in [&b"\x01"[..], &b"garbage"[..]] {
        assert!(answer_to(dns.addr, bytes).await.is_none());
    }
    let mut response = good.clone();
    response[2] |= 0x80;
    assert!(answer_to(dns.addr, &response).await.is_none());
    still_answers(dns.addr).await;
}

#[tokio::test]
async fn oversized_queries_get_formerr() {
    let dns = start(|_| {}).await;
    let mut big = query_message("web.internal", RecordType::AAAA)
        .to_vec()
        .unwrap();
    big.resize(8000, 0);
    let answer = exchange_udp(dns.addr, HOST, &big).await;
    assert_code(&Message::from_vec(&answer).unwrap(), ResponseCode::FormErr);
    still_answers(dns.addr).await;
}

#[tokio::test]
async fn several_questions_and_other_opcodes_are_refused_politely() {
    let dns = start(|_| {}).await;
    let mut two = query_message("web.internal", RecordType::AAAA);
    two.add_query(two.queries()[0].clone());
    let answer = exchange_udp(dns.addr, HOST, &two.to_vec().unwrap()).await;
    assert_code(&Message::from_vec(&answer).unwrap(), ResponseCode::FormErr);
    let mut update = query_message("web.internal", RecordType::AAAA);
    update.set_op_code(OpCode::Update);
    let answer = exchange_udp(dns.addr, HOST, &update.to_vec().unwrap()).await;
    assert_code(&Message::from_vec(&answer).unwrap(), ResponseCode::NotImp);
    still_answers(dns.addr).await;
}

/// Reads until the server closes the connection (EOF or reset); panics if it never does.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    let read = tokio::time::timeout(ATTEMPT * ATTEMPTS as u32, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.expect("the server never closed the connection");
}

#[tokio::test]
async fn silent_and_garbage_tcp_clients_are_closed_and_others_served() {
    let dns = start(|c| {
        c.tcp_idle_timeout = Duration::from_millis(300);
        c.max_tcp_connections_per_source = 4;
    })
    .await;
    let idler: IpAddr = "127.0.0.4".parse().unwrap();
    let mut silent = Vec::new();
    for _ in 0..8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((idler, 0).into()).unwrap();
        silent.push(socket.connect(dns.addr).await.unwrap());
    }
    // Others are served while the idler holds its connections.
    let answer = ask_tcp(dns.addr, "web.internal", RecordType::AAAA).await;
    assert_eq!(aaaa(&answer).len(), 3);
    for stream in &mut silent {
        closed_by_server(stream).await;
    }
    // Half a length prefix, then nothing.
    let mut slow = TcpStream::connect(dns.addr).await.unwrap();
    slow.write_all(&[0]).await.unwrap();
    closed_by_server(&mut slow).await;
    // A length prefix and garbage.
    let mut garbage = TcpStream::connect(dns.addr).await.unwrap();
    garbage.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    closed_by_server(&mut garbage).await;
    // A huge length prefix.
    let mut huge = TcpStream::connect(dns.addr).await.unwrap();
    huge.write_all(&[0xff, 0xff, 0, 0]).await.unwrap();
    closed_by_server(&mut huge).await;
    let answer = ask_tcp(dns.addr, "web.internal", RecordType::AAAA).await;
    assert_eq!(aaaa(&answer).len(), 3);
}

#[tokio::test]
async fn a_flooding_client_is_limited_and_others_still_answered() {
    const QPS: u32 = 200;
    let dns = start(|c| c.per_source_qps = Some(QPS)).await;
    let flooder: IpAddr = "127.0.0.5".parse().unwrap();
    let socket = UdpSocket::bind((flooder, 0)).await.unwrap();
    let query = query_message("web.internal", RecordType::AAAA)
        .to_vec()
        .unwrap();
    let started = Instant::now();
    let flood = async {
        for _ in 0..20_000 {
            socket.send_to(&query, dns.addr).await.unwrap();
        }
    };
    let counting = async {
        let mut answered = 0u64;
        while receive_answer(&socket, &query, Duration::from_millis(500))
            .await
            .is_some()
        {
            answered += 1;
        }
        answered
    };
    let ((), answered) = tokio::join!(flood, counting);
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(QPS) * (1.0 + elapsed) + 1.0;
    assert!(
        (answered as f64) <= allowed,
        "{answered} answers to a flood in {elapsed:.2}s, at most {allowed} allowed"
    );
    assert!(answered >= 1, "the flooder's first queries are answered");
    still_answers(dns.addr).await;
}
