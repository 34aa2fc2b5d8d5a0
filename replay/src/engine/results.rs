//! Where results go: each worker collects finished origin groups into batches ([`ResultSink`]);
//! one results thread hands every group to the optional [`Observer`], counts it into the
//! summary statistics and appends it to the result tape.

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::Duration;

use tapedeck_storage::{Exchange, StorageError, TapeSender, TapeWriter, WhenFull};
use tokio::sync::mpsc;

use super::{Stop, meta};
use crate::config::ReplayConfig;
use crate::error::ReplayError;
use crate::summary::Collector;

/// Results handed to the results thread at once: whole groups (one per origin: one result per
/// target, in target order) one after the other, so a run with `n` targets hands over
/// `n`-long chunks.
pub(super) type ResultBatch = Vec<Exchange>;
/// The queue to the results thread.
pub(super) type ResultTx = mpsc::Sender<ResultBatch>;

/// Result groups per message to the results thread.
pub(super) const RESULT_BATCH: usize = 64;
/// Batches queued for the results thread (× `RESULT_BATCH` groups).
pub(super) const RESULT_QUEUE: usize = 64;
/// Longest time a partial batch of results waits before it is handed over.
pub(super) const RESULT_FLUSH: Duration = Duration::from_millis(10);
/// Rows per spool (Arrow IPC) batch of the result tape.
const SPOOL_BATCH_ROWS: usize = 512;
/// The result tape's spool flush interval in open loop (the spool thread collects results every
/// tenth of it).
const OPEN_LOOP_FLUSH: Duration = Duration::from_millis(100);
/// Spool segment size at which the result tape seals a segment while the run goes on.
const SEGMENT_BYTES: u64 = 1 << 30;

/// Sees every origin's results while the replay runs, in the order they are written: the plug-in
/// point for judging a run as it goes (and stopping it once the verdict is decided).
///
/// Called on the results thread, never concurrently; a slow observer slows the results thread,
/// and through its bounded queue, the senders (no result is ever dropped).
pub trait Observer: Send {
    /// One recorded request's results: one exchange per target, in target order, just before
    /// they are appended to the result tape. `ControlFlow::Break(())` stops the run as
    /// [`Stop::stop`] does: no new sends, the requests in flight finish and are written (and
    /// observed).
    fn group(&mut self, results: &[Exchange]) -> ControlFlow<()>;

    /// Once, after the last group, before the result tape is closed.
    fn finish(&mut self) {}
}

/// Collects result groups into batches for the results thread (one wake-up per batch instead
/// of per request). Groups are never split, so an origin's results stay adjacent on the tape.
/// One per worker thread, so the senders of a worker never contend with another worker's.
#[derive(Debug)]
pub(super) struct ResultSink {
    /// The batch being filled and the queue to the results thread (`None` once closed).
    state: Mutex<(ResultBatch, Option<ResultTx>)>,
    /// Results in a full batch: [`RESULT_BATCH`] groups.
    full: usize,
}

impl ResultSink {
    /// A sink for groups of `targets` results.
    pub(super) fn new(tx: ResultTx, targets: usize) -> Self {
        let full = RESULT_BATCH * targets.max(1);
        Self {
            state: Mutex::new((Vec::with_capacity(full), Some(tx))),
            full,
        }
    }

    /// Takes the batch (if `full_only`, only when it is full) and a sender to hand it over.
    fn take(&self, full_only: bool, close: bool) -> Option<(ResultBatch, ResultTx)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (batch, tx) = &mut *st;
        let ready = !batch.is_empty() && (!full_only || batch.len() >= self.full);
        let tx = if close { tx.take() } else { tx.clone() }?;
        ready.then(|| (std::mem::replace(batch, Vec::with_capacity(self.full)), tx))
    }

    /// Moves one origin's results (one per target, in target order) out of `group`; hands the
    /// batch over when it is full (waits while the results thread's queue is full: replay never
    /// drops a result).
    pub(super) async fn push(&self, group: &mut Vec<Exchange>) {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.0.append(group);
            if st.0.len() < self.full {
                return;
            }
        }
        self.send(self.take(true, false)).await;
    }

    /// Hands over a partial batch.
    pub(super) async fn flush(&self) {
        self.send(self.take(false, false)).await;
    }

    /// Hands over the rest and drops this sink's sender (the results thread ends when every
    /// sink is closed). Call after every origin has pushed its results.
    pub(super) async fn close(&self) {
        self.send(self.take(false, true)).await;
    }

    async fn send(&self, batch: Option<(ResultBatch, ResultTx)>) {
        if let Some((batch, tx)) = batch {
            // The results thread only stops after the last sender is gone, so this cannot
            // fail while the run is alive.
            let _ = tx.send(batch).await;
        }
    }
}

/// Hands partial batches to the results thread every [`RESULT_FLUSH`] until `stop` fires. A
/// flush in progress is never cancelled (its batch would be lost): the stop is only looked at
/// between flushes.
pub(super) async fn flush_every_tick(
    sink: std::sync::Arc<ResultSink>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut iv = tokio::time::interval(RESULT_FLUSH);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = iv.tick() => sink.flush().await,
            _ = &mut stop => break,
        }
    }
}

/// What the results thread returns: the statistics and how many appends the writer refused.
pub(super) type Written = (Collector, u64);

