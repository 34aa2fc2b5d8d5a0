//! Sealing (tier 2 of a tape): compacting a closed spool segment into hour-partitioned zstd
//! Parquet files, and the seal threads that do it ([`SealLanes`]).
//!
//! Format: `date=YYYY-MM-DD/hour=HH/part-<segment-id>.parquet`, zstd (level 3 by default),
//! dictionary encoding except for ids, bodies, client addresses, timestamps and latencies,
//! page-level statistics except for bodies, headers, client addresses, queries, errors and trace
//! ids, row groups of at most 65,536 rows / 64 MiB (encoded), the segment's file metadata plus
//! `tapedeck.segment`. Written under a temp name, fsynced, renamed, directory fsynced; then the
//! segment is deleted. Idempotent: names come from the segment id.
//!
//! Threads ("lanes"), both taking the oldest waiting segment first:
//!
//! ```text
//!  spool thread ── closed segment (+ its size) ──► jobs ──► idle lane   (nice 19): any job
//!                                                        └► normal lane (nice 0):  only while the
//!                                                           backlog > seal_backlog, and on close
//! ```
//!
//! Sealing costs more CPU per byte than spooling (zstd, dictionaries, statistics), so on a
//! saturated core it would take the proxy's time. The idle lane runs at the lowest priority a
//! thread can set without privileges (`setpriority(2)` on its thread id, nice 19: about 1.5 % of
//! a core against one busy nice-0 thread), so it seals with CPU time nobody else wants. While
//! the core stays saturated, closed segments pile up in `spool/` instead (uncompressed Arrow IPC,
//! readable by every reader). Once they exceed `seal_backlog` bytes the normal lane seals as
//! well, at normal priority, so the backlog — disk use and the work left for close — stays
//! bounded. A nice value cannot be lowered again without privileges, hence two threads rather
//! than one that changes its priority. `seal_backlog = 0` starts only the normal lane (seal
//! everything at once, as before).
//!
//! A CPU limit (a cgroup quota, such as a Kubernetes limit) is spent by every thread whatever
//! its nice value, so under one the idle lane also waits — before a segment and between two of
//! its batches — while the process is being throttled by its quota and the rest of the process
//! uses at least as much CPU as the lane ([`crate::cpu_limit`]); the backlog bound and the normal
//! lane work as above.
//!
//! Crash safety: a closed segment is complete when it is queued and fsynced by the normal lane
//! right away, before either lane seals it (the spool thread itself never waits for the disk);
//! segments left by a crash are queued again by the next writer. A segment that fails to seal is
//! retried every 5 s; one that cannot be read is moved aside as `.corrupt`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use tracing::{debug, error, info, warn};

use crate::cpu_limit::CpuLimit;
use crate::error::{Result, StorageError};
use crate::layout::{self, SEGMENT_EXT};
use crate::schema::{META_SEGMENT, col};
use crate::spool::SegmentReader;
use crate::writer::Shared;

/// How sealed files are written.
#[derive(Debug, Clone)]
pub(crate) struct SealSettings {
    pub(crate) zstd_level: i32,
    pub(crate) row_group_rows: usize,
    pub(crate) row_group_bytes: usize,
    /// Bytes of closed segments left to the idle lane before the normal lane helps.
    pub(crate) backlog_bytes: u64,
}

impl Default for SealSettings {
    fn default() -> Self {
        Self {
            zstd_level: 3,
            row_group_rows: 65_536,
            row_group_bytes: 64 << 20,
            backlog_bytes: 1 << 30,
        }
    }
}

/// What sealing one segment produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SealOutcome {
    /// Rows moved into sealed files.
    pub rows: u64,
    /// Sealed files written (one per hour the rows span).
    pub files: u64,
    /// Bytes of the sealed files.
    pub bytes: u64,
    /// The segment ended in a partial batch (crash or failed write); the complete batches before
    /// it were sealed.
    pub tail_error: Option<String>,
}

/// Seals one spool segment of the tape at `tape` into Parquet with the default settings, then
/// deletes it. This is what a writer does with each closed segment and with leftovers at start.
pub fn seal(tape: &Path, segment: &Path) -> Result<SealOutcome> {
    seal_segment(tape, segment, &SealSettings::default(), &BTreeMap::new())
}

