//! The replay pipeline:
//!
//! ```text
//!  reader thread ──(bounded, 16 × 64 origins)──► senders ──(batches of ≤ 64 groups)──► results
//!  (tape scan, select,          closed loop: N long-lived tasks        thread (observer,
//!   prepare: headers,           open loop: a pacer task (timerfd)      statistics, TapeWriter
//!   path; `reader.rs`)          spawning one task per origin           with Block; `results.rs`)
//!                               (`closed_loop.rs`, `open_loop.rs`)
//!                               on worker threads (`workers.rs`), each
//!                               a current-thread runtime owning its
//!                               connections (`conn.rs`)
//! ```
//!
//! Memory is bounded by the queues and the in-flight cap, whatever the tape's size. How sends are
//! paced comes from the configured [`Pacer`](crate::pace::Pacer): an open-loop schedule or a
//! closed loop. A run can be stopped from outside ([`Stop`]) or by its [`Observer`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tapedeck_storage::{Exchange, ReadReport, StorageError, Tape};
use tokio::sync::mpsc;

use crate::config::ReplayConfig;
use crate::conn::Endpoint;
use crate::error::ReplayError;
use crate::pace::Drive;
use crate::progress::{NoProgress, Progress, ProgressSnapshot};
use crate::select::{SelectionStats, Selector, normalize_authority};
use crate::send::{Clock, SendSettings};
use crate::summary::{Collector, ReplaySummary, SUMMARY_VERSION, lost, pacing_summary};

mod closed_loop;
mod open_loop;
mod origin;
mod reader;
mod results;
mod stop;
mod workers;

pub use results::Observer;
pub use stop::Stop;

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

/// One replay run, set up step by step:
///
/// ```no_run
/// # use tapedeck_replay::{LogProgress, Replay, ReplayOptions, Stop};
/// # let config = ReplayOptions::default().validate()?;
/// let stop = Stop::new();
/// stop.on_signals()?;
/// let summary = Replay::new(&config)
///     .progress(LogProgress::default())
///     .stop(stop)
///     .run_blocking()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Replay<'a> {
    config: &'a ReplayConfig,
    progress: Arc<dyn Progress>,
    stop: Stop,
    observer: Option<Box<dyn Observer>>,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("stop", &self.stop)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Replay<'a> {
    /// A run of `config` with no progress output, no observer, stopped only by its tape's end.
    pub fn new(config: &'a ReplayConfig) -> Self {
        Self {
            config,
            progress: Arc::new(NoProgress),
            stop: Stop::default(),
            observer: None,
        }
    }

    /// Reports progress to `progress`.
    pub fn progress(mut self, progress: impl Progress + 'static) -> Self {
        self.progress = Arc::new(progress);
        self
    }

    /// Stops early (cleanly, every result written) when `stop` is triggered.
    pub fn stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// Hands every origin's results to `observer` as they are written (see [`Observer`]).
    pub fn observer(mut self, observer: impl Observer + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// Runs on a small runtime of its own (for callers without one).
    pub fn run_blocking(self) -> Result<ReplaySummary, ReplayError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ReplayError::Start {
                what: "the tokio runtime",
                source,
            })?;
        rt.block_on(self.run())
    }

    /// Replays and returns the summary. Works inside any tokio runtime: the sending happens on
    /// threads of the run's own. A misbehaving target never makes this fail: its errors are
    /// counted per exchange. Fails for bad input (unreadable tape, same-host target) and when
    /// results cannot be written.
    pub async fn run(self) -> Result<ReplaySummary, ReplayError> {
        run_replay(self).await
    }
}

/// Runs a replay on a runtime it creates (for callers without one). See [`run`].
pub fn run_blocking<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
) -> Result<ReplaySummary, ReplayError> {
    Replay::new(config).progress(progress).run_blocking()
}

/// [`run_blocking`] that stops early when `stop` is triggered (e.g. from a signal handler).
pub fn run_blocking_until<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
    stop: Stop,
) -> Result<ReplaySummary, ReplayError> {
    Replay::new(config)
        .progress(progress)
        .stop(stop)
        .run_blocking()
}

/// Replays `config` and returns the summary (see [`Replay::run`]).
pub async fn run<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
) -> Result<ReplaySummary, ReplayError> {
    Replay::new(config).progress(progress).run().await
}

/// [`run`] that stops early (cleanly, results written) when `stop` is triggered.
pub async fn run_until<P: Progress + 'static>(
    config: &ReplayConfig,
    progress: P,
    stop: Stop,
) -> Result<ReplaySummary, ReplayError> {
    Replay::new(config)
        .progress(progress)
        .stop(stop)
        .run()
        .await
}

/// Settings and counters every sender shares.
#[derive(Debug)]
struct Ctx {
    send: SendSettings,
    counters: Arc<Counters>,
}

