//! The hand-off from the proxy's worker threads to the tape writer, and where records go
//! ([`Sink`]).
//!
//! Appending straight to the writer from every request would wake the writer's spool thread
//! once per record (a futex wake and a context switch each: measured at ~20 % of the proxy's CPU
//! on 2 cores, and 3.5 futex calls per request). Instead records travel in batches, into the
//! writer's one queue:
//!
//! ```text
//!  worker thread: record ──► thread-local batch (≤ `batch` records and ≤ `batch_bytes`;
//!                              │                   no lock, no syscall)
//!                              │ full, or the worker's tick (≤ 50 ms), or the worker stops
//!                              ▼
//!                 TapeSender::append_batch: one lock of the writer's queue per batch, which is
//!                 bounded in records and bytes; what does not fit is dropped and counted there.
//!                 The spool thread is not woken per batch: it collects on its own tick unless
//!                 the queue is a quarter full (see the storage crate's `queue` module).
//! ```
//!
//! Guarantees: [`Handoff::push`] never blocks on I/O and never waits for the writer; every
//! record is counted once, when its batch reaches the writer: [`Fate::Recorded`] for each record
//! the writer's queue accepted, and the writer counts each one it dropped (full queue, closed),
//! which [`Metrics::counts`] reads as `queue_full` / `closed` drops. Memory: the writer's queue
//! holds at most its byte bound, each worker's batch at most `batch_bytes`; [`queue_bytes_split`]
//! divides `queue-bytes` between them so that together they never exceed it. A graceful stop
//! loses nothing once every worker has called [`flush_local`] (the hyper engine's workers do on
//! their way out, and a thread's batch is handed over when the thread ends). A crash may lose
//! one worker tick on top of the writer's flush interval.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use tapedeck_storage::{Exchange, TapeSender};
use tracing::warn;

use crate::metrics::{DropReason, Fate, Metrics};

/// Where a finished record goes: a tape writer, or nothing (pass-through, or a tape that could
/// not be opened).
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// Recording is off: nothing is captured.
    Off,
    /// The tape could not be opened (yet): requests pass, records are dropped and counted until
    /// a background retry succeeds.
    Unavailable(Arc<PendingTape>),
    /// Records go to this writer, through a [`Handoff`].
    Tape(TapeSink),
}

impl Sink {
    /// The open tape, if there is one now.
    pub(crate) fn tape(&self) -> Option<&TapeSink> {
        match self {
            Sink::Tape(s) => Some(s),
            Sink::Unavailable(p) => p.ready(),
            Sink::Off => None,
        }
    }
}

/// A tape that could not be opened at start; a background thread keeps retrying and, once it
/// succeeds, [`PendingTape::ready`] returns the sink (lock-free for the request path).
#[derive(Debug, Default)]
pub(crate) struct PendingTape {
    reason: Mutex<String>,
    ready: OnceLock<TapeSink>,
}

impl PendingTape {
    /// A pending tape that failed to open for `reason`.
    pub(crate) fn new(reason: String) -> Self {
        PendingTape {
            reason: Mutex::new(reason),
            ready: OnceLock::new(),
        }
    }

    /// The sink, once the tape has been opened.
    pub(crate) fn ready(&self) -> Option<&TapeSink> {
        self.ready.get()
    }

    /// Why the tape is not open.
    pub(crate) fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Records the latest failure.
    pub(crate) fn set_reason(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
    }

    /// Switches recording on.
    pub(crate) fn set_ready(&self, sink: TapeSink) {
        let _ = self.ready.set(sink);
    }
}

/// An open tape writer and the hand-off in front of it.
#[derive(Debug, Clone)]
pub(crate) struct TapeSink {
    /// Where finished records go.
    pub(crate) handoff: Handoff,
    /// The writer's handle, for its counters and health.
    pub(crate) sender: TapeSender,
}

impl TapeSink {
    /// The writer's counters (its queue is the only shared queue in front of the spool).
    pub(crate) fn stats(&self) -> tapedeck_storage::WriterStats {
        self.sender.stats()
    }

    /// Whether the writer is recording or degraded (and why).
    pub(crate) fn health(&self) -> tapedeck_storage::Health {
        self.sender.health()
    }
}

