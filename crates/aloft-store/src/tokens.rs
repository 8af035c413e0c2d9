//! API tokens (`api_tokens`) and each app's event log (`app_events`).
//!
//! A token row holds the HMAC of its secret, never the secret: the agent computes it with a key
//! kept outside the database. Events are only ever appended (in batches) and trimmed to the
//! newest [`KEPT_APP_EVENTS`] of each app; they go with their app.

use aloft_api::tokens::TokenKind;
use rusqlite::{params, OptionalExtension, Row};

use crate::{StoreError, Tx};

/// Events kept per app; older ones are removed as new ones arrive.
pub const KEPT_APP_EVENTS: usize = 10_000;

const TOKEN_COLUMNS: &str =
    "id, name, kind, app, secret_mac, created_at, expires_at, revoked_at, last_used_at";

/// One row of `api_tokens`. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub kind: TokenKind,
    pub app: Option<String>,
    /// HMAC-SHA256 of the secret.
    pub secret_mac: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// One row of `app_events`. `at` is Unix seconds; `id` is 0 until stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppEventRow {
    pub id: i64,
    pub app: String,
    pub at: i64,
    pub kind: String,
    pub actor: String,
    pub message: String,
}

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let kind: String = r.get(2)?;
    let kind = kind.parse::<TokenKind>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind,
        app: r.get(3)?,
        secret_mac: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
        last_used_at: r.get(8)?,
    })
}

impl Tx<'_> {
    /// Records a new token, or replaces the one with the same id (the data-dir token when its
    /// file changed).
    pub fn put_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO api_tokens ({TOKEN_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                t.id,
                t.name,
                t.kind.as_str(),
                t.app,
                t.secret_mac,
                t.created_at,
                t.expires_at,
                t.revoked_at,
                t.last_used_at
            ])?;
        Ok(())
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"
            ))?
            .query_row([id], token_from_row)
            .optional()?)
    }

    /// Every token, revoked ones included, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, rowid"
        ))?;
        let rows = stmt.query_map([], token_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a token revoked at `at` (kept, so `tokens list` shows it); whether it was live.
    pub fn revoke_token(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![id, at])?
            > 0)
    }

    /// Sets when tokens were last used (later times only).
    pub fn touch_tokens(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "UPDATE api_tokens SET last_used_at = ?2 \
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )?;
        for (id, at) in used {
            stmt.execute(params![id, at])?;
        }
        Ok(())
    }

    /// Appends events of apps that exist (those of unknown apps are dropped, so requests naming
    /// made-up apps leave nothing behind) and trims each app's log to [`KEPT_APP_EVENTS`].
    pub fn add_app_events(&self, events: &[AppEventRow]) -> Result<(), StoreError> {
        let mut insert = self.conn().prepare_cached(
            "INSERT INTO app_events (app, at, kind, actor, message) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM apps WHERE name = ?1)",
        )?;
        let mut apps: Vec<&str> = Vec::new();
        for e in events {
            insert.execute(params![e.app, e.at, e.kind, e.actor, e.message])?;
            if !apps.contains(&e.app.as_str()) {
                apps.push(&e.app);
            }
        }
        let mut trim = self.conn().prepare_cached(
            "DELETE FROM app_events WHERE app = ?1 AND id <= \
             (SELECT id FROM app_events WHERE app = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        )?;
        for app in apps {
            trim.execute(params![app, KEPT_APP_EVENTS as i64])?;
        }
        Ok(())
    }

    /// The app's newest `limit` events, newest first.
    pub fn app_events(&self, app: &str, limit: usize) -> Result<Vec<AppEventRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT id, app, at, kind, actor, message FROM app_events \
             WHERE app = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![app, limit as i64], |r| {
            Ok(AppEventRow {
                id: r.get(0)?,
                app: r.get(1)?,
                at: r.get(2)?,
                kind: r.get(3)?,
                actor: r.get(4)?,
                message: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What goes with a deleted app: its events, and the tokens bound to it are revoked (a
    /// new app of the same name must not inherit them).
    pub(crate) fn forget_app_tokens_and_events(&self, app: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM app_events WHERE app = ?1")?
            .execute([app])?;
        self.conn()
            .prepare_cached(
                "UPDATE api_tokens SET revoked_at = CAST(strftime('%s', 'now') AS INTEGER) \
                 WHERE app = ?1 AND revoked_at IS NULL",
            )?
            .execute([app])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppRecord, Store};

    fn app(name: &str) -> AppRecord {
        AppRecord {
            name: name.into(),
            id: format!("id-{name}"),
            org_slug: "personal".into(),
            network: "default".into(),
            status: "deployed".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn token(id: &str, app: Option<&str>) -> TokenRow {
        TokenRow {
            id: id.into(),
            name: format!("name of {id}"),
            kind: TokenKind::Deploy,
            app: app.map(Into::into),
            secret_mac: vec![1, 2, 3],
            created_at: 10,
            expires_at: Some(100),
            revoked_at: None,
            last_used_at: None,
        }
    }

    fn event(app: &str, message: &str) -> AppEventRow {
        AppEventRow {
            id: 0,
            app: app.into(),
            at: 5,
            kind: "request".into(),
            actor: "ci".into(),
            message: message.into(),
        }
    }

    #[test]
    fn tokens_are_stored_revoked_once_and_touched_forward() {
        let store = Store::open_in_memory().unwrap();
        store
            .write(|tx| tx.put_token(&token("t1", Some("a"))))
            .unwrap();
        assert!(store.write(|tx| tx.revoke_token("t1", 50)).unwrap());
        assert!(!store.write(|tx| tx.revoke_token("t1", 60)).unwrap());
        assert!(!store.write(|tx| tx.revoke_token("nope", 60)).unwrap());
        store
            .write(|tx| tx.touch_tokens(&[("t1".into(), 30), ("t1".into(), 20)]))
            .unwrap();
        let t = store.read(|tx| tx.token("t1")).unwrap().unwrap();
        assert_eq!((t.revoked_at, t.last_used_at), (Some(50), Some(30)));
        assert_eq!(store.read(|tx| tx.tokens()).unwrap(), vec![t]);
    }

    #[test]
    fn events_only_for_existing_apps_newest_first_and_gone_with_the_app() {
        let store = Store::open_in_memory().unwrap();
        store.write(|tx| tx.insert_app(&app("a"))).unwrap();
        store
            .write(|tx| tx.put_token(&token("t1", Some("a"))))
            .unwrap();
        store
            .write(|tx| {
                tx.add_app_events(&[
                    event("a", "first"),
                    event("ghost", "x"),
                    event("a", "second"),
                ])
            })
            .unwrap();
        let got = store.read(|tx| tx.app_events("a", 10)).unwrap();
        let messages: Vec<_> = got.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["second", "first"]);
        assert!(store
            .read(|tx| tx.app_events("ghost", 10))
            .unwrap()
            .is_empty());
        store.write(|tx| tx.delete_app("a")).unwrap();
        assert!(store.read(|tx| tx.app_events("a", 10)).unwrap().is_empty());
        let t = store.read(|tx| tx.token("t1")).unwrap().unwrap();
        assert!(t.revoked_at.is_some(), "a deleted app's tokens are revoked");
    }
}
