//! Forwarding of other names to the upstream resolvers (a test double of one), its timeout and
//! its bound, and that a slow upstream never delays `.internal` answers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::net::{TcpStream, UdpSocket};

use crate::common::*;

fn a_records(message: &Message) -> Vec<std::net::Ipv4Addr> {
    message
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn other_names_are_answered_by_the_upstream() {
    let upstream = FakeUpstream::spawn(Upstream::Answering).await;
    let dns = start(|c| c.upstream = vec![upstream.addr]).await;
    let answer = ask(dns.addr, "example.test", RecordType::A).await;
    assert_code(&answer, ResponseCode::NoError);
    assert_eq!(a_records(&answer), vec![UPSTREAM_ANSWER]);
    let query = query_message("example.test", RecordType::A)
        .to_vec()
        .unwrap();
    let mut stream = TcpStream::connect(dns.addr).await.unwrap();
    let answer = Message::from_vec(&exchange_tcp(&mut stream, &query).await.unwrap()).unwrap();
    assert_eq!(a_records(&answer), vec![UPSTREAM_ANSWER], "over TCP too");
}

#[tokio::test]
async fn a_silent_upstream_gives_servfail_after_the_timeout_and_the_next_one_is_tried() {
    let silent = FakeUpstream::spawn(Upstream::Silent).await;
    let dns = start(|c| {
        c.upstream = vec![silent.addr];
        c.upstream_timeout = Duration::from_millis(200);
    })
    .await;
    let answer = ask(dns.addr, "example.test", RecordType::A).await;
    assert_code(&answer, ResponseCode::ServFail);
    assert!(silent.received.load(Ordering::SeqCst) >= 1);

    let answering = FakeUpstream::spawn(Upstream::Answering).await;
    let dns = start(|c| {
        c.upstream = vec![silent.addr, answering.addr];
        c.upstream_timeout = Duration::from_millis(200);
    })
    .await;
    let answer = ask(dns.addr, "example.test", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![UPSTREAM_ANSWER]);
}

#[tokio::test]
async fn no_upstream_gives_servfail() {
    let dns = start(|c| c.upstream = Vec::new()).await;
    let answer = ask(dns.addr, "example.test", RecordType::A).await;
    assert_code(&answer, ResponseCode::ServFail);
}

#[tokio::test]
async fn a_slow_upstream_does_not_delay_internal_answers() {
    let silent = FakeUpstream::spawn(Upstream::Silent).await;
    let dns = start(|c| {
        c.upstream = vec![silent.addr];
        c.upstream_timeout = Duration::from_secs(600);
    })
    .await;
    let client = UdpSocket::bind((HOST, 0)).await.unwrap();
    let forwarded = query_message("example.test", RecordType::A)
        .to_vec()
        .unwrap();
    client.send_to(&forwarded, dns.addr).await.unwrap();
    let internal = ask(dns.addr, "web.internal", RecordType::AAAA).await;
    assert_eq!(aaaa(&internal).len(), 3);
    assert!(
        receive_answer(&client, &forwarded, Duration::from_millis(100))
            .await
            .is_none(),
        "the forwarded query is still waiting for its upstream"
    );
}

#[tokio::test]
async fn forwards_in_flight_are_bounded() {
    let silent = FakeUpstream::spawn(Upstream::Silent).await;
    let dns = start(|c| {
        c.upstream = vec![silent.addr];
        c.upstream_timeout = Duration::from_secs(600);
        c.max_forwards = 2;
    })
    .await;
    let client = UdpSocket::bind((HOST, 0)).await.unwrap();
    for _ in 0..2 {
        let query = query_message("example.test", RecordType::A)
            .to_vec()
            .unwrap();
        client.send_to(&query, dns.addr).await.unwrap();
    }
    // Both forwards are in flight once the upstream has seen them.
    for _ in 0..ATTEMPTS * 20 {
        if silent.received.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(silent.received.load(Ordering::SeqCst), 2);
    // The third cannot wait for the 600 s timeout: it is refused at once.
    let answer = ask(dns.addr, "example.test", RecordType::A).await;
    assert_code(&answer, ResponseCode::ServFail);
    assert_eq!(
        silent.received.load(Ordering::SeqCst),
        2,
        "never sent upstream"
    );
    // And .internal is still answered.
    assert_eq!(
        aaaa(&ask(dns.addr, "web.internal", RecordType::AAAA).await).len(),
        3
    );
}

#[tokio::test]
async fn a_truncated_upstream_answer_is_fetched_over_tcp_for_tcp_clients() {
    let upstream = FakeUpstream::spawn(Upstream::Truncating).await;
    let dns = start(|c| c.upstream = vec![upstream.addr]).await;
    let udp = ask(dns.addr, "example.test", RecordType::A).await;
    assert!(
        udp.truncated(),
        "a UDP client gets the truncated answer, to retry over TCP"
    );
    let query = query_message("example.test", RecordType::A)
        .to_vec()
        .unwrap();
    let mut stream = TcpStream::connect(dns.addr).await.unwrap();
    let tcp = Message::from_vec(&exchange_tcp(&mut stream, &query).await.unwrap()).unwrap();
    assert!(!tcp.truncated());
    assert_eq!(a_records(&tcp), vec![UPSTREAM_ANSWER]);
}

#[tokio::test]
async fn one_source_cannot_take_every_forward_slot() {
    let silent = FakeUpstream::spawn(Upstream::Silent).await;
    let dns = start(|c| {
        c.upstream = vec![silent.addr];
        c.upstream_timeout = Duration::from_secs(600);
        c.max_forwards_per_source = 1;
    })
    .await;
    let greedy = UdpSocket::bind((HOST, 0)).await.unwrap();
    let query = query_message("example.test", RecordType::A)
        .to_vec()
        .unwrap();
    greedy.send_to(&query, dns.addr).await.unwrap();
    for _ in 0..ATTEMPTS * 20 {
        if silent.received.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(silent.received.load(Ordering::SeqCst), 1);
    // The same source again: refused at once.
    assert_code(
        &ask(dns.addr, "example.test", RecordType::A).await,
        ResponseCode::ServFail,
    );
    assert_eq!(silent.received.load(Ordering::SeqCst), 1);
    // Another source still gets its query forwarded.
    let other = UdpSocket::bind((WEB_M1, 0)).await.unwrap();
    let query = query_message("example.test", RecordType::A)
        .to_vec()
        .unwrap();
    other.send_to(&query, dns.addr).await.unwrap();
    for _ in 0..ATTEMPTS * 20 {
        if silent.received.load(Ordering::SeqCst) >= 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the other source's query was never forwarded");
}
