//! When a certificate is valid, read from its PEM chain, and when it is time to renew it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::AcmeError;

/// Renewal starts at the latest when this much validity is left.
const RENEW_AT_THE_LATEST: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The validity period of a certificate (its leaf, for a chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Whether a certificate valid from `not_before` to `not_after` should be renewed at `now`:
/// when a third of its lifetime is left, or 30 days, whichever leaves less time — for
/// Let's Encrypt's 90-day certificates both are 30 days; a 6-day certificate is renewed with
/// 2 days left (never at once, which "30 days" alone would do, in a loop); a 1-year
/// certificate with 30 days left. Also due: an expired certificate, and one whose period is
/// empty or inverted (it cannot be valid). A clock behind `not_before` is not a reason.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return true;
    };
    if lifetime.is_zero() {
        return true;
    }
    let Ok(left) = not_after.duration_since(now) else {
        return true; // now is past not_after
    };
    left <= (lifetime / 3).min(RENEW_AT_THE_LATEST)
}

/// The validity of the first certificate (the leaf) of a PEM chain.
pub fn parse_validity(chain_pem: &str) -> Result<Validity, AcmeError> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| AcmeError::Certificate {
            detail: "no `-----BEGIN CERTIFICATE-----` block found; give the certificate chain in PEM, leaf first".into(),
        })?
        .map_err(|e| AcmeError::Certificate {
            detail: format!("the first certificate is not valid PEM ({e})"),
        })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&leaf).map_err(|e| AcmeError::Certificate {
            detail: format!("the first certificate is not a valid X.509 certificate ({e})"),
        })?;
    let validity = cert.validity();
    Ok(Validity {
        not_before: system_time(validity.not_before.timestamp()),
        not_after: system_time(validity.not_after.timestamp()),
    })
}

/// The end of the validity of the leaf of a PEM chain.
pub fn parse_not_after(chain_pem: &str) -> Result<SystemTime, AcmeError> {
    parse_validity(chain_pem).map(|v| v.not_after)
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn at(days: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + DAY * days as u32
    }

    #[test]
    fn a_90_day_certificate_is_renewed_with_30_days_left() {
        let (from, to) = (at(0), at(90));
        assert!(!renewal_due(from, to, at(0)));
        assert!(!renewal_due(from, to, at(59)));
        assert!(!renewal_due(from, to, at(60) - Duration::from_secs(1)));
        assert!(renewal_due(from, to, at(60)));
        assert!(renewal_due(from, to, at(89)));
    }

    #[test]
    fn a_short_lived_certificate_is_renewed_with_a_third_left_not_at_once() {
        let (from, to) = (at(0), at(6));
        assert!(!renewal_due(from, to, at(0)));
        assert!(!renewal_due(from, to, at(3)));
        assert!(renewal_due(from, to, at(4)));
    }

    #[test]
    fn a_one_year_certificate_is_renewed_with_30_days_left() {
        let (from, to) = (at(0), at(365));
        assert!(!renewal_due(from, to, at(300)));
        assert!(!renewal_due(from, to, at(334)));
        assert!(renewal_due(from, to, at(335)));
    }

    #[test]
    fn expired_empty_and_inverted_periods_are_due() {
        assert!(renewal_due(at(0), at(90), at(90)));
        assert!(renewal_due(at(0), at(90), at(400)));
        assert!(renewal_due(at(5), at(5), at(0)));
        assert!(renewal_due(at(10), at(5), at(0)));
    }

    #[test]
    fn a_clock_before_not_before_is_not_a_reason_to_renew() {
        assert!(!renewal_due(at(10), at(100), at(0)));
    }

    fn self_signed(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn the_validity_of_the_leaf_is_read_from_a_chain() {
        let leaf = self_signed((2030, 1, 1), (2030, 4, 1));
        let other = self_signed((2020, 1, 1), (2040, 1, 1));
        let validity = parse_validity(&format!("{leaf}{other}")).unwrap();
        assert_eq!(
            validity.not_before,
            UNIX_EPOCH + Duration::from_secs(1_893_456_000)
        );
        assert_eq!(
            validity.not_after,
            UNIX_EPOCH + Duration::from_secs(1_901_232_000)
        );
        assert_eq!(
            parse_not_after(&leaf).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_901_232_000)
        );
    }

    #[test]
    fn what_is_not_a_certificate_is_an_error_that_says_so() {
        let err = parse_validity("hello").unwrap_err().to_string();
        assert!(
            err.contains("no `-----BEGIN CERTIFICATE-----` block"),
            "{err}"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = parse_validity(garbage).unwrap_err().to_string();
        assert!(err.contains("not a valid X.509 certificate"), "{err}");
        let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(parse_validity(&key_only).is_err());
    }
}
