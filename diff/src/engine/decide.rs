//! Deciding: every route measured, checked and scored, then the run's verdict, reasons and title.
//!
//! A route's score is the weighted share of its scored checks (weight > 0, not `nodata` or
//! `error`) that passed (`pass` or `low`); a `high` on a critical check fails the route whatever
//! the score; a route whose baseline did not answer is inconclusive. The run fails when a route
//! fails, is inconclusive when too little of its traffic was judged, marginal when a route is.

use tapedeck_common::format::rfc3339_now;
use tracing::warn;

use super::Engine;
use super::accumulate::{RouteAcc, seed_for};
use super::evidence;
use crate::checks::{self, CheckName, ROUTE_CHECKS, RouteEvidence, latency::headline_ratio};
use crate::config::{DiffConfig, IgnoreRule, Settings};
use crate::detect::Volatile;
use crate::fmt::{fmt_pct, fmt_rate};
use crate::outcome::*;

/// The outcome of a read run: judges every route, then the run.
pub(super) fn decide(mut e: Engine<'_>, run_id: String, skipped_files: Vec<String>) -> DiffOutcome {
    let cfg = e.judge.cfg;
    let s = &cfg.settings;
    let mut routes = Vec::new();
    let mut noise_candidates = Vec::new();
    let mut learned = Vec::new();
    for (route, acc) in std::mem::take(&mut e.judge.routes) {
        let report = judge_route(route, acc, cfg);
        learn(&report, &mut learned, &mut noise_candidates);
        routes.push(report);
    }

    let run = Coverage::of(&routes);
    let verdict = run.verdict(&routes, s);
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

    let reasons = reasons(
        &routes,
        &run,
        verdict,
        cfg,
        &e.counts,
        noise_candidates.len(),
    );
    if !skipped_files.is_empty() {
        warn!(files = skipped_files.len(), "damaged tape files skipped");
    }

    let overall_latency = evidence::measure(&e.judge.overall, s, s.seed);
    let title = title(&routes, verdict, cfg);
    let exit_code = verdict.exit_code(cfg.options.strict, cfg.options.inconclusive_as);
    DiffOutcome {
        schema_version: VERDICT_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        run_id,
        generated_at: rfc3339_now(),
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

/// How much of the run's traffic the routes with a verdict carry.
struct Coverage {
    /// Paired exchanges on all routes.
    total_paired: u64,
    /// Exchanges (baseline and candidate) on all routes.
    total_weight: u64,
    /// Routes judged: with a score, or failed.
    evaluated: usize,
    /// The share of `total_weight` on judged routes.
    coverage: f64,
}

impl Coverage {
    fn of(routes: &[RouteReport]) -> Coverage {
        let weight = |r: &RouteReport| r.baseline_count + r.candidate_count;
        let is_evaluated = |r: &RouteReport| r.score.is_some() || r.verdict == Verdict::Fail;
        let total_weight: u64 = routes.iter().map(weight).sum();
        let covered: u64 = routes.iter().filter(|r| is_evaluated(r)).map(weight).sum();
        Coverage {
            total_paired: routes.iter().map(|r| r.paired).sum(),
            total_weight,
            evaluated: routes.iter().filter(|r| is_evaluated(r)).count(),
            coverage: if total_weight > 0 {
                covered as f64 / total_weight as f64
            } else {
                0.0
            },
        }
    }

    /// The run's verdict: fail when a route fails, inconclusive when the judged routes carry
    /// too little of the traffic, marginal when a route is, else pass.
    fn verdict(&self, routes: &[RouteReport], s: &Settings) -> Verdict {
        if routes.iter().any(|r| r.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if self.evaluated == 0 || self.coverage < s.min_coverage {
            Verdict::Inconclusive
        } else if routes.iter().any(|r| r.verdict == Verdict::Marginal) {
            Verdict::Marginal
        } else {
            Verdict::Pass
        }
    }
}

/// The run's reasons, failures first: every `high` check, marginal routes, a baseline that did
/// not answer, routes with too little data, coverage, unmatched SLOs, unpaired origins, and
/// what a pass rests on.
fn reasons(
    routes: &[RouteReport],
    run: &Coverage,
    verdict: Verdict,
    cfg: &DiffConfig,
    counts: &Counts,
    noise_candidates: usize,
) -> Vec<String> {
    let s = &cfg.settings;
    let mut reasons = Vec::new();
    for r in routes {
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
    for r in routes {
        if r.verdict == Verdict::Marginal {
            reasons.push(format!(
                "{}: marginal (score {:.0}).",
                r.route,
                r.score.unwrap_or(0.0)
            ));
        }
    }
    let baseline_down = |r: &RouteReport| r.checks.iter().any(|c| c.name == CheckName::Baseline);
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
            fmt_rate(run.coverage),
            run.total_weight,
            fmt_rate(s.min_coverage)
        ));
    }
    for slo in checks::unmatched_slos(cfg, routes) {
        reasons.push(format!("SLO '{}' matched no route in the run.", slo.text));
    }
    let c = counts;
    if c.baseline_only + c.candidate_only > 0 {
        reasons.push(format!(
            "{} origin(s) had only a baseline response and {} only a candidate response (unpaired, not judged).",
            c.baseline_only, c.candidate_only
        ));
    }
    if verdict == Verdict::Pass {
        reasons.push(format!(
            "All {} judged route(s) pass: {}, no error-rate growth, no significant and large slowdown.",
            run.evaluated,
            if cfg.options.candidate_tape.is_some() {
                format!("{} exchanges compared as distributions (unpaired canary analysis)", run.total_weight)
            } else {
                format!("{} paired exchanges, no response difference beyond noise", run.total_paired)
            }
        ));
    }
    if noise_candidates > 0 {
        reasons.push(format!(
            "{noise_candidates} volatile-looking difference(s) (timestamps, UUIDs, tokens) treated as noise; see noise_candidates (replay a secondary with --noise to measure noise instead)."
        ));
    }
    reasons
}

/// Measures route `route`, runs every check over it, scores them and decides its verdict.
fn judge_route(route: String, mut acc: RouteAcc, cfg: &DiffConfig) -> RouteReport {
    let s = &cfg.settings;
    let paths = evidence::judge_paths(&route, &mut acc, s, cfg.options.noise.is_some());
    let latency = evidence::measure(&acc.latency, s, seed_for(s.seed, &route));
    let mut checks = Vec::new();
    {
        let evidence = RouteEvidence {
            route: &route,
            paired: acc.paired,
            n_base: acc.n_base,
            n_cand: acc.n_cand,
            with_noise: acc.with_noise,
            paths: &paths,
            errors: &acc.errors,
            latency: &latency,
            latency_samples: evidence::latency_samples(&acc.latency),
            candidate_latency: &acc.latency.cand.hist,
        };
        for check in ROUTE_CHECKS {
            check.check(&evidence, cfg, &mut checks);
        }
    }
    let (score, verdict) = score(&checks, cfg);
    RouteReport {
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
    }
}

/// A route's score and verdict from its checks.
fn score(checks: &[Check], cfg: &DiffConfig) -> (Option<f64>, Verdict) {
    let s = &cfg.settings;
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
                .filter(|c| matches!(c.classification, Classification::Pass | Classification::Low))
                .fold(0.0, |sum, c| sum + c.weight)
            / total
    });
    let critical_fail = checks
        .iter()
        .any(|c| c.critical && c.classification == Classification::High);
    // A baseline that did not answer is no reference: no score, inconclusive.
    if checks.iter().any(|c| c.name == CheckName::Baseline) {
        return (None, Verdict::Inconclusive);
    }
    let verdict = match score {
        _ if critical_fail => Verdict::Fail,
        None => Verdict::Inconclusive,
        Some(x) if x >= s.pass_score => Verdict::Pass,
        Some(x) if x >= s.marginal_score => Verdict::Marginal,
        Some(_) => Verdict::Fail,
    };
    (score, verdict)
}

