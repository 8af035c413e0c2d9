//! The `https://` transport: rustls with a verifier that accepts, in order,
//!
//! 1. when a fingerprint is required (`ConnectOptions::fingerprint`: a context's, or the local
//!    data dir's own `agent.fingerprint`), exactly the certificate of that fingerprint;
//! 2. a certificate a public CA vouches for (webpki-roots) for the URL's host;
//! 3. the certificate whose fingerprint is pinned for `host:port` in the pin file
//!    ([`crate::pins`]); with no pin yet it is trusted on first use: pinned, and the caller told
//!    through `ConnectOptions::on_pin` (this library prints nothing).
//!
//! A certificate that differs from the pinned or required one is refused with a [`PinError`],
//! an ssh-style warning naming the agent, both fingerprints and what to do; [`handshake_failure`]
//! digs it (or any other TLS error) out of reqwest's error so the user reads it first.
//! The signatures of the handshake are always checked against the presented certificate's key.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::pins::{fingerprint_of, normalize_fingerprint, PinFile};

/// A certificate pinned on first use, as told to [`OnPin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPin {
    pub host_port: String,
    pub fingerprint: String,
    /// The pin file it was written to.
    pub file: std::path::PathBuf,
}

impl fmt::Display for NewPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trusting the certificate of the agent at {} on first use: {} (pinned in {}; compare \
             it with the fingerprint `aloft agent --tls` printed)",
            self.host_port,
            self.fingerprint,
            self.file.display()
        )
    }
}

/// Called once per certificate pinned on first use (the CLI prints it as a note).
#[derive(Clone)]
pub struct OnPin(pub Arc<dyn Fn(&NewPin) + Send + Sync>);

impl fmt::Debug for OnPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnPin(..)")
    }
}

/// The agent presented a certificate other than the one pinned or required for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error(
        "WARNING: THE CERTIFICATE OF THE AGENT AT {host_port} HAS CHANGED!\n\
         Someone could be intercepting the connection, or the agent got a new certificate.\n\
         pinned:    {pinned}\n\
         presented: {presented}\n\
         Nothing was sent. If you verified the new certificate (on the agent host: \
         `cat <data-dir>/agent.fingerprint`), remove the line of {host_port} from {file} and \
         connect again to pin it, or pass the new fingerprint (`aloft context add … \
         --fingerprint`)."
    )]
    Changed {
        host_port: String,
        pinned: String,
        presented: String,
        file: String,
    },
    #[error(
        "WARNING: the agent at {host_port} presented a certificate other than the required one.\n\
         required:  {required}\n\
         presented: {presented}\n\
         Nothing was sent. If you verified the new certificate (on the agent host: \
         `cat <data-dir>/agent.fingerprint`), update the fingerprint of the context \
         (`aloft context add … --fingerprint`)."
    )]
    Required {
        host_port: String,
        required: String,
        presented: String,
    },
}

/// `host:port` of an `https://` URL (port 443 when none), lowercase; IPv6 hosts in brackets.
pub fn host_port(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("the agent URL {url} is not a URL: {e}"))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the agent URL {url} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// What the verifier of [`client_config`] trusts besides public CAs (the `https://` fields of
/// `ConnectOptions`).
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// The pin file; `None` disables pinning.
    pub pins: Option<std::path::PathBuf>,
    /// The one fingerprint to accept, when given.
    pub fingerprint: Option<String>,
    pub on_pin: Option<OnPin>,
}

/// The rustls config of a client of the agent at `url` (`https://`).
pub fn client_config(url: &str, trust: Trust) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(ring::default_provider());
    let required = match &trust.fingerprint {
        Some(f) => Some(normalize_fingerprint(f).ok_or_else(|| {
            anyhow::anyhow!(
                "invalid fingerprint `{f}`: write sha256: and 64 hex digits, as `aloft agent --tls` prints it"
            )
        })?),
        None => None,
    };
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up certificate verification: {e}"))?;
    let verifier = PinningVerifier {
        host_port: host_port(url)?,
        required,
        webpki,
        pins: trust.pins.map(PinFile::new),
        on_pin: trust.on_pin,
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // reqwest is built without HTTP/2 here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinningVerifier {
    host_port: String,
    required: Option<String>,
    webpki: Arc<WebPkiServerVerifier>,
    pins: Option<PinFile>,
    on_pin: Option<OnPin>,
    provider: Arc<CryptoProvider>,
}

