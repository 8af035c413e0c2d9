//! End to end: region proximity (machines-api §4.3 steps 2–4) and the client routing hints
//! `Fly-Prefer-Region`, `Fly-Prefer-Instance-Id`, `Fly-Force-Instance-Id` (§4.2). The proxy's
//! region is `ams` (see `test_config`); machines are real servers that answer their name and
//! record the headers they received.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::{Concurrency, MachineService, MachineState};
use aloft_proxy::{ProxyConfig, ProxyHandle};
use common::*;

/// Machines of app `app` on port 80, one server each, started, in the given regions.
struct Setup {
    servers: BTreeMap<String, TestServer>,
    fleet: Arc<Fleet>,
    proxy: ProxyHandle,
    addr: SocketAddr,
}

impl Setup {
    async fn new(machines: &[(&str, &str)], svc: MachineService) -> Setup {
        Setup::with_config(test_config(&[80]), machines, svc).await
    }

    /// A proxy that never gives up on a queued request: a request it queues instead of answering
    /// at once hangs, and [`unqueued`] fails the test.
    async fn never_ending_queue(machines: &[(&str, &str)], svc: MachineService) -> Setup {
        let config = ProxyConfig {
            queue_timeout: Duration::from_secs(24 * 3600),
            ..test_config(&[80])
        };
        Setup::with_config(config, machines, svc).await
    }

    async fn with_config(
        config: ProxyConfig,
        machines: &[(&str, &str)],
        svc: MachineService,
    ) -> Setup {
        let mut servers = BTreeMap::new();
        let mut placed = Vec::new();
        for (id, region) in machines {
            let server = TestServer::start(id).await;
            placed.push((*id, *region, server.addr));
            servers.insert(id.to_string(), server);
        }
        let (fleet, proxy, addr) = regional_proxy_with(config, &placed, &svc).await;
        Setup {
            servers,
            fleet,
            proxy,
            addr,
        }
    }

    fn hits(&self, id: &str) -> usize {
        self.servers[id].stats.hits.load(Ordering::SeqCst)
    }

    /// The headers of the latest request machine `id` answered.
    fn last_headers(&self, id: &str) -> http::HeaderMap {
        self.servers[id]
            .stats
            .last_headers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| panic!("machine {id} got no request"))
    }

    /// Makes machine `id` fail its service check and waits until the proxy knows.
    async fn fail_checks(&self, id: &str) {
        self.servers[id]
            .stats
            .health_status
            .store(500, Ordering::SeqCst);
        wait_for(&format!("{id} failing"), || self.proxy.failing(id)).await;
    }

    async fn pass_checks(&self, id: &str) {
        self.servers[id]
            .stats
            .health_status
            .store(200, Ordering::SeqCst);
        wait_for(&format!("{id} passing"), || !self.proxy.failing(id)).await;
    }

    /// `n` requests on fresh connections, all of which must succeed: answers per machine.
    async fn tally(&self, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let (status, _, body) = get_with(self.addr, "/", headers).await;
            assert_eq!(status, 200, "{body}");
            *seen.entry(body).or_default() += 1;
        }
        seen
    }
}

/// The answer to `request`, which the proxy must give without queueing it. With
/// [`Setup::never_ending_queue`] a queued request is never answered: waiting the kit's patience
/// tells the two apart without timing the answer.
async fn unqueued<T>(why: &str, request: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(aloft_testkit::PATIENCE, request)
        .await
        .unwrap_or_else(|_| panic!("{why}: the request was queued, never answered"))
}

/// A web service with a fast http check; autostart off unless `autostart`.
fn checked_service(autostart: bool) -> MachineService {
    let mut svc = http_service(8080);
    svc.checks = vec![health_check()];
    svc.autostart = Some(autostart);
    svc
}

