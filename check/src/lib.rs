//! The check pipeline: one typed [`CheckSpec`] → replay → judge → reports (→ ticket).
//!
//! `tapedeck check`, `tapedeck demo` and `tapedeck serve` all run a check through [`check`]:
//! the CLI turns flags into a spec, `serve` builds one per run from its settings and the run's
//! request, the demo builds its own. In one pass the tape is replayed against the baseline, the
//! candidate and a noise target ([`Noise`]); recorded dependencies can be served as mocks
//! ([`Dependency`]), replayed again with injected faults ([`CheckSpec::chaos`]); the regression
//! corpus ([`corpus`]) is replayed and judged before the tape; the judge may stop the replay as
//! soon as its anytime-valid tests decide ([`JudgeSpec::early_stop`]). The reports
//! (`tapedeck_diff::report::REPORTS`) go to [`CheckSpec::report`], and a ticket bundle to
//! [`CheckSpec::ticket`] when the verdict is not a pass.
//!
//! Target labels in the run tape are [`BASELINE`], [`CANDIDATE`], [`SECONDARY`] (the noise
//! target) and, in the chaos run, [`CHAOS`].

#![forbid(unsafe_code)]

pub mod corpus;
mod error;
mod pipeline;

pub use error::CheckError;
pub use pipeline::{Checked, CorpusPhase, check, validate};

use std::net::SocketAddr;
use std::path::PathBuf;

use tapedeck_diff::InconclusiveAs;
use tapedeck_replay::ReplayOptions;

/// Target label of the baseline in the run that a check writes.
pub const BASELINE: &str = "baseline";
/// Target label of the candidate.
pub const CANDIDATE: &str = "candidate";
/// Target label of the noise target (a second baseline, or the baseline replayed twice).
pub const SECONDARY: &str = "secondary";
/// The candidate's label in the `chaos` run.
pub const CHAOS: &str = "chaos";

/// What measures the noise floor of every verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noise {
    /// A second baseline instance at this URL, replayed in the same pass.
    Secondary(String),
    /// The baseline itself, replayed a second time at the same instant (the default: a latency
    /// verdict always has a noise floor).
    Baseline,
    /// No noise target: differences are judged without a measured floor.
    Off,
}

/// A recorded dependency served as a mock during the check (`--mock NAME=TAPE@ADDR`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// The dependency's name (letters, digits, `-`, `_`, `.`): its calls go to
    /// `REPORT/mocks/NAME`.
    pub name: String,
    /// Its recorded tape.
    pub tape: PathBuf,
    /// The address the services under test call it at.
    pub addr: SocketAddr,
}

/// How the judge decides.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeSpec {
    /// Rules file (TOML).
    pub rules: Option<PathBuf>,
    /// Latency objectives for the candidate, e.g. `GET /api/users: p95<300ms`.
    pub slos: Vec<String>,
    /// A marginal verdict fails.
    pub strict: bool,
    /// What an inconclusive verdict exits with.
    pub inconclusive_as: InconclusiveAs,
    /// Version label of the baseline (for titles).
    pub baseline_version: Option<String>,
    /// Version label of the candidate.
    pub candidate_version: Option<String>,
    /// Judge while replaying; stop once the sequential tests decide.
    pub early_stop: bool,
    /// With `early_stop`: the bound on the false-fail probability (default from the rules, else
    /// 0.01).
    pub alpha: Option<f64>,
}

impl Default for JudgeSpec {
    fn default() -> Self {
        JudgeSpec {
            rules: None,
            slos: Vec::new(),
            strict: false,
            inconclusive_as: InconclusiveAs::Inconclusive,
            baseline_version: None,
            candidate_version: None,
            early_stop: false,
            alpha: None,
        }
    }
}

/// How the replay shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressStyle {
    /// Nothing.
    #[default]
    Quiet,
    /// A progress bar (a terminal).
    Bar,
    /// Periodic log lines (CI logs).
    Log,
}

/// Everything one check does.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// Recorded tapes to replay (directories, files or object-store URLs).
    pub tapes: Vec<PathBuf>,
    /// URL of the baseline (the version in production).
    pub baseline: String,
    /// URL of the candidate.
    pub candidate: String,
    /// The noise target.
    pub noise: Noise,
    /// Directory (or object-store URL) for the reports.
    pub report: PathBuf,
    /// Where the run tape goes [default: `REPORT/run`]; must not exist yet.
    pub out: Option<PathBuf>,
    /// Pacing, timeouts, headers, filters and safety switches of the replay. `tape`, `out` and
    /// `targets` are set by the pipeline (the fields above say them).
    pub replay: ReplayOptions,
    /// The judge's settings.
    pub judge: JudgeSpec,
    /// Dependencies served as mocks during the run.
    pub dependencies: Vec<Dependency>,
    /// Header the mocks read trace ids from [default: `traceparent`].
    pub dependency_trace_header: Option<String>,
    /// After the judged run, replay the tape to the candidate alone while the mocks inject the
    /// faults of this file, and report how the candidate degraded (needs `dependencies`).
    pub chaos: Option<PathBuf>,
    /// A regression corpus (`tapedeck corpus add`) replayed and judged before the tape.
    pub corpus: Option<PathBuf>,
    /// Write a ticket bundle here when the verdict is not a pass.
    pub ticket: Option<PathBuf>,
    /// Progress output of the replay.
    pub progress: ProgressStyle,
}

impl CheckSpec {
    /// A check of `tapes` against `baseline` and `candidate` with the defaults of
    /// `tapedeck check`: closed loop with 16 requests in flight, the baseline replayed twice as
    /// the noise target, reports in `report`.
    pub fn new(
        tapes: Vec<PathBuf>,
        baseline: impl Into<String>,
        candidate: impl Into<String>,
        report: impl Into<PathBuf>,
    ) -> Self {
        CheckSpec {
            tapes,
            baseline: baseline.into(),
            candidate: candidate.into(),
            noise: Noise::Baseline,
            report: report.into(),
            out: None,
            replay: ReplayOptions {
                pace: "max".to_owned(),
                concurrency: Some(16),
                ..ReplayOptions::default()
            },
            judge: JudgeSpec::default(),
            dependencies: Vec::new(),
            dependency_trace_header: None,
            chaos: None,
            corpus: None,
            ticket: None,
            progress: ProgressStyle::Quiet,
        }
    }

    /// The noise target's URL, if any.
    pub fn noise_url(&self) -> Option<&str> {
        match &self.noise {
            Noise::Secondary(s) => Some(s),
            Noise::Baseline => Some(&self.baseline),
            Noise::Off => None,
        }
    }

    /// Where the run tape goes.
    pub fn run_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| self.report.join("run"))
    }
}
