//! The key that seals app secrets at rest (`aloft secrets`), kept apart from the database:
//! `ALOFT_SECRETS_KEY` (base64 of 32 bytes) when the agent is given one, else
//! `<data-dir>/secrets.key` (the same text), created with mode 0600 the first time a secret is
//! set or read. The key never reaches SQLite, logs or answers.
//!
//! Each value is sealed with ChaCha20-Poly1305 (ring, rustls's crypto provider: no second
//! crypto library) under a fresh random 96-bit nonce, with the app and the secret's name as
//! associated data, so a ciphertext copied to another row or app does not open. Digests shown
//! by lists are HMAC-SHA256 of (app, name, value) under a key derived from the secrets key,
//! cut to 16 hex digits: equal values of one secret give equal digests, yet without the key a
//! digest cannot be checked against guessed values offline (an unkeyed hash of a short
//! password could).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The key file in the data dir.
pub const KEY_FILE: &str = "secrets.key";
/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// Why secrets cannot be sealed or opened; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    BadKey(String),
    #[error("cannot read or create the secrets key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secret {name} of app {app:?} does not open with this agent's secrets key ({source_}): the \
         key is not the one it was set with. Give the agent that key again (ALOFT_SECRETS_KEY or \
         <data-dir>/{KEY_FILE}), or set the secret again (aloft secrets set)"
    )]
    WrongKey {
        app: String,
        name: String,
        source_: String,
    },
    #[error("no random bytes from the system")]
    Random,
}

/// A key's base64 text as given (`ALOFT_SECRETS_KEY`); its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyText(pub String);

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(..)")
    }
}

/// Where the key comes from (see the module docs).
#[derive(Clone)]
pub enum KeySource {
    /// `ALOFT_SECRETS_KEY`, as given.
    Env(String),
    /// `<data-dir>/secrets.key`, made on first need.
    File(PathBuf),
}

/// Never prints a key.
impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env(_) => f.write_str("KeySource::Env(..)"),
            KeySource::File(p) => write!(f, "KeySource::File({})", p.display()),
        }
    }
}

impl KeySource {
    /// The key of `env_key` (`ALOFT_SECRETS_KEY`) when set, else the file in `data_dir`.
    pub fn new(env_key: Option<KeyText>, data_dir: &Path) -> KeySource {
        match env_key {
            Some(k) => KeySource::Env(k.0),
            None => KeySource::File(data_dir.join(KEY_FILE)),
        }
    }

    fn describe(&self) -> String {
        match self {
            KeySource::Env(_) => "ALOFT_SECRETS_KEY".to_string(),
            KeySource::File(p) => p.display().to_string(),
        }
    }
}

/// The loaded key: sealing and digests.
pub struct SecretsKey {
    aead: LessSafeKey,
    digest: hmac::Key,
}

/// A sealed value.
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

/// Associated data of a secret: its app and name.
fn aad(app: &str, name: &str) -> Vec<u8> {
    format!("aloft-secret\0{app}\0{name}").into_bytes()
}

impl SecretsKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretsKey {
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, bytes).expect("32-byte key");
        let master = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let derived = hmac::sign(&master, b"aloft secrets digest key v1");
        SecretsKey {
            aead: LessSafeKey::new(unbound),
            digest: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// A key from its base64 text (`ALOFT_SECRETS_KEY`, the key file); `from` names where it
    /// came from in the error.
    pub fn from_text(text: &str, from: &str) -> Result<SecretsKey, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
            .ok_or_else(|| {
                KeyError::BadKey(format!(
                    "the secrets key in {from} is not base64 of {KEY_LEN} bytes; make one with \
                     `head -c {KEY_LEN} /dev/urandom | base64`"
                ))
            })?;
        Ok(SecretsKey::from_bytes(&bytes))
    }

    /// Seals `value` of secret `name` of `app` under a fresh nonce.
    pub fn seal(&self, app: &str, name: &str, value: &str) -> Result<Sealed, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Random)?;
        let mut buf = value.as_bytes().to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(app, name)),
                &mut buf,
            )
            .map_err(|_| KeyError::Random)?;
        Ok(Sealed {
            ciphertext: buf,
            nonce: nonce.to_vec(),
        })
    }

    /// Opens a value sealed by [`SecretsKey::seal`] for the same app and name.
    pub fn open(
        &self,
        app: &str,
        name: &str,
        ciphertext: &[u8],
        nonce: &[u8],
    ) -> Result<String, KeyError> {
        let wrong = |why: &str| KeyError::WrongKey {
            app: app.to_string(),
            name: name.to_string(),
            source_: why.to_string(),
        };
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| wrong("bad nonce"))?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(app, name)),
                &mut buf,
            )
            .map_err(|_| wrong("authentication failed"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong("not UTF-8"))
    }

    /// The digest lists show (see the module docs).
    pub fn digest(&self, app: &str, name: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.digest);
        for part in [
            app.as_bytes(),
            b"\0",
            name.as_bytes(),
            b"\0",
            value.as_bytes(),
        ] {
            ctx.update(part);
        }
        ctx.sign().as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The agent's key, loaded (or the key file made) on first need and kept.
