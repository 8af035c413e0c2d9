//! Hostnames apps answer at (`aloft certs add HOST`, the agent's `--domain`): checked and put in
//! one form — lowercase, without a trailing dot — so a name is stored, routed and matched
//! against TLS SNI the same way everywhere.

/// Why a hostname is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("the hostname is empty")]
    Empty,
    #[error("{0:?} is an IP address; certificates and Host routing need a DNS name")]
    IpAddress(String),
    #[error("{0:?} is longer than 253 characters")]
    TooLong(String),
    #[error("{name:?} has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel { name: String },
    #[error("label {label:?} of {name:?} is longer than 63 characters")]
    LabelTooLong { name: String, label: String },
    #[error(
        "label {label:?} of {name:?} may hold only letters, digits and '-', and may not start or end with '-'"
    )]
    BadLabel { name: String, label: String },
    #[error("{0:?} is a single label; give a full name such as app.example.com")]
    SingleLabel(String),
    #[error("{name:?}: a wildcard is allowed only as the whole first label (*.example.com)")]
    BadWildcard { name: String },
}

/// Checks a DNS hostname and returns it lowercase, without a trailing dot. A wildcard first
/// label (`*.example.com`) is accepted; IP literals, empty or over-long labels, characters
/// other than letters, digits and `-` (and `_`, for service names), and single labels other
/// than `localhost` are refused.
pub fn normalize(name: &str) -> Result<String, HostnameError> {
    let trimmed = name.trim();
    let lower = trimmed
        .strip_suffix('.')
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    if lower.is_empty() {
        return Err(HostnameError::Empty);
    }
    let bare = lower.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<core::net::IpAddr>().is_ok() {
        return Err(HostnameError::IpAddress(trimmed.to_string()));
    }
    if lower.len() > 253 {
        return Err(HostnameError::TooLong(trimmed.to_string()));
    }
    let labels: Vec<&str> = lower.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return Err(HostnameError::EmptyLabel {
                name: trimmed.to_string(),
            });
        }
        if label.contains('*') {
            if i == 0 && *label == "*" && labels.len() > 2 {
                continue;
            }
            return Err(HostnameError::BadWildcard {
                name: trimmed.to_string(),
            });
        }
        if label.len() > 63 {
            return Err(HostnameError::LabelTooLong {
                name: trimmed.to_string(),
                label: label.to_string(),
            });
        }
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::BadLabel {
                name: trimmed.to_string(),
                label: label.to_string(),
            });
        }
    }
    if labels.len() == 1 && lower != "localhost" {
        return Err(HostnameError::SingleLabel(trimmed.to_string()));
    }
    // A last label of digits only would read as an IPv4 address to many resolvers.
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(HostnameError::IpAddress(trimmed.to_string()));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_lose_the_trailing_dot() {
        assert_eq!(normalize("WWW.Example.COM.").unwrap(), "www.example.com");
        assert_eq!(normalize("localhost").unwrap(), "localhost");
        assert_eq!(normalize("*.apps.example").unwrap(), "*.apps.example");
        assert_eq!(normalize("a-1.b_c.example").unwrap(), "a-1.b_c.example");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        let err = |n: &str| normalize(n).unwrap_err();
        assert_eq!(err(""), HostnameError::Empty);
        assert_eq!(err("."), HostnameError::Empty);
        assert!(matches!(err("10.0.0.1"), HostnameError::IpAddress(_)));
        assert!(matches!(err("[::1]"), HostnameError::IpAddress(_)));
        assert!(matches!(err("fdaa::3"), HostnameError::IpAddress(_)));
        assert!(matches!(err("a..b"), HostnameError::EmptyLabel { .. }));
        assert!(matches!(err("-a.example"), HostnameError::BadLabel { .. }));
        assert!(matches!(err("a b.example"), HostnameError::BadLabel { .. }));
        assert!(matches!(err("ü.example"), HostnameError::BadLabel { .. }));
        assert!(matches!(err("web"), HostnameError::SingleLabel(_)));
        assert!(matches!(
            err("a.*.example"),
            HostnameError::BadWildcard { .. }
        ));
        assert!(matches!(err("*.com"), HostnameError::BadWildcard { .. }));
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(matches!(
            err(&long_label),
            HostnameError::LabelTooLong { .. }
        ));
        let long = format!("{}example", "abcdefghi.".repeat(26));
        assert!(matches!(err(&long), HostnameError::TooLong(_)));
        assert!(err("10.0.0.1").to_string().contains("IP address"));
    }
}
