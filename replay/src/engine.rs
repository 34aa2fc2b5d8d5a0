//! The replay pipeline:
//!
//! ```text
//!  reader thread ──(bounded, 1024)──► dispatcher thread ──spawn──► origin tasks (tokio) ──►
//!  (Tape scan, select,                (pacing: precise sleep;       (one request per target,
//!   rewrite headers)                   in-flight semaphore)          same scheduled instant)
//!        ──(batches of ≤ 64 groups, bounded)──► writer thread (summary stats; TapeWriter, Block)
//! ```
//!
//! Memory is bounded by the two queues and the in-flight cap, whatever the tape's size. The
//! dispatcher is a plain thread so that its sleeps have sub-millisecond precision (tokio's timer
//! wheel ticks in milliseconds) and a busy runtime cannot delay a send.
//!
//! Closed loop (`--max`) has no dispatcher: `concurrency` long-lived tasks each take the next
//! origin from the reader's queue as soon as their previous one completed, so there is no
//! per-request spawn, semaphore or cross-thread wake-up. Results are handed to the writer
//! thread in batches ([`ResultSink`]; a partial batch waits at most [`RESULT_FLUSH`]), so that
//! it (and the tape's spool thread behind it) wakes once per batch, not once per request.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tapedeck_storage::schema::col;
use tapedeck_storage::{
    ErrorKind, Exchange, Filter, ReadOptions, ReadReport, StorageError, Tape, TapeWriter, WhenFull,
};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};

use crate::client::{Clock, TargetClient};
use crate::config::{Pace, ReplayConfig};
use crate::error::ReplayError;
use crate::progress::{Progress, ProgressSnapshot};
use crate::rewrite::{Prepared, prepare};
use crate::select::{SelectionStats, Selector, normalize_authority};
use crate::summary::{Collector, ReplaySummary, SUMMARY_VERSION, lost, pacing_summary};

/// Output tape metadata keys written by replay.
pub mod meta {
    /// `replay-results`.
    pub const KIND: &str = "tapedeck.kind";
    /// `name=URL` pairs, comma-separated, in target order.
    pub const TARGETS: &str = "tapedeck.run.targets";
    /// Input tape paths, comma-separated.
    pub const SOURCE_TAPE: &str = "tapedeck.run.source_tape";
    /// Pacing, e.g. `recorded speed=2`, `rate 500/s poisson`, `max concurrency=64`.
    pub const PACE: &str = "tapedeck.run.pace";
    /// `K/N` when sharded.
    pub const SHARD: &str = "tapedeck.run.shard";
    /// When the run started, µs since the epoch.
    pub const STARTED_AT: &str = "tapedeck.run.started_at_us";
    /// The raw options as JSON (values of `--set-header` unexpanded: no secrets).
    pub const OPTIONS: &str = "tapedeck.run.options";
}

/// One prepared origin, boxed so that queues and task futures move a pointer, not the struct.
type Item = Box<Prepared>;
/// Result groups (one per origin, one result per target) handed to the writer thread at once.
type ResultBatch = Vec<Vec<Exchange>>;
/// The queue to the writer thread.
type ResultTx = mpsc::Sender<ResultBatch>;

/// Columns a replay reads from the recorded tape.
const REQUEST_COLUMNS: [&str; 14] = [
    col::ID,
    col::SOURCE,
    col::STARTED_AT,
    col::METHOD,
    col::SCHEME,
    col::AUTHORITY,
    col::PATH,
    col::QUERY,
    col::HTTP_VERSION,
    col::REQ_HEADERS,
    col::REQ_BODY,
    col::REQ_BODY_SIZE,
    col::REQ_BODY_TRUNCATED,
    col::FLAGS,
];

/// Origins per message from the reader to the dispatcher (fewer wake-ups).
const READ_BATCH: usize = 64;
/// Batches queued between the reader and the dispatcher (× `READ_BATCH` origins).
const READ_QUEUE: usize = 16;
/// Result groups (one per origin) per message to the writer thread.
const RESULT_BATCH: usize = 64;
/// Batches queued for the writer thread (× `RESULT_BATCH` groups).
const RESULT_QUEUE: usize = 64;
/// Longest time a partial batch of results waits before it is handed to the writer.
const RESULT_FLUSH: Duration = Duration::from_millis(10);
/// Rows per spool (Arrow IPC) batch of the result tape.
const SPOOL_BATCH_ROWS: usize = 512;

/// Asks a running replay to stop early: no new sends, in-flight requests finish, their results
/// are written and the summary says `interrupted`. Cloneable; `Default` is "never stopped".
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A fresh handle.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests the stop (idempotent, from any thread).
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Triggers this stop on the first SIGINT or SIGTERM; a second signal ends the process at
    /// once with exit code 130. Meant for command-line front ends; spawns one small thread.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (mut int, mut term) = {
            let _guard = rt.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )
        };
        std::thread::Builder::new()
            .name("replay-signals".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    tracing::warn!(
                        "stopping: no new requests; waiting for those in flight (signal again to quit now)"
                    );
                    stop.stop();
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    std::process::exit(130);
                });
            })?;
        Ok(())
    }
}