/// Columns written without page statistics (and header names and values, which are nested).
/// Min/max of a body, a header, an address, a query string, an error message or a trace id
/// prunes nothing (no reader filters on them, and every page spans the whole range), but
/// computing them compares every value twice: 14 % of sealing's instructions on recorded 300 B
/// exchanges (`benches/RESULTS.md`, "Sealing: statistics where they prune").
const NO_STATISTICS: [&str; 6] = [
    col::REQ_BODY,
    col::RESP_BODY,
    col::CLIENT_ADDR,
    col::QUERY,
    col::ERROR,
    col::TRACE_ID,
];

/// Parquet writer properties for sealed files.
pub(crate) fn writer_properties(
    settings: &SealSettings,
    metadata: &BTreeMap<String, String>,
) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(settings.zstd_level)
        .map_err(|e| StorageError::InvalidConfig(format!("zstd level: {e}")))?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(settings.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(settings.row_group_bytes.max(1)))
        .set_created_by(format!("tapedeck {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(
            metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect(),
        ));
    // High-cardinality columns: a dictionary only costs time before Parquet falls back, and
    // timestamps and latencies in µs are nearly all distinct (a row group's dictionary never
    // outgrows the page limit, so each value would be interned and stored twice).
    for c in [
        col::ID,
        col::ORIGIN_ID,
        col::REQ_BODY,
        col::RESP_BODY,
        col::CLIENT_ADDR,
        col::STARTED_AT,
        col::TTFB_US,
        col::DURATION_US,
        col::TOTAL_US,
        col::SCHEDULED_AT,
        col::SENT_AT,
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    for c in NO_STATISTICS {
        b = b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None);
    }
    for c in [col::REQ_HEADERS, col::RESP_HEADERS] {
        for leaf in ["name", "value"] {
            let path = ColumnPath::new(vec![c.into(), "list".into(), "item".into(), leaf.into()]);
            b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
        }
    }
    Ok(b.build())
}

struct HourFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
}

/// Seals `segment` into Parquet files under `tape`, then deletes it.
///
/// Idempotent: the output names are derived from the segment id, so a crash at any point leaves
/// either the segment (re-sealed next time, replacing partial output) or only complete files.
pub(crate) fn seal_segment(
    tape: &Path,
    segment: &Path,
    settings: &SealSettings,
    metadata: &BTreeMap<String, String>,
) -> Result<SealOutcome> {
    // Never aborted, so never `None`.
    seal_segment_unless(tape, segment, settings, metadata, &|| false).map(Option::unwrap_or_default)
}

/// [`seal_segment`], giving up (temp files removed, the segment untouched: `Ok(None)`) when
/// `abort` returns true between two batches.
fn seal_segment_unless(
    tape: &Path,
    segment: &Path,
    settings: &SealSettings,
    metadata: &BTreeMap<String, String>,
    abort: &dyn Fn() -> bool,
) -> Result<Option<SealOutcome>> {
    let seg_id = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| StorageError::corrupt(segment, "segment file name is not valid"))?
        .to_owned();
    let mut out = SealOutcome::default();
    let Some(mut reader) = SegmentReader::open(segment, None)? else {
        // Created but never written (crash right after creation): nothing to keep.
        remove_segment(segment)?;
        return Ok(Some(out));
    };
    let mut meta = metadata.clone();
    // Keep what the original writer recorded (host, version, upstream) when recovering.
    for (k, v) in reader.schema().metadata() {
        meta.entry(k.clone()).or_insert_with(|| v.clone());
    }
    meta.insert(META_SEGMENT.into(), seg_id.clone());
    let props = writer_properties(settings, &meta)?;
    let schema = reader.schema();

    let mut files: HashMap<i64, HourFile> = HashMap::new();
    let result = (|| -> Result<bool> {
        while let Some(batch) = reader.next_batch() {
            if abort() {
                return Ok(false);
            }
            let batch = batch?;
            for (hour, part) in split_by_hour(&batch, segment)? {
                let f = match files.get_mut(&hour) {
                    Some(f) => f,
                    None => {
                        let dest = layout::sealed_path(tape, hour, &seg_id);
                        let f = open_hour_file(dest, schema.clone(), props.clone())?;
                        files.entry(hour).or_insert(f)
                    }
                };
                f.writer.write(&part).map_err(|e| parquet_err(&f.tmp, e))?;
                out.rows += part.num_rows() as u64;
            }
        }
        Ok(true)
    })();
    match result {
        Ok(true) => {}
        Ok(false) => {
            for f in files.into_values() {
                let _ = fs::remove_file(&f.tmp);
            }
            return Ok(None);
        }
        Err(e) => {
            for f in files.into_values() {
                let _ = fs::remove_file(&f.tmp);
            }
            return Err(e);
        }
    }
    out.tail_error = reader.tail_error().map(str::to_owned);

    // Finish every file before publishing any, then publish, then drop the segment.
    let mut finished = Vec::new();
    for f in files.into_values() {
        let HourFile { tmp, dest, writer } = f;
        let closed = writer
            .into_inner()
            .map_err(|e| parquet_err(&tmp, e))
            .and_then(|w| {
                w.into_inner()
                    .map_err(|e| StorageError::io("write", &tmp, e.into_error()))
            })
            .and_then(|file| {
                file.sync_all()
                    .map_err(|e| StorageError::io("fsync", &tmp, e))
            });
        if let Err(e) = closed {
            let _ = fs::remove_file(&tmp);
            for (t, _) in &finished {
                let _ = fs::remove_file(t);
            }
            return Err(e);
        }
        finished.push((tmp, dest));
    }
    for (tmp, dest) in &finished {
        let len = fs::metadata(tmp).map(|m| m.len()).unwrap_or(0);
        fs::rename(tmp, dest).map_err(|e| StorageError::io("rename", dest, e))?;
        if let Some(parent) = dest.parent() {
            let _ = layout::sync_dir(parent);
        }
        out.bytes += len;
        out.files += 1;
    }
    remove_segment(segment)?;
    Ok(Some(out))
}

