//! Configuration: the raw options (flags) and rules file, and the checked [`DiffConfig`] that
//! [`DiffOptions::validate`] turns them into.
//!
//! (At 800 lines: one settings table and its validation, one key each; splitting it would put a
//! key's default and its check in different files.)
//!
//! The rules file is TOML with unknown keys rejected:
//!
//! ```toml
//! slo = ["GET /api/users: p95<300ms"]
//!
//! [settings]            # every threshold of the judge (see `Settings`)
//! min_samples = 20
//!
//! [headers]
//! compare = ["x-api-version"]   # compared in addition to the default set
//! ignore = ["cache-control"]    # never compared
//!
//! [[routes]]                    # explicit path templates, tried before inference
//! method = "GET"
//! template = "/api/items/{slug}"
//!
//! [[ignore]]                    # accepted differences (what --write-rules produces)
//! route = "GET /api/users/{id}" # a route key, or "*"
//! path = "$.request_id"         # a path as reported; "$..name" matches `name` at any depth
//! why = "differs between two baseline instances in 100 % of exchanges"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DiffError;

/// Thresholds of the judge. Every one is a setting (`[settings]` in the rules file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A route needs at least this many paired exchanges (and a latency test this many samples
    /// per side); below it, checks that find nothing are `nodata` rather than `pass`.
    pub min_samples: usize,
    /// Diffy's relative rule: a path regresses only when `(raw - noise) / raw` exceeds this.
    pub noise_relative: f64,
    /// Diffy's absolute rule: and only when `raw - noise` exceeds this fraction of the route's
    /// exchanges (0.0003 = 0.03 %).
    pub noise_absolute: f64,
    /// A route whose baseline got no response at all (refused, reset, timeout…) for more than this
    /// fraction of its requests is inconclusive: an unreachable baseline is no reference.
    pub max_baseline_unanswered: f64,
    /// Significance level of the one-sided Mann-Whitney U test (candidate slower).
    pub alpha: f64,
    /// Confidence of the Hodges-Lehmann shift interval (0.98 = 98 %); its low end must be > 0.
    pub hl_confidence: f64,
    /// Confidence of the bootstrap interval of the candidate/baseline percentile ratio.
    pub bootstrap_confidence: f64,
    /// Bootstrap resamples per route and percentile.
    pub bootstrap_resamples: usize,
    /// The ratio's interval must lie above `1 + ratio_tolerance` (0.1 = 10 % slower).
    pub ratio_tolerance: f64,
    /// Absolute floor: a latency regression must be at least this large (milliseconds), as the
    /// Hodges-Lehmann shift and as the percentile difference.
    pub min_shift_ms: f64,
    /// A percentile `q` is estimated only when at least this many samples lie above it
    /// (`n * (1 - q) >= tail_samples`); otherwise it is `nodata`.
    pub tail_samples: f64,
    /// Route score at or above which a route passes.
    pub pass_score: f64,
    /// Route score at or above which a route is marginal (below: fail).
    pub marginal_score: f64,
    /// Weight of the response-diff check in the score.
    pub weight_responses: f64,
    /// Weight of the error-rate check in the score.
    pub weight_errors: f64,
    /// Weight of the latency check in the score.
    pub weight_latency: f64,
    /// Weight of each SLO check in the score.
    pub weight_slo: f64,
    /// A response diff regression is critical (fails the run whatever the score).
    pub critical_responses: bool,
    /// A grown error rate is critical.
    pub critical_errors: bool,
    /// A latency regression is critical.
    pub critical_latency: bool,
    /// A broken SLO is critical.
    pub critical_slo: bool,
    /// The run is inconclusive when routes with enough data carry less than this share of the
    /// paired exchanges.
    pub min_coverage: f64,
    /// Seed of the random number generator (bootstrap, reservoir sampling): same input, same
    /// numbers.
    pub seed: u64,
    /// Origins kept waiting for their partner rows (rows of one origin are normally adjacent);
    /// beyond it the oldest is reported unpaired.
    pub max_pending: usize,
    /// Latency samples kept per route and target for the tests (reservoir); histograms see all.
    pub max_samples: usize,
    /// A path segment with more than this many distinct values at one position becomes
    /// `{param}` in the route key (0 turns inference off; ids, UUIDs and hex are always `{id}`).
    pub route_cardinality: usize,
    /// Characters of a response body shown in an example.
    pub excerpt_chars: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_samples: 20,
            noise_relative: 0.20,
            noise_absolute: 0.0003,
            max_baseline_unanswered: 0.5,
            alpha: 0.01,
            hl_confidence: 0.98,
            bootstrap_confidence: 0.95,
            bootstrap_resamples: 400,
            ratio_tolerance: 0.10,
            min_shift_ms: 2.0,
            tail_samples: 2.0,
            pass_score: 90.0,
            marginal_score: 75.0,
            weight_responses: 1.0,
            weight_errors: 1.0,
            weight_latency: 1.0,
            weight_slo: 1.0,
            critical_responses: true,
            critical_errors: true,
            critical_latency: false,
            critical_slo: true,
            min_coverage: 0.5,
            seed: 0x7a9e_dec4,
            max_pending: 20_000,
            max_samples: 20_000,
            route_cardinality: 50,
            excerpt_chars: 600,
        }
    }
}

