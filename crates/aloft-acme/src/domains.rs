//! Which names can be put in an order answered by HTTP-01 or TLS-ALPN-01.

use crate::error::AcmeError;

/// Lower-cased, without a trailing dot and duplicates, each checked: a DNS name of at least two
/// labels (letters, digits, hyphens), no wildcard (that needs the DNS-01 challenge) and no IP
/// address.
pub(crate) fn normalize(domains: &[impl AsRef<str>]) -> Result<Vec<String>, AcmeError> {
    if domains.is_empty() {
        return Err(AcmeError::Domain {
            domain: String::new(),
            reason: "no domain given: name at least one".into(),
        });
    }
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for domain in domains {
        let raw = domain.as_ref();
        let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        check(&name).map_err(|reason| AcmeError::Domain {
            domain: raw.to_string(),
            reason,
        })?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn check(name: &str) -> Result<(), String> {
    if name.starts_with("*.") {
        return Err(
            "wildcard certificates need the DNS-01 challenge, which Aloft does not \
                    answer: name each host instead"
                .into(),
        );
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(
            "an IP address, not a domain name: give a DNS name that points at this host".into(),
        );
    }
    if name.is_empty() || name.len() > 253 {
        return Err("a domain name has 1 to 253 characters".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("not a fully qualified domain name (e.g. app.example.com)".into());
    }
    for label in labels {
        let valid_chars = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !valid_chars
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!(
                "label {label:?} is not valid: labels have 1 to 63 letters, digits or inner \
                 hyphens (write internationalized names in their xn-- form)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_deduplicated() {
        let names = normalize(&["App.Example.COM.", "app.example.com", "www.example.com"]).unwrap();
        assert_eq!(names, ["app.example.com", "www.example.com"]);
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for (name, says) in [
            ("*.example.com", "wildcard"),
            ("127.0.0.1", "IP address"),
            ("localhost", "fully qualified"),
            ("a..example.com", "label"),
            ("-a.example.com", "label"),
            ("a_b.example.com", "label"),
            ("ünï.example.com", "xn--"),
        ] {
            let err = normalize(&[name]).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(says), "{name}: {err}");
        }
        let none: [&str; 0] = [];
        assert!(normalize(&none)
            .unwrap_err()
            .to_string()
            .contains("no domain"));
    }
}
