//! TLS to `https://` targets: the rustls client configuration (the shared set-up of
//! `tapedeck-common`), with ALPN offering `h2` and `http/1.1` (or only `h2`); the connection code
//! (`conn.rs`) speaks HTTP/2 on a connection whose server picked `h2`.

use rustls::ClientConfig;
use tapedeck_common::tls::{ALPN_H2_HTTP1, ClientTls, TlsError, Trust};

/// How TLS targets are verified.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    /// Extra trusted CA certificates (PEM file), on top of the system's.
    pub(crate) ca_cert: Option<std::path::PathBuf>,
    /// Accept any certificate (test environments only).
    pub(crate) insecure: bool,
    /// Offer only `h2` in ALPN.
    pub(crate) h2_only: bool,
}

/// Builds the rustls client configuration: the system roots plus `ca_cert`, or no verification.
pub(crate) fn client_config(s: &TlsSettings) -> Result<ClientConfig, TlsError> {
    let trust = match (&s.ca_cert, s.insecure) {
        (_, true) => Trust::AnyCertificate,
        (Some(path), false) => Trust::from_ca_file(path, true)?,
        (None, false) => Trust::System,
    };
    let alpn: &[&[u8]] = if s.h2_only { &[b"h2"] } else { &ALPN_H2_HTTP1 };
    ClientTls {
        trust,
        identity: None,
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
    }
    .config()
}
