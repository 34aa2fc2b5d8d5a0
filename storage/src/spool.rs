//! Spool segments (tier 1 of a tape): Arrow IPC *stream* files under `spool/`. The spool thread
//! ([`Spooler`]) writes them; [`SegmentReader`] reads them, including ones cut short by a crash.
//!
//! Format: one Arrow IPC stream per segment, schema = [`crate::schema::tape_schema`] with the
//! writer's file metadata (schema version, writer version, host, the caller's keys), then one
//! record batch per flush. No IPC compression: the spool is written on the recorder's hot core
//! and compressed once, by sealing.
//!
//! The spool thread wakes when a record arrives after a quiet spell, when the queue is a quarter
//! full, on a flush request, and otherwise every tick (a tenth of the flush interval, 5–50 ms)
//! while records keep coming, so producers that hand over small batches never pay a wake-up
//! each. Per wake-up it takes every batch waiting in the queue, appends each record to
//! a [`BatchEncoder`] (Arrow builders, pre-sized after the first batch) and drops the producer's
//! batch once it is encoded, releasing its bytes in the queue. At `flush_interval`, `flush_rows` or
//! `flush_bytes` the builders become one `RecordBatch`, written to the segment and flushed to the
//! OS (`fsync` if asked). A segment is closed (end-of-stream marker) and handed to the sealer,
//! which fsyncs it before anything else, when it reaches `segment_max_bytes`, `segment_max_age`, or
//! the wall-clock hour changes. A failed write drops that batch (counted as `dropped_io`), marks
//! the writer degraded, and abandons the segment (readable up to its last complete batch); the next
//! batch opens a fresh one, so recording resumes when the disk does.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::SchemaRef;
use tracing::{debug, warn};

use crate::error::{Result, StorageError};
use crate::exchange::now_us;
use crate::layout::{self, SPOOL_DIR};
use crate::queue::{Item, Taken};
use crate::schema::{self, BatchEncoder, META_SCHEMA_VERSION, MIN_SCHEMA_VERSION, SCHEMA_VERSION};
use crate::seal::SealJobs;
use crate::writer::Shared;

/// Reads the batches of one spool segment. A segment whose tail is a partial batch (the writer
/// crashed or its disk failed mid-write) yields every complete batch and then stops, keeping the
/// reason in [`SegmentReader::tail_error`].
#[derive(Debug)]
pub(crate) struct SegmentReader {
    path: PathBuf,
    inner: StreamReader<BufReader<File>>,
    tail_error: Option<String>,
    done: bool,
}

impl SegmentReader {
    /// Opens a segment. `Ok(None)` for an empty file (created, never written).
    pub(crate) fn open(path: &Path, projection: Option<&[&str]>) -> Result<Option<Self>> {
        let file = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("stat", path, e))?
            .len();
        if len == 0 {
            return Ok(None);
        }
        let probe = StreamReader::try_new(BufReader::new(file), None).map_err(|e| {
            StorageError::corrupt(path, format!("not an Arrow IPC stream segment: {e}"))
        })?;
        let file_schema = probe.schema();
        check_version(path, file_schema.metadata().get(META_SCHEMA_VERSION))?;
        schema::check_schema(&file_schema).map_err(|e| StorageError::schema(path, e))?;
        let inner = match projection {
            None => probe,
            Some(names) => {
                drop(probe);
                let idx: Vec<usize> = names
                    .iter()
                    .filter_map(|n| file_schema.index_of(n).ok())
                    .collect();
                let file = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
                StreamReader::try_new(BufReader::new(file), Some(idx))
                    .map_err(|e| StorageError::corrupt(path, e))?
            }
        };
        Ok(Some(Self {
            path: path.to_owned(),
            inner,
            tail_error: None,
            done: false,
        }))
    }

    /// Schema of the batches this reader yields (after projection).
    pub(crate) fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    /// The next complete batch; `None` at the end or at a partial tail.
    pub(crate) fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.done {
            return None;
        }
        match self.inner.next() {
            Some(Ok(b)) => Some(Ok(b)),
            Some(Err(e)) => {
                self.done = true;
                self.tail_error = Some(e.to_string());
                tracing::debug!(segment = %self.path.display(), error = %e, "spool segment ends in a partial batch");
                None
            }
            None => {
                self.done = true;
                None
            }
        }
    }

    /// Why reading stopped early, if it did.
    pub(crate) fn tail_error(&self) -> Option<&str> {
        self.tail_error.as_deref()
    }
}

