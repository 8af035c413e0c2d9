//! `exec` and `ps` of a process-runtime machine end to end: a real `aloft agent`, the API and
//! `aloft machine exec|ps`. (Container machines: `containers_e2e::exec_and_ps_run_inside_the_container`.)

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{alive, aloft, setup, text, wait_for, AgentProc};

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_ps_of_a_process_machine() {
    let (tmp, image, image_s) = setup();
    let agent = AgentProc::start_with(&tmp.path().join("data"), &["--port-map", "80=0"], None);
    agent.create_app("ex").await;
    let script = r#"exec busybox httpd -f -p "127.0.0.1:$PORT" -h ."#;
    let id = agent
        .create(
            "ex",
            json!({"config": {"image": format!("dir://{image_s}"),
            "env": {"GREETING": "hello"},
            "init": {"exec": ["/bin/sh", "-c", script]},
            "services": [{"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 80}]}]}}),
        )
        .await;
    agent.wait_state("ex", &id, "started").await;
    let m = agent
        .ok(Method::GET, &format!("/v1/apps/ex/machines/{id}"), None)
        .await;
    let port = m["host_ports"]["8080"].as_u64().expect("a host port");
    let main_pid = agent.pid("ex", &id).await;

    // Both streams and the exit code, through the CLI; the machine's directory and env.
    let out = aloft(
        &agent,
        &[
            "machine",
            "exec",
            &id,
            "-a",
            "ex",
            "--",
            "sh",
            "-c",
            "echo out $GREETING $FLY_MACHINE_ID; pwd; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "out hello {id}\n{}\n",
            image.canonicalize().unwrap().display()
        )
    );
    assert_eq!(text(&out.stderr), "err\n");

    // The API answer, with stdin.
    let exec = format!("/v1/apps/ex/machines/{id}/exec");
    let v = agent
        .ok(
            Method::POST,
            &exec,
            Some(json!({"command": ["cat"], "stdin": "fed"})),
        )
        .await;
    assert_eq!(
        v,
        json!({"exit_code": 0, "exit_signal": 0, "stdout": "fed", "stderr": ""})
    );
    // flyctl's deprecated `cmd`, split as a shell would.
    let v = agent
        .ok(Method::POST, &exec, Some(json!({"cmd": "echo 'a  b'"})))
        .await;
    assert_eq!(v["stdout"], "a  b\n");

    // A command that does not exist: exit code 127 and the reason, as a shell would say.
    let out = aloft(
        &agent,
        &["machine", "exec", &id, "-a", "ex", "--", "no-such-cmd"],
    );
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("no-such-cmd: command not found"),
        "{}",
        text(&out.stderr)
    );

    // A timeout kills the command and what it started, and says so; output so far is kept.
    let out = aloft(
        &agent,
        &[
            "machine",
            "exec",
            &id,
            "-a",
            "ex",
            "--timeout",
            "1",
            "--",
            "sh",
            "-c",
            "sleep 1000 & echo $$ $!; sleep 999",
        ],
    );
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out after 1s"),
        "{}",
        text(&out.stderr)
    );
    let pids: Vec<i32> = text(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{}", text(&out.stdout));
    wait_for(
        Duration::from_secs(10),
        "the timed-out command's processes gone",
        || pids.iter().all(|p| !alive(*p)),
    );
    assert!(
        alive(main_pid),
        "the machine itself survives its exec's timeout"
    );

    // ps: the main process and the socket it listens on.
    let list = agent
        .ok(
            Method::GET,
            &format!("/v1/apps/ex/machines/{id}/ps?sort_by=rss&order=desc"),
            None,
        )
        .await;
    let main = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == main_pid)
        .unwrap_or_else(|| panic!("main pid {main_pid} in {list}"));
    assert!(
        main["command"].as_str().unwrap().contains("httpd"),
        "{main}"
    );
    assert_eq!(
        main["listen_sockets"],
        json!([{"proto": "tcp", "address": format!("127.0.0.1:{port}")}])
    );
    assert!(main["rss"].as_u64().unwrap() > 0);
    let out = aloft(&agent, &["machine", "ps", &id, "-a", "ex"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("tcp 127.0.0.1:{port}")),
        "{}",
        text(&out.stdout)
    );

    // Bad input is a 400 that says what is wrong; nothing runs.
    let (s, v) = agent.call(Method::POST, &exec, Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("command"), "{v}");
    let (s, _) = agent
        .call(
            Method::POST,
            &exec,
            Some(json!({"command": ["true"], "timeout": 100000})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = agent
        .call(
            Method::GET,
            &format!("/v1/apps/ex/machines/{id}/ps?sort_by=colour"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("pid, cpu"), "{v}");

    // A stopped machine: 412 saying to start it.
    agent
        .ok(
            Method::POST,
            &format!("/v1/apps/ex/machines/{id}/stop"),
            None,
        )
        .await;
    agent.wait_state("ex", &id, "stopped").await;
    let (s, v) = agent
        .call(Method::POST, &exec, Some(json!({"command": ["true"]})))
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("start it first"),
        "{v}"
    );
    let out = aloft(&agent, &["machine", "exec", &id, "-a", "ex", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("start it first"),
        "{}",
        text(&out.stderr)
    );
    let (s, _) = agent
        .call(Method::GET, &format!("/v1/apps/ex/machines/{id}/ps"), None)
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
}
