//! Closed loop ([`Drive::Closed`](crate::pace::Drive)): `concurrency` long-lived senders spread
//! over the worker threads, each taking the next origin as soon as its previous one completed
//! (so exactly `concurrency` origins are in flight while the tape lasts). An origin is due
//! (`scheduled`) when its sender takes it.
//!
//! Each sender owns one connection per HTTP/1.1 target for the whole run (HTTP/2 targets: a
//! share of its worker's few multiplexed connections). Every connection is opened before the
//! clock starts; there is no per-request spawn, pool lookup, semaphore or cross-thread wake-up.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Barrier, mpsc};

use super::origin::replay_origin;
use super::reader::Item;
use super::workers::Workers;
use super::{Ctx, Dispatched, Stop};
use crate::send::Slot;

pub(super) async fn run(
    rx: mpsc::Receiver<Vec<Item>>,
    ctx: &Arc<Ctx>,
    workers: &Workers,
    concurrency: usize,
    stop: &Stop,
) -> Dispatched {
    workers.warm(0).await;
    let concurrency = concurrency.max(1);
    let feed = Arc::new(Feed {
        inner: tokio::sync::Mutex::new((rx, Vec::new().into_iter())),
    });
    let ready = Arc::new(Barrier::new(concurrency));
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let w = workers.get(i);
            let (pools, sink) = (w.pools.clone(), w.results.clone());
            let (feed, ctx, stop, ready) = (feed.clone(), ctx.clone(), stop.clone(), ready.clone());
            w.handle.spawn(async move {
                // This sender's connections, opened before anyone starts sending.
                let mut slots: Vec<Slot> = Vec::with_capacity(pools.len());
                for pool in pools.iter() {
                    slots.push(Slot::long_lived(pool.checkout().await.ok()));
                }
                ready.wait().await;
                let mut d = Dispatched::default();
                let mut group = Vec::with_capacity(pools.len());
                loop {
                    if stop.is_stopped() {
                        d.interrupted = true;
                        break;
                    }
                    let Some(item) = feed.next().await else {
                        break;
                    };
                    let now = Instant::now();
                    d.sent(now, now, &ctx.counters, pools.len() as u64);
                    // Pinned in place (not copied into this task's state per origin).
                    std::pin::pin!(replay_origin(
                        item, now, &ctx.send, &pools, &mut slots, &mut group
                    ))
                    .await;
                    ctx.counters.completed_group(&group);
                    sink.push(&mut group).await;
                }
                d
            })
        })
        .collect();
    drop(feed);
    let mut all = Dispatched::default();
    for t in tasks {
        // A panicked sender (a bug) loses its own counts only; the run still ends cleanly.
        if let Ok(d) = t.await {
            all.merge(d);
        }
    }
    all
}

/// The reader's queue shared by the senders: batches are unpacked one origin at a time.
struct Feed {
    inner: tokio::sync::Mutex<(mpsc::Receiver<Vec<Item>>, std::vec::IntoIter<Item>)>,
}

impl Feed {
    /// The next origin; `None` when the reader is done.
    async fn next(&self) -> Option<Item> {
        let mut guard = self.inner.lock().await;
        let (rx, batch) = &mut *guard;
        loop {
            if let Some(item) = batch.next() {
                return Some(item);
            }
            *batch = rx.recv().await?.into_iter();
        }
    }
}