/// How `queue-bytes` is shared between the writer's queue and the workers' batches, so that
/// together they never hold more: `(writer's queue bound, bound of each worker's batch)`. With
/// batches of one record (nothing waits in a thread) the writer's queue gets it all; otherwise
/// the workers' batches share a quarter.
pub(crate) fn queue_bytes_split(
    queue_bytes: usize,
    threads: usize,
    batch: usize,
) -> (usize, usize) {
    if batch <= 1 {
        return (queue_bytes.max(1), 0);
    }
    let threads = threads.max(1);
    let per_thread = queue_bytes / 4 / threads;
    ((queue_bytes - per_thread * threads).max(1), per_thread)
}

#[derive(Debug)]
struct Inner {
    sender: TapeSender,
    metrics: Arc<Metrics>,
}

/// The proxy side of the hand-off. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Handoff {
    inner: Arc<Inner>,
    /// Records gathered per thread before they are handed over; 1 hands each record over at
    /// once.
    batch: usize,
    /// Bytes ([`Exchange::mem_size`]) gathered per thread before they are handed over.
    batch_bytes: usize,
}

/// This thread's batch, and the hand-off it belongs to.
struct Local {
    batch: Vec<Exchange>,
    bytes: usize,
    to: Option<Arc<Inner>>,
}

impl Local {
    /// Hands this thread's batch to the writer.
    fn hand_over(&mut self) {
        if let Some(to) = &self.to {
            self.bytes = 0;
            hand_over(to, std::mem::take(&mut self.batch));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // A thread that ends with records waiting hands them over.
        self.hand_over();
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            batch: Vec::new(),
            bytes: 0,
            to: None,
        })
    };
}

/// Hands this thread's waiting records to the writer. Worker threads call it on a tick and
/// before they exit.
pub(crate) fn flush_local() {
    let _ = LOCAL.try_with(|l| l.borrow_mut().hand_over());
}

/// One queue operation on the writer for the whole batch; counts what got in (the writer counts
/// what it dropped).
fn hand_over(inner: &Inner, batch: Vec<Exchange>) {
    if batch.is_empty() {
        return;
    }
    let out = inner.sender.append_batch(batch);
    if out.accepted > 0 {
        inner.metrics.count(Fate::Recorded, out.accepted as u64);
    }
}

