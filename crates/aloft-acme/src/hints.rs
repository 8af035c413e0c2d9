//! What to do when the CA says no: advice by challenge kind and RFC 8555 problem type.

use crate::responder::ChallengeKind;

const ERROR_NS: &str = "urn:ietf:params:acme:error:";

/// The RFC 8555 §6.7 error name of a problem type URN (`connection` for
/// `urn:ietf:params:acme:error:connection`), or the whole type if it is another namespace.
pub(crate) fn problem_name(problem_type: Option<&str>) -> &str {
    let t = problem_type.unwrap_or("");
    t.strip_prefix(ERROR_NS).unwrap_or(t)
}

/// What the CA answered, in words: its problem document (detail and type), or what went wrong
/// on the way to it.
pub(crate) fn ca_said(err: &instant_acme::Error) -> String {
    match err {
        instant_acme::Error::Api(problem) => problem_text(problem),
        other => other.to_string(),
    }
}

/// An RFC 7807 problem as one line: "DETAIL (TYPE)", with its subproblems.
pub(crate) fn problem_text(problem: &instant_acme::Problem) -> String {
    let mut text = match (&problem.detail, &problem.r#type) {
        (Some(detail), Some(t)) => format!("{detail} ({})", problem_name(Some(t))),
        (Some(detail), None) => detail.clone(),
        (None, Some(t)) => problem_name(Some(t)).to_string(),
        (None, None) => "no detail given".to_string(),
    };
    for sub in &problem.subproblems {
        text.push_str(&format!("; {sub}"));
    }
    text
}

/// What the CA tried, in words: the URL it fetched or the connection it opened.
pub(crate) fn attempt(kind: ChallengeKind, domain: &str, token: &str) -> String {
    match kind {
        ChallengeKind::Http01 => {
            format!("the CA could not validate http://{domain}/.well-known/acme-challenge/{token}")
        }
        ChallengeKind::TlsAlpn01 => {
            format!("the CA could not validate {domain} over TLS on port 443 (ALPN acme-tls/1)")
        }
    }
}

/// What to do about a failed challenge, from the problem's type and (for CAs that file a
/// refused connection under `unauthorized`, as pebble does for TLS-ALPN-01) its detail.
pub(crate) fn challenge_hint(
    kind: ChallengeKind,
    domain: &str,
    problem_type: Option<&str>,
    detail: Option<&str>,
) -> String {
    let port = match kind {
        ChallengeKind::Http01 => 80,
        ChallengeKind::TlsAlpn01 => 443,
    };
    let detail = detail.unwrap_or("").to_ascii_lowercase();
    let unreachable = ["connect", "refused", "timeout", "timed out", "no route"]
        .iter()
        .any(|word| detail.contains(word));
    match problem_name(problem_type) {
        "dns" => format!(
            "the CA could not resolve {domain}: give it an A or AAAA record pointing at this host"
        ),
        "caa" => format!(
            "a CAA DNS record of {domain} does not allow this CA: add one that does, or remove it"
        ),
        "rateLimited" => "the CA limits how often it issues: wait before trying again".into(),
        _ if unreachable => reachable_hint(port, domain),
        "unauthorized" | "incorrectResponse" => match kind {
            ChallengeKind::Http01 => format!(
                "something other than this host answered: make sure {domain} points at this host \
                 and port 80 reaches Aloft's proxy directly (no other web server or CDN in front)"
            ),
            ChallengeKind::TlsAlpn01 => format!(
                "something other than this host answered: make sure {domain} points at this host \
                 and port 443 reaches Aloft's proxy directly (nothing in front may terminate TLS; \
                 or use the http-01 challenge)"
            ),
        },
        "tls" if kind == ChallengeKind::TlsAlpn01 => format!(
            "make port 443 of this host reachable from the internet at {domain}, with nothing in \
             front of it terminating TLS (or use the http-01 challenge)"
        ),
        _ => reachable_hint(port, domain),
    }
}

fn reachable_hint(port: u16, domain: &str) -> String {
    format!(
        "make port {port} of this host reachable from the internet at {domain} (its DNS \
         records pointing here, no firewall in between)"
    )
}

/// What to do about a refused order.
pub(crate) fn order_hint(problem_type: Option<&str>) -> String {
    match problem_name(problem_type) {
        "rejectedIdentifier" | "unsupportedIdentifier" => {
            "the CA does not issue for these names (public CAs refuse internal or reserved \
             names): use a public domain name"
                .into()
        }
        "rateLimited" => "the CA limits how often it issues: wait before trying again".into(),
        "accountDoesNotExist" | "unauthorized" => {
            "the CA does not know the stored account any more: delete the account file in the \
             ACME account directory so a new account is created"
                .into()
        }
        _ => "check the domain names and try again later".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_challenge_asks_for_the_port() {
        let hint = challenge_hint(
            ChallengeKind::Http01,
            "a.example.com",
            Some("urn:ietf:params:acme:error:connection"),
            Some("dial tcp 192.0.2.1:80: i/o timeout"),
        );
        assert!(
            hint.contains("make port 80 of this host reachable"),
            "{hint}"
        );
        let hint = challenge_hint(ChallengeKind::TlsAlpn01, "a.example.com", None, None);
        assert!(
            hint.contains("make port 443 of this host reachable"),
            "{hint}"
        );
    }

    #[test]
    fn a_refused_connection_filed_as_unauthorized_is_still_about_reachability() {
        let unauthorized = Some("urn:ietf:params:acme:error:unauthorized");
        let hint = challenge_hint(
            ChallengeKind::TlsAlpn01,
            "a.example.com",
            unauthorized,
            Some("Failed to connect to 192.0.2.1:443 for the tls-alpn-01 challenge"),
        );
        assert!(
            hint.contains("make port 443 of this host reachable"),
            "{hint}"
        );
        let hint = challenge_hint(
            ChallengeKind::Http01,
            "a.example.com",
            unauthorized,
            Some("Invalid response from http://a.example.com/.well-known/acme-challenge/x: 404"),
        );
        assert!(
            hint.contains("something other than this host answered"),
            "{hint}"
        );
    }

    #[test]
    fn dns_and_caa_problems_point_at_dns() {
        let hint = challenge_hint(
            ChallengeKind::Http01,
            "a.example.com",
            Some("urn:ietf:params:acme:error:dns"),
            Some("DNS problem: query timed out looking up A for a.example.com"),
        );
        assert!(hint.contains("A or AAAA record"), "{hint}");
        let hint = challenge_hint(
            ChallengeKind::TlsAlpn01,
            "a.example.com",
            Some("urn:ietf:params:acme:error:caa"),
            None,
        );
        assert!(hint.contains("CAA"), "{hint}");
    }
}
