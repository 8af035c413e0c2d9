//! `[metrics]` of fly.toml end to end (issue 14 item 4): deployed with the real CLI, flattened
//! per group, scraped by the agent from the group's machines and served on `GET /v1/metrics`
//! with `app`, `process_group`, `machine` and `region` labels; a group without `[metrics]` is
//! not scraped.

use std::process::Command;
use std::time::Duration;

use super::{common, group, World};
use common::wait_for;

/// A metrics endpoint on the host port of the metrics port (`$ALOFT_PORT_9091`).
const SERVE_SH: &str = "#!/bin/sh\nmkdir -p \"$STATE_DIR/www-$FLY_MACHINE_ID\" && cd \"$STATE_DIR/www-$FLY_MACHINE_ID\"\nprintf '# TYPE jobs_done_total counter\\njobs_done_total 7\\n' > metrics\nexec python3 -m http.server \"$ALOFT_PORT_9091\" --bind 127.0.0.1\n";

fn metrics_text(w: &World) -> String {
    let out = Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", w.agent.token))
        .arg(format!("{}/v1/metrics", w.agent.url))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_groups_metrics_are_scraped_and_labelled() {
    let w = World::with_agent("scraped", &["--no-proxy", "--metrics-interval", "200ms"]);
    std::fs::write(w.tmp.path().join("app/serve.sh"), SERVE_SH).unwrap();
    w.config(
        &[],
        "web = \"sh serve.sh\"\nworker = \"sh run.sh worker\"\n\n[[metrics]]\nport = 9091\npath = \"/metrics\"\nprocesses = [\"web\"]\n",
    );
    w.deploy(&["--ha=false"]);
    let ms = w.machines();
    let id_of = |g: &str| {
        ms.iter().find(|m| group(m) == g).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (web, worker) = (id_of("web"), id_of("worker"));
    let sample = format!(
        r#"jobs_done_total{{app="scraped",process_group="web",machine="{web}",region="gru"}} 7"#
    );
    let text = wait_for(Duration::from_secs(60), "the web machine's samples", || {
        let t = metrics_text(&w);
        t.contains(&sample).then_some(t)
    });
    assert!(text.contains("# TYPE jobs_done_total counter"), "{text}");
    assert!(
        !text.contains(&worker),
        "the worker has no [metrics]:\n{text}"
    );
}
