//! The header policy: one table of what the proxy does to headers on the way to a machine
//! ([`REQUEST`]) and on the way back ([`RESPONSE`]), read by both HTTP back-ends. The hyper
//! path applies it to header maps ([`strip`], [`add_own`], [`apply_configured`]); the h1 fast
//! path looks each header of a raw head up ([`find`]) while copying it and then writes the
//! proxy's own values ([`Values::bytes`]; those that cannot change are rendered once per
//! connection, see `h1/head.rs`). Whatever the path, a machine and a client see the same
//! headers (names' case aside). Tables are written with `rule!`, which also prepares the
//! fixed text of a line so that neither path validates or formats it per request.
//!
//! Beyond the table: headers a message names in `Connection` are hop-by-hop too (both
//! directions); an HTTP/1.1 upgrade keeps its `Connection`/`Upgrade`; framing
//! (`Content-Length`, `Transfer-Encoding`) is each back-end's to write; a `Date` is added when
//! a response has none (as any HTTP server does); `http_options.response.headers` override the
//! response rules of the same name ([`apply_configured`]); per attempt, the request lifecycle
//! sets `fly-replay-src` on a replay and `Fly-Preferred-Instance-Unavailable` when the machine
//! of `Fly-Prefer-Instance-Id` was not used.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Version;

use crate::options::HttpOptions;

/// What the proxy does with one header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Never forwarded: hop-by-hop, or only the proxy may set it.
    Remove,
    /// The peer's value is replaced by the proxy's (and dropped when the proxy has none).
    Set(Value),
    /// The proxy's value appended to the list the peer sent, in one field: `a, b, ours`.
    AppendToList(Value),
    /// The proxy's value added as one more field after the peer's.
    Add(Value),
    /// The proxy's value when the message has none.
    Default(Value),
}

/// A value the proxy writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// The client's IP address.
    ClientIp,
    /// `https` or `http`: whether the client connection is TLS.
    Proto,
    /// `on` or `off`: the same.
    Ssl,
    /// The external port the client connected to.
    Port,
    /// The proxy's region (`ProxyConfig::region`).
    Region,
    /// `<client's HTTP version> aloft`.
    Via,
    /// `Fly-Request-Id`: a ULID and the region.
    RequestId,
    Static(&'static str),
}

/// One line of the policy (written with `rule!`).
#[derive(Debug)]
pub(crate) struct Rule {
    /// Lower case.
    pub name: &'static str,
    pub header: HeaderName,
    pub action: Action,
    /// Applies only when the service's `http_options.response.pristine` is off.
    pub unless_pristine: bool,
    /// `name: `, for writing a value after it.
    pub prefix: &'static str,
    /// The whole line, `name: value\r\n`, when the value is fixed text; else empty.
    pub line: &'static str,
    /// The fixed text as a header value.
    pub fixed: Option<HeaderValue>,
}

/// `rule!(name, Action(Value))`, `rule!(name, Action("fixed text"))` or `rule!(name, Remove)`;
/// with `, unless_pristine` the rule applies only to services that are not pristine.
macro_rules! rule {
    ($name:literal, Remove) => {
        rule!(@make $name, Action::Remove, "", None, false)
    };
    ($name:literal, $action:ident($value:literal) $(, $p:ident)?) => {
        rule!(@make $name, Action::$action(Value::Static($value)),
            concat!($name, ": ", $value, "\r\n"), Some(HeaderValue::from_static($value)),
            rule!(@p $($p)?))
    };
    ($name:literal, $action:ident($value:ident) $(, $p:ident)?) => {
        rule!(@make $name, Action::$action(Value::$value), "", None, rule!(@p $($p)?))
    };
    (@p unless_pristine) => { true };
    (@p) => { false };
    (@make $name:literal, $action:expr, $line:expr, $fixed:expr, $unless:expr) => {
        Rule {
            name: $name,
            header: HeaderName::from_static($name),
            action: $action,
            unless_pristine: $unless,
            prefix: concat!($name, ": "),
            line: $line,
            fixed: $fixed,
        }
    };
}

