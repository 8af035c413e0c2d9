//! Content digests: `sha256:<64 lowercase hex>`, the only algorithm Aloft stores. Parsing
//! validates the form (so a digest is always safe to use as a file name); hashing works on bytes
//! or on a reader streamed through.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A string that is not a digest Aloft can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad digest {input:?}: {why}")]
pub struct BadDigest {
    pub input: String,
    pub why: String,
}

/// A validated `sha256:<hex>` digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; anything else is an error naming the input.
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        let bad = |why: &str| BadDigest {
            input: s.chars().take(100).collect(),
            why: why.to_string(),
        };
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(bad("expected sha256:<64 hex digits>"));
        };
        if algo != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        Digest::from_hex(hex).map_err(|_| bad("the hex part must be 64 lowercase hex digits"))
    }

    /// The digest whose hex part is `hex` (64 lowercase hex digits).
    pub fn from_hex(hex: &str) -> Result<Digest, BadDigest> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(BadDigest {
                input: hex.chars().take(100).collect(),
                why: "expected 64 lowercase hex digits".into(),
            });
        }
        Ok(Digest(format!("sha256:{hex}")))
    }

    /// The sha256 of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The sha256 of everything `reader` yields, and how many bytes that was.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<(Digest, u64)> {
        let mut h = Hasher::default();
        let n = std::io::copy(&mut reader, &mut h)?;
        Ok((h.finish(), n))
    }

    fn from_hasher(h: Sha256) -> Digest {
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Digest(format!("sha256:{hex}"))
    }

    /// The 64 hex digits, without `sha256:` (the blob's file name).
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sha256 hasher to write bytes into (`io::Write`), giving a [`Digest`].
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        Digest::from_hasher(self.0)
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Digest, BadDigest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_lowercase_sha256() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        for bad in [
            hex.clone(),
            format!("sha512:{hex}"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            "sha256:../../etc/passwd".to_string(),
        ] {
            let err = Digest::parse(&bad).unwrap_err().to_string();
            assert!(err.contains("digest"), "{bad}: {err}");
        }
    }

    #[test]
    fn hashes_bytes_and_readers_alike() {
        let d = Digest::of_bytes(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let (r, n) = Digest::of_reader(&b"hello"[..]).unwrap();
        assert_eq!((r, n), (d, 5));
    }
}
