//! The writer's queue: batches of records from any number of producers to the one spool thread,
//! bounded in records *and* in bytes.
//!
//! ```text
//!  producers ── push(batch) ──► [ batch | batch | flush | batch … ] ── take(all) ──► spool thread
//!              one lock, at most one wake-up        bytes + records     releases each batch's
//!              of the spool thread per batch        counted until       bytes once it is encoded
//!                                                   released
//! ```
//!
//! Invariants:
//! - A batch costs one lock and at most one `futex` wake, and most batches none: a push wakes
//!   the spool thread only when it sleeps *and* either it went to sleep idle (nothing taken on
//!   its last round: the first record after a quiet spell is written promptly) or what waits
//!   has reached a quarter of either bound or 512 records (so a busy queue never fills while
//!   its consumer sleeps). A busy spool thread otherwise collects on its own tick ([`Queue::take`]'s
//!   timeout), so a producer that hands over one record at a time costs no wake-up per record.
//!   Flush requests, close, and a `Block` producer waiting for room always wake it.
//! - The bytes and records a batch holds stay counted from `push` until the spool thread has
//!   encoded that batch and calls [`Queue::release`], so the bound covers what waits in the queue
//!   *and* what the spool thread holds but has not yet encoded.
//! - With [`WhenFull::Drop`] `push` never waits: each record that does not fit is dropped and
//!   counted (records that fit are kept, in order). A record larger than the whole byte bound
//!   never fits and is always dropped. With [`WhenFull::Block`] `push` waits for room; a record
//!   larger than the bound is let in when the queue is empty, so a producer always progresses.
//! - Order: batches leave in the order they were accepted, records within a batch in their order.
//! - After [`Queue::close`], what is already queued is still handed to the spool thread; nothing
//!   new is accepted (counted as closed).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::exchange::Exchange;
use crate::writer::WhenFull;

/// A sleeping busy spool thread is woken once this many records wait (or a quarter of either
/// bound is reached, whichever comes first): it then encodes them in one go, a burst of a
/// millisecond or so, rather than a larger one at its tick.
const WAKE_RECORDS_MAX: usize = 512;

/// One entry of the queue.
#[derive(Debug)]
pub(crate) enum Item {
    /// Records to write, with the bytes they were counted at.
    Records {
        /// The records, in order.
        records: Vec<Exchange>,
        /// Their summed [`Exchange::mem_size`].
        bytes: usize,
    },
    /// Write everything before this to the spool, then acknowledge.
    Flush(SyncSender<()>),
}

/// What a `push` did: records accepted, dropped because the queue was full, dropped because the
/// queue is closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    pub(crate) accepted: usize,
    pub(crate) full: usize,
    pub(crate) closed: usize,
}

/// What the spool thread learns from [`Queue::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Keep running.
    Open,
    /// The queue is closed and everything queued has been taken: finish and stop.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    /// Records and bytes accepted and not yet released by the spool thread.
    records: usize,
    bytes: usize,
    /// The spool thread is waiting in `take`.
    consumer_asleep: bool,
    /// It went to sleep idle: any push wakes it (else only a quarter-full queue does).
    wake_on_any: bool,
    /// `Block` producers waiting for room.
    producers_asleep: usize,
    /// `close` was called: the spool thread drains and stops.
    closing: bool,
    /// The spool thread has taken everything after `close`: nothing more is accepted.
    closed: bool,
}

/// A bounded multi-producer, single-consumer queue of record batches. See the module docs.
#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<State>,
    /// The spool thread waits here for items.
    ready: Condvar,
    /// `Block` producers wait here for room.
    room: Condvar,
    max_records: usize,
    max_bytes: usize,
    /// A sleeping busy consumer is woken once this many records or bytes wait.
    wake_records: usize,
    wake_bytes: usize,
    /// Mirrors of `State::records` / `bytes`, for stats without the lock.
    depth: AtomicU64,
    depth_bytes: AtomicU64,
}

impl Queue {
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Self {
        let (max_records, max_bytes) = (max_records.max(1), max_bytes.max(1));
        Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            room: Condvar::new(),
            max_records,
            max_bytes,
            wake_records: (max_records / 4).clamp(1, WAKE_RECORDS_MAX),
            wake_bytes: (max_bytes / 4).max(1),
            depth: AtomicU64::new(0),
            depth_bytes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves counters, not broken invariants: carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records accepted and not yet encoded by the spool thread.
    pub(crate) fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Bytes ([`Exchange::mem_size`]) of the records counted by [`depth`](Self::depth).
    pub(crate) fn depth_bytes(&self) -> u64 {
        self.depth_bytes.load(Ordering::Relaxed)
    }

    /// The byte bound.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn publish(&self, s: &State) {
        self.depth.store(s.records as u64, Ordering::Relaxed);
        self.depth_bytes.store(s.bytes as u64, Ordering::Relaxed);
    }