impl Settings {
    fn validate(&self) -> Result<(), DiffError> {
        let unit = |key: &str, v: f64, lo_open: bool| -> Result<(), DiffError> {
            let ok = v.is_finite() && v < 1.0 && if lo_open { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(())
            } else {
                Err(DiffError::invalid(
                    format!("settings.{key}"),
                    format!(
                        "{v} must be a fraction in {}0, 1)",
                        if lo_open { "(" } else { "[" }
                    ),
                ))
            }
        };
        unit("noise_relative", self.noise_relative, false)?;
        unit("noise_absolute", self.noise_absolute, false)?;
        unit(
            "max_baseline_unanswered",
            self.max_baseline_unanswered,
            true,
        )?;
        unit("alpha", self.alpha, true)?;
        unit("hl_confidence", self.hl_confidence, true)?;
        unit("bootstrap_confidence", self.bootstrap_confidence, true)?;
        unit("min_coverage", self.min_coverage, false)?;
        let nonneg = |key: &str, v: f64| -> Result<(), DiffError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(DiffError::invalid(
                    format!("settings.{key}"),
                    format!("{v} must be a finite number >= 0"),
                ))
            }
        };
        nonneg("ratio_tolerance", self.ratio_tolerance)?;
        nonneg("min_shift_ms", self.min_shift_ms)?;
        nonneg("tail_samples", self.tail_samples)?;
        nonneg("weight_responses", self.weight_responses)?;
        nonneg("weight_errors", self.weight_errors)?;
        nonneg("weight_latency", self.weight_latency)?;
        nonneg("weight_slo", self.weight_slo)?;
        if !(0.0..=100.0).contains(&self.pass_score)
            || !(0.0..=100.0).contains(&self.marginal_score)
            || self.marginal_score > self.pass_score
        {
            return Err(DiffError::invalid(
                "settings.pass_score / settings.marginal_score",
                "scores are 0..=100 and marginal_score <= pass_score",
            ));
        }
        let positive = |key: &str, v: usize| -> Result<(), DiffError> {
            if v > 0 {
                Ok(())
            } else {
                Err(DiffError::invalid(
                    format!("settings.{key}"),
                    "must be at least 1",
                ))
            }
        };
        positive("min_samples", self.min_samples)?;
        positive("bootstrap_resamples", self.bootstrap_resamples)?;
        positive("max_pending", self.max_pending)?;
        positive("max_samples", self.max_samples)?;
        Ok(())
    }
}

/// Which response headers are compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRules {
    /// Headers compared in addition to [`DEFAULT_COMPARED_HEADERS`].
    pub compare: Vec<String>,
    /// Headers never compared (wins over `compare` and the default set).
    pub ignore: Vec<String>,
}

