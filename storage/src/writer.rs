//! The tape writer: a queue bounded in records and bytes in front of a spool thread and a seal
//! thread.
//!
//! ```text
//!  TapeSender::append_batch ──(queue: records + bytes; full → drop+count or block)──► spool thread
//!      spool thread (spool.rs): encodes records into Arrow as they arrive, and appends a batch
//!                    (flush_rows / flush_bytes / flush_interval) to the open Arrow IPC stream
//!                    segment `spool/<segment-id>.arrows`, flushing (and optionally fsyncing) after
//!                    every batch; rotates segments by size, age and hour.
//!      seal thread (seal.rs): compacts each closed segment into zstd Parquet files, one per hour of
//!                    `started_at`, at `date=YYYY-MM-DD/hour=HH/part-<segment-id>.parquet`
//!                    (temp file, fsync, rename, fsync dir), then deletes the segment. It seals at
//!                    the lowest CPU priority while the unsealed backlog is under `seal_backlog`,
//!                    and at normal priority above it and on close.
//! ```
//!
//! This file holds the builder, the sender, the shared counters and the coordination of the
//! threads; the threads live next to the formats they write (`spool.rs`, `seal.rs`), the queue in
//! `queue.rs`.
//!
//! Invariants a reader may rely on:
//! - A spool segment is a valid Arrow IPC stream up to its last complete batch, even after a
//!   crash (`SIGKILL` loses at most the rows of the current, unflushed batch: one flush interval).
//! - A sealed file appears under its final name only once complete (atomic rename).
//! - Sealed file names carry the segment id, so sealing is idempotent: if a segment and sealed
//!   files from it both exist (crash between rename and delete), the segment is the truth and the
//!   reader ignores those sealed files; re-sealing replaces them.
//! - On [`TapeWriter::open`], segments left by an earlier process are sealed first. One writer per
//!   tape directory at a time (an exclusive lock on `.lock`).
//! - Files are created `0600`, directories `0700`.
//! - Memory: records waiting for the spool thread are bounded by `queue_capacity` records and
//!   `queue_bytes` bytes ([`Exchange::mem_size`]); the batch being gathered by `flush_bytes`.
//!
//! The tape may also be an object-store URL (`s3://bucket/prefix`…, see [`crate::object`]): the
//! spool and the sealing then stay on a local directory ([`TapeWriterBuilder::spool_dir`],
//! default [`crate::object::spool_dir_for`]) and an uploader thread moves each sealed file to the
//! same relative key under the prefix (see the `upload` module for its invariants).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow_schema::{Schema, SchemaRef};
use serde::Serialize;
use tracing::info;

use crate::error::{Result, StorageError};
use crate::exchange::Exchange;
use crate::layout::{self, SEGMENT_EXT, SPOOL_DIR};
use crate::object::{self, Remote};
use crate::queue::Queue;
use crate::schema::{self, META_HOST, META_SCHEMA_VERSION, META_WRITER_VERSION, SCHEMA_VERSION};
use crate::seal::{SealLanes, SealSettings};
use crate::spool::{SpoolSettings, Spooler};
use crate::upload::{UploadCounters, UploadSettings, Uploader};

/// Name of the lock file inside a tape directory.
pub const LOCK_FILE: &str = ".lock";
/// Largest body the writer stores for one exchange; longer bodies are cut and flagged truncated.
pub const MAX_STORED_BODY: usize = 256 << 20;

/// What [`TapeSender::append`] and [`TapeSender::append_batch`] do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Drop the records that do not fit and count them: never slow the caller (the recorder's
    /// default).
    #[default]
    Drop,
    /// Wait for room: lose nothing (replay results).
    Block,
}

/// Settings of a [`TapeWriter`], built with [`TapeWriter::builder`].
#[derive(Debug, Clone)]
pub struct TapeWriterBuilder {
    dir: PathBuf,
    queue_capacity: usize,
    queue_bytes: usize,
    when_full: WhenFull,
    spool: SpoolSettings,
    seal: SealSettings,
    metadata: BTreeMap<String, String>,
    spool_dir: Option<PathBuf>,
    upload: UploadSettings,
    new_tape_only: bool,
}