fn refuse(err: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::Other(rustls::OtherError(Arc::new(err)))
}

/// An error of the pin file, as a `std::error::Error` rustls can carry.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct PinFileError(anyhow::Error);

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint_of(end_entity);
        if let Some(required) = &self.required {
            return match *required == presented {
                true => Ok(ServerCertVerified::assertion()),
                false => Err(refuse(PinError::Required {
                    host_port: self.host_port.clone(),
                    required: required.clone(),
                    presented,
                })),
            };
        }
        let by_ca = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let (Err(_), Some(pins)) = (&by_ca, &self.pins) else {
            return by_ca;
        };
        let pinned = match pins.lookup(&self.host_port) {
            Ok(Some(pinned)) => pinned,
            Ok(None) => {
                let pinned = pins
                    .pin(&self.host_port, &presented)
                    .map_err(|e| refuse(PinFileError(e)))?;
                if pinned == presented {
                    if let Some(OnPin(tell)) = &self.on_pin {
                        tell(&NewPin {
                            host_port: self.host_port.clone(),
                            fingerprint: presented.clone(),
                            file: pins.path.clone(),
                        });
                    }
                }
                pinned
            }
            Err(e) => return Err(refuse(PinFileError(e))),
        };
        if pinned == presented {
            return Ok(ServerCertVerified::assertion());
        }
        Err(refuse(PinError::Changed {
            host_port: self.host_port.clone(),
            pinned,
            presented,
            file: pins.path.display().to_string(),
        }))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// When `err` (reqwest's, of a request to `base`) failed in the TLS handshake, what to tell the
/// user: the [`PinError`] itself, or the TLS error with a hint.
pub fn handshake_failure(err: &reqwest::Error, base: &str) -> Option<anyhow::Error> {
    let tls = find_rustls_error(err)?;
    if let rustls::Error::Other(other) = tls {
        if let Some(pin) = other.0.downcast_ref::<PinError>() {
            return Some(anyhow::Error::new(pin.clone()));
        }
        if let Some(file) = other.0.downcast_ref::<PinFileError>() {
            return Some(anyhow::anyhow!(
                "cannot check the certificate of the agent at {base}: {file}"
            ));
        }
    }
    let hint = match tls {
        rustls::Error::InvalidCertificate(_) => {
            "; the certificate is not one a public CA vouches for: pin the agent's fingerprint \
             with `aloft context add NAME --url URL --fingerprint sha256:…` (printed by `aloft \
             agent --tls`)"
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "; is the agent serving TLS? An agent without --tls is reached at http://"
        }
        _ => "",
    };
    Some(anyhow::anyhow!(
        "the TLS handshake with the agent at {base} failed: {tls}{hint}"
    ))
}

/// The rustls error under reqwest's (through hyper's and the io::Error tokio-rustls wraps it in).
fn find_rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_defaults_to_443_and_keeps_ipv6_brackets() {
        assert_eq!(
            host_port("https://Agent.Example").unwrap(),
            "agent.example:443"
        );
        assert_eq!(host_port("https://[::1]:4280/x").unwrap(), "[::1]:4280");
        assert_eq!(host_port("https://10.0.0.1:1").unwrap(), "10.0.0.1:1");
        assert!(host_port("https://").is_err());
    }

    #[test]
    fn the_warning_names_agent_fingerprints_and_file() {
        let text = PinError::Changed {
            host_port: "a:1".into(),
            pinned: "sha256:aa".into(),
            presented: "sha256:bb".into(),
            file: "/h/known_agents".into(),
        }
        .to_string();
        for part in [
            "HAS CHANGED",
            "a:1",
            "sha256:aa",
            "sha256:bb",
            "/h/known_agents",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }
}
