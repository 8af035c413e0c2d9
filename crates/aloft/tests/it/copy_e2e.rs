//! `aloft machine cp` of a process-runtime machine end to end: a real `aloft agent`, the CLI
//! both ways, and the refusals (`..`, links out of the machine). (Containers:
//! `containers_e2e::a_console_and_copies_run_in_the_container`.)

use serde_json::json;

use crate::common::{aloft, setup, text, AgentProc};

#[tokio::test(flavor = "multi_thread")]
async fn files_round_trip_and_nothing_leaves_the_machine() {
    let (tmp, image, image_s) = setup();
    let agent = AgentProc::start_with(&tmp.path().join("data"), &[], None);
    agent.create_app("cp").await;
    let id = agent
        .create(
            "cp",
            json!({"config": {"image": format!("dir://{image_s}"),
            "init": {"exec": ["/bin/sh", "-c", "exec sleep 100000"]}}}),
        )
        .await;
    agent.wait_state("cp", &id, "started").await;

    // A local tree: bytes of every value, a subdirectory, a link.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    std::fs::write(src.join("all.bin"), &bytes).unwrap();
    std::fs::write(src.join("sub/note"), "hi\n").unwrap();
    std::os::unix::fs::symlink("all.bin", src.join("link")).unwrap();

    // In: to a new name in the machine's directory.
    let to = format!("{id}:/incoming");
    let out = aloft(
        &agent,
        &["machine", "cp", src.to_str().unwrap(), &to, "-a", "cp"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(image.join("incoming/all.bin")).unwrap(),
        bytes
    );
    assert_eq!(
        std::fs::read_to_string(image.join("incoming/sub/note")).unwrap(),
        "hi\n"
    );

    // Out: to a new local name, and into an existing local directory.
    let back = tmp.path().join("back");
    let from = format!("{id}:/incoming");
    let out = aloft(
        &agent,
        &["machine", "cp", &from, back.to_str().unwrap(), "-a", "cp"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(back.join("all.bin")).unwrap(), bytes);
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap().to_str(),
        Some("all.bin")
    );
    let into = tmp.path().join("into");
    std::fs::create_dir(&into).unwrap();
    let one = format!("{id}:incoming/sub/note");
    let out = aloft(
        &agent,
        &["machine", "cp", &one, into.to_str().unwrap(), "-a", "cp"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(into.join("note")).unwrap(), "hi\n");

    // `..` is refused, both ways.
    let dotdot = format!("{id}:/../data/token");
    let out = aloft(
        &agent,
        &["machine", "cp", &dotdot, into.to_str().unwrap(), "-a", "cp"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("`..`"), "{}", text(&out.stderr));
    let out = aloft(
        &agent,
        &[
            "machine",
            "cp",
            src.to_str().unwrap(),
            &format!("{id}:../x"),
            "-a",
            "cp",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("`..`"), "{}", text(&out.stderr));

    // The agent refuses `..` itself, whatever the client: GET and PUT (an empty body).
    for method in [reqwest::Method::GET, reqwest::Method::PUT] {
        let (status, body) = agent
            .call(
                method.clone(),
                &format!("/v1/apps/cp/machines/{id}/files?path=/../../etc/passwd"),
                None,
            )
            .await;
        assert_eq!(status.as_u16(), 400, "{method}: {body}");
        assert!(body["error"].as_str().unwrap().contains("`..`"), "{body}");
    }

    // A link to a host directory resolves inside the machine: nothing is read or written there.
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host").unwrap();
    std::os::unix::fs::symlink(&outside, image.join("esc")).unwrap();
    let out = aloft(
        &agent,
        &[
            "machine",
            "cp",
            &format!("{id}:/esc/secret"),
            into.to_str().unwrap(),
            "-a",
            "cp",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    let out = aloft(
        &agent,
        &[
            "machine",
            "cp",
            src.join("sub/note").to_str().unwrap(),
            &format!("{id}:/esc/planted"),
            "-a",
            "cp",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!outside.join("planted").exists());
    assert!(!into.join("secret").exists());
}
