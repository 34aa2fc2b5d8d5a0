//! Errors of the storage engine. Every variant names the file it is about.

use std::path::PathBuf;

/// What went wrong while reading or writing a tape.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system error on a file or directory.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `create`, `write`…).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable tape file, or is damaged.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, in words.
        reason: String,
    },
    /// The file's columns do not fit the tape schema (a column of the wrong type, a required
    /// column missing).
    #[error("{}: {source}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// Which column, and what is wrong with it.
        #[source]
        source: Box<crate::schema::SchemaError>,
    },
    /// The file was written by a newer tapedeck with a schema this build cannot read.
    #[error(
        "{}: tape schema version {found} is newer than this build supports ({supported}); upgrade tapedeck",
        path.display()
    )]
    FutureSchema {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// Another process is writing to the same tape directory.
    #[error("{}: tape directory is in use by another writer (lock held on {})", dir.display(), dir.join(crate::writer::LOCK_FILE).display())]
    InUse {
        /// The tape directory.
        dir: PathBuf,
    },
    /// A new tape was asked for ([`crate::TapeWriterBuilder::new_tape_only`]) and the location
    /// already holds data: files of another tape, or files an earlier writer to the same URL
    /// left in the local spool directory.
    #[error("{location} already holds {what}")]
    NotEmpty {
        /// The tape directory or URL.
        location: String,
        /// What is there, with the directory that holds it, in words.
        what: String,
    },
    /// Nothing readable was found at the given location.
    #[error("{}: no tape files found (expected *.parquet or spool/*.arrows)", path.display())]
    NoTape {
        /// The path that was searched.
        path: PathBuf,
    },
    /// The writer has been closed; the record was not accepted.
    #[error("tape writer is closed")]
    Closed,
    /// A setting is out of range.
    #[error("invalid writer setting: {0}")]
    InvalidConfig(String),
    /// An object-store URL that cannot be used (unknown scheme, no bucket, bad settings), or an
    /// object that is not what it should be.
    #[error("{url}: {reason}")]
    BadLocation {
        /// The URL.
        url: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A writer to an object store closed with sealed files it could not upload (within its
    /// close timeout). Nothing is lost: they stay in `dir`, and the next writer to the same URL
    /// with the same spool directory uploads them when it opens.
    #[error(
        "{files} sealed file(s) could not be uploaded to {url} before close; they are kept in {} and uploaded by the next writer that continues this tape with this spool directory (a writer of a new tape refuses to start while they are there)",
        dir.display()
    )]
    UploadIncomplete {
        /// The destination.
        url: String,
        /// The local directory holding the files.
        dir: PathBuf,
        /// How many sealed files stay there.
        files: u64,
    },
    /// An object-store request failed.
    #[error("{op} {url}: {source}")]
    Remote {
        /// What was being done (`list`, `get`, `put`, `head`, `delete`).
        op: &'static str,
        /// The object (or prefix) URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn schema(path: impl Into<PathBuf>, source: crate::schema::SchemaError) -> Self {
        StorageError::Schema {
            path: path.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// The file this error is about, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            StorageError::Io { path, .. }
            | StorageError::Corrupt { path, .. }
            | StorageError::Schema { path, .. }
            | StorageError::FutureSchema { path, .. }
            | StorageError::NoTape { path } => Some(path),
            StorageError::InUse { dir } | StorageError::UploadIncomplete { dir, .. } => Some(dir),
            StorageError::BadLocation { url, .. } | StorageError::Remote { url, .. } => {
                Some(std::path::Path::new(url.as_str()))
            }
            StorageError::NotEmpty { location, .. } => {
                Some(std::path::Path::new(location.as_str()))
            }
            StorageError::Closed | StorageError::InvalidConfig(_) => None,
        }
    }

    /// Whether this error is about one damaged file (so `--skip-corrupt` may read on past it).
    pub fn is_file_damage(&self) -> bool {
        matches!(
            self,
            StorageError::Corrupt { .. }
                | StorageError::Schema { .. }
                | StorageError::FutureSchema { .. }
        )
    }
}

/// Result alias for the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
