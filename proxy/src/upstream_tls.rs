//! TLS to an `https://` upstream beyond the system roots: a private CA bundle
//! (`upstream-ca`), a client certificate for mutual TLS (`upstream-client-cert` +
//! `upstream-client-key`), the server name to send and verify (`upstream-sni`), and, for tests
//! only, no verification at all (`upstream-insecure`).
//!
//! Everything is read and checked once, at start-up, by [`UpstreamTlsKeys::load`]: a missing
//! file, a file without PEM certificates, a certificate that does not parse, a key that does not
//! match its certificate, an empty or malformed server name, or any of these keys next to an
//! `http://` upstream is a [`ConfigError`] naming the key (exit code 2). The request path only
//! clones `Arc`s: the hyper engine builds one rustls client configuration at start
//! ([`UpstreamTls::client_tls`]); the pingora engine puts these settings into its peer once and
//! builds a configuration when it opens a connection (connections are pooled).
//!
//! Semantics, as in curl and nginx:
//! - `upstream-ca` *replaces* the system roots for this upstream (only these CAs are trusted);
//! - the name verified against the upstream's certificate is the SNI: `upstream-sni` when set,
//!   else the upstream URL's host (an IP address is verified against the certificate's IP SANs);
//! - `upstream-insecure` accepts any certificate and is logged as a warning at start-up.

use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, ServerName};
use tapedeck_common::tls::{ClientTls, Identity, TlsError, Trust};

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

/// How the proxy speaks TLS to an `https://` upstream, checked. The default is: system roots,
/// no client certificate, SNI = the upstream's host, verification on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trust only these CA certificates instead of the system roots.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// Present this certificate when the upstream asks for one (mutual TLS).
    pub client_cert: Option<Identity>,
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
            Some(path) => match Trust::from_ca_file(path, false) {
                Ok(Trust::Only(certs)) => Some(certs),
                Ok(_) => None,
                Err(e) => return Err(invalid("upstream-ca", e.to_string())),
            },
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
            (Some(cert), Some(key)) => Some(Identity::load(cert, key).map_err(|e| {
                let key = match e {
                    TlsError::NoKey { .. } | TlsError::Mismatch { .. } => "upstream-client-key",
                    TlsError::Read { ref path, .. } if path == key => "upstream-client-key",
                    _ => "upstream-client-cert",
                };
                invalid(key, e.to_string())
            })
            .and_then(|id| {
                // pingora rebuilds the key from bare DER by guessing its format (and panics if
                // it cannot).
                let der = id.key().secret_der().to_vec();
                match rustls::pki_types::PrivateKeyDer::try_from(der) {
                    Ok(_) => Ok(id),
                    Err(_) => Err(invalid(
                        "upstream-client-key",
                        format!(
                            "unsupported private key format in {} (use PKCS#8, SEC1 or PKCS#1)",
                            key.display()
                        ),
                    )),
                }
            })?),
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

impl UpstreamTls {
    /// The rustls client configuration for this upstream, offering `alpn`.
    pub fn client_tls(&self, alpn: &[&[u8]]) -> ClientTls {
        ClientTls {
            trust: if self.insecure {
                Trust::AnyCertificate
            } else {
                match &self.ca {
                    Some(ca) => Trust::Only(ca.clone()),
                    None => Trust::System,
                }
            },
            identity: self.client_cert.clone(),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        }
    }

    /// The name sent as SNI and verified against the upstream's certificate.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.sni.as_deref().unwrap_or(host).to_owned();
        ServerName::try_from(name).map_err(|e| TlsError::Setup(format!("server name: {e}")))
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
        assert_eq!(
            s.upstream
                .as_ref()
                .expect("upstream")
                .tls_options
                .sni
                .as_deref(),
            Some("api.internal")
        );
        assert!(s.upstream_verify && !s.upstream.as_ref().expect("upstream").tls_options.insecure);
        let s = crate::RawConfig::from_toml(
            "upstream = \"https://127.0.0.1:8443\"\ntape = \"/tmp/t\"\nupstream-insecure = true\n",
        )
        .expect("parses")
        .validate()
        .expect("valid");
        assert!(!s.upstream_verify && s.upstream.as_ref().expect("upstream").tls_options.insecure);
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
        assert!(e.to_string().contains("upstream-ca"), "{e}");
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
        assert_eq!(
            ok.server_name("127.0.0.1").expect("name"),
            ServerName::try_from("api.internal").expect("name")
        );
    }
}
