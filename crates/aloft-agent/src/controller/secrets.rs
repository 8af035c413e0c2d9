//! App secrets (`aloft secrets`): names and values checked, values sealed with the agent's key
//! (`crate::secrets_key`) into rows of the store's `secrets` table, lists made of names and
//! digests, and the environment a machine is started with ([`Controller::secret_env`], opened
//! at every boot, so a machine always starts with the app's newest values). Restarting the
//! app's machines onto new values is the deploy engine's (`deploy/secrets.rs`).
//!
//! Values live only in the sealed rows and, once opened for a launch, in the runtime's
//! [`aloft_runtime::LaunchSpec::secrets`]: never in a machine's config, its versions, events,
//! releases, logs or an answer. A machine's config shows the names it was started with
//! (metadata [`aloft_api::metadata::SECRETS`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use aloft_api::secrets::{
    name_problem, value_problem, AppSecret, UpdateSecrets, MAX_SECRETS, MAX_TOTAL_BYTES,
    STATUS_DEPLOYED, STATUS_STAGED,
};
use aloft_runtime::env::SecretEnv;
use aloft_store::{SecretRow, StoreError, Tx, SECRET_DEPLOYED, SECRET_STAGED, SECRET_UNSET};

use super::{now_rfc3339, Controller, DomainError, DomainResult};
use crate::secrets_key::{KeyError, Keyring};

/// The AEAD tag appended to each sealed value.
const TAG_LEN: usize = 16;

/// A checked and sealed change of an app's secrets, written by [`SecretsChange::apply`] in the
/// caller's transaction (with the release that restarts machines, when there is one).
pub struct SecretsChange {
    pub app: String,
    pub stage: bool,
    put: Vec<SecretRow>,
    unset: Vec<String>,
}

impl SecretsChange {
    /// Writes the change: set values (staged or deployed), unset names (deleted, or kept as
    /// `unset` rows while staged), and unless staged, every staged change of the app deployed.
    pub fn apply(&self, tx: &Tx<'_>) -> Result<(), StoreError> {
        let now = now_rfc3339();
        for row in &self.put {
            tx.put_secret(row)?;
        }
        for name in &self.unset {
            if self.stage {
                tx.put_secret(&SecretRow {
                    app: self.app.clone(),
                    name: name.clone(),
                    ciphertext: Vec::new(),
                    nonce: Vec::new(),
                    digest: String::new(),
                    status: SECRET_UNSET.into(),
                    created_at: now.clone(),
                    updated_at: now.clone(),
                })?;
            } else {
                tx.delete_secret(&self.app, name)?;
            }
        }
        if !self.stage {
            tx.deploy_secrets(&self.app)?;
        }
        Ok(())
    }
}

