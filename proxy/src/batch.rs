//! [`Batcher`]: a bounded hand-off between the proxy's worker threads and the tape writer.
//!
//! Appending straight to the writer's queue from every request wakes the writer's spool thread
//! once per record (a futex wake and a context switch each: measured at ~20 % of the proxy's CPU
//! on 2 cores). Instead, `logging` pushes the record into a mutex-guarded `Vec` (no syscall,
//! uncontended lock), and one forwarder thread moves the whole batch to the writer every
//! `tick`, waking the spool thread about once per batch.
//!
//! Guarantees: [`Batcher::push`] never blocks on I/O and never waits for the writer; when
//! `capacity` records are already waiting, the record is dropped and counted
//! ([`Batcher::dropped`]). [`Forwarder::finish`] hands over everything still waiting, so a graceful
//! stop loses nothing. A crash may lose the records of one `tick` on top of the writer's flush
//! interval.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tapedeck_storage::{Exchange, TapeSender, WriterStats};
use tracing::warn;

#[derive(Debug)]
struct Inner {
    queue: Mutex<Vec<Exchange>>,
    capacity: usize,
    dropped: AtomicU64,
    stop: AtomicBool,
}

/// The proxy side of the hand-off. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

/// The forwarder thread; [`finish`](Forwarder::finish) drains and stops it.
#[derive(Debug)]
pub struct Forwarder {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Batcher {
    /// Starts a forwarder thread that moves waiting records to `sender` every `tick`.
    pub fn start(
        sender: TapeSender,
        capacity: usize,
        tick: Duration,
    ) -> std::io::Result<(Batcher, Forwarder)> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Vec::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = inner.clone();
        let thread = std::thread::Builder::new()
            .name("tape-batch".into())
            .spawn(move || forward(&shared, &sender, tick))?;
        Ok((
            Batcher {
                inner: inner.clone(),
            },
            Forwarder {
                inner,
                thread: Some(thread),
            },
        ))
    }

    /// Queues a record; `false` (and counted) when `capacity` records are already waiting.
    pub fn push(&self, ex: Exchange) -> bool {
        let Ok(mut q) = self.inner.queue.lock() else {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if q.len() >= self.inner.capacity {
            drop(q);
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        q.push(ex);
        true
    }

    /// Records waiting for the forwarder.
    pub fn depth(&self) -> usize {
        self.inner.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Records dropped because the hand-off was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Adds the hand-off to the writer's counters: it is part of the same queue, so its waiting
    /// records count in `queue_depth` and its drops in `dropped_queue_full`. Every reader of
    /// the writer's counters (`/metrics`, the exit summary) goes through this.
    pub fn add_to(&self, stats: &mut WriterStats) {
        stats.queue_depth += self.depth() as u64;
        stats.dropped_queue_full += self.dropped();
    }
}

impl Forwarder {
    /// Hands over everything still waiting and stops the thread. Call before closing the writer.
    pub fn finish(mut self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if t.join().is_err() {
                warn!("tape batch forwarder panicked");
            }
        }
    }
}

fn forward(inner: &Inner, sender: &TapeSender, tick: Duration) {
    let mut batch: Vec<Exchange> = Vec::new();
    loop {
        let stopping = inner.stop.load(Ordering::Acquire);
        if let Ok(mut q) = inner.queue.lock() {
            std::mem::swap(&mut *q, &mut batch);
        }
        for ex in batch.drain(..) {
            // Drop policy: a full writer queue drops and counts inside the writer.
            let _ = sender.append(ex);
        }
        if stopping {
            // One more pass: anything pushed between the swap and the stop flag.
            if let Ok(mut q) = inner.queue.lock() {
                batch.append(&mut q);
            }
            for ex in batch.drain(..) {
                let _ = sender.append(ex);
            }
            return;
        }
        std::thread::park_timeout(tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_storage::{Filter, Tape, TapeWriter};

    #[test]
    fn hands_over_everything_and_bounds_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = TapeWriter::builder(dir.path()).open().expect("writer");
        let (b, fwd) =
            Batcher::start(writer.sender(), 1000, Duration::from_millis(5)).expect("start");
        let mut accepted = 0;
        for i in 0..500 {
            let ex = Exchange {
                id: Exchange::new_id(),
                path: format!("/b/{i}"),
                started_at_us: tapedeck_storage::now_us(),
                ..Exchange::default()
            };
            accepted += usize::from(b.push(ex));
        }
        assert_eq!(accepted, 500);
        fwd.finish();
        let stats = writer.close().expect("close");
        assert_eq!(stats.written, 500);
        let n = Tape::open(&[dir.path()])
            .expect("open")
            .exchanges(Filter::default())
            .count();
        assert_eq!(n, 500);

        // A forwarder that never runs (huge tick): the queue bound drops and counts.
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = TapeWriter::builder(dir.path()).open().expect("writer");
        let (b, fwd) =
            Batcher::start(writer.sender(), 3, Duration::from_secs(3600)).expect("start");
        // Let the forwarder take its first (empty) batch and park.
        std::thread::sleep(Duration::from_millis(50));
        let pushed: Vec<bool> = (0..5).map(|_| b.push(Exchange::default())).collect();
        assert_eq!(pushed, [true, true, true, false, false]);
        assert_eq!((b.depth(), b.dropped()), (3, 2));
        fwd.finish();
        assert_eq!(writer.close().expect("close").written, 3);
    }
}
