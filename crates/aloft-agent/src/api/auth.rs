//! Authentication and authorization of every request, and the record of what tokens change.
//!
//! Two layers: [`authenticate`] runs before routing on every request (unknown routes included)
//! and turns the `Authorization` header (`Bearer <t>` or `FlyV1 <t>`, where `<t>` may be a
//! comma-separated list; the first token that authenticates is the caller) into a
//! [`Caller`] or a 401; [`authorize`] runs on matched routes and asks [`scope::decide`] whether
//! the caller's kind allows the route (403 otherwise), then records a request that was not a
//! read in the app's events (token name, method, path, status). Reads only update the token's
//! last use.

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::HttpError;
use super::scope;
use super::AppState;
use crate::tokens::{self, Caller};

/// The tokens an `Authorization` header value lists (none for another scheme).
fn presented(value: &str) -> impl Iterator<Item = &str> {
    let value = value.trim();
    let rest = match value.split_once(char::is_whitespace) {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("flyv1") =>
        {
            rest
        }
        _ => "",
    };
    rest.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// 401 unless a presented token authenticates; the caller goes into the request's extensions.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers().get_all(header::AUTHORIZATION);
    let candidates = headers
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(presented);
    match st.tokens.authenticate_any(candidates, tokens::now()) {
        Ok(caller) => {
            st.tokens.used(&caller);
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            HttpError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.message()).into_response()
        }
    }
}

/// 403 unless the caller's kind allows the matched route; records changes in the app's events.
pub async fn authorize(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            tokens::AuthError::Missing.message(),
        )
        .into_response();
    };
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let app = match axum::RequestPartsExt::extract::<RawPathParams>(&mut parts).await {
        Ok(params) => params
            .iter()
            .find(|(k, _)| *k == "app")
            .map(|(_, v)| v.to_string()),
        Err(_) => None,
    };
    let req = Request::from_parts(parts, body);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = match scope::decide(&caller, &method, &template, app.as_deref()) {
        Ok(()) => next.run(req).await,
        Err(scope::Denied(message)) => {
            HttpError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
        }
    };
    if let Some(app) = app.filter(|_| !scope::is_read_only(&method, &template)) {
        let status = response.status().as_u16();
        st.tokens
            .record(&caller, &app, format!("{method} {path} → {status}"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(header: &str) -> Vec<&str> {
        presented(header).collect()
    }

    #[test]
    fn header_forms() {
        assert_eq!(tokens("Bearer abc"), ["abc"]);
        assert_eq!(tokens("FlyV1 x, abc"), ["x", "abc"]);
        assert_eq!(tokens("bearer  abc "), ["abc"]);
        assert!(tokens("Basic abc").is_empty());
        assert!(tokens("abc").is_empty());
        assert!(tokens("Bearer ").is_empty());
    }
}
