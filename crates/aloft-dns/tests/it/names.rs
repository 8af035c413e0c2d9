//! Every name form of the private network over the wire (UDP and TCP), negative answers, and
//! a table change seen by the next query.

use std::sync::Arc;

use aloft_dns::{DnsTable, TTL};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::common::*;

#[tokio::test]
async fn every_address_name_answers_the_started_machines() {
    let dns = start(|_| {}).await;
    let cases: &[(&str, &[u16])] = &[
        ("web.internal", &[1, 2, 3]),
        ("ams.web.internal", &[1, 2]),
        ("fra.web.internal", &[3]),
        ("worker.process.web.internal", &[2, 3]),
        ("app.process.web.internal", &[1]),
        ("m2.vm.web.internal", &[2]),
        ("m4.vm.web.internal", &[4]), // stopped: still that machine's address
        ("top2.nearest.of.web.internal", &[1, 2]),
        ("WEB.Internal.", &[1, 2, 3]),
    ];
    for (name, expected) in cases {
        let answer = ask(dns.addr, name, RecordType::AAAA).await;
        assert_code(&answer, ResponseCode::NoError);
        assert!(answer.authoritative(), "{name}");
        let expected: Vec<_> = expected.iter().map(|&n| ip6(n)).collect();
        assert_eq!(aaaa(&answer), expected, "{name}");
        assert!(answer.answers().iter().all(|r| r.ttl() <= TTL), "{name}");
    }
    let flycast = ask(dns.addr, "web.flycast", RecordType::AAAA).await;
    assert_eq!(aaaa(&flycast), vec![flycast_ip()]);
}

#[tokio::test]
async fn nearest_starts_in_the_askers_region() {
    let dns = start(|_| {}).await;
    // shop's s1 is in fra but of another org: ask as the host, and as a machine of web in fra.
    let (mut machines, services) = fleet();
    machines[2].ip4 = Some("127.0.0.6".parse().unwrap()); // m3, fra
    dns.table
        .send_replace(Arc::new(DnsTable::new(machines, services)));
    let from_fra = ask_from(
        dns.addr,
        "127.0.0.6".parse().unwrap(),
        "top2.nearest.of.web.internal",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(aaaa(&from_fra), vec![ip6(3), ip6(1)]);
}

#[tokio::test]
async fn txt_names_have_fly_formats() {
    let dns = start(|_| {}).await;
    let text = |name: &'static str| async move { txt(&ask(dns.addr, name, RecordType::TXT).await) };
    assert_eq!(text("vms.web.internal").await, "m1 ams,m2 ams,m3 fra");
    assert_eq!(text("regions.web.internal").await, "ams,fra");
    assert_eq!(text("_apps.internal").await, "shop,web");
    assert_eq!(
        text("_instances.internal").await,
        format!(
            "instance=s1,app=shop,ip={},region=fra;instance=m1,app=web,ip={},region=ams;\
             instance=m2,app=web,ip={},region=ams;instance=m3,app=web,ip={},region=fra",
            ip6(9),
            ip6(1),
            ip6(2),
            ip6(3)
        )
    );
}

#[tokio::test]
async fn a_queries_of_existing_names_are_empty_and_unknown_names_nxdomain() {
    let dns = start(|_| {}).await;
    for name in [
        "web.internal",
        "m1.vm.web.internal",
        "web.flycast",
        "internal",
    ] {
        let answer = ask(dns.addr, name, RecordType::A).await;
        assert_code(&answer, ResponseCode::NoError);
        assert!(answer.answers().is_empty(), "{name}");
        assert!(
            matches!(answer.name_servers()[0].data(), RData::SOA(_)),
            "a negative answer carries the zone's SOA for caching"
        );
    }
    for name in [
        "nope.internal",
        "m9.vm.web.internal",
        "a.b.c.web.internal",
        "top0.nearest.of.web.internal",
        "nope.flycast",
    ] {
        let answer = ask(dns.addr, name, RecordType::AAAA).await;
        assert_code(&answer, ResponseCode::NXDomain);
        assert!(answer.answers().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn tcp_answers_like_udp() {
    let dns = start(|_| {}).await;
    let answer = ask_tcp(dns.addr, "worker.process.web.internal", RecordType::AAAA).await;
    assert_eq!(aaaa(&answer), vec![ip6(2), ip6(3)]);
}

#[tokio::test]
async fn a_table_change_is_seen_by_the_next_query() {
    let dns = start(|_| {}).await;
    assert_eq!(
        aaaa(&ask(dns.addr, "worker.process.web.internal", RecordType::AAAA).await),
        vec![ip6(2), ip6(3)]
    );
    // m3 stops, m4 starts and moves to the `app` group.
    let (mut machines, services) = fleet();
    machines[2].started = false;
    machines[3].started = true;
    machines[3].group = "app".into();
    dns.table
        .send_replace(Arc::new(DnsTable::new(machines, services)));
    assert_eq!(
        aaaa(&ask(dns.addr, "worker.process.web.internal", RecordType::AAAA).await),
        vec![ip6(2)]
    );
    assert_eq!(
        aaaa(&ask(dns.addr, "app.process.web.internal", RecordType::AAAA).await),
        vec![ip6(1), ip6(4)]
    );
    // The app is destroyed: its names no longer exist.
    dns.table.send_replace(Arc::new(DnsTable::default()));
    assert_code(
        &ask(dns.addr, "web.internal", RecordType::AAAA).await,
        ResponseCode::NXDomain,
    );
}

#[tokio::test]
async fn answers_too_big_for_udp_are_truncated_and_complete_over_tcp() {
    let machines = (1..=200)
        .map(|n| machine(&format!("machine{n:04}"), "big", "acme", "app", "ams", n))
        .collect();
    let dns = start_with_table(DnsTable::new(machines, Vec::new()), |_| {}).await;
    let udp = ask(dns.addr, "big.internal", RecordType::AAAA).await;
    assert!(udp.truncated(), "200 AAAA records do not fit 512 bytes");
    assert!(udp.answers().is_empty());
    let tcp = ask_tcp(dns.addr, "big.internal", RecordType::AAAA).await;
    assert!(!tcp.truncated());
    assert_eq!(aaaa(&tcp).len(), 200);
    let instances = ask_tcp(dns.addr, "_instances.internal", RecordType::TXT).await;
    assert_eq!(txt(&instances).split(';').count(), 200);
}

#[tokio::test]
async fn lookup_gives_what_a_view_sees() {
    let dns = start(|_| {}).await;
    let answer = dns.handle.lookup(
        &aloft_dns::View::Source(WEB_M1),
        "_apps.internal",
        RecordType::TXT,
    );
    assert_eq!(answer.status, aloft_dns::Status::NoError);
    assert_eq!(
        answer.records[0].data,
        aloft_dns::RecordData::Txt("web".into())
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server_and_frees_its_port() {
    let dns = start(|_| {}).await;
    let addr = dns.addr;
    drop(dns);
    // The server's thread ends shortly after: wait for the port to be free again.
    for _ in 0..ATTEMPTS * 20 {
        if std::net::UdpSocket::bind(addr).is_ok() && std::net::TcpListener::bind(addr).is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{addr} is still taken after the handle was dropped");
}
