//! `aloft certs add|list|show|remove` against a real agent process: flyctl-like tables and
//! `Key = value` blocks, JSON, PEM files, and clear errors (bad hostname, another app's
//! hostname, files that are not PEM).

use crate::common::{aloft, fails, ok, AgentProc};

#[tokio::test]
async fn certs_add_list_show_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = AgentProc::start(&tmp.path().join("data"));
    agent.create_app("shop").await;
    agent.create_app("other").await;

    let out = ok(&aloft(
        &agent,
        &["certs", "add", "WWW.Shop.Example.", "-a", "shop"],
    ));
    assert!(
        out.contains("You are creating a certificate for www.shop.example"),
        "{out}"
    );
    assert!(
        out.contains("Source                    = self-signed"),
        "{out}"
    );

    // PEM files.
    let ck = rcgen::generate_simple_self_signed(vec!["api.shop.example".to_string()]).unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let out = ok(&aloft(
        &agent,
        &[
            "certs",
            "add",
            "api.shop.example",
            "--cert",
            c,
            "--key",
            k,
            "-a",
            "shop",
        ],
    ));
    assert!(out.contains("Source                    = files"), "{out}");

    let out = ok(&aloft(&agent, &["certs", "list", "-a", "shop"]));
    assert!(out.contains("Host Name") && out.contains("Status"), "{out}");
    assert!(
        out.contains("api.shop.example") && out.contains("www.shop.example"),
        "{out}"
    );
    assert!(out.contains("Ready"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&aloft(
        &agent,
        &["certs", "list", "-a", "shop", "--json"],
    )))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");

    let out = ok(&aloft(
        &agent,
        &["certs", "show", "www.shop.example", "-a", "shop"],
    ));
    assert!(
        out.contains("The certificate for www.shop.example has been issued."),
        "{out}"
    );
    assert!(out.contains("Expires"), "{out}");

    // Errors people can act on.
    let err = fails(&aloft(
        &agent,
        &["certs", "add", "www.shop.example", "-a", "other"],
    ));
    assert!(err.contains("already app \"shop\"'s"), "{err}");
    let err = fails(&aloft(
        &agent,
        &["certs", "add", "192.168.1.1", "-a", "shop"],
    ));
    assert!(err.contains("IP address"), "{err}");
    let err = fails(&aloft(
        &agent,
        &[
            "certs",
            "add",
            "x.shop.example",
            "--cert",
            k,
            "--key",
            k,
            "-a",
            "shop",
        ],
    ));
    assert!(err.contains("no certificate"), "{err}");
    let err = fails(&aloft(
        &agent,
        &["certs", "show", "nope.example", "-a", "shop"],
    ));
    assert!(err.contains("no certificate for"), "{err}");
    let err = fails(&aloft(
        &agent,
        &["certs", "remove", "www.shop.example", "-a", "shop"],
    ));
    assert!(err.contains("--yes"), "asks for confirmation: {err}");

    let out = ok(&aloft(
        &agent,
        &["certs", "remove", "www.shop.example", "-a", "shop", "--yes"],
    ));
    assert!(
        out.contains("Certificate www.shop.example deleted from app shop"),
        "{out}"
    );
    let out = ok(&aloft(&agent, &["certs", "list", "-a", "shop"]));
    assert!(!out.contains("www.shop.example"), "{out}");
}
