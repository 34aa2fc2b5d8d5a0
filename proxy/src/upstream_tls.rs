//! TLS to an `https://` upstream beyond the system roots: a private CA bundle
//! (`upstream-ca`), a client certificate for mutual TLS (`upstream-client-cert` +
//! `upstream-client-key`), the server name to send and verify (`upstream-sni`), and, for tests
//! only, no verification at all (`upstream-insecure`).
//!
//! Everything is read and checked once, at start-up, by [`UpstreamTlsKeys::load`]: a missing
//! file, a file without PEM certificates, a certificate that does not parse, a key that does not
//! match its certificate, an empty or malformed server name, or any of these keys next to an
//! `http://` upstream is a [`ConfigError`] naming the key (exit code 2). The request path only
//! clones `Arc`s ([`UpstreamTls::apply`] runs once, when the proxy is built), and pingora builds
//! the per-peer rustls configuration when it opens a connection (connections are pooled).
//!
//! Semantics, as in curl and nginx:
//! - `upstream-ca` *replaces* the system roots for this upstream (only these CAs are trusted);
//! - the name verified against the upstream's certificate is the SNI: `upstream-sni` when set,
//!   else the upstream URL's host (an IP address is verified against the certificate's IP SANs);
//! - `upstream-insecure` accepts any certificate and is logged as a warning at start-up.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::prelude::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509, parse_x509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::ConfigError;

/// The TLS keys of the configuration, as written.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsKeys {
    /// `upstream-ca`.
    pub ca: Option<PathBuf>,
    /// `upstream-client-cert`.
    pub client_cert: Option<PathBuf>,
    /// `upstream-client-key`.
    pub client_key: Option<PathBuf>,
    /// `upstream-sni`.
    pub sni: Option<String>,
    /// `upstream-insecure`.
    pub insecure: Option<bool>,
    /// `upstream-verify` (the older spelling: `false` is `upstream-insecure = true`).
    pub verify: Option<bool>,
}

/// A client certificate chain and its private key, checked to belong together.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// DER private key (PKCS#8, SEC1 or PKCS#1).
    key: Vec<u8>,
    /// Where the certificate came from (for logs).
    pub cert_path: PathBuf,
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("ClientCert")
            .field("cert_path", &self.cert_path)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// How the proxy speaks TLS to an `https://` upstream, checked. The default is: system roots,
/// no client certificate, SNI = the upstream's host, verification on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trust only these CA certificates (DER) instead of the system roots.
    pub ca: Option<Vec<Vec<u8>>>,
    /// Present this certificate when the upstream asks for one (mutual TLS).
    pub client_cert: Option<ClientCert>,
    /// Send and verify this server name instead of the upstream's host.
    pub sni: Option<String>,
    /// Do not verify the upstream's certificate at all.
    pub insecure: bool,
}

fn invalid(key: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { key, message }
}

