//! What each route is to a token: one table, route (method + template) → [`Access`], and one
//! pure decision, [`decide`]: may this caller make this request?
//!
//! A route missing from the table needs an org token, and a unit test checks the table against
//! every route the router serves, so a new route cannot be opened to scoped tokens by accident.
//!
//! | access | org | deploy (app A) | readonly | readonly (app A) |
//! |---|---|---|---|---|
//! | [`Access::Public`] | yes | yes | yes | yes |
//! | [`Access::OrgRead`] | yes | – | yes | – |
//! | [`Access::AppRead`] | yes | app A | yes | app A |
//! | [`Access::AppWrite`] | yes | app A | – | – |
//! | [`Access::Org`] | yes | – | – | – |

use axum::http::Method;

use aloft_api::tokens::TokenKind;

use crate::tokens::Caller;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads that say nothing of any app (regions, proxy ports, the API description).
    Public,
    /// Reads across apps (the app list, metrics, image store counters).
    OrgRead,
    /// Reads of the app named in the path.
    AppRead,
    /// Changes to the app named in the path that a deploy makes: machines, releases, images,
    /// scale, certificates, addresses, leases, metadata, volumes.
    AppWrite,
    /// Everything else: creating and deleting apps, tokens, image garbage collection.
    Org,
}

/// Every route and what it needs. `HEAD` of a `GET` route is the `GET`.
const TABLE: &[(&str, &str, Access)] = {
    use Access::*;
    &[
        ("GET", "/v1/openapi.json", Public),
        ("GET", "/v1/regions", Public),
        ("GET", "/v1/proxy", Public),
        ("GET", "/v1/metrics", OrgRead),
        ("POST", "/v1/apps", Org),
        ("GET", "/v1/apps", OrgRead),
        ("GET", "/v1/apps/{app}", AppRead),
        ("DELETE", "/v1/apps/{app}", Org),
        ("GET", "/v1/apps/{app}/events", AppRead),
        ("GET", "/v1/apps/{app}/logs", AppRead),
        ("GET", "/v1/apps/{app}/certificates", AppRead),
        ("POST", "/v1/apps/{app}/certificates", AppWrite),
        ("GET", "/v1/apps/{app}/certificates/{hostname}", AppRead),
        ("DELETE", "/v1/apps/{app}/certificates/{hostname}", AppWrite),
        ("GET", "/v1/apps/{app}/volumes", AppRead),
        ("POST", "/v1/apps/{app}/volumes", AppWrite),
        ("GET", "/v1/apps/{app}/volumes/{id}", AppRead),
        ("POST", "/v1/apps/{app}/volumes/{id}", AppWrite),
        ("DELETE", "/v1/apps/{app}/volumes/{id}", AppWrite),
        ("PUT", "/v1/apps/{app}/volumes/{id}/extend", AppWrite),
        ("GET", "/v1/apps/{app}/volumes/{id}/snapshots", AppRead),
        ("POST", "/v1/apps/{app}/volumes/{id}/snapshots", AppWrite),
        ("GET", "/v1/apps/{app}/releases", AppRead),
        ("POST", "/v1/apps/{app}/releases", AppWrite),
        ("POST", "/v1/apps/{app}/releases/rollback", AppWrite),
        ("GET", "/v1/apps/{app}/secrets", AppRead),
        ("POST", "/v1/apps/{app}/secrets", AppWrite),
        ("POST", "/v1/apps/{app}/secrets/deploy", AppWrite),
        ("GET", "/v1/apps/{app}/releases/{version}", AppRead),
        ("GET", "/v1/apps/{app}/releases/{version}/events", AppRead),
        ("PUT", "/v1/apps/{app}/images/{hex}", AppWrite),
        ("GET", "/v1/apps/{app}/images/{hex}", AppRead),
        ("HEAD", "/v1/apps/{app}/blobs/{digest}", AppRead),
        ("PATCH", "/v1/apps/{app}/blobs/{digest}", AppWrite),
        ("PUT", "/v1/apps/{app}/blobs/{digest}", AppWrite),
        ("GET", "/v1/apps/{app}/blobs/{digest}/upload", AppRead),
        ("PUT", "/v1/apps/{app}/manifests/{digest}", AppWrite),
        ("GET", "/v1/apps/{app}/oci-images", AppRead),
        ("GET", "/v1/apps/{app}/oci-images/{digest}", AppRead),
        ("GET", "/v1/images/stats", OrgRead),
        ("POST", "/v1/images/gc", Org),
        ("GET", "/v1/apps/{app}/ips", AppRead),
        ("POST", "/v1/apps/{app}/ips", AppWrite),
        ("DELETE", "/v1/apps/{app}/ips/{address}", AppWrite),
        ("GET", "/v1/apps/{app}/dns", AppRead),
        ("GET", "/v1/apps/{app}/process_groups", AppRead),
        ("POST", "/v1/apps/{app}/scale", AppWrite),
        ("POST", "/v1/apps/{app}/scale/guest", AppWrite),
        (
            "PUT",
            "/v1/apps/{app}/process_groups/{group}/count",
            AppWrite,
        ),
        ("GET", "/v1/apps/{app}/machines", AppRead),
        ("POST", "/v1/apps/{app}/machines", AppWrite),
        ("GET", "/v1/apps/{app}/machines/{id}", AppRead),
        ("POST", "/v1/apps/{app}/machines/{id}", AppWrite),
        ("DELETE", "/v1/apps/{app}/machines/{id}", AppWrite),
        ("POST", "/v1/apps/{app}/machines/{id}/start", AppWrite),
        ("POST", "/v1/apps/{app}/machines/{id}/stop", AppWrite),
        ("POST", "/v1/apps/{app}/machines/{id}/exec", AppWrite),
        ("GET", "/v1/apps/{app}/machines/{id}/ps", AppRead),
        // A shell in the machine: what a deploy token may do, never a read-only one.
        // GETS_BEYOND_READING: deploy tokens only.
        ("GET", "/v1/apps/{app}/machines/{id}/console", AppWrite),
        // The machine's files, secrets included: a deploy token's, never a read-only one's.
        ("GET", "/v1/apps/{app}/machines/{id}/files", AppWrite),
        ("PUT", "/v1/apps/{app}/machines/{id}/files", AppWrite),
        ("POST", "/v1/apps/{app}/machines/{id}/restart", AppWrite),
        ("POST", "/v1/apps/{app}/machines/{id}/signal", AppWrite),
        ("GET", "/v1/apps/{app}/machines/{id}/wait", AppRead),
        ("POST", "/v1/apps/{app}/machines/{id}/cordon", AppWrite),
        ("POST", "/v1/apps/{app}/machines/{id}/uncordon", AppWrite),
        ("GET", "/v1/apps/{app}/machines/{id}/events", AppRead),
        ("GET", "/v1/apps/{app}/machines/{id}/versions", AppRead),
        ("GET", "/v1/apps/{app}/machines/{id}/metadata", AppRead),
        (
            "GET",
            "/v1/apps/{app}/machines/{id}/metadata/{key}",
            AppRead,
        ),
        (
            "POST",
            "/v1/apps/{app}/machines/{id}/metadata/{key}",
            AppWrite,
        ),
        (
            "DELETE",
            "/v1/apps/{app}/machines/{id}/metadata/{key}",
            AppWrite,
        ),
        ("POST", "/v1/apps/{app}/machines/{id}/lease", AppWrite),
        ("GET", "/v1/apps/{app}/machines/{id}/lease", AppRead),
        ("DELETE", "/v1/apps/{app}/machines/{id}/lease", AppWrite),
        ("POST", "/v1/tokens", Org),
        ("GET", "/v1/tokens", Org),
        ("DELETE", "/v1/tokens/{id}", Org),
    ]
};