/// Refuses files whose schema version is newer than this build's (or unreadable).
pub(crate) fn check_version(path: &Path, version: Option<&String>) -> Result<()> {
    let Some(v) = version else {
        return Err(StorageError::corrupt(
            path,
            format!("no `{META_SCHEMA_VERSION}` in the file metadata: not a tapedeck tape file"),
        ));
    };
    let found: u32 = v.trim().parse().map_err(|_| {
        StorageError::corrupt(
            path,
            format!("`{META_SCHEMA_VERSION}` is `{v}`, not a number"),
        )
    })?;
    if found < MIN_SCHEMA_VERSION {
        return Err(StorageError::corrupt(
            path,
            format!("`{META_SCHEMA_VERSION}` is {found}: no tapedeck wrote that version"),
        ));
    }
    if found > SCHEMA_VERSION {
        return Err(StorageError::FutureSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// How long a busy spool thread sleeps before it collects what arrived: a tenth of the flush
/// interval, between 5 and 50 ms. Records wait in the queue at most this long (or until it is a
/// quarter full) before they are encoded.
fn collect_tick(flush_interval: Duration) -> Duration {
    (flush_interval / 10).clamp(Duration::from_millis(5), Duration::from_millis(50))
}

/// How the spool thread batches and rotates.
#[derive(Debug, Clone)]
pub(crate) struct SpoolSettings {
    pub(crate) flush_interval: Duration,
    pub(crate) flush_rows: usize,
    pub(crate) flush_bytes: usize,
    pub(crate) segment_max_bytes: u64,
    pub(crate) segment_max_age: Duration,
    pub(crate) fsync: bool,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            flush_interval: Duration::from_secs(1),
            flush_rows: 4096,
            // Small batches keep sealing's memory low: Parquet encodes a column chunk of a
            // batch's rows before it checks the page size (1 MiB: peak RSS 48 MiB sealing 16 KB
            // bodies, 73 MiB at 2 MiB, 100 MiB at 4 MiB; storage/examples/spool_cost.rs).
            flush_bytes: 1 << 20,
            segment_max_bytes: 128 << 20,
            segment_max_age: Duration::from_secs(600),
            fsync: false,
        }
    }
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

/// The spool thread: queue → Arrow builders → IPC segment. See the module docs.
pub(crate) struct Spooler {
    dir: PathBuf,
    schema: SchemaRef,
    shared: Arc<Shared>,
    seal: SealJobs,
    segment: Option<OpenSegment>,
    pending: BatchEncoder,
    settings: SpoolSettings,
}

impl Spooler {
    pub(crate) fn new(
        dir: PathBuf,
        schema: SchemaRef,
        shared: Arc<Shared>,
        seal: SealJobs,
        settings: SpoolSettings,
    ) -> Self {
        Spooler {
            dir,
            schema,
            shared,
            seal,
            segment: None,
            pending: BatchEncoder::with_presize_cap(settings.flush_bytes),
            settings,
        }
    }

    pub(crate) fn run(mut self) {
        let interval = self.settings.flush_interval;
        let tick = collect_tick(interval);
        let mut deadline = Instant::now() + interval;
        let mut items = VecDeque::new();
        let mut idle = true;
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.flush();
                self.maybe_rotate();
                deadline = now + interval;
            }
            // Idle: sleep until the flush deadline, woken by the next record. Busy: come back
            // for what arrived after a tick, woken early only by a quarter-full queue.
            let left = deadline.saturating_duration_since(now);
            let wait = if idle { left } else { left.min(tick) };
            let taken = self.shared.queue.take(&mut items, wait, idle);
            idle = items.is_empty();
            for item in items.drain(..) {
                match item {
                    Item::Records { records, bytes } => {
                        for ex in &records {
                            self.pending.push(ex);
                            if self.pending.rows() >= self.settings.flush_rows
                                || self.pending.bytes() >= self.settings.flush_bytes
                            {
                                self.flush();
                                self.maybe_rotate();
                            }
                        }
                        let n = records.len();
                        // Dropped in place once encoded (the producer's batch, a bounded
                        // number of records), then no longer counted by the queue.
                        drop(records);
                        self.shared.queue.release(n, bytes);
                    }
                    Item::Flush(ack) => {
                        self.flush();
                        self.maybe_rotate();
                        let _ = ack.send(());
                    }
                }
            }
            if taken == Taken::Closed {
                break;
            }
        }
        self.flush();
        self.close_segment();
        debug!(dir = %self.dir.display(), "spool thread stopped");
    }

    fn flush(&mut self) {
        let n = self.pending.rows() as u64;
        if n == 0 {
            return;
        }
        let batch = self.pending.finish(self.schema.clone());
        let hour = layout::hour_of(now_us());
        if self.segment.as_ref().is_some_and(|s| s.hour != hour) {
            self.close_segment();
        }
        let result = self.write_batch(&batch, hour);
        drop(batch);
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

    fn write_batch(&mut self, batch: &RecordBatch, hour: i64) -> Result<u64> {
        if self.segment.is_none() {
            self.segment = Some(self.open_segment(hour)?);
        }
        let fsync = self.settings.fsync;
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
        seg.writer.write(batch).map_err(io_err)?;
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
        let sink = BufWriter::with_capacity(256 << 10, CountingFile { file, written: 0 });
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
            s.bytes() >= self.settings.segment_max_bytes
                || s.opened.elapsed() >= self.settings.segment_max_age
                || s.hour != layout::hour_of(now_us())
        });
        if rotate {
            self.close_segment();
        }
    }

    /// Finishes the open segment (end-of-stream marker) and hands it to the sealer, which fsyncs
    /// it: the spool thread does not wait for the disk.
    fn close_segment(&mut self) {
        let Some(mut seg) = self.segment.take() else {
            return;
        };
        let finished = seg
            .writer
            .finish()
            .and_then(|()| seg.writer.flush())
            .map_err(|e| e.to_string());
        if let Err(e) = finished {
            warn!(segment = %seg.path.display(), error = %e, "could not finish spool segment; sealing what it holds");
        }
        let bytes = seg.bytes();
        self.seal.send(seg.path, bytes);
    }

    fn abandon_segment(&mut self) {
        if let Some(seg) = self.segment.take() {
            let (path, bytes) = (seg.path.clone(), seg.bytes());
            drop(seg);
            self.seal.send(path, bytes);
        }
    }
}