/// Headers whose changes matter by default. Everything else (date, server, x-request-id, etag,
/// set-cookie, content-length, …) is volatile or transport detail and ignored unless listed in
/// `[headers] compare`.
pub const DEFAULT_COMPARED_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-language",
    "content-disposition",
    "location",
    "cache-control",
    "vary",
    "allow",
    "retry-after",
    "www-authenticate",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "strict-transport-security",
    "x-content-type-options",
];

/// An explicit path template: `/api/items/{slug}` matches `/api/items/blue-shirt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTemplate {
    /// Only requests with this method (any method when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Path template; a segment `{name}` matches any one segment.
    pub template: String,
}

/// An accepted difference: findings at `path` on `route` are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRule {
    /// A route key (`GET /api/users/{id}`) or `*` for every route.
    pub route: String,
    /// A finding path as reported (`$.items[*].id`, `header:etag`, `body`); `$..name` matches a
    /// key `name` at any depth.
    pub path: String,
    /// Why it is ignored (for the reviewer).
    #[serde(default)]
    pub why: Option<String>,
    /// Learned: the share of exchanges where two baseline instances disagreed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_rate: Option<f64>,
    /// Learned: the share of exchanges where baseline and candidate disagreed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_rate: Option<f64>,
}

impl IgnoreRule {
    /// Whether this rule covers a finding at `path` on `route`.
    pub fn matches(&self, route: &str, path: &str) -> bool {
        if self.route != "*" && self.route != route {
            return false;
        }
        if let Some(name) = self.path.strip_prefix("$..") {
            path == format!("$.{name}")
                || path.ends_with(&format!(".{name}"))
                || path.ends_with(&format!("['{name}']"))
        } else {
            self.path == path
        }
    }
}

/// The rules file (`--rules rules.toml`, also what `--write-rules` writes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesFile {
    /// Latency objectives, e.g. `GET /api/users: p95<300ms`.
    pub slo: Vec<String>,
    /// Thresholds.
    pub settings: Settings,
    /// Header comparison.
    pub headers: HeaderRules,
    /// Explicit path templates.
    pub routes: Vec<RouteTemplate>,
    /// Accepted differences.
    pub ignore: Vec<IgnoreRule>,
    /// Sequential judging while the run is replayed (`tapedeck check --early-stop`).
    pub early_stop: EarlyStopRules,
}

/// `[early_stop]` in the rules file: the anytime-valid judge of `tapedeck check --early-stop`
/// (see `sequential.rs`). Rates are fractions of a route's paired origins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopRules {
    /// Judge while replaying and stop as soon as the verdict is decided (`--early-stop`).
    pub enabled: bool,
    /// Bound on the probability that a run without regression fails, however often the judge
    /// looks (`--alpha`).
    pub alpha: f64,
    /// A JSON path regresses when the candidate differs from the baseline there more often than
    /// the noise target does, by more than this rate.
    pub response_margin: f64,
    /// Latency regresses when "much slower than the baseline" answers (slower by more than
    /// `settings.ratio_tolerance` and `settings.min_shift_ms`) are more frequent in the candidate
    /// than in the noise target by more than this rate.
    pub latency_margin: f64,
    /// "Much slower" for the sequential latency test means slower than the baseline by more than
    /// `settings.ratio_tolerance` and by more than this many milliseconds (or
    /// `settings.min_shift_ms`, or the noise target's 99th percentile deviation, if larger).
    /// Early stop is for gross regressions: on a loaded machine one target's process is starved
    /// for bursts of consecutive requests, and bursts beyond what the noise target shows must
    /// not decide a run (smaller shifts are the fixed judge's, at the tape's end).
    pub latency_floor_ms: f64,
    /// Errors regress when the candidate fails (5xx, no response) where the baseline did not
    /// more often than the other way round by more than this rate.
    pub error_margin: f64,
    /// A route is decided "pass" once every check's rate is shown to be below this.
    pub pass_margin: f64,
}

