//! Unit tests of [`Tokens`] over a temp-dir store and the fake runtime: creation rules, what
//! authenticates and why not, the data-dir token, and that no secret reaches the database.

use std::sync::Arc;

use aloft_api::tokens::{CreateTokenRequest, TokenKind};
use aloft_api::{CreateAppRequest, GoDuration};
use aloft_store::{Durability, Store};

use super::{AuthError, Tokens, DATA_DIR_TOKEN_ID};
use crate::controller::{Controller, DomainError};
use crate::regions::Regions;
use crate::settings::Limits;
use crate::supervisor::fake::FakeSupervisor;

const DATA_DIR_TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct World {
    ctl: Arc<Controller>,
    tokens: Arc<Tokens>,
    dir: tempfile::TempDir,
}

async fn world_in(dir: tempfile::TempDir, data_dir_token: &str) -> World {
    let path = dir.path().join("state.db");
    let store = tokio::task::spawn_blocking(move || Store::open(&path, Durability::default()))
        .await
        .unwrap()
        .unwrap();
    let (fake, _events) = FakeSupervisor::new();
    let ctl = Arc::new(Controller::new(
        Arc::new(store),
        Arc::new(fake),
        Regions::new(&[]).unwrap(),
        Limits::default(),
    ));
    let tokens = Tokens::start(ctl.clone(), dir.path(), data_dir_token)
        .await
        .unwrap();
    World { ctl, tokens, dir }
}

