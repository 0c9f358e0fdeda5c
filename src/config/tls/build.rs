//! rustls configurations built from the loaded material when the config loads: a
//! listener's server configuration with its certificate chooser (exact SAN, then `*.domain`
//! wildcard, else the first certificate), ALPN, minimum version and client verification;
//! a backend's client configuration; and a listener's whole TLS setting from certificates
//! held in memory (the Gateway API's Secrets). The data plane only hands these to
//! tokio-rustls; handshakes are its business.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use std::path::Path;

use super::{Fingerprint, LoadedCert, ServerTlsSpec, TlsVersion};

/// Chooses a certificate by the ClientHello's server name.
#[derive(Debug)]
pub struct CertChooser {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertChooser {
    pub fn new(certs: &[LoadedCert]) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in certs {
            for san in &cert.info.sans {
                // The first certificate to claim a name keeps it (config order).
                match san.strip_prefix("*.") {
                    Some(domain) => wildcard.entry(domain.to_string()),
                    None => exact.entry(san.clone()),
                }
                .or_insert_with(|| cert.key.clone());
            }
        }
        CertChooser {
            exact,
            wildcard,
            default: certs.first().map(|c| c.key.clone()),
        }
    }

    /// The certificate for `name` (any case; `None`: the client sent no SNI).
    pub fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        // A wildcard covers exactly one label (RFC 6125 §6.4.3).
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for CertChooser {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// A listener's server configuration. Fails only on settings rustls refuses.
pub fn server_config(
    certs: &[LoadedCert],
    min: TlsVersion,
    alpn: &[String],
    client_ca: Option<&Arc<rustls::RootCertStore>>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = super::provider();
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions(min))?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(CertChooser::new(certs)));
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Resumption stays rustls' default (an in-memory session cache and tickets), as with
    // HAProxy and nginx: a returning client skips the full handshake.
    Ok(Arc::new(config))
}

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::V12 => rustls::ALL_VERSIONS,
        TlsVersion::V13 => &TLS13_ONLY,
    }
}

/// A backend's client configuration; `alpn` is what the backend speaks.
pub fn client_config(
    roots: Arc<rustls::RootCertStore>,
    verify: bool,
    client_cert: Option<&Arc<CertifiedKey>>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = super::provider();
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(rustls::ALL_VERSIONS)?;
    let builder = if verify {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let mut config = match client_cert {
        Some(k) => builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(k.clone()))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `verify = false`: accepts any server certificate (signatures on the handshake are still
/// checked, so the session is at least bound to the key the server showed).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A certificate held in memory: a label for messages, the PEM chain, the PEM key.
pub type PemPair = (String, Vec<u8>, Vec<u8>);

/// A listener's TLS from certificates held in memory (a Kubernetes Secret's `tls.crt` and
/// `tls.key`, say), each named by `label` in errors and `show ssl cert`. The first is the
/// default; ALPN offers h2 and http/1.1. Expired certificates are refused, as in a file.
pub fn server_tls_from_pem(pairs: &[PemPair]) -> Result<ServerTlsSpec, String> {
    let mut print = xxhash_rust::xxh3::Xxh3Default::new();
    let mut certs = Vec::new();
    for (label, cert_pem, key_pem) in pairs {
        let name = Path::new(label);
        let chain = super::chain(name, cert_pem)?;
        let info = super::info(name, &chain[0])?;
        if info.not_after < super::now_unix() {
            return Err(format!("{label}: the certificate expired (serial {})", info.serial));
        }
        let key = super::certified(chain, super::key(name, key_pem)?, name, name)?;
        print.update(label.as_bytes());
        print.update(cert_pem);
        print.update(key_pem);
        certs.push(LoadedCert {
            cert_file: name.to_path_buf(),
            key_file: name.to_path_buf(),
            key,
            info,
        });
    }
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    let alpn = vec!["h2".to_string(), "http/1.1".to_string()];
    let config = server_config(&certs, TlsVersion::V12, &alpn, None).map_err(|e| e.to_string())?;
    Ok(ServerTlsSpec {
        certs,
        min_version: TlsVersion::V12,
        alpn,
        client_ca: None,
        fingerprint: Fingerprint(print.digest()),
        files: Vec::new(),
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_covers_one_label_only() -> Result<(), Box<dyn std::error::Error>> {
        let mut c = CertChooser {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        // One signing key for all three: the chooser tells them apart by their "chain".
        let der = rcgen::KeyPair::generate()?.serialize_der();
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&rustls_pki_types::PrivateKeyDer::Pkcs8(der.into()))?;
        let key = |n: u8| Arc::new(CertifiedKey::new(vec![vec![n].into()], signing.clone()));
        c.exact.insert("shop.example.com".into(), key(1));
        c.wildcard.insert("example.com".into(), key(2));
        c.default = Some(key(3));
        let pick = |n: Option<&str>| c.choose(n).map(|k| k.cert[0].as_ref()[0]);
        assert_eq!(pick(Some("SHOP.example.com.")), Some(1));
        assert_eq!(pick(Some("api.example.com")), Some(2));
        assert_eq!(pick(Some("a.b.example.com")), Some(3));
        assert_eq!(pick(Some("example.com")), Some(3));
        assert_eq!(pick(None), Some(3));
        Ok(())
    }
}
