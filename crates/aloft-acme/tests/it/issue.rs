//! Issuance over HTTP-01 and TLS-ALPN-01, the account file, renewal, and failures, against
//! pebble.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aloft_acme::{renewal_due, AcmeClient, AcmeError, ChallengeKind, IssuedCertificate};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::doubles::ChallengeServersDouble;
use aloft_testkit::pebble::{free_port, Pebble, PebbleOptions};

const DOMAIN: &str = "web.aloft.test";

/// The challenge servers, pebble validating against them, and an empty account directory.
struct Setup {
    servers: ChallengeServersDouble,
    pebble: Pebble,
    account_dir: tempfile::TempDir,
}

impl Setup {
    async fn start(authz_reuse: u8) -> Option<Setup> {
        let servers = ChallengeServersDouble::start().await;
        let pebble = Pebble::start(PebbleOptions {
            http_port: servers.http_port,
            tls_port: servers.tls_port,
            authz_reuse,
        })?;
        Some(Setup {
            servers,
            pebble,
            account_dir: tempfile::tempdir().unwrap(),
        })
    }

    async fn client(&self) -> AcmeClient {
        AcmeClient::new(
            &self.pebble.directory_url,
            self.account_dir.path(),
            &["admin@aloft.dev".to_string()],
            Some(&self.pebble.listener_root_pem),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.pebble.logs()))
        .with_timeout(Duration::from_secs(60))
    }

    async fn issue(&self, client: &AcmeClient, kind: ChallengeKind) -> IssuedCertificate {
        let started = Instant::now();
        let issued = client
            .issue(&[DOMAIN.to_string()], kind, &*self.servers.table)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.pebble.logs()));
        eprintln!("{kind} issuance took {:?}", started.elapsed());
        issued
    }

    async fn assert_valid_for_domain(&self, issued: &IssuedCertificate) {
        self.assert_valid_for(issued, &[DOMAIN]).await;
    }

    /// The leaf covers each of `names` (and not another name), chains to pebble's issuing root,
    /// and belongs to the returned key, a P-256 one.
    async fn assert_valid_for(&self, issued: &IssuedCertificate, names: &[&str]) {
        let chain: Vec<CertificateDer> =
            CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        assert!(
            chain.len() >= 2,
            "leaf and intermediate: {}",
            issued.chain_pem
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pebble.issuing_root().await).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let verify = |name: &str| {
            verifier.verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        for name in names {
            verify(name).expect("the chain verifies against pebble's root for each name");
        }
        assert!(verify("other.aloft.test").is_err());

        let key = rcgen::KeyPair::from_pem(&issued.key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice());
        assert_eq!(
            aloft_acme::parse_not_after(&issued.chain_pem).unwrap(),
            issued.not_after
        );
        assert!(issued.not_before <= SystemTime::now() && SystemTime::now() < issued.not_after);
    }
}

/// Each challenge answer set during an issuance was removed again, and none is left.
fn assert_cleaned_up(setup: &Setup, kind: ChallengeKind) {
    let calls = setup.servers.table.calls();
    let set: Vec<_> = calls.iter().filter(|c| c.starts_with("set ")).collect();
    assert!(!set.is_empty(), "{calls:?}");
    for call in set {
        assert!(call.starts_with(&format!("set {kind}")), "{calls:?}");
        let removed = call.replacen("set ", "remove ", 1);
        assert!(calls.contains(&removed), "{removed} missing in {calls:?}");
    }
    assert!(setup.servers.table.is_empty());
}

#[tokio::test]
async fn http01_issues_a_chain_for_the_domain_under_pebbles_root() {
    let Some(setup) = Setup::start(0).await else {
        return;
    };
    let client = setup.client().await;
    let issued = setup.issue(&client, ChallengeKind::Http01).await;
    setup.assert_valid_for_domain(&issued).await;
    assert_cleaned_up(&setup, ChallengeKind::Http01);
}

