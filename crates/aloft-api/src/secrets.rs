//! App secrets (`aloft secrets`, like `fly secrets`): the bodies of `/v1/apps/{app}/secrets`
//! (see [`crate::routes`]) and the rules a secret's name and value follow.
//!
//! A secret is an environment variable of every machine of its app, set apart from the config:
//! its value is sent once (set, import) and never shown again. Lists show each secret's name, a
//! keyed digest of its value (equal digests mean equal values; without the agent's key a digest
//! tells nothing about the value) and whether machines run with it yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// [`AppSecret::status`] of a secret the app's started machines were restarted with.
pub const STATUS_DEPLOYED: &str = "deployed";
/// [`AppSecret::status`] of a secret set with `stage`: machines get it at their next start
/// (`aloft secrets deploy` restarts them).
pub const STATUS_STAGED: &str = "staged";

/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest value, in bytes (flyctl reads at most this much for `NAME=-` from stdin).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest sum of an app's names and values, in bytes: every machine's environment carries
/// them all, and Linux refuses an `execve` whose arguments and environment pass ~2 MiB.
pub const MAX_TOTAL_BYTES: usize = 512 * 1024;
/// Most secrets of one app.
pub const MAX_SECRETS: usize = 200;

/// Names the platform sets itself (they would be overwritten, or would hide the platform's
/// value): refused as secret names. Prefixes end with `_`.
pub const RESERVED_NAMES: &[&str] = &["FLY_", "ALOFT_", "PORT", "PRIMARY_REGION"];

/// One secret of an app, as lists show it: never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecret {
    pub name: String,
    /// 16 hex digits: a keyed digest (HMAC-SHA256 under the agent's secrets key) of the app,
    /// the name and the value.
    pub digest: String,
    /// [`STATUS_DEPLOYED`] or [`STATUS_STAGED`].
    pub status: String,
    /// RFC 3339: when the name was first set.
    pub created_at: String,
    /// RFC 3339: when the value last changed.
    pub updated_at: String,
}

/// `POST /v1/apps/{app}/secrets`: set (a value) and unset (`null`) secrets, all in one change.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSecrets {
    pub values: BTreeMap<String, Option<String>>,
    /// Store only: started machines keep running with what they have, and get the new values at
    /// their next start (or `POST …/secrets/deploy`).
    #[serde(default)]
    pub stage: bool,
}

/// Never prints values.
impl std::fmt::Debug for UpdateSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateSecrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .field("stage", &self.stage)
            .finish()
    }
}

/// What a change of secrets (or `…/secrets/deploy`) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsUpdated {
    /// The app's secrets after the change, by name.
    pub secrets: Vec<AppSecret>,
    /// The version of the operation that restarts the app's started machines one at a time
    /// (a release with `scale.secrets` set; follow it at `…/releases/{version}/events`).
    /// Absent when staged, or when no machine was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<u64>,
}

/// Why `name` cannot be a secret's name, if it cannot: the rule of environment variable names
/// (`[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME_LEN`] bytes), and none of [`RESERVED_NAMES`].
pub fn name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        let shown: String = name.chars().take(64).collect();
        return Some(format!(
            "secret name {shown:?} is not a valid environment variable name: use letters, digits \
             and '_', not starting with a digit, at most {MAX_NAME_LEN} characters"
        ));
    }
    let reserved = RESERVED_NAMES.iter().find(|r| match r.strip_suffix('_') {
        Some(_) => name.starts_with(*r),
        None => name == **r,
    })?;
    Some(if reserved.ends_with('_') {
        format!("secret name {name:?} is reserved: names starting with {reserved} are set by the platform")
    } else {
        format!("secret name {name:?} is reserved: the platform sets {reserved} itself")
    })
}

/// Why `value` cannot be a secret's value, if it cannot: larger than [`MAX_VALUE_BYTES`], or
/// holding a NUL byte (an environment variable cannot).
pub fn value_problem(name: &str, value: &str) -> Option<String> {
    if value.len() > MAX_VALUE_BYTES {
        return Some(format!(
            "the value of secret {name} is {} bytes; at most {MAX_VALUE_BYTES} are allowed",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Some(format!(
            "the value of secret {name} holds a NUL byte, which an environment variable cannot"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_environment_variable_rules() {
        for ok in ["A", "_x", "DATABASE_URL", "a1_b2", "PORTAL", "FLYER"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "A=B",
            "Ä",
            &"A".repeat(MAX_NAME_LEN + 1),
        ] {
            let p = name_problem(bad).expect(bad);
            assert!(p.contains("not a valid environment variable name"), "{p}");
        }
        for reserved in [
            "FLY_APP_NAME",
            "FLY_",
            "ALOFT_PORT_80",
            "PORT",
            "PRIMARY_REGION",
        ] {
            let p = name_problem(reserved).expect(reserved);
            assert!(p.contains("reserved"), "{p}");
        }
    }

    #[test]
    fn values_are_bounded_and_nul_free() {
        assert_eq!(value_problem("A", ""), None);
        assert_eq!(value_problem("A", &"x".repeat(MAX_VALUE_BYTES)), None);
        assert!(value_problem("A", &"x".repeat(MAX_VALUE_BYTES + 1))
            .unwrap()
            .contains("at most"));
        assert!(value_problem("A", "a\0b").unwrap().contains("NUL"));
    }

    #[test]
    fn debug_never_shows_values() {
        let req = UpdateSecrets {
            values: BTreeMap::from([("A".to_string(), Some("hunter2".to_string()))]),
            stage: false,
        };
        assert!(!format!("{req:?}").contains("hunter2"));
    }
}
