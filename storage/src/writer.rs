//! The tape writer: a bounded queue in front of a spool thread and a seal thread.
//!
//! ```text
//!  TapeSender::append ──(bounded queue; full → drop+count or block)──► spool thread
//!      spool thread: batches rows (flush_rows / flush_bytes / flush_interval) and appends each
//!                    batch to the open Arrow IPC stream segment `spool/<segment-id>.arrows`,
//!                    flushing (and optionally fsyncing) after every batch; rotates segments by
//!                    size, age and hour.
//!      seal thread:  compacts each closed segment into zstd Parquet files, one per hour of
//!                    `started_at`, at `date=YYYY-MM-DD/hour=HH/part-<segment-id>.parquet`
//!                    (temp file, fsync, rename, fsync dir), then deletes the segment.
//! ```
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
//!
//! The tape may also be an object-store URL (`s3://bucket/prefix`…, see [`crate::object`]): the
//! spool and the sealing then stay on a local directory ([`TapeWriterBuilder::spool_dir`],
//! default [`crate::object::spool_dir_for`]) and an uploader thread moves each sealed file to the
//! same relative key under the prefix (see the `upload` module for its invariants).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_ipc::writer::StreamWriter;
use arrow_schema::{Schema, SchemaRef};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::error::{Result, StorageError};
use crate::exchange::{Exchange, now_us};
use crate::layout::{self, SEGMENT_EXT, SPOOL_DIR};
use crate::object::{self, Remote};
use crate::schema::{self, META_HOST, META_SCHEMA_VERSION, META_WRITER_VERSION, SCHEMA_VERSION};
use crate::seal::{SealSettings, seal_segment};
use crate::upload::{UploadCounters, UploadSettings, Uploader};

/// Name of the lock file inside a tape directory.
pub const LOCK_FILE: &str = ".lock";
/// Largest body the writer stores for one exchange; longer bodies are cut and flagged truncated.
pub const MAX_STORED_BODY: usize = 256 << 20;

/// What [`TapeSender::append`] does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Drop the record and count it: never slow the caller (the recorder's default).
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
    when_full: WhenFull,
    flush_interval: Duration,
    flush_rows: usize,
    flush_bytes: usize,
    segment_max_bytes: u64,
    segment_max_age: Duration,
    fsync: bool,
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
    /// Capacity of the queue in front of the writer (default 16384 records).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// Policy when the queue is full (default [`WhenFull::Drop`]).
    pub fn when_full(mut self, w: WhenFull) -> Self {
        self.when_full = w;
        self
    }
    /// Longest time a record waits in memory before it is in the spool (default 1 s).
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }
    /// Rows per spool batch (default 4096).
    pub fn flush_rows(mut self, n: usize) -> Self {
        self.flush_rows = n;
        self
    }
    /// Raw bytes per spool batch before it is flushed early (default 32 MiB).
    pub fn flush_bytes(mut self, n: usize) -> Self {
        self.flush_bytes = n;
        self
    }
    /// Size at which a spool segment is closed and sealed (default 128 MiB).
    pub fn segment_max_bytes(mut self, n: u64) -> Self {
        self.segment_max_bytes = n;
        self
    }
    /// Age at which a spool segment is closed and sealed (default 10 minutes).
    pub fn segment_max_age(mut self, d: Duration) -> Self {
        self.segment_max_age = d;
        self
    }
    /// `fsync` the spool after every batch (default off: a crash of the machine, not only of
    /// the process, may then lose the last few seconds).
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
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

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(StorageError::InvalidConfig(what.to_owned()));
        if self.queue_capacity == 0 {
            return bad("queue capacity must be at least 1");
        }
        if self.flush_rows == 0 || self.flush_bytes == 0 {
            return bad("flush rows and flush bytes must be at least 1");
        }
        if self.flush_interval.is_zero() {
            return bad("flush interval must be positive");
        }
        if self.seal.row_group_rows == 0 {
            return bad("row group rows must be at least 1");
        }
        if !(1..=22).contains(&self.seal.zstd_level) {
            return bad("zstd level must be between 1 and 22");
        }
        Ok(())
    }
}