/// Starts the results thread: every group goes to the observer, the statistics and the tape.
pub(super) fn spawn_results_thread(
    mut rx: mpsc::Receiver<ResultBatch>,
    targets: usize,
    mut collector: Collector,
    sender: TapeSender,
    mut observer: Option<Box<dyn Observer>>,
    stop: Stop,
) -> Result<std::thread::JoinHandle<Written>, ReplayError> {
    std::thread::Builder::new()
        .name("replay-results".into())
        .spawn(move || {
            let mut lost_appends = 0u64;
            let n = targets.max(1);
            while let Some(batch) = rx.blocking_recv() {
                for group in batch.chunks(n) {
                    if let Some(o) = observer.as_mut()
                        && o.group(group).is_break()
                    {
                        stop.stop();
                    }
                    for (i, ex) in group.iter().enumerate() {
                        collector.record(i, ex);
                    }
                }
                // One queue operation per batch (blocking: only a closed writer refuses).
                let out = sender.append_batch(batch);
                collector.written += out.accepted as u64;
                lost_appends += out.dropped() as u64;
            }
            if let Some(o) = observer.as_mut() {
                o.finish();
            }
            (collector, lost_appends)
        })
        .map_err(|source| ReplayError::Start {
            what: "the result writer thread",
            source,
        })
}

/// Opens the result tape with the run's metadata.
pub(super) fn open_writer(
    config: &ReplayConfig,
    out: &std::path::Path,
) -> Result<TapeWriter, ReplayError> {
    let targets: Vec<String> = config
        .targets
        .iter()
        .map(|t| format!("{}={}", t.name, t.url))
        .collect();
    let tapes: Vec<String> = config
        .tape
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // Smaller queue and row groups than the recorder's defaults: replay never drops (it
    // blocks), so a deep queue buys nothing (RESULT_QUEUE batches of RESULT_BATCH records;
    // the byte bound is the writer's default), and row groups bound the sealer's memory. Small
    // spool batches: the spool thread encodes a batch in one go, and on a shared or pinned
    // core a 4096-row burst (several ms) delays the sends of an open-loop run behind it; the
    // sealed Parquet (row groups of `row_group_rows`) is the same either way. Large segments:
    // sealing (Parquet encoding and zstd, about twice the spool's CPU per row) then mostly
    // happens at close, after the last send, instead of in bursts that take the senders' core
    // mid-run (at 50k/s a 128 MiB segment fills every few seconds); the spool on disk is what
    // grows, never memory.
    let mut b = TapeWriter::builder(out)
        // One output holds one run (issue 17): refuse results already there, unless --append.
        .new_tape_only(!config.append)
        .when_full(WhenFull::Block)
        // In records: RESULT_QUEUE batches of RESULT_BATCH single-target groups.
        .queue_capacity(RESULT_QUEUE * RESULT_BATCH)
        .flush_rows(SPOOL_BATCH_ROWS)
        .segment_max_bytes(SEGMENT_BYTES)
        .row_group_rows(16_384)
        // zstd level 1, not the recorder's 3: sealing a run's results is CPU the run pays
        // (mostly at close); on replay results level 1 cost 1.1k fewer instructions per row
        // and the files came out no larger (benches/RESULTS.md, issue 14).
        .zstd_level(1)
        .metadata(meta::KIND, "replay-results")
        .metadata(meta::TARGETS, targets.join(","))
        .metadata(meta::SOURCE_TAPE, tapes.join(","))
        .metadata(meta::PACE, config.pace.pacer().describe())
        .metadata(meta::STARTED_AT, tapedeck_storage::now_us().to_string());
    if config.pace.closed_loop().is_none() {
        // Open loop: the spool thread collects what arrived every tenth of the flush interval
        // and encodes it in one go; at 1 s that was 50 ms of results (≈ 1 ms of work at 10k/s)
        // in front of the senders on their core. At 100 ms it is 10 ms' worth.
        b = b.flush_interval(OPEN_LOOP_FLUSH);
    }
    if let Some(s) = config.select.shard {
        b = b.metadata(meta::SHARD, format!("{}/{}", s.index, s.count));
    }
    if let Ok(json) = serde_json::to_string(&config.options) {
        b = b.metadata(meta::OPTIONS, json);
    }
    b.open().map_err(|source| match source {
        StorageError::NotEmpty { .. } => ReplayError::OutputNotEmpty {
            path: out.to_owned(),
            source,
        },
        source => ReplayError::Output {
            path: out.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_sink_batches_keeps_groups_whole_and_closes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel::<ResultBatch>(RESULT_QUEUE);
            let sink = ResultSink::new(tx, 2);
            let n = RESULT_BATCH * 2 + 5;
            let mut group = Vec::new();
            for i in 0..n {
                group.extend([0, 1].map(|t| Exchange {
                    path: format!("/{i}").into(),
                    target: Some(format!("t{t}")),
                    ..Exchange::default()
                }));
                sink.push(&mut group).await;
                assert!(group.is_empty(), "the group was moved into the batch");
            }
            // Two full batches went out on their own; the rest waits for a flush.
            let mut sizes = Vec::new();
            while let Ok(b) = rx.try_recv() {
                sizes.push(b.len());
            }
            assert_eq!(sizes, [RESULT_BATCH * 2, RESULT_BATCH * 2]);
            sink.flush().await;
            let rest = rx.try_recv().expect("flushed");
            assert_eq!(rest.len(), 5 * 2);
            assert!(rest.chunks(2).all(|g| g[0].path == g[1].path
                && g[0].target.as_deref() == Some("t0")
                && g[1].target.as_deref() == Some("t1")));
            sink.flush().await; // nothing pending: nothing sent
            assert!(rx.try_recv().is_err());
            sink.push(&mut vec![Exchange::default(); 2]).await;
            sink.close().await;
            assert_eq!(rx.recv().await.map(|b| b.len()), Some(2));
            assert!(rx.recv().await.is_none(), "closing drops the last sender");
        });
    }
}
