//! What a diff decides: the [`DiffOutcome`] (serialized as `verdict.json`, schema in
//! `docs/verdict.md`) and its parts.

use serde::Serialize;

use crate::checks::CheckName;
use crate::config::{IgnoreRule, InconclusiveAs};
use crate::detect::Volatile;

/// Version of the `verdict.json` schema. Bumped on any incompatible change; fields are only
/// added within a version.
pub const VERDICT_SCHEMA_VERSION: u32 = 1;

/// The decision about a run (or a route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No regression found with enough data.
    Pass,
    /// The score is below the pass threshold but above the marginal one.
    Marginal,
    /// A regression: roll back.
    Fail,
    /// Not enough data to decide.
    Inconclusive,
}

impl Verdict {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Marginal => "marginal",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// The process exit code for this verdict: 0 pass, 0 marginal (1 when `strict`), 1 fail,
    /// 3 inconclusive (or as `inconclusive_as` says).
    pub fn exit_code(self, strict: bool, inconclusive_as: InconclusiveAs) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Marginal => u8::from(strict),
            Verdict::Fail => 1,
            Verdict::Inconclusive => match inconclusive_as {
                InconclusiveAs::Inconclusive => 3,
                InconclusiveAs::Pass => 0,
                InconclusiveAs::Fail => 1,
            },
        }
    }
}

/// How one check came out (Kayenta's classifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    /// Nothing wrong.
    Pass,
    /// Worse than the baseline (a regression).
    High,
    /// Better than the baseline (reported, counts as a pass).
    Low,
    /// Not enough data to decide.
    Nodata,
    /// The check could not be computed.
    Error,
}

impl Classification {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Pass => "pass",
            Classification::High => "high",
            Classification::Low => "low",
            Classification::Nodata => "nodata",
            Classification::Error => "error",
        }
    }
}

/// One check of one route.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `responses`, `errors`, `latency`, `slo p95<300ms`, `shape` (informational) or
    /// `baseline` (the baseline did not answer); serialized as those strings.
    pub name: CheckName,
    /// The outcome.
    pub classification: Classification,
    /// A `high` on a critical check fails the route whatever the score.
    pub critical: bool,
    /// Weight in the route's score (0 for informational checks).
    pub weight: f64,
    /// One sentence saying what was found.
    pub reason: String,
}

/// Latency percentiles of one side, in microseconds (`None` = nodata: too few samples).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 95th percentile.
    pub p95: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// Largest value.
    pub max: Option<u64>,
    /// The percentiles above that are `None` because fewer than `tail_samples` samples lie
    /// above them (`"p95"` with fewer than 40 samples, by default), as estimated from those few
    /// samples: shown with a low-n marker, never used by a check.
    pub low_n: std::collections::BTreeMap<String, u64>,
}

impl Percentiles {
    /// Percentile `label` (`p50`, `p90`, `p95`, `p99`, `p999`) for people: the value and
    /// whether it is a low-n estimate (see [`Percentiles::low_n`]); `None` without samples.
    pub fn shown(&self, label: &str) -> Option<(u64, bool)> {
        let exact = match label {
            "p50" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "p999" => self.p999,
            _ => None,
        };
        exact
            .map(|v| (v, false))
            .or_else(|| self.low_n.get(label).map(|v| (*v, true)))
    }

    /// The percentile at `q` among those the checks compare (0.5, 0.95, 0.99).
    pub(crate) fn at(&self, q: f64) -> Option<u64> {
        match q {
            0.5 => self.p50,
            0.95 => self.p95,
            0.99 => self.p99,
            _ => None,
        }
    }
}

/// The latency comparison of one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyReport {
    /// Baseline percentiles (HDR histogram, 3 significant digits).
    pub baseline: Percentiles,
    /// Candidate percentiles.
    pub candidate: Percentiles,
    /// Mann-Whitney U of candidate vs baseline (on the reservoir sample).
    pub mann_whitney: Option<crate::stats::MannWhitney>,
    /// Hodges-Lehmann shift (µs) with its interval.
    pub hodges_lehmann: Option<crate::stats::HodgesLehmann>,
    /// Hodges-Lehmann shift of the secondary (noise) target against the baseline: environment
    /// drift. A slowdown must exceed its magnitude (when a noise target was replayed).
    pub noise_shift: Option<crate::stats::HodgesLehmann>,
    /// Bootstrap intervals of candidate/baseline at p50 / p95 / p99 (those with enough data).
    pub ratios: Vec<crate::stats::RatioCi>,
    /// Kolmogorov-Smirnov shape comparison (informational).
    pub ks: Option<crate::stats::KolmogorovSmirnov>,
}

impl LatencyReport {
    /// Relative change of the HDR percentile `q` (what the report tables show).
    pub(crate) fn hdr_change(&self, q: f64) -> Option<f64> {
        match (self.baseline.at(q), self.candidate.at(q)) {
            (Some(b), Some(c)) if b > 0 => Some(c as f64 / b as f64 - 1.0),
            _ => None,
        }
    }
}

