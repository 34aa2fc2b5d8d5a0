//! The judge: streams result rows, pairs them, compares each pair, aggregates per route and
//! decides. See the crate docs for the rules.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use hdrhistogram::Histogram;
use tapedeck_storage::{Exchange, ReadOptions, Tape};
use tracing::{debug, warn};

use crate::body;
use crate::compare::{Comparator, Finding, FindingKind, StandardComparator};
use crate::config::{DiffConfig, IgnoreRule, Settings};
use crate::detect::{self, Volatile};
use crate::error::DiffError;
use crate::json::{self, JsonDiffKind};
use crate::outcome::*;
use crate::pair::{Group, Pairer, Role};
use crate::report::{curl_command, fmt_pct, fmt_us};
use crate::route::{RouteKeyer, without_query};
use crate::stats::{self, Reservoir};

/// Distinct finding paths tracked per route; further paths are counted under `(other paths)`.
const MAX_PATHS_PER_ROUTE: usize = 500;
/// Percentiles the bootstrap ratio is computed at.
const RATIO_QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Runs a diff with a configurable [`Comparator`]. [`crate::run`] is `Differ::new(config).run()`.
#[derive(Debug)]
pub struct Differ {
    config: DiffConfig,
    comparator: Box<dyn Comparator>,
}

impl Differ {
    /// A differ with the standard comparator (status, compared headers, bodies).
    pub fn new(config: DiffConfig) -> Self {
        let comparator = Box::new(StandardComparator::new(config.compared_headers.clone()));
        Self { config, comparator }
    }

    /// Replaces the comparator.
    pub fn comparator(mut self, comparator: Box<dyn Comparator>) -> Self {
        self.comparator = comparator;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &DiffConfig {
        &self.config
    }

    /// Reads the run (and the baseline tape, if any) and judges it.
    pub fn run(&self) -> Result<DiffOutcome, DiffError> {
        let opts = &self.config.options;
        let read = ReadOptions {
            skip_corrupt: opts.skip_corrupt,
            ..ReadOptions::default()
        };
        if let (Some(base), Some(cand)) = (&opts.baseline_tape, &opts.candidate_tape) {
            return self.run_canary(base, cand, &read);
        }
        let run_tape = Tape::open(&opts.run).map_err(|e| DiffError::Tape {
            what: "run",
            source: e,
        })?;
        // Issue 8: a damaged file is found before hours of reading, not at the end.
        run_tape.verify(&read).map_err(|e| DiffError::Tape {
            what: "run",
            source: e,
        })?;
        let mut run_rows = run_tape.scan(read.clone()).exchanges();
        let mut engine = Engine::new(&self.config, self.comparator.as_ref());
        let mut skipped = Vec::new();
        match &opts.baseline_tape {
            None => {
                for row in run_rows.by_ref() {
                    let ex = row.map_err(|e| DiffError::Tape {
                        what: "run",
                        source: e,
                    })?;
                    engine.push_result(ex);
                }
            }
            Some(paths) => {
                let tape = Tape::open(paths).map_err(|e| DiffError::Tape {
                    what: "baseline",
                    source: e,
                })?;
                tape.verify(&read).map_err(|e| DiffError::Tape {
                    what: "baseline",
                    source: e,
                })?;
                let mut recorded = tape.scan(read).exchanges();
                let mut last_recorded: Option<uuid::Uuid> = None;
                let mut recorded_done = false;
                for row in run_rows.by_ref() {
                    let ex = row.map_err(|e| DiffError::Tape {
                        what: "run",
                        source: e,
                    })?;
                    // Recorded ids are UUIDv7 (time-ordered) and replay keeps recorded order:
                    // read the recorded tape up to the origin this row answers.
                    if let Some(origin) = ex.origin_id {
                        while !recorded_done && last_recorded.is_none_or(|l| l < origin) {
                            match recorded.next() {
                                Some(r) => {
                                    let r = r.map_err(|e| DiffError::Tape {
                                        what: "baseline",
                                        source: e,
                                    })?;
                                    last_recorded = Some(r.id);
                                    engine.push_recorded(r);
                                }
                                None => recorded_done = true,
                            }
                        }
                    }
                    engine.push_result(ex);
                }
                for r in recorded {
                    let r = r.map_err(|e| DiffError::Tape {
                        what: "baseline",
                        source: e,
                    })?;
                    engine.push_recorded(r);
                }
            }
        }
        for s in &run_rows.report().files_skipped {
            skipped.push(format!("{}: {}", s.path.display(), s.reason));
        }
        let run_id = opts
            .run
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".to_owned());
        let mut outcome = engine.finish(run_id, skipped)?;
        if !opts.dependencies.is_empty() {
            let report = crate::deps::analyze(
                &opts.run,
                &opts.candidate,
                &opts.dependencies,
                &mut self.config.route_keys().keyer(),
                opts.skip_corrupt,
            )?;
            crate::deps::attach(&mut outcome, report, opts.strict, opts.inconclusive_as);
        }
        if let Some(chaos) = &opts.chaos {
            let report = crate::chaos::analyze(
                &opts.run,
                &opts.candidate,
                chaos,
                &mut self.config.route_keys().keyer(),
                opts.skip_corrupt,
            )?;
            outcome.reasons.extend(report.reasons());
            outcome.chaos = Some(report);
        }
        Ok(outcome)
    }

    /// Canary analysis of two tapes of live traffic (not paired).
    fn run_canary(
        &self,
        base: &[std::path::PathBuf],
        cand: &[std::path::PathBuf],
        read: &ReadOptions,
    ) -> Result<DiffOutcome, DiffError> {
        let mut engine = Engine::new(&self.config, self.comparator.as_ref());
        let mut skipped = Vec::new();
        for (paths, what, candidate) in [(base, "baseline", false), (cand, "candidate", true)] {
            let tape = Tape::open(paths).map_err(|e| DiffError::Tape { what, source: e })?;
            tape.verify(read)
                .map_err(|e| DiffError::Tape { what, source: e })?;
            let mut rows = tape.scan(read.clone()).exchanges();
            for row in rows.by_ref() {
                let ex = row.map_err(|e| DiffError::Tape { what, source: e })?;
                if candidate {
                    engine.counts.rows += 1;
                } else {
                    engine.counts.baseline_tape_rows += 1;
                }
                engine.judge.observe(&ex, candidate);
            }
            for s in &rows.report().files_skipped {
                skipped.push(format!("{}: {}", s.path.display(), s.reason));
            }
        }
        let run_id = cand
            .first()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "canary".to_owned());
        engine.finish(run_id, skipped)
    }

    /// Judges result rows given in memory (as replay writes them), without reading a tape.
    pub fn run_exchanges(
        &self,
        rows: impl IntoIterator<Item = Exchange>,
    ) -> Result<DiffOutcome, DiffError> {
        let mut engine = Engine::new(&self.config, self.comparator.as_ref());
        for ex in rows {
            engine.push_result(ex);
        }
        engine.finish("in-memory".to_owned(), Vec::new())
    }
}

struct Side {
    hist: Histogram<u64>,
    res: Reservoir,
}

impl Side {
    fn new(seed: u64, cap: usize) -> Self {
        // 1 µs resolution, 3 significant digits, auto-resizing: the counts array only grows to
        // the largest value recorded (~30 KB for millisecond latencies instead of ~190 KB for a
        // fixed 1 µs .. 1 h range), which keeps many routes cheap.
        let hist = Histogram::new(3).unwrap_or_else(|_| unreachable_histogram());
        Self {
            hist,
            res: Reservoir::new(cap, seed),
        }
    }

