//! What a token is made of and how it is checked: `aloft_<kind>_<id>_<secret>` (an id of 64
//! random bits for the lookup, a secret of 256 random bits from the OS, both hex), and
//! HMAC-SHA256 of the secret under the agent's key, which is all the store keeps.
//!
//! Why HMAC and not a password hash (argon2): the secrets are random 256-bit values, not
//! passwords, so there is nothing to slow down a guesser over; a slow hash would only cost every
//! API request tens of milliseconds. The key lives in `<data-dir>/token.key` (mode 0600), apart
//! from the database: a copy of the database alone lets nobody even test a guess.

use std::io::Write;
use std::path::Path;

use aloft_api::tokens::{TokenKind, TOKEN_PREFIX};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;

/// The key file, beside the data-dir token.
pub const KEY_FILE: &str = "token.key";

type HmacSha256 = Hmac<Sha256>;

/// The agent's HMAC key.
pub struct Key([u8; 32]);

impl Key {
    /// The MAC the store keeps for `secret`.
    pub fn mac(&self, secret: &str) -> Vec<u8> {
        let mut mac = self.hmac();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `secret` is the one `mac` was made of (constant-time comparison).
    pub fn verify(&self, secret: &str, mac: &[u8]) -> bool {
        let mut m = self.hmac();
        m.update(secret.as_bytes());
        m.verify_slice(mac).is_ok()
    }

    fn hmac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    #[cfg(test)]
    pub fn for_tests(byte: u8) -> Key {
        Key([byte; 32])
    }
}

/// Reads `<data_dir>/token.key`, creating it (32 bytes from the OS, mode 0600) on first use.
pub fn load_or_create_key(data_dir: &Path) -> std::io::Result<Key> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                std::io::Error::other(format!(
                    "{} holds {} bytes, not the 32 of an API token key (remove it to make a \
                     new one; every token but the data-dir one becomes invalid)",
                    path.display(),
                    bytes.len()
                ))
            })?;
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(path = %path.display(), "token key was readable by others; set to 0600");
            }
            return Ok(Key(key));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    // Write beside and rename, so a crash never leaves a short key.
    let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(Key(key))
}

/// A freshly made token.
pub struct NewToken {
    pub id: String,
    pub secret: String,
    /// What the user is shown once: `aloft_<kind>_<id>_<secret>`.
    pub text: String,
}

fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token of `kind`: a random id (64 bits) and secret (256 bits).
pub fn generate(kind: TokenKind) -> NewToken {
    let id = random_hex::<8>();
    let secret = random_hex::<32>();
    let text = format!("{TOKEN_PREFIX}{kind}_{id}_{secret}");
    NewToken { id, secret, text }
}

/// What a client presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// One of ours: look it up by id, verify the secret.
    Issued { id: &'a str, secret: &'a str },
    /// Anything else: only the data-dir token can be it.
    Other(&'a str),
}

/// Splits a presented token. The kind in the text is only a hint for people: what a token may
/// do is what the store says of its id.
pub fn parse(text: &str) -> Presented<'_> {
    let issued = text.strip_prefix(TOKEN_PREFIX).and_then(|rest| {
        let mut parts = rest.splitn(3, '_');
        let (_kind, id, secret) = (parts.next()?, parts.next()?, parts.next()?);
        (!id.is_empty() && !secret.is_empty()).then_some(Presented::Issued { id, secret })
    });
    issued.unwrap_or(Presented::Other(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_differ() {
        let a = generate(TokenKind::Deploy);
        let b = generate(TokenKind::Deploy);
        assert_ne!(a.text, b.text);
        assert!(a.text.starts_with("aloft_deploy_"), "{}", a.text);
        assert_eq!(a.secret.len(), 64, "256 bits as hex");
        assert_eq!(
            parse(&a.text),
            Presented::Issued {
                id: &a.id,
                secret: &a.secret
            }
        );
        assert_eq!(parse("0123abcd"), Presented::Other("0123abcd"));
        assert_eq!(parse("aloft_org_id"), Presented::Other("aloft_org_id"));
        assert_eq!(parse("aloft_org__x"), Presented::Other("aloft_org__x"));
    }

    #[test]
    fn macs_verify_only_their_secret_under_their_key() {
        let (k1, k2) = (Key::for_tests(1), Key::for_tests(2));
        let mac = k1.mac("s3cret");
        assert!(k1.verify("s3cret", &mac));
        assert!(!k1.verify("s3cres", &mac));
        assert!(!k2.verify("s3cret", &mac));
        assert!(!k1.verify("s3cret", &mac[..31]));
        assert!(!mac.windows(6).any(|w| w == b"s3cret"));
    }

    #[test]
    fn key_file_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let k1 = load_or_create_key(tmp.path()).unwrap();
        let mode = std::fs::metadata(tmp.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let k2 = load_or_create_key(tmp.path()).unwrap();
        assert_eq!(k1.mac("x"), k2.mac("x"));
        std::fs::write(tmp.path().join(KEY_FILE), b"short").unwrap();
        let err = load_or_create_key(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("32"), "{err}");
    }
}