/// Requests, client → machine.
pub(crate) static REQUEST: [Rule; 16] = [
    // Hop-by-hop (RFC 9110 §7.6.1).
    rule!("connection", Remove),
    rule!("keep-alive", Remove),
    rule!("proxy-connection", Remove),
    rule!("te", Remove),
    rule!("transfer-encoding", Remove),
    rule!("upgrade", Remove),
    rule!("trailer", Remove),
    // Only the proxy says where a request was replayed from.
    rule!("fly-replay-src", Remove),
    // Fly's forwarding headers: the client's own values never reach the machine.
    rule!("x-forwarded-for", AppendToList(ClientIp)),
    rule!("fly-client-ip", Set(ClientIp)),
    rule!("x-forwarded-proto", Set(Proto)),
    rule!("x-forwarded-ssl", Set(Ssl)),
    rule!("x-forwarded-port", Set(Port)),
    rule!("fly-forwarded-port", Set(Port)),
    rule!("fly-region", Set(Region)),
    rule!("via", AppendToList(Via)),
];

/// Responses, machine → client (and the proxy's own answers).
pub(crate) static RESPONSE: [Rule; 10] = [
    rule!("connection", Remove),
    rule!("keep-alive", Remove),
    rule!("proxy-connection", Remove),
    rule!("te", Remove),
    rule!("transfer-encoding", Remove),
    rule!("upgrade", Remove),
    rule!("trailer", Remove),
    rule!("fly-request-id", Set(RequestId), unless_pristine),
    rule!("via", Add("1.1 aloft"), unless_pristine),
    rule!("server", Default("aloft"), unless_pristine),
];

// Rules are told apart by a bit of a `u64` on the fast path.
const _: () = assert!(REQUEST.len() <= 64 && RESPONSE.len() <= 64);

/// The rule for header `name` (any case), with its index in `rules`.
pub(crate) fn find(rules: &'static [Rule], name: &str) -> Option<(usize, &'static Rule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.name.len() == name.len() && r.name.eq_ignore_ascii_case(name))
}

/// Whether `rule` applies to a message of a service with `pristine` set as given.
pub(crate) fn active(rule: &Rule, pristine: bool) -> bool {
    !(rule.unless_pristine && pristine)
}

/// What the proxy's values are for one client connection, made once.
#[derive(Debug)]
pub(crate) struct ConnValues {
    client_ip: Option<HeaderValue>,
    port: HeaderValue,
    region: Option<HeaderValue>,
    tls: bool,
}

impl ConnValues {
    pub fn new(client: SocketAddr, port: u16, tls: bool, region: &str) -> ConnValues {
        ConnValues {
            client_ip: HeaderValue::from_str(&client.ip().to_string()).ok(),
            port: HeaderValue::from(port),
            region: HeaderValue::from_str(region).ok(),
            tls,
        }
    }

    /// A new `Fly-Request-Id`: a ULID and the region, or nothing when the region cannot be a
    /// header value.
    pub fn request_id(&self) -> Option<HeaderValue> {
        let region = self.region.as_ref()?.as_bytes();
        let mut ulid = [0u8; ulid::ULID_LEN];
        ulid::Ulid::new().array_to_str(&mut ulid);
        let mut v = Vec::with_capacity(ulid.len() + 1 + region.len());
        v.extend_from_slice(&ulid);
        v.push(b'-');
        v.extend_from_slice(region);
        HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
    }
}

/// The proxy's values for one message.
#[derive(Clone, Copy)]
pub(crate) struct Values<'a> {
    pub conn: &'a ConnValues,
    /// The client's HTTP version (for `Via`).
    pub version: Version,
    pub request_id: Option<&'a HeaderValue>,
}