    fn record(&mut self, us: u64) {
        // Latencies beyond an hour are clamped (a bogus value must not grow the histogram).
        let us = us.clamp(1, 3_600_000_000);
        if self.hist.record(us).is_err() {
            self.hist.saturating_record(us);
        }
        self.res.push(us as f64);
    }
}

impl Side {
    fn merge(&mut self, other: Side) {
        if let Err(e) = self.hist.add(&other.hist) {
            warn!(error = %e, "latency histograms could not be merged");
        }
        self.res.merge(&other.res);
    }
}

#[allow(clippy::unwrap_used)]
pub(crate) fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new(2).unwrap()
}

struct LatencyAcc {
    base: Side,
    cand: Side,
    /// The secondary (noise) target's latencies, when one was replayed.
    sec: Option<Side>,
    seed: u64,
    cap: usize,
}

impl LatencyAcc {
    fn new(seed: u64, cap: usize) -> Self {
        Self {
            base: Side::new(seed, cap),
            cand: Side::new(seed ^ 0x5bd1_e995, cap),
            sec: None,
            seed,
            cap,
        }
    }

    fn record_secondary(&mut self, us: u64) {
        let (seed, cap) = (self.seed ^ 0x2545_f491, self.cap);
        self.sec
            .get_or_insert_with(|| Side::new(seed, cap))
            .record(us);
    }
}

#[derive(Default)]
struct PathAcc {
    kind: Option<FindingKind>,
    raw: u64,
    noise: u64,
    volatile: u64,
    volatile_kind: Option<Volatile>,
    example: Option<Example>,
}

struct RouteAcc {
    paired: u64,
    /// Baseline exchanges seen (= `paired`, except in canary analysis).
    n_base: u64,
    /// Candidate exchanges seen (= `paired`, except in canary analysis).
    n_cand: u64,
    with_noise: u64,
    paths: HashMap<String, PathAcc>,
    errors: ErrorCounts,
    latency: LatencyAcc,
}

/// Pairing state plus the judge it feeds.
impl RouteAcc {
    /// Folds another route's accumulation into this one (routes merged by template inference).
    fn merge(&mut self, other: RouteAcc) {
        self.paired += other.paired;
        self.n_base += other.n_base;
        self.n_cand += other.n_cand;
        self.with_noise += other.with_noise;
        for (path, pa) in other.paths {
            let mine = self.paths.entry(path).or_default();
            mine.kind = mine.kind.or(pa.kind);
            mine.raw += pa.raw;
            mine.noise += pa.noise;
            mine.volatile += pa.volatile;
            mine.volatile_kind = mine.volatile_kind.or(pa.volatile_kind);
            if mine.example.is_none() {
                mine.example = pa.example;
            }
        }
        self.errors.baseline += other.errors.baseline;
        self.errors.baseline_unanswered += other.errors.baseline_unanswered;
        self.errors.candidate += other.errors.candidate;
        if let Some(s) = other.errors.secondary {
            *self.errors.secondary.get_or_insert(0) += s;
        }
        for (k, n) in other.errors.candidate_by_kind {
            *self.errors.candidate_by_kind.entry(k).or_default() += n;
        }
        self.latency.base.merge(other.latency.base);
        self.latency.cand.merge(other.latency.cand);
        match (&mut self.latency.sec, other.latency.sec) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, Some(theirs)) => *mine = Some(theirs),
            _ => {}
        }
    }
}

struct Engine<'a> {
    pairer: Pairer,
    counts: Counts,
    judge: Judge<'a>,
}

/// Per-route accumulation of compared pairs.
struct Judge<'a> {
    cfg: &'a DiffConfig,
    comparator: &'a dyn Comparator,
    keyer: RouteKeyer,
    routes: BTreeMap<String, RouteAcc>,
    overall: LatencyAcc,
    window: Option<(i64, i64)>,
    buf: Vec<Finding>,
}

pub(crate) fn latency_us(ex: &Exchange) -> Option<u64> {
    ex.status?;
    let v = ex.total_us.or(ex.duration_us).or(ex.ttfb_us)?;
    u64::try_from(v).ok()
}

pub(crate) fn is_error(ex: &Exchange) -> Option<String> {
    match ex.status {
        Some(s) if s >= 500 => Some("5xx".to_owned()),
        Some(_) => None,
        None => Some(ex.error_kind.map_or("error", |k| k.as_str()).to_owned()),
    }
}