/// Error (5xx or no response) counts of one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorCounts {
    /// Baseline responses that were 5xx or missing.
    pub baseline: u64,
    /// Baseline requests that got no response at all (refused, reset, timeout…): a baseline that
    /// does not answer cannot serve as the reference.
    pub baseline_unanswered: u64,
    /// Candidate responses that were 5xx or missing.
    pub candidate: u64,
    /// Secondary responses that were 5xx or missing (when a noise target was replayed).
    pub secondary: Option<u64>,
    /// Candidate errors by kind (`5xx`, `timeout`, `reset`…).
    pub candidate_by_kind: std::collections::BTreeMap<String, u64>,
}

/// A worked example of a finding: the request and both responses.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// The recorded exchange that was replayed.
    pub origin_id: String,
    /// The request as a `curl` command (secrets redacted).
    pub curl: String,
    /// The baseline's value at the finding's path.
    pub baseline_value: String,
    /// The candidate's value at the finding's path.
    pub candidate_value: String,
    /// Baseline status and body excerpt.
    pub baseline_response: String,
    /// Candidate status and body excerpt.
    pub candidate_response: String,
}

/// How a (route, path) difference was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathStatus {
    /// The candidate differs clearly more often than the noise: a regression.
    Regression,
    /// Differences explained by noise (secondary disagrees as often): not a regression.
    Noise,
    /// No secondary: the values look volatile (timestamps, UUIDs, tokens): reported separately.
    NoiseCandidate,
    /// Too rare to count (below the absolute threshold).
    BelowThreshold,
}

/// Differences found at one (route, path).
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// JSON path with indices generalized (`$.items[*].id`), `status`, `header:x`, `body`.
    pub path: String,
    /// Kind of the first difference seen here.
    pub kind: String,
    /// Exchanges where baseline and candidate differ here.
    pub raw_count: u64,
    /// `raw_count / paired`.
    pub raw_rate: f64,
    /// Exchanges where baseline and secondary differ here.
    pub noise_count: Option<u64>,
    /// `noise_count / paired with a secondary`.
    pub noise_rate: Option<f64>,
    /// When the detectors saw volatile values here (no secondary): which kind.
    pub volatile: Option<Volatile>,
    /// The judgement.
    pub status: PathStatus,
    /// An example (for the first findings of a route).
    pub example: Option<Example>,
}

/// Everything about one route.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    /// `METHOD /path/{template}?query&names`.
    pub route: String,
    /// The route's verdict.
    pub verdict: Verdict,
    /// Weighted score 0..=100 (`None` when no check had data).
    pub score: Option<f64>,
    /// Paired exchanges.
    pub paired: u64,
    /// Paired exchanges that also had a secondary response.
    pub with_noise: u64,
    /// Baseline exchanges on this route (= `paired`, except in unpaired canary analysis).
    pub baseline_count: u64,
    /// Candidate exchanges on this route (= `paired`, except in unpaired canary analysis).
    pub candidate_count: u64,
    /// The checks.
    pub checks: Vec<Check>,
    /// Differences by path (regressions first).
    pub paths: Vec<PathReport>,
    /// Error counts.
    pub errors: ErrorCounts,
    /// Latency comparison.
    pub latency: LatencyReport,
}

/// Pairing counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Result rows read from the run.
    pub rows: u64,
    /// Rows read from the baseline tape (`--baseline-tape`).
    pub baseline_tape_rows: u64,
    /// Rows for other targets, or without `origin_id`.
    pub rows_ignored: u64,
    /// Origins with a baseline and a candidate response.
    pub paired: u64,
    /// Of those, origins that also had a secondary response.
    pub with_noise: u64,
    /// Origins with a baseline response but no candidate response.
    pub baseline_only: u64,
    /// Origins with a candidate response but no baseline response.
    pub candidate_only: u64,
    /// Recorded exchanges that were not replayed (`--baseline-tape`).
    pub not_replayed: u64,
    /// Rows that repeated a (origin, target) already seen (the later one was ignored).
    pub duplicates: u64,
    /// Origins given up waiting for their partners because `max_pending` was reached.
    pub evicted: u64,
    /// Findings dropped by `[[ignore]]` rules.
    pub ignored_findings: u64,
    /// Rows per target label.
    pub targets: std::collections::BTreeMap<String, u64>,
}

/// A volatile-looking difference found without a secondary (reported, never a regression).
#[derive(Debug, Clone, Serialize)]
pub struct NoiseCandidate {
    /// Route key.
    pub route: String,
    /// Path.
    pub path: String,
    /// What the values look like.
    pub volatile: Volatile,
    /// Share of the route's exchanges where it differed.
    pub rate: f64,
}

