//! Views by source address: a machine sees only its organization's apps; the host sees all.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::*;

#[tokio::test]
async fn a_machine_cannot_resolve_another_organizations_apps() {
    let dns = start(|_| {}).await;
    for name in ["shop.internal", "s1.vm.shop.internal", "vms.shop.internal"] {
        let answer = ask_from(dns.addr, WEB_M1, name, RecordType::AAAA).await;
        assert_code(&answer, ResponseCode::NXDomain);
    }
    let answer = ask_from(dns.addr, SHOP_S1, "web.flycast", RecordType::AAAA).await;
    assert_code(&answer, ResponseCode::NXDomain);
    let own = ask_from(dns.addr, WEB_M1, "web.internal", RecordType::AAAA).await;
    assert_eq!(aaaa(&own), vec![ip6(1), ip6(2), ip6(3)]);
    let own = ask_from(dns.addr, SHOP_S1, "shop.internal", RecordType::AAAA).await;
    assert_eq!(aaaa(&own), vec![ip6(9)]);
}

#[tokio::test]
async fn listings_show_only_the_askers_organization() {
    let dns = start(|_| {}).await;
    let apps = ask_from(dns.addr, WEB_M1, "_apps.internal", RecordType::TXT).await;
    assert_eq!(txt(&apps), "web");
    let instances = ask_from(dns.addr, SHOP_S1, "_instances.internal", RecordType::TXT).await;
    assert_eq!(
        txt(&instances),
        format!("instance=s1,app=shop,ip={},region=fra", ip6(9))
    );
}

#[tokio::test]
async fn the_host_sees_every_organization() {
    let dns = start(|_| {}).await;
    assert_eq!(
        txt(&ask(dns.addr, "_apps.internal", RecordType::TXT).await),
        "shop,web"
    );
    assert_eq!(
        aaaa(&ask(dns.addr, "shop.internal", RecordType::AAAA).await),
        vec![ip6(9)]
    );
    assert_eq!(
        aaaa(&ask(dns.addr, "web.internal", RecordType::AAAA).await),
        vec![ip6(1), ip6(2), ip6(3)]
    );
}

#[tokio::test]
async fn views_work_over_ipv6_too() {
    // m1's private address is ::1 here, so a query from ::1 is m1's.
    let (mut machines, services) = fleet();
    machines[0].ip6 = std::net::Ipv6Addr::LOCALHOST;
    let table = aloft_dns::DnsTable::new(machines, services);
    let dns = start_with_table(table, |c| {
        c.listen = vec!["[::1]:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()];
    })
    .await;
    let [v6, v4] = dns.handle.local_addrs() else {
        panic!("two addresses: {:?}", dns.handle.local_addrs());
    };
    assert!(v6.is_ipv6() && v6.port() != 0);
    let from_m1 = ask_from(
        *v6,
        "::1".parse().unwrap(),
        "_apps.internal",
        RecordType::TXT,
    )
    .await;
    assert_eq!(txt(&from_m1), "web");
    let from_host = ask(*v4, "_apps.internal", RecordType::TXT).await;
    assert_eq!(txt(&from_host), "shop,web");
}