/// A row as lists show it (`unset` rows are not shown).
fn to_api(row: SecretRow) -> Option<AppSecret> {
    let status = match row.status.as_str() {
        SECRET_DEPLOYED => STATUS_DEPLOYED,
        SECRET_STAGED => STATUS_STAGED,
        _ => return None,
    };
    Some(AppSecret {
        name: row.name,
        digest: row.digest,
        status: status.into(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn key_failure(e: KeyError) -> DomainError {
    match e {
        KeyError::WrongKey { .. } | KeyError::BadKey(_) => {
            DomainError::invalid_config(e.to_string())
        }
        e => DomainError::internal(e.to_string()),
    }
}

impl Controller {
    /// Sets the agent's secrets key (at start); the first call wins.
    pub fn set_secrets_keyring(&self, keyring: Arc<Keyring>) {
        let _ = self.secrets_key.set(keyring);
    }

    fn keyring(&self) -> DomainResult<Arc<Keyring>> {
        self.secrets_key
            .get()
            .cloned()
            .ok_or_else(|| DomainError::internal("this agent has no secrets key configured"))
    }

    /// Every secret row of `app` (unset ones too).
    async fn secret_rows(&self, app: &str) -> DomainResult<Vec<SecretRow>> {
        let a = app.to_string();
        self.db(move |s| s.read(|tx| tx.secrets(&a))).await
    }

    /// The app's secrets: names, digests, status and dates, by name.
    pub async fn list_secrets(&self, app: &str) -> DomainResult<Vec<AppSecret>> {
        self.get_app(app).await?;
        Ok(self
            .secret_rows(app)
            .await?
            .into_iter()
            .filter_map(to_api)
            .collect())
    }

    /// Checks `req` against the app's secrets now and seals its values; nothing is written.
    /// Refuses (naming the secret) bad or reserved names (400), values with a NUL (400), values
    /// or a total over the limits and too many secrets (413), unsetting a secret the app does
    /// not have (404), an empty change (400).
    pub async fn prepare_secrets(
        &self,
        app: &str,
        req: UpdateSecrets,
    ) -> DomainResult<SecretsChange> {
        self.get_app(app).await?;
        if req.values.is_empty() {
            return Err(DomainError::invalid_request(
                "no secrets given: set at least one NAME=VALUE (or unset a NAME)",
            ));
        }
        for (name, value) in &req.values {
            if let Some(p) = name_problem(name) {
                return Err(DomainError::invalid_request(p));
            }
            if let Some(p) = value.as_deref().and_then(|v| value_problem(name, v)) {
                return Err(if p.contains("NUL") {
                    DomainError::invalid_request(p)
                } else {
                    DomainError::TooLarge(p)
                });
            }
        }
        let rows: BTreeMap<String, SecretRow> = self
            .secret_rows(app)
            .await?
            .into_iter()
            .filter(|r| r.status != SECRET_UNSET)
            .map(|r| (r.name.clone(), r))
            .collect();
        let mut sizes: BTreeMap<&str, usize> = rows
            .values()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.name.len() + r.ciphertext.len().saturating_sub(TAG_LEN),
                )
            })
            .collect();
        for (name, value) in &req.values {
            match value {
                Some(v) => {
                    sizes.insert(name, name.len() + v.len());
                }
                None if rows.contains_key(name) => {
                    sizes.remove(name.as_str());
                }
                None => {
                    return Err(DomainError::not_found(format!(
                        "app {app:?} has no secret named {name}; `aloft secrets list` shows its secrets"
                    )))
                }
            }
        }
        if sizes.len() > MAX_SECRETS {
            return Err(DomainError::TooLarge(format!(
                "app {app:?} would have {} secrets; at most {MAX_SECRETS} are allowed",
                sizes.len()
            )));
        }
        let total: usize = sizes.values().sum();
        if total > MAX_TOTAL_BYTES {
            return Err(DomainError::TooLarge(format!(
                "app {app:?}'s secrets would take {total} bytes (names and values); at most \
                 {MAX_TOTAL_BYTES} are allowed: every machine's environment carries them all"
            )));
        }
        let keyring = self.keyring()?;
        let app = app.to_string();
        let stage = req.stage;
        let now = now_rfc3339();
        let sealed = tokio::task::spawn_blocking(move || -> Result<SecretsChange, KeyError> {
            let key = keyring.key()?;
            let mut put = Vec::new();
            let mut unset = Vec::new();
            for (name, value) in req.values {
                let Some(value) = value else {
                    unset.push(name);
                    continue;
                };
                let s = key.seal(&app, &name, &value)?;
                let created_at = rows
                    .get(&name)
                    .map_or_else(|| now.clone(), |r| r.created_at.clone());
                put.push(SecretRow {
                    digest: key.digest(&app, &name, &value),
                    app: app.clone(),
                    name,
                    ciphertext: s.ciphertext,
                    nonce: s.nonce,
                    status: if stage {
                        SECRET_STAGED
                    } else {
                        SECRET_DEPLOYED
                    }
                    .into(),
                    created_at,
                    updated_at: now.clone(),
                });
            }
            Ok(SecretsChange {
                app,
                stage,
                put,
                unset,
            })
        })
        .await
        .map_err(|e| DomainError::internal(format!("sealing secrets failed: {e}")))?;
        sealed.map_err(key_failure)
    }

    /// The environment of the app's secrets for a machine starting now: every value set
    /// (staged ones included: a start always takes the newest), opened with the agent's key.
    /// Fails, naming the secret and what to do, when a value does not open (another key).
    pub async fn secret_env(&self, app: &str) -> DomainResult<SecretEnv> {
        let rows: Vec<SecretRow> = self
            .secret_rows(app)
            .await?
            .into_iter()
            .filter(|r| r.status != SECRET_UNSET)
            .collect();
        if rows.is_empty() {
            return Ok(SecretEnv::default());
        }
        let keyring = self.keyring()?;
        let opened = tokio::task::spawn_blocking(move || -> Result<SecretEnv, KeyError> {
            let key = keyring.key()?;
            let mut env = BTreeMap::new();
            for r in rows {
                let value = key.open(&r.app, &r.name, &r.ciphertext, &r.nonce)?;
                env.insert(r.name, value);
            }
            Ok(SecretEnv(env))
        })
        .await
        .map_err(|e| DomainError::internal(format!("opening secrets failed: {e}")))?;
        opened.map_err(key_failure)
    }
}
