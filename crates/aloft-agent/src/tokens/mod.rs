//! API tokens: who is calling, and the record of what they changed.
//!
//! [`Tokens`] checks a presented token against an in-memory copy of the `api_tokens` table (no
//! store access on the request path), creates and revokes tokens (store first, then the copy),
//! and hands uses to the [`audit`] writer, which stores apps' events and tokens' last use in
//! batches off the request path. The data-dir token (`<data-dir>/token`) is the first org
//! token, id and name `data-dir`: it never expires, cannot be revoked through the API, and is
//! rotated by replacing the file and restarting the agent (its stored MAC follows the file).
//!
//! Which routes a token's kind allows is decided by the API (`api::scope`); this module knows
//! no HTTP.

pub mod audit;
pub mod secret;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aloft_api::tokens::{
    AppEvent, CreateTokenRequest, CreatedToken, TokenInfo, TokenKind, DEFAULT_EXPIRY_SECS,
};
use aloft_store::{AppEventRow, TokenRow};

use crate::controller::{Controller, DomainError, DomainResult};
use secret::{Key, Presented};

/// Id and name of the data-dir token.
pub const DATA_DIR_TOKEN_ID: &str = "data-dir";

/// Most events one `GET …/events` lists: all an app keeps.
pub const MAX_EVENTS: usize = aloft_store::KEPT_APP_EVENTS;

/// Longest token name.
const MAX_NAME_LEN: usize = 100;

/// Longest lifetime a token can be given (100 years; keeps the arithmetic far from overflow).
const MAX_EXPIRY_SECS: u64 = 100 * 365 * 24 * 3600;

/// Who a request comes from: a token that authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub name: String,
    pub kind: TokenKind,
    pub app: Option<String>,
}

impl Caller {
    /// `name (id)`, as the app's events show it.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.name, self.id)
    }
}

/// Why no token authenticated. The expired and revoked cases are only told to someone who
/// presented that token's secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Unknown,
    Expired { actor: String, at: i64 },
    Revoked { actor: String, at: i64 },
}

impl AuthError {
    /// More telling errors win when a header lists several tokens.
    fn rank(&self) -> u8 {
        match self {
            AuthError::Missing => 0,
            AuthError::Unknown => 1,
            AuthError::Expired { .. } | AuthError::Revoked { .. } => 2,
        }
    }

    /// The message of the 401.
    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => "Authenticate: no token (send Authorization: Bearer <token>; \
                 the agent's first token is in <data-dir>/token)"
                .to_string(),
            AuthError::Unknown => "Authenticate: token not recognised (unknown token, or a \
                 wrong secret; `aloft tokens list` shows the agent's tokens)"
                .to_string(),
            AuthError::Expired { actor, at } => format!(
                "Authenticate: token {actor} expired at {}; create a new one with \
                 `aloft tokens create`",
                rfc3339(*at)
            ),
            AuthError::Revoked { actor, at } => format!(
                "Authenticate: token {actor} was revoked at {}; create a new one with \
                 `aloft tokens create`",
                rfc3339(*at)
            ),
        }
    }
}

/// The agent's tokens.
pub struct Tokens {
    ctl: Arc<Controller>,
    key: Key,
    /// The `api_tokens` table, by id; changed only after the store's write committed.
    by_id: RwLock<HashMap<String, TokenRow>>,
    audit: audit::Audit,
}