/// Runs a replay on a runtime it creates (for callers without one). See [`run`].
pub fn run_blocking<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
) -> Result<ReplaySummary, ReplayError> {
    run_blocking_until(config, progress, Stop::default())
}

/// [`run_blocking`] that stops early when `stop` is triggered (e.g. from a signal handler).
pub fn run_blocking_until<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
    stop: Stop,
) -> Result<ReplaySummary, ReplayError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("replay-worker")
        .build()
        .map_err(|e| ReplayError::Runtime(format!("starting the tokio runtime: {e}")))?;
    rt.block_on(run_until(config, progress, stop))
}

/// Replays `config` and returns the summary. Must be called inside a multi-threaded tokio
/// runtime. A misbehaving target never makes this fail: its errors are counted per exchange.
/// Fails for bad input (unreadable tape, same-host target) and when results cannot be written.
pub async fn run<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
) -> Result<ReplaySummary, ReplayError> {
    run_until(config, progress, Stop::default()).await
}

/// [`run`] that stops early (cleanly, results written) when `stop` is triggered.
pub async fn run_until<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
    stop: Stop,
) -> Result<ReplaySummary, ReplayError> {
    let began = Instant::now();
    let first_path = config.tape.first().cloned().unwrap_or_default();
    let tape_err = |source: StorageError| ReplayError::Tape {
        path: first_path.clone(),
        source,
    };
    let tape = Tape::open(&config.tape).map_err(tape_err)?;
    let target_hosts: Vec<String> = config
        .targets
        .iter()
        .map(|t| normalize_authority(t.authority.as_str(), "http"))
        .collect();
    if !config.select.allow_same_host && !config.targets.is_empty() {
        check_same_host(&tape, config, &target_hosts).map_err(|e| match e {
            Ok(same) => same,
            Err(storage) => tape_err(storage),
        })?;
    }
    let read_options = |columns: Option<Vec<String>>| ReadOptions {
        columns,
        filter: Filter {
            from_us: config.select.from_us,
            to_us: config.select.to_us,
            ..Filter::default()
        },
        batch_size: 512,
        skip_corrupt: config.skip_corrupt,
    };
    // Issue 8: a damaged later file is an error (naming it) before anything is sent, not midway
    // through the run; with --skip-corrupt the scan skips what this finds.
    tape.verify(&read_options(None)).map_err(tape_err)?;

    let progress: Arc<dyn Progress> = Arc::new(progress);
    let mut total = None;
    if config.dry_run || progress.wants_total() {
        let tape2 = tape.clone();
        let opts = read_options(Some(
            [
                col::ID,
                col::STARTED_AT,
                col::METHOD,
                col::PATH,
                col::SCHEME,
                col::AUTHORITY,
                col::REQ_BODY_TRUNCATED,
            ]
            .map(String::from)
            .to_vec(),
        ));
        let selector = Selector::new(config.select.clone(), target_hosts.clone());
        let (stats, report, err) =
            tokio::task::spawn_blocking(move || count_pass(&tape2, opts, selector))
                .await
                .map_err(|e| ReplayError::Runtime(format!("counting pass: {e}")))?;
        if let Some(e) = err {
            return Err(tape_err(e));
        }
        if config.dry_run {
            return Ok(dry_summary(config, stats, report, began));
        }
        total = Some(stats.selected);
    }

    // Output tape.
    let out = config
        .out
        .clone()
        .ok_or_else(|| ReplayError::config("out", "an output tape directory is required"))?;
    let writer = open_writer(config, &out)?;
    let sender = writer.sender();

    // Clients and shared state.
    let clock = Clock::new();
    let targets: Vec<TargetClient> = config
        .targets
        .iter()
        .map(|t| {
            TargetClient::new(
                t.clone(),
                config.connect_timeout,
                config.max_in_flight,
                config.tls.as_ref(),
            )
        })
        .collect();
    let n_targets = targets.len() as u64;
    let counters = Arc::new(Counters::default());
    let (res_tx, mut res_rx) = mpsc::channel::<ResultBatch>(RESULT_QUEUE);
    let ctx = Arc::new(Ctx {
        targets,
        clock,
        timeout: config.timeout,
        max_body: config.max_body,
        results: ResultSink::new(res_tx),
        counters: counters.clone(),
    });

    // Writer thread: statistics + tape.
    let mut collector = Collector::new(&config.targets);
    let writer_thread = std::thread::Builder::new()
        .name("replay-results".into())
        .spawn(move || {
            let mut lost_appends = 0u64;
            while let Some(batch) = res_rx.blocking_recv() {
                for group in batch {
                    for (i, ex) in group.into_iter().enumerate() {
                        collector.record(i, &ex);
                        match sender.append(ex) {
                            Ok(()) => collector.written += 1,
                            Err(_) => lost_appends += 1,
                        }
                    }
                }
            }
            (collector, lost_appends)
        })
        .map_err(|e| ReplayError::Runtime(format!("spawning the result writer: {e}")))?;

    // Reader thread.
    let (item_tx, item_rx) = mpsc::channel::<Vec<Item>>(READ_QUEUE);
    let selector = Selector::new(config.select.clone(), target_hosts);
    // Only the request side of the recorded exchanges is needed: recorded responses (often
    // most of a tape's bytes) are never decoded.
    let opts = read_options(Some(REQUEST_COLUMNS.map(String::from).to_vec()));
    let drop_set = config.drop_headers.clone();
    let set_headers = config.set_headers.clone();
    let tape2 = tape.clone();
    let reader_thread = std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || {
            let mut sel = selector;
            let mut it = tape2.scan(opts).exchanges();
            let mut err = None;
            let mut batch = Vec::with_capacity(READ_BATCH);
            while !sel.exhausted() {
                match it.next() {
                    None => break,
                    Some(Err(e)) => {
                        err = Some(e);
                        break;
                    }
                    Some(Ok(ex)) => {
                        if sel.decide(&ex).is_ok() {
                            batch.push(Box::new(prepare(ex, &drop_set, &set_headers)));
                            if batch.len() == READ_BATCH {
                                let full =
                                    std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
                                if item_tx.blocking_send(full).is_err() {
                                    batch.clear();
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if !batch.is_empty() {
                let _ = item_tx.blocking_send(batch);
            }
            (sel.stats, it.report().clone(), err)
        })
        .map_err(|e| ReplayError::Runtime(format!("spawning the tape reader: {e}")))?;

    // Progress ticker.
    progress.start(total, config.targets.len());
    let send_start = Instant::now();
    let ticker = {
        let progress = progress.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(progress.interval());
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            iv.tick().await;
            loop {
                iv.tick().await;
                progress.update(&counters.snapshot(total, send_start));
            }
        })
    };

    // Hands partial result batches to the writer while the run goes on.
    let (flusher_stop, mut flusher_stopped) = tokio::sync::oneshot::channel::<()>();
    let flusher = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(RESULT_FLUSH);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // A flush in progress is never cancelled (its batch would be lost): the stop
                // is only looked at between flushes.
                tokio::select! {
                    _ = iv.tick() => ctx.results.flush().await,
                    _ = &mut flusher_stopped => break,
                }
            }
        })
    };

    let pace = config.pace;
    let dispatched = match pace {
        Pace::Max { concurrency } => {
            closed_loop(item_rx, ctx.clone(), concurrency, n_targets, &stop).await
        }
        _ => {
            // Dispatcher thread.
            let max_in_flight = config.max_in_flight;
            let handle = Handle::current();
            let dispatcher = std::thread::Builder::new()
                .name("replay-dispatch".into())
                .spawn({
                    let stop = stop.clone();
                    let ctx = ctx.clone();
                    move || dispatch(item_rx, ctx, handle, pace, max_in_flight, n_targets, &stop)
                })
                .map_err(|e| ReplayError::Runtime(format!("spawning the dispatcher: {e}")))?;
            join(dispatcher).await?
        }
    };
    // Every origin has completed and pushed its results: hand over the rest and close the
    // queue, so that the writer thread ends.
    let _ = flusher_stop.send(());
    let _ = flusher.await;
    ctx.results.close().await;
    drop(ctx);
    let (sel_stats, report, read_err) = join(reader_thread).await?;
    let (collector, lost_appends) = join(writer_thread).await?;
    ticker.abort();
    let final_snapshot = counters.snapshot(total, send_start);
    progress.finish(&final_snapshot);
    let wstats = tokio::task::spawn_blocking(move || writer.close())
        .await
        .map_err(|e| ReplayError::Runtime(format!("closing the output tape: {e}")))?
        .map_err(|source| ReplayError::Output {
            path: out.clone(),
            source,
        })?;
    if let Some(e) = read_err {
        return Err(tape_err(e));
    }
    let results_lost = lost(&wstats).max(lost_appends);
    if results_lost > 0 {
        return Err(ReplayError::ResultsLost {
            path: out,
            lost: results_lost,
        });
    }

    let (target_summaries, lateness) = collector.finish(&config.targets);
    let pacing = pacing_summary(
        config.pace,
        dispatched.origins,
        dispatched.first_sched.map(|t| clock.us(t)),
        dispatched.last_sched.map(|t| clock.us(t)),
        dispatched.first_sent.map(|t| clock.us(t)),
        dispatched.last_sent.map(|t| clock.us(t)),
        lateness,
    );
    Ok(ReplaySummary {
        version: SUMMARY_VERSION,
        tape: config.tape.clone(),
        out: Some(out),
        dry_run: false,
        shard: config.select.shard,
        duration_s: began.elapsed().as_secs_f64(),
        origins: dispatched.origins,
        interrupted: dispatched.interrupted,
        results_written: collector.written,
        results_lost,
        selection: sel_stats,
        pacing,
        targets: target_summaries,
        files_read: report.files_read,
        files_skipped: report.files_skipped,
    })
}

