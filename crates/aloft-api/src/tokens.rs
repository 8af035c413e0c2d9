//! Bodies of the API-token routes (`aloft tokens`, like `fly tokens`) and of an app's events
//! (`aloft apps events`). Routes in [`crate::routes`].
//!
//! A token is `aloft_<kind>_<id>_<secret>`: the id finds it, the secret (256 random bits, hex)
//! proves it. The agent shows the whole token once, when it is created, and keeps only an HMAC
//! of the secret.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::GoDuration;

/// The prefix of every token the agent makes.
pub const TOKEN_PREFIX: &str = "aloft_";

/// flyctl's default lifetime of a new token: 175200h, 20 years.
pub const DEFAULT_EXPIRY_SECS: u64 = 175_200 * 3600;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Everything, tokens included.
    Org,
    /// Deploys, scales and reads one app (never deletes it, never other apps nor tokens).
    Deploy,
    /// Reads only (`GET`/`HEAD`), of one app when it names one, else of everything but tokens.
    Readonly,
}

impl TokenKind {
    pub const ALL: [TokenKind; 3] = [TokenKind::Org, TokenKind::Deploy, TokenKind::Readonly];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Org => "org",
            TokenKind::Deploy => "deploy",
            TokenKind::Readonly => "readonly",
        }
    }

    /// The name a token gets when none is given (flyctl's, adapted).
    pub fn default_name(self) -> &'static str {
        match self {
            TokenKind::Org => "org token",
            TokenKind::Deploy => "deploy token",
            TokenKind::Readonly => "read-only token",
        }
    }

    /// What a token of this kind may do, for error messages and `aloft tokens list`.
    pub fn describe(self, app: Option<&str>) -> String {
        match (self, app) {
            (TokenKind::Org, _) => "everything".to_string(),
            (TokenKind::Deploy, Some(app)) => {
                format!("deploy, scale and read app {app} only, not delete it nor manage tokens")
            }
            (TokenKind::Deploy, None) => "deploy one app".to_string(),
            (TokenKind::Readonly, Some(app)) => format!("read app {app} (GET and HEAD only)"),
            (TokenKind::Readonly, None) => "read (GET and HEAD only, not tokens)".to_string(),
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenKind {
    type Err = String;
    fn from_str(s: &str) -> Result<TokenKind, String> {
        TokenKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown token kind {s:?}: expected org, deploy or readonly"))
    }
}

/// `POST /v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub kind: TokenKind,
    /// The app of a deploy token (required) or of a read-only one (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Shown in `tokens list` and in the app's events; [`TokenKind::default_name`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How long the token is valid; [`DEFAULT_EXPIRY_SECS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<GoDuration>,
}

/// A token as listed: everything but its secret. Times are RFC 3339 (seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub kind: TokenKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub created_at: String,
    /// `None` for the data-dir token, which never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub last_used_at: Option<String>,
}

/// `201` of `POST /v1/tokens`: the only time the token itself is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// One entry of an app's event log (`GET /v1/apps/{app}/events`): who changed what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEvent {
    pub id: i64,
    /// RFC 3339 (seconds).
    pub at: String,
    /// `request` for an API call that changed something (or tried to); `token` for a token
    /// of the app created or revoked.
    pub kind: String,
    /// The name of the token that made the change, with its id: `ci (tok_…)`.
    pub actor: String,
    /// `POST /v1/apps/a/releases → 201`.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_ones_are_named() {
        for k in TokenKind::ALL {
            assert_eq!(k.as_str().parse::<TokenKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
        }
        let err = "admin".parse::<TokenKind>().unwrap_err();
        assert!(
            err.contains("\"admin\"") && err.contains("readonly"),
            "{err}"
        );
    }

    #[test]
    fn created_token_flattens_its_info() {
        let body = serde_json::json!({
            "token": "aloft_org_x_y", "id": "x", "name": "n", "kind": "org",
            "created_at": "2026-01-01T00:00:00Z", "expires_at": null
        });
        let t: CreatedToken = serde_json::from_value(body).unwrap();
        assert_eq!(t.info.id, "x");
        assert_eq!(t.info.kind, TokenKind::Org);
    }
}
