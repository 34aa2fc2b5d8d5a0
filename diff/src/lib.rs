//! `tapedeck-diff`: the judge. Compares the responses and latencies a candidate build gave to
//! replayed traffic against a baseline (and a second baseline instance for noise), and decides
//! pass / marginal / fail / inconclusive with reasons and reports.
#![forbid(unsafe_code)]

pub mod body;
pub mod compare;
pub mod config;
pub mod detect;
mod engine;
mod error;
pub mod json;
pub mod outcome;
mod pair;
pub mod report;
pub mod route;
pub mod stats;

pub use config::{DiffConfig, DiffOptions, InconclusiveAs, RulesFile, Settings};
pub use engine::Differ;
pub use error::DiffError;
pub use outcome::{Classification, DiffOutcome, Verdict};

/// Judges a run: `Differ::new(config.clone()).run()`.
pub fn run(config: &DiffConfig) -> Result<DiffOutcome, DiffError> {
    Differ::new(config.clone()).run()
}