async fn run_replay(r: Replay<'_>) -> Result<ReplaySummary, ReplayError> {
    let Replay {
        config,
        progress,
        stop,
        observer,
    } = r;
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
        reader::check_same_host(&tape, config, &target_hosts).map_err(|e| match e {
            Ok(same) => same,
            Err(storage) => tape_err(storage),
        })?;
    }
    // Issue 8: a damaged later file is an error (naming it) before anything is sent, not midway
    // through the run; with --skip-corrupt the scan skips what this finds.
    let mut verify = reader::read_options(config, &[]);
    verify.columns = None;
    tape.verify(&verify).map_err(tape_err)?;

    let mut total = None;
    // Issue 17: `--strict-credentials` needs every selected request's headers before the first
    // send, so it reads the request-header column in this pass (a dry run too, to report them);
    // otherwise the reader warns from its first batch and the summary counts them all.
    let read_headers = config.dry_run || config.strict_credentials;
    if read_headers || progress.wants_total() {
        let (tape2, selector) = (
            tape.clone(),
            Selector::new(config.select.clone(), target_hosts.clone()),
        );
        let mut columns = reader::COUNT_COLUMNS.to_vec();
        if read_headers {
            columns.push(tapedeck_storage::schema::col::REQ_HEADERS);
        }
        let opts = reader::read_options(config, &columns);
        let (stats, report, err) =
            tokio::task::spawn_blocking(move || reader::count_pass(&tape2, opts, selector))
                .await
                .map_err(|_| ReplayError::Panicked {
                    what: "the counting pass",
                })?;
        if let Some(e) = err {
            return Err(tape_err(e));
        }
        if config.strict_credentials && !stats.redacted_credentials.is_empty() {
            return Err(ReplayError::RedactedCredentials {
                found: crate::select::describe_placeholders(&stats.redacted_credentials),
                fix: crate::select::set_header_fix(&stats.redacted_credentials),
            });
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
    let writer = results::open_writer(config, &out)?;

    let clock = Clock::new();
    let endpoints = config
        .targets
        .iter()
        .map(|t| {
            Endpoint::new(t.clone(), config.connect_timeout, config.tls.as_ref())
                .map(Arc::new)
                .map_err(|reason| ReplayError::config("target", reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let counters = Arc::new(Counters::default());
    let ctx = Arc::new(Ctx {
        send: SendSettings {
            clock,
            timeout: config.timeout,
            max_body: config.max_body,
        },
        counters: counters.clone(),
    });

    let (res_tx, res_rx) = mpsc::channel(results::RESULT_QUEUE);
    let results_thread = results::spawn_results_thread(
        res_rx,
        config.targets.len(),
        Collector::new(&config.targets),
        writer.sender(),
        observer,
        stop.clone(),
    )?;
    let drive = config.pace.pacer().drive();
    let threads = config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let spare = match &drive {
        Drive::Open(_) => open_loop::spares(config.max_in_flight),
        Drive::Closed { .. } => 0,
    };
    // Every connection the run may open, and some files, before the clock starts: a table
    // growth mid-run stalled the sending thread for 5–10 ms each, and in open loop the first
    // stall made the burst of connections that made the next ones (issue 14).
    let in_flight = match &drive {
        Drive::Open(_) => config.max_in_flight,
        Drive::Closed { concurrency } => *concurrency,
    };
    tapedeck_common::net::reserve_fd_table(in_flight.saturating_mul(config.targets.len()) + 64);
    let h2_conns = config.connections.unwrap_or(threads);
    let shared = matches!(drive, Drive::Open(_));
    let workers = workers::Workers::start(threads, shared, &endpoints, h2_conns, spare, &res_tx)?;
    drop(res_tx);

    let (item_tx, item_rx) = mpsc::channel::<Vec<reader::Item>>(reader::READ_QUEUE);
    let selector = Selector::new(config.select.clone(), target_hosts);
    let reader_thread = reader::spawn_reader(config, tape.clone(), selector, item_tx)?;

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

    let dispatched = match drive {
        Drive::Closed { concurrency } => {
            closed_loop::run(item_rx, &ctx, &workers, concurrency, &stop).await
        }
        Drive::Open(schedule) => {
            open_loop::run(
                item_rx,
                &ctx,
                &workers,
                schedule,
                config.max_in_flight,
                &stop,
            )
            .await
        }
    };
    // Every origin has completed and pushed its results: hand over the rest and close the
    // queue, so that the results thread ends.
    workers.finish().await?;
    let (sel_stats, report, read_err) = join(reader_thread, "the tape reader thread").await?;
    let (collector, lost_appends) = join(results_thread, "the result writer thread").await?;
    ticker.abort();
    let final_snapshot = counters.snapshot(total, send_start);
    progress.finish(&final_snapshot);
    let wstats = tokio::task::spawn_blocking(move || writer.close())
        .await
        .map_err(|_| ReplayError::Panicked {
            what: "closing the output tape",
        })?
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
        &config.pace,
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

/// Waits for a thread without blocking the runtime; a panic is an error naming `what`.
async fn join<T: Send + 'static>(
    h: std::thread::JoinHandle<T>,
    what: &'static str,
) -> Result<T, ReplayError> {
    tokio::task::spawn_blocking(move || h.join())
        .await
        .map_err(|_| ReplayError::Panicked { what })?
        .map_err(|_| ReplayError::Panicked { what })
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
        pacing: pacing_summary(&config.pace, 0, None, None, None, None, lateness),
        targets,
        files_read: report.files_read,
        files_skipped: report.files_skipped,
    }
}

/// Live counts for progress reports.
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

/// What one sender (or the open-loop pacer) sent, for the pacing summary.
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
    fn sent(&mut self, scheduled: Instant, now: Instant, counters: &Counters, n_targets: u64) {
        self.origins += 1;
        self.first_sched.get_or_insert(scheduled);
        self.last_sched = Some(scheduled);
        self.first_sent.get_or_insert(now);
        self.last_sent = Some(now);
        counters.origins.fetch_add(1, Ordering::Relaxed);
        counters.sent.fetch_add(n_targets, Ordering::Relaxed);
    }

    /// Adds another sender's counts.
    fn merge(&mut self, d: Dispatched) {
        fn min_some(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        self.origins += d.origins;
        self.interrupted |= d.interrupted;
        self.first_sched = min_some(self.first_sched, d.first_sched);
        self.first_sent = min_some(self.first_sent, d.first_sent);
        self.last_sched = self.last_sched.max(d.last_sched);
        self.last_sent = self.last_sent.max(d.last_sent);
    }
}
