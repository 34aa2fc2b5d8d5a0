//! Errors of the differ. Every variant names what it is about (file, key, target).

use std::path::PathBuf;

use tapedeck_storage::StorageError;

/// What stopped a diff from producing a verdict (the CLI maps all of these to exit code 2).
///
/// Findings about the data — undecodable bodies, unpaired exchanges, corrupt rows skipped with
/// `skip_corrupt` — are never errors: they are part of the outcome.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A tape (the run or the baseline tape) could not be opened or read.
    #[error("reading the {what} tape: {source}")]
    Tape {
        /// Which input: `run` or `baseline tape`.
        what: &'static str,
        /// The storage error, which names the file.
        #[source]
        source: StorageError,
    },
    /// The rules file could not be read.
    #[error("rules file {}: {source}", path.display())]
    RulesRead {
        /// The rules file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The rules file is not valid TOML or has unknown keys or bad values.
    #[error("rules file {}: {source}", path.display())]
    RulesParse {
        /// The rules file.
        path: PathBuf,
        /// The parse error (names the key and line).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting or flag has a value that cannot work.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The flag or rules-file key, e.g. `settings.pass_score` or `--slo`.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The run holds no result rows for a target label that was asked for.
    #[error(
        "the run has no result rows for target {target:?} (targets found: {found}); check --baseline/--candidate/--noise"
    )]
    NoSuchTarget {
        /// The label asked for.
        target: String,
        /// The labels present in the run, comma-separated.
        found: String,
    },
    /// An output tape refused a record (its writer stopped).
    #[error("writing {what}: {reason}")]
    Output {
        /// Which output.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A report file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DiffError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        DiffError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