impl TapeWriterBuilder {
    /// Refuse to open a tape that already holds data, so that two runs are never mixed in one
    /// tape: [`StorageError::NotEmpty`] when the directory holds any file but the lock, when
    /// the URL's prefix holds any object, or when the local spool directory of the URL holds
    /// files an earlier writer left there (sealed files it could not upload, spool segments),
    /// which this writer would otherwise seal and upload into the new tape. Off by default: the
    /// recorder continues one tape across restarts, uploading what the last run left.
    pub fn new_tape_only(mut self, on: bool) -> Self {
        self.new_tape_only = on;
        self
    }
    /// For a tape at an object-store URL: the local directory that holds the spool and the
    /// sealed files until they are uploaded (default [`object::spool_dir_for`] the URL, under
    /// `$TAPEDECK_SPOOL_DIR` or the system temp dir). Put it on a persistent volume: files not
    /// yet uploaded live only there. Ignored for a local tape.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }
    /// For a tape at an object-store URL: how long [`TapeWriter::close`] keeps trying to upload
    /// what is left (default 30 s); the rest stays in the spool directory.
    pub fn upload_close_timeout(mut self, d: Duration) -> Self {
        self.upload.close_timeout = d;
        self
    }
    /// For a tape at an object-store URL: the longest wait between upload retries (default
    /// 10 s; the wait starts at 250 ms and doubles per failure).
    pub fn upload_retry_max(mut self, d: Duration) -> Self {
        self.upload.retry_max = d.max(self.upload.retry_min);
        self
    }
    /// Most records waiting for the spool thread (default 16384).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// Most bytes of records ([`Exchange::mem_size`]) waiting for the spool thread (default
    /// 64 MiB). With [`WhenFull::Drop`] a record that does not fit is dropped and counted, so a
    /// record larger than this is never written; with [`WhenFull::Block`] such a record waits
    /// for the queue to empty and then goes in alone.
    pub fn queue_bytes(mut self, n: usize) -> Self {
        self.queue_bytes = n;
        self
    }
    /// Policy when the queue is full (default [`WhenFull::Drop`]).
    pub fn when_full(mut self, w: WhenFull) -> Self {
        self.when_full = w;
        self
    }
    /// Longest time a record waits in memory before it is in the spool (default 1 s).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.spool.flush_interval = d;
        self
    }
    /// Rows per spool batch (default 4096).
    pub fn flush_rows(mut self, n: usize) -> Self {
        self.spool.flush_rows = n;
        self
    }
    /// Bytes of records per spool batch before it is written early (default 1 MiB): with
    /// `queue_bytes`, what bounds the writer's memory.
    pub fn flush_bytes(mut self, n: usize) -> Self {
        self.spool.flush_bytes = n;
        self
    }
    /// Size at which a spool segment is closed and sealed (default 128 MiB).
    pub fn segment_max_bytes(mut self, n: u64) -> Self {
        self.spool.segment_max_bytes = n;
        self
    }
    /// Age at which a spool segment is closed and sealed (default 10 minutes).
    pub fn segment_max_age(mut self, d: Duration) -> Self {
        self.spool.segment_max_age = d;
        self
    }
    /// `fsync` the spool after every batch (default off: a crash of the machine, not only of
    /// the process, may then lose the last few seconds).
    pub fn fsync(mut self, on: bool) -> Self {
        self.spool.fsync = on;
        self
    }
    /// Bytes of closed spool segments that may wait to be sealed while the seal thread runs at
    /// the lowest CPU priority (default 1 GiB). Below it, segments are sealed only with CPU time
    /// nothing else wants, so sealing never slows a busy recorder; above it (and on close) a
    /// second seal thread at normal priority seals too, so the backlog on disk stays bounded.
    /// `0` seals every segment at once at normal priority.
    pub fn seal_backlog(mut self, bytes: u64) -> Self {
        self.seal.backlog_bytes = bytes;
        self
    }
    /// zstd level of sealed files (default 3).
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.seal.zstd_level = level;
        self
    }
    /// Rows per Parquet row group (default 65536; row groups are also capped at 64 MiB).
    pub fn row_group_rows(mut self, n: usize) -> Self {
        self.seal.row_group_rows = n;
        self
    }
    /// Largest Parquet row group, in encoded bytes (default 64 MiB): what a seal holds in memory
    /// before it writes a row group out.
    pub fn row_group_bytes(mut self, n: usize) -> Self {
        self.seal.row_group_bytes = n;
        self
    }
    /// Adds a key-value pair to every file's metadata (e.g. `tapedeck.upstream`).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Opens (creating if needed) the tape directory, takes its lock, schedules leftover spool
    /// segments for sealing, and starts the writer threads.
    pub fn open(self) -> Result<TapeWriter> {
        TapeWriter::start(self)
    }

    /// Seals the spool segments earlier writers left in the tape (a crash, a kill, a recorder
    /// stopped before its backlog was sealed) into Parquet now, at normal priority, without
    /// accepting records — what the next writer would do at its start. Takes the tape's lock,
    /// so it fails with [`StorageError::InUse`] while a writer has it. For a tape at an
    /// object-store URL the sealed files are then uploaded (see [`TapeWriter::close`]).
    ///
    /// # Errors
    /// [`StorageError::NoTape`] when a local `dir` is not a directory (nothing is created).
    pub fn seal_leftovers(self) -> Result<SealedLeftovers> {
        if !object::path_is_url(&self.dir) && !self.dir.is_dir() {
            return Err(StorageError::NoTape { path: self.dir });
        }
        let writer = self.seal_backlog(0).open()?;
        let spool = writer.dir.join(SPOOL_DIR);
        let stats = writer.close()?;
        let left = list_segments(&spool)
            .map_err(|e| StorageError::io("list", &spool, e))?
            .len();
        Ok(SealedLeftovers {
            segments: stats.recovered_segments,
            rows: stats.rows_sealed,
            files: stats.files_sealed,
            bytes: stats.bytes_sealed,
            failed: stats.seal_errors,
            left,
        })
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(StorageError::InvalidConfig(what.to_owned()));
        if self.queue_capacity == 0 {
            return bad("queue capacity must be at least 1");
        }
        if self.queue_bytes == 0 {
            return bad("queue bytes must be at least 1");
        }
        if self.spool.flush_rows == 0 || self.spool.flush_bytes == 0 {
            return bad("flush rows and flush bytes must be at least 1");
        }
        if self.spool.flush_interval.is_zero() {
            return bad("flush interval must be positive");
        }
        if self.seal.row_group_rows == 0 || self.seal.row_group_bytes == 0 {
            return bad("row group rows and bytes must be at least 1");
        }
        if !(1..=22).contains(&self.seal.zstd_level) {
            return bad("zstd level must be between 1 and 22");
        }
        Ok(())
    }
}

