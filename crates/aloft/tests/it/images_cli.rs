//! `aloft images list` and `aloft image show` against a real agent process with an OCI image
//! pushed to it: tables, JSON, and clear errors for references that name nothing.

use aloft_oci::layout::testing::{image, tar, write_layout, Entry};

use crate::common::{aloft, ok, AgentProc};

#[tokio::test]
async fn images_list_and_show_a_pushed_image() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = AgentProc::start(&tmp.path().join("data"));
    agent.create_app("shop").await;
    let base = tar(&[Entry::File("bin/app", b"#!/bin/sh\n", 0o755)]);
    let a = image(
        &[base.clone(), tar(&[Entry::File("a", b"A", 0o644)])],
        &["/bin/app"],
    );
    let b = image(
        &[base, tar(&[Entry::File("b", b"B", 0o644)])],
        &["/bin/app"],
    );
    let client = aloft_client::Client::new(&agent.url, Some(agent.token.clone()));
    for (img, name) in [(&a, "a"), (&b, "b")] {
        let layout = tmp.path().join(name);
        write_layout(&layout, img, name);
        client.push_image("shop", &layout, |_| {}).await.unwrap();
    }

    let out = ok(&aloft(&agent, &["images", "list", "-a", "shop"]));
    let short_a = &a.manifest.hex()[..12];
    assert!(out.contains("DIGEST") && out.contains(short_a), "{out}");
    assert!(out.contains(&format!("aloft/shop@{}", b.manifest)), "{out}");
    assert!(out.contains("shared layers counted once"), "{out}");

    let json: serde_json::Value = serde_json::from_str(&ok(&aloft(
        &agent,
        &["images", "list", "-a", "shop", "--json"],
    )))
    .unwrap();
    assert_eq!(json["images"].as_array().unwrap().len(), 2);
    let sum: u64 = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["size"].as_u64().unwrap())
        .sum();
    assert!(json["total_size"].as_u64().unwrap() < sum, "{json}");
    assert_eq!(
        json["store_size"], json["total_size"],
        "one app: the store is its images"
    );
    assert_eq!(
        json["store_size"], json["total_size"],
        "one app: the store is its images"
    );

    let reference = format!("aloft/shop@{}", a.manifest);
    let out = ok(&aloft(&agent, &["image", "show", &reference]));
    assert!(
        out.contains("Entrypoint:") && out.contains("[\"/bin/app\"]"),
        "{out}"
    );
    assert!(out.contains("Layers (bottom first)"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&aloft(
        &agent,
        &["image", "show", a.manifest.as_str(), "-a", "shop", "--json"],
    )))
    .unwrap();
    assert_eq!(json["digest"], a.manifest.as_str());
    assert_eq!(json["layers"].as_array().unwrap().len(), 2);

    // References that name nothing: clear errors, exit 1.
    let other = format!("aloft/shop@sha256:{}", "0".repeat(64));
    for (args, says) in [
        (
            vec!["image", "show", other.as_str()],
            "has not been pushed to app \"shop\"",
        ),
        (
            vec!["image", "show", "nope", "-a", "shop"],
            "is not an image digest",
        ),
        (
            vec!["image", "show", "docker.io/x@sha256:00"],
            "expected aloft/<app>@sha256:<hex>",
        ),
    ] {
        let out = aloft(&agent, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
