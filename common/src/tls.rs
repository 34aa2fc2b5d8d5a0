//! rustls set-up, once for every part of tapedeck: reading and checking PEM files, trust roots,
//! client configurations (the recorder's upstream, replay targets, ticket webhooks) and server
//! configurations (the recorder's TLS listener).
//!
//! Everything that reads a file checks it completely when it is read, so that a bad file is an
//! error at start-up naming the file, never a failure (or a panic inside a dependency) on the
//! first connection: every certificate must parse as X.509, a private key must be PKCS#8, SEC1 or
//! PKCS#1, and a key must belong to its certificate ([`Identity::load`]).
//!
//! Every configuration names the `ring` provider explicitly ([`provider`]): other dependencies
//! link a second provider, and rustls refuses to guess between two.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// ALPN identifiers: HTTP/2 and HTTP/1.1, in order of preference.
pub const ALPN_H2_HTTP1: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a TLS file or configuration was refused. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("no PEM certificate (-----BEGIN CERTIFICATE-----) in {path}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate that is not valid PEM or does not parse as X.509.
    #[error("certificate #{index} in {path} does not parse: {message}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A certificate that cannot be used as a trust anchor.
    #[error("certificate #{index} in {path} is not usable as a CA: {message}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The file holds no private key rustls can use.
    #[error("no usable PEM private key in {path} (PKCS#8, SEC1 or PKCS#1): {message}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key does not belong to the certificate (or is of a type rustls cannot sign with).
    #[error("{key} does not go with {cert}: {message}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        message: String,
    },
    /// No usable CA certificate on this system (and none given).
    #[error("no usable system CA certificates; give a CA file")]
    NoSystemRoots,
    /// rustls refused the configuration.
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// The crypto provider of every configuration made here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file: at least one, each valid X.509.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let mut out = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let bad = |message: String| TlsError::BadCertificate {
            path: path.to_owned(),
            index: i + 1,
            message,
        };
        let c = c.map_err(|e| bad(e.to_string()))?;
        x509_parser::parse_x509_certificate(&c).map_err(|e| bad(e.to_string()))?;
        out.push(c);
    }
    if out.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// The first private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// A root store of the certificates of a PEM file, each checked to be usable as a CA.
pub fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    add_cas(&mut store, path, &read_certs(path)?)?;
    Ok(store)
}

fn add_cas(
    store: &mut RootCertStore,
    path: &Path,
    certs: &[CertificateDer<'static>],
) -> Result<(), TlsError> {
    for (i, c) in certs.iter().enumerate() {
        store.add(c.clone()).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            index: i + 1,
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// The system's CA certificates (those that parse; an unreadable store is empty).
pub fn system_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    if let Ok(native) = rustls_native_certs::load_native_certs() {
        let _ = store.add_parsable_certificates(native);
    }
    store
}

/// A certificate chain and its private key, checked to belong together.
#[derive(Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    cert_path: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("cert_path", &self.cert_path)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain
            && self.key.secret_der() == other.key.secret_der()
            && self.cert_path == other.cert_path
    }
}

impl Eq for Identity {}

impl Identity {
    /// Reads a PEM certificate chain (leaf first) and its private key, and checks that the key
    /// is of a type rustls signs with and belongs to the leaf certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = read_certs(cert)?;
        let der = read_private_key(key)?;
        CertifiedKey::from_der(chain.clone(), der.clone_key(), &provider()).map_err(|e| {
            TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
                message: e.to_string(),
            }
        })?;
        Ok(Identity {
            chain,
            key: Arc::new(der),
            cert_path: cert.to_owned(),
        })
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// Where the certificate came from (for logs).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