/// What [`TapeWriterBuilder::seal_leftovers`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SealedLeftovers {
    /// Spool segments found.
    pub segments: u64,
    /// Rows moved into sealed files.
    pub rows: u64,
    /// Sealed Parquet files written.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Failed attempts: a segment that could not be read is moved aside as `.corrupt`, one that
    /// could not be written stays in the spool.
    pub failed: u64,
    /// Segments still in the spool afterwards.
    pub left: usize,
}

/// Live counters of a writer. Read them with [`TapeSender::stats`] or [`TapeWriter::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appended: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_io: AtomicU64,
    pub(crate) dropped_closed: AtomicU64,
    pub(crate) bytes_spooled: AtomicU64,
    pub(crate) bytes_sealed: AtomicU64,
    pub(crate) files_sealed: AtomicU64,
    pub(crate) rows_sealed: AtomicU64,
    pub(crate) seal_errors: AtomicU64,
    pub(crate) recovered_segments: AtomicU64,
    pub(crate) seal_backlog: AtomicU64,
}

/// A snapshot of a writer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Records accepted into the queue.
    pub appended: u64,
    /// Records written to the spool.
    pub written: u64,
    /// Records dropped because the queue was full (in records or in bytes).
    pub dropped_queue_full: u64,
    /// Records dropped because the spool could not be written (disk full, read-only…).
    pub dropped_io: u64,
    /// Records offered after the writer closed.
    pub dropped_closed: u64,
    /// Bytes appended to spool segments.
    pub bytes_spooled: u64,
    /// Bytes of sealed Parquet files written.
    pub bytes_sealed: u64,
    /// Sealed Parquet files written.
    pub files_sealed: u64,
    /// Rows moved from spool segments into sealed files.
    pub rows_sealed: u64,
    /// Failed attempts to seal a segment (retried later).
    pub seal_errors: u64,
    /// Segments from an earlier process found at open and sealed.
    pub recovered_segments: u64,
    /// Records waiting in the queue (or taken by the spool thread and not yet encoded).
    pub queue_depth: u64,
    /// Bytes ([`Exchange::mem_size`]) of the records counted by `queue_depth`.
    pub queue_bytes: u64,
    /// Bytes of closed spool segments not yet sealed.
    pub seal_backlog_bytes: u64,
    /// Sealed files uploaded to the object store (and deleted locally); 0 for a local tape.
    pub files_uploaded: u64,
    /// Bytes of the sealed files uploaded.
    pub bytes_uploaded: u64,
    /// Failed upload attempts (each is retried; the file stays local meanwhile).
    pub upload_failures: u64,
    /// Sealed files waiting in the local directory to be uploaded (after close: what stays).
    pub upload_pending: u64,
}

