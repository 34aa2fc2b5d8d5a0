//! The tape format and storage engine of tapedeck.
//!
//! A *tape* is a directory of files holding *exchanges* (one HTTP request and its response, see
//! [`Exchange`]). It has two tiers:
//!
//! 1. **Spool**: [`TapeWriter`] appends batches to Arrow IPC *stream* segments under `spool/`,
//!    flushing every `flush_interval`; a segment is readable up to its last complete batch even
//!    after a crash.
//! 2. **Sealed**: closed segments are compacted into zstd Parquet files, hive-partitioned by the
//!    hour the exchanges started: `date=YYYY-MM-DD/hour=HH/part-<segment-id>.parquet`.
//!
//! [`Tape`] reads both tiers alike, with projection, filters pushed down to partitions and
//! row-group statistics, and memory bounded whatever the tape's size.
//!
//! A tape may also live in an object store (`s3://bucket/prefix`, `gs://…`, `az://…`,
//! `file:///…`; see [`object`]): [`TapeWriter`] then spools and seals on local disk and uploads
//! each sealed file to the same relative key, and [`Tape`] lists and reads the objects with the
//! same pruning and projection (ranged GETs).
//!
//! The schema ([`schema::tape_schema`], version [`SCHEMA_VERSION`]) serves recorded traffic and
//! replay results alike; it is documented column by column in `docs/tape-format.md`.
#![forbid(unsafe_code)]

mod cpu_limit;
mod error;
mod exchange;
pub mod layout;
pub mod object;
mod queue;
mod reader;
pub mod route;
pub mod schema;
mod seal;
mod spool;
pub mod synth;
mod upload;
mod writer;

/// The string type of [`Header::name`].
pub use compact_str::CompactString;
pub use error::{Result, StorageError};
pub use exchange::{
    ErrorKind, Exchange, Header, REDACTED_HASH_PREFIX, REDACTED_MASK, REDACTED_URL_MASK,
    SENSITIVE_HEADERS, TRAILER_MARKER, find_header, flags, is_redaction_placeholder,
    is_sensitive_header, now_us,
};
pub use reader::{
    ExchangeIter, FileKind, Filter, ReadOptions, ReadReport, SkippedFile, Tape, TapeFile, TapeScan,
};
pub use schema::{SCHEMA_VERSION, SchemaError};
pub use seal::{SealOutcome, seal};
pub use writer::{
    AppendError, BatchOutcome, Health, LOCK_FILE, MAX_STORED_BODY, SealedLeftovers, TapeSender,
    TapeWriter, TapeWriterBuilder, WhenFull, WriterStats,
};

/// Re-exported so that callers can handle batches without naming arrow crates themselves.
pub use arrow_array::RecordBatch;