pub struct Keyring {
    source: KeySource,
    loaded: Mutex<Option<Arc<SecretsKey>>>,
}

impl Keyring {
    /// A keyring over `source`. A key given in the environment is checked at once, so an agent
    /// with a malformed `ALOFT_SECRETS_KEY` refuses to start instead of failing later.
    pub fn new(source: KeySource) -> Result<Keyring, KeyError> {
        let loaded = match &source {
            KeySource::Env(text) => {
                Some(Arc::new(SecretsKey::from_text(text, "ALOFT_SECRETS_KEY")?))
            }
            KeySource::File(_) => None,
        };
        Ok(Keyring {
            source,
            loaded: Mutex::new(loaded),
        })
    }

    /// Where the key is (for messages).
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The key, reading or creating the key file if it is the first need. Blocking (file IO):
    /// called from the store's blocking threads.
    pub fn key(&self) -> Result<Arc<SecretsKey>, KeyError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = &*loaded {
            return Ok(k.clone());
        }
        let KeySource::File(path) = &self.source else {
            unreachable!("an environment key is loaded by Keyring::new")
        };
        let key = Arc::new(load_or_create(path)?);
        *loaded = Some(key.clone());
        Ok(key)
    }
}

/// Reads the key file, or creates it (mode 0600, written beside and renamed, fsynced) with a
/// new random key when there is none.
fn load_or_create(path: &Path) -> Result<SecretsKey, KeyError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
                tracing::warn!(path = %path.display(), "the secrets key was readable by others; set to 0600");
            }
            return SecretsKey::from_text(&text, &path.display().to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut bytes = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    tracing::info!(path = %path.display(), "created the secrets key; back it up with the data dir: secrets do not open without it");
    Ok(SecretsKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sealed_values_open_only_with_their_key_app_and_name() {
        let key = SecretsKey::from_bytes(&[7; KEY_LEN]);
        let sealed = key.seal("web", "DB", "hunter2").unwrap();
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open("web", "DB", &sealed.ciphertext, &sealed.nonce)
                .unwrap(),
            "hunter2"
        );
        assert!(key
            .open("web", "OTHER", &sealed.ciphertext, &sealed.nonce)
            .is_err());
        assert!(key
            .open("api", "DB", &sealed.ciphertext, &sealed.nonce)
            .is_err());
        let other = SecretsKey::from_bytes(&[8; KEY_LEN]);
        let err = other
            .open("web", "DB", &sealed.ciphertext, &sealed.nonce)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the one it was set with"), "{err}");
        let again = key.seal("web", "DB", "hunter2").unwrap();
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce per value");
    }

    #[test]
    fn digests_are_keyed_and_stable() {
        let key = SecretsKey::from_bytes(&[7; KEY_LEN]);
        let d = key.digest("web", "DB", "hunter2");
        assert_eq!(d.len(), 16);
        assert_eq!(d, key.digest("web", "DB", "hunter2"));
        assert_ne!(d, key.digest("web", "DB", "hunter3"));
        assert_ne!(d, key.digest("web", "DB2", "hunter2"));
        assert_ne!(
            d,
            SecretsKey::from_bytes(&[8; KEY_LEN]).digest("web", "DB", "hunter2")
        );
    }

    #[test]
    fn the_key_file_is_made_once_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = Keyring::new(KeySource::new(None, tmp.path())).unwrap();
        assert!(
            !tmp.path().join(KEY_FILE).exists(),
            "made on first need only"
        );
        let sealed = ring.key().unwrap().seal("a", "B", "v").unwrap();
        let mode = std::fs::metadata(tmp.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Keyring::new(KeySource::new(None, tmp.path())).unwrap();
        let text = std::fs::read_to_string(tmp.path().join(KEY_FILE)).unwrap();
        assert_eq!(
            again
                .key()
                .unwrap()
                .open("a", "B", &sealed.ciphertext, &sealed.nonce)
                .unwrap(),
            "v"
        );
        let from_env = Keyring::new(KeySource::new(Some(KeyText(text)), tmp.path())).unwrap();
        assert_eq!(
            from_env
                .key()
                .unwrap()
                .open("a", "B", &sealed.ciphertext, &sealed.nonce)
                .unwrap(),
            "v",
            "the file's text works as ALOFT_SECRETS_KEY"
        );
    }

    #[test]
    fn a_malformed_environment_key_is_refused_at_once() {
        let err = Keyring::new(KeySource::Env("c2hvcnQ=".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ALOFT_SECRETS_KEY"), "{err}");
        assert!(err.contains("base64 of 32 bytes"), "{err}");
    }
}
