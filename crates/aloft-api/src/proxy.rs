//! `GET /v1/proxy` (an Aloft extension): where the agent's proxy listens for each service port.

use serde::{Deserialize, Serialize};

/// One external port of the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPort {
    /// The service's external port (`80`, `443`, a `[[services.ports]]` port).
    pub port: u16,
    pub app: String,
    /// `ip:port` it listens on (differs from `port` under `--port-map`), when bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Why it could not be bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `http`, `tls`, `proxy_proto`; empty = raw TCP.
    #[serde(default)]
    pub handlers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbound_port_names_its_error_and_omits_listen() {
        let p = ProxyPort {
            port: 80,
            app: "a".into(),
            listen: None,
            error: Some("in use".into()),
            handlers: vec!["http".into()],
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"port":80,"app":"a","error":"in use","handlers":["http"]}"#
        );
        assert_eq!(serde_json::from_str::<ProxyPort>(&json).unwrap(), p);
    }
}