impl UpstreamTlsKeys {
    /// Reads and checks every file and value. `https` says whether the upstream is `https://`;
    /// the TLS keys are refused next to an `http://` upstream (they would silently do nothing).
    pub fn load(self, https: bool) -> Result<UpstreamTls, ConfigError> {
        if !https {
            let set = [
                ("upstream-ca", self.ca.is_some()),
                ("upstream-client-cert", self.client_cert.is_some()),
                ("upstream-client-key", self.client_key.is_some()),
                ("upstream-sni", self.sni.is_some()),
                ("upstream-insecure", self.insecure == Some(true)),
            ];
            if let Some((key, _)) = set.iter().find(|(_, s)| *s) {
                return Err(invalid(
                    key,
                    "only applies to an https:// upstream; use https://host:port or drop the key"
                        .to_owned(),
                ));
            }
            return Ok(UpstreamTls::default());
        }
        let insecure = match (self.insecure, self.verify) {
            (Some(true), Some(true)) => {
                return Err(invalid(
                    "upstream-insecure",
                    "conflicts with `upstream-verify = true`; keep one of them".to_owned(),
                ));
            }
            (i, v) => i == Some(true) || v == Some(false),
        };
        if insecure && self.ca.is_some() {
            return Err(invalid(
                "upstream-insecure",
                "conflicts with `upstream-ca`: a CA to verify against and no verification; \
                 drop one of them"
                    .to_owned(),
            ));
        }
        let ca = match &self.ca {
            None => None,
            Some(path) => {
                let certs = read_certs("upstream-ca", path)?;
                let mut store = rustls::RootCertStore::empty();
                for (i, c) in certs.iter().enumerate() {
                    store.add(CertificateDer::from(c.as_slice())).map_err(|e| {
                        invalid(
                            "upstream-ca",
                            format!(
                                "certificate #{} in {} is not usable as a CA: {e}",
                                i + 1,
                                path.display()
                            ),
                        )
                    })?;
                }
                Some(certs)
            }
        };
        let client_cert = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    key: "upstream-client-key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    key: "upstream-client-cert",
                });
            }
            (Some(cert), Some(key)) => Some(load_client_cert(cert, key)?),
        };
        let sni = match self.sni {
            None => None,
            Some(s) => {
                let s = s.trim().to_owned();
                // pingora turns verification off for an empty SNI: never let that happen.
                if s.is_empty() || ServerName::try_from(s.as_str()).is_err() {
                    return Err(invalid(
                        "upstream-sni",
                        format!("`{s}` is not a server name (e.g. api.internal)"),
                    ));
                }
                Some(s)
            }
        };
        Ok(UpstreamTls {
            ca,
            client_cert,
            sni,
            insecure,
        })
    }
}

/// The DER certificates of a PEM file; at least one, each parseable.
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let c = c.map_err(|e| {
            invalid(
                key,
                format!("bad PEM certificate #{} in {}: {e}", i + 1, path.display()),
            )
        })?;
        // pingora parses these with x509-parser and panics on failure: check here instead.
        if let Err(e) = x509_parser::parse_x509_certificate(&c) {
            return Err(invalid(
                key,
                format!(
                    "certificate #{} in {} does not parse: {e}",
                    i + 1,
                    path.display()
                ),
            ));
        }
        out.push(c.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(invalid(
            key,
            format!(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in {}",
                path.display()
            ),
        ));
    }
    Ok(out)
}

fn load_client_cert(cert: &Path, key: &Path) -> Result<ClientCert, ConfigError> {
    let chain = read_certs("upstream-client-cert", cert)?;
    let pem = std::fs::read(key).map_err(|e| {
        invalid(
            "upstream-client-key",
            format!("cannot read {}: {e}", key.display()),
        )
    })?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            "upstream-client-key",
            format!("no usable PEM private key in {}: {e}", key.display()),
        )
    })?;
    let key_bytes = der.secret_der().to_vec();
    // pingora rebuilds the key from bare DER by guessing its format (and panics if it cannot).
    if PrivateKeyDer::try_from(key_bytes.clone()).is_err() {
        return Err(invalid(
            "upstream-client-key",
            format!(
                "unsupported private key format in {} (use PKCS#8, SEC1 or PKCS#1)",
                key.display()
            ),
        ));
    }
    // Build a client configuration once: rustls checks the key type and that it matches the
    // certificate.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("upstream-client-cert", e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(
            chain
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect(),
            der,
        )
        .map_err(|e| {
            invalid(
                "upstream-client-key",
                format!("{} does not go with {}: {e}", key.display(), cert.display()),
            )
        })?;
    Ok(ClientCert {
        chain,
        key: key_bytes,
        cert_path: cert.to_owned(),
    })
}

