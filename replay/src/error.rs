//! Errors of the replay engine. A misbehaving *target* is never an error here: its failures are
//! recorded per exchange. These are the reasons a replay cannot start or cannot finish.

use std::path::PathBuf;

/// Why a replay could not be configured, started or completed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A setting is invalid; the message names the setting and the fix.
    #[error("invalid setting `{setting}`: {reason}")]
    Config {
        /// The flag or config key, e.g. `target`.
        setting: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A target points at the host the tape was recorded from (production protection).
    #[error(
        "target `{target}` ({authority}) is the host the tape was recorded from; \
         replaying against it could mutate production. Pass --allow-same-host if you mean it"
    )]
    SameHost {
        /// Target label.
        target: String,
        /// The authority they share.
        authority: String,
    },
    /// The input tape could not be opened or read.
    #[error("reading tape {}: {source}", path.display())]
    Tape {
        /// The tape path (first path when several were given).
        path: PathBuf,
        /// The storage error, which names the file.
        #[source]
        source: tapedeck_storage::StorageError,
    },
    /// The output tape could not be opened or closed.
    #[error("writing results to {}: {source}", path.display())]
    Output {
        /// The output tape directory.
        path: PathBuf,
        /// The storage error.
        #[source]
        source: tapedeck_storage::StorageError,
    },
    /// `strict_credentials`: selected requests would carry redaction placeholders instead of
    /// credentials (nothing was sent).
    #[error(
        "--strict-credentials: the tape's requests carry the redaction placeholder the recorder \
         wrote instead of a credential (requests by header: {found}) and nothing replaces it; \
         nothing was sent. Set real values with {fix} (or drop them with --drop-header NAME)"
    )]
    RedactedCredentials {
        /// `authorization 400, x-api-key 400`.
        found: String,
        /// The `--set-header` flags that fix it.
        fix: String,
    },
    /// The output tape already holds results (or, for a URL, an earlier run's leftovers in its
    /// local spool directory) and `append` was not asked for: two runs are never mixed.
    #[error(
        "{source}; a replay never mixes two runs in one output: choose a new --out (or remove \
         what is there), or pass --append to add to it on purpose"
    )]
    OutputNotEmpty {
        /// The output tape directory or URL.
        path: PathBuf,
        /// [`tapedeck_storage::StorageError::NotEmpty`], naming what is there.
        #[source]
        source: tapedeck_storage::StorageError,
    },
    /// Results were lost on the way to the output tape (the writer failed).
    #[error("{lost} result exchanges could not be written to {}", path.display())]
    ResultsLost {
        /// The output tape directory.
        path: PathBuf,
        /// How many.
        lost: u64,
    },
    /// A thread or runtime of the replay could not be started.
    #[error("replay: starting {what}: {source}")]
    Start {
        /// What was being started, e.g. `the tape reader thread`.
        what: &'static str,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A thread or task of the replay panicked (a bug); the run could not be completed.
    #[error("replay: {what} panicked")]
    Panicked {
        /// Which one, e.g. `the result writer thread`.
        what: &'static str,
    },
}

impl ReplayError {
    pub(crate) fn config(setting: &'static str, reason: impl Into<String>) -> Self {
        ReplayError::Config {
            setting,
            reason: reason.into(),
        }
    }

    /// Whether the error is the user's input (bad settings, unreadable tape): exit code 2 in
    /// the CLI. Everything else is also exit 2 today, but callers may want to tell them apart.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ReplayError::Config { .. }
                | ReplayError::SameHost { .. }
                | ReplayError::Tape { .. }
                | ReplayError::OutputNotEmpty { .. }
                | ReplayError::RedactedCredentials { .. }
        )
    }
}