async fn join<T: Send + 'static>(h: std::thread::JoinHandle<T>) -> Result<T, ReplayError> {
    tokio::task::spawn_blocking(move || h.join())
        .await
        .map_err(|e| ReplayError::Runtime(format!("joining a worker thread: {e}")))?
        .map_err(|_| ReplayError::Runtime("a replay worker thread panicked".into()))
}

/// File metadata key under which `tapedeck record` stores the upstream it recorded.
const RECORDER_UPSTREAM: &str = "tapedeck.recorder.upstream";

/// Refuses (the outer `Ok`) a target whose authority equals the tape's recorded upstream (file
/// metadata) or the authority of its first exchange.
fn check_same_host(
    tape: &Tape,
    config: &ReplayConfig,
    target_hosts: &[String],
) -> Result<(), Result<ReplayError, StorageError>> {
    let mut recorded: Vec<(String, String)> = Vec::new();
    let md = tape.metadata().map_err(Err)?;
    if let Some(up) = md.get(RECORDER_UPSTREAM) {
        let (scheme, authority) = match up.split_once("://") {
            Some((scheme, rest)) => (scheme, rest.split('/').next().unwrap_or(rest)),
            None => ("http", up.as_str()),
        };
        recorded.push((up.clone(), normalize_authority(authority, scheme)));
    }
    let opts = ReadOptions {
        columns: Some(vec![col::AUTHORITY.into(), col::SCHEME.into()]),
        batch_size: 1,
        skip_corrupt: config.skip_corrupt,
        ..ReadOptions::default()
    };
    match tape.scan(opts).exchanges().next() {
        None => {}
        Some(Err(e)) => return Err(Err(e)),
        Some(Ok(ex)) if !ex.authority.is_empty() => {
            let n = normalize_authority(&ex.authority, &ex.scheme);
            recorded.push((ex.authority, n));
        }
        Some(Ok(_)) => {}
    }
    for (t, host) in config.targets.iter().zip(target_hosts) {
        if let Some((shown, _)) = recorded.iter().find(|(_, n)| n == host) {
            return Err(Ok(ReplayError::SameHost {
                target: t.name.clone(),
                authority: shown.clone(),
            }));
        }
    }
    Ok(())
}