impl WriterStats {
    /// All records dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_io + self.dropped_closed
    }
}

/// Whether the writer is currently able to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `true` when the spool or the sealer is failing.
    pub degraded: bool,
    /// The most recent failure, when degraded.
    pub reason: Option<String>,
}

/// What the threads of one writer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    pub(crate) queue: Queue,
    pub(crate) spool_error: Mutex<Option<String>>,
    pub(crate) seal_error: Mutex<Option<String>>,
    closed: AtomicBool,
    upload: Arc<UploadCounters>,
}

impl Shared {
    fn new(queue: Queue) -> Self {
        Shared {
            counters: Counters::default(),
            queue,
            spool_error: Mutex::new(None),
            seal_error: Mutex::new(None),
            closed: AtomicBool::new(false),
            upload: Arc::default(),
        }
    }

    fn stats(&self) -> WriterStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            appended: l(&c.appended),
            written: l(&c.written),
            dropped_queue_full: l(&c.dropped_queue_full),
            dropped_io: l(&c.dropped_io),
            dropped_closed: l(&c.dropped_closed),
            bytes_spooled: l(&c.bytes_spooled),
            bytes_sealed: l(&c.bytes_sealed),
            files_sealed: l(&c.files_sealed),
            rows_sealed: l(&c.rows_sealed),
            seal_errors: l(&c.seal_errors),
            recovered_segments: l(&c.recovered_segments),
            queue_depth: self.queue.depth(),
            queue_bytes: self.queue.depth_bytes(),
            seal_backlog_bytes: l(&c.seal_backlog),
            files_uploaded: l(&self.upload.files),
            bytes_uploaded: l(&self.upload.bytes),
            upload_failures: l(&self.upload.failures),
            upload_pending: l(&self.upload.pending),
        }
    }

    fn health(&self) -> Health {
        let lock = |m: &Mutex<Option<String>>| m.lock().map(|g| g.clone()).unwrap_or(None);
        let reason = lock(&self.spool_error).or_else(|| lock(&self.seal_error));
        Health {
            degraded: reason.is_some(),
            reason,
        }
    }

    pub(crate) fn set(slot: &Mutex<Option<String>>, value: Option<String>) {
        if let Ok(mut g) = slot.lock() {
            *g = value;
        }
    }
}

/// Why a record was not accepted. Either way it has been counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The queue was full and the policy is [`WhenFull::Drop`].
    #[error("tape writer queue is full; record dropped")]
    QueueFull,
    /// The writer has closed.
    #[error("tape writer is closed; record dropped")]
    Closed,
}

