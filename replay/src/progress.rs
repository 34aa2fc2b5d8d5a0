//! Progress reporting: the [`Progress`] trait (the plug-in point for callers such as
//! `tapedeck check`) and three implementations: an indicatif bar for terminals, periodic log
//! lines for CI logs, and nothing.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Counters at one moment of a run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProgressSnapshot {
    /// Recorded exchanges dispatched so far (each goes to every target).
    pub origins: u64,
    /// Origins to dispatch in all, when known ([`Progress::wants_total`]).
    pub total_origins: Option<u64>,
    /// Requests sent (origins × targets).
    pub sent: u64,
    /// Requests finished (response or error).
    pub completed: u64,
    /// Requests that ended in an error.
    pub errors: u64,
    /// Time since sending started.
    pub elapsed: Duration,
}

impl ProgressSnapshot {
    /// Origins dispatched per second so far.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.origins as f64 / s
        } else {
            0.0
        }
    }
}

/// Receives progress during a replay. Every method has an empty default; each says when the
/// engine calls it. Calls come from the engine's tasks, never concurrently with each other.
pub trait Progress: Send + Sync {
    /// How often [`update`](Self::update) is called while sending (default 1 s).
    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }
    /// Whether the engine should count the selected exchanges before sending, so that
    /// snapshots carry `total_origins` (costs one extra pass over a few small columns).
    fn wants_total(&self) -> bool {
        false
    }
    /// Once, before the first send.
    fn start(&self, _total_origins: Option<u64>, _targets: usize) {}
    /// Every [`interval`](Self::interval) while sending.
    fn update(&self, _snapshot: &ProgressSnapshot) {}
    /// Once, after the last result was written.
    fn finish(&self, _snapshot: &ProgressSnapshot) {}
}

/// Reports nothing (`--quiet`, libraries, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

/// Periodic `tracing` info lines (for logs that are not a terminal).
#[derive(Debug, Clone, Copy)]
pub struct LogProgress {
    /// Time between lines.
    pub every: Duration,
}

impl Default for LogProgress {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(5),
        }
    }
}

impl Progress for LogProgress {
    fn interval(&self) -> Duration {
        self.every
    }
    fn start(&self, total_origins: Option<u64>, targets: usize) {
        tracing::info!(total = ?total_origins, targets, "replay started");
    }
    fn update(&self, s: &ProgressSnapshot) {
        tracing::info!(
            origins = s.origins,
            sent = s.sent,
            completed = s.completed,
            errors = s.errors,
            rate = format!("{:.1}/s", s.rate()),
            "replay progress"
        );
    }
    fn finish(&self, s: &ProgressSnapshot) {
        tracing::info!(
            origins = s.origins,
            sent = s.sent,
            errors = s.errors,
            secs = format!("{:.1}", s.elapsed.as_secs_f64()),
            "replay finished"
        );
    }
}

/// An indicatif progress bar on stderr: sent / errors / rate / ETA.
#[derive(Debug)]
pub struct BarProgress {
    bar: ProgressBar,
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl BarProgress {
    /// A bar drawn on stderr (hidden when stderr is not a terminal).
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        Self { bar }
    }
}

impl Progress for BarProgress {
    fn interval(&self) -> Duration {
        Duration::from_millis(200)
    }
    fn wants_total(&self) -> bool {
        true
    }
    fn start(&self, total_origins: Option<u64>, _targets: usize) {
        let style = match total_origins {
            Some(n) => {
                self.bar.set_length(n);
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                )
            }
            None => ProgressStyle::with_template("{elapsed_precise} {spinner} {pos} {msg}"),
        };
        if let Ok(style) = style {
            self.bar.set_style(style.progress_chars("=> "));
        }
    }
    fn update(&self, s: &ProgressSnapshot) {
        self.bar.set_position(s.origins);
        self.bar.set_message(format!(
            "sent {} errors {} {:.0}/s",
            s.sent,
            s.errors,
            s.rate()
        ));
    }
    fn finish(&self, s: &ProgressSnapshot) {
        self.update(s);
        self.bar.finish_and_clear();
    }
}