impl Tokens {
    /// Loads the key and the tokens, and makes `data_dir_token` the `data-dir` org token.
    pub async fn start(
        ctl: Arc<Controller>,
        data_dir: &Path,
        data_dir_token: &str,
    ) -> Result<Arc<Tokens>, DomainError> {
        let dir = data_dir.to_path_buf();
        let key = tokio::task::spawn_blocking(move || secret::load_or_create_key(&dir))
            .await
            .map_err(|e| DomainError::internal(format!("loading the token key: {e}")))?
            .map_err(|e| DomainError::internal(format!("loading the token key: {e}")))?;
        let mac = key.mac(data_dir_token);
        let rows = ctl
            .db(move |store| {
                store.write(|tx| {
                    let current = tx.token(DATA_DIR_TOKEN_ID)?;
                    if current.as_ref().map(|t| &t.secret_mac) != Some(&mac) {
                        // First start, or the file was replaced (a rotation).
                        tx.put_token(&TokenRow {
                            id: DATA_DIR_TOKEN_ID.into(),
                            name: DATA_DIR_TOKEN_ID.into(),
                            kind: TokenKind::Org,
                            app: None,
                            secret_mac: mac.clone(),
                            created_at: now(),
                            expires_at: None,
                            revoked_at: None,
                            last_used_at: current.and_then(|t| t.last_used_at),
                        })?;
                    }
                    tx.tokens()
                })
            })
            .await?;
        let by_id = rows.into_iter().map(|t| (t.id.clone(), t)).collect();
        Ok(Arc::new(Tokens {
            audit: audit::Audit::start(ctl.clone()),
            ctl,
            key,
            by_id: RwLock::new(by_id),
        }))
    }

