//! Scheduled machines end to end: `aloft machine run --schedule`, `aloft machine status`, and a
//! schedule that survives a kill -9 of the agent without a burst of catch-up runs. The agent's
//! periods are short (`--schedule-unit-ms`, a hidden test flag: an hour lasts [`HOUR_MS`]).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::common::{setup, wait_for_async, AgentProc};

const HOUR_MS: u64 = 1_500;
const PATIENCE: Duration = Duration::from_secs(90);

fn aloft(agent: &AgentProc, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .env("ALOFT_API_URL", &agent.url)
        .env("ALOFT_API_TOKEN", &agent.token)
        .env_remove("ALOFT_APP")
        .stdin(Stdio::null())
        .output()
        .expect("aloft runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn runs(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .count()
}

fn start_agent(data: &Path) -> AgentProc {
    let unit = HOUR_MS.to_string();
    AgentProc::start_with(data, &["--no-proxy", "--schedule-unit-ms", &unit], None)
}

/// The `scheduled` events with status `started`, oldest first.
fn scheduled_starts(events: &Value) -> Vec<Value> {
    let mut v: Vec<Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "scheduled" && e["status"] == "started")
        .cloned()
        .collect();
    v.reverse();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_survives_a_killed_agent_with_one_catch_up_run() {
    let (tmp, _image, image_s) = setup();
    let data = tmp.path().join("data");
    let marker = tmp.path().join("runs");
    let mut agent = start_agent(&data);
    agent.create_app("nightly").await;

    let job = format!("echo run >> {}", marker.display());
    let image = format!("dir://{image_s}");
    let out = aloft(
        &agent,
        &[
            "machine",
            "run",
            "--schedule",
            "hourly",
            "-a",
            "nightly",
            &image,
            "sh",
            "-c",
            &job,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    let id = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("Machine ID: "))
        .unwrap_or_else(|| panic!("no machine id in {said}"))
        .to_string();
    assert!(said.contains("Schedule: hourly, next run"), "{said}");
    let m = agent
        .ok(
            Method::GET,
            &format!("/v1/apps/nightly/machines/{id}"),
            None,
        )
        .await;
    assert_eq!(m["config"]["schedule"], "hourly");
    assert_eq!(
        m["config"]["restart"]["policy"], "on-failure",
        "flyctl's default for scheduled machines"
    );
    let out = aloft(&agent, &["machine", "status", &id, "-a", "nightly"]);
    assert!(
        text(&out).contains("Schedule       = hourly, next run"),
        "{}",
        text(&out)
    );

    // The run at creation; then the agent dies right after the next one ended (early in a
    // period, so no run is cut short).
    wait_for_async(PATIENCE, "the first run", || async {
        (runs(&marker) >= 1).then_some(())
    })
    .await;
    let seen = runs(&marker);
    wait_for_async(PATIENCE, "the next run to end", || async {
        let m = agent
            .ok(
                Method::GET,
                &format!("/v1/apps/nightly/machines/{id}"),
                None,
            )
            .await;
        (runs(&marker) > seen && m["state"] == "stopped").then_some(())
    })
    .await;
    agent.kill9();
    let before = runs(&marker);
    // Down for three and a half periods (the point of the test: time passes with no agent).
    tokio::time::sleep(Duration::from_millis(3 * HOUR_MS + HOUR_MS / 2)).await;
    assert_eq!(runs(&marker), before, "nothing runs without an agent");

    let agent = start_agent(&data);
    wait_for_async(PATIENCE, "the catch-up run", || async {
        (runs(&marker) > before).then_some(())
    })
    .await;
    let events = agent.events("nightly", &id).await;
    let starts = scheduled_starts(&events);
    let caught_up: Vec<&Value> = starts
        .iter()
        .filter(|e| e["request"]["missed"].as_i64().unwrap() > 0)
        .collect();
    assert_eq!(caught_up.len(), 1, "one catch-up run: {events}");
    assert!(
        caught_up[0]["request"]["missed"].as_i64().unwrap() >= 2,
        "it stands for the periods missed: {events}"
    );
    assert!(
        runs(&marker) - before <= 2,
        "no burst: the catch-up run, at most the next period's: {events}"
    );
    // The schedule goes on, one run per period.
    let after = runs(&marker);
    wait_for_async(PATIENCE, "the next period's run", || async {
        (runs(&marker) > after).then_some(())
    })
    .await;
    let events = agent.events("nightly", &id).await;
    let periods: Vec<i64> = scheduled_starts(&events)
        .iter()
        .map(|e| e["request"]["period"].as_i64().unwrap())
        .collect();
    assert!(
        periods.windows(2).all(|w| w[0] < w[1]),
        "each period at most once: {periods:?}"
    );
    let launches = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "start")
        .count();
    let lines = runs(&marker);
    assert!(
        lines == launches || lines == launches + 1,
        "every run is a launch the events show ({lines} runs, {launches} start events; one may \
         be on its way): {events}"
    );
    let out = aloft(
        &agent,
        &["machine", "destroy", "--force", &id, "-a", "nightly"],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_run_refuses_an_unknown_schedule_and_rm_with_a_schedule() {
    let (tmp, _image, image_s) = setup();
    let agent = start_agent(&tmp.path().join("data"));
    agent.create_app("bad").await;
    let image = format!("dir://{image_s}");
    for args in [
        vec!["--schedule", "fortnightly"],
        vec!["--schedule", "daily", "--rm"],
    ] {
        let mut all = vec!["machine", "run", "-a", "bad"];
        all.extend(&args);
        all.extend([image.as_str(), "true"]);
        let out = aloft(&agent, &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains("fortnightly") || said.contains("--rm"),
            "{args:?}: {said}"
        );
    }
    let list = agent.ok(Method::GET, "/v1/apps/bad/machines", None).await;
    assert_eq!(list, serde_json::json!([]), "nothing created");
}
