//! The file of pinned agent certificates (`known_agents` in the user's config dir), one
//! `host:port sha256:…` line per agent, like ssh's `known_hosts`: `#` comments and blank lines
//! are kept. Written atomically (a temp file beside it, renamed) with mode 0600; a line that
//! cannot be read is an error naming the file and line, never skipped (it may be the pin of
//! the agent being reached).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// Serialises read-then-write of pin files within the process (parallel connections to a new
/// agent pin it once).
static WRITING: Mutex<()> = Mutex::new(());

/// `sha256:` + 64 lowercase hex digits of the SHA-256 of a certificate's DER.
pub fn fingerprint_of(der: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A fingerprint as written by a user (`sha256:` + hex, colons between byte pairs allowed, any
/// case) in the form [`fingerprint_of`] gives, or `None` when it is not one.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .strip_prefix("sha256:")?
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// One pinned agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// `host:port` as the agent URL names it (IPv6 hosts in brackets), lowercase.
    pub host_port: String,
    pub fingerprint: String,
}

/// The pin file at a path (which need not exist yet).
#[derive(Clone, Debug)]
pub struct PinFile {
    pub path: PathBuf,
}

impl PinFile {
    pub fn new(path: impl Into<PathBuf>) -> PinFile {
        PinFile { path: path.into() }
    }

    /// Every pin of the file (none when it does not exist).
    pub fn load(&self) -> anyhow::Result<Vec<Pin>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&text, &self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot read the pinned agent certificates in {}",
                    self.path.display()
                )
            }),
        }
    }

    /// The fingerprint pinned for `host_port`.
    pub fn lookup(&self, host_port: &str) -> anyhow::Result<Option<String>> {
        let key = host_port.to_ascii_lowercase();
        Ok(self
            .load()?
            .into_iter()
            .find(|p| p.host_port == key)
            .map(|p| p.fingerprint))
    }

    /// Pins `fingerprint` for `host_port` unless a pin is there already; returns the pin in the
    /// file afterwards (another connection may have pinned first).
    pub fn pin(&self, host_port: &str, fingerprint: &str) -> anyhow::Result<String> {
        let _guard = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        let key = host_port.to_ascii_lowercase();
        if let Some(existing) = self.lookup(&key)? {
            return Ok(existing);
        }
        let mut text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context(format!("cannot read {}", self.path.display())),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{key} {fingerprint}\n"));
        write_atomically(&self.path, &text).with_context(|| {
            format!(
                "cannot pin the certificate of {key} in {}",
                self.path.display()
            )
        })?;
        Ok(fingerprint.to_string())
    }
}

/// The pins of a file's text; an unreadable line is an error naming `path` and the line.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(host_port), Some(fp), None) = (words.next(), words.next(), words.next()) else {
            bail!(
                "{}:{}: expected `HOST:PORT sha256:FINGERPRINT`, found `{line}`; fix or remove the line",
                path.display(),
                n + 1
            );
        };
        let Some(fingerprint) = normalize_fingerprint(fp) else {
            bail!(
                "{}:{}: `{fp}` is not a fingerprint (sha256: and 64 hex digits); fix or remove the line",
                path.display(),
                n + 1
            );
        };
        if !host_port.contains(':') {
            bail!(
                "{}:{}: `{host_port}` has no port (write HOST:PORT); fix or remove the line",
                path.display(),
                n + 1
            );
        }
        pins.push(Pin {
            host_port: host_port.to_ascii_lowercase(),
            fingerprint,
        });
    }
    Ok(pins)
}

/// Writes `text` to `path` through a temp file in the same dir (mode 0600), synced and renamed
/// over it: a reader sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".known_agents")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir.unwrap_or(Path::new(".")))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const FP: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn parses_pins_comments_and_blank_lines() {
        let text = format!(
            "# pinned\n\nAgent.Example:4280 {}\n[::1]:4280 {FP}\n",
            FP.to_uppercase().replace("SHA256", "sha256")
        );
        let pins = parse(&text, Path::new("k")).unwrap();
        assert_eq!(
            pins,
            vec![
                Pin {
                    host_port: "agent.example:4280".into(),
                    fingerprint: FP.into()
                },
                Pin {
                    host_port: "[::1]:4280".into(),
                    fingerprint: FP.into()
                },
            ]
        );
    }

    #[test]
    fn a_bad_line_is_an_error_naming_file_and_line() {
        for (bad, says) in [
            ("host:1", "expected `HOST:PORT"),
            ("host:1 md5:abcd", "is not a fingerprint"),
            (&format!("host {FP}") as &str, "has no port"),
            (&format!("host:1 {FP} extra") as &str, "expected `HOST:PORT"),
        ] {
            let text = format!("# ok\n{bad}\n");
            let err = parse(&text, Path::new("/x/known_agents"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("/x/known_agents:2: "), "{err}");
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn fingerprints_are_normalised() {
        let colons = FP.as_bytes()["sha256:".len()..]
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            normalize_fingerprint(&format!("sha256:{colons}")).as_deref(),
            Some(FP)
        );
        assert_eq!(normalize_fingerprint("sha256:abcd"), None);
        assert_eq!(normalize_fingerprint(&FP["sha256:".len()..]), None);
        assert_eq!(fingerprint_of(b"").len(), FP.len());
    }

    #[test]
    fn pinning_appends_once_atomically_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let file = PinFile::new(tmp.path().join("cfg/known_agents"));
        assert_eq!(file.lookup("a:1").unwrap(), None);
        assert_eq!(file.pin("A:1", FP).unwrap(), FP);
        let other = FP.replace("00", "11");
        // A second pin of the same agent keeps the first.
        assert_eq!(file.pin("a:1", &other).unwrap(), FP);
        assert_eq!(file.pin("b:2", &other).unwrap(), other);
        let text = std::fs::read_to_string(&file.path).unwrap();
        assert_eq!(text, format!("a:1 {FP}\nb:2 {other}\n"));
        let mode = std::fs::metadata(&file.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing but the file is left in its dir.
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("cfg")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn pinning_keeps_comments_and_refuses_to_touch_a_broken_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("known_agents");
        std::fs::write(&path, "# mine").unwrap();
        let file = PinFile::new(&path);
        file.pin("a:1", FP).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# mine\na:1 {FP}\n")
        );
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(file.pin("b:1", FP).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage\n");
    }
}
