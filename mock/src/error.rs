//! What can go wrong when a mock is configured or started. Everything here is bad input or an
//! environment problem found *before* the mock serves: once it runs, a request that matches
//! nothing is a miss (an answer), never an error.

use std::path::PathBuf;

use tapedeck_common::RuleError;
use tapedeck_storage::StorageError;

/// Why a mock could not be configured, started or stopped cleanly.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A dependency tape could not be opened, verified or read.
    #[error("dependency tape {path}: {source}")]
    Tape {
        /// The tape path (or URL) as given.
        path: PathBuf,
        /// What the storage layer said.
        #[source]
        source: StorageError,
    },
    /// No tape was given.
    #[error("no dependency tape given (--tape)")]
    NoTape,
    /// A `--fault` value or a fault in a faults file is not valid.
    #[error("fault `{fault}`: {message}")]
    Fault {
        /// The fault as written (or `FILE: fault #N`).
        fault: String,
        /// What is wrong, naming the offending key.
        message: String,
    },
    /// A faults file could not be read.
    #[error("faults file {path}: {source}")]
    FaultsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A faults file is not valid TOML of the expected shape (unknown keys included).
    #[error("faults file {path}: {source}")]
    FaultsToml {
        /// The file.
        path: PathBuf,
        /// The parser's error (it names the key and line).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An `--ignore` rule is neither a JSON path (`$.a.b`) nor a parameter (`?name`).
    #[error("ignore rule `{rule}`: {source}")]
    Ignore {
        /// The rule as written.
        rule: String,
        /// Why the JSON path was rejected.
        #[source]
        source: RuleError,
    },
    /// A setting has a value that is not allowed; the message names the setting.
    #[error("{setting}: {message}")]
    Invalid {
        /// The flag or config key, e.g. `--on-miss`.
        setting: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] tapedeck_common::net::BindError),
    /// The output tape could not be opened or closed.
    #[error("output tape {path}: {source}")]
    Out {
        /// The output tape.
        path: PathBuf,
        /// What the storage layer said.
        #[source]
        source: StorageError,
    },
    /// A thread or runtime could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What was being started.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl MockError {
    pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> MockError {
        MockError::Invalid {
            setting,
            message: message.into(),
        }
    }
}