fn count_pass(
    tape: &Tape,
    opts: ReadOptions,
    mut sel: Selector,
) -> (SelectionStats, ReadReport, Option<StorageError>) {
    let mut it = tape.scan(opts).exchanges();
    let mut err = None;
    while !sel.exhausted() {
        match it.next() {
            None => break,
            Some(Err(e)) => {
                err = Some(e);
                break;
            }
            Some(Ok(ex)) => {
                let _ = sel.decide(&ex);
            }
        }
    }
    (sel.stats, it.report().clone(), err)
}

fn dry_summary(
    config: &ReplayConfig,
    stats: SelectionStats,
    report: ReadReport,
    began: Instant,
) -> ReplaySummary {
    let (targets, lateness) = Collector::new(&config.targets).finish(&config.targets);
    ReplaySummary {
        version: SUMMARY_VERSION,
        tape: config.tape.clone(),
        out: None,
        dry_run: true,
        shard: config.select.shard,
        duration_s: began.elapsed().as_secs_f64(),
        origins: 0,
        interrupted: false,
        results_written: 0,
        results_lost: 0,
        selection: stats,
        pacing: pacing_summary(config.pace, 0, None, None, None, None, lateness),
        targets,
        files_read: report.files_read,
        files_skipped: report.files_skipped,
    }
}

fn open_writer(config: &ReplayConfig, out: &std::path::Path) -> Result<TapeWriter, ReplayError> {
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
    let pace = match config.pace {
        Pace::Recorded { speed, max_gap } => match max_gap {
            Some(g) => format!("recorded speed={speed} max-gap={}ms", g.as_millis()),
            None => format!("recorded speed={speed}"),
        },
        Pace::Rate {
            per_sec, poisson, ..
        } => format!("rate {per_sec}/s{}", if poisson { " poisson" } else { "" }),
        Pace::Max { concurrency } => format!("max concurrency={concurrency}"),
    };
    // Smaller queue and row groups than the recorder's defaults: replay never drops (it
    // blocks), so a deep queue buys nothing, and row groups bound the sealer's memory. Small
    // spool batches: the spool thread encodes a batch in one go, and on a shared or pinned
    // core a 4096-row burst (several ms) delays the sends of an open-loop run behind it; the
    // sealed Parquet (row groups of `row_group_rows`) is the same either way.
    let mut b = TapeWriter::builder(out)
        .when_full(WhenFull::Block)
        .queue_capacity(4096)
        .flush_rows(SPOOL_BATCH_ROWS)
        .row_group_rows(16_384)
        .metadata(meta::KIND, "replay-results")
        .metadata(meta::TARGETS, targets.join(","))
        .metadata(meta::SOURCE_TAPE, tapes.join(","))
        .metadata(meta::PACE, pace)
        .metadata(meta::STARTED_AT, tapedeck_storage::now_us().to_string());
    if let Some(s) = config.select.shard {
        b = b.metadata(meta::SHARD, format!("{}/{}", s.index, s.count));
    }
    if let Ok(json) = serde_json::to_string(&config.options) {
        b = b.metadata(meta::OPTIONS, json);
    }
    b.open().map_err(|source| ReplayError::Output {
        path: out.to_owned(),
        source,
    })
}

