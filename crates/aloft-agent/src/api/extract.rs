//! Request extractors whose rejections are JSON [`HttpError`]s (never axum's plain text).
//!
//! Bodies are read as bytes and parsed as JSON whatever the `Content-Type` (curl and some
//! clients send none or a form type); query strings are read as a list of pairs so repeated
//! keys (`state=started&state=stopped`) and `metadata.<key>` filters work.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::HttpError;

/// A required JSON body.
pub struct Body<T>(pub T);

/// An optional JSON body: an empty body is `None`.
pub struct OptBody<T>(pub Option<T>);

async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, HttpError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        HttpError::new(
            e.status(),
            "invalid_request",
            format!("cannot read the request body: {}", e.body_text()),
        )
    })
}

/// Every body of this API is a JSON object (serde would also accept `[]` for a struct).
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(HttpError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_data() {
            "has a wrong or missing field"
        } else {
            "is not valid JSON"
        };
        let status = if e.is_data() {
            axum::http::StatusCode::UNPROCESSABLE_ENTITY
        } else {
            axum::http::StatusCode::BAD_REQUEST
        };
        HttpError::new(
            status,
            "invalid_request",
            format!("the request body {what}: {e}"),
        )
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = HttpError;
    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        let b = bytes(req, state).await?;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Err(HttpError::bad_request("a JSON request body is required"));
        }
        parse(&b).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptBody<T> {
    type Rejection = HttpError;
    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        let b = bytes(req, state).await?;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptBody(None));
        }
        parse(&b).map(|v| OptBody(Some(v)))
    }
}

/// The query string as pairs, with typed getters that answer 400 naming the parameter.
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = HttpError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| HttpError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key, each split on commas, empties dropped.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// `true`/`1`/empty-present → true, `false`/`0` → false, absent → `default`.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, HttpError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "" | "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(HttpError::bad_request(format!(
                    "query parameter {key}={v:?} must be true or false"
                ))),
            },
        }
    }

    /// A non-negative integer, optionally with a trailing `s` (seconds).
    pub fn uint(&self, key: &str, allow_seconds_suffix: bool) -> Result<Option<u64>, HttpError> {
        let Some(v) = self.get(key).map(str::trim) else {
            return Ok(None);
        };
        let digits = if allow_seconds_suffix {
            v.strip_suffix('s').unwrap_or(v)
        } else {
            v
        };
        digits.parse::<u64>().map(Some).map_err(|_| {
            HttpError::bad_request(format!(
                "query parameter {key}={v:?} must be a non-negative integer"
            ))
        })
    }

    /// Every `prefix<key>=value` pair, e.g. `metadata.fly_process_group=web`.
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .filter(|(k, _)| !k.is_empty())
            .collect()
    }
}

/// The lease nonce header, if present and not empty.
pub fn nonce(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(aloft_api::LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Path parameters, with a JSON 400 when they cannot be read.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = HttpError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| P(v))
            .map_err(|e| HttpError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}
