//! OCI image uploads against an in-process agent: a second push sends nothing (the agent's
//! counters say so), a corrupted blob is refused and not stored, an interrupted upload resumes
//! at the agent's offset, a manifest naming a missing blob is refused, and releases accept a
//! pushed image of their own app only.

use aloft_agent::{Agent, AgentHandle};
use aloft_api::images::BlobStats;
use aloft_oci::layout::testing::{image, tar, write_layout, Entry, TestImage};
use aloft_oci::Digest;
use aloft_testkit::{wait_for_async, ReapOnDrop, PATIENCE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Harness {
    agent: Option<AgentHandle>,
    http: reqwest::Client,
    client: aloft_client::Client,
    url: String,
    token: String,
    _reaper: ReapOnDrop,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::common::agent_config(&dir.path().join("data"));
        config.proxy = None;
        let agent = Agent::start(config).await.expect("agent starts");
        let (url, token) = (agent.url(), agent.token.clone());
        for app in ["web", "other"] {
            aloft_client::Client::new(&url, Some(token.clone()))
                .create_app(app, "personal")
                .await
                .unwrap();
        }
        Harness {
            client: aloft_client::Client::new(&url, Some(token.clone())),
            url,
            token,
            agent: Some(agent),
            http: reqwest::Client::new(),
            _reaper: ReapOnDrop::new(dir.path().join("data")),
            dir,
        }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    async fn answer(rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn stats(&self) -> BlobStats {
        let (s, v) = Self::answer(self.req(Method::GET, "/v1/images/stats")).await;
        assert_eq!(s, 200, "{v}");
        serde_json::from_value(v).unwrap()
    }

    async fn offset(&self, d: &Digest) -> u64 {
        let (s, v) =
            Self::answer(self.req(Method::GET, &format!("/v1/apps/web/blobs/{d}/upload"))).await;
        assert_eq!(s, 200, "{v}");
        v["offset"].as_u64().unwrap()
    }

    /// A layout of `img` in the harness's temp dir.
    fn layout(&self, img: &TestImage, name: &str) -> std::path::PathBuf {
        let dir = self.dir.path().join(format!("layout-{name}"));
        write_layout(&dir, img, name);
        dir
    }

    async fn stop(mut self) {
        self.agent.take().unwrap().shutdown().await;
    }
}

/// A small image: a "binary" layer and a config layer.
fn sample(extra: &[u8]) -> TestImage {
    image(
        &[
            tar(&[Entry::File("bin/app", b"#!/bin/sh\necho hi\n", 0o755)]),
            tar(&[Entry::File("etc/app.conf", extra, 0o644)]),
        ],
        &["/bin/app"],
    )
}

#[tokio::test]
async fn a_second_push_sends_nothing_and_a_changed_layer_only_that_layer() {
    let h = Harness::start().await;
    let img = sample(b"v1");
    let layout = h.layout(&img, "v1");
    let first = h.client.push_image("web", &layout, |_| {}).await.unwrap();
    assert_eq!((first.blobs_sent, first.blobs_skipped), (3, 0));
    assert_eq!(first.manifest_digest, img.manifest.as_str());
    assert_eq!(first.image_ref, format!("aloft/web@{}", img.manifest));
    assert_eq!(first.image.layers.len(), 2);
    assert_eq!(first.image.config.entrypoint, ["/bin/app"]);
    // What the launch path gets: the unpacked layers, bottom first, and the process defaults;
    // nothing for another app or an image that is not a pushed OCI image.
    let ctl = &h.agent.as_ref().unwrap().controller;
    let prepared = ctl
        .prepared_image("web", &first.image_ref)
        .await
        .unwrap()
        .expect("a prepared image");
    assert_eq!(prepared.manifest_digest, img.manifest);
    assert_eq!(prepared.layer_dirs.len(), 2);
    assert!(prepared.layer_dirs[0].join("bin/app").is_file());
    assert!(prepared.layer_dirs[1].join("etc/app.conf").is_file());
    assert_eq!(prepared.config.entrypoint, ["/bin/app"]);
    let other_ref = first.image_ref.replace("aloft/web@", "aloft/other@");
    for (app, r) in [
        ("other", first.image_ref.as_str()),
        ("other", &other_ref),
        ("web", "/srv/app"),
    ] {
        assert!(
            ctl.prepared_image(app, r).await.unwrap().is_none(),
            "{app} {r}"
        );
    }
    let after_first = h.stats().await;
    assert_eq!(after_first.blobs_received, 3);
    assert_eq!(after_first.bytes_received, first.bytes_sent);

    let second = h.client.push_image("web", &layout, |_| {}).await.unwrap();
    assert_eq!(
        (second.blobs_sent, second.blobs_skipped, second.bytes_sent),
        (0, 3, 0)
    );
    let after_second = h.stats().await;
    assert_eq!(after_second.blobs_received, 3, "nothing new was received");
    assert_eq!(after_second.bytes_received, after_first.bytes_received);
    assert_eq!(
        after_second.blobs_present_skipped,
        after_first.blobs_present_skipped + 3
    );

    // One layer changed: that layer and the config travel, the shared layer does not.
    let img2 = sample(b"v2");
    let third = h
        .client
        .push_image("web", &h.layout(&img2, "v2"), |_| {})
        .await
        .unwrap();
    assert_eq!((third.blobs_sent, third.blobs_skipped), (2, 1));

    let list = h.client.oci_images("web").await.unwrap();
    assert_eq!(list.images.len(), 2);
    let per_image: u64 = list.images.iter().map(|i| i.size).sum();
    assert!(
        list.total_size < per_image,
        "the shared layer counts once: {list:?}"
    );
    let shown = h
        .client
        .oci_image("web", img.manifest.as_str())
        .await
        .unwrap();
    assert_eq!(shown.digest, img.manifest.as_str());
    let (s, _) = Harness::answer(h.req(
        Method::GET,
        &format!("/v1/apps/other/oci-images/{}", img.manifest),
    ))
    .await;
    assert_eq!(s, 404, "images belong to the app they were pushed to");

    // A release of the owner may name it; another app's may not.
    let spec = json!({"image_digest": img.manifest.as_str(), "spec": {
        "image": "", "default_group": "app",
        "groups": {"app": {"image": "", "init": {}}},
    }});
    let (s, v) = Harness::answer(h.req(Method::POST, "/v1/apps/other/releases").json(&spec)).await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("has not been uploaded to app \"other\""),
        "{v}"
    );
    let (s, v) = Harness::answer(h.req(Method::POST, "/v1/apps/web/releases").json(&spec)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["spec"]["image"], first.image_ref);
    h.stop().await;
}

#[tokio::test]
async fn a_corrupted_blob_is_refused_and_nothing_is_stored() {
    let h = Harness::start().await;
    let good = b"the real layer bytes".to_vec();
    let d = Digest::of_bytes(&good);
    let (s, v) = Harness::answer(
        h.req(Method::PATCH, &format!("/v1/apps/web/blobs/{d}?offset=0"))
            .body(b"tampered layer bytes".to_vec()),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let (s, v) =
        Harness::answer(h.req(Method::PUT, &format!("/v1/apps/web/blobs/{d}?size=20"))).await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    let actual = Digest::of_bytes(b"tampered layer bytes");
    assert!(
        msg.contains(d.as_str()) && msg.contains(actual.as_str()),
        "{msg}"
    );
    assert!(msg.contains("upload the blob again"), "{msg}");
    let (s, _) = Harness::answer(h.req(Method::HEAD, &format!("/v1/apps/web/blobs/{d}"))).await;
    assert_eq!(s, 404, "nothing stored");
    assert_eq!(h.offset(&d).await, 0, "the bad upload is gone");
    assert_eq!(h.stats().await.blobs_received, 0);
    // A bad digest in the path is a 400, not a file name.
    let (s, v) =
        Harness::answer(h.req(Method::HEAD, "/v1/apps/web/blobs/sha256:..%2f..%2fetc")).await;
    assert_eq!(s, 400, "{v}");
    // The right bytes are accepted, in two requests, the last with the commit.
    let (s, v) = Harness::answer(
        h.req(Method::PATCH, &format!("/v1/apps/web/blobs/{d}?offset=0"))
            .body(good[..5].to_vec()),
    )
    .await;
    assert_eq!((s, v["offset"].as_u64()), (StatusCode::ACCEPTED, Some(5)));
    let (s, v) = Harness::answer(
        h.req(Method::PUT, &format!("/v1/apps/web/blobs/{d}?size=20"))
            .body(good[5..].to_vec()),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let resp = h
        .req(Method::HEAD, &format!("/v1/apps/web/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "20");
    h.stop().await;
}

#[tokio::test]
async fn an_interrupted_upload_resumes_at_the_agents_offset() {
    let h = Harness::start().await;
    // A layer of incompressible bytes, so the blob is large enough to be cut mid-way.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let img = image(
        &[tar(&[Entry::File("data", &noise, 0o644)])],
        &["/bin/true"],
    );
    let (layer, _) = img.layers[0].clone();
    let bytes = img.blobs[&layer].clone();
    let first_part = 100_000;
    // A request announcing the whole blob whose connection is closed after `first_part` bytes.
    {
        use tokio::io::AsyncWriteExt;
        let addr = h.url.trim_start_matches("http://").to_string();
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PATCH /v1/apps/web/blobs/{layer}?offset=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
            h.token,
            bytes.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&bytes[..first_part]).await.unwrap();
        sock.flush().await.unwrap();
        sock.shutdown().await.unwrap();
        drop(sock);
    }
    wait_for_async(
        PATIENCE,
        "the agent keeps the bytes that arrived",
        || async { h.offset(&layer).await == first_part as u64 },
    )
    .await;
    // Continuing at another offset is refused with 409 and the current offset named.
    let (s, v) = Harness::answer(
        h.req(
            Method::PATCH,
            &format!("/v1/apps/web/blobs/{layer}?offset=0"),
        )
        .body(bytes.clone()),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["status"], "wrong_offset");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("resume from {first_part}")),
        "{v}"
    );
    // The client resumes where the agent is.
    let before = h.stats().await.bytes_received;
    let pushed = h
        .client
        .push_image("web", &h.layout(&img, "x"), |_| {})
        .await
        .unwrap();
    let config_size = img.blobs[&img.config].len() as u64;
    assert_eq!(
        pushed.bytes_sent,
        (bytes.len() - first_part) as u64 + config_size
    );
    assert_eq!(h.stats().await.bytes_received - before, pushed.bytes_sent);
    assert_eq!(pushed.image.layers[0].unpacked_size, noise.len() as u64);
    h.stop().await;
}

#[tokio::test]
async fn a_manifest_naming_a_missing_blob_is_refused() {
    let h = Harness::start().await;
    let img = sample(b"x");
    // Only the config goes up.
    let cfg = &img.blobs[&img.config];
    let (s, v) = Harness::answer(
        h.req(Method::PUT, &format!("/v1/apps/web/blobs/{}", img.config))
            .body(cfg.clone()),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = Harness::answer(
        h.req(
            Method::PUT,
            &format!("/v1/apps/web/manifests/{}", img.manifest),
        )
        .body(img.manifest_bytes.clone()),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    for (layer, _) in &img.layers {
        assert!(msg.contains(layer.as_str()), "{msg}");
    }
    // A manifest that is not the digest of its path, and one that is not JSON.
    let (s, v) = Harness::answer(
        h.req(
            Method::PUT,
            &format!("/v1/apps/web/manifests/{}", img.config),
        )
        .body(img.manifest_bytes.clone()),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let junk = b"{not json".to_vec();
    let (s, v) = Harness::answer(
        h.req(
            Method::PUT,
            &format!("/v1/apps/web/manifests/{}", Digest::of_bytes(&junk)),
        )
        .body(junk),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(h.client.oci_images("web").await.unwrap().images.is_empty());
    h.stop().await;
}

/// Ages every file under `dir` by two hours (past the store's grace period for unreferenced
/// images and blobs).
fn age_files(dir: &std::path::Path) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_file() {
            let f = std::fs::File::options().write(true).open(e.path()).unwrap();
            f.set_modified(then).unwrap();
        }
    }
}

#[tokio::test]
async fn gc_keeps_the_images_of_releases_and_removes_the_rest() {
    let h = Harness::start().await;
    let base = tar(&[Entry::File("bin/app", b"#!/bin/sh\n", 0o755)]);
    let kept = image(
        &[base.clone(), tar(&[Entry::File("k", b"K", 0o644)])],
        &["/bin/app"],
    );
    let dropped = image(
        &[base, tar(&[Entry::File("d", b"D", 0o644)])],
        &["/bin/app"],
    );
    for (img, name) in [(&kept, "kept"), (&dropped, "dropped")] {
        h.client
            .push_image("web", &h.layout(img, name), |_| {})
            .await
            .unwrap();
    }
    // A release names `kept` (it need not succeed: releases keep their image either way).
    let spec = json!({"image_digest": kept.manifest.as_str(), "spec": {
        "image": "", "default_group": "app", "groups": {"app": {"image": "", "init": {}}},
    }});
    let (s, v) = Harness::answer(h.req(Method::POST, "/v1/apps/web/releases").json(&spec)).await;
    assert_eq!(s, 201, "{v}");
    wait_for_async(PATIENCE, "the release ends", || async {
        let (_, r) = Harness::answer(h.req(Method::GET, "/v1/apps/web/releases/1")).await;
        matches!(r["status"].as_str(), Some("complete" | "failed"))
    })
    .await;
    // Just pushed: nothing goes, referenced or not (a push may still be under way).
    let (s, v) = Harness::answer(h.req(Method::POST, "/v1/images/gc")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.client.oci_images("web").await.unwrap().images.len(), 2);
    // Two hours on, the unreferenced image goes, with its own layer; the shared layer stays.
    let oci = h.dir.path().join("data/oci");
    age_files(&oci.join("images"));
    age_files(&oci.join("blobs/sha256"));
    let (s, v) = Harness::answer(h.req(Method::POST, "/v1/images/gc")).await;
    assert_eq!(s, 200, "{v}");
    let list = h.client.oci_images("web").await.unwrap();
    let digests: Vec<&str> = list.images.iter().map(|i| i.digest.as_str()).collect();
    assert_eq!(digests, [kept.manifest.as_str()]);
    let (s, _) = Harness::answer(h.req(
        Method::HEAD,
        &format!("/v1/apps/web/blobs/{}", dropped.layers[1].0),
    ))
    .await;
    assert_eq!(s, 404, "the dropped image's own layer is gone");
    let layers = oci.join("layers");
    assert!(!layers.join(dropped.layers[1].1.hex()).exists());
    for (blob, diff) in &kept.layers {
        let (s, _) =
            Harness::answer(h.req(Method::HEAD, &format!("/v1/apps/web/blobs/{blob}"))).await;
        assert_eq!(s, 200, "{blob} of the kept image");
        assert!(layers.join(diff.hex()).is_dir());
    }
    h.stop().await;
}

/// Why a buildah-built image cannot be made here, if it cannot.
fn buildah_or_why() -> Result<(), String> {
    if !is_root() {
        return Err("needs root (buildah, whiteouts)".into());
    }
    let found = std::process::Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        return Err("buildah is not installed (scripts/install-test-deps.sh)".into());
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        return Err("busybox-static is not installed (scripts/install-test-deps.sh)".into());
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// A real builder's output: buildah builds FROM scratch with busybox, a RUN step deletes a file
/// of the layer below (a whiteout); the pushed image unpacks with the whiteout as overlayfs
/// wants it and the config's process defaults.
#[tokio::test]
async fn a_buildah_image_is_pushed_and_unpacked() {
    if !aloft_testkit::privileged_or_skip(
        "a_buildah_image_is_pushed_and_unpacked",
        buildah_or_why(),
    ) {
        return;
    }
    let h = Harness::start().await;
    let ctx = h.dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    std::fs::write(ctx.join("etc/old"), "old\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY etc /etc\n\
         RUN [\"/bin/busybox\", \"rm\", \"/etc/old\"]\n\
         ENV GREETING=hi\nWORKDIR /srv\nENTRYPOINT [\"/bin/busybox\"]\nCMD [\"echo\", \"hello\"]\n",
    )
    .unwrap();
    let tag = format!("localhost/aloft-oci-test:{}", std::process::id());
    let layout = h.dir.path().join("layout");
    // An image store of its own (vfs, in the temp dir): nothing is left in the host's.
    let store = h.dir.path().join("store");
    let conf = h.dir.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
            store.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("buildah")
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "build",
        "--layers",
        "--isolation",
        "chroot",
        "-q",
        "-t",
        &tag,
        ctx.to_str().unwrap(),
    ]);
    let dest = format!("oci:{}:app", layout.display());
    run(&["push", "-q", &tag, &dest]);
    let zstd_layout = h.dir.path().join("layout-zstd");
    let zstd_dest = format!("oci:{}:app", zstd_layout.display());
    run(&[
        "push",
        "-q",
        "--compression-format",
        "zstd",
        &tag,
        &zstd_dest,
    ]);
    let _ = std::process::Command::new("buildah")
        .args(["rmi", &tag])
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .output();

    let pushed = h.client.push_image("web", &layout, |_| {}).await.unwrap();
    let img = pushed.image;
    assert_eq!(img.config.entrypoint, ["/bin/busybox"]);
    assert_eq!(img.config.cmd, ["echo", "hello"]);
    assert_eq!(img.config.workdir.as_deref(), Some("/srv"));
    assert!(
        img.config.env.iter().any(|e| e == "GREETING=hi"),
        "{:?}",
        img.config.env
    );
    let layers = h.dir.path().join("data/oci/layers");
    let dir = |i: usize| layers.join(img.layers[i].diff_id.trim_start_matches("sha256:"));
    assert!(dir(0).join("bin/busybox").is_file());
    let last = img.layers.len() - 1;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(dir(last).join("etc/old")).expect("a whiteout for /etc/old");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    // The same image with zstd layers: other blobs, the same unpacked layers.
    let zstd = h
        .client
        .push_image("other", &zstd_layout, |_| {})
        .await
        .unwrap()
        .image;
    assert!(
        zstd.layers.iter().all(|l| l.media_type.ends_with("+zstd")),
        "{zstd:?}"
    );
    let diff_ids = |i: &aloft_api::images::OciImageInfo| {
        i.layers
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(diff_ids(&zstd), diff_ids(&img));
    h.stop().await;
}

#[tokio::test]
async fn a_deploy_token_pushes_images_to_its_app_only() {
    use aloft_api::tokens::{CreateTokenRequest, TokenKind};
    let h = Harness::start().await;
    let created = h
        .client
        .create_token(&CreateTokenRequest {
            kind: TokenKind::Deploy,
            app: Some("web".into()),
            name: Some("pusher".into()),
            expiry: None,
        })
        .await
        .unwrap();
    let deployer = aloft_client::Client::new(&h.url, Some(created.token));
    let img = sample(b"scoped");
    let layout = h.layout(&img, "scoped");
    let pushed = deployer.push_image("web", &layout, |_| {}).await.unwrap();
    assert_eq!(pushed.blobs_sent, 3);
    let err = deployer
        .push_image("other", &layout, |_| {})
        .await
        .unwrap_err();
    let status = aloft_client::status_error(&err).map(|e| e.status.as_u16());
    assert_eq!(status, Some(403), "{err:#}");
    assert!(
        h.client
            .oci_images("other")
            .await
            .unwrap()
            .images
            .is_empty(),
        "nothing reached the other app"
    );
    h.stop().await;
}