/// Live counters of a writer. Read them with [`TapeSender::stats`] or [`TapeWriter::stats`].
#[derive(Debug, Default)]
struct Counters {
    appended: AtomicU64,
    written: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_io: AtomicU64,
    dropped_closed: AtomicU64,
    bytes_spooled: AtomicU64,
    bytes_sealed: AtomicU64,
    files_sealed: AtomicU64,
    rows_sealed: AtomicU64,
    seal_errors: AtomicU64,
    recovered_segments: AtomicU64,
    queue_depth: AtomicU64,
}

/// A snapshot of a writer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Records accepted into the queue.
    pub appended: u64,
    /// Records written to the spool.
    pub written: u64,
    /// Records dropped because the queue was full.
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
    /// Records waiting in the queue.
    pub queue_depth: u64,
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

#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    spool_error: Mutex<Option<String>>,
    seal_error: Mutex<Option<String>>,
    closed: AtomicBool,
    upload: Arc<UploadCounters>,
}

impl Shared {
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
            queue_depth: l(&c.queue_depth),
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

    fn set(slot: &Mutex<Option<String>>, value: Option<String>) {
        if let Ok(mut g) = slot.lock() {
            *g = value;
        }
    }
}

// Records travel by value: the queue's slots are allocated once, so a record costs no allocation
// on the way to the writer thread.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(Exchange),
    /// Several records in one queue slot ([`TapeSender::append_batch`]).
    Batch(Vec<Exchange>),
    Flush(SyncSender<()>),
    Close,
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
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    when_full: WhenFull,
}

impl TapeSender {
    /// Hands a record to the writer. With [`WhenFull::Drop`] this never blocks; with
    /// [`WhenFull::Block`] it waits for room in the queue.
    pub fn append(&self, mut exchange: Exchange) -> std::result::Result<(), AppendError> {
        cap_body(&mut exchange.req_body, &mut exchange.req_body_truncated);
        cap_body(&mut exchange.resp_body, &mut exchange.resp_body_truncated);
        self.send(Msg::Record(exchange), 1)
    }

    /// Hands several records to the writer as one message: they take one queue slot, and the
    /// spool thread wakes once for all of them instead of once per record (when the caller and
    /// the spool thread share a core, a wake-up per record is a context switch per record).
    /// They are written in order, adjacent to each other. All are accepted or all are refused
    /// (and counted), as for [`append`](Self::append); the queue's capacity counts messages, so
    /// a caller of this bounds its memory by capacity × batch size.
    pub fn append_batch(
        &self,
        mut exchanges: Vec<Exchange>,
    ) -> std::result::Result<(), AppendError> {
        if exchanges.is_empty() {
            return Ok(());
        }
        for ex in &mut exchanges {
            cap_body(&mut ex.req_body, &mut ex.req_body_truncated);
            cap_body(&mut ex.resp_body, &mut ex.resp_body_truncated);
        }
        let n = exchanges.len() as u64;
        self.send(Msg::Batch(exchanges), n)
    }