impl Default for EarlyStopRules {
    fn default() -> Self {
        let s = crate::sequential::SequentialSettings::default();
        Self {
            enabled: false,
            alpha: s.alpha,
            response_margin: s.response_margin,
            latency_margin: s.latency_margin,
            latency_floor_ms: 50.0,
            error_margin: s.error_margin,
            pass_margin: s.pass_margin,
        }
    }
}

impl RulesFile {
    /// Parses rules from TOML text (`path` only names the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<RulesFile, DiffError> {
        toml::from_str(text).map_err(|e| DiffError::RulesParse {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Reads and parses a rules file.
    pub fn load(path: &Path) -> Result<RulesFile, DiffError> {
        let text = std::fs::read_to_string(path).map_err(|e| DiffError::RulesRead {
            path: path.to_owned(),
            source: e,
        })?;
        Self::parse(&text, path)
    }
}

/// What an inconclusive run counts as for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InconclusiveAs {
    /// Exit code 3 (default).
    #[default]
    Inconclusive,
    /// Exit code 0.
    Pass,
    /// Exit code 1.
    Fail,
}

/// A percentile a latency objective or report refers to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentile(pub f64);

impl Percentile {
    /// Parses `p50`, `p95`, `p99`, `p99.9`.
    pub fn parse(s: &str) -> Option<Percentile> {
        let v: f64 = s.strip_prefix('p')?.parse().ok()?;
        (v > 0.0 && v < 100.0).then_some(Percentile(v / 100.0))
    }

    /// `p95`-style label.
    pub fn label(self) -> String {
        let v = self.0 * 100.0;
        if (v - v.round()).abs() < 1e-9 {
            format!("p{}", v.round() as u64)
        } else {
            format!("p{}", (v * 1000.0).round() / 1000.0)
        }
    }
}

/// A latency objective: `route: pXX<Nms` — the candidate's percentile must stay below.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    /// The route key (`GET /api/users`); matches that route with any query parameter names.
    pub route: String,
    /// Which percentile.
    pub percentile: Percentile,
    /// The bound in microseconds.
    pub max_us: u64,
    /// As written.
    pub text: String,
}

impl Slo {
    /// Parses `GET /api/users: p95<300ms` (units `us`, `ms`, `s`).
    pub fn parse(text: &str) -> Result<Slo, DiffError> {
        let bad = |why: &str| {
            DiffError::invalid(
                "--slo",
                format!("{text:?}: {why} (expected e.g. 'GET /api/users: p95<300ms')"),
            )
        };
        let (route, cond) = text.rsplit_once(':').ok_or_else(|| bad("missing ':'"))?;
        let route = route.trim();
        if route.split_whitespace().count() != 2 {
            return Err(bad("the route must be 'METHOD /path/template'"));
        }
        let (p, bound) = cond.split_once('<').ok_or_else(|| bad("missing '<'"))?;
        let percentile = Percentile::parse(p.trim()).ok_or_else(|| bad("bad percentile"))?;
        let bound = bound.trim();
        let (num, mult) = if let Some(n) = bound.strip_suffix("ms") {
            (n, 1000.0)
        } else if let Some(n) = bound.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = bound.strip_suffix('s') {
            (n, 1_000_000.0)
        } else {
            return Err(bad("the bound needs a unit: us, ms or s"));
        };
        let v: f64 = num.trim().parse().map_err(|_| bad("bad number"))?;
        if !(v.is_finite() && v > 0.0) {
            return Err(bad("the bound must be positive"));
        }
        let mut parts = route.split_whitespace();
        let method = parts.next().unwrap_or_default().to_ascii_uppercase();
        let path = parts.next().unwrap_or_default();
        Ok(Slo {
            route: format!("{method} {path}"),
            percentile,
            max_us: (v * mult).round() as u64,
            text: text.trim().to_owned(),
        })
    }
}

