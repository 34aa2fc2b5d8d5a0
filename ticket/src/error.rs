//! What can go wrong making or delivering a ticket.

use std::path::PathBuf;

use tapedeck_common::redact::RuleError;
use tapedeck_common::tls::TlsError;
use tapedeck_storage::StorageError;

/// Why a ticket bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// A file or directory could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`reading`, `writing`, `creating`…).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `verdict.json` is not one tapedeck can read.
    #[error("{} is not a verdict.json tapedeck can read", path.display())]
    Verdict {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `verdict.json` has a schema version this build does not read.
    #[error("{}: schema_version {found} is not supported (this tapedeck reads version 1)", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// Its `schema_version`.
        found: u32,
    },
    /// The replay run the report judged could not be read.
    #[error("reading run {}", run.display())]
    Run {
        /// The run directory.
        run: PathBuf,
        /// The cause.
        #[source]
        source: StorageError,
    },
    /// The run given with `--run` does not exist.
    #[error("run {} does not exist", .0.display())]
    NoRun(PathBuf),
    /// The bundle's `tape/` exists but is not part of an earlier bundle (never replaced).
    #[error("{} exists and is not part of a ticket bundle: choose another --out", .0.display())]
    NotABundle(PathBuf),
    /// The bundle's tape could not be written.
    #[error("writing the ticket tape {}", tape.display())]
    Tape {
        /// The tape directory.
        tape: PathBuf,
        /// The cause.
        #[source]
        source: StorageError,
    },
    /// The bundle's tape lost exchanges (the writer refused or dropped them).
    #[error("the ticket tape {} lost {lost} exchanges", tape.display())]
    Lost {
        /// The tape directory.
        tape: PathBuf,
        /// How many.
        lost: u64,
    },
    /// A redaction rule is invalid.
    #[error("--{}", .0.key())]
    Redact(#[source] RuleError),
}

/// Why `--post` did not deliver the ticket.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// A `--post-header` is malformed or names an unset environment variable.
    #[error("--post-header {spec:?}: {reason}")]
    Header {
        /// The header as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The `--post-ca-cert` file cannot be used.
    #[error("--post-ca-cert")]
    CaCert(#[source] TlsError),
    /// No TLS trust could be set up.
    #[error("TLS for --post (give --post-ca-cert)")]
    Tls(#[source] TlsError),
    /// The webhook could not be reached or did not accept the ticket.
    #[error("--post {url}: {reason}")]
    Post {
        /// The webhook URL.
        url: String,
        /// What happened.
        reason: String,
    },
}