fn remove_segment(segment: &Path) -> Result<()> {
    fs::remove_file(segment).map_err(|e| StorageError::io("remove", segment, e))?;
    if let Some(parent) = segment.parent() {
        let _ = layout::sync_dir(parent);
    }
    Ok(())
}

fn open_hour_file(
    dest: PathBuf,
    schema: arrow_schema::SchemaRef,
    props: WriterProperties,
) -> Result<HourFile> {
    let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    layout::create_private_dir(&dir).map_err(|e| StorageError::io("create", &dir, e))?;
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("part.parquet");
    let tmp = dir.join(format!(".{name}.tmp"));
    let file =
        layout::create_private_file(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
    let writer = ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema, Some(props))
        .map_err(|e| parquet_err(&tmp, e))?;
    Ok(HourFile { tmp, dest, writer })
}

fn parquet_err(path: &Path, e: parquet::errors::ParquetError) -> StorageError {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(io) => StorageError::io("write", path, *io),
                Err(other) => StorageError::corrupt(path, other),
            }
        }
        other => StorageError::corrupt(path, other),
    }
}

/// Splits a batch into one batch per hour of `started_at` (one slice, no copy, in the usual case
/// where all rows share an hour).
fn split_by_hour(batch: &RecordBatch, path: &Path) -> Result<Vec<(i64, RecordBatch)>> {
    let ts = batch
        .column_by_name(col::STARTED_AT)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| StorageError::corrupt(path, "started_at column missing or mistyped"))?;
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    let hours: Vec<i64> = ts.values().iter().map(|&t| layout::hour_of(t)).collect();
    let first = hours[0];
    if hours.iter().all(|&h| h == first) {
        return Ok(vec![(first, batch.clone())]);
    }
    let mut distinct: Vec<i64> = hours.clone();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
        .into_iter()
        .map(|h| {
            let mask = BooleanArray::from_iter(hours.iter().map(|&x| Some(x == h)));
            arrow_select::filter::filter_record_batch(batch, &mask)
                .map(|b| (h, b))
                .map_err(|e| StorageError::corrupt(path, e))
        })
        .collect()
}

/// How long a segment that failed to seal waits before the next attempt.
const SEAL_RETRY: Duration = Duration::from_secs(5);
/// "Never again" for a segment that failed while closing (it stays for the next writer).
const CLOSED: Duration = Duration::from_secs(365 * 24 * 3600);

/// A closed segment waiting to be sealed.
#[derive(Debug)]
struct Job {
    path: PathBuf,
    bytes: u64,
    /// Not before this instant (a retry after a failure).
    due: Option<Instant>,
    /// The segment is on disk (`fsync`): only then may it be sealed.
    synced: bool,
}