impl UpstreamTls {
    /// Sets the peer's server name, trust, client certificate and verification. Runs once, when
    /// the proxy is built; per request the peer is cloned (`Arc`s).
    pub fn apply(&self, peer: &mut HttpPeer) {
        if let Some(sni) = &self.sni {
            peer.sni = sni.clone();
        }
        if let Some(ca) = &self.ca {
            let certs: Vec<WrappedX509> = ca
                .iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect();
            peer.options.ca = Some(Arc::from(certs));
        }
        if let Some(c) = &self.client_cert {
            peer.client_cert_key = Some(Arc::new(CertKey::new(c.chain.clone(), c.key.clone())));
        }
        peer.options.verify_cert = !self.insecure;
        peer.options.verify_hostname = !self.insecure;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_reach_the_settings() {
        let s = crate::RawConfig::from_toml(
            "upstream = \"https://127.0.0.1:8443\"\ntape = \"/tmp/t\"\n\
             upstream-sni = \"api.internal\"\n",
        )
        .expect("parses")
        .validate()
        .expect("valid");
        assert_eq!(s.upstream.tls_options.sni.as_deref(), Some("api.internal"));
        assert!(s.upstream_verify && !s.upstream.tls_options.insecure);
        let s = crate::RawConfig::from_toml(
            "upstream = \"https://127.0.0.1:8443\"\ntape = \"/tmp/t\"\nupstream-insecure = true\n",
        )
        .expect("parses")
        .validate()
        .expect("valid");
        assert!(!s.upstream_verify && s.upstream.tls_options.insecure);
        let e = crate::RawConfig::from_toml(
            "upstream = \"https://127.0.0.1:8443\"\nupstream-ca = \"/nonexistent/ca.pem\"\n\
             tape = \"/tmp/t\"\n",
        )
        .expect("parses")
        .validate()
        .expect_err("missing CA file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn keys_need_an_https_upstream() {
        let keys = UpstreamTlsKeys {
            sni: Some("api.internal".into()),
            ..Default::default()
        };
        let e = keys.load(false).expect_err("http upstream");
        assert!(e.to_string().contains("upstream-sni"), "{e}");
        // The older key stays accepted (and ignored) for http:// upstreams.
        let old = UpstreamTlsKeys {
            verify: Some(false),
            ..Default::default()
        };
        assert_eq!(old.load(false).expect("ok"), UpstreamTls::default());
    }

    #[test]
    fn insecure_spellings_and_conflicts() {
        let t = UpstreamTlsKeys {
            verify: Some(false),
            ..Default::default()
        }
        .load(true)
        .expect("ok");
        assert!(t.insecure);
        let e = UpstreamTlsKeys {
            insecure: Some(true),
            verify: Some(true),
            ..Default::default()
        }
        .load(true)
        .expect_err("conflict");
        assert!(e.to_string().contains("upstream-verify"), "{e}");
        let e = UpstreamTlsKeys {
            insecure: Some(true),
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        }
        .load(true)
        .expect_err("conflict");
        assert!(e.to_string().contains("upstream-ca"), "{e}");
    }

    #[test]
    fn bad_files_and_names_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let e = UpstreamTlsKeys {
            ca: Some(missing.clone()),
            ..Default::default()
        }
        .load(true)
        .expect_err("missing file");
        assert!(
            e.to_string().contains("upstream-ca") && e.to_string().contains("missing.pem"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let e = UpstreamTlsKeys {
            ca: Some(junk.clone()),
            ..Default::default()
        }
        .load(true)
        .expect_err("no PEM");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        // PEM armour around bytes that are not a certificate.
        let fake = dir.path().join("fake.pem");
        std::fs::write(
            &fake,
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = UpstreamTlsKeys {
            ca: Some(fake),
            ..Default::default()
        }
        .load(true)
        .expect_err("bad DER");
        assert!(e.to_string().contains("does not parse"), "{e}");
        let e = UpstreamTlsKeys {
            client_cert: Some(junk),
            ..Default::default()
        }
        .load(true)
        .expect_err("no key");
        assert!(e.to_string().contains("upstream-client-key"), "{e}");
        for bad in ["", "  ", "bad name!"] {
            let e = UpstreamTlsKeys {
                sni: Some(bad.into()),
                ..Default::default()
            }
            .load(true)
            .expect_err("bad sni");
            assert!(e.to_string().contains("upstream-sni"), "{e}");
        }
        let ok = UpstreamTlsKeys {
            sni: Some("api.internal".into()),
            ..Default::default()
        }
        .load(true)
        .expect("ok");
        let mut peer = HttpPeer::new("127.0.0.1:1", true, "127.0.0.1".into());
        ok.apply(&mut peer);
        assert_eq!(peer.sni, "api.internal");
        assert!(peer.options.verify_cert);
    }
}