    /// The token in `presented` that authenticates at `now` (Unix seconds).
    pub fn authenticate(&self, presented: &str, now: i64) -> Result<Caller, AuthError> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        let (row, secret) = match secret::parse(presented) {
            Presented::Issued { id, secret } => match by_id.get(id) {
                Some(row) => (row, secret),
                None => return Err(AuthError::Unknown),
            },
            Presented::Other(text) => match by_id.get(DATA_DIR_TOKEN_ID) {
                Some(row) => (row, text),
                None => return Err(AuthError::Unknown),
            },
        };
        if !self.key.verify(secret, &row.secret_mac) {
            return Err(AuthError::Unknown);
        }
        let actor = || format!("{} ({})", row.name, row.id);
        if let Some(at) = row.revoked_at {
            return Err(AuthError::Revoked { actor: actor(), at });
        }
        if let Some(at) = row.expires_at.filter(|at| *at <= now) {
            return Err(AuthError::Expired { actor: actor(), at });
        }
        Ok(Caller {
            id: row.id.clone(),
            name: row.name.clone(),
            kind: row.kind,
            app: row.app.clone(),
        })
    }

    /// The first of `candidates` that authenticates, else the most telling refusal.
    pub fn authenticate_any<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a str>,
        now: i64,
    ) -> Result<Caller, AuthError> {
        let mut worst = AuthError::Missing;
        for c in candidates {
            match self.authenticate(c, now) {
                Ok(caller) => return Ok(caller),
                Err(e) if e.rank() > worst.rank() => worst = e,
                Err(_) => {}
            }
        }
        Err(worst)
    }

    /// Creates a token; the answer is the only place its text appears.
    pub async fn create(&self, req: CreateTokenRequest) -> DomainResult<CreatedToken> {
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| req.kind.default_name().to_string());
        check_name(&name)?;
        match (req.kind, &req.app) {
            (TokenKind::Deploy, None) => return Err(DomainError::invalid_request(
                "a deploy token is bound to one app: give its name (`-a APP`, `app` in the body)",
            )),
            (TokenKind::Org, Some(app)) => {
                return Err(DomainError::invalid_request(format!(
                    "an org token can do everything and is bound to no app (got app {app:?}); \
                     use a deploy or readonly token for one app"
                )))
            }
            (_, Some(app)) => {
                self.ctl.get_app(app).await?;
            }
            (_, None) => {}
        }
        let expiry = req.expiry.map_or(DEFAULT_EXPIRY_SECS, |d| d.0.as_secs());
        if expiry == 0 || expiry > MAX_EXPIRY_SECS {
            return Err(DomainError::invalid_request(format!(
                "expiry must be between 1s and 876000h (100 years), got {}",
                aloft_api::duration::format_go_duration(std::time::Duration::from_secs(expiry))
            )));
        }
        let new = secret::generate(req.kind);
        let created_at = now();
        let row = TokenRow {
            id: new.id.clone(),
            name,
            kind: req.kind,
            app: req.app,
            secret_mac: self.key.mac(&new.secret),
            created_at,
            expires_at: Some(created_at + expiry as i64),
            revoked_at: None,
            last_used_at: None,
        };
        let stored = row.clone();
        self.ctl
            .db(move |store| store.write(|tx| tx.put_token(&stored)))
            .await?;
        let info = info(&row);
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.id.clone(), row);
        Ok(CreatedToken {
            token: new.text,
            info,
        })
    }

    /// Every token, oldest first, with its last use as of now.
    pub async fn list(&self) -> DomainResult<Vec<TokenInfo>> {
        self.audit.flush().await;
        let rows = self.ctl.db(|store| store.read(|tx| tx.tokens())).await?;
        Ok(rows.iter().map(info).collect())
    }

    /// Revokes a token: its next use gets a 401.
    pub async fn revoke(&self, id: &str) -> DomainResult<TokenInfo> {
        if id == DATA_DIR_TOKEN_ID {
            return Err(DomainError::invalid_request(
                "the data-dir token cannot be revoked through the API: replace \
                 <data-dir>/token (any new random text) and restart the agent to rotate it",
            ));
        }
        let known = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id);
        if !known {
            return Err(DomainError::not_found(format!(
                "no token with id {id:?} (`aloft tokens list` shows the ids)"
            )));
        }
        let at = now();
        let owned = id.to_string();
        self.ctl
            .db(move |store| store.write(|tx| tx.revoke_token(&owned, at)))
            .await?;
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        let row = by_id
            .get_mut(id)
            .ok_or_else(|| DomainError::internal(format!("token {id} vanished")))?;
        row.revoked_at.get_or_insert(at);
        Ok(info(row))
    }

    /// Notes that `caller` was used now (stored in the next batch).
    pub fn used(&self, caller: &Caller) {
        self.audit.used(&caller.id, now());
    }

    /// Records a request that changed (or tried to change) `app`, off the request path.
    pub fn record(&self, caller: &Caller, app: &str, message: String) {
        self.record_event(caller, app, "request", message);
    }

    /// Records, in the events of the app a token is bound to, that `caller` created or revoked
    /// it.
    pub fn record_token_change(&self, caller: &Caller, token: &TokenInfo, what: &str) {
        if let Some(app) = &token.app {
            let message = format!("{what} {} token {} ({})", token.kind, token.name, token.id);
            self.record_event(caller, app, "token", message);
        }
    }

    fn record_event(&self, caller: &Caller, app: &str, kind: &str, message: String) {
        self.audit.event(AppEventRow {
            id: 0,
            app: app.to_string(),
            at: now(),
            kind: kind.into(),
            actor: caller.actor(),
            message,
        });
    }

    /// The app's newest `limit` events, newest first, including those still being written.
    pub async fn app_events(&self, app: &str, limit: usize) -> DomainResult<Vec<AppEvent>> {
        self.ctl.get_app(app).await?;
        self.audit.flush().await;
        let app = app.to_string();
        let rows = self
            .ctl
            .db(move |store| store.read(|tx| tx.app_events(&app, limit)))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AppEvent {
                id: r.id,
                at: rfc3339(r.at),
                kind: r.kind,
                actor: r.actor,
                message: r.message,
            })
            .collect())
    }
}

fn check_name(name: &str) -> DomainResult<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(DomainError::invalid_request(format!(
            "token name {name:?} must be 1 to {MAX_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

fn info(row: &TokenRow) -> TokenInfo {
    TokenInfo {
        id: row.id.clone(),
        name: row.name.clone(),
        kind: row.kind,
        app: row.app.clone(),
        created_at: rfc3339(row.created_at),
        expires_at: row.expires_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
        last_used_at: row.last_used_at.map(rfc3339),
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests;