/// The options of one diff, as given (flags plus the rules file path). Turn them into a
/// [`DiffConfig`] with [`DiffOptions::validate`].
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The run (replay output): tape directories or files.
    pub run: Vec<PathBuf>,
    /// Target label of the baseline in the run (ignored with `baseline_tape`).
    pub baseline: String,
    /// Target label of the candidate in the run.
    pub candidate: String,
    /// Target label of the noise instance (a second baseline) in the run.
    pub noise: Option<String>,
    /// Compare the candidate against the recorded responses of this tape instead of a baseline
    /// target (recorded `id` == result `origin_id`).
    pub baseline_tape: Option<Vec<PathBuf>>,
    /// Canary analysis: live traffic of the candidate (a recorded tape, not a replay run),
    /// compared with `baseline_tape` without pairing — only latency distributions and error
    /// rates per route are compared. `run` must be empty.
    pub candidate_tape: Option<Vec<PathBuf>>,
    /// The rules file.
    pub rules: Option<PathBuf>,
    /// Extra latency objectives (`GET /api/users: p95<300ms`), added to the rules file's.
    pub slos: Vec<String>,
    /// Marginal counts as fail for the exit code.
    pub strict: bool,
    /// What an inconclusive run counts as for the exit code.
    pub inconclusive_as: InconclusiveAs,
    /// Read on past damaged tape files (reporting them).
    pub skip_corrupt: bool,
    /// Version labels for titles (`v1 → v2`); default the target labels.
    pub baseline_version: Option<String>,
    /// Version label of the candidate.
    pub candidate_version: Option<String>,
    /// Overrides `settings.seed`.
    pub seed: Option<u64>,
    /// Turns `[early_stop]` on (`--early-stop`; the rules file can turn it on too).
    pub early_stop: bool,
    /// Overrides `early_stop.alpha` (`--alpha`).
    pub early_stop_alpha: Option<f64>,
    /// Dependencies mocked during the run: adds the dependency section
    /// ([`crate::deps`]) to the verdict.
    pub dependencies: Vec<crate::deps::DependencyInput>,
    /// A second run of the candidate with dependency faults: adds the chaos section
    /// ([`crate::chaos`]).
    pub chaos: Option<crate::chaos::ChaosInput>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            run: Vec::new(),
            baseline: "baseline".to_owned(),
            candidate: "candidate".to_owned(),
            noise: None,
            baseline_tape: None,
            candidate_tape: None,
            rules: None,
            slos: Vec::new(),
            strict: false,
            inconclusive_as: InconclusiveAs::Inconclusive,
            skip_corrupt: false,
            baseline_version: None,
            candidate_version: None,
            seed: None,
            early_stop: false,
            early_stop_alpha: None,
            dependencies: Vec::new(),
            chaos: None,
        }
    }
}