/// Which server certificates a client accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's CA certificates.
    #[default]
    System,
    /// The system's CA certificates and these (replay's `--ca-cert`).
    SystemAnd(Vec<CertificateDer<'static>>),
    /// Only these CA certificates (the recorder's `--upstream-ca`, curl's `--cacert`).
    Only(Vec<CertificateDer<'static>>),
    /// Any certificate at all: for tests only (the caller logs a warning).
    AnyCertificate,
}

impl Trust {
    /// [`Trust::SystemAnd`] or [`Trust::Only`] the CAs of a PEM file, each checked.
    pub fn from_ca_file(path: &Path, with_system: bool) -> Result<Trust, TlsError> {
        let certs = read_certs(path)?;
        add_cas(&mut RootCertStore::empty(), path, &certs)?;
        Ok(if with_system {
            Trust::SystemAnd(certs)
        } else {
            Trust::Only(certs)
        })
    }
}

/// How a client speaks TLS: whom it trusts, which certificate it presents, which protocols it
/// offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Which server certificates are accepted.
    pub trust: Trust,
    /// A client certificate for servers that ask for one (mutual TLS).
    pub identity: Option<Identity>,
    /// ALPN protocols offered, in order of preference (empty: none).
    pub alpn: Vec<Vec<u8>>,
}

impl ClientTls {
    /// Builds the rustls configuration.
    pub fn config(&self) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match &self.trust {
            Trust::AnyCertificate => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider()))),
            trust => {
                let mut roots = match trust {
                    Trust::Only(_) => RootCertStore::empty(),
                    _ => system_roots(),
                };
                if let Trust::SystemAnd(certs) | Trust::Only(certs) = trust {
                    for c in certs {
                        roots
                            .add(c.clone())
                            .map_err(|e| TlsError::Setup(e.to_string()))?;
                    }
                }
                if roots.is_empty() {
                    return Err(TlsError::NoSystemRoots);
                }
                builder.with_root_certificates(roots)
            }
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| TlsError::Setup(e.to_string()))?,
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }
}

/// A server configuration presenting `identity`, offering `alpn` (e.g. [`ALPN_H2_HTTP1`]), with
/// rustls' default in-memory session cache and stateless tickets for resumption.
pub fn server_config(identity: &Identity, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsError::Setup(format!("session tickets: {e}")))?;
    Ok(config)
}

/// A verifier that accepts every certificate but still checks handshake signatures
/// ([`Trust::AnyCertificate`]).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed certificate and key for `localhost` made with the `openssl` program (as the
    /// end-to-end tests do), plus a second key that does not belong to it.
    fn certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (cert, key, other) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("other.key"),
        );
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (tests need it)");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let ok = Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-out"])
            .arg(&other)
            .output()
            .expect("run openssl");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        (cert, key, other)
    }

    #[test]
    fn identities_are_checked_when_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key, other) = certs(dir.path());
        let id = Identity::load(&cert, &key).expect("matching pair");
        assert_eq!(id.chain().len(), 1);
        assert!(
            !format!("{id:?}").contains("secret"),
            "no key material in Debug"
        );
        let server = server_config(&id, &ALPN_H2_HTTP1).expect("server config");
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        let e = Identity::load(&cert, &other).expect_err("mismatched key");
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("other.key") && text.contains("cert.pem"),
            "{text}"
        );

        // The certificate given as the key, a junk file, a missing file.
        let e = Identity::load(&cert, &cert).expect_err("cert as key");
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not PEM at all\n").expect("write");
        let e = Identity::load(&junk, &key).expect_err("junk cert");
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let e = Identity::load(&dir.path().join("missing.pem"), &key).expect_err("missing");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        // PEM armour around bytes that are not a certificate.
        let fake = dir.path().join("fake.pem");
        std::fs::write(
            &fake,
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = read_certs(&fake).expect_err("bad DER");
        assert!(
            matches!(e, TlsError::BadCertificate { index: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn client_configs_trust_what_they_are_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key, _) = certs(dir.path());
        let only = Trust::from_ca_file(&cert, false).expect("ca");
        assert!(matches!(&only, Trust::Only(c) if c.len() == 1));
        let tls = ClientTls {
            trust: only,
            identity: Some(Identity::load(&cert, &key).expect("id")),
            alpn: vec![b"h2".to_vec()],
        };
        let config = tls.config().expect("client config");
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
        let any = ClientTls {
            trust: Trust::AnyCertificate,
            ..ClientTls::default()
        };
        any.config().expect("insecure config");
        let e = Trust::from_ca_file(&dir.path().join("nope.pem"), true).expect_err("missing");
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
    }
}