#[tokio::test]
async fn one_certificate_covers_several_domains_each_proven() {
    let Some(setup) = Setup::start(0).await else {
        return;
    };
    let client = setup.client().await;
    let names = ["web.aloft.test", "WWW.aloft.test."];
    let issued = client
        .issue(
            &names.map(String::from),
            ChallengeKind::Http01,
            &*setup.servers.table,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", setup.pebble.logs()));
    setup
        .assert_valid_for(&issued, &["web.aloft.test", "www.aloft.test"])
        .await;
    let calls = setup.servers.table.calls();
    let set = calls
        .iter()
        .filter(|c| c.starts_with("set http-01"))
        .count();
    assert_eq!(set, 2, "one challenge per domain: {calls:?}");
    assert_cleaned_up(&setup, ChallengeKind::Http01);
}

#[tokio::test]
async fn tls_alpn01_issues_a_chain_for_the_domain_under_pebbles_root() {
    let Some(setup) = Setup::start(0).await else {
        return;
    };
    let client = setup.client().await;
    let issued = setup.issue(&client, ChallengeKind::TlsAlpn01).await;
    setup.assert_valid_for_domain(&issued).await;
    assert_cleaned_up(&setup, ChallengeKind::TlsAlpn01);
    assert_eq!(
        setup.servers.table.calls(),
        [
            format!("set tls-alpn-01 {DOMAIN}"),
            format!("remove tls-alpn-01 {DOMAIN}")
        ]
    );
}

#[tokio::test]
async fn the_account_is_kept_in_a_0600_file_and_reused_by_the_next_client() {
    let Some(setup) = Setup::start(0).await else {
        return;
    };
    let first = setup.client().await;
    let files: Vec<_> = std::fs::read_dir(setup.account_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let written = std::fs::read(&files[0]).unwrap();

    let second = setup.client().await;
    assert_eq!(second.account_id(), first.account_id());
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        written,
        "the file is kept as it was"
    );
    let issued = setup.issue(&second, ChallengeKind::Http01).await;
    setup.assert_valid_for_domain(&issued).await;

    // Another account directory means another account.
    let elsewhere = tempfile::tempdir().unwrap();
    let third = AcmeClient::new(
        &setup.pebble.directory_url,
        elsewhere.path(),
        &[],
        Some(&setup.pebble.listener_root_pem),
    )
    .await
    .unwrap();
    assert_ne!(third.account_id(), first.account_id());
}

#[tokio::test]
async fn renewal_issues_a_new_certificate_with_a_new_key_for_the_same_domain() {
    let Some(setup) = Setup::start(0).await else {
        return;
    };
    let client = setup.client().await;
    let first = setup.issue(&client, ChallengeKind::Http01).await;
    assert!(!renewal_due(
        first.not_before,
        first.not_after,
        SystemTime::now()
    ));
    let near_the_end = first.not_after - Duration::from_secs(24 * 60 * 60);
    assert!(renewal_due(first.not_before, first.not_after, near_the_end));

    let renewed = setup.issue(&client, ChallengeKind::TlsAlpn01).await;
    setup.assert_valid_for_domain(&renewed).await;
    assert_ne!(renewed.chain_pem, first.chain_pem);
    assert_ne!(renewed.key_pem, first.key_pem);
    // No authorization reuse here: both issuances answered a challenge.
    let calls = setup.servers.table.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("set http-01")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with("set tls-alpn-01")),
        "{calls:?}"
    );
    assert!(setup.servers.table.is_empty());
}

#[tokio::test]
async fn a_still_valid_authorization_is_reused_without_a_challenge() {
    let Some(setup) = Setup::start(100).await else {
        return;
    };
    let client = setup.client().await;
    setup.issue(&client, ChallengeKind::Http01).await;
    let answered = setup.servers.table.calls().len();
    let again = setup.issue(&client, ChallengeKind::Http01).await;
    setup.assert_valid_for_domain(&again).await;
    assert_eq!(
        setup.servers.table.calls().len(),
        answered,
        "no new challenge"
    );
}

/// A responder that forgets what it is told: the proxy answers the CA with a 404.
struct ForgetfulResponder(Arc<crate::doubles::ChallengeTableDouble>);

impl aloft_acme::ChallengeResponder for ForgetfulResponder {
    fn set_http01(&self, token: &str, _: &str) {
        self.0.set_http01(token, "not the key authorization");
    }
    fn remove_http01(&self, token: &str) {
        self.0.remove_http01(token);
    }
    fn set_tls_alpn01(&self, _: &str, _: Vec<Vec<u8>>, _: Vec<u8>) {}
    fn remove_tls_alpn01(&self, _: &str) {}
}