/// The ignore rules a route's noisy paths suggest, and its volatile-looking differences.
fn learn(
    r: &RouteReport,
    learned: &mut Vec<IgnoreRule>,
    noise_candidates: &mut Vec<NoiseCandidate>,
) {
    for p in &r.paths {
        match p.status {
            PathStatus::Noise => learned.push(IgnoreRule {
                route: r.route.clone(),
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
                    route: r.route.clone(),
                    path: p.path.clone(),
                    volatile: v,
                    rate: p.raw_rate,
                });
                learned.push(IgnoreRule {
                    route: r.route.clone(),
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
}

/// The ticket title: the worst finding, e.g. `GET /api/users p95 +1,540 % (v1 → v2)`.
fn title(routes: &[RouteReport], verdict: Verdict, cfg: &DiffConfig) -> String {
    let versions = format!("({} → {})", cfg.baseline_version, cfg.candidate_version);
    let failing = || routes.iter().filter(|r| r.verdict == Verdict::Fail);
    let high = |r: &RouteReport, name: CheckName| {
        r.checks
            .iter()
            .any(|c| c.name == name && c.classification == Classification::High)
    };
    // The largest latency regression first (its title carries a number), then grown error
    // rates, then response differences, then anything else that failed.
    let latency = failing()
        .filter(|r| high(r, CheckName::Latency))
        .filter_map(|r| {
            let w = headline_ratio(&r.latency.ratios, &cfg.settings)?;
            Some((r, w.q, r.latency.hdr_change(w.q).unwrap_or(w.ratio - 1.0)))
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
            .find(|c| c.name == CheckName::Errors && c.classification == Classification::High)
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