#[derive(Debug, Default)]
struct Counters {
    origins: AtomicU64,
    sent: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// Counts one origin's finished results.
    fn completed_group(&self, group: &[Exchange]) {
        let errors = group.iter().filter(|e| e.error_kind.is_some()).count() as u64;
        self.completed
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        self.errors.fetch_add(errors, Ordering::Relaxed);
    }

    fn snapshot(&self, total: Option<u64>, start: Instant) -> ProgressSnapshot {
        ProgressSnapshot {
            origins: self.origins.load(Ordering::Relaxed),
            total_origins: total,
            sent: self.sent.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            elapsed: start.elapsed(),
        }
    }
}

struct Ctx {
    targets: Vec<TargetClient>,
    clock: Clock,
    timeout: Duration,
    max_body: usize,
    results: ResultSink,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Dispatched {
    origins: u64,
    interrupted: bool,
    first_sched: Option<Instant>,
    last_sched: Option<Instant>,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
}

impl Dispatched {
    /// Notes one origin sent to `n_targets` targets, due at `scheduled` and sent at `now`.
    fn sent(&mut self, scheduled: Instant, now: Instant, ctx: &Ctx, n_targets: u64) {
        self.origins += 1;
        self.first_sched.get_or_insert(scheduled);
        self.last_sched = Some(scheduled);
        self.first_sent.get_or_insert(now);
        self.last_sent = Some(now);
        ctx.counters.origins.fetch_add(1, Ordering::Relaxed);
        ctx.counters.sent.fetch_add(n_targets, Ordering::Relaxed);
    }
}

/// Computes each origin's send offset from the start of the run.
#[derive(Debug)]
struct Schedule {
    pace: Pace,
    prev_recorded: Option<i64>,
    offset_us: f64,
    rng: StdRng,
}

impl Schedule {
    fn new(pace: Pace) -> Self {
        let seed = match pace {
            Pace::Rate { seed, .. } => seed,
            _ => 0,
        };
        Self {
            pace,
            prev_recorded: None,
            offset_us: 0.0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The offset of the next origin (recorded at `started_at_us`); `None` for closed loop.
    ///
    /// Recorded pacing schedules each exchange at `max(previous, own)` recorded time: rows
    /// within a file are in completion order, so a start time slightly before its
    /// predecessor's is sent right after it (gap 0) instead of reordering the stream.
    fn next(&mut self, started_at_us: i64) -> Option<Duration> {
        match self.pace {
            Pace::Max { .. } => return None,
            Pace::Recorded { speed, max_gap } => {
                if let Some(prev) = self.prev_recorded {
                    let mut gap = (started_at_us - prev).max(0) as f64 / speed;
                    if let Some(m) = max_gap {
                        gap = gap.min(m.as_micros() as f64);
                    }
                    self.offset_us += gap;
                    self.prev_recorded = Some(prev.max(started_at_us));
                } else {
                    self.prev_recorded = Some(started_at_us);
                }
            }
            Pace::Rate {
                per_sec, poisson, ..
            } => {
                if self.prev_recorded.is_some() {
                    let mean = 1e6 / per_sec;
                    let gap = if poisson {
                        -(1.0 - self.rng.random::<f64>()).ln() * mean
                    } else {
                        mean
                    };
                    self.offset_us += gap;
                }
                self.prev_recorded = Some(started_at_us);
            }
        }
        Some(Duration::from_nanos((self.offset_us * 1000.0) as u64))
    }
}

/// Shortest and longest final stretch of a wait that the dispatcher spins instead of sleeping.
const SPIN_MIN: Duration = Duration::from_micros(10);
const SPIN_MAX: Duration = Duration::from_micros(100);

/// How long to spin before a send that follows the previous one after `gap`: a tenth of the
/// gap within [`SPIN_MIN`, `SPIN_MAX`], so spinning never takes more than about a tenth of a
/// core. At 1k/s that is the last 100 µs; at 10k/s only the last 10 µs: a dispatcher spinning
/// most of each 100 µs gap competes for its core with the runtime that has to send what it
/// dispatched (on a busy or pinned core that cost milliseconds of lateness), and a thread
/// that mostly sleeps is scheduled promptly when it wakes.
fn spin_for(gap: Duration) -> Duration {
    (gap / 10).clamp(SPIN_MIN, SPIN_MAX)
}

/// Sleeps until `deadline` with sub-millisecond precision: OS sleep for all but the last
/// `spin`, then a bounded spin (see [`spin_for`] and [`precise_timer_slack`]).
/// Returns `false` if `stop` was triggered first (checked at least every 50 ms).
fn sleep_until_precise(deadline: Instant, spin: Duration, stop: &Stop) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if left > spin + SPIN_MIN {
            if stop.is_stopped() {
                return false;
            }
            std::thread::sleep((left - spin).min(Duration::from_millis(50)));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Asks Linux to wake the calling thread from its sleeps without the default 50 µs of timer
/// slack (writes `/proc/<tid>/timerslack_ns`; `/proc/thread-self` names the thread). Best
/// effort: elsewhere, or when not allowed, sleeps are just up to 50 µs less precise.
fn precise_timer_slack() {
    let set = || -> std::io::Result<()> {
        let link = std::fs::read_link("/proc/thread-self")?;
        let tid = link.file_name().ok_or(std::io::ErrorKind::NotFound)?;
        std::fs::write(
            std::path::Path::new("/proc")
                .join(tid)
                .join("timerslack_ns"),
            "1",
        )
    };
    if let Err(e) = set() {
        tracing::debug!(error = %e, "could not lower the dispatcher's timer slack");
    }
}

fn dispatch(
    mut rx: mpsc::Receiver<Vec<Item>>,
    ctx: Arc<Ctx>,
    handle: Handle,
    pace: Pace,
    max_in_flight: usize,
    n_targets: u64,
    stop: &Stop,
) -> Dispatched {
    precise_timer_slack();
    let sem = Arc::new(Semaphore::new(max_in_flight));
    let mut schedule = Schedule::new(pace);
    let mut d = Dispatched::default();
    // The schedule starts when the first exchange is ready (opening the tape takes a moment),
    // plus a short lead so that the first sends are not late by construction.
    let mut start: Option<Instant> = None;
    let mut prev_due: Option<Instant> = None;
    'feed: while let Some(batch) = rx.blocking_recv() {
        for item in batch {
            if stop.is_stopped() {
                d.interrupted = true;
                break 'feed;
            }
            let start = *start.get_or_insert_with(|| Instant::now() + Duration::from_millis(2));
            let recorded_at = item.origin.started_at_us;
            let scheduled = match schedule.next(recorded_at) {
                Some(off) => {
                    let due = start + off;
                    let gap = due.saturating_duration_since(prev_due.unwrap_or(start));
                    prev_due = Some(due);
                    if !sleep_until_precise(due, spin_for(gap), stop) {
                        d.interrupted = true;
                        break 'feed;
                    }
                    due
                }
                None => Instant::now(),
            };
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match handle.block_on(sem.clone().acquire_owned()) {
                    Ok(p) => p,
                    Err(_) => break 'feed, // semaphore closed: cannot happen, we own it
                },
            };
            d.sent(scheduled, Instant::now(), &ctx, n_targets);
            let ctx = ctx.clone();
            handle.spawn(async move {
                let group = replay_origin(item, scheduled, &ctx).await;
                ctx.counters.completed_group(&group);
                ctx.results.push(group).await;
                drop(permit);
            });
        }
    }
    drop(rx);
    drop(ctx);
    // Wait for every in-flight origin.
    let _ = handle.block_on(sem.acquire_many(u32::try_from(max_in_flight).unwrap_or(u32::MAX)));
    d
}

/// Closed loop: `concurrency` tasks, each sending its next origin as soon as its previous one
/// completed (so exactly `concurrency` origins are in flight while the tape lasts). An origin is
/// due (`scheduled`) when its task takes it.
async fn closed_loop(
    rx: mpsc::Receiver<Vec<Item>>,
    ctx: Arc<Ctx>,
    concurrency: usize,
    n_targets: u64,
    stop: &Stop,
) -> Dispatched {
    let feed = Arc::new(Feed {
        inner: tokio::sync::Mutex::new((rx, Vec::new().into_iter())),
    });
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (feed, ctx, stop) = (feed.clone(), ctx.clone(), stop.clone());
            tokio::spawn(async move {
                let mut d = Dispatched::default();
                loop {
                    if stop.is_stopped() {
                        d.interrupted = true;
                        break;
                    }
                    let Some(item) = feed.next().await else {
                        break;
                    };
                    // Closed loop: an origin is due when a task takes it.
                    let now = Instant::now();
                    d.sent(now, now, &ctx, n_targets);
                    let group = replay_origin(item, now, &ctx).await;
                    ctx.counters.completed_group(&group);
                    ctx.results.push(group).await;
                }
                d
            })
        })
        .collect();
    drop(feed);
    let mut all = Dispatched::default();
    for t in tasks {
        // A panicked task (a bug) loses its own counts only; the run still ends cleanly.
        let Ok(d) = t.await else { continue };
        all.origins += d.origins;
        all.interrupted |= d.interrupted;
        all.first_sched = min_some(all.first_sched, d.first_sched);
        all.first_sent = min_some(all.first_sent, d.first_sent);
        all.last_sched = all.last_sched.max(d.last_sched);
        all.last_sent = all.last_sent.max(d.last_sent);
    }
    all
}