    /// Queues `msg` carrying `n` records, counting what happens to them.
    fn send(&self, msg: Msg, n: u64) -> std::result::Result<(), AppendError> {
        let c = &self.shared.counters;
        if self.shared.closed.load(Ordering::Relaxed) {
            c.dropped_closed.fetch_add(n, Ordering::Relaxed);
            return Err(AppendError::Closed);
        }
        c.queue_depth.fetch_add(n, Ordering::Relaxed);
        let sent = match self.when_full {
            WhenFull::Drop => self.tx.try_send(msg).map_err(|e| match e {
                TrySendError::Full(_) => AppendError::QueueFull,
                TrySendError::Disconnected(_) => AppendError::Closed,
            }),
            WhenFull::Block => self.tx.send(msg).map_err(|_| AppendError::Closed),
        };
        match sent {
            Ok(()) => {
                c.appended.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                c.queue_depth.fetch_sub(n, Ordering::Relaxed);
                match e {
                    AppendError::QueueFull => &c.dropped_queue_full,
                    AppendError::Closed => &c.dropped_closed,
                }
                .fetch_add(n, Ordering::Relaxed);
                Err(e)
            }
        }
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
    seal_thread: Option<JoinHandle<()>>,
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
            when_full: WhenFull::Drop,
            flush_interval: Duration::from_secs(1),
            flush_rows: 4096,
            flush_bytes: 32 << 20,
            segment_max_bytes: 128 << 20,
            segment_max_age: Duration::from_secs(600),
            fsync: false,
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

        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::sync_channel(b.queue_capacity);
        let (seal_tx, seal_rx) = mpsc::channel::<SealJob>();

        let leftovers = list_segments(&spool).map_err(|e| StorageError::io("list", &spool, e))?;
        if !leftovers.is_empty() {
            info!(dir = %dir.display(), segments = leftovers.len(), "recovering spool segments left by an earlier writer");
        }
        for seg in leftovers {
            shared
                .counters
                .recovered_segments
                .fetch_add(1, Ordering::Relaxed);
            let _ = seal_tx.send(SealJob::Segment(seg));
        }

        let sealer = Sealer {
            dir: dir.clone(),
            settings: b.seal.clone(),
            metadata,
            shared: shared.clone(),
            retry: Vec::new(),
        };
        let seal_thread = std::thread::Builder::new()
            .name("tape-seal".into())
            .spawn(move || sealer.run(seal_rx))
            .map_err(|e| StorageError::io("spawn seal thread for", &dir, e))?;

        let spooler = Spooler {
            dir: dir.clone(),
            schema,
            shared: shared.clone(),
            seal_tx,
            segment: None,
            pending: Vec::new(),
            pending_bytes: 0,
            flush_rows: b.flush_rows,
            flush_bytes: b.flush_bytes,
            flush_interval: b.flush_interval,
            segment_max_bytes: b.segment_max_bytes,
            segment_max_age: b.segment_max_age,
            fsync: b.fsync,
        };
        let spool_thread = std::thread::Builder::new()
            .name("tape-spool".into())
            .spawn(move || spooler.run(rx))
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
                tx,
                shared,
                when_full: b.when_full,
            },
            spool_thread: Some(spool_thread),
            seal_thread: Some(seal_thread),
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
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        self.sender
            .tx
            .send(Msg::Flush(ack_tx))
            .map_err(|_| StorageError::Closed)?;
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
        // The close message queues behind every record already accepted, so they are written.
        let _ = self.sender.tx.send(Msg::Close);
        if let Some(t) = self.spool_thread.take() {
            let _ = t.join();
        }
        self.sender.shared.closed.store(true, Ordering::Relaxed);
        if let Some(t) = self.seal_thread.take() {
            let _ = t.join();
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

/// Counts bytes that reach the file, for segment rotation by size.
struct CountingFile {
    file: File,
    written: u64,
}

impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct OpenSegment {
    path: PathBuf,
    writer: StreamWriter<BufWriter<CountingFile>>,
    opened: Instant,
    hour: i64,
}

impl OpenSegment {
    fn bytes(&self) -> u64 {
        self.writer.get_ref().get_ref().written
    }
}

enum SealJob {
    Segment(PathBuf),
}

struct Spooler {
    dir: PathBuf,
    schema: SchemaRef,
    shared: Arc<Shared>,
    seal_tx: mpsc::Sender<SealJob>,
    segment: Option<OpenSegment>,
    pending: Vec<Exchange>,
    pending_bytes: usize,
    flush_rows: usize,
    flush_bytes: usize,
    flush_interval: Duration,
    segment_max_bytes: u64,
    segment_max_age: Duration,
    fsync: bool,
}

impl Spooler {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut deadline = Instant::now() + self.flush_interval;
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.flush();
                self.maybe_rotate();
                deadline = now + self.flush_interval;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(Msg::Record(ex)) => self.push(ex),
                Ok(Msg::Batch(rows)) => rows.into_iter().for_each(|ex| self.push(ex)),
                Ok(Msg::Flush(ack)) => {
                    self.flush();
                    let _ = ack.send(());
                }
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        // Records that raced with Close are still in the queue: write them too.
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Record(ex) => self.push(ex),
                Msg::Batch(rows) => rows.into_iter().for_each(|ex| self.push(ex)),
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
                Msg::Close => {}
            }
        }
        self.flush();
        self.close_segment();
        drop(rx);
        debug!(dir = %self.dir.display(), "spool thread stopped");
    }

    fn push(&mut self, ex: Exchange) {
        self.shared
            .counters
            .queue_depth
            .fetch_sub(1, Ordering::Relaxed);
        self.pending_bytes += ex.raw_size() as usize;
        self.pending.push(ex);
        if self.pending.len() >= self.flush_rows || self.pending_bytes >= self.flush_bytes {
            self.flush();
            self.maybe_rotate();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let n = rows.len() as u64;
        let hour = layout::hour_of(now_us());
        if self.segment.as_ref().is_some_and(|s| s.hour != hour) {
            self.close_segment();
        }
        let result = self.write_batch(&rows, hour);
        let c = &self.shared.counters;
        match result {
            Ok(bytes) => {
                c.written.fetch_add(n, Ordering::Relaxed);
                c.bytes_spooled.fetch_add(bytes, Ordering::Relaxed);
                Shared::set(&self.shared.spool_error, None);
            }
            Err(e) => {
                c.dropped_io.fetch_add(n, Ordering::Relaxed);
                warn!(error = %e, rows = n, "tape spool write failed; rows dropped");
                Shared::set(
                    &self.shared.spool_error,
                    Some(format!("spool write failed: {e}")),
                );
                // The segment may end in a partial batch; it is readable up to the last complete
                // one, so hand it to the sealer and start a fresh one next time.
                self.abandon_segment();
            }
        }
    }

    fn write_batch(&mut self, rows: &[Exchange], hour: i64) -> Result<u64> {
        if self.segment.is_none() {
            self.segment = Some(self.open_segment(hour)?);
        }
        let fsync = self.fsync;
        let batch = schema::encode(rows)
            .with_schema(self.schema.clone())
            .map_err(|e| StorageError::corrupt(&self.dir, format!("encoding batch: {e}")))?;
        let Some(seg) = self.segment.as_mut() else {
            return Err(StorageError::Closed);
        };
        let before = seg.bytes();
        let path = seg.path.clone();
        let io_err = |e: arrow_schema::ArrowError| match e {
            arrow_schema::ArrowError::IoError(_, source) => {
                StorageError::io("write", &path, source)
            }
            other => StorageError::corrupt(&path, other),
        };
        seg.writer.write(&batch).map_err(io_err)?;
        seg.writer.flush().map_err(io_err)?;
        if fsync {
            seg.writer
                .get_ref()
                .get_ref()
                .file
                .sync_data()
                .map_err(|e| StorageError::io("fsync", &path, e))?;
        }
        Ok(seg.bytes() - before)
    }

    fn open_segment(&self, hour: i64) -> Result<OpenSegment> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let path = layout::segment_path(&self.dir, &id);
        let spool = self.dir.join(SPOOL_DIR);
        layout::create_private_dir(&spool).map_err(|e| StorageError::io("create", &spool, e))?;
        let file =
            layout::create_private_file(&path).map_err(|e| StorageError::io("create", &path, e))?;
        let sink = BufWriter::with_capacity(1 << 20, CountingFile { file, written: 0 });
        let writer = StreamWriter::try_new(sink, &self.schema).map_err(|e| match e {
            arrow_schema::ArrowError::IoError(_, source) => {
                StorageError::io("write", &path, source)
            }
            other => StorageError::corrupt(&path, other),
        })?;
        debug!(segment = %path.display(), "opened spool segment");
        Ok(OpenSegment {
            path,
            writer,
            opened: Instant::now(),
            hour,
        })
    }

    fn maybe_rotate(&mut self) {
        let rotate = self.segment.as_ref().is_some_and(|s| {
            s.bytes() >= self.segment_max_bytes
                || s.opened.elapsed() >= self.segment_max_age
                || s.hour != layout::hour_of(now_us())
        });
        if rotate {
            self.close_segment();
        }
    }

    /// Finishes the open segment (end-of-stream marker, fsync) and hands it to the sealer.
    fn close_segment(&mut self) {
        let Some(mut seg) = self.segment.take() else {
            return;
        };
        let finished = seg
            .writer
            .finish()
            .and_then(|()| seg.writer.flush())
            .map_err(|e| e.to_string())
            .and_then(|()| {
                seg.writer
                    .get_ref()
                    .get_ref()
                    .file
                    .sync_all()
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = finished {
            warn!(segment = %seg.path.display(), error = %e, "could not finish spool segment; sealing what it holds");
        }
        let _ = self.seal_tx.send(SealJob::Segment(seg.path));
    }

    fn abandon_segment(&mut self) {
        if let Some(seg) = self.segment.take() {
            let path = seg.path.clone();
            drop(seg);
            let _ = self.seal_tx.send(SealJob::Segment(path));
        }
    }
}

struct Sealer {
    dir: PathBuf,
    settings: SealSettings,
    metadata: BTreeMap<String, String>,
    shared: Arc<Shared>,
    retry: Vec<PathBuf>,
}

const SEAL_RETRY: Duration = Duration::from_secs(5);

impl Sealer {
    fn run(mut self, rx: Receiver<SealJob>) {
        loop {
            match rx.recv_timeout(SEAL_RETRY) {
                Ok(SealJob::Segment(p)) => self.seal(p),
                Err(RecvTimeoutError::Timeout) => {
                    for p in std::mem::take(&mut self.retry) {
                        self.seal(p);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Shutting down: one last attempt for segments that failed before.
        for p in std::mem::take(&mut self.retry) {
            self.seal(p);
        }
        for p in &self.retry {
            error!(segment = %p.display(), "segment could not be sealed; it stays in the spool and will be sealed by the next writer");
        }
    }

    fn seal(&mut self, segment: PathBuf) {
        let c = &self.shared.counters;
        match seal_segment(&self.dir, &segment, &self.settings, &self.metadata) {
            Ok(out) => {
                c.bytes_sealed.fetch_add(out.bytes, Ordering::Relaxed);
                c.files_sealed.fetch_add(out.files, Ordering::Relaxed);
                c.rows_sealed.fetch_add(out.rows, Ordering::Relaxed);
                if let Some(tail) = &out.tail_error {
                    warn!(segment = %segment.display(), error = %tail, rows = out.rows, "segment ended in a partial batch (crash or failed write); sealed the complete batches");
                }
                debug!(segment = %segment.display(), rows = out.rows, files = out.files, "sealed segment");
                Shared::set(&self.shared.seal_error, None);
            }
            Err(e) if e.is_file_damage() => {
                c.seal_errors.fetch_add(1, Ordering::Relaxed);
                error!(segment = %segment.display(), error = %e, "spool segment is not readable; moved aside as .corrupt");
                let aside = segment.with_extension(format!("{SEGMENT_EXT}.corrupt"));
                let _ = fs::rename(&segment, aside);
            }
            Err(e) => {
                c.seal_errors.fetch_add(1, Ordering::Relaxed);
                warn!(segment = %segment.display(), error = %e, "sealing failed; will retry");
                Shared::set(
                    &self.shared.seal_error,
                    Some(format!("sealing failed: {e}")),
                );
                self.retry.push(segment);
            }
        }
    }
}
