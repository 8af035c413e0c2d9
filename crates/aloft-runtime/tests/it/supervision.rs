//! End to end: real processes under the runtime — events, environment, stop signals and
//! SIGKILL escalation, process trees, restart policies, signals.

use crate::common;

use std::time::Duration;

use aloft_runtime::{RuntimeError, RuntimeEvent};
use common::{alive, read_pid, wait_for, Harness};

#[tokio::test]
async fn launch_reports_started_then_exit_code() {
    let mut h = Harness::new();
    let pid = h
        .rt()
        .launch(h.sh("m-exit", "exit 3", "no", None))
        .await
        .unwrap();
    match h.event().await {
        RuntimeEvent::Started {
            machine_id,
            instance_id,
            pid: p,
            address: None,
        } => {
            assert_eq!(
                (machine_id.as_str(), instance_id.as_str(), p),
                ("m-exit", "m-exit-v1", pid)
            );
        }
        other => panic!("expected Started, got {other:?}"),
    }
    let (exit, restarts) = h.exited("m-exit").await;
    assert_eq!((exit.exit_code, exit.signal, restarts), (3, 0, 0));
    assert!(!exit.requested_stop && !exit.restarting && !exit.oom_killed);
    assert!(
        exit.exited_at.ends_with('Z') && exit.exited_at.len() == 30,
        "{}",
        exit.exited_at
    );
    assert!(!h.rt().is_supervised("m-exit"));
    assert!(matches!(
        h.rt().signal("m-exit", 15),
        Err(RuntimeError::NotRunning(_))
    ));
}

#[tokio::test]
async fn environment_and_working_directory() {
    let mut h = Harness::new();
    let mut spec = h.sh("m-env", "env > env.txt; pwd > pwd.txt", "no", None);
    spec.config
        .env
        .insert("PRIMARY_REGION".into(), "bog".into());
    spec.config
        .env
        .insert("GREETING".into(), "hello world".into());
    spec.config
        .metadata
        .insert("fly_process_group".into(), "worker".into());
    spec.host_ports.insert(8080, 41234);
    spec.config.services.push(aloft_api::MachineService {
        internal_port: 8080,
        ..Default::default()
    });
    h.rt().launch(spec).await.unwrap();
    let (exit, _) = h.exited("m-env").await;
    assert_eq!(exit.exit_code, 0);
    let env = std::fs::read_to_string(h.file("env.txt")).unwrap();
    for expected in [
        "FLY_APP_NAME=testapp",
        "FLY_MACHINE_ID=m-env",
        "FLY_ALLOC_ID=m-env",
        "FLY_REGION=gru",
        "FLY_PROCESS_GROUP=worker",
        "FLY_VM_MEMORY_MB=256",
        "FLY_MACHINE_VERSION=m-env-v1",
        "FLY_PRIVATE_IP=127.0.0.1",
        "PRIMARY_REGION=bog",
        "GREETING=hello world",
        "PORT=41234",
        "ALOFT_PORT_8080=41234",
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from:\n{env}"
        );
    }
    assert!(env.lines().any(|l| l.starts_with("FLY_IMAGE_REF=dir://")));
    assert!(env.lines().any(|l| l.starts_with("PATH=")));
    // Nothing else of the agent's (here: the test process's) environment leaks.
    let inherited = aloft_runtime::env::INHERITED_VARS;
    for (key, _) in std::env::vars().filter(|(k, _)| !inherited.contains(&k.as_str())) {
        let leaked = env.lines().any(|l| l.starts_with(&format!("{key}=")));
        assert!(
            !leaked || key == "PWD" || key == "SHLVL",
            "agent variable {key} leaked:\n{env}"
        );
    }
    let pwd = std::fs::read_to_string(h.file("pwd.txt")).unwrap();
    assert_eq!(
        std::path::Path::new(pwd.trim()).canonicalize().unwrap(),
        h.image.path().canonicalize().unwrap()
    );
}

#[tokio::test]
async fn stop_delivers_the_signal_the_child_traps() {
    stop_signal_reaches_a_trap("m-trap").await;
}

/// An agent started in the background by a non-interactive shell ignores SIGINT (POSIX), and an
/// ignored signal stays ignored across exec: a machine's shell could then not trap its stop
/// signal, and every stop would wait for the kill timeout. Machines start with default
/// dispositions whatever the agent's.
#[tokio::test]
async fn a_signal_the_agent_ignores_still_reaches_the_machine() {
    // SAFETY: only this test changes SIGINT's disposition, and it puts the old one back.
    #[allow(unsafe_code)]
    let old = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    struct Restore(libc::sighandler_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            #[allow(unsafe_code)]
            // SAFETY: puts back the disposition read above.
            unsafe {
                libc::signal(libc::SIGINT, self.0);
            }
        }
    }
    let _restore = Restore(old);
    stop_signal_reaches_a_trap("m-trap-ignored").await;
}