/// What `method template` needs; [`Access::Org`] for a route the table does not know.
pub fn access(method: &Method, template: &str) -> Access {
    let find = |m: &str| {
        TABLE
            .iter()
            .find(|(tm, tt, _)| *tm == m && *tt == template)
            .map(|(_, _, a)| *a)
    };
    find(method.as_str())
        .or_else(|| (method == Method::HEAD).then(|| find("GET")).flatten())
        .unwrap_or(Access::Org)
}

/// Whether a request changes something (recorded in the app's events) rather than reads.
pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// `GET` routes that give more than a read — a shell in a machine (`console`, a WebSocket
/// upgrade, so a `GET`), a machine's files (`files`, secrets included) — and so need a deploy
/// token and are recorded in the app's events like a change.
pub const GETS_BEYOND_READING: &[&str] = &[
    "/v1/apps/{app}/machines/{id}/console",
    "/v1/apps/{app}/machines/{id}/files",
];

/// Whether the request only reads (not recorded in the app's events).
pub fn is_read_only(method: &Method, template: &str) -> bool {
    is_read(method) && !GETS_BEYOND_READING.contains(&template)
}

/// Why a caller may not make a request: the 403's message.
#[derive(Debug, PartialEq, Eq)]
pub struct Denied(pub String);

/// May `caller` make `method` on the route `template`, whose `{app}` is `app`?
pub fn decide(
    caller: &Caller,
    method: &Method,
    template: &str,
    app: Option<&str>,
) -> Result<(), Denied> {
    let need = access(method, template);
    // A read route never changes anything, but a scoped token's writes are refused even where
    // the table would be wrong about a method.
    let read =
        is_read(method) && matches!(need, Access::Public | Access::OrgRead | Access::AppRead);
    let same_app = |bound: &str| app == Some(bound);
    let allowed = match (caller.kind, caller.app.as_deref(), need) {
        (TokenKind::Org, _, _) => true,
        (_, _, Access::Public) => read,
        (TokenKind::Readonly, None, Access::OrgRead | Access::AppRead) => read,
        (TokenKind::Readonly, Some(bound), Access::AppRead) => read && same_app(bound),
        (TokenKind::Deploy, Some(bound), Access::AppRead | Access::AppWrite) => same_app(bound),
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let what = match (need, app) {
        (Access::Org, _) => " (org tokens only)".to_string(),
        (Access::OrgRead, _) => " (reads every app)".to_string(),
        (_, Some(app)) => format!(" (app {app})"),
        (_, None) => String::new(),
    };
    Err(Denied(format!(
        "token {} is a {} token that may {}; it may not {method} {template}{what}",
        caller.actor(),
        caller.kind,
        caller.kind.describe(caller.app.as_deref()),
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn caller(kind: TokenKind, app: Option<&str>) -> Caller {
        Caller {
            id: "t1".into(),
            name: "ci".into(),
            kind,
            app: app.map(Into::into),
        }
    }

    /// The table and the router list the same routes, each once.
    #[test]
    fn every_served_route_is_in_the_table_and_nothing_else() {
        let served: BTreeSet<(String, String)> = crate::api::routes()
            .list
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let table: BTreeSet<(String, String)> = TABLE
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(table.len(), TABLE.len(), "a route is in the table twice");
        let missing: Vec<_> = served.difference(&table).collect();
        let extra: Vec<_> = table.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "routes with no access rule: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "rules for routes nobody serves: {extra:?}"
        );
    }

    /// The table's shape: reads are GET/HEAD, app routes are app-scoped or org-only, and the
    /// routes that must stay org-only are.
    #[test]
    fn the_table_is_consistent_with_its_routes() {
        for (m, t, a) in TABLE {
            let read = *m == "GET" || *m == "HEAD";
            let app_route = t.contains("{app}");
            match a {
                Access::Public | Access::OrgRead => assert!(read && !app_route, "{m} {t}"),
                Access::AppRead => assert!(read && app_route, "{m} {t}"),
                Access::AppWrite => assert!(
                    (!read || GETS_BEYOND_READING.contains(t)) && app_route,
                    "{m} {t}"
                ),
                Access::Org => assert!(!t.starts_with("/v1/apps/{app}/"), "{m} {t}"),
            }
        }
        for (m, t) in [
            ("DELETE", "/v1/apps/{app}"),
            ("POST", "/v1/apps"),
            ("GET", "/v1/tokens"),
            ("POST", "/v1/tokens"),
            ("DELETE", "/v1/tokens/{id}"),
            ("POST", "/v1/images/gc"),
            ("GET", "/v1/some/new/route"),
        ] {
            assert_eq!(access(&m.parse().unwrap(), t), Access::Org, "{m} {t}");
        }
        assert_eq!(
            access(&Method::HEAD, "/v1/apps/{app}/images/{hex}"),
            Access::AppRead
        );
    }

    /// Every served route, for every kind of caller, on its own app and another.
    #[test]
    fn each_kind_reaches_exactly_its_routes() {
        let org = caller(TokenKind::Org, None);
        let deploy = caller(TokenKind::Deploy, Some("a"));
        let reader = caller(TokenKind::Readonly, None);
        let app_reader = caller(TokenKind::Readonly, Some("a"));
        for (method, template) in crate::api::routes().list {
            let need = access(&method, template);
            let read = is_read(&method);
            let app_route = template.contains("{app}");
            for app in [Some("a"), Some("b")] {
                let app = if app_route { app } else { None };
                let ok = |c: &Caller| decide(c, &method, template, app).is_ok();
                let own = app == Some("a");
                let why = format!("{method} {template} on {app:?}");
                assert!(ok(&org), "org: {why}");
                let deploy_may = match need {
                    Access::Public => true,
                    Access::AppRead | Access::AppWrite => own,
                    Access::OrgRead | Access::Org => false,
                };
                assert_eq!(ok(&deploy), deploy_may, "deploy: {why}");
                let reader_may = read && need != Access::Org && need != Access::AppWrite;
                assert_eq!(ok(&reader), reader_may, "readonly: {why}");
                let app_reader_may = read
                    && match need {
                        Access::Public => true,
                        Access::AppRead => own,
                        _ => false,
                    };
                assert_eq!(ok(&app_reader), app_reader_may, "readonly a: {why}");
            }
        }
    }

    #[test]
    fn refusals_name_the_token_and_what_it_may_do() {
        let deploy = caller(TokenKind::Deploy, Some("a"));
        let Denied(m) =
            decide(&deploy, &Method::POST, "/v1/apps/{app}/machines", Some("b")).unwrap_err();
        assert!(
            m.contains("ci (t1)") && m.contains("app a") && m.contains("app b"),
            "{m}"
        );
        let Denied(m) = decide(&deploy, &Method::POST, "/v1/tokens", None).unwrap_err();
        assert!(m.contains("org tokens only"), "{m}");
        let reader = caller(TokenKind::Readonly, None);
        let Denied(m) =
            decide(&reader, &Method::POST, "/v1/apps/{app}/machines", Some("a")).unwrap_err();
        assert!(m.contains("GET and HEAD only"), "{m}");
    }
}