/// What [`TapeSender::append_batch`] did with a batch. The dropped records are counted in the
/// writer's [`WriterStats`] too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records accepted into the queue, in their order.
    pub accepted: usize,
    /// Records dropped because the queue was full ([`WhenFull::Drop`]).
    pub dropped_full: usize,
    /// Records dropped because the writer is closed.
    pub dropped_closed: usize,
}

impl BatchOutcome {
    /// Records of the batch that were dropped, whatever the reason.
    pub fn dropped(&self) -> usize {
        self.dropped_full + self.dropped_closed
    }
}

/// [`TapeWriterBuilder::new_tape_only`]: the local directory (the tape, or the spool directory of
/// a URL) holds no file but the lock, and a URL's prefix holds no object.
fn refuse_existing_data(dir: &Path, remote: Option<&Remote>) -> Result<()> {
    let mut files = Vec::new();
    collect_data_files(dir, &mut files)?;
    if let Some(first) = files.first() {
        let shown = first
            .strip_prefix(dir)
            .unwrap_or(first)
            .display()
            .to_string();
        return Err(match remote {
            None => StorageError::NotEmpty {
                location: dir.display().to_string(),
                what: format!("{} file(s) of an earlier tape (e.g. {shown})", files.len()),
            },
            Some(r) => StorageError::NotEmpty {
                location: r.url().to_owned(),
                what: format!(
                    "{} file(s) an earlier writer to this URL left in its local spool directory {} \
                     (e.g. {shown}), which would be uploaded into it",
                    files.len(),
                    dir.display()
                ),
            },
        });
    }
    if let Some(r) = remote {
        let objects = r.list()?;
        if let Some(first) = objects.first() {
            return Err(StorageError::NotEmpty {
                location: r.url().to_owned(),
                what: format!(
                    "{} object(s) of an earlier tape (e.g. {})",
                    objects.len(),
                    r.object_url(&first.location)
                ),
            });
        }
    }
    Ok(())
}

/// Every file under `dir` (recursively) except the lock file at its top.
fn collect_data_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|e| StorageError::io("list", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list", &d, e))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| StorageError::io("stat", &path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if !(d == dir && entry.file_name() == LOCK_FILE) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(())
}

/// A cheap, cloneable handle that appends records to a [`TapeWriter`] from any thread.
#[derive(Debug, Clone)]
pub struct TapeSender {
    shared: Arc<Shared>,
    when_full: WhenFull,
}

impl TapeSender {
    /// Hands a record to the writer. With [`WhenFull::Drop`] this never blocks; with
    /// [`WhenFull::Block`] it waits for room in the queue. Prefer
    /// [`append_batch`](Self::append_batch) when records come in bursts: it takes the queue's
    /// lock once and wakes the spool thread at most once per batch.
    pub fn append(&self, exchange: Exchange) -> std::result::Result<(), AppendError> {
        let out = self.append_batch(vec![exchange]);
        if out.accepted == 1 {
            Ok(())
        } else if out.dropped_closed == 1 {
            Err(AppendError::Closed)
        } else {
            Err(AppendError::QueueFull)
        }
    }

    /// Hands a batch of records to the writer with one queue operation and at most one wake-up
    /// of the spool thread. Records keep their order, within the batch and after earlier
    /// batches from the same thread.
    ///
    /// With [`WhenFull::Drop`] this never blocks: each record that does not fit in the queue's
    /// bounds (records and bytes, [`Exchange::mem_size`]) is dropped and counted, the others
    /// are kept. With [`WhenFull::Block`] it waits until every record is in.
    pub fn append_batch(&self, mut records: Vec<Exchange>) -> BatchOutcome {
        let c = &self.shared.counters;
        let n = records.len();
        if n == 0 {
            return BatchOutcome::default();
        }
        if self.shared.closed.load(Ordering::Relaxed) {
            c.dropped_closed.fetch_add(n as u64, Ordering::Relaxed);
            return BatchOutcome {
                dropped_closed: n,
                ..BatchOutcome::default()
            };
        }
        let mut sizes = Vec::with_capacity(n);
        for ex in &mut records {
            cap_body(&mut ex.req_body, &mut ex.req_body_truncated);
            cap_body(&mut ex.resp_body, &mut ex.resp_body_truncated);
            sizes.push(ex.mem_size());
        }
        let pushed = self.shared.queue.push(records, &sizes, self.when_full);
        let add = |a: &AtomicU64, v: usize| {
            if v > 0 {
                a.fetch_add(v as u64, Ordering::Relaxed);
            }
        };
        add(&c.appended, pushed.accepted);
        add(&c.dropped_queue_full, pushed.full);
        add(&c.dropped_closed, pushed.closed);
        BatchOutcome {
            accepted: pushed.accepted,
            dropped_full: pushed.full,
            dropped_closed: pushed.closed,
        }
    }