impl Values<'_> {
    /// The value as bytes; `None` when the proxy has none.
    pub fn bytes(&self, v: Value) -> Option<&[u8]> {
        let c = self.conn;
        match v {
            Value::ClientIp => c.client_ip.as_ref().map(HeaderValue::as_bytes),
            Value::Port => Some(c.port.as_bytes()),
            Value::Region => c.region.as_ref().map(HeaderValue::as_bytes),
            Value::RequestId => self.request_id.map(HeaderValue::as_bytes),
            Value::Proto | Value::Ssl | Value::Via | Value::Static(_) => {
                Some(self.text(v).as_bytes())
            }
        }
    }

    /// The values that are fixed text.
    fn text(&self, v: Value) -> &'static str {
        match v {
            Value::Proto if self.conn.tls => "https",
            Value::Proto => "http",
            Value::Ssl if self.conn.tls => "on",
            Value::Ssl => "off",
            Value::Via => match self.version {
                Version::HTTP_10 => "1.0 aloft",
                Version::HTTP_2 => "2 aloft",
                _ => "1.1 aloft",
            },
            Value::Static(s) => s,
            Value::ClientIp | Value::Port | Value::Region | Value::RequestId => "",
        }
    }

    /// The value as a header value (a cheap clone).
    fn header(&self, v: Value) -> Option<HeaderValue> {
        const HTTPS: HeaderValue = HeaderValue::from_static("https");
        const HTTP: HeaderValue = HeaderValue::from_static("http");
        const ON: HeaderValue = HeaderValue::from_static("on");
        const OFF: HeaderValue = HeaderValue::from_static("off");
        const VIA_10: HeaderValue = HeaderValue::from_static("1.0 aloft");
        const VIA_11: HeaderValue = HeaderValue::from_static("1.1 aloft");
        const VIA_2: HeaderValue = HeaderValue::from_static("2 aloft");
        let c = self.conn;
        Some(match v {
            Value::ClientIp => c.client_ip.clone()?,
            Value::Port => c.port.clone(),
            Value::Region => c.region.clone()?,
            Value::RequestId => self.request_id?.clone(),
            Value::Proto if c.tls => HTTPS,
            Value::Proto => HTTP,
            Value::Ssl if c.tls => ON,
            Value::Ssl => OFF,
            Value::Via => match self.version {
                Version::HTTP_10 => VIA_10,
                Version::HTTP_2 => VIA_2,
                _ => VIA_11,
            },
            Value::Static(s) => HeaderValue::from_static(s),
        })
    }
}

/// A header value as an item of a list header (`X-Forwarded-For`, `Via`): trimmed; `None` when
/// empty or not visible ASCII (what `HeaderValue::to_str` refuses).
pub(crate) fn list_item(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    let visible = v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    (visible && !v.is_empty()).then_some(v)
}

/// Removes the headers the message names in `Connection` and those the rules remove.
pub(crate) fn strip(map: &mut HeaderMap, rules: &'static [Rule]) {
    if map.contains_key(http::header::CONNECTION) {
        let listed: Vec<HeaderName> = map
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in &listed {
            map.remove(n);
        }
    }
    let removed = |r: &&Rule| matches!(r.action, Action::Remove);
    // One pass over the names (cheap comparisons) instead of a hashed lookup per rule: most
    // messages carry none of these.
    if map
        .keys()
        .any(|k| rules.iter().any(|r| removed(&r) && r.header == k))
    {
        for r in rules.iter().filter(removed) {
            map.remove(&r.header);
        }
    }
}

/// Writes the proxy's own headers into `map` as the active rules say (after [`strip`]).
pub(crate) fn add_own(
    map: &mut HeaderMap,
    rules: &'static [Rule],
    values: &Values,
    pristine: bool,
) {
    // One growth of the map instead of several.
    map.reserve(rules.len() / 2);
    for r in rules.iter() {
        if matches!(r.action, Action::Remove) || !active(r, pristine) {
            continue;
        }
        let own = |v: Value| match &r.fixed {
            Some(fixed) => Some(fixed.clone()),
            None => values.header(v),
        };
        match r.action {
            Action::Remove => {}
            Action::Set(v) => match own(v) {
                Some(value) => {
                    map.insert(r.header.clone(), value);
                }
                None => {
                    map.remove(&r.header);
                }
            },
            Action::AppendToList(v) => {
                let mut list: Vec<u8> = Vec::new();
                for item in map
                    .get_all(&r.header)
                    .iter()
                    .filter_map(|v| list_item(v.as_bytes()))
                {
                    list.extend_from_slice(item);
                    list.extend_from_slice(b", ");
                }
                let value = match values.bytes(v) {
                    // The common case: nothing to join.
                    Some(_) if list.is_empty() => own(v),
                    Some(ours) => {
                        list.extend_from_slice(ours);
                        HeaderValue::from_maybe_shared(Bytes::from(list)).ok()
                    }
                    None if list.is_empty() => None,
                    None => {
                        list.truncate(list.len() - 2);
                        HeaderValue::from_maybe_shared(Bytes::from(list)).ok()
                    }
                };
                match value {
                    Some(value) => {
                        map.insert(r.header.clone(), value);
                    }
                    None => {
                        map.remove(&r.header);
                    }
                }
            }
            Action::Add(v) => {
                if let Some(value) = own(v) {
                    map.append(r.header.clone(), value);
                }
            }
            Action::Default(v) => {
                if !map.contains_key(&r.header) {
                    if let Some(value) = own(v) {
                        map.insert(r.header.clone(), value);
                    }
                }
            }
        }
    }
}