impl DiffOptions {
    /// Options for a run with the default target labels.
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: vec![run.into()],
            ..Self::default()
        }
    }

    /// Loads the rules file (if any) and checks everything.
    pub fn validate(self) -> Result<DiffConfig, DiffError> {
        let rules = match &self.rules {
            Some(p) => RulesFile::load(p)?,
            None => RulesFile::default(),
        };
        self.validate_with(rules)
    }

    /// Checks everything, with rules already parsed (for callers that build rules in code).
    pub fn validate_with(self, rules: RulesFile) -> Result<DiffConfig, DiffError> {
        if self.candidate_tape.is_some() {
            if self.baseline_tape.is_none() {
                return Err(DiffError::invalid(
                    "--candidate-tape",
                    "canary analysis compares two tapes: give --baseline-tape too",
                ));
            }
            if !self.run.is_empty() {
                return Err(DiffError::invalid(
                    "--run",
                    "a run and --candidate-tape exclude each other (pairs vs unpaired canary traffic)",
                ));
            }
            if self.noise.is_some() {
                return Err(DiffError::invalid(
                    "--noise",
                    "needs a replay run, not --candidate-tape",
                ));
            }
        } else if self.run.is_empty() {
            return Err(DiffError::invalid(
                "--run",
                "give the run (replay output) to judge",
            ));
        }
        for (key, label) in [
            ("--baseline", &self.baseline),
            ("--candidate", &self.candidate),
        ] {
            if label.trim().is_empty() {
                return Err(DiffError::invalid(key, "the target label is empty"));
            }
        }
        if self.baseline_tape.is_none() && self.baseline == self.candidate {
            return Err(DiffError::invalid(
                "--candidate",
                format!("baseline and candidate are both {:?}", self.baseline),
            ));
        }
        if let Some(n) = &self.noise
            && (n == &self.candidate || (self.baseline_tape.is_none() && n == &self.baseline))
        {
            return Err(DiffError::invalid(
                "--noise",
                format!("the noise target {n:?} must differ from baseline and candidate"),
            ));
        }
        let mut settings = rules.settings.clone();
        if let Some(seed) = self.seed {
            settings.seed = seed;
        }
        settings.validate()?;
        let mut slos = Vec::new();
        for s in rules.slo.iter().chain(self.slos.iter()) {
            slos.push(Slo::parse(s)?);
        }
        for r in &rules.routes {
            if !r.template.starts_with('/') {
                return Err(DiffError::invalid(
                    "routes.template",
                    format!("{:?} must start with '/'", r.template),
                ));
            }
        }
        for r in &rules.ignore {
            if r.path.is_empty() || r.route.is_empty() {
                return Err(DiffError::invalid(
                    "ignore",
                    "route and path must not be empty",
                ));
            }
        }
        let mut compared: Vec<String> = DEFAULT_COMPARED_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .chain(rules.headers.compare.iter().map(|h| h.to_ascii_lowercase()))
            .collect();
        let ignored: Vec<String> = rules
            .headers
            .ignore
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        compared.retain(|h| !ignored.contains(h));
        compared.sort();
        compared.dedup();
        let sequential = early_stop_settings(&rules.early_stop, self.early_stop_alpha, &settings)?;
        let early_stop = self.early_stop || rules.early_stop.enabled;
        let baseline_version = self
            .baseline_version
            .clone()
            .unwrap_or_else(|| self.baseline.clone());
        let candidate_version = self
            .candidate_version
            .clone()
            .unwrap_or_else(|| self.candidate.clone());
        Ok(DiffConfig {
            settings,
            compared_headers: compared,
            templates: rules.routes.clone(),
            ignore: rules.ignore.clone(),
            slos,
            baseline_version,
            candidate_version,
            early_stop,
            sequential,
            options: self,
        })
    }
}

/// The sequential judge's settings: `[early_stop]` (and `--alpha`), with "much slower" taken
/// from the fixed judge's latency tolerances so that both judges mean the same by a slowdown.
fn early_stop_settings(
    r: &EarlyStopRules,
    alpha: Option<f64>,
    s: &Settings,
) -> Result<crate::sequential::SequentialSettings, DiffError> {
    let alpha = alpha.unwrap_or(r.alpha);
    if !(alpha.is_finite() && alpha > 0.0 && alpha < 1.0) {
        return Err(DiffError::invalid(
            "early_stop.alpha (--alpha)",
            format!("{alpha} must be a fraction in (0, 1), e.g. 0.01"),
        ));
    }
    for (key, v) in [
        ("early_stop.response_margin", r.response_margin),
        ("early_stop.latency_margin", r.latency_margin),
        ("early_stop.error_margin", r.error_margin),
    ] {
        if !(v.is_finite() && (0.0..0.5).contains(&v)) {
            return Err(DiffError::invalid(
                key,
                format!("{v} must be a rate in [0, 0.5)"),
            ));
        }
    }
    if !(r.latency_floor_ms.is_finite() && r.latency_floor_ms >= 0.0) {
        return Err(DiffError::invalid(
            "early_stop.latency_floor_ms",
            format!("{} must be a finite number >= 0", r.latency_floor_ms),
        ));
    }
    if !(r.pass_margin.is_finite() && r.pass_margin > 0.0 && r.pass_margin < 0.5) {
        return Err(DiffError::invalid(
            "early_stop.pass_margin",
            format!("{} must be a rate in (0, 0.5)", r.pass_margin),
        ));
    }
    Ok(crate::sequential::SequentialSettings {
        alpha,
        response_margin: r.response_margin,
        latency_margin: r.latency_margin,
        error_margin: r.error_margin,
        pass_margin: r.pass_margin,
        slower_ratio: s.ratio_tolerance,
        slower_floor_us: s.min_shift_ms.max(r.latency_floor_ms) * 1000.0,
        min_samples: s.min_samples as u64,
    })
}

