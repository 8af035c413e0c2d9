//! A machine's captured output line: what the runtime writes to its log files and what the
//! agent's `GET /v1/apps/{app}/logs` sends (NDJSON, one line each).

use serde::{Deserialize, Serialize};

/// One line of a machine's stdout or stderr.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 UTC with nanoseconds (the runtime writes nine digits, so lines sort as text).
    pub timestamp: String,
    #[serde(default)]
    pub app: String,
    pub machine_id: String,
    /// The machine's process group.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub region: String,
    /// `stdout` or `stderr`.
    #[serde(default)]
    pub stream: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_order_and_optional_ones_default() {
        let line = LogLine {
            timestamp: "2026-01-01T00:00:00.000000001Z".into(),
            app: "a".into(),
            machine_id: "m".into(),
            group: "web".into(),
            region: "ord".into(),
            stream: "stdout".into(),
            message: "hi".into(),
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"timestamp":"2026-01-01T00:00:00.000000001Z","app":"a","machine_id":"m","group":"web","region":"ord","stream":"stdout","message":"hi"}"#
        );
        let short: LogLine =
            serde_json::from_str(r#"{"timestamp":"t","machine_id":"m","message":"x"}"#).unwrap();
        assert_eq!((short.app.as_str(), short.stream.as_str()), ("", ""));
    }
}
