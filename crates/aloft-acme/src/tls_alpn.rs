//! The self-signed certificate a TLS-ALPN-01 challenge is answered with (RFC 8737 §3).

use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};

use crate::error::AcmeError;

/// A certificate for `domain` alone with the critical acmeIdentifier extension holding the
/// SHA-256 digest of the key authorization: (DER chain of that one certificate, PKCS#8 DER key).
pub(crate) fn challenge_certificate(
    domain: &str,
    key_authorization_sha256: &[u8],
) -> Result<(Vec<Vec<u8>>, Vec<u8>), AcmeError> {
    let crypto = |e: rcgen::Error| AcmeError::Crypto {
        detail: format!("TLS-ALPN-01 certificate for {domain}: {e}"),
    };
    let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(crypto)?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(
        key_authorization_sha256,
    )];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let cert = params.self_signed(&key).map_err(crypto)?;
    Ok((vec![cert.der().to_vec()], key.serialize_der()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_domain_and_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let (chain, key) = challenge_certificate("a.example.com", &digest).unwrap();
        assert_eq!(chain.len(), 1);
        assert!(KeyPair::try_from(key.as_slice()).is_ok());
        let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"a.example.com\")]"
        );
    }
}
