//! `tapedeck-replay`: replays a recorded tape against one or more targets and writes the results
//! as a tape.
//!
//! ```no_run
//! use tapedeck_replay::{NoProgress, ReplayOptions, run_blocking};
//! let options = ReplayOptions {
//!     tape: vec!["./tapes/svc".into()],
//!     out: Some("./runs/r1".into()),
//!     targets: vec!["candidate=http://127.0.0.1:9001".into()],
//!     ..ReplayOptions::default()
//! };
//! let config = options.validate()?;
//! let summary = run_blocking(&config, NoProgress)?;
//! println!("{}", tapedeck_replay::render_text(&summary));
//! # Ok::<(), tapedeck_replay::ReplayError>(())
//! ```
//!
//! # Invariants of the result tape
//! - One result exchange per (selected recorded exchange, target): `origin_id` = the recorded
//!   id, `target` = the label, `scheduled_at_us` = when it was due (the same for every target
//!   of an origin), `sent_at_us` = when this target's request left. `started_at_us` = the
//!   earliest `sent_at_us` of the origin's results (equal for all of them: see below).
//!   `ttfb_us`, `duration_us` and `total_us` are measured from `scheduled_at_us` (free of
//!   coordinated omission); `duration_us == total_us`.
//! - The results of one origin (one per target, in target order) are appended adjacently, and
//!   since they share `started_at_us` they share an hour partition, so they are adjacent in
//!   the sealed files too: a reader can pair them by streaming. Origins themselves appear in
//!   completion order (roughly recorded order), not strictly sorted.
//! - Errors (refused, reset, timeout, protocol…) are result exchanges with `error_kind` set
//!   and no status; nothing is dropped (`WhenFull::Block`).
//! - Request headers are stored as sent, except values set with `--set-header` that used
//!   `${VAR}`: those are stored unexpanded, so injected credentials never reach disk.
//! - File metadata: see [`meta`].
#![forbid(unsafe_code)]

pub mod config;
mod conn;
mod engine;
mod error;
pub mod pace;
mod progress;
mod rewrite;
pub mod select;
mod send;
mod summary;
mod tls;

pub use config::{Protocol, ReplayConfig, ReplayOptions, Target};
pub use engine::{Observer, Replay, Stop, meta, run, run_blocking, run_blocking_until, run_until};
pub use error::ReplayError;
pub use pace::{Pace, Pacer};
pub use progress::{BarProgress, LogProgress, NoProgress, Progress, ProgressSnapshot};
pub use select::{SelectionStats, Shard, ShardError, shard_hash};
pub use summary::{
    PacingSummary, Percentiles, ReplaySummary, SUMMARY_VERSION, TargetSummary, render_text,
};