#[derive(Debug, Default)]
struct JobState {
    jobs: VecDeque<Job>,
    /// Bytes of segments queued, being sealed, or waiting for a retry.
    backlog: u64,
    /// The writer is closing: the normal lane seals everything; the idle lane takes nothing and
    /// gives back the segment it is sealing (between two batches), so that close never waits
    /// for a starved low-priority thread.
    urgent: bool,
    /// Every segment has been queued: stop once none is left to attempt.
    closing: bool,
    /// The idle lane is sealing a segment, which it may still give back: the normal lane must
    /// not stop before it knows.
    idle_busy: bool,
}

#[derive(Debug)]
struct JobQueue {
    state: Mutex<JobState>,
    cv: Condvar,
    shared: Arc<Shared>,
    backlog_limit: u64,
    /// Whether an idle lane runs (else the normal lane takes every job).
    idle_lane: bool,
}

impl JobQueue {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_backlog(&self, s: &mut JobState, backlog: u64) {
        s.backlog = backlog;
        self.shared
            .counters
            .seal_backlog
            .store(backlog, Ordering::Relaxed);
    }
}

/// Where the spool thread hands closed segments to the seal lanes. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct SealJobs {
    queue: Arc<JobQueue>,
}

impl SealJobs {
    /// Queues a closed segment of `bytes` bytes for sealing.
    pub(crate) fn send(&self, path: PathBuf, bytes: u64) {
        let mut s = self.queue.lock();
        let backlog = s.backlog + bytes;
        self.queue.set_backlog(&mut s, backlog);
        s.jobs.push_back(Job {
            path,
            bytes,
            due: None,
            synced: false,
        });
        self.queue.cv.notify_all();
    }
}

/// Which seal thread this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// nice 19: takes any job.
    Idle,
    /// nice 0: only over the backlog bound, on close, or when there is no idle lane.
    Normal,
}

/// The seal threads of a writer. See the module docs.
#[derive(Debug)]
pub(crate) struct SealLanes {
    queue: Arc<JobQueue>,
    threads: Vec<JoinHandle<()>>,
}

impl SealLanes {
    /// Starts the lanes and queues `leftovers` (segments of an earlier writer) first.
    pub(crate) fn start(
        dir: &Path,
        settings: SealSettings,
        metadata: BTreeMap<String, String>,
        shared: Arc<Shared>,
        leftovers: Vec<PathBuf>,
    ) -> Result<SealLanes> {
        let idle_lane = settings.backlog_bytes > 0;
        let queue = Arc::new(JobQueue {
            state: Mutex::new(JobState::default()),
            cv: Condvar::new(),
            shared: shared.clone(),
            backlog_limit: settings.backlog_bytes,
            idle_lane,
        });
        let jobs = SealJobs {
            queue: queue.clone(),
        };
        for seg in leftovers {
            let bytes = fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
            jobs.send(seg, bytes);
        }
        let mut lanes = SealLanes {
            queue,
            threads: Vec::new(),
        };
        let mut kinds = vec![Lane::Normal];
        if idle_lane {
            kinds.push(Lane::Idle);
        }
        for lane in kinds {
            let worker = Sealer {
                dir: dir.to_owned(),
                settings: settings.clone(),
                metadata: metadata.clone(),
                shared: shared.clone(),
                queue: lanes.queue.clone(),
                lane,
                limit: RefCell::new(None),
            };
            let name = match lane {
                Lane::Idle => "tape-seal-idle",
                Lane::Normal => "tape-seal",
            };
            match std::thread::Builder::new()
                .name(name.into())
                .spawn(move || worker.run())
            {
                Ok(t) => lanes.threads.push(t),
                Err(e) => {
                    // Stop what started; the writer fails to open.
                    lanes.finish();
                    return Err(StorageError::io("spawn seal thread for", dir, e));
                }
            }
        }
        Ok(lanes)
    }

    /// The handle the spool thread queues closed segments with.
    pub(crate) fn jobs(&self) -> SealJobs {
        SealJobs {
            queue: self.queue.clone(),
        }
    }

    /// From now on only the normal lane seals (the writer is closing; see [`JobState::urgent`]).
    pub(crate) fn hurry(&self) {
        self.queue.lock().urgent = true;
        self.queue.cv.notify_all();
    }

    /// Seals everything queued at normal priority (one more attempt for failed segments) and
    /// stops.
    pub(crate) fn finish(mut self) {
        {
            let mut s = self.queue.lock();
            s.urgent = true;
            s.closing = true;
            for j in &mut s.jobs {
                j.due = None;
            }
        }
        self.queue.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let s = self.queue.lock();
        for j in &s.jobs {
            error!(segment = %j.path.display(), "segment could not be sealed; it stays in the spool and will be sealed by the next writer");
        }
    }
}

