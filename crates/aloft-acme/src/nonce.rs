//! Requests the CA refused for their anti-replay nonce (`badNonce`, RFC 8555 §6.5) are sent
//! again: the refusal carries a fresh nonce and the request was not acted on. CAs reject nonces
//! at will (pebble rejects 5% of good ones by default; Let's Encrypt expires them), so a client
//! that gave up at the first one would fail issuances at random.

/// How often a request the CA refused with `badNonce` is sent again.
pub(crate) const BAD_NONCE_RETRIES: usize = 3;

/// Whether the CA refused a request for its nonce.
pub(crate) fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// Evaluates an ACME request expression again while it fails with `badNonce`, up to
/// [`BAD_NONCE_RETRIES`] times; the last answer otherwise.
macro_rules! retry_bad_nonce {
    ($request:expr) => {{
        let mut retries = 0;
        loop {
            match $request {
                Err(e)
                    if $crate::nonce::is_bad_nonce(&e)
                        && retries < $crate::nonce::BAD_NONCE_RETRIES =>
                {
                    retries += 1
                }
                answer => break answer,
            }
        }
    }};
}
pub(crate) use retry_bad_nonce;