    /// Bytes ([`Exchange::mem_size`]) of the records waiting for the spool thread now.
    pub fn queued_bytes(&self) -> u64 {
        self.shared.queue.depth_bytes()
    }

    /// The queue's byte bound ([`TapeWriterBuilder::queue_bytes`]).
    pub fn queue_bytes_limit(&self) -> usize {
        self.shared.queue.max_bytes()
    }

    /// A snapshot of the writer's counters.
    pub fn stats(&self) -> WriterStats {
        self.shared.stats()
    }

    /// Whether the writer is recording or degraded (and why).
    pub fn health(&self) -> Health {
        self.shared.health()
    }
}

fn cap_body(body: &mut bytes::Bytes, truncated: &mut bool) {
    if body.len() > MAX_STORED_BODY {
        body.truncate(MAX_STORED_BODY);
        *truncated = true;
    }
}

/// Writes exchanges to a tape directory. See the module docs for the design and invariants.
#[derive(Debug)]
pub struct TapeWriter {
    sender: TapeSender,
    spool_thread: Option<JoinHandle<()>>,
    sealer: Option<SealLanes>,
    uploader: Option<Uploader>,
    dir: PathBuf,
    _lock: File,
}

impl TapeWriter {
    /// Settings for a writer of the tape at `dir`, with defaults.
    pub fn builder(dir: impl Into<PathBuf>) -> TapeWriterBuilder {
        TapeWriterBuilder {
            dir: dir.into(),
            queue_capacity: 16_384,
            queue_bytes: 64 << 20,
            when_full: WhenFull::Drop,
            spool: SpoolSettings::default(),
            seal: SealSettings::default(),
            metadata: BTreeMap::new(),
            spool_dir: None,
            upload: UploadSettings::default(),
            new_tape_only: false,
        }
    }

    fn start(b: TapeWriterBuilder) -> Result<TapeWriter> {
        b.validate()?;
        let remote = if object::path_is_url(&b.dir) {
            Some(Remote::parse(&b.dir.to_string_lossy())?)
        } else {
            None
        };
        let dir = match (&remote, &b.spool_dir) {
            (None, _) => b.dir.clone(),
            (Some(_), Some(d)) => d.clone(),
            (Some(r), None) => object::spool_dir_for(r.url()),
        };
        let spool = dir.join(SPOOL_DIR);
        layout::create_private_dir(&spool).map_err(|e| StorageError::io("create", &spool, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StorageError::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StorageError::InUse { dir }),
            Err(fs::TryLockError::Error(e)) => return Err(StorageError::io("lock", &lock_path, e)),
        }
        if b.new_tape_only {
            // Under the lock: no other writer can add files while this looks.
            refuse_existing_data(&dir, remote.as_ref())?;
        }

        let mut metadata = b.metadata.clone();
        metadata.insert(META_SCHEMA_VERSION.into(), SCHEMA_VERSION.to_string());
        metadata.insert(META_WRITER_VERSION.into(), env!("CARGO_PKG_VERSION").into());
        metadata.insert(META_HOST.into(), hostname());
        let schema: SchemaRef = Arc::new(
            Schema::clone(&schema::tape_schema()).with_metadata(
                metadata
                    .clone()
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            ),
        );

        let shared = Arc::new(Shared::new(Queue::new(b.queue_capacity, b.queue_bytes)));
        let leftovers = list_segments(&spool).map_err(|e| StorageError::io("list", &spool, e))?;
        if !leftovers.is_empty() {
            info!(dir = %dir.display(), segments = leftovers.len(), "recovering spool segments left by an earlier writer");
        }
        shared
            .counters
            .recovered_segments
            .fetch_add(leftovers.len() as u64, Ordering::Relaxed);
        let sealer = SealLanes::start(&dir, b.seal.clone(), metadata, shared.clone(), leftovers)?;
        let spooler = Spooler::new(
            dir.clone(),
            schema,
            shared.clone(),
            sealer.jobs(),
            b.spool.clone(),
        );
        let spool_thread = std::thread::Builder::new()
            .name("tape-spool".into())
            .spawn(move || spooler.run())
            .map_err(|e| StorageError::io("spawn spool thread for", &dir, e))?;

        let uploader = match remote {
            Some(r) => {
                crate::upload::log_start(&dir, r.url());
                Some(Uploader::start(
                    dir.clone(),
                    r,
                    b.upload.clone(),
                    shared.upload.clone(),
                )?)
            }
            None => None,
        };

        Ok(TapeWriter {
            sender: TapeSender {
                shared,
                when_full: b.when_full,
            },
            spool_thread: Some(spool_thread),
            sealer: Some(sealer),
            uploader,
            dir,
            _lock: lock,
        })
    }