/// What became of one attempt.
enum Sealed {
    /// Sealed (or moved aside as unreadable): off the backlog.
    Done,
    /// The idle lane gave it back because the writer is closing.
    GivenBack,
    /// To be tried again later.
    Failed,
}

/// One seal thread.
struct Sealer {
    dir: PathBuf,
    settings: SealSettings,
    metadata: BTreeMap<String, String>,
    shared: Arc<Shared>,
    queue: Arc<JobQueue>,
    lane: Lane,
    /// The idle lane's watch on the process's CPU limit, if it has one.
    limit: RefCell<Option<CpuLimit>>,
}

/// How long the idle lane waits before it looks at the CPU limit again.
const LIMIT_PAUSE: Duration = Duration::from_millis(250);

impl Sealer {
    fn run(self) {
        if self.lane == Lane::Idle {
            if let Err(e) = lower_priority() {
                // Sealing still happens, at normal priority: what the writer did before.
                warn!(error = %e, "cannot lower the seal thread's priority; sealing at normal priority");
            }
            *self.limit.borrow_mut() = CpuLimit::discover();
        }
        let mut s = self.queue.lock();
        loop {
            // A closed segment reaches the disk first: the normal lane fsyncs it as soon as it
            // is queued, whatever the backlog (waiting on the disk costs no CPU), so that the
            // spool thread never waits for the disk (at 16 KB bodies an `fsync` of a 128 MiB
            // segment took longer than the queue could absorb).
            if self.lane == Lane::Normal
                && let Some(job) = s.jobs.iter().find(|j| !j.synced)
            {
                let path = job.path.clone();
                drop(s);
                sync_segment(&path);
                s = self.queue.lock();
                if let Some(job) = s.jobs.iter_mut().find(|j| j.path == path) {
                    job.synced = true;
                }
                self.queue.cv.notify_all();
                continue;
            }
            let now = Instant::now();
            let may_take = match self.lane {
                Lane::Idle => !s.urgent,
                Lane::Normal => {
                    s.urgent || !self.queue.idle_lane || s.backlog > self.queue.backlog_limit
                }
            };
            // The oldest segment on disk and not waiting for a retry.
            let available = s
                .jobs
                .iter()
                .position(|j| j.synced && j.due.is_none_or(|d| d <= now));
            if may_take && available.is_some() && self.at_cpu_limit() {
                // Not now: look again after a pause (a close or a new bound wakes it earlier).
                let (g, _) = self
                    .queue
                    .cv
                    .wait_timeout(s, LIMIT_PAUSE)
                    .unwrap_or_else(|e| e.into_inner());
                s = g;
                continue;
            }
            if may_take && let Some(job) = available.and_then(|i| s.jobs.remove(i)) {
                if self.lane == Lane::Idle {
                    s.idle_busy = true;
                }
                drop(s);
                let outcome = self.seal(&job.path);
                s = self.queue.lock();
                if self.lane == Lane::Idle {
                    s.idle_busy = false;
                }
                match outcome {
                    Sealed::Done => {
                        let backlog = s.backlog.saturating_sub(job.bytes);
                        self.queue.set_backlog(&mut s, backlog);
                    }
                    // Given back: first in line for the normal lane.
                    Sealed::GivenBack => s.jobs.push_front(Job { due: None, ..job }),
                    Sealed::Failed => {
                        // Closing: no more attempts by this writer; the next one seals it.
                        let wait = if s.closing { CLOSED } else { SEAL_RETRY };
                        s.jobs.push_back(Job {
                            due: Some(Instant::now() + wait),
                            ..job
                        });
                    }
                }
                self.queue.cv.notify_all();
                continue;
            }
            // The normal lane stops only once nothing is left to attempt, not even a segment the
            // idle lane may yet hand back (it does between two batches, which can take a while
            // at nice 19 on a busy machine).
            if s.closing && (self.lane == Lane::Idle || (available.is_none() && !s.idle_busy)) {
                break;
            }
            // Sleep until a job arrives, a retry is due, the backlog crosses the bound, or the
            // writer closes (each of which notifies).
            let next = s.jobs.iter().filter_map(|j| j.due).min();
            let wait = next.map_or(SEAL_RETRY, |d| d.saturating_duration_since(now));
            let (g, _) = self
                .queue
                .cv
                .wait_timeout(s, wait.max(Duration::from_millis(1)))
                .unwrap_or_else(|e| e.into_inner());
            s = g;
        }
    }