    /// After records were queued: wakes the spool thread if it sleeps idle, or if enough waits.
    fn nudge_consumer(&self, s: &mut State) {
        if s.consumer_asleep
            && (s.wake_on_any || s.records >= self.wake_records || s.bytes >= self.wake_bytes)
        {
            self.wake_consumer(s);
        }
    }

    /// Wakes the spool thread if it sleeps.
    fn wake_consumer(&self, s: &mut State) {
        if s.consumer_asleep {
            s.consumer_asleep = false;
            self.ready.notify_one();
        }
    }

    fn fits(&self, s: &State, records: usize, bytes: usize) -> bool {
        s.records + records <= self.max_records && s.bytes + bytes <= self.max_bytes
    }

    /// Queues `records` (`sizes[i]` is the cost of `records[i]`) under the policy `when_full`.
    pub(crate) fn push(
        &self,
        mut records: Vec<Exchange>,
        sizes: &[usize],
        when_full: WhenFull,
    ) -> Pushed {
        let n = records.len();
        if n == 0 {
            return Pushed::default();
        }
        let total: usize = sizes.iter().sum();
        let mut s = self.lock();
        if s.closed {
            return Pushed {
                closed: n,
                ..Pushed::default()
            };
        }
        // The common case: the whole batch fits.
        if self.fits(&s, n, total) {
            s.records += n;
            s.bytes += total;
            s.items.push_back(Item::Records {
                records,
                bytes: total,
            });
            self.publish(&s);
            self.nudge_consumer(&mut s);
            return Pushed {
                accepted: n,
                ..Pushed::default()
            };
        }
        match when_full {
            WhenFull::Drop => {
                // Keep each record that fits, in order; drop the others.
                let mut kept = Vec::with_capacity(n);
                let mut kept_bytes = 0;
                for (ex, &size) in records.drain(..).zip(sizes) {
                    if self.fits(&s, kept.len() + 1, kept_bytes + size) {
                        kept_bytes += size;
                        kept.push(ex);
                    }
                }
                let accepted = kept.len();
                if accepted > 0 {
                    s.records += accepted;
                    s.bytes += kept_bytes;
                    s.items.push_back(Item::Records {
                        records: kept,
                        bytes: kept_bytes,
                    });
                    self.publish(&s);
                    self.nudge_consumer(&mut s);
                }
                Pushed {
                    accepted,
                    full: n - accepted,
                    closed: 0,
                }
            }
            WhenFull::Block => self.push_blocking(s, records, sizes),
        }
    }

    /// `Block`: moves records in as room appears, waking the consumer for each chunk.
    fn push_blocking(
        &self,
        mut s: MutexGuard<'_, State>,
        records: Vec<Exchange>,
        sizes: &[usize],
    ) -> Pushed {
        let n = records.len();
        let mut out = Pushed::default();
        let mut chunk: Vec<Exchange> = Vec::new();
        let mut chunk_bytes = 0;
        for (ex, &size) in records.into_iter().zip(sizes) {
            loop {
                if s.closed {
                    out.closed = n - out.accepted;
                    // The chunk was never queued: it is dropped with the rest.
                    out.accepted -= chunk.len();
                    out.closed += chunk.len();
                    return out;
                }
                let empty = s.records + chunk.len() == 0;
                if empty || self.fits(&s, chunk.len() + 1, chunk_bytes + size) {
                    break;
                }
                // No room: hand over what we have, then wait for the spool thread.
                if !chunk.is_empty() {
                    s.records += chunk.len();
                    s.bytes += chunk_bytes;
                    s.items.push_back(Item::Records {
                        records: std::mem::take(&mut chunk),
                        bytes: chunk_bytes,
                    });
                    chunk_bytes = 0;
                    self.publish(&s);
                }
                // Wake the consumer even if nothing new was queued: it must free room.
                self.wake_consumer(&mut s);
                s.producers_asleep += 1;
                s = self.room.wait(s).unwrap_or_else(|e| e.into_inner());
                s.producers_asleep -= 1;
            }
            chunk_bytes += size;
            chunk.push(ex);
            out.accepted += 1;
        }
        if !chunk.is_empty() {
            s.records += chunk.len();
            s.bytes += chunk_bytes;
            s.items.push_back(Item::Records {
                records: chunk,
                bytes: chunk_bytes,
            });
            self.publish(&s);
            self.nudge_consumer(&mut s);
        }
        out
    }

