//! TLS material the config names, read and checked when the config is: certificate chains
//! and private keys (PEM; PKCS#8, RSA or SEC1 keys, through rustls-pki-types), CA bundles,
//! and the facts `show ssl cert` and the expiry metric report. A file that cannot be read
//! or parsed, a key that does not match its certificate, or an expired certificate fails the
//! config like any other error, anchored at the key that names the file; so `veer check`
//! catches it and a reload that would serve a broken certificate is refused.
//!
//! The material compares by the bytes of its files ([`Fingerprint`]), so a reload with an
//! unchanged config but a renewed certificate is a change (hot certificates). The rustls
//! configurations are built here too (`build`), so what loads is what serves.

pub mod build;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// XXH3 of the contents of every file a TLS setting read: equal fingerprints, equal material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint(pub u64);

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

/// `[listener.tls]`, loaded.
#[derive(Clone)]
pub struct ServerTlsSpec {
    /// In config order; the first is the default (no SNI, or no name matches).
    pub certs: Vec<LoadedCert>,
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<String>,
    /// Client certificates must chain to these (mTLS).
    pub client_ca: Option<Arc<rustls::RootCertStore>>,
    pub fingerprint: Fingerprint,
    /// Every file read (watched: a change reloads).
    pub files: Vec<PathBuf>,
    /// What new handshakes use.
    pub config: Arc<rustls::ServerConfig>,
}

/// One certificate chain with its key, and what is known about it.
#[derive(Clone)]
pub struct LoadedCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// What `show ssl cert` and `veer_tls_cert_not_after_seconds` report about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names (lowercase) from the subjectAltName extension; the subject's CN when the
    /// certificate has none.
    pub sans: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex, colon-separated (as `openssl x509 -serial` prints, HAProxy's `Serial:`).
    pub serial: String,
    pub subject: String,
    pub issuer: String,
}

/// A backend's `tls`, loaded.
#[derive(Clone)]
pub struct UpstreamTlsSpec {
    pub roots: Arc<rustls::RootCertStore>,
    /// Sent as SNI and verified; `None`: the server's IP address.
    pub sni: Option<String>,
    pub verify: bool,
    /// A client certificate, for servers that require one.
    pub client_cert: Option<Arc<CertifiedKey>>,
    pub fingerprint: Fingerprint,
    /// Every file read (watched: a change reloads).
    pub files: Vec<PathBuf>,
    /// What new upstream connections use (ALPN for the backend's protocol).
    pub config: Arc<rustls::ClientConfig>,
}

impl PartialEq for ServerTlsSpec {
    fn eq(&self, o: &Self) -> bool {
        self.fingerprint == o.fingerprint
            && self.min_version == o.min_version
            && self.alpn == o.alpn
            && self.certs.len() == o.certs.len()
            && self
                .certs
                .iter()
                .zip(&o.certs)
                .all(|(a, b)| a.cert_file == b.cert_file && a.key_file == b.key_file)
            && self.client_ca.is_some() == o.client_ca.is_some()
    }
}

impl PartialEq for UpstreamTlsSpec {
    fn eq(&self, o: &Self) -> bool {
        self.fingerprint == o.fingerprint
            && self.sni == o.sni
            && self.verify == o.verify
            && self.client_cert.is_some() == o.client_cert.is_some()
    }
}

impl std::fmt::Debug for ServerTlsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTlsSpec")
            .field("certs", &self.certs.iter().map(|c| &c.cert_file).collect::<Vec<_>>())
            .field("min_version", &self.min_version)
            .field("alpn", &self.alpn)
            .field("mtls", &self.client_ca.is_some())
            .finish()
    }
}

impl std::fmt::Debug for UpstreamTlsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsSpec")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

/// The crypto provider every TLS setting is built with (ring: see the TLS note in README).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a TLS setting has read: every file (watched for hot reloads) and its bytes' hash.
#[derive(Default)]
pub(crate) struct Reads {
    print: xxhash_rust::xxh3::Xxh3Default,
    pub(crate) files: Vec<PathBuf>,
}

impl Reads {
    /// Reads a file named in the config (already resolved against the config's directory).
    pub(crate) fn read(&mut self, path: &Path) -> Result<Vec<u8>, String> {
        self.files.push(path.to_path_buf());
        let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        self.print.update(path.as_os_str().as_encoded_bytes());
        self.print.update(&bytes);
        Ok(bytes)
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.print.digest())
    }
}

/// A PEM certificate chain, leaf first.
pub(super) fn chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// A PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub(super) fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!("{}: no private key in the file", path.display()),
        e => format!("{}: not a PEM private key: {e}", path.display()),
    })
}

/// The chain and key as rustls signs with them; fails on a key type rustls cannot use or a
/// key that is not the certificate's.
pub(super) fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<CertifiedKey>, String> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(format!(
            "{}: the private key does not match the certificate in {}",
            key_file.display(),
            cert_file.display()
        )),
        Err(e) => Err(format!("{}: {e}", cert_file.display())),
    }
}

/// The facts about a leaf certificate.
pub fn info(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("{}: cannot parse the certificate: {e}", path.display()))?;
    let mut sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if sans.is_empty() {
        sans.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(CertInfo {
        sans,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().to_ascii_uppercase(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
    })
}

/// A PEM CA bundle as a root store.
pub(super) fn roots(path: &Path, pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in chain(path, pem)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// The CA certificates of a PEM file.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    roots(path, &pem)
}

/// The web PKI roots (webpki-roots), for upstream TLS without a `ca`.
pub(super) fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