impl DiffConfig {
    /// How this judge keys routes (recorded in `verdict.json`).
    pub fn route_keys(&self) -> crate::route::RouteKeys {
        crate::route::RouteKeys {
            templates: self.templates.clone(),
            cardinality: self.settings.route_cardinality,
        }
    }
}

/// Checked configuration of one diff: what [`crate::run`] takes.
#[derive(Debug, Clone)]
pub struct DiffConfig {
    /// The options it was made from.
    pub options: DiffOptions,
    /// Thresholds.
    pub settings: Settings,
    /// Lower-case names of the compared response headers.
    pub compared_headers: Vec<String>,
    /// Explicit path templates.
    pub templates: Vec<RouteTemplate>,
    /// Accepted differences.
    pub ignore: Vec<IgnoreRule>,
    /// Latency objectives.
    pub slos: Vec<Slo>,
    /// Label of the baseline version in titles.
    pub baseline_version: String,
    /// Label of the candidate version in titles.
    pub candidate_version: String,
    /// Judge while replaying and stop once decided (`--early-stop` or `early_stop.enabled`).
    pub early_stop: bool,
    /// The sequential judge's settings (used when `early_stop`).
    pub sequential: crate::sequential::SequentialSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_parses() {
        let s = Slo::parse("get /api/users: p95<300ms").expect("parse");
        assert_eq!(s.route, "GET /api/users");
        assert_eq!(s.percentile.label(), "p95");
        assert_eq!(s.max_us, 300_000);
        assert_eq!(
            Slo::parse("GET /x: p99.9 < 1.5s").expect("p").max_us,
            1_500_000
        );
        assert_eq!(Percentile(0.999).label(), "p99.9");
        assert!(Slo::parse("GET /x p95<3ms").is_err());
        assert!(Slo::parse("GET /x: p95<3").is_err());
        assert!(Slo::parse("GET /x: p100<3ms").is_err());
    }

    #[test]
    fn rules_reject_unknown_keys() {
        let e = RulesFile::parse(
            "[settings]
min_samplez = 3
",
            Path::new("r.toml"),
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("min_samplez"), "{e}");
        let r = RulesFile::parse(
            "slo = [\"GET /a: p50<1ms\"]\n[settings]\nmin_samples = 3\n[[ignore]]\nroute = \"*\"\npath = \"$..ts\"\n",
            Path::new("r.toml"),
        )
        .expect("valid");
        assert_eq!(r.settings.min_samples, 3);
        assert!(r.ignore[0].matches("GET /a", "$.items[*].ts"));
        assert!(r.ignore[0].matches("GET /a", "$.ts"));
        assert!(!r.ignore[0].matches("GET /a", "$.tsx"));
    }

    #[test]
    fn validate_checks_values() {
        let mut rules = RulesFile::default();
        rules.settings.alpha = 1.5;
        assert!(DiffOptions::new("/r").validate_with(rules).is_err());
        let mut o = DiffOptions::new("/r");
        o.candidate = "baseline".into();
        assert!(o.validate_with(RulesFile::default()).is_err());
        let mut rules = RulesFile::default();
        rules.headers.ignore = vec!["Cache-Control".into()];
        rules.headers.compare = vec!["X-Version".into()];
        let c = DiffOptions::new("/r").validate_with(rules).expect("valid");
        assert!(!c.compared_headers.contains(&"cache-control".to_owned()));
        assert!(c.compared_headers.contains(&"x-version".to_owned()));
    }
}