    /// Queues a flush request behind everything accepted so far. `false` when closed.
    pub(crate) fn push_flush(&self, ack: SyncSender<()>) -> bool {
        let mut s = self.lock();
        if s.closed || s.closing {
            return false;
        }
        s.items.push_back(Item::Flush(ack));
        self.wake_consumer(&mut s);
        true
    }

    /// Asks the spool thread to drain and stop.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closing = true;
        self.wake_consumer(&mut s);
    }

    /// The spool thread: moves every queued item into `out`, waiting up to `timeout` when there
    /// is none. `idle`: the caller had nothing to do last round, so the next push wakes it;
    /// otherwise only a quarter-full queue (or a flush, close, or blocked producer) does, and
    /// the caller comes back on its own after `timeout`.
    pub(crate) fn take(&self, out: &mut VecDeque<Item>, timeout: Duration, idle: bool) -> Taken {
        let mut s = self.lock();
        if s.items.is_empty() && !s.closing && !timeout.is_zero() {
            s.consumer_asleep = true;
            s.wake_on_any = idle;
            let (g, _) = self
                .ready
                .wait_timeout(s, timeout)
                .unwrap_or_else(|e| e.into_inner());
            s = g;
            s.consumer_asleep = false;
        }
        std::mem::swap(&mut s.items, out);
        if s.closing && s.items.is_empty() {
            if out.is_empty() {
                s.closed = true;
                // Blocked producers give up (their records are counted as closed).
                self.room.notify_all();
                return Taken::Closed;
            }
            return Taken::Open;
        }
        Taken::Open
    }

    /// The spool thread has encoded a batch taken earlier: its records and bytes no longer count.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        let mut s = self.lock();
        s.records = s.records.saturating_sub(records);
        s.bytes = s.bytes.saturating_sub(bytes);
        self.publish(&s);
        if s.producers_asleep > 0 {
            self.room.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ex(path: &str) -> Exchange {
        Exchange {
            path: path.into(),
            ..Exchange::default()
        }
    }

    fn paths(items: &VecDeque<Item>) -> Vec<String> {
        items
            .iter()
            .flat_map(|i| match i {
                Item::Records { records, .. } => {
                    records.iter().map(|r| r.path.to_string()).collect()
                }
                Item::Flush(_) => vec!["<flush>".to_owned()],
            })
            .collect()
    }

    #[test]
    fn drop_keeps_what_fits_in_order_and_counts_the_rest_by_bytes() {
        // Room for 250 bytes and plenty of records.
        let q = Queue::new(100, 250);
        let out = q.push(vec![ex("/a"), ex("/b")], &[100, 100], WhenFull::Drop);
        assert_eq!((out.accepted, out.full), (2, 0));
        // 50 bytes left: the 60-byte record is dropped, the 40-byte one after it still fits.
        let out = q.push(
            vec![ex("/c"), ex("/d"), ex("/e")],
            &[60, 40, 20],
            WhenFull::Drop,
        );
        assert_eq!((out.accepted, out.full, out.closed), (1, 2, 0));
        assert_eq!((q.depth(), q.depth_bytes()), (3, 240));
        let mut items = VecDeque::new();
        assert_eq!(q.take(&mut items, Duration::ZERO, true), Taken::Open);
        assert_eq!(paths(&items), ["/a", "/b", "/d"]);
        // Bytes stay counted until the spool thread releases them.
        assert_eq!(q.depth_bytes(), 240);
        let out = q.push(vec![ex("/f")], &[20], WhenFull::Drop);
        assert_eq!(out.full, 1);
        q.release(2, 200);
        q.release(1, 40);
        assert_eq!((q.depth(), q.depth_bytes()), (0, 0));
        let out = q.push(vec![ex("/f")], &[20], WhenFull::Drop);
        assert_eq!(out.accepted, 1);
    }

    #[test]
    fn drop_bounds_records_too_and_never_takes_a_record_larger_than_the_bound() {
        let q = Queue::new(2, 1 << 20);
        let out = q.push(
            vec![ex("/a"), ex("/b"), ex("/c")],
            &[1, 1, 1],
            WhenFull::Drop,
        );
        assert_eq!((out.accepted, out.full), (2, 1));
        let q = Queue::new(100, 1000);
        let out = q.push(vec![ex("/huge")], &[1001], WhenFull::Drop);
        assert_eq!((out.accepted, out.full), (0, 1));
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn block_waits_for_room_and_lets_an_oversized_record_in_alone() {
        let q = Arc::new(Queue::new(100, 100));
        // Larger than the whole bound, into an empty queue: accepted.
        let out = q.push(vec![ex("/huge")], &[500], WhenFull::Block);
        assert_eq!(out.accepted, 1);
        // The next one must wait until the spool thread has released the first.
        let q2 = q.clone();
        let producer =
            std::thread::spawn(move || q2.push(vec![ex("/next")], &[10], WhenFull::Block));
        let mut items = VecDeque::new();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < 2 && std::time::Instant::now() < deadline {
            q.take(&mut items, Duration::from_millis(50), true);
            for item in items.drain(..) {
                if let Item::Records { records, bytes } = item {
                    seen.extend(records.iter().map(|r| r.path.clone()));
                    q.release(records.len(), bytes);
                }
            }
        }
        assert_eq!(producer.join().expect("producer").accepted, 1);
        assert_eq!(seen, ["/huge", "/next"]);
    }

    /// Waits (bounded) until the consumer sleeps in `take`.
    fn asleep(q: &Queue) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end {
            if q.lock().consumer_asleep {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// A consumer thread that takes once (busy or `idle`, with a timeout far beyond the test, so
    /// only a wake ends its wait), returning what it got; started and seen asleep.
    fn sleeping_consumer(q: &Arc<Queue>, idle: bool) -> std::thread::JoinHandle<Vec<String>> {
        let q2 = q.clone();
        let consumer = std::thread::spawn(move || {
            let mut items = VecDeque::new();
            q2.take(&mut items, Duration::from_secs(600), idle);
            paths(&items)
        });
        assert!(asleep(q));
        consumer
    }

    #[test]
    fn a_busy_consumer_is_woken_only_by_a_quarter_full_queue_an_idle_one_by_any_push() {
        // Room for 100 records: a sleeping busy consumer is woken at 25.
        let q = Arc::new(Queue::new(100, 1 << 20));
        let consumer = sleeping_consumer(&q, false);
        for i in 0..24 {
            q.push(vec![ex(&format!("/{i}"))], &[1], WhenFull::Drop);
        }
        // 24 single-record pushes, no wake-up: the consumer still sleeps.
        assert!(
            q.lock().consumer_asleep,
            "woken before a quarter of the bound"
        );
        q.push(vec![ex("/24")], &[1], WhenFull::Drop);
        assert_eq!(consumer.join().expect("consumer").len(), 25);

        // Idle: the first record wakes it.
        let consumer = sleeping_consumer(&q, true);
        q.push(vec![ex("/one")], &[1], WhenFull::Drop);
        assert_eq!(consumer.join().expect("consumer"), ["/one"]);

        // A quarter of the byte bound wakes a busy consumer too, as does a flush request.
        let q = Arc::new(Queue::new(100, 400));
        let consumer = sleeping_consumer(&q, false);
        q.push(vec![ex("/big")], &[100], WhenFull::Drop);
        assert_eq!(consumer.join().expect("consumer"), ["/big"]);
        let consumer = sleeping_consumer(&q, false);
        let (ack, _rx) = std::sync::mpsc::sync_channel(1);
        assert!(q.push_flush(ack));
        assert_eq!(consumer.join().expect("consumer"), ["<flush>"]);
    }

    #[test]
    fn close_drains_then_refuses_and_releases_blocked_producers() {
        let q = Arc::new(Queue::new(1, 1 << 20));
        assert_eq!(q.push(vec![ex("/a")], &[1], WhenFull::Block).accepted, 1);
        let (ack, _rx) = std::sync::mpsc::sync_channel(1);
        assert!(q.push_flush(ack));
        let q2 = q.clone();
        // Waits for room that never comes: the consumer closes without releasing.
        let blocked = std::thread::spawn(move || q2.push(vec![ex("/b")], &[1], WhenFull::Block));
        q.close();
        let mut items = VecDeque::new();
        assert_eq!(
            q.take(&mut items, Duration::from_secs(1), true),
            Taken::Open
        );
        assert_eq!(paths(&items), ["/a", "<flush>"]);
        items.clear();
        assert_eq!(
            q.take(&mut items, Duration::from_secs(1), true),
            Taken::Closed
        );
        let out = blocked.join().expect("blocked producer");
        assert_eq!((out.accepted, out.closed), (0, 1));
        let out = q.push(vec![ex("/c")], &[1], WhenFull::Drop);
        assert_eq!(out.closed, 1);
        let (ack, _rx) = std::sync::mpsc::sync_channel(1);
        assert!(!q.push_flush(ack));
    }
}
