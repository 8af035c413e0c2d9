//! The ACME account: created at the CA once, then kept in `<account_dir>/<directory>.json`
//! (mode 0600, written atomically: a crash leaves the old file or the new one, never half).

use crate::nonce::retry_bad_nonce;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::{Account, AccountCredentials, HttpClient, NewAccount};
use serde::{Deserialize, Serialize};

use crate::error::AcmeError;
use crate::hints::ca_said;

/// What the account file holds. `credentials` is instant-acme's (account URL and PKCS#8 key),
/// kept as JSON so it can be written back unchanged.
#[derive(Serialize, Deserialize)]
struct AccountFile {
    directory_url: String,
    contact: Vec<String>,
    credentials: serde_json::Value,
}

/// The file of the account at `directory_url`: one per directory, so a staging account and a
/// production one live side by side (`acme-v02.api.letsencrypt.org_directory.json`).
pub(crate) fn account_path(account_dir: &Path, directory_url: &str) -> PathBuf {
    let without_scheme = directory_url
        .split_once("://")
        .map_or(directory_url, |(_, rest)| rest);
    let name: String = without_scheme
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    account_dir.join(format!("{}.json", name.trim_matches('_')))
}

/// `mailto:` URLs of the contact emails.
pub(crate) fn contact_urls(contact: &[impl AsRef<str>]) -> Result<Vec<String>, AcmeError> {
    contact
        .iter()
        .map(|c| {
            let email = c.as_ref().trim();
            let email = email.strip_prefix("mailto:").unwrap_or(email);
            let valid = email.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && host.contains('.') && !host.contains('@')
            }) && !email.chars().any(|c| c.is_whitespace() || c == ',');
            if valid {
                Ok(format!("mailto:{email}"))
            } else {
                Err(AcmeError::Contact {
                    contact: c.as_ref().to_string(),
                })
            }
        })
        .collect()
}

/// Loads the account kept for `directory_url`, or creates one at the CA (agreeing to its terms
/// of service) and keeps it. A changed contact list is sent to the CA and kept.
///
/// `http` makes the HTTP client of a builder (account creation consumes one; a creation the CA
/// refused with `badNonce` is tried again with a new one).
pub(crate) async fn open(
    http: impl Fn() -> Result<Box<dyn HttpClient>, AcmeError>,
    directory_url: &str,
    account_dir: &Path,
    contact: Vec<String>,
) -> Result<Account, AcmeError> {
    let path = account_path(account_dir, directory_url);
    let stored = {
        let path = path.clone();
        blocking(move || read(&path)).await?
    };
    let refused = |e: instant_acme::Error| match e {
        instant_acme::Error::Api(_) => AcmeError::Account {
            url: directory_url.to_string(),
            ca_said: ca_said(&e),
        },
        other => AcmeError::Directory {
            url: directory_url.to_string(),
            detail: other.to_string(),
        },
    };
    let builder = Account::builder_with_http(http()?);
    match stored {
        Some(file) => {
            if file.directory_url != directory_url {
                return Err(AcmeError::AccountFile {
                    path,
                    detail: format!(
                        "holds an account at {} rather than {directory_url}; move it away so \
                         a new account is created",
                        file.directory_url
                    ),
                });
            }
            let credentials: AccountCredentials = serde_json::from_value(file.credentials.clone())
                .map_err(|e| AcmeError::AccountFile {
                    path: path.clone(),
                    detail: format!(
                        "its credentials cannot be read ({e}); move it away so a new account \
                         is created"
                    ),
                })?;
            // Only reads the directory (no signed request, so no nonce to refuse).
            let account = builder
                .from_credentials(credentials)
                .await
                .map_err(refused)?;
            if file.contact != contact {
                let urls: Vec<&str> = contact.iter().map(String::as_str).collect();
                retry_bad_nonce!(account.update_contacts(&urls).await).map_err(refused)?;
                let file = AccountFile { contact, ..file };
                blocking(move || write(&path, &file)).await?;
            }
            Ok(account)
        }
        None => {
            let urls: Vec<&str> = contact.iter().map(String::as_str).collect();
            let new = NewAccount {
                contact: &urls,
                terms_of_service_agreed: true,
                only_return_existing: false,
            };
            let mut builder = Some(builder);
            let (account, credentials) = retry_bad_nonce!({
                let builder = match builder.take() {
                    Some(b) => b,
                    None => Account::builder_with_http(http()?),
                };
                builder.create(&new, directory_url.to_string(), None).await
            })
            .map_err(refused)?;
            let file = AccountFile {
                directory_url: directory_url.to_string(),
                contact,
                credentials: serde_json::to_value(&credentials).map_err(|e| {
                    AcmeError::AccountFile {
                        path: path.clone(),
                        detail: format!("cannot encode the new account's credentials: {e}"),
                    }
                })?,
            };
            blocking(move || write(&path, &file)).await?;
            Ok(account)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AcmeError> + Send + 'static,
) -> Result<T, AcmeError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn read(path: &Path) -> Result<Option<AccountFile>, AcmeError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AcmeError::AccountFile {
                path: path.to_path_buf(),
                detail: format!("cannot be read ({e})"),
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AcmeError::AccountFile {
            path: path.to_path_buf(),
            detail: format!(
                "is not an account file ({e}); move it away so a new account is created"
            ),
        })
}

/// Writes `file` to `path` through a temporary file in the same directory (created mode 0700
/// if missing): fsynced, renamed over, directory fsynced.
fn write(path: &Path, file: &AccountFile) -> Result<(), AcmeError> {
    let fail = |what: &str, e: std::io::Error| AcmeError::AccountFile {
        path: path.to_path_buf(),
        detail: format!(
            "cannot be written: {what} ({e}); check that the account directory is writable"
        ),
    };
    let dir = path
        .parent()
        .expect("account_path joins a file name to a directory");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("creating its directory", e))?;
    let json = serde_json::to_vec_pretty(file).expect("an account file encodes");
    let mut tmp = tempfile::Builder::new()
        .prefix(".account-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| fail("creating a temporary file", e))?;
    tmp.write_all(&json)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| fail("writing", e))?;
    tmp.persist(path).map_err(|e| fail("renaming", e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail("syncing its directory", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_readable_file_per_directory() {
        let dir = Path::new("/x");
        assert_eq!(
            account_path(dir, "https://acme-v02.api.letsencrypt.org/directory"),
            Path::new("/x/acme-v02.api.letsencrypt.org_directory.json")
        );
        assert_eq!(
            account_path(dir, "https://127.0.0.1:14000/dir"),
            Path::new("/x/127.0.0.1_14000_dir.json")
        );
    }

    #[test]
    fn contacts_become_mailto_urls_and_bad_ones_are_refused() {
        assert_eq!(
            contact_urls(&["admin@example.com", "mailto:ops@example.org"]).unwrap(),
            ["mailto:admin@example.com", "mailto:ops@example.org"]
        );
        for bad in [
            "",
            "admin",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@b.c,d@e.f",
        ] {
            let err = contact_urls(&[bad]).unwrap_err().to_string();
            assert!(err.contains("give an email address"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_file_is_written_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts").join("ca.json");
        let file = AccountFile {
            directory_url: "https://ca.test/dir".into(),
            contact: vec![],
            credentials: serde_json::json!({"id": "x"}),
        };
        write(&path, &file).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.directory_url, "https://ca.test/dir");
        // Nothing else is left in the directory (the temporary file was renamed).
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_new_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.json");
        fs::write(&path, "{not json").unwrap();
        let err = read(&path).err().unwrap().to_string();
        assert!(err.contains("move it away"), "{err}");
    }
}