fn min_some(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The reader's queue shared by the closed-loop tasks: batches are unpacked one origin at a time.
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

/// Collects result groups into batches for the writer thread (one wake-up per batch instead of
/// per request). Groups are never split, so an origin's results stay adjacent on the tape.
struct ResultSink {
    /// The batch being filled and the queue to the writer (`None` once closed).
    state: Mutex<(ResultBatch, Option<ResultTx>)>,
}

impl ResultSink {
    fn new(tx: ResultTx) -> Self {
        Self {
            state: Mutex::new((Vec::with_capacity(RESULT_BATCH), Some(tx))),
        }
    }

    /// Takes the batch (if `full_only`, only when it is full) and a sender to hand it over.
    fn take(&self, full_only: bool, close: bool) -> Option<(ResultBatch, ResultTx)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (batch, tx) = &mut *st;
        let ready = !batch.is_empty() && (!full_only || batch.len() >= RESULT_BATCH);
        let tx = if close { tx.take() } else { tx.clone() }?;
        ready.then(|| {
            (
                std::mem::replace(batch, Vec::with_capacity(RESULT_BATCH)),
                tx,
            )
        })
    }

    /// Adds one origin's results; hands the batch over when it is full (waits while the
    /// writer's queue is full: replay never drops a result).
    async fn push(&self, group: Vec<Exchange>) {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.0.push(group);
            if st.0.len() < RESULT_BATCH {
                return;
            }
        }
        self.send(self.take(true, false)).await;
    }

    /// Hands over a partial batch.
    async fn flush(&self) {
        self.send(self.take(false, false)).await;
    }

    /// Hands over the rest and drops the queue's last sender (the writer thread then ends).
    /// Call after every origin has pushed its results.
    async fn close(&self) {
        self.send(self.take(false, true)).await;
    }

    async fn send(&self, batch: Option<(ResultBatch, ResultTx)>) {
        if let Some((batch, tx)) = batch {
            // The writer thread only stops after the last sender is gone, so this cannot
            // fail while the run is alive.
            let _ = tx.send(batch).await;
        }
    }
}