async fn world() -> World {
    let w = world_in(tempfile::tempdir().unwrap(), DATA_DIR_TOKEN).await;
    w.ctl
        .create_app(CreateAppRequest {
            app_name: Some("a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    w
}

fn request(kind: TokenKind, app: Option<&str>) -> CreateTokenRequest {
    CreateTokenRequest {
        kind,
        app: app.map(Into::into),
        name: Some("ci".into()),
        expiry: None,
    }
}

fn bad_request(e: DomainError, needle: &str) {
    match e {
        DomainError::InvalidRequest(m) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a bad request about {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn created_tokens_authenticate_as_their_kind_and_app_until_revoked() {
    let w = world().await;
    let created = w
        .tokens
        .create(request(TokenKind::Deploy, Some("a")))
        .await
        .unwrap();
    let now = super::now();
    let caller = w.tokens.authenticate(&created.token, now).unwrap();
    assert_eq!(
        (caller.kind, caller.app.as_deref(), caller.name.as_str()),
        (TokenKind::Deploy, Some("a"), "ci")
    );
    // flyctl's default: 175200h, 20 years less the leap days.
    let year = |t: &str| t[..4].parse::<i32>().unwrap();
    let years = year(created.info.expires_at.as_deref().unwrap()) - year(&created.info.created_at);
    assert!((19..=20).contains(&years), "{:?}", created.info);

    // A wrong secret under a real id is "unknown", never "revoked"/"expired".
    let mut forged = created.token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(w.tokens.authenticate(&forged, now), Err(AuthError::Unknown));

    let revoked = w.tokens.revoke(&created.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    match w.tokens.authenticate(&created.token, now) {
        Err(AuthError::Revoked { actor, .. }) => assert!(actor.contains("ci"), "{actor}"),
        other => panic!("expected revoked, got {other:?}"),
    }
    match w.tokens.revoke("nope").await {
        Err(DomainError::NotFound(m)) => assert!(m.contains("nope"), "{m}"),
        other => panic!("expected not found, got {other:?}"),
    }
    bad_request(
        w.tokens.revoke(DATA_DIR_TOKEN_ID).await.unwrap_err(),
        "restart",
    );
}

#[tokio::test]
async fn expired_tokens_are_refused_as_expired() {
    let w = world().await;
    let mut req = request(TokenKind::Readonly, None);
    req.expiry = Some(GoDuration::from_secs(60));
    let created = w.tokens.create(req).await.unwrap();
    let now = super::now();
    assert!(w.tokens.authenticate(&created.token, now).is_ok());
    assert!(matches!(
        w.tokens.authenticate(&created.token, now + 61),
        Err(AuthError::Expired { .. })
    ));
    // Several tokens in one header: the valid one wins, else the most telling refusal.
    let data_dir = w
        .tokens
        .authenticate_any(["junk", DATA_DIR_TOKEN], now + 61)
        .unwrap();
    assert_eq!(data_dir.id, DATA_DIR_TOKEN_ID);
    assert!(matches!(
        w.tokens
            .authenticate_any(["junk", &created.token], now + 61),
        Err(AuthError::Expired { .. })
    ));
    assert_eq!(w.tokens.authenticate_any([], now), Err(AuthError::Missing));
}

#[tokio::test]
async fn bad_creations_are_refused_with_what_to_do() {
    let w = world().await;
    bad_request(
        w.tokens
            .create(request(TokenKind::Deploy, None))
            .await
            .unwrap_err(),
        "-a APP",
    );
    bad_request(
        w.tokens
            .create(request(TokenKind::Org, Some("a")))
            .await
            .unwrap_err(),
        "no app",
    );
    assert!(matches!(
        w.tokens
            .create(request(TokenKind::Deploy, Some("ghost")))
            .await,
        Err(DomainError::NotFound(_))
    ));
    let mut zero = request(TokenKind::Org, None);
    zero.expiry = Some(GoDuration::from_secs(0));
    bad_request(w.tokens.create(zero).await.unwrap_err(), "expiry");
    let mut blank = request(TokenKind::Org, None);
    blank.name = Some(" ".into());
    bad_request(w.tokens.create(blank).await.unwrap_err(), "name");
    let listed = w.tokens.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [DATA_DIR_TOKEN_ID],
        "nothing was created"
    );
}

#[tokio::test]
async fn the_data_dir_token_is_an_org_token_that_follows_its_file() {
    let w = world().await;
    let caller = w.tokens.authenticate(DATA_DIR_TOKEN, super::now()).unwrap();
    assert_eq!(
        (caller.id.as_str(), caller.kind),
        (DATA_DIR_TOKEN_ID, TokenKind::Org)
    );
    let created = w
        .tokens
        .create(request(TokenKind::Org, None))
        .await
        .unwrap();
    w.tokens.used(&caller);
    let World { tokens, dir, .. } = w;
    tokens.audit.flush().await;
    drop(tokens);
    // Restarted with a new data-dir token: the old one is refused, the new one and the
    // created token work.
    let w = world_in(dir, "a-rotated-token").await;
    let now = super::now();
    assert_eq!(
        w.tokens.authenticate(DATA_DIR_TOKEN, now),
        Err(AuthError::Unknown)
    );
    assert!(w.tokens.authenticate("a-rotated-token", now).is_ok());
    assert!(w.tokens.authenticate(&created.token, now).is_ok());
    let listed = w.tokens.list().await.unwrap();
    let data_dir = listed.iter().find(|t| t.id == DATA_DIR_TOKEN_ID).unwrap();
    assert!(data_dir.expires_at.is_none());
    assert!(data_dir.last_used_at.is_some(), "its last use was kept");
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn no_secret_is_in_the_database_files() {
    let w = world().await;
    let created = w
        .tokens
        .create(request(TokenKind::Deploy, Some("a")))
        .await
        .unwrap();
    let secret = created.token.rsplit('_').next().unwrap().to_string();
    let mut seen = 0;
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("state.db") {
            continue;
        }
        seen += 1;
        let bytes = std::fs::read(&path).unwrap();
        for needle in [secret.as_bytes(), DATA_DIR_TOKEN.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{name} holds a secret"
            );
        }
        assert!(
            name != "state.db-wal" || bytes.windows(2).any(|w| w == b"ci"),
            "the WAL holds the new token's row (so the grep looked at it)"
        );
    }
    assert!(seen >= 2, "the database and its WAL were read");
}