impl Handoff {
    /// A hand-off to `sender`: records are gathered per thread, up to `batch` records and
    /// `batch_bytes` bytes (see [`queue_bytes_split`]), and handed over as one batch.
    pub(crate) fn new(
        sender: TapeSender,
        batch: usize,
        batch_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Handoff {
        Handoff {
            inner: Arc::new(Inner { sender, metrics }),
            batch: batch.max(1),
            batch_bytes,
        }
    }

    /// Hands over one record (counted when its batch reaches the writer).
    pub(crate) fn push(&self, ex: Exchange) {
        if self.batch <= 1 {
            hand_over(&self.inner, vec![ex]);
            return;
        }
        let size = ex.mem_size();
        let pushed = LOCAL.try_with(|l| {
            let mut l = l.borrow_mut();
            let l = &mut *l;
            match &l.to {
                Some(to) if Arc::ptr_eq(to, &self.inner) => {}
                _ => {
                    // Records of another hand-off (another recorder in this process) go first.
                    l.hand_over();
                    l.to = Some(self.inner.clone());
                }
            }
            // Over the byte bound with this one: what waits goes first.
            if !l.batch.is_empty() && l.bytes + size > self.batch_bytes {
                l.hand_over();
            }
            if l.batch.capacity() == 0 {
                l.batch.reserve_exact(self.batch);
            }
            l.batch.push(ex);
            l.bytes += size;
            if l.batch.len() >= self.batch || l.bytes >= self.batch_bytes {
                l.hand_over();
            }
        });
        if let Err(e) = pushed {
            // The thread is exiting: its thread-local is gone. Count the record as dropped.
            warn!(error = %e, "record handed over while the thread exits; dropped");
            self.inner
                .metrics
                .count(Fate::Dropped(DropReason::QueueFull), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_storage::{Filter, Tape, TapeWriter};

    fn ex(i: usize, body: usize) -> Exchange {
        Exchange {
            id: Exchange::new_id(),
            path: format!("/b/{i}").into(),
            started_at_us: tapedeck_storage::now_us(),
            resp_body: bytes::Bytes::from(vec![b'x'; body]),
            resp_body_size: body as u64,
            ..Exchange::default()
        }
    }

    fn rows(dir: &std::path::Path) -> usize {
        Tape::open(&[dir])
            .expect("open")
            .exchanges(Filter::default())
            .count()
    }

    #[test]
    fn hands_over_in_batches_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = TapeWriter::builder(dir.path()).open().expect("writer");
        let metrics = Arc::new(Metrics::default());
        let h = Handoff::new(writer.sender(), 64, 1 << 20, metrics.clone());
        for i in 0..500 {
            h.push(ex(i, 10));
        }
        // 7 batches of 64 went through; 52 records wait in this thread's batch.
        assert_eq!(metrics.counts(None).recorded, 448);
        assert_eq!(writer.stats().appended, 448);
        flush_local();
        assert_eq!(metrics.counts(None).recorded, 500);
        let stats = writer.close().expect("close");
        assert_eq!((stats.written, stats.dropped()), (500, 0));
        assert_eq!(rows(dir.path()), 500);
    }

    #[test]
    fn a_full_writer_queue_drops_and_counts_each_record_once_and_keeps_the_rest() {
        // A writer's queue of 16 KiB: every fifth record (20 KiB of body) can never fit; the
        // small ones fit unless the spool thread is behind (which may drop some too).
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = TapeWriter::builder(dir.path())
            .queue_bytes(16 << 10)
            .open()
            .expect("writer");
        let metrics = Arc::new(Metrics::default());
        let h = Handoff::new(writer.sender(), 1, 0, metrics.clone());
        for i in 0..50 {
            h.push(ex(i, if i % 5 == 0 { 20 << 10 } else { 10 }));
        }
        let stats = writer.stats();
        let counts = metrics.counts(Some(&stats));
        assert!(counts.dropped[0] >= 10, "{counts:?}");
        // Every record is counted once: recorded (accepted by the writer) or dropped full.
        assert_eq!(counts.recorded + counts.dropped[0], 50, "{counts:?}");
        assert_eq!(counts.recorded, stats.appended);
        let stats = writer.close().expect("close");
        assert_eq!(stats.written, counts.recorded);
        assert_eq!(rows(dir.path()) as u64, counts.recorded);
    }

    #[test]
    fn a_batch_over_its_byte_bound_is_handed_over_early() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = TapeWriter::builder(dir.path()).open().expect("writer");
        let metrics = Arc::new(Metrics::default());
        let one = ex(0, 1000).mem_size();
        // Room for two records per thread batch, though 64 may be gathered.
        let h = Handoff::new(writer.sender(), 64, 2 * one + one / 2, metrics.clone());
        for i in 0..5 {
            h.push(ex(i, 1000));
        }
        // Two handed over at the third, two more at the fifth; one waits.
        assert_eq!(metrics.counts(None).recorded, 4);
        flush_local();
        assert_eq!(metrics.counts(None).recorded, 5);
        assert_eq!(writer.close().expect("close").written, 5);
    }

    #[test]
    fn queue_bytes_is_shared_without_exceeding_it() {
        assert_eq!(queue_bytes_split(16 << 20, 4, 1), (16 << 20, 0));
        let (writer, each) = queue_bytes_split(16 << 20, 4, 64);
        assert_eq!(each, 1 << 20);
        assert_eq!(writer + 4 * each, 16 << 20);
        let (writer, each) = queue_bytes_split(1000, 3, 64);
        assert!(
            writer + 3 * each <= 1000 && writer >= 750,
            "{writer} {each}"
        );
        assert_eq!(queue_bytes_split(1, 8, 64), (1, 0));
    }

    #[test]
    fn a_thread_that_ends_hands_over_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = TapeWriter::builder(dir.path()).open().expect("writer");
        let metrics = Arc::new(Metrics::default());
        let h = Handoff::new(writer.sender(), 64, 1 << 20, metrics.clone());
        let h2 = h.clone();
        std::thread::spawn(move || {
            for i in 0..10 {
                h2.push(ex(i, 10));
            }
        })
        .join()
        .expect("thread");
        assert_eq!(metrics.counts(None).recorded, 10);
        assert_eq!(writer.close().expect("close").written, 10);
    }
}