async fn stop_signal_reaches_a_trap(id: &str) {
    let mut h = Harness::new();
    let script =
        r#"trap 'echo got INT > trapped; exit 0' INT; echo > ready; while :; do sleep 0.1; done"#;
    h.rt()
        .launch(h.sh(id, script, "always", None))
        .await
        .unwrap();
    h.started(id).await;
    let ready = h.file("ready");
    wait_for("the trap to be installed", || ready.exists()).await;
    h.rt()
        .stop(id, libc::SIGINT, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(h.file("trapped")).unwrap().trim(),
        "got INT"
    );
    let (exit, _) = h.exited(id).await;
    assert_eq!(exit.exit_code, 0, "the trap's exit code is reported");
    assert!(
        exit.requested_stop && !exit.restarting,
        "requested stops never restart: {exit:?}"
    );
    assert!(!h.rt().is_supervised(id));
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let mut h = Harness::new();
    let script = r#"trap '' TERM INT; echo > ready; while :; do sleep 0.1; done"#;
    let pid = h
        .rt()
        .launch(h.sh("m-stubborn", script, "always", None))
        .await
        .unwrap();
    h.started("m-stubborn").await;
    let ready = h.file("ready");
    wait_for("the trap to be installed", || ready.exists()).await;
    h.rt()
        .stop("m-stubborn", libc::SIGTERM, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(!alive(pid), "stop returns only after the process is gone");
    let (exit, _) = h.exited("m-stubborn").await;
    assert_eq!(
        (exit.signal, exit.exit_code),
        (libc::SIGKILL, 128 + libc::SIGKILL)
    );
    assert!(exit.requested_stop && !exit.restarting);
}

#[tokio::test]
async fn stop_takes_the_whole_process_tree() {
    let h = Harness::new();
    let (pid, child) = h.launch_with_child("m-tree").await;
    assert!(alive(child));
    h.rt()
        .stop("m-tree", libc::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!alive(pid));
    wait_for("the grandchild to die", || !alive(child)).await;
}

#[tokio::test]
async fn exit_of_the_main_process_kills_what_it_left() {
    let mut h = Harness::new();
    let script = "sleep 1000 & echo $! > child; exit 0";
    h.rt()
        .launch(h.sh("m-leaver", script, "no", None))
        .await
        .unwrap();
    let (exit, _) = h.exited("m-leaver").await;
    assert_eq!(exit.exit_code, 0);
    let child = read_pid(&h.file("child"));
    wait_for("the background child to be killed", || !alive(child)).await;
}

#[tokio::test]
async fn on_failure_restarts_then_gives_up_after_max_retries() {
    let mut h = Harness::new();
    h.rt()
        .launch(h.sh("m-fail", "echo run >> runs; exit 7", "on-failure", Some(2)))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let (exit, restarts) = h.exited("m-fail").await;
        assert_eq!(exit.exit_code, 7);
        assert!(!exit.requested_stop);
        seen.push((restarts, exit.restarting));
        if !exit.restarting {
            break;
        }
    }
    assert_eq!(seen, [(0, true), (1, true), (2, false)]);
    assert_eq!(
        std::fs::read_to_string(h.file("runs"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    assert!(!h.rt().is_supervised("m-fail"));
}

#[tokio::test]
async fn on_failure_does_not_restart_a_clean_exit() {
    let mut h = Harness::new();
    h.rt()
        .launch(h.sh("m-clean", "exit 0", "on-failure", None))
        .await
        .unwrap();
    let (exit, _) = h.exited("m-clean").await;
    assert!(!exit.restarting);
}

#[tokio::test]
async fn unset_policy_is_on_failure() {
    let mut h = Harness::new();
    let mut spec = h.sh("m-default", "exit 1", "", None);
    spec.config.restart = None;
    h.rt().launch(spec).await.unwrap();
    let (exit, _) = h.exited("m-default").await;
    assert!(exit.restarting, "a failure is restarted by default");
    h.rt()
        .stop("m-default", libc::SIGTERM, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn always_restarts_a_clean_exit_until_stopped() {
    let mut h = Harness::new();
    h.rt()
        .launch(h.sh("m-always", "echo run >> runs; exit 0", "always", Some(1)))
        .await
        .unwrap();
    for expected in 0..3 {
        let (exit, restarts) = h.exited("m-always").await;
        assert_eq!(
            (exit.exit_code, restarts, exit.restarting),
            (0, expected, true)
        );
    }
    h.rt()
        .stop("m-always", libc::SIGTERM, Duration::from_secs(5))
        .await
        .unwrap();
    // Drain to the final exit: it is the requested one and nothing follows it.
    let last = loop {
        let (exit, _) = h.exited("m-always").await;
        if !exit.restarting {
            break exit;
        }
    };
    assert!(last.requested_stop);
    assert!(!h.rt().is_supervised("m-always"));
    assert!(h.rx.try_recv().is_err(), "no event after the final exit");
}

#[tokio::test]
async fn no_never_restarts_a_failure() {
    let mut h = Harness::new();
    h.rt()
        .launch(h.sh("m-no", "exit 9", "no", Some(5)))
        .await
        .unwrap();
    let (exit, _) = h.exited("m-no").await;
    assert_eq!(exit.exit_code, 9);
    assert!(!exit.restarting);
    assert!(h.rx.try_recv().is_err());
}

#[tokio::test]
async fn a_signal_reaches_the_main_process_and_death_by_signal_is_reported() {
    let mut h = Harness::new();
    let script = r#"trap 'echo usr1 >> got' USR1; echo > ready; while :; do sleep 0.05; done"#;
    h.rt()
        .launch(h.sh("m-sig", script, "no", None))
        .await
        .unwrap();
    h.started("m-sig").await;
    let ready = h.file("ready");
    wait_for("the trap", || ready.exists()).await;
    h.rt().signal("m-sig", libc::SIGUSR1).unwrap();
    let got = h.file("got");
    wait_for("the USR1 trap to run", || got.exists()).await;
    assert!(
        h.rt().is_supervised("m-sig"),
        "a signal does not stop supervision"
    );
    assert!(matches!(
        h.rt().signal("m-sig", 999),
        Err(RuntimeError::BadSignal { .. })
    ));
    h.rt().signal("m-sig", libc::SIGKILL).unwrap();
    let (exit, _) = h.exited("m-sig").await;
    assert_eq!(exit.signal, libc::SIGKILL);
    assert!(!exit.requested_stop, "a signal is not a requested stop");
}

#[tokio::test]
async fn stop_during_restart_backoff_cancels_the_restart() {
    let mut h = Harness::new();
    let mut t = common::tuning(aloft_runtime::CgroupMode::Off);
    t.backoff_initial = Duration::from_secs(30);
    t.backoff_max = Duration::from_secs(30);
    let (rt, rx) = aloft_runtime::Runtime::with_tuning(common::config(h.data.path()), t).unwrap();
    h.rt = Some(rt);
    h.rx = rx;
    h.rt()
        .launch(h.sh("m-backoff", "exit 1", "on-failure", None))
        .await
        .unwrap();
    let (exit, _) = h.exited("m-backoff").await;
    assert!(exit.restarting);
    assert!(h.rt().is_supervised("m-backoff") && h.rt().pid("m-backoff").is_none());
    h.rt()
        .stop("m-backoff", libc::SIGINT, Duration::from_secs(5))
        .await
        .unwrap();
    let (exit, _) = h.exited("m-backoff").await;
    assert!(exit.requested_stop && !exit.restarting);
    assert_eq!(
        exit.exit_code, 1,
        "the last exit is repeated as the final one"
    );
}

#[tokio::test]
async fn launch_errors_are_explained() {
    let h = Harness::new();
    let mut spec = h.sh("m-bad", "exit 0", "no", None);
    spec.config.init.exec = Some(vec!["/nonexistent/binary".into()]);
    let err = h.rt().launch(spec).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Spawn { .. }), "{err}");
    assert!(
        err.to_string().contains("m-bad") && err.to_string().contains("/nonexistent/binary"),
        "{err}"
    );
    assert!(
        !h.rt().is_supervised("m-bad"),
        "a failed launch leaves nothing behind"
    );

    let mut spec = h.sh("m-bad", "exit 0", "no", None);
    spec.config.init.exec = None;
    assert!(matches!(
        h.rt().launch(spec).await,
        Err(RuntimeError::NoCommand(_))
    ));

    let mut spec = h.sh("m-bad", "exit 0", "no", None);
    spec.image_dir = h.image.path().join("missing");
    assert!(matches!(
        h.rt().launch(spec).await,
        Err(RuntimeError::NoImageDir { .. })
    ));

    assert!(matches!(
        h.rt()
            .stop("m-nothing", libc::SIGINT, Duration::from_secs(1))
            .await,
        Err(RuntimeError::NotRunning(_))
    ));
}

#[tokio::test]
async fn a_machine_runs_once() {
    let mut h = Harness::new();
    h.rt()
        .launch(h.sh("m-once", "sleep 1000", "no", None))
        .await
        .unwrap();
    let again = h
        .rt()
        .launch(h.sh("m-once", "sleep 1000", "no", None))
        .await;
    assert!(
        matches!(again, Err(RuntimeError::AlreadyRunning(_))),
        "{again:?}"
    );
    h.started("m-once").await;
    h.rt()
        .stop("m-once", libc::SIGTERM, Duration::from_secs(5))
        .await
        .unwrap();
    // After the final exit the same machine can be launched again.
    h.exited("m-once").await;
    h.rt()
        .launch(h.sh("m-once", "exit 0", "no", None))
        .await
        .unwrap();
    h.exited("m-once").await;
}