    /// Whether the idle lane should leave the CPU to the rest of the process (see the module
    /// docs). Logs when it first does.
    fn at_cpu_limit(&self) -> bool {
        if self.lane != Lane::Idle {
            return false;
        }
        let mut limit = self.limit.borrow_mut();
        let Some(l) = limit.as_mut() else {
            return false;
        };
        let wait = l.should_wait();
        if wait && !l.reported() {
            info!(
                "the process is at its CPU limit: the idle seal lane waits while the proxy needs the quota (the backlog bound still applies)"
            );
        }
        wait
    }

    /// Seals one segment. The idle lane gives it back if the writer starts closing, and waits
    /// between two batches while the process is at its CPU limit.
    fn seal(&self, segment: &Path) -> Sealed {
        let c = &self.shared.counters;
        let urgent = || self.lane == Lane::Idle && self.queue.lock().urgent;
        let between_batches = || loop {
            if urgent() {
                return true;
            }
            if !self.at_cpu_limit() {
                return false;
            }
            std::thread::sleep(LIMIT_PAUSE);
        };
        match seal_segment_unless(
            &self.dir,
            segment,
            &self.settings,
            &self.metadata,
            &between_batches,
        ) {
            Ok(None) => {
                debug!(segment = %segment.display(), "closing: the idle seal lane hands the segment over");
                Sealed::GivenBack
            }
            Ok(Some(out)) => {
                c.bytes_sealed.fetch_add(out.bytes, Ordering::Relaxed);
                c.files_sealed.fetch_add(out.files, Ordering::Relaxed);
                c.rows_sealed.fetch_add(out.rows, Ordering::Relaxed);
                if let Some(tail) = &out.tail_error {
                    warn!(segment = %segment.display(), error = %tail, rows = out.rows, "segment ended in a partial batch (crash or failed write); sealed the complete batches");
                }
                debug!(segment = %segment.display(), rows = out.rows, files = out.files, lane = ?self.lane, "sealed segment");
                Shared::set(&self.shared.seal_error, None);
                Sealed::Done
            }
            Err(e) if e.is_file_damage() => {
                c.seal_errors.fetch_add(1, Ordering::Relaxed);
                error!(segment = %segment.display(), error = %e, "spool segment is not readable; moved aside as .corrupt");
                let aside = segment.with_extension(format!("{SEGMENT_EXT}.corrupt"));
                let _ = fs::rename(segment, aside);
                Sealed::Done
            }
            Err(e) => {
                c.seal_errors.fetch_add(1, Ordering::Relaxed);
                warn!(segment = %segment.display(), error = %e, "sealing failed; will retry");
                Shared::set(
                    &self.shared.seal_error,
                    Some(format!("sealing failed: {e}")),
                );
                Sealed::Failed
            }
        }
    }
}

/// `fsync`s a closed segment. A failure is logged, not fatal: sealing reads the segment through
/// the page cache either way, and the sealed file is fsynced itself.
fn sync_segment(path: &Path) {
    if let Err(e) = File::open(path).and_then(|f| f.sync_all()) {
        warn!(segment = %path.display(), error = %e, "could not fsync a closed spool segment");
    }
}

