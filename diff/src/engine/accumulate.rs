//! Accumulation while the run streams by: each compared group (baseline, candidate and maybe
//! secondary of one origin) is folded into its route's [`RouteAcc`] — findings per generalized
//! path with their noise counts and one example, error counts, latency histograms and
//! reservoirs — and nothing else is kept. Memory grows with routes and paths, not with the run.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use tapedeck_storage::Exchange;
use tracing::{debug, warn};

use crate::body;
use crate::compare::{Comparator, Finding, FindingKind};
use crate::config::{DiffConfig, Settings};
use crate::detect::{self, Volatile};
use crate::fmt::curl_command;
use crate::json::{self, JsonDiffKind};
use crate::outcome::{Counts, ErrorCounts, Example};
use crate::pair::Group;
use crate::route::RouteKeyer;
use crate::stats::Reservoir;

/// Distinct finding paths tracked per route; further paths are counted under `(other paths)`.
const MAX_PATHS_PER_ROUTE: usize = 500;

/// The latencies of one side (baseline, candidate or secondary) of one route.
pub(crate) struct Side {
    /// Every latency (µs), for percentiles.
    pub(crate) hist: Histogram<u64>,
    /// A seeded uniform sample of them, for the statistics.
    pub(crate) res: Reservoir,
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

    fn merge(&mut self, other: Side) {
        if let Err(e) = self.hist.add(&other.hist) {
            warn!(error = %e, "latency histograms could not be merged");
        }
        self.res.merge(&other.res);
    }
}

/// A histogram whose construction cannot fail (2 significant digits, auto-resizing).
#[allow(clippy::unwrap_used)]
pub(crate) fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new(2).unwrap()
}

/// Latencies of one route (or of the whole run).
pub(crate) struct LatencyAcc {
    pub(crate) base: Side,
    pub(crate) cand: Side,
    /// The secondary (noise) target's latencies, when one was replayed.
    pub(crate) sec: Option<Side>,
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

/// Findings at one (route, generalized path).
#[derive(Default)]
pub(crate) struct PathAcc {
    /// Kind of the first finding.
    pub(crate) kind: Option<FindingKind>,
    /// Paired exchanges where baseline and candidate differ here.
    pub(crate) raw: u64,
    /// Exchanges where baseline and secondary differ here.
    pub(crate) noise: u64,
    /// Of `raw`, those where every value looked volatile (no secondary).
    pub(crate) volatile: u64,
    /// What the volatile values looked like.
    pub(crate) volatile_kind: Option<Volatile>,
    /// The first non-volatile finding, worked.
    pub(crate) example: Option<Example>,
}

/// Everything accumulated on one route.
pub(crate) struct RouteAcc {
    pub(crate) paired: u64,
    /// Baseline exchanges seen (= `paired`, except in canary analysis).
    pub(crate) n_base: u64,
    /// Candidate exchanges seen (= `paired`, except in canary analysis).
    pub(crate) n_cand: u64,
    pub(crate) with_noise: u64,
    pub(crate) paths: HashMap<String, PathAcc>,
    pub(crate) errors: ErrorCounts,
    pub(crate) latency: LatencyAcc,
}

impl RouteAcc {
    fn new(seed: u64, cap: usize) -> Self {
        Self {
            paired: 0,
            n_base: 0,
            n_cand: 0,
            with_noise: 0,
            paths: HashMap::new(),
            errors: ErrorCounts::default(),
            latency: LatencyAcc::new(seed, cap),
        }
    }

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

/// Per-route accumulation of compared pairs.
pub(crate) struct Judge<'a> {
    pub(crate) cfg: &'a DiffConfig,
    comparator: &'a dyn Comparator,
    keyer: RouteKeyer,
    /// By route key.
    pub(crate) routes: BTreeMap<String, RouteAcc>,
    /// Latencies over all routes.
    pub(crate) overall: LatencyAcc,
    /// First and last reference time seen (µs since the epoch).
    pub(crate) window: Option<(i64, i64)>,
    buf: Vec<Finding>,
}

/// The latency of an answered exchange (µs): total, else duration, else time to first byte.
pub(crate) fn latency_us(ex: &Exchange) -> Option<u64> {
    ex.status?;
    let v = ex.total_us.or(ex.duration_us).or(ex.ttfb_us)?;
    u64::try_from(v).ok()
}

/// The error kind of an exchange that failed: `5xx`, or why there was no response.
pub(crate) fn is_error(ex: &Exchange) -> Option<String> {
    match ex.status {
        Some(s) if s >= 500 => Some("5xx".to_owned()),
        Some(_) => None,
        None => Some(ex.error_kind.map_or("error", |k| k.as_str()).to_owned()),
    }
}

/// The statistics' seed for one route: the same route and seed give the same numbers.
pub(crate) fn seed_for(base: u64, route: &str) -> u64 {
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

impl<'a> Judge<'a> {
    pub(crate) fn new(cfg: &'a DiffConfig, comparator: &'a dyn Comparator) -> Self {
        let s = &cfg.settings;
        Self {
            cfg,
            comparator,
            keyer: cfg.route_keys().keyer(),
            routes: BTreeMap::new(),
            overall: LatencyAcc::new(s.seed, s.max_samples),
            window: None,
            buf: Vec::new(),
        }
    }

    /// Routes keyed before one of their segments was found to be high-cardinality are merged
    /// into the templated route.
    pub(crate) fn merge_inferred_routes(&mut self) {
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
    pub(crate) fn observe(&mut self, ex: &Exchange, candidate: bool) {
        let route = self.keyer.key(&ex.method, &ex.path, ex.query.as_deref());
        let acc = route_at(
            &mut self.routes,
            &mut self.window,
            &self.cfg.settings,
            &route,
            ex.reference_time_us(),
        );
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

    pub(crate) fn process(&mut self, g: Group, counts: &mut Counts) {
        let (Some(b), Some(c)) = (g.baseline, g.candidate) else {
            return;
        };
        counts.paired += 1;
        let s = &self.cfg.settings;
        let route = self.keyer.key(&c.method, &c.path, c.query.as_deref());
        let acc = route_at(
            &mut self.routes,
            &mut self.window,
            s,
            &route,
            c.reference_time_us(),
        );
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

/// The accumulator of route `route`, seen at reference time `t` (which widens `window`).
fn route_at<'r>(
    routes: &'r mut BTreeMap<String, RouteAcc>,
    window: &mut Option<(i64, i64)>,
    s: &Settings,
    route: &str,
    t: i64,
) -> &'r mut RouteAcc {
    *window = Some(match *window {
        None => (t, t),
        Some((lo, hi)) => (lo.min(t), hi.max(t)),
    });
    routes
        .entry(route.to_owned())
        .or_insert_with(|| RouteAcc::new(seed_for(s.seed, route), s.max_samples))
}