fn seed_for(base: u64, route: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for b in route.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn response_excerpt(ex: &Exchange, chars: usize) -> String {
    match ex.status {
        None => format!(
            "no response ({}{})",
            ex.error_kind.map_or("error", |k| k.as_str()),
            ex.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        Some(s) => {
            let body = match body::decode(&ex.resp_headers, &ex.resp_body) {
                Ok(b) => body::excerpt(&b, chars),
                Err(e) => format!("<{e}>"),
            };
            format!("HTTP {s}\n{body}")
        }
    }
}

impl<'a> Engine<'a> {
    fn new(cfg: &'a DiffConfig, comparator: &'a dyn Comparator) -> Self {
        let s = &cfg.settings;
        Self {
            pairer: Pairer::new(
                cfg.options.noise.is_some(),
                cfg.options.baseline_tape.is_some(),
                s.max_pending,
            ),
            counts: Counts::default(),
            judge: Judge {
                cfg,
                comparator,
                keyer: cfg.route_keys().keyer(),
                routes: BTreeMap::new(),
                overall: LatencyAcc::new(s.seed, s.max_samples),
                window: None,
                buf: Vec::new(),
            },
        }
    }

    fn push_recorded(&mut self, ex: Exchange) {
        self.counts.baseline_tape_rows += 1;
        let id = ex.id;
        let judge = &mut self.judge;
        self.pairer
            .push(id, Role::Baseline, ex, &mut self.counts, &mut |g, c| {
                judge.process(g, c)
            });
    }

    fn push_result(&mut self, ex: Exchange) {
        self.counts.rows += 1;
        let target = ex.target.clone().unwrap_or_default();
        *self.counts.targets.entry(target.clone()).or_default() += 1;
        let opts = &self.judge.cfg.options;
        let role = if target == opts.candidate {
            Role::Candidate
        } else if opts.noise.as_deref() == Some(target.as_str()) {
            Role::Secondary
        } else if opts.baseline_tape.is_none() && target == opts.baseline {
            Role::Baseline
        } else {
            self.counts.rows_ignored += 1;
            return;
        };
        let Some(origin) = ex.origin_id else {
            self.counts.rows_ignored += 1;
            return;
        };
        let judge = &mut self.judge;
        self.pairer
            .push(origin, role, ex, &mut self.counts, &mut |g, c| {
                judge.process(g, c)
            });
    }
}

impl Judge<'_> {
    /// Routes keyed before one of their segments was found to be high-cardinality are merged
    /// into the templated route.
    fn merge_inferred_routes(&mut self) {
        let keys: Vec<String> = self.routes.keys().cloned().collect();
        for key in keys {
            let new_key = self.keyer.rekey(&key);
            if new_key == key {
                continue;
            }
            let Some(acc) = self.routes.remove(&key) else {
                continue;
            };
            debug!(from = %key, to = %new_key, "route merged into inferred template");
            match self.routes.get_mut(&new_key) {
                Some(target) => target.merge(acc),
                None => {
                    self.routes.insert(new_key, acc);
                }
            }
        }
    }

    /// Canary analysis: one unpaired exchange of either side (latency and errors only).
    fn observe(&mut self, ex: &Exchange, candidate: bool) {
        let s = &self.cfg.settings;
        let route = self.keyer.key(&ex.method, &ex.path, ex.query.as_deref());
        let t = ex.reference_time_us();
        self.window = Some(match self.window {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
        let acc = self
            .routes
            .entry(route.clone())
            .or_insert_with(|| RouteAcc {
                paired: 0,
                n_base: 0,
                n_cand: 0,
                with_noise: 0,
                paths: HashMap::new(),
                errors: ErrorCounts::default(),
                latency: LatencyAcc::new(seed_for(s.seed, &route), s.max_samples),
            });
        let err = is_error(ex);
        let lat = latency_us(ex);
        if candidate {
            acc.n_cand += 1;
            if let Some(kind) = err {
                acc.errors.candidate += 1;
                *acc.errors.candidate_by_kind.entry(kind).or_default() += 1;
            }
            if let Some(us) = lat {
                acc.latency.cand.record(us);
                self.overall.cand.record(us);
            }
        } else {
            acc.n_base += 1;
            if err.is_some() {
                acc.errors.baseline += 1;
            }
            if ex.status.is_none() {
                acc.errors.baseline_unanswered += 1;
            }
            if let Some(us) = lat {
                acc.latency.base.record(us);
                self.overall.base.record(us);
            }
        }
    }

    fn process(&mut self, g: Group, counts: &mut Counts) {
        let (Some(b), Some(c)) = (g.baseline, g.candidate) else {
            return;
        };
        counts.paired += 1;
        let s = &self.cfg.settings;
        let route = self.keyer.key(&c.method, &c.path, c.query.as_deref());
        let t = c.reference_time_us();
        self.window = Some(match self.window {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
        let acc = self
            .routes
            .entry(route.clone())
            .or_insert_with(|| RouteAcc {
                paired: 0,
                n_base: 0,
                n_cand: 0,
                with_noise: 0,
                paths: HashMap::new(),
                errors: ErrorCounts::default(),
                latency: LatencyAcc::new(seed_for(s.seed, &route), s.max_samples),
            });
        acc.paired += 1;
        acc.n_base += 1;
        acc.n_cand += 1;
        if is_error(&b).is_some() {
            acc.errors.baseline += 1;
        }
        if b.status.is_none() {
            acc.errors.baseline_unanswered += 1;
        }
        if let Some(kind) = is_error(&c) {
            acc.errors.candidate += 1;
            *acc.errors.candidate_by_kind.entry(kind).or_default() += 1;
        }
        if let Some(us) = latency_us(&b) {
            acc.latency.base.record(us);
            self.overall.base.record(us);
        }
        if let Some(us) = latency_us(&c) {
            acc.latency.cand.record(us);
            self.overall.cand.record(us);
        }
        let noise_on = self.cfg.options.noise.is_some();

        // Baseline vs candidate.
        self.buf.clear();
        self.comparator.compare(&b, &c, &mut self.buf);
        let mut seen: Vec<(String, bool, Option<Volatile>, usize)> = Vec::new();
        for (i, f) in self.buf.iter().enumerate() {
            let path = json::generalize(&f.path);
            if self.cfg.ignore.iter().any(|r| r.matches(&route, &path)) {
                counts.ignored_findings += 1;
                continue;
            }
            let vol = if noise_on {
                None
            } else {
                match f.kind {
                    FindingKind::Json(JsonDiffKind::ValueChanged) | FindingKind::Header => {
                        detect::classify(&f.baseline, &f.candidate)
                    }
                    _ => None,
                }
            };
            match seen.iter_mut().find(|(p, ..)| *p == path) {
                Some(entry) => {
                    entry.1 &= vol.is_some();
                }
                None => seen.push((path, vol.is_some(), vol, i)),
            }
        }
        for (path, all_volatile, vol, i) in seen {
            let key = if acc.paths.len() >= MAX_PATHS_PER_ROUTE && !acc.paths.contains_key(&path) {
                "(other paths)".to_owned()
            } else {
                path
            };
            let pa = acc.paths.entry(key).or_default();
            pa.raw += 1;
            if all_volatile {
                pa.volatile += 1;
                pa.volatile_kind = vol;
            }
            let f = &self.buf[i];
            if pa.kind.is_none() {
                pa.kind = Some(f.kind);
            }
            if pa.example.is_none() && !all_volatile {
                pa.example = Some(Example {
                    origin_id: c.origin_id.map(|u| u.to_string()).unwrap_or_default(),
                    curl: curl_command(&c),
                    baseline_value: f.baseline.clone(),
                    candidate_value: f.candidate.clone(),
                    baseline_response: response_excerpt(&b, s.excerpt_chars),
                    candidate_response: response_excerpt(&c, s.excerpt_chars),
                });
            }
        }

        // Baseline vs secondary: the noise.
        if let Some(sec) = g.secondary {
            acc.with_noise += 1;
            counts.with_noise += 1;
            if let Some(us) = latency_us(&sec) {
                acc.latency.record_secondary(us);
            }
            if is_error(&sec).is_some() {
                *acc.errors.secondary.get_or_insert(0) += 1;
            } else {
                acc.errors.secondary.get_or_insert(0);
            }
            self.buf.clear();
            self.comparator.compare(&b, &sec, &mut self.buf);
            let mut paths: Vec<(String, FindingKind)> = self
                .buf
                .iter()
                .map(|f| (json::generalize(&f.path), f.kind))
                .collect();
            paths.sort_by(|a, b| a.0.cmp(&b.0));
            paths.dedup_by(|a, b| a.0 == b.0);
            for (path, kind) in paths {
                if self.cfg.ignore.iter().any(|r| r.matches(&route, &path)) {
                    continue;
                }
                if acc.paths.len() >= MAX_PATHS_PER_ROUTE && !acc.paths.contains_key(&path) {
                    continue;
                }
                let kind = Some(kind);
                let pa = acc.paths.entry(path).or_default();
                pa.noise += 1;
                if pa.kind.is_none() {
                    pa.kind = kind;
                }
            }
        }
    }
}

impl Engine<'_> {
    fn finish(
        mut self,
        run_id: String,
        skipped_files: Vec<String>,
    ) -> Result<DiffOutcome, DiffError> {
        let judge = &mut self.judge;
        self.pairer
            .finish(&mut self.counts, &mut |g, c| judge.process(g, c));
        self.judge.merge_inferred_routes();
        let cfg = self.judge.cfg;
        let opts = &cfg.options;
        // A target that was asked for but never seen is a usage error, not a verdict.
        let mut wanted = vec![opts.candidate.clone()];
        if opts.baseline_tape.is_none() {
            wanted.push(opts.baseline.clone());
        }
        wanted.extend(opts.noise.clone());
        if self.counts.rows > 0 && opts.candidate_tape.is_none() {
            for w in wanted {
                if !self.counts.targets.contains_key(&w) {
                    return Err(DiffError::NoSuchTarget {
                        target: w,
                        found: self
                            .counts
                            .targets
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
        debug!(
            rows = self.counts.rows,
            paired = self.counts.paired,
            routes = self.judge.routes.len(),
            "diff: pairing done"
        );
        Ok(decide(self, run_id, skipped_files))
    }
}

fn percentiles(h: &Histogram<u64>, s: &Settings) -> Percentiles {
    let n = h.len();
    let at = |q: f64| -> Option<u64> {
        (n > 0 && n as f64 * (1.0 - q) >= s.tail_samples).then(|| h.value_at_quantile(q))
    };
    let mut p = Percentiles {
        count: n,
        p50: at(0.5),
        p90: at(0.9),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        max: (n > 0).then(|| h.max()),
        low_n: std::collections::BTreeMap::new(),
    };
    // What the tail rule leaves out is still worth showing, marked (issue 17).
    for (label, q, v) in [
        ("p50", 0.5, p.p50),
        ("p90", 0.9, p.p90),
        ("p95", 0.95, p.p95),
        ("p99", 0.99, p.p99),
        ("p999", 0.999, p.p999),
    ] {
        if n > 0 && v.is_none() {
            p.low_n.insert(label.to_owned(), h.value_at_quantile(q));
        }
    }
    p
}

fn estimable(n: usize, q: f64, s: &Settings) -> bool {
    n > 0 && n as f64 * (1.0 - q) >= s.tail_samples
}

/// Latency comparison and its check.
fn eval_latency(
    acc: &LatencyAcc,
    s: &Settings,
    seed: u64,
) -> (LatencyReport, Classification, String) {
    let b = acc.base.res.values();
    let c = acc.cand.res.values();
    let mut report = LatencyReport {
        baseline: percentiles(&acc.base.hist, s),
        candidate: percentiles(&acc.cand.hist, s),
        mann_whitney: None,
        hodges_lehmann: None,
        noise_shift: None,
        ratios: Vec::new(),
        ks: None,
    };
    if b.len() < s.min_samples || c.len() < s.min_samples {
        let why = format!(
            "not enough latency samples ({} baseline, {} candidate; need {})",
            b.len(),
            c.len(),
            s.min_samples
        );
        return (report, Classification::Nodata, why);
    }
    report.mann_whitney = stats::mann_whitney(c, b);
    report.hodges_lehmann = stats::hodges_lehmann(
        &stats::thin(c, 1000),
        &stats::thin(b, 1000),
        s.hl_confidence,
    );
    // Environment drift: how far a second baseline instance moved from the baseline.
    report.noise_shift = acc
        .sec
        .as_ref()
        .map(|sec| sec.res.values())
        .filter(|v| v.len() >= s.min_samples)
        .and_then(|v| {
            stats::hodges_lehmann(
                &stats::thin(v, 1000),
                &stats::thin(b, 1000),
                s.hl_confidence,
            )
        });
    let drift = report.noise_shift.map_or(0.0, |n| n.shift.abs());
    let qs: Vec<f64> = RATIO_QUANTILES
        .iter()
        .copied()
        .filter(|&q| estimable(b.len().min(c.len()), q, s))
        .collect();
    report.ratios = stats::bootstrap_ratio(
        &stats::thin(c, 1000),
        &stats::thin(b, 1000),
        &qs,
        s.bootstrap_resamples,
        s.bootstrap_confidence,
        seed,
    );
    report.ks = stats::ks_2samp(c, b);
    let floor = s.min_shift_ms * 1000.0;
    let (Some(mw), Some(hl)) = (report.mann_whitney, report.hodges_lehmann) else {
        return (
            report,
            Classification::Error,
            "latency statistics could not be computed".to_owned(),
        );
    };
    let pct = |side: &Percentiles, q: f64| -> Option<u64> {
        match q {
            0.5 => side.p50,
            0.95 => side.p95,
            0.99 => side.p99,
            _ => None,
        }
    };
    let slower: Vec<&stats::RatioCi> = report
        .ratios
        .iter()
        .filter(|r| {
            r.ci_low > 1.0 + s.ratio_tolerance
                && match (pct(&report.candidate, r.q), pct(&report.baseline, r.q)) {
                    (Some(cv), Some(bv)) => cv as f64 - bv as f64 >= floor,
                    _ => false,
                }
        })
        .collect();
    let faster: Vec<&stats::RatioCi> = report
        .ratios
        .iter()
        .filter(|r| {
            r.ci_high < 1.0 / (1.0 + s.ratio_tolerance)
                && match (pct(&report.candidate, r.q), pct(&report.baseline, r.q)) {
                    (Some(cv), Some(bv)) => bv as f64 - cv as f64 >= floor,
                    _ => false,
                }
        })
        .collect();
    let shift = format!(
        "shift {} (98 % CI {} .. {}), Mann-Whitney p={:.2e}{}",
        fmt_signed_us(hl.shift),
        fmt_signed_us(hl.ci_low),
        fmt_signed_us(hl.ci_high),
        mw.p_greater,
        report
            .noise_shift
            .map(|n| format!(", noise shift {}", fmt_signed_us(n.shift)))
            .unwrap_or_default()
    );
    if mw.p_greater < s.alpha
        && hl.ci_low > drift
        && hl.shift - drift >= floor
        && !slower.is_empty()
    {
        let worst = [0.95, 0.99, 0.5]
            .iter()
            .find_map(|&q| slower.iter().find(|r| r.q == q))
            .copied()
            .cloned();
        let mut why = String::from("slower: ");
        if let Some(w) = worst {
            let label = crate::config::Percentile(w.q).label();
            why.push_str(&format!(
                "{label} {} → {} ({}; ratio 95 % CI {:.2}..{:.2}), ",
                fmt_us(pct(&report.baseline, w.q).unwrap_or(0)),
                fmt_us(pct(&report.candidate, w.q).unwrap_or(0)),
                fmt_pct(hdr_change(&report, w.q).unwrap_or(w.ratio - 1.0)),
                w.ci_low,
                w.ci_high
            ));
        }
        why.push_str(&shift);
        (report, Classification::High, why)
    } else if mw.p_less < s.alpha
        && hl.ci_high < -drift
        && -hl.shift - drift >= floor
        && !faster.is_empty()
    {
        (report, Classification::Low, format!("faster: {shift}"))
    } else {
        (
            report,
            Classification::Pass,
            format!("no significant and large slowdown: {shift}"),
        )
    }
}

/// Relative change of the HDR percentile `q` (what the report tables show).
fn hdr_change(l: &LatencyReport, q: f64) -> Option<f64> {
    let get = |p: &Percentiles| match q {
        0.5 => p.p50,
        0.95 => p.p95,
        0.99 => p.p99,
        _ => None,
    };
    match (get(&l.baseline), get(&l.candidate)) {
        (Some(b), Some(c)) if b > 0 => Some(c as f64 / b as f64 - 1.0),
        _ => None,
    }
}

fn fmt_signed_us(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", fmt_us((-v).round() as u64))
    } else {
        format!("+{}", fmt_us(v.round() as u64))
    }
}

fn eval_paths(route: &str, acc: &mut RouteAcc, s: &Settings, noise_on: bool) -> Vec<PathReport> {
    let mut out = Vec::new();
    for (path, pa) in acc.paths.drain() {
        let n = acc.paired.max(1) as f64;
        let raw_rate = pa.raw as f64 / n;
        let noise_rate =
            (noise_on && acc.with_noise > 0).then(|| pa.noise as f64 / acc.with_noise as f64);
        let status = if noise_on {
            let nr = noise_rate.unwrap_or(0.0);
            let excess = raw_rate - nr;
            if raw_rate > nr && excess / raw_rate > s.noise_relative && excess > s.noise_absolute {
                PathStatus::Regression
            } else if pa.noise > 0 {
                PathStatus::Noise
            } else {
                PathStatus::BelowThreshold
            }
        } else if pa.raw > 0 && pa.volatile == pa.raw {
            PathStatus::NoiseCandidate
        } else {
            let rate = (pa.raw - pa.volatile) as f64 / n;
            if rate > s.noise_absolute {
                PathStatus::Regression
            } else {
                PathStatus::BelowThreshold
            }
        };
        debug!(route, path = %path, raw = pa.raw, noise = pa.noise, ?status, "path judged");
        out.push(PathReport {
            kind: pa.kind.map_or("unknown", FindingKind::as_str).to_owned(),
            path,
            raw_count: pa.raw,
            raw_rate,
            noise_count: noise_on.then_some(pa.noise),
            noise_rate,
            volatile: pa.volatile_kind.filter(|_| pa.volatile > 0),
            status,
            example: pa.example,
        });
    }
    out.sort_by(|a, b| {
        a.status
            .cmp(&b.status)
            .then(b.raw_rate.total_cmp(&a.raw_rate))
            .then(a.path.cmp(&b.path))
    });
    out
}

fn decide(mut e: Engine<'_>, run_id: String, skipped_files: Vec<String>) -> DiffOutcome {
    let cfg = e.judge.cfg;
    let s = &cfg.settings;
    let noise_on = cfg.options.noise.is_some();
    let canary = cfg.options.candidate_tape.is_some();
    let mut routes = Vec::new();
    let mut noise_candidates = Vec::new();
    let mut learned = Vec::new();
    let mut slo_matched = vec![false; cfg.slos.len()];
    for (route, mut acc) in std::mem::take(&mut e.judge.routes) {
        let judged = acc.n_base.min(acc.n_cand);
        let enough = judged as usize >= s.min_samples;
        let mut checks = Vec::new();
        let paths = eval_paths(&route, &mut acc, s, noise_on);

        // Responses.
        let regressions: Vec<&PathReport> = paths
            .iter()
            .filter(|p| p.status == PathStatus::Regression)
            .collect();
        let (class, reason) = if let Some(first) = regressions.first() {
            let more = if regressions.len() > 1 {
                format!(" (+{} more paths)", regressions.len() - 1)
            } else {
                String::new()
            };
            (
                Classification::High,
                format!(
                    "{} ({}) differs in {} of responses ({} of {}){}{}",
                    first.path,
                    first.kind,
                    fmt_rate(first.raw_rate),
                    first.raw_count,
                    acc.paired,
                    first
                        .noise_rate
                        .map(|n| format!(", noise {}", fmt_rate(n)))
                        .unwrap_or_default(),
                    more
                ),
            )
        } else if !enough {
            (
                Classification::Nodata,
                format!(
                    "only {} paired exchanges (need {})",
                    acc.paired, s.min_samples
                ),
            )
        } else {
            (
                Classification::Pass,
                format!(
                    "no response differences beyond noise in {} exchanges",
                    acc.paired
                ),
            )
        };
        // Unpaired canary traffic has no response pairs to compare.
        if !canary {
            checks.push(Check {
                name: "responses".to_owned(),
                classification: class,
                critical: s.critical_responses,
                weight: s.weight_responses,
                reason,
            });
        }

        // Errors.
        let (b_rate, c_rate) = (
            acc.errors.baseline as f64 / acc.n_base.max(1) as f64,
            acc.errors.candidate as f64 / acc.n_cand.max(1) as f64,
        );
        let noise_diff = match acc.errors.secondary {
            Some(sec) if acc.with_noise > 0 => {
                (sec as f64 - acc.errors.baseline as f64).abs() / acc.with_noise as f64
            }
            _ => 0.0,
        };
        let excess = c_rate - b_rate - noise_diff;
        let err_reason = format!(
            "5xx/error rate {} → {}{}",
            fmt_rate(b_rate),
            fmt_rate(c_rate),
            if noise_on {
                format!(" (noise {})", fmt_rate(noise_diff))
            } else {
                String::new()
            }
        );
        let class = if acc.errors.candidate > acc.errors.baseline
            && excess > 0.0
            && excess / c_rate > s.noise_relative
            && excess > s.noise_absolute
        {
            Classification::High
        } else if !enough {
            Classification::Nodata
        } else {
            Classification::Pass
        };
        checks.push(Check {
            name: "errors".to_owned(),
            classification: class,
            critical: s.critical_errors,
            weight: s.weight_errors,
            reason: err_reason,
        });

        // Latency.
        let (latency, class, reason) = eval_latency(&acc.latency, s, seed_for(s.seed, &route));
        let ks = latency.ks;
        checks.push(Check {
            name: "latency".to_owned(),
            classification: class,
            critical: s.critical_latency,
            weight: s.weight_latency,
            reason,
        });
        if let Some(ks) = ks {
            checks.push(Check {
                name: "shape".to_owned(),
                classification: Classification::Pass,
                critical: false,
                weight: 0.0,
                reason: if ks.p < s.alpha {
                    format!(
                        "latency distribution shape changed (KS D={:.3}, p={:.2e}); informational",
                        ks.d, ks.p
                    )
                } else {
                    format!(
                        "latency distribution shape unchanged (KS D={:.3}, p={:.2e})",
                        ks.d, ks.p
                    )
                },
            });
        }

        // SLOs.
        for (i, slo) in cfg.slos.iter().enumerate() {
            if without_query(&route) != slo.route {
                continue;
            }
            slo_matched[i] = true;
            let q = slo.percentile.0;
            let n = acc.latency.cand.hist.len();
            let (class, reason) = if estimable(n as usize, q, s) {
                let v = acc.latency.cand.hist.value_at_quantile(q);
                if v < slo.max_us {
                    (
                        Classification::Pass,
                        format!(
                            "{} {} < {}",
                            slo.percentile.label(),
                            fmt_us(v),
                            fmt_us(slo.max_us)
                        ),
                    )
                } else {
                    (
                        Classification::High,
                        format!(
                            "{} {} breaks the objective < {}",
                            slo.percentile.label(),
                            fmt_us(v),
                            fmt_us(slo.max_us)
                        ),
                    )
                }
            } else {
                (
                    Classification::Nodata,
                    format!("{} samples are too few for {}", n, slo.percentile.label()),
                )
            };
            checks.push(Check {
                name: format!(
                    "slo {}",
                    slo.text
                        .rsplit_once(':')
                        .map_or(slo.text.as_str(), |(_, c)| c.trim())
                ),
                classification: class,
                critical: s.critical_slo,
                weight: s.weight_slo,
                reason,
            });
        }

        // Score and route verdict.
        let scored: Vec<&Check> = checks
            .iter()
            .filter(|c| {
                c.weight > 0.0
                    && !matches!(
                        c.classification,
                        Classification::Nodata | Classification::Error
                    )
            })
            .collect();
        let total: f64 = scored.iter().map(|c| c.weight).sum();
        // `fold` from +0.0: `f64::sum` of nothing is -0.0, which printed as "score: -0".
        let score = (total > 0.0).then(|| {
            100.0
                * scored
                    .iter()
                    .filter(|c| {
                        matches!(c.classification, Classification::Pass | Classification::Low)
                    })
                    .fold(0.0, |sum, c| sum + c.weight)
                / total
        });
        let critical_fail = checks
            .iter()
            .any(|c| c.critical && c.classification == Classification::High);
        // A baseline that mostly did not answer is no reference: whatever the candidate did, the
        // route cannot be judged (both targets down must never read as "no difference").
        let unanswered = acc.errors.baseline_unanswered as f64 / acc.n_base.max(1) as f64;
        let baseline_down = acc.n_base > 0 && unanswered > s.max_baseline_unanswered;
        if baseline_down {
            checks.push(Check {
                name: "baseline".to_owned(),
                classification: Classification::Error,
                critical: false,
                weight: 0.0,
                reason: format!(
                    "the baseline did not answer {} of {} requests ({}): nothing to compare against",
                    acc.errors.baseline_unanswered,
                    acc.n_base,
                    fmt_rate(unanswered)
                ),
            });
        }
        let score = if baseline_down { None } else { score };
        let verdict = match score {
            _ if baseline_down => Verdict::Inconclusive,
            _ if critical_fail => Verdict::Fail,
            None => Verdict::Inconclusive,
            Some(x) if x >= s.pass_score => Verdict::Pass,
            Some(x) if x >= s.marginal_score => Verdict::Marginal,
            Some(_) => Verdict::Fail,
        };

        for p in &paths {
            match p.status {
                PathStatus::Noise => learned.push(IgnoreRule {
                    route: route.clone(),
                    path: p.path.clone(),
                    why: Some(format!(
                        "baseline and secondary disagree here in {} of exchanges (candidate: {})",
                        fmt_rate(p.noise_rate.unwrap_or(0.0)),
                        fmt_rate(p.raw_rate)
                    )),
                    noise_rate: p.noise_rate,
                    raw_rate: Some(p.raw_rate),
                }),
                PathStatus::NoiseCandidate => {
                    let v = p.volatile.unwrap_or(Volatile::Token);
                    noise_candidates.push(NoiseCandidate {
                        route: route.clone(),
                        path: p.path.clone(),
                        volatile: v,
                        rate: p.raw_rate,
                    });
                    learned.push(IgnoreRule {
                        route: route.clone(),
                        path: p.path.clone(),
                        why: Some(format!(
                            "values look like {}s and differ in {} of exchanges",
                            v.as_str(),
                            fmt_rate(p.raw_rate)
                        )),
                        noise_rate: None,
                        raw_rate: Some(p.raw_rate),
                    });
                }
                PathStatus::Regression | PathStatus::BelowThreshold => {}
            }
        }
        routes.push(RouteReport {
            route,
            verdict,
            score,
            paired: acc.paired,
            baseline_count: acc.n_base,
            candidate_count: acc.n_cand,
            with_noise: acc.with_noise,
            checks,
            paths,
            errors: acc.errors,
            latency,
        });
    }

    // Run verdict.
    let weight = |r: &RouteReport| r.baseline_count + r.candidate_count;
    let total_paired: u64 = routes.iter().map(|r| r.paired).sum();
    let total_weight: u64 = routes.iter().map(weight).sum();
    let is_evaluated = |r: &RouteReport| r.score.is_some() || r.verdict == Verdict::Fail;
    let evaluated_count = routes.iter().filter(|r| is_evaluated(r)).count();
    let covered: u64 = routes.iter().filter(|r| is_evaluated(r)).map(weight).sum();
    let coverage = if total_weight > 0 {
        covered as f64 / total_weight as f64
    } else {
        0.0
    };
    let any_fail = routes.iter().any(|r| r.verdict == Verdict::Fail);
    let verdict = if any_fail {
        Verdict::Fail
    } else if evaluated_count == 0 || coverage < s.min_coverage {
        Verdict::Inconclusive
    } else if routes.iter().any(|r| r.verdict == Verdict::Marginal) {
        Verdict::Marginal
    } else {
        Verdict::Pass
    };
    let score = routes.iter().filter_map(|r| r.score).min_by(f64::total_cmp);
    routes.sort_by(|a, b| {
        let rank = |v: Verdict| match v {
            Verdict::Fail => 0,
            Verdict::Marginal => 1,
            Verdict::Inconclusive => 2,
            Verdict::Pass => 3,
        };
        rank(a.verdict)
            .cmp(&rank(b.verdict))
            .then(a.route.cmp(&b.route))
    });

    // Reasons, failures first.
    let mut reasons = Vec::new();
    for r in &routes {
        for c in &r.checks {
            if c.classification == Classification::High {
                reasons.push(format!(
                    "{} — {} {}: {}.",
                    r.route,
                    c.name,
                    if c.critical {
                        "failed (critical)"
                    } else {
                        "failed"
                    },
                    c.reason
                ));
            }
        }
    }
    for r in &routes {
        if r.verdict == Verdict::Marginal {
            reasons.push(format!(
                "{}: marginal (score {:.0}).",
                r.route,
                r.score.unwrap_or(0.0)
            ));
        }
    }
    let baseline_down = |r: &RouteReport| r.checks.iter().any(|c| c.name == "baseline");
    let down: Vec<&RouteReport> = routes.iter().filter(|r| baseline_down(r)).collect();
    if !down.is_empty() {
        let unanswered: u64 = down.iter().map(|r| r.errors.baseline_unanswered).sum();
        let asked: u64 = down.iter().map(|r| r.baseline_count).sum();
        let names: Vec<&str> = down.iter().take(5).map(|r| r.route.as_str()).collect();
        reasons.push(format!(
            "The baseline did not answer {unanswered} of {asked} requests on {} route(s) ({}{}): nothing to compare against — is it up?",
            down.len(),
            names.join(", "),
            if down.len() > 5 { ", …" } else { "" }
        ));
    }
    let nodata: Vec<&RouteReport> = routes
        .iter()
        .filter(|r| r.verdict == Verdict::Inconclusive && !baseline_down(r))
        .collect();
    if !nodata.is_empty() {
        let names: Vec<String> = nodata
            .iter()
            .take(5)
            .map(|r| format!("{} ({})", r.route, r.baseline_count.min(r.candidate_count)))
            .collect();
        reasons.push(format!(
            "{} route(s) had too few paired exchanges to judge (need {}): {}{}.",
            nodata.len(),
            s.min_samples,
            names.join(", "),
            if nodata.len() > 5 { ", …" } else { "" }
        ));
    }
    if verdict == Verdict::Inconclusive {
        reasons.push(format!(
            "Inconclusive: routes with enough data carry {} of the {} exchanges (need {}).",
            fmt_rate(coverage),
            total_weight,
            fmt_rate(s.min_coverage)
        ));
    }
    for (i, slo) in cfg.slos.iter().enumerate() {
        if !slo_matched[i] {
            reasons.push(format!("SLO '{}' matched no route in the run.", slo.text));
        }
    }
    let c = &e.counts;
    if c.baseline_only + c.candidate_only > 0 {
        reasons.push(format!(
            "{} origin(s) had only a baseline response and {} only a candidate response (unpaired, not judged).",
            c.baseline_only, c.candidate_only
        ));
    }
    if verdict == Verdict::Pass {
        reasons.push(format!(
            "All {} judged route(s) pass: {}, no error-rate growth, no significant and large slowdown.",
            evaluated_count,
            if canary {
                format!("{} exchanges compared as distributions (unpaired canary analysis)", total_weight)
            } else {
                format!("{total_paired} paired exchanges, no response difference beyond noise")
            }
        ));
    }
    if !noise_candidates.is_empty() {
        reasons.push(format!(
            "{} volatile-looking difference(s) (timestamps, UUIDs, tokens) treated as noise; see noise_candidates (replay a secondary with --noise to measure noise instead).",
            noise_candidates.len()
        ));
    }
    if !skipped_files.is_empty() {
        warn!(files = skipped_files.len(), "damaged tape files skipped");
    }

    let (overall_latency, _, _) = eval_latency(&e.judge.overall, s, s.seed);
    let title = title(&routes, verdict, cfg);
    let exit_code = verdict.exit_code(cfg.options.strict, cfg.options.inconclusive_as);
    DiffOutcome {
        schema_version: VERDICT_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        run_id,
        generated_at: crate::report::rfc3339_now(),
        verdict,
        rollback: verdict == Verdict::Fail,
        score,
        exit_code,
        title,
        reasons,
        baseline: if cfg.options.baseline_tape.is_some() {
            "recorded".to_owned()
        } else {
            cfg.options.baseline.clone()
        },
        candidate: cfg.options.candidate.clone(),
        noise: cfg.options.noise.clone(),
        baseline_version: cfg.baseline_version.clone(),
        candidate_version: cfg.candidate_version.clone(),
        window_us: e.judge.window,
        counts: std::mem::take(&mut e.counts),
        overall_latency,
        routes,
        noise_candidates,
        learned_rules: learned,
        skipped_files,
        route_keys: cfg.route_keys(),
        stopped_early: None,
        requests_sent: None,
        time_to_verdict_ms: None,
        sequential: None,
        dependencies: None,
        chaos: None,
        corpus: None,
    }
}

pub(crate) fn fmt_rate(r: f64) -> String {
    let pct = r * 100.0;
    if pct == 0.0 || pct >= 10.0 {
        format!("{pct:.0} %")
    } else if pct >= 0.1 {
        format!("{pct:.1} %")
    } else {
        format!("{pct:.3} %")
    }
}

/// The percentile a latency title quotes: p95 when its interval clears the tolerance, else p99,
/// else p50, else the largest ratio.
fn headline_ratio<'r>(
    ratios: &'r [stats::RatioCi],
    cfg: &DiffConfig,
) -> Option<&'r stats::RatioCi> {
    let tol = 1.0 + cfg.settings.ratio_tolerance;
    [0.95, 0.99, 0.5]
        .iter()
        .find_map(|&q| ratios.iter().find(|r| r.q == q && r.ci_low > tol))
        .or_else(|| ratios.iter().max_by(|a, b| a.ratio.total_cmp(&b.ratio)))
}

/// The ticket title: the worst finding, e.g. `GET /api/users p95 +1,540 % (v1 → v2)`.
fn title(routes: &[RouteReport], verdict: Verdict, cfg: &DiffConfig) -> String {
    let versions = format!("({} → {})", cfg.baseline_version, cfg.candidate_version);
    let failing = || routes.iter().filter(|r| r.verdict == Verdict::Fail);
    let high = |r: &RouteReport, name: &str| {
        r.checks
            .iter()
            .any(|c| c.name == name && c.classification == Classification::High)
    };
    // The largest latency regression first (its title carries a number), then grown error
    // rates, then response differences, then anything else that failed.
    let latency = failing()
        .filter(|r| high(r, "latency"))
        .filter_map(|r| {
            let w = headline_ratio(&r.latency.ratios, cfg)?;
            Some((r, w.q, hdr_change(&r.latency, w.q).unwrap_or(w.ratio - 1.0)))
        })
        .max_by(|a, b| a.2.total_cmp(&b.2));
    if let Some((r, q, change)) = latency {
        let label = crate::config::Percentile(q).label();
        return format!("{} {label} {} {versions}", r.route, fmt_pct(change));
    }
    for r in failing() {
        if let Some(c) = r
            .checks
            .iter()
            .find(|c| c.name == "errors" && c.classification == Classification::High)
        {
            return format!("{} {} {versions}", r.route, c.reason);
        }
    }
    for r in failing() {
        if let Some(p) = r.paths.iter().find(|p| p.status == PathStatus::Regression) {
            return format!(
                "{} {} {} in {} {versions}",
                r.route,
                p.path,
                p.kind,
                fmt_rate(p.raw_rate)
            );
        }
    }
    for r in failing() {
        if let Some(c) = r
            .checks
            .iter()
            .find(|c| c.classification == Classification::High)
        {
            return format!("{} {}: {} {versions}", r.route, c.name, c.reason);
        }
    }
    match verdict {
        Verdict::Pass => format!("No regressions {versions}"),
        Verdict::Marginal => format!("Marginal: minor differences {versions}"),
        Verdict::Inconclusive => format!("Inconclusive: not enough data {versions}"),
        Verdict::Fail => format!("Regression {versions}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiffOptions, RulesFile};
    use bytes::Bytes;
    use tapedeck_storage::Header;

    fn row(origin: u128, target: &str, path: &str, body: String) -> Exchange {
        Exchange {
            path: path.into(),
            status: Some(200),
            total_us: Some(10_000 + (origin % 7) as i64 * 100),
            resp_headers: vec![Header::new("content-type", "application/json")],
            resp_body: Bytes::from(body),
            origin_id: Some(uuid::Uuid::from_u128(origin)),
            target: Some(target.into()),
            ..Exchange::default()
        }
    }

    /// `n` origins on one route; the candidate differs at `$.v` in `raw` of them and the
    /// secondary in `noise` of them.
    fn rows(n: u128, raw: u128, noise: u128) -> Vec<Exchange> {
        (0..n)
            .flat_map(|i| {
                let v = |d: bool| format!(r#"{{"v":{}}}"#, if d { 2 } else { 1 });
                [
                    row(i, "baseline", "/a", v(false)),
                    row(i, "secondary", "/a", v(i < noise)),
                    row(i, "candidate", "/a", v(i < raw)),
                ]
            })
            .collect()
    }

    fn judge(rows: Vec<Exchange>, rules: RulesFile) -> DiffOutcome {
        let mut o = DiffOptions::new("/mem");
        o.noise = Some("secondary".into());
        Differ::new(o.validate_with(rules).expect("valid"))
            .run_exchanges(rows)
            .expect("judged")
    }

    fn status_of(o: &DiffOutcome) -> Option<PathStatus> {
        o.routes[0]
            .paths
            .iter()
            .find(|p| p.path == "$.v")
            .map(|p| p.status)
    }

    #[test]
    fn diffy_rule_raw_must_clearly_exceed_noise() {
        // raw 10 %, noise 9 %: (10-9)/10 = 10 % < 20 % relative → noise.
        let o = judge(rows(1000, 100, 90), RulesFile::default());
        assert_eq!(status_of(&o), Some(PathStatus::Noise));
        assert_eq!(o.verdict, Verdict::Pass);
        // raw 10 %, noise 5 %: relative 50 %, absolute 5 % → regression.
        let o = judge(rows(1000, 100, 50), RulesFile::default());
        assert_eq!(status_of(&o), Some(PathStatus::Regression));
        assert_eq!(o.verdict, Verdict::Fail);
        // raw 0.1 % (1 of 1000), no noise: above the 0.03 % absolute threshold → regression …
        let o = judge(rows(1000, 1, 0), RulesFile::default());
        assert_eq!(status_of(&o), Some(PathStatus::Regression));
        // … unless the threshold is raised.
        let mut rules = RulesFile::default();
        rules.settings.noise_absolute = 0.01;
        let o = judge(rows(1000, 1, 0), rules);
        assert_eq!(status_of(&o), Some(PathStatus::BelowThreshold));
        assert_eq!(o.verdict, Verdict::Pass);
    }

    #[test]
    fn ignore_rules_drop_findings() {
        let mut rules = RulesFile::default();
        rules.ignore.push(IgnoreRule {
            route: "GET /a".into(),
            path: "$.v".into(),
            why: None,
            noise_rate: None,
            raw_rate: None,
        });
        let o = judge(rows(100, 100, 0), rules);
        assert_eq!(o.verdict, Verdict::Pass);
        assert_eq!(o.counts.ignored_findings, 100);
        assert_eq!(status_of(&o), None);
    }

    #[test]
    fn latency_drift_seen_by_the_secondary_is_not_a_regression() {
        // Candidate and secondary are both 40 % slower than the baseline instance: the
        // environment, not the build.
        let mk = |with_secondary: bool| -> Vec<Exchange> {
            (0..200u128)
                .flat_map(|i| {
                    let jitter = (i * 7919 % 1000) as i64;
                    let mut out = vec![];
                    let mut b = row(i, "baseline", "/a", "{}".into());
                    b.total_us = Some(10_000 + jitter);
                    out.push(b);
                    let mut c = row(i, "candidate", "/a", "{}".into());
                    c.total_us = Some(14_000 + (i * 104_729 % 1000) as i64);
                    out.push(c);
                    if with_secondary {
                        let mut s = row(i, "secondary", "/a", "{}".into());
                        s.total_us = Some(14_000 + (i * 1_299_709 % 1000) as i64);
                        out.push(s);
                    }
                    out
                })
                .collect()
        };
        let latency = |o: &DiffOutcome| {
            o.routes[0]
                .checks
                .iter()
                .find(|c| c.name == "latency")
                .map(|c| c.classification)
        };
        let alone = Differ::new(
            DiffOptions::new("/mem")
                .validate_with(RulesFile::default())
                .expect("valid"),
        )
        .run_exchanges(mk(false))
        .expect("judged");
        assert_eq!(latency(&alone), Some(Classification::High));
        let with_noise = judge(mk(true), RulesFile::default());
        assert_eq!(
            latency(&with_noise),
            Some(Classification::Pass),
            "{:#?}",
            with_noise.reasons
        );
        let drift = with_noise.routes[0]
            .latency
            .noise_shift
            .expect("noise shift");
        assert!(drift.shift > 3_000.0, "{drift:?}");
    }

    #[derive(Debug)]
    struct AlwaysDiffers;

    impl Comparator for AlwaysDiffers {
        fn compare(&self, _b: &Exchange, _c: &Exchange, out: &mut Vec<Finding>) {
            out.push(Finding {
                path: "custom".into(),
                kind: FindingKind::Binary,
                baseline: "a".into(),
                candidate: "b".into(),
            });
        }
    }

    #[test]
    fn a_custom_comparator_plugs_in() {
        let mut o = DiffOptions::new("/mem");
        o.noise = None;
        let d = Differ::new(o.validate_with(RulesFile::default()).expect("valid"))
            .comparator(Box::new(AlwaysDiffers));
        let rows: Vec<Exchange> = (0..30)
            .flat_map(|i| {
                [
                    row(i, "baseline", "/a", "{}".into()),
                    row(i, "candidate", "/a", "{}".into()),
                ]
            })
            .collect();
        let o = d.run_exchanges(rows).expect("judged");
        assert_eq!(o.regressions(), vec![("GET /a", "custom")]);
    }

    #[test]
    fn marginal_is_between_the_scores_and_strict_makes_it_fail() {
        // A latency regression (non-critical, weight 1) next to three passing checks (two with
        // SLOs) scores 75: marginal by default.
        let rows: Vec<Exchange> = (0..60u128)
            .flat_map(|i| {
                let mut c = row(i, "candidate", "/a", "{}".into());
                c.total_us = Some(50_000 + (i % 7) as i64 * 100);
                [row(i, "baseline", "/a", "{}".into()), c]
            })
            .collect();
        let rules = RulesFile {
            slo: vec!["GET /a: p50<1s".into()],
            ..RulesFile::default()
        };
        let o = DiffOptions::new("/mem")
            .validate_with(rules.clone())
            .expect("valid");
        let out = Differ::new(o).run_exchanges(rows.clone()).expect("judged");
        assert_eq!(out.verdict, Verdict::Marginal, "{:#?}", out.reasons);
        assert_eq!(out.score, Some(75.0));
        assert_eq!(out.exit_code, 0);
        let mut strict = DiffOptions::new("/mem");
        strict.strict = true;
        let out = Differ::new(strict.validate_with(rules).expect("valid"))
            .run_exchanges(rows)
            .expect("judged");
        assert_eq!(out.exit_code, 1);
    }
}

#[cfg(test)]
mod report_size_tests {
    use super::*;
    use crate::config::{DiffOptions, RulesFile};
    use bytes::Bytes;
    use tapedeck_storage::Header;

    #[test]
    fn report_md_stays_under_the_limit_with_many_findings() {
        // 150 routes, each with 40 renamed fields and long values: far more than fits.
        let mut rows = Vec::new();
        let mut origin = 0u128;
        for r in 0..150 {
            for _ in 0..10 {
                origin += 1;
                for (t, prefix) in [("baseline", "a"), ("candidate", "b")] {
                    let fields: Vec<String> = (0..40)
                        .map(|k| format!(r#""{prefix}{k}":"{}""#, "x`|".repeat(100)))
                        .collect();
                    rows.push(Exchange {
                        path: format!("/r{r}/items"),
                        status: Some(200),
                        total_us: Some(1000),
                        resp_headers: vec![Header::new("content-type", "application/json")],
                        resp_body: Bytes::from(format!("{{{}}}", fields.join(","))),
                        origin_id: Some(uuid::Uuid::from_u128(origin)),
                        target: Some(t.into()),
                        ..Exchange::default()
                    });
                }
            }
        }
        let mut rules = RulesFile::default();
        rules.settings.route_cardinality = 0; // keep 150 routes
        let cfg = DiffOptions::new("/mem")
            .validate_with(rules)
            .expect("valid");
        let o = Differ::new(cfg).run_exchanges(rows).expect("judged");
        assert_eq!(o.verdict, Verdict::Fail);
        assert_eq!(o.routes.len(), 150);
        let md = crate::report::markdown(&o);
        assert!(
            md.chars().count() <= crate::report::MAX_REPORT_CHARS,
            "{}",
            md.len()
        );
        assert!(md.starts_with("# GET /r"));
        // Fences stay balanced even though values contain backticks.
        let junit = crate::report::junit(&o);
        // responses, errors, latency (nodata: 10 samples) per route.
        assert_eq!(junit.matches("<testcase ").count(), 150 * 3);
    }
}
