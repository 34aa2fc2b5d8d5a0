//! `tapedeck-diff`: the judge. Compares the responses and latencies a candidate build gave to
//! replayed traffic against a baseline (and a second baseline instance for noise), and decides
//! pass / marginal / fail / inconclusive with reasons and reports.
//!
//! ```no_run
//! use tapedeck_diff::{DiffOptions, report};
//!
//! let mut opts = DiffOptions::new("./runs/r1"); // targets `baseline` and `candidate`
//! opts.noise = Some("secondary".into()); // a second baseline replayed in the same pass
//! let config = opts.validate()?; // loads `opts.rules`, checks every setting
//! let outcome = tapedeck_diff::run(&config)?;
//! report::write_reports(&outcome, std::path::Path::new("./report"))?;
//! print!("{}", report::summary(&outcome, false));
//! std::process::exit(outcome.exit_code.into());
//! # Ok::<(), tapedeck_diff::DiffError>(())
//! ```
//!
//! Data flow: result rows stream from the run ([`tapedeck_storage::Tape`]) into a pairer keyed
//! by `origin_id` (bounded map; rows of one origin are adjacent in replay output), each
//! complete group goes through the [`compare::Comparator`] (baseline vs candidate, and
//! baseline vs secondary for noise), findings are aggregated per route and generalized JSON
//! path, latencies go into HDR histograms and seeded reservoirs, and at the end every route's
//! checks ([`CheckName`]) are classified and scored into the [`DiffOutcome`]. Memory is bounded by the pending
//! map, the per-route accumulators and one example per (route, path), never by the run's size.
//!
//! Public surface: the judge ([`run`], [`Differ`], [`DiffOptions`] → [`DiffConfig`],
//! [`DiffOutcome`]) and the modules other crates build on — `report` (the [`report::REPORTS`]
//! list and the summary), `route` (route keys), `body`, `compare` and `json` (response
//! comparison, fuzzed), `live` (early stop), `deps`, `chaos` and `corpus` (verdict sections),
//! `distill`, `outcome`, `config`, `fmt`. The route checks, the statistics, the sequential tests,
//! pairing and the HTML and GitHub renderers are private.
#![forbid(unsafe_code)]

pub mod body;
pub mod chaos;
mod checks;
pub mod compare;
pub mod config;
pub mod corpus;
pub mod deps;
mod detect;
pub mod distill;
mod engine;
mod error;
pub mod fmt;
pub mod json;
pub mod live;
pub mod outcome;
mod pair;
pub mod report;
mod report_gha;
mod report_html;
pub mod route;
mod sequential;
mod stats;

pub use checks::{CheckName, SloName};
pub use config::{DiffConfig, DiffOptions, InconclusiveAs, RulesFile, Settings};
pub use engine::Differ;
pub use error::DiffError;
pub use outcome::{Classification, DiffOutcome, Verdict};

/// Judges a run: `Differ::new(config.clone()).run()`.
pub fn run(config: &DiffConfig) -> Result<DiffOutcome, DiffError> {
    Differ::new(config.clone()).run()
}