/// The result of a diff.
#[derive(Debug, Clone, Serialize)]
pub struct DiffOutcome {
    /// `verdict.json` schema version ([`VERDICT_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// tapedeck version that judged.
    pub tool_version: String,
    /// Identifies the run (its directory name).
    pub run_id: String,
    /// When the verdict was made (RFC 3339, UTC).
    pub generated_at: String,
    /// The decision.
    pub verdict: Verdict,
    /// Whether to roll back (the verdict is `fail`).
    pub rollback: bool,
    /// Score 0..=100: the lowest route score (`None` when nothing had data).
    pub score: Option<f64>,
    /// The exit code the CLI uses (0, 1 or 3) given `--strict` / `--inconclusive-as`.
    pub exit_code: u8,
    /// A one-line title for tickets, e.g. `GET /api/users p95 +1,540 % (v1 → v2)`.
    pub title: String,
    /// Why, as sentences (failures first).
    pub reasons: Vec<String>,
    /// Target label of the baseline (or `recorded` with `--baseline-tape`).
    pub baseline: String,
    /// Target label of the candidate.
    pub candidate: String,
    /// Target label of the noise instance.
    pub noise: Option<String>,
    /// Version label of the baseline (titles).
    pub baseline_version: String,
    /// Version label of the candidate (titles).
    pub candidate_version: String,
    /// First and last scheduled send time of the paired exchanges (µs since the epoch).
    pub window_us: Option<(i64, i64)>,
    /// Pairing counts.
    pub counts: Counts,
    /// Latency over all routes.
    pub overall_latency: LatencyReport,
    /// Per-route results, failing routes first.
    pub routes: Vec<RouteReport>,
    /// Volatile-looking differences (no secondary).
    pub noise_candidates: Vec<NoiseCandidate>,
    /// Ignore rules learned from this run (what `--write-rules` writes).
    pub learned_rules: Vec<IgnoreRule>,
    /// Damaged files skipped (`--skip-corrupt`), with the reason.
    pub skipped_files: Vec<String>,
    /// How requests were keyed into routes (templates and threshold), so that a tool reading
    /// this verdict keys the run's requests the same way.
    pub route_keys: crate::route::RouteKeys,
    /// `--early-stop`: whether the sequential judge stopped the replay before the tape's end
    /// (absent without `--early-stop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<bool>,
    /// `--early-stop`: requests sent per target label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_sent: Option<std::collections::BTreeMap<String, u64>>,
    /// `--early-stop`: milliseconds from the start of the replay to the verdict (the sequential
    /// decision, or the end of judging when the tests did not decide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_verdict_ms: Option<u64>,
    /// `--early-stop`: what the sequential (anytime-valid) judge decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialReport>,
    /// The dependency section, when dependencies were mocked during the run (`check --mock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<crate::deps::DependencyReport>,
    /// The chaos section, when the candidate was replayed again with faults (`check --chaos`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<crate::chaos::ChaosReport>,
    /// `check --corpus`: what replaying the regression corpus found (known regressions that
    /// reappeared, with their tickets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus: Option<crate::corpus::CorpusReport>,
}

/// The sequential judge's account of a `--early-stop` run (see docs/verdict.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequentialReport {
    /// The bound on the false-fail probability.
    pub alpha: f64,
    /// `fail` (a test crossed), `pass` (every route with enough data shown without
    /// regression) or `undecided` (the tape ended first).
    pub decision: String,
    /// Paired origins the tests had taken when they decided (or in all, when undecided).
    pub origins: u64,
    /// Fail tests created (the length of the alpha-spending sequence).
    pub tests: u64,
    /// Routes seen, and those of them shown without regression.
    pub routes: u64,
    /// See `routes`.
    pub routes_passed: u64,
    /// The tests that crossed their threshold, in the order they did.
    pub crossed: Vec<SeqCrossing>,
}

/// One sequential test that crossed its failure threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeqCrossing {
    /// Route key.
    pub route: String,
    /// `responses`, `latency`, `errors` or `slo …` (serialized as that string).
    pub check: CheckName,
    /// For `responses`: the JSON path (or `status`, `header:…`, `body`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The test's e-value when it crossed.
    pub e_value: f64,
    /// The threshold it crossed (`k(k+1)/alpha` for the `k`-th test).
    pub threshold: f64,
    /// Paired origins on the route when it crossed.
    pub origins: u64,
    /// The observed mean of the test's per-origin statistic (candidate rate minus noise rate).
    pub rate: f64,
}

impl DiffOutcome {
    /// The route named `route`, if it was seen.
    pub fn route(&self, route: &str) -> Option<&RouteReport> {
        self.routes.iter().find(|r| r.route == route)
    }

    /// Paths judged regressions, as `(route, path)`.
    pub fn regressions(&self) -> Vec<(&str, &str)> {
        self.routes
            .iter()
            .flat_map(|r| {
                r.paths
                    .iter()
                    .filter(|p| p.status == PathStatus::Regression)
                    .map(move |p| (r.route.as_str(), p.path.as_str()))
            })
            .collect()
    }

    /// Checks classified `high`, as `(route, check name)`.
    pub fn failed_checks(&self) -> Vec<(&str, &str)> {
        self.routes
            .iter()
            .flat_map(|r| {
                r.checks
                    .iter()
                    .filter(|c| c.classification == Classification::High)
                    .map(move |c| (r.route.as_str(), c.name.as_str()))
            })
            .collect()
    }
}