fn only(seen: &BTreeMap<String, usize>, ids: &[&str]) {
    let got: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(got, ids, "answers per machine: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_region_takes_all_traffic_until_none_of_its_machines_is_routable() {
    let s = Setup::new(
        &[("l1", "ams"), ("l2", "ams"), ("r1", "iad"), ("r2", "iad")],
        checked_service(false),
    )
    .await;
    let seen = s.tally(200, &[]).await;
    only(&seen, &["l1", "l2"]);
    assert!(
        seen.values().all(|n| *n > 20),
        "spread within the region: {seen:?}"
    );

    // One local machine stopped (autostart is off), the other failing its checks: the local
    // region has nothing routable, so traffic crosses to iad, spread over both machines.
    s.fleet.set_state("l1", MachineState::Stopped);
    s.fail_checks("l2").await;
    let seen = s.tally(100, &[]).await;
    only(&seen, &["r1", "r2"]);
    assert!(seen.values().all(|n| *n > 10), "{seen:?}");

    // Back home as soon as a local machine passes again.
    s.pass_checks("l2").await;
    only(&s.tally(50, &[]).await, &["l2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_limits_shift_load_within_the_region_and_hard_limits_across() {
    // Soft limit 1 with 12 concurrent requests: both local machines go over it, and still
    // nothing leaves the region.
    let mut svc = http_service(8080);
    svc.concurrency = Some(Concurrency {
        kind: "requests".into(),
        soft_limit: Some(1),
        hard_limit: None,
    });
    let s = Setup::new(
        &[("l1", "ams"), ("l2", "ams"), ("r1", "iad"), ("r2", "iad")],
        svc,
    )
    .await;
    let addr = s.addr;
    let clients: Vec<_> = (0..12)
        .map(|_| tokio::spawn(async move { get(addr, "/slow").await }))
        .collect();
    for c in clients {
        let (status, _, body) = c.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.starts_with('l'),
            "left the region over a soft limit: {body}"
        );
    }
    assert_eq!(s.hits("r1") + s.hits("r2"), 0);
    assert_eq!(s.hits("l1") + s.hits("l2"), 12);
    drop(s);

    // Hard limit 1 per machine on connections: two open client connections fill the region,
    // and a third client is sent to iad at once instead of queueing.
    let mut svc = http_service(8080);
    svc.concurrency = Some(Concurrency {
        kind: "connections".into(),
        soft_limit: Some(1),
        hard_limit: Some(1),
    });
    let s = Setup::never_ending_queue(
        &[("l1", "ams"), ("l2", "ams"), ("r1", "iad"), ("r2", "iad")],
        svc,
    )
    .await;
    let mut c1 = KeepAlive::connect(s.addr).await;
    let mut c2 = KeepAlive::connect(s.addr).await;
    let (_, first) = c1.get("/").await.unwrap();
    let (_, second) = c2.get("/").await.unwrap();
    let mut held = [first, second];
    held.sort();
    assert_eq!(held, ["l1", "l2"], "the first two clients stay local");
    let (status, _, body) = unqueued("crossing regions", get(s.addr, "/")).await;
    assert_eq!(status, 200);
    assert!(body.starts_with('r'), "expected an iad machine: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_prefer_region_goes_first_in_order_then_the_proxys_region() {
    let s = Setup::new(
        &[("l1", "ams"), ("i1", "iad"), ("o1", "ord")],
        checked_service(false),
    )
    .await;
    only(&s.tally(40, &[]).await, &["l1"]);
    only(&s.tally(40, &[("fly-prefer-region", "iad")]).await, &["i1"]);
    only(
        &s.tally(40, &[("fly-prefer-region", "ord, iad")]).await,
        &["o1"],
    );
    // The hint reaches the app unchanged.
    assert_eq!(s.last_headers("o1")["fly-prefer-region"], "ord, iad");

    // ord unusable: the next region of the list, not the proxy's own.
    s.fail_checks("o1").await;
    only(
        &s.tally(40, &[("fly-prefer-region", "ord,iad")]).await,
        &["i1"],
    );
    // No machine in any named region: the proxy's region, as without the header.
    only(
        &s.tally(40, &[("fly-prefer-region", "fra,ord")]).await,
        &["l1"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_alias_ranks_all_its_regions_alike() {
    let s = Setup::new(
        &[("l1", "ams"), ("i1", "iad"), ("o1", "ord"), ("g1", "gru")],
        checked_service(false),
    )
    .await;
    // `us`: both US regions share the traffic, nothing goes to ams or gru.
    let us = s.tally(200, &[("fly-prefer-region", "us")]).await;
    only(&us, &["i1", "o1"]);
    assert!(
        us.values().all(|n| *n > 20),
        "one US machine starved: {us:?}"
    );
    // In order: South America first.
    only(
        &s.tally(40, &[("fly-prefer-region", "SA, us")]).await,
        &["g1"],
    );
    // An alias with no machine here (Africa), or an unknown one: the proxy's own region.
    only(
        &s.tally(40, &[("fly-prefer-region", "af,zz")]).await,
        &["l1"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_force_instance_id_pins_every_request_and_never_falls_back() {
    let s = Setup::never_ending_queue(
        &[
            ("a", "ams"),
            ("b", "ams"),
            ("c", "ams"),
            ("d", "ams"),
            ("e", "ams"),
            ("r", "iad"),
        ],
        checked_service(false),
    )
    .await;
    s.fleet.set_state("d", MachineState::Stopped);
    s.fleet
        .machines
        .lock()
        .unwrap()
        .iter_mut()
        .filter(|m| m.id == "e")
        .for_each(|m| m.cordoned = true);
    s.fleet.push();

    only(
        &s.tally(40, &[("fly-force-instance-id", "b")]).await,
        &["b"],
    );
    // Stronger than region proximity.
    only(
        &s.tally(40, &[("fly-force-instance-id", "r")]).await,
        &["r"],
    );
    assert_eq!(s.last_headers("r")["fly-force-instance-id"], "r");

    s.fail_checks("c").await;
    let before: usize = ["a", "b", "c", "d", "e", "r"]
        .iter()
        .map(|m| s.hits(m))
        .sum();
    for (id, why) in [
        ("c", "fails its service checks"),
        (
            "d",
            "is stopped and autostart is off for port 80 of app app",
        ),
        ("e", "is cordoned"),
        ("nope", "is not a machine of app app"),
    ] {
        let forced = [("fly-force-instance-id", id)];
        let (status, _, body) = unqueued(id, get_with(s.addr, "/", &forced)).await;
        assert_eq!(status, 503, "{id}: {body}");
        let expected = format!("machine {id} named by Fly-Force-Instance-Id {why}");
        assert!(body.contains(&expected), "{body}");
    }
    let after: usize = ["a", "b", "c", "d", "e", "r"]
        .iter()
        .map(|m| s.hits(m))
        .sum();
    assert_eq!(
        before, after,
        "a forced request fell back to another machine"
    );

    // A keep-alive connection already on a machine follows the hint of each request.
    let mut conn = KeepAlive::connect(s.addr).await;
    assert_eq!(conn.get("/").await.unwrap().0, 200);
    for id in ["r", "a", "b"] {
        let (status, body) = conn
            .get_with("/", &[("fly-force-instance-id", id)])
            .await
            .unwrap();
        assert_eq!((status, body.as_str()), (200, id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_force_instance_id_autostarts_a_stopped_machine() {
    let m1 = TestServer::start("m1").await;
    // m2's host port, with nothing listening until the fleet starts it.
    let gone = TestServer::start("m2").await;
    let m2_addr = gone.addr;
    gone.kill();
    drop(gone);
    let svc = http_service(8080);
    let mut stopped = machine("m2", "web", vec![svc.clone()], Some(m2_addr));
    stopped.state = MachineState::Stopped;
    let (fleet, rx) = Fleet::new(
        "app",
        vec![machine("m1", "web", vec![svc], Some(m1.addr)), stopped],
        vec![("m1".into(), m1)],
    );
    let proxy = spawn(test_config(&[80]), &fleet, rx);
    let addr = bound(&proxy, 80).await;
    assert_eq!(get(addr, "/").await.2, "m1");
    assert_eq!(fleet.starts.load(Ordering::SeqCst), 0);
    let (status, _, body) = get_with(addr, "/", &[("fly-force-instance-id", "m2")]).await;
    assert_eq!((status, body.as_str()), (200, "m2"));
    assert_eq!(fleet.starts.load(Ordering::SeqCst), 1);
    assert_eq!(fleet.state("m2"), MachineState::Started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_prefer_instance_id_is_used_when_it_can_and_otherwise_named_to_the_app() {
    let s = Setup::new(
        &[("a", "ams"), ("b", "ams"), ("r", "iad")],
        checked_service(false),
    )
    .await;
    only(
        &s.tally(30, &[("fly-prefer-instance-id", "b")]).await,
        &["b"],
    );
    let h = s.last_headers("b");
    assert_eq!(h["fly-prefer-instance-id"], "b");
    assert!(!h.contains_key("fly-preferred-instance-unavailable"));
    // Stronger than region proximity.
    only(
        &s.tally(30, &[("fly-prefer-instance-id", "r")]).await,
        &["r"],
    );

    // b out of rotation: routed as usual (the local region), and the app is told.
    s.fail_checks("b").await;
    only(
        &s.tally(30, &[("fly-prefer-instance-id", "b")]).await,
        &["a"],
    );
    let h = s.last_headers("a");
    assert_eq!(h["fly-preferred-instance-unavailable"], "b");
    assert_eq!(h["fly-prefer-instance-id"], "b");

    let (status, _, body) = get_with(s.addr, "/", &[("fly-prefer-instance-id", "nope")]).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    assert_eq!(
        s.last_headers("a")["fly-preferred-instance-unavailable"],
        "nope"
    );
    // Without the hint there is no such header.
    assert_eq!(get(s.addr, "/").await.2, "a");
    assert!(!s
        .last_headers("a")
        .contains_key("fly-preferred-instance-unavailable"));
}
