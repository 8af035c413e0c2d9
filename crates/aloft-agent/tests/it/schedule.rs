//! Scheduled machines (`config.schedule`) against an in-process agent whose schedule periods
//! are short (`AgentConfig::schedule_unit`: an hour lasts [`HOUR_MS`]), counted by marker
//! lines the machines' commands append.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aloft_api::schedule::PeriodUnit;
use aloft_testkit::wait_for_async;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{status_and_body, Harness};

/// One "hour" of schedule time: a period of `hourly`.
const HOUR_MS: u64 = 1_500;
const PATIENCE: Duration = Duration::from_secs(90);

/// The shared in-process agent with short schedule periods, and a directory for markers.
struct Agentlet {
    h: Harness,
    dir: tempfile::TempDir,
}

impl Agentlet {
    async fn start() -> Agentlet {
        let h = Harness::start_with(|config| {
            config.proxy = None;
            config.schedule_unit = PeriodUnit::Scaled {
                hour_ms: HOUR_MS as i64,
            };
        })
        .await;
        Agentlet {
            h,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        status_and_body(self.h.request(&self.h.token, method, path, body, &[]).await).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.send(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    /// The image directory (the process runtime runs `init.exec` from it).
    fn image(&self) -> String {
        self.h.image()
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn events(&self, app: &str, id: &str) -> Vec<Value> {
        let v = self
            .ok(
                Method::GET,
                &format!("/v1/apps/{app}/machines/{id}/events?limit=50"),
                None,
            )
            .await;
        v.as_array().unwrap().clone()
    }

    async fn state(&self, app: &str, id: &str) -> String {
        let m = self
            .ok(Method::GET, &format!("/v1/apps/{app}/machines/{id}"), None)
            .await;
        m["state"].as_str().unwrap().to_string()
    }

    async fn stop(mut self) {
        self.h.agent.take().unwrap().shutdown().await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// The periods of the `scheduled` events with `status`, oldest first.
fn periods(events: &[Value], status: &str) -> Vec<i64> {
    let mut p: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "scheduled" && e["status"] == status)
        .map(|e| e["request"]["period"].as_i64().unwrap())
        .collect();
    p.reverse();
    p
}

fn script(command: &str) -> Value {
    json!(["sh", "-c", command])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_machine_runs_once_at_creation_and_once_per_period() {
    let a = Agentlet::start().await;
    a.ok(Method::POST, "/v1/apps", Some(json!({"app_name": "cron"})))
        .await;
    let marker = a.marker("runs");
    let config = json!({
        "image": a.image(),
        "schedule": "hourly",
        "init": {"exec": script(&format!("echo run >> {}", marker.display()))},
    });
    let m = a
        .ok(
            Method::POST,
            "/v1/apps/cron/machines",
            Some(json!({"config": config})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["config"]["schedule"], "hourly");
    // Started at creation, like `fly machine run --schedule`; then once per period.
    wait_for_async(PATIENCE, "three runs", || async {
        (lines(&marker).len() >= 3).then_some(())
    })
    .await;
    // Right after a run ended (early in a period: an update during a run would relaunch it),
    // clearing the schedule without starting the machine ends the runs.
    let seen = lines(&marker).len();
    wait_for_async(PATIENCE, "the next run to end", || async {
        (lines(&marker).len() > seen && a.state("cron", &id).await == "stopped").then_some(())
    })
    .await;
    let mut cleared = config.clone();
    cleared.as_object_mut().unwrap().remove("schedule");
    a.ok(
        Method::POST,
        &format!("/v1/apps/cron/machines/{id}"),
        Some(json!({"config": cleared, "skip_launch": true})),
    )
    .await;
    wait_for_async(PATIENCE, "the last run to end", || async {
        (a.state("cron", &id).await == "stopped").then_some(())
    })
    .await;
    let runs = lines(&marker).len();
    let events = a.events("cron", &id).await;
    let started = periods(&events, "started");
    assert_eq!(
        started,
        (1..=started.len() as i64).collect::<Vec<_>>(),
        "each period once, none missed: {events:?}"
    );
    assert_eq!(
        runs,
        1 + started.len(),
        "one run per period, plus the creation's"
    );
    assert!(periods(&events, "skipped").is_empty(), "{events:?}");
    assert!(events
        .iter()
        .filter(|e| e["type"] == "scheduled")
        .all(|e| e["source"] == "scheduler"));
    // Two more periods: nothing runs without a schedule (a lower bound, not a timing limit).
    tokio::time::sleep(Duration::from_millis(2 * HOUR_MS + HOUR_MS / 2)).await;
    assert_eq!(
        lines(&marker).len(),
        runs,
        "no run once the schedule is cleared"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_longer_than_its_period_is_never_started_twice() {
    let a = Agentlet::start().await;
    a.ok(Method::POST, "/v1/apps", Some(json!({"app_name": "slow"})))
        .await;
    let marker = a.marker("slow");
    // Each run takes about 2.3 periods.
    let command = format!(
        "echo begin >> {m}; sleep {s}; echo end >> {m}",
        m = marker.display(),
        s = (HOUR_MS as f64 * 2.3 / 1000.0)
    );
    let config =
        json!({"image": a.image(), "schedule": "hourly", "init": {"exec": script(&command)}});
    let m = a
        .ok(
            Method::POST,
            "/v1/apps/slow/machines",
            Some(json!({"config": config})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    wait_for_async(PATIENCE, "two runs to end", || async {
        (lines(&marker).iter().filter(|l| *l == "end").count() >= 2).then_some(())
    })
    .await;
    let log = lines(&marker);
    for pair in log.windows(2) {
        assert_ne!(pair[0], pair[1], "two runs overlapped: {log:?}");
    }
    assert_eq!(log[0], "begin");
    let events = a.events("slow", &id).await;
    let skipped = periods(&events, "skipped");
    assert!(
        !skipped.is_empty(),
        "the periods that fell due during a run are recorded as skipped: {events:?}"
    );
    let started = periods(&events, "started");
    assert!(
        started.iter().all(|p| !skipped.contains(p)),
        "{started:?} {skipped:?}"
    );
    let (status, body) = a
        .send(
            Method::DELETE,
            &format!("/v1/apps/slow/machines/{id}?force=true"),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn update_sets_a_schedule_and_unknown_ones_are_refused() {
    let a = Agentlet::start().await;
    a.ok(Method::POST, "/v1/apps", Some(json!({"app_name": "later"})))
        .await;
    let marker = a.marker("later");
    let mut config = json!({
        "image": a.image(),
        "init": {"exec": script(&format!("echo run >> {}", marker.display()))},
    });
    let m = a
        .ok(
            Method::POST,
            "/v1/apps/later/machines",
            Some(json!({"config": config, "skip_launch": true})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    let path = format!("/v1/apps/later/machines/{id}");
    for bad in ["fortnightly", "Daily", " hourly"] {
        config["schedule"] = json!(bad);
        let (status, body) = a
            .send(Method::POST, &path, Some(json!({"config": config})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains("config.schedule") && msg.contains("hourly, daily, weekly, monthly"),
            "{msg}"
        );
    }
    assert_eq!(lines(&marker).len(), 0, "refused updates start nothing");
    // Set without starting it now: the schedule alone runs it, at its periods.
    config["schedule"] = json!("hourly");
    let updated = a
        .ok(
            Method::POST,
            &path,
            Some(json!({"config": config, "skip_launch": true})),
        )
        .await;
    assert_eq!(updated["config"]["schedule"], "hourly");
    wait_for_async(PATIENCE, "two scheduled runs", || async {
        (lines(&marker).len() >= 2).then_some(())
    })
    .await;
    let events = a.events("later", &id).await;
    let started = periods(&events, "started");
    assert!(started.len() >= 2, "{events:?}");
    let mut distinct = started.clone();
    distinct.dedup();
    assert_eq!(distinct, started, "one run per period: {events:?}");
    a.stop().await;
}