    /// A handle for appending records from other threads or tasks.
    pub fn sender(&self) -> TapeSender {
        self.sender.clone()
    }

    /// Appends one record (see [`TapeSender::append`]).
    pub fn append(&self, exchange: Exchange) -> std::result::Result<(), AppendError> {
        self.sender.append(exchange)
    }

    /// Appends a batch of records (see [`TapeSender::append_batch`]).
    pub fn append_batch(&self, records: Vec<Exchange>) -> BatchOutcome {
        self.sender.append_batch(records)
    }

    /// The tape directory (for a tape at an object-store URL: the local spool directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The object-store URL sealed files are uploaded to, when the tape is remote.
    pub fn remote_url(&self) -> Option<&str> {
        self.sender.shared.upload.url.get().map(String::as_str)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WriterStats {
        self.sender.stats()
    }

    /// Whether recording works right now.
    pub fn health(&self) -> Health {
        self.sender.health()
    }

    /// Writes everything queued so far to the spool and waits until it is there.
    pub fn flush(&self) -> Result<()> {
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        if !self.sender.shared.queue.push_flush(ack_tx) {
            return Err(StorageError::Closed);
        }
        ack_rx.recv().map_err(|_| StorageError::Closed)
    }

    /// Writes everything queued, seals every segment into Parquet, and stops the threads.
    /// Returns the final counters. Records appended after this are dropped and counted.
    /// For a remote tape it then uploads what is left for at most the upload close timeout;
    /// [`WriterStats::upload_pending`] counts the sealed files that stay in [`dir`](Self::dir).
    ///
    /// # Errors
    /// [`StorageError::UploadIncomplete`] when sealed files of a remote tape stay local.
    pub fn close(mut self) -> Result<WriterStats> {
        self.shutdown();
        let stats = self.stats();
        if stats.upload_pending > 0
            && let Some(url) = self.remote_url()
        {
            return Err(StorageError::UploadIncomplete {
                url: url.to_owned(),
                dir: self.dir.clone(),
                files: stats.upload_pending,
            });
        }
        Ok(stats)
    }

    fn shutdown(&mut self) {
        // Sealing from now on at normal priority: close must not wait for a starved thread.
        if let Some(s) = &self.sealer {
            s.hurry();
        }
        // The spool thread drains every record already accepted, then stops.
        self.sender.shared.queue.close();
        if let Some(t) = self.spool_thread.take() {
            let _ = t.join();
        }
        self.sender.shared.closed.store(true, Ordering::Relaxed);
        if let Some(s) = self.sealer.take() {
            s.finish();
        }
        if let Some(mut u) = self.uploader.take() {
            u.finish();
        }
    }
}

impl Drop for TapeWriter {
    fn drop(&mut self) {
        if self.spool_thread.is_some() {
            self.shutdown();
        }
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Spool segments in `spool`, oldest first (ids are time-ordered).
pub(crate) fn list_segments(spool: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(spool) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(SEGMENT_EXT) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}