#[tokio::test]
async fn a_wrong_http01_answer_fails_saying_something_else_answered() {
    let Some(setup) = Setup::start(0).await else {
        return;
    };
    let client = setup.client().await;
    let responder = ForgetfulResponder(setup.servers.table.clone());
    let err = client
        .issue(&[DOMAIN.to_string()], ChallengeKind::Http01, &responder)
        .await
        .expect_err("the answer is wrong");
    let text = err.to_string();
    eprintln!("http-01 answered wrongly: {text}");
    for part in [
        "http-01 challenge for web.aloft.test failed",
        "(unauthorized)",
        "something other than this host answered",
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
    assert!(setup.servers.table.is_empty());
}

/// Pebble validates against ports where nothing listens.
async fn unanswered(kind: ChallengeKind) -> Option<(AcmeError, Vec<String>, bool)> {
    let servers = ChallengeServersDouble::start().await;
    let pebble = Pebble::start(PebbleOptions {
        http_port: free_port(),
        tls_port: free_port(),
        authz_reuse: 0,
    })?;
    let account_dir = tempfile::tempdir().unwrap();
    let client = AcmeClient::new(
        &pebble.directory_url,
        account_dir.path(),
        &[],
        Some(&pebble.listener_root_pem),
    )
    .await
    .unwrap()
    .with_timeout(Duration::from_secs(60));
    let err = client
        .issue(&[DOMAIN.to_string()], kind, &*servers.table)
        .await
        .expect_err("nothing answers the challenge");
    eprintln!("{kind} with nothing answering: {err}");
    Some((err, servers.table.calls(), servers.table.is_empty()))
}

#[tokio::test]
async fn an_unanswered_http01_challenge_fails_saying_what_to_do() {
    let Some((err, calls, empty)) = unanswered(ChallengeKind::Http01).await else {
        return;
    };
    let AcmeError::ChallengeFailed { domain, kind, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((domain.as_str(), *kind), (DOMAIN, ChallengeKind::Http01));
    let text = err.to_string();
    for part in [
        "http-01 challenge for web.aloft.test failed",
        "http://web.aloft.test/.well-known/acme-challenge/",
        "(connection)",
        "make port 80 of this host reachable from the internet",
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
    assert_eq!(calls.len(), 2, "set, then removed: {calls:?}");
    assert!(empty);
}

#[tokio::test]
async fn an_unanswered_tls_alpn01_challenge_fails_saying_what_to_do() {
    let Some((err, calls, empty)) = unanswered(ChallengeKind::TlsAlpn01).await else {
        return;
    };
    let text = err.to_string();
    for part in [
        "tls-alpn-01 challenge for web.aloft.test failed",
        "web.aloft.test over TLS on port 443 (ALPN acme-tls/1)",
        "make port 443 of this host reachable from the internet",
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
    assert!(matches!(err, AcmeError::ChallengeFailed { .. }), "{err:?}");
    assert_eq!(calls.len(), 2, "set, then removed: {calls:?}");
    assert!(empty);
}

#[tokio::test]
async fn a_private_ca_is_refused_without_its_root_and_the_error_says_so() {
    let Some(setup) = Setup::start(0).await else {
        return;
    };
    let err = AcmeClient::new(
        &setup.pebble.directory_url,
        setup.account_dir.path(),
        &[],
        None,
    )
    .await
    .err()
    .expect("pebble's listener is not under a public root");
    let text = err.to_string();
    assert!(text.contains("could not read the ACME directory"), "{text}");
    assert!(text.contains("extra roots"), "{text}");
    assert_eq!(
        std::fs::read_dir(setup.account_dir.path()).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn the_overall_timeout_stops_a_hanging_validation_and_takes_the_answer_down() {
    // Pebble's validator connects to a port that accepts and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            held.push(stream);
        }
    });
    let servers = ChallengeServersDouble::start().await;
    let Some(pebble) = Pebble::start(PebbleOptions {
        http_port: hanging_port,
        tls_port: free_port(),
        authz_reuse: 0,
    }) else {
        return;
    };
    let account_dir = tempfile::tempdir().unwrap();
    let client = AcmeClient::new(
        &pebble.directory_url,
        account_dir.path(),
        &[],
        Some(&pebble.listener_root_pem),
    )
    .await
    .unwrap()
    .with_timeout(Duration::from_secs(2));
    let err = client
        .issue(
            &[DOMAIN.to_string()],
            ChallengeKind::Http01,
            &*servers.table,
        )
        .await
        .expect_err("the validation hangs");
    // Pebble gives up on a validation after 15 s: this is the client's own timeout.
    let text = err.to_string();
    assert!(
        text.contains(
            "gave up after 2s waiting for the CA to validate the challenges for web.aloft.test"
        ),
        "{text}"
    );
    let calls = servers.table.calls();
    assert_eq!(calls.len(), 2, "set, then removed: {calls:?}");
    assert!(calls[1].starts_with("remove http-01"), "{calls:?}");
    assert!(servers.table.is_empty());
    holder.abort();
}

/// The agent runs issuances in spawned tasks and shares one client.
#[allow(dead_code)]
fn issuing_can_run_in_a_spawned_task(
    client: &AcmeClient,
    responder: &dyn aloft_acme::ChallengeResponder,
) {
    fn send<T: Send>(_: &T) {}
    fn shared<T: Send + Sync>() {}
    shared::<AcmeClient>();
    send(&client.issue(&[], ChallengeKind::Http01, responder));
}
