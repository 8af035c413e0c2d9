//! Per-port settings read from a `MachinePort`: handlers, `force_https`, `tls_options`,
//! `http_options` and `proxy_proto_options` (machines-api §2.5). The API carries the option
//! tables as free JSON; unknown or malformed fields fall back to defaults rather than failing,
//! since the config engine already validated them.

use std::time::Duration;

use aloft_api::MachinePort;
use serde_json::Value;

/// How a port's connections are handled, outermost first: TLS termination, then PROXY protocol
/// or HTTP. No handler at all is a raw TCP splice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortOptions {
    pub tls: bool,
    pub http: bool,
    /// Prepend a PROXY protocol header to the upstream connection.
    pub proxy_proto: Option<ProxyProtoVersion>,
    /// Plain-HTTP requests get a 301 to https (only with the `http` handler and without `tls`).
    pub force_https: bool,
    pub tls_options: TlsOptions,
    pub http_options: HttpOptions,
    /// Handlers we do not implement (e.g. `pg_tls`): reported, treated as raw TCP.
    pub unsupported_handlers: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtoVersion {
    V1,
    V2,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// ALPN protocols offered; empty = `h2`, `http/1.1` with the http handler, none otherwise.
    pub alpn: Vec<String>,
    /// `TLSv1.2`, `TLSv1.3`; empty = both.
    pub versions: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpOptions {
    /// Response headers to set (`http_options.response.headers`); an empty value removes the header.
    pub response_headers: Vec<(String, String)>,
    /// Do not add `Via`, `Server`, `Fly-Request-Id` to responses.
    pub pristine: bool,
    /// How long a client may take to send request headers.
    pub headers_read_timeout: Option<Duration>,
    /// Idle keep-alive timeout of client connections.
    pub idle_timeout: Option<Duration>,
    /// Speak HTTP/2 (h2c, prior knowledge) to the machines (gRPC apps).
    pub h2_backend: bool,
    /// Gzip text-like responses for clients that accept it (see `compress.rs`).
    pub compress: bool,
}

impl PortOptions {
    pub fn from_port(p: &MachinePort) -> PortOptions {
        let mut o = PortOptions {
            force_https: p.force_https,
            ..Default::default()
        };
        for h in &p.handlers {
            match h.as_str() {
                "tls" => o.tls = true,
                "http" => o.http = true,
                "proxy_proto" => {
                    o.proxy_proto = Some(
                        match p
                            .proxy_proto_options
                            .as_ref()
                            .and_then(|v| v.get("version"))
                            .and_then(Value::as_str)
                        {
                            Some("v2") => ProxyProtoVersion::V2,
                            _ => ProxyProtoVersion::V1,
                        },
                    )
                }
                other => o.unsupported_handlers.push(other.to_string()),
            }
        }
        if let Some(t) = &p.tls_options {
            o.tls_options.alpn = strings(t.get("alpn"));
            o.tls_options.versions = strings(t.get("versions"));
        }
        if let Some(h) = &p.http_options {
            if let Some(Value::Object(resp)) = h.get("response") {
                o.http_options.pristine = resp
                    .get("pristine")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let Some(Value::Object(headers)) = resp.get("headers") {
                    for (k, v) in headers {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            Value::Bool(false) | Value::Null => String::new(),
                            Value::Array(a) => a
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "),
                            other => other.to_string(),
                        };
                        // Only valid names and values, one entry per name (the last):
                        // both HTTP paths then apply the same list.
                        let valid = http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                            && (v.is_empty() || http::HeaderValue::from_str(&v).is_ok());
                        if !valid {
                            tracing::warn!(
                                "http_options.response.headers: `{k}` ignored (not a valid header)"
                            );
                            continue;
                        }
                        let name = k.to_ascii_lowercase();
                        o.http_options.response_headers.retain(|(n, _)| *n != name);
                        o.http_options.response_headers.push((name, v));
                    }
                }
            }
            o.http_options.headers_read_timeout = seconds(h.get("headers_read_timeout"));
            o.http_options.idle_timeout = seconds(h.get("idle_timeout"));
            o.http_options.h2_backend = h
                .get("h2_backend")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            o.http_options.compress = h.get("compress").and_then(Value::as_bool).unwrap_or(false);
        }
        o
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A timeout given as integer seconds or a Go duration string.
fn seconds(v: Option<&Value>) -> Option<Duration> {
    match v? {
        Value::Number(n) => n.as_u64().filter(|s| *s > 0).map(Duration::from_secs),
        Value::String(s) => aloft_api::duration::parse_go_duration(s)
            .ok()
            .filter(|d| !d.is_zero()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_handlers_and_options() {
        let p = MachinePort {
            port: Some(443),
            handlers: vec!["tls".into(), "http".into()],
            tls_options: Some(json!({"alpn": ["h2"], "versions": ["TLSv1.3"]})),
            http_options: Some(
                json!({"headers_read_timeout": 5, "response": {"pristine": true, "headers": {"x-a": "b", "server": false}}}),
            ),
            ..Default::default()
        };
        let o = PortOptions::from_port(&p);
        assert!(o.tls && o.http && o.proxy_proto.is_none());
        assert_eq!(o.tls_options.alpn, vec!["h2"]);
        assert_eq!(o.tls_options.versions, vec!["TLSv1.3"]);
        assert!(o.http_options.pristine);
        assert_eq!(
            o.http_options.headers_read_timeout,
            Some(Duration::from_secs(5))
        );
        assert!(o
            .http_options
            .response_headers
            .contains(&("x-a".into(), "b".into())));
        assert!(o
            .http_options
            .response_headers
            .contains(&("server".into(), String::new())));
    }

    #[test]
    fn proxy_proto_versions_and_unknown_handlers() {
        let mut p = MachinePort {
            port: Some(5432),
            handlers: vec!["proxy_proto".into()],
            ..Default::default()
        };
        assert_eq!(
            PortOptions::from_port(&p).proxy_proto,
            Some(ProxyProtoVersion::V1)
        );
        p.proxy_proto_options = Some(json!({"version": "v2"}));
        assert_eq!(
            PortOptions::from_port(&p).proxy_proto,
            Some(ProxyProtoVersion::V2)
        );
        p.handlers = vec!["pg_tls".into()];
        assert_eq!(
            PortOptions::from_port(&p).unsupported_handlers,
            vec!["pg_tls"]
        );
    }
}