/// Sends one origin to every target at the same scheduled instant; results in target order.
async fn replay_origin(p: Item, scheduled: Instant, ctx: &Arc<Ctx>) -> Vec<Exchange> {
    if let Some(msg) = &p.unsendable {
        let at = ctx.clock.us(scheduled);
        return ctx
            .targets
            .iter()
            .map(|t| unsendable(&p.origin, &t.target.name, at, msg))
            .collect();
    }
    let n = ctx.targets.len();
    let mut group = Vec::with_capacity(n);
    if n == 1 {
        group.push(
            ctx.targets[0]
                .send_owned(p, scheduled, ctx.clock, ctx.timeout, ctx.max_body)
                .await,
        );
        return group;
    }
    // Every target gets its own task, spawned in an order rotated per origin: no target is
    // systematically sent first, so none carries a systematic share of the send lateness into
    // its latency (measured from the scheduled time). Results are kept in target order.
    let p = Arc::new(p);
    let first = (p.origin.id.as_u128() % n as u128) as usize;
    let mut handles: Vec<Option<tokio::task::JoinHandle<Exchange>>> =
        (0..n).map(|_| None).collect();
    for k in 0..n {
        let i = (first + k) % n;
        let (ctx, p) = (ctx.clone(), p.clone());
        handles[i] = Some(tokio::spawn(async move {
            ctx.targets[i]
                .send(&p, scheduled, ctx.clock, ctx.timeout, ctx.max_body)
                .await
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let joined = match h {
            Some(h) => h.await.map_err(|e| e.to_string()),
            None => Err("not started".to_owned()),
        };
        match joined {
            Ok(ex) => group.push(ex),
            Err(e) => group.push(unsendable(
                &p.origin,
                &ctx.targets[i].target.name,
                ctx.clock.us(scheduled),
                &format!("replay task failed: {e}"),
            )),
        }
    }
    // One `started_at` for the whole group (its earliest send; each target's exact send time
    // is in `sent_at_us`): the tape is partitioned by the hour of `started_at`, so a group
    // whose sends straddle an hour boundary would otherwise be split across files.
    if let Some(first) = group.iter().map(|e| e.started_at_us).min() {
        for e in &mut group {
            e.started_at_us = first;
        }
    }
    group
}

/// A result exchange for an origin that could not be sent at all.
fn unsendable(origin: &Exchange, target: &str, at_us: i64, msg: &str) -> Exchange {
    Exchange {
        id: Exchange::new_id(),
        source: origin.source.clone(),
        started_at_us: at_us,
        method: origin.method.clone(),
        path: origin.path.clone(),
        query: origin.query.clone(),
        error_kind: Some(ErrorKind::Other),
        error: Some(msg.to_owned()),
        flags: origin.flags,
        origin_id: Some(origin.id),
        target: Some(target.to_owned()),
        scheduled_at_us: Some(at_us),
        sent_at_us: Some(at_us),
        ..Exchange::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_schedule_scales_clamps_and_never_goes_back() {
        let mut s = Schedule::new(Pace::Recorded {
            speed: 2.0,
            max_gap: Some(Duration::from_millis(100)),
        });
        let offs: Vec<u128> = [0i64, 10_000, 8_000, 30_000, 10_030_000]
            .iter()
            .map(|t| s.next(1_000_000 + t).expect("open loop").as_micros())
            .collect();
        // 0; +5 ms; out of order → same instant; +10 ms (from 10 ms, the max seen); clamped.
        assert_eq!(offs, [0, 5_000, 5_000, 15_000, 115_000]);
    }

    #[test]
    fn rate_schedule() {
        let mut s = Schedule::new(Pace::Rate {
            per_sec: 1000.0,
            poisson: false,
            seed: 1,
        });
        let offs: Vec<u128> = (0..4)
            .map(|_| s.next(0).expect("open").as_micros())
            .collect();
        assert_eq!(offs, [0, 1000, 2000, 3000]);
        let mut p = Schedule::new(Pace::Rate {
            per_sec: 1000.0,
            poisson: true,
            seed: 7,
        });
        let last = (0..2001)
            .map(|_| p.next(0).expect("open"))
            .last()
            .expect("some");
        let secs = last.as_secs_f64();
        assert!(
            (1.6..2.4).contains(&secs),
            "2000 Poisson gaps at 1k/s ≈ 2 s: {secs}"
        );
        assert!(
            Schedule::new(Pace::Max { concurrency: 1 })
                .next(0)
                .is_none()
        );
    }

    #[test]
    fn result_sink_batches_keeps_groups_whole_and_closes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel::<ResultBatch>(RESULT_QUEUE);
            let sink = ResultSink::new(tx);
            let n = RESULT_BATCH * 2 + 5;
            for i in 0..n {
                let group = vec![
                    Exchange {
                        path: format!("/{i}"),
                        ..Exchange::default()
                    };
                    2
                ];
                sink.push(group).await;
            }
            // Two full batches went out on their own; the rest waits for a flush.
            let mut sizes = Vec::new();
            while let Ok(b) = rx.try_recv() {
                sizes.push(b.len());
            }
            assert_eq!(sizes, [RESULT_BATCH, RESULT_BATCH]);
            sink.flush().await;
            let rest = rx.try_recv().expect("flushed");
            assert_eq!(rest.len(), 5);
            assert!(rest.iter().all(|g| g.len() == 2 && g[0].path == g[1].path));
            sink.flush().await; // nothing pending: nothing sent
            assert!(rx.try_recv().is_err());
            sink.push(vec![Exchange::default()]).await;
            sink.close().await;
            assert_eq!(rx.recv().await.map(|b| b.len()), Some(1));
            assert!(rx.recv().await.is_none(), "closing drops the last sender");
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dispatcher_thread_gets_a_precise_timer_slack() {
        let got = std::thread::spawn(|| {
            precise_timer_slack();
            let link = std::fs::read_link("/proc/thread-self").expect("thread-self");
            let tid = link.file_name().expect("tid").to_owned();
            std::fs::read_to_string(
                std::path::Path::new("/proc")
                    .join(tid)
                    .join("timerslack_ns"),
            )
            .expect("read slack")
        })
        .join()
        .expect("thread");
        assert_eq!(got.trim(), "1");
        // Only that thread: the process keeps the default.
        let main = std::fs::read_to_string("/proc/self/timerslack_ns").expect("read");
        assert_ne!(main.trim(), "1");
    }

    #[test]
    fn precise_sleep_is_not_early() {
        let d = Instant::now() + Duration::from_millis(3);
        assert!(sleep_until_precise(d, SPIN_MAX, &Stop::new()));
        assert!(Instant::now() >= d);
        let stop = Stop::new();
        stop.stop();
        let far = Instant::now() + Duration::from_secs(60);
        assert!(
            !sleep_until_precise(far, SPIN_MIN, &stop),
            "a stop ends the wait"
        );
        assert_eq!(
            spin_for(Duration::from_millis(1)),
            Duration::from_micros(100)
        );
        assert_eq!(spin_for(Duration::from_micros(100)), SPIN_MIN);
        assert_eq!(spin_for(Duration::ZERO), SPIN_MIN);
        assert_eq!(spin_for(Duration::from_secs(1)), SPIN_MAX);
    }
}