/// `http_options.response.headers`: each replaces the header (and the proxy's own value), or
/// removes it when empty. Valid and one per name (see `options.rs`).
pub(crate) fn apply_configured(map: &mut HeaderMap, configured: &[(String, String)]) {
    for (name, value) in configured {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if value.is_empty() {
            map.remove(&name);
        } else if let Ok(v) = HeaderValue::from_str(value) {
            map.insert(name, v);
        }
    }
}

/// A response's headers for the client: the proxy's own (`RESPONSE`), then the configured
/// ones, for a response already [`strip`]ped (or made by the proxy).
pub(crate) fn decorate(map: &mut HeaderMap, values: &Values, opts: &HttpOptions) {
    add_own(map, &RESPONSE, values, opts.pristine);
    apply_configured(map, &opts.response_headers);
}

/// Whether `http_options.response.headers` names `name` (any case).
pub(crate) fn configured_has(configured: &[(String, String)], name: &str) -> bool {
    configured.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(conn: &ConnValues) -> Values<'_> {
        Values {
            conn,
            version: Version::HTTP_11,
            request_id: None,
        }
    }

    #[test]
    fn requests_lose_hop_by_hop_and_forged_headers_and_gain_the_proxys() {
        let conn = ConnValues::new("10.1.2.3:5555".parse().unwrap(), 80, false, "ams");
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("te", "trailers"),
            ("fly-client-ip", "forged"),
            ("fly-replay-src", "forged"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", " 2.2.2.2 "),
            ("via", "1.0 edge"),
            ("x-kept", "yes"),
        ] {
            h.append(n, HeaderValue::from_static(v));
        }
        strip(&mut h, &REQUEST);
        add_own(&mut h, &REQUEST, &values(&conn), false);
        let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            get("x-forwarded-for").as_deref(),
            Some("1.1.1.1, 2.2.2.2, 10.1.2.3")
        );
        assert_eq!(get("via").as_deref(), Some("1.0 edge, 1.1 aloft"));
        assert_eq!(get("fly-client-ip").as_deref(), Some("10.1.2.3"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(get("x-forwarded-ssl").as_deref(), Some("off"));
        assert_eq!(get("fly-forwarded-port").as_deref(), Some("80"));
        assert_eq!(get("fly-region").as_deref(), Some("ams"));
        assert_eq!(get("x-kept").as_deref(), Some("yes"));
        for gone in ["connection", "x-hop", "te", "fly-replay-src"] {
            assert_eq!(get(gone), None, "{gone}");
        }
    }

    #[test]
    fn pristine_responses_get_no_proxy_headers_and_configured_ones_win() {
        let conn = ConnValues::new("10.1.2.3:5555".parse().unwrap(), 443, true, "ams");
        let id = HeaderValue::from_static("id-ams");
        let v = Values {
            request_id: Some(&id),
            ..values(&conn)
        };
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("app"));
        add_own(&mut h, &RESPONSE, &v, false);
        assert_eq!(h["server"], "app");
        assert_eq!(h["via"], "1.1 aloft");
        assert_eq!(h["fly-request-id"], "id-ams");
        apply_configured(
            &mut h,
            &[("via".into(), "mine".into()), ("server".into(), "".into())],
        );
        assert_eq!(h["via"], "mine");
        assert!(!h.contains_key("server"));
        let mut p = HeaderMap::new();
        add_own(&mut p, &RESPONSE, &v, true);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn lookups_ignore_case_and_every_rule_is_found() {
        for rules in [&REQUEST[..], &RESPONSE[..]] {
            for (i, r) in rules.iter().enumerate() {
                assert_eq!(r.name, r.header.as_str());
                let upper = r.name.to_ascii_uppercase();
                assert_eq!(find(rules, &upper).map(|(j, _)| j), Some(i));
            }
        }
        assert!(find(&REQUEST, "x-custom").is_none());
    }
}