/// Lowers the calling thread's CPU priority to nice 19 (Linux applies `setpriority` on a
/// thread id to that thread only). Needs no privileges; cannot be undone without them.
fn lower_priority() -> std::io::Result<()> {
    let tid = rustix::thread::gettid();
    rustix::process::setpriority_process(Some(tid), 19).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Exchange, TapeWriter};

    /// A copy of a real segment holding `n` exchanges, in `tape`'s spool.
    fn segment(tape: &Path, n: usize) -> PathBuf {
        let src = tempfile::tempdir().expect("tempdir");
        let w = TapeWriter::builder(src.path()).open().expect("writer");
        for i in 0..n {
            let ex = Exchange {
                id: Exchange::new_id(),
                started_at_us: 1_767_225_600_000_000 + i as i64,
                ..Exchange::default()
            };
            w.append(ex).expect("append");
        }
        w.flush().expect("flush");
        let seg = crate::writer::list_segments(&src.path().join(layout::SPOOL_DIR))
            .expect("list")
            .remove(0);
        let spool = tape.join(layout::SPOOL_DIR);
        layout::create_private_dir(&spool).expect("spool dir");
        let dest = spool.join(seg.file_name().expect("name"));
        fs::copy(&seg, &dest).expect("copy");
        dest
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    #[test]
    fn sealing_leftovers_empties_the_spool_and_respects_the_lock() {
        let tape = tempfile::tempdir().expect("tempdir");
        segment(tape.path(), 10);
        segment(tape.path(), 5);
        {
            // A writer holds the tape: sealing its spool from outside is refused.
            let w = TapeWriter::builder(tape.path())
                .seal_backlog(u64::MAX)
                .open()
                .expect("writer");
            let err = TapeWriter::builder(tape.path())
                .seal_leftovers()
                .expect_err("in use");
            assert!(matches!(err, StorageError::InUse { .. }), "{err}");
            drop(w);
        }
        // The writer above sealed them on close; leave two more, as a crash would.
        segment(tape.path(), 7);
        segment(tape.path(), 3);
        let done = TapeWriter::builder(tape.path())
            .seal_leftovers()
            .expect("seal");
        assert_eq!(
            (done.segments, done.rows, done.failed, done.left),
            (2, 10, 0, 0)
        );
        assert!(done.files >= 1 && done.bytes > 0, "{done:?}");
        let spool = tape.path().join(layout::SPOOL_DIR);
        assert!(
            crate::writer::list_segments(&spool)
                .expect("list")
                .is_empty()
        );
        let rows = crate::Tape::open(&[tape.path()])
            .expect("tape")
            .exchanges(crate::Filter::default())
            .collect::<Result<Vec<_>>>()
            .expect("rows")
            .len();
        assert_eq!(rows, 25);
        // Nothing left: nothing to do, and no empty segment made on the way.
        let again = TapeWriter::builder(tape.path())
            .seal_leftovers()
            .expect("seal");
        assert_eq!((again.segments, again.rows, again.left), (0, 0, 0));
        // No tape there: an error, and nothing is created.
        let missing = tape.path().join("missing");
        let err = TapeWriter::builder(&missing)
            .seal_leftovers()
            .expect_err("no tape");
        assert!(matches!(err, StorageError::NoTape { .. }), "{err}");
        assert!(!missing.exists());
    }

    #[test]
    fn an_aborted_seal_leaves_the_segment_and_nothing_else() {
        let tape = tempfile::tempdir().expect("tempdir");
        let seg = segment(tape.path(), 10);
        let settings = SealSettings::default();
        let meta = BTreeMap::new();
        let out = seal_segment_unless(tape.path(), &seg, &settings, &meta, &|| true);
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert_eq!(files(tape.path()), std::slice::from_ref(&seg));
        // Sealing it afterwards works and removes it.
        let out = seal_segment_unless(tape.path(), &seg, &settings, &meta, &|| false)
            .expect("seal")
            .expect("not aborted");
        assert_eq!((out.rows, out.files), (10, 1));
        assert!(!seg.exists());
    }

    #[test]
    fn statistics_are_kept_where_readers_prune_and_only_there() {
        use parquet::file::reader::FileReader;

        let tape = tempfile::tempdir().expect("tempdir");
        let seg = segment(tape.path(), 10);
        seal_segment(
            tape.path(),
            &seg,
            &SealSettings::default(),
            &BTreeMap::new(),
        )
        .expect("seal");
        let file = files(tape.path())
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .expect("a sealed file");
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(
            File::open(&file).expect("open"),
        )
        .expect("parquet");
        let rg = reader.metadata().row_group(0);
        let stats = |path: &str| {
            let c = rg
                .columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .unwrap_or_else(|| panic!("no column {path}"));
            c.statistics().is_some()
        };
        // What the reader prunes row groups by (time, method, path) and scalars tools filter on.
        for path in [
            col::STARTED_AT,
            col::METHOD,
            col::PATH,
            col::STATUS,
            col::ID,
        ] {
            assert!(stats(path), "{path} has statistics");
        }
        let nested = [
            "req_headers.list.item.name",
            "req_headers.list.item.value",
            "resp_headers.list.item.name",
            "resp_headers.list.item.value",
        ];
        for path in NO_STATISTICS.into_iter().chain(nested) {
            assert!(!stats(path), "{path} has no statistics");
        }
        assert!(NO_STATISTICS.contains(&col::RESP_BODY));
    }
}
