//! Route checks: what the judge asks of every route, and their names.
//!
//! A check is one file in this folder: a type implementing [`RouteCheck`], listed once in
//! [`ROUTE_CHECKS`]. The judge (`engine/decide.rs`) measures each route first — its
//! [`RouteEvidence`]: path differences judged against noise, error counts, the latency
//! comparison — then runs every listed check over that evidence, in list order, and scores what
//! they said. A check only classifies (pass / high / low / nodata / error) and explains; it
//! never measures, so every check sees the same numbers the reports show.
//!
//! How a check counts is the [`Check`] it returns: `weight` in the route's score (0 =
//! informational), `critical` (a `high` fails the route whatever the score). One check has a
//! say beyond the score: [`CheckName::Baseline`] (the baseline did not answer) makes the route
//! inconclusive.
//!
//! Check names are [`CheckName`]s; `verdict.json` writes them as the strings in
//! `docs/verdict.md` (`responses`, `errors`, `latency`, `shape`, `slo p95<300ms`, `baseline`).
//!
//! Adding a check: see "How to add a route check" in `docs/ARCHITECTURE.md`.

use std::fmt;

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};

use crate::config::{DiffConfig, Slo};
use crate::outcome::{Check, ErrorCounts, LatencyReport, PathReport};

mod baseline;
mod errors;
pub(crate) mod latency;
pub(crate) mod responses;
mod shape;
mod slo;

pub(crate) use slo::unmatched as unmatched_slos;

/// Every route check, in the order a route's `checks` list shows them.
pub(crate) const ROUTE_CHECKS: &[&dyn RouteCheck] = &[
    &responses::Responses,
    &errors::Errors,
    &latency::Latency,
    &shape::Shape,
    &slo::Slos,
    &baseline::Baseline,
];

/// One kind of route check. Implementations are stateless; [`ROUTE_CHECKS`] lists them.
pub(crate) trait RouteCheck: fmt::Debug + Sync {
    /// Judges one route: pushes this check's results onto `out` — usually one, none when it
    /// does not apply to the route (`responses` in unpaired canary analysis), one per objective
    /// for SLOs.
    fn check(&self, route: &RouteEvidence<'_>, cfg: &DiffConfig, out: &mut Vec<Check>);
}

/// What was measured on one route: everything a check may judge.
#[derive(Debug)]
pub(crate) struct RouteEvidence<'a> {
    /// The route key.
    pub(crate) route: &'a str,
    /// Paired exchanges.
    pub(crate) paired: u64,
    /// Baseline exchanges (= `paired`, except in canary analysis).
    pub(crate) n_base: u64,
    /// Candidate exchanges (= `paired`, except in canary analysis).
    pub(crate) n_cand: u64,
    /// Paired exchanges that also had a secondary (noise) response.
    pub(crate) with_noise: u64,
    /// Differences by path, each judged against noise (`responses::judge_paths`).
    pub(crate) paths: &'a [PathReport],
    /// Error counts.
    pub(crate) errors: &'a ErrorCounts,
    /// The latency comparison (`latency::measure`).
    pub(crate) latency: &'a LatencyReport,
    /// Latency samples the statistics were computed from: baseline, candidate.
    pub(crate) latency_samples: (usize, usize),
    /// The candidate's latencies (µs), for objectives at any percentile.
    pub(crate) candidate_latency: &'a Histogram<u64>,
}

impl RouteEvidence<'_> {
    /// Whether both sides have the minimum sample (`settings.min_samples`).
    pub(crate) fn enough(&self, cfg: &DiffConfig) -> bool {
        self.n_base.min(self.n_cand) as usize >= cfg.settings.min_samples
    }
}

/// The name of a route check, as `verdict.json` writes it (`routes[].checks[].name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckName {
    /// `responses`: response differences beyond noise.
    Responses,
    /// `errors`: growth of the 5xx / no-response rate.
    Errors,
    /// `latency`: a significant and large slowdown.
    Latency,
    /// `shape`: the latency distribution's shape (informational, weight 0).
    Shape,
    /// `slo p95<300ms`: a latency objective from the rules, one check per objective.
    Slo(SloName),
    /// `baseline`: the baseline did not answer (classification `error`); the route is
    /// inconclusive.
    Baseline,
}

impl CheckName {
    /// The check of latency objective `slo` (`GET /a: p95<300ms` → `slo p95<300ms`).
    pub fn slo(slo: &Slo) -> CheckName {
        CheckName::Slo(SloName::of(slo))
    }

    /// The name as `verdict.json` writes it.
    pub fn as_str(&self) -> &str {
        match self {
            CheckName::Responses => "responses",
            CheckName::Errors => "errors",
            CheckName::Latency => "latency",
            CheckName::Shape => "shape",
            CheckName::Slo(name) => name.as_str(),
            CheckName::Baseline => "baseline",
        }
    }

    /// `a, b, c`: names for a sentence.
    pub fn join(names: &[CheckName]) -> String {
        names
            .iter()
            .map(CheckName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CheckName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for CheckName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for CheckName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The name of an SLO check: `slo ` and the objective's condition as written (`slo p95<300ms`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SloName(String);

impl SloName {
    /// The name of the objective whose condition is `condition` (`p95<300ms`).
    pub fn new(condition: &str) -> SloName {
        SloName(format!("slo {condition}"))
    }

    /// The name of objective `slo` (`GET /a: p95<300ms` → `slo p95<300ms`).
    pub fn of(slo: &Slo) -> SloName {
        let condition = slo
            .text
            .rsplit_once(':')
            .map_or(slo.text.as_str(), |(_, c)| c.trim());
        SloName::new(condition)
    }

    /// The condition (`p95<300ms`).
    pub fn condition(&self) -> &str {
        self.0.strip_prefix("slo ").unwrap_or(&self.0)
    }

    /// The whole name (`slo p95<300ms`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiffOptions, RulesFile};
    use crate::outcome::Classification;

    fn config(noise: bool, rules: RulesFile) -> DiffConfig {
        let mut o = DiffOptions::new("/mem");
        o.noise = noise.then(|| "secondary".to_owned());
        o.validate_with(rules).expect("valid")
    }

    /// Runs every listed check on a route of `n` exchanges per side with these error counts and
    /// candidate latencies (µs).
    fn run(cfg: &DiffConfig, n: u64, errors: &ErrorCounts, cand_us: &[u64]) -> Vec<Check> {
        let mut hist = Histogram::new(3).expect("histogram");
        for &us in cand_us {
            hist.record(us).expect("record");
        }
        let latency = LatencyReport::default();
        let evidence = RouteEvidence {
            route: "GET /a?x",
            paired: n,
            n_base: n,
            n_cand: n,
            with_noise: if cfg.options.noise.is_some() { n } else { 0 },
            paths: &[],
            errors,
            latency: &latency,
            latency_samples: (cand_us.len(), cand_us.len()),
            candidate_latency: &hist,
        };
        let mut out = Vec::new();
        for check in ROUTE_CHECKS {
            check.check(&evidence, cfg, &mut out);
        }
        out
    }

    fn class(checks: &[Check], name: &str) -> Option<Classification> {
        checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.classification)
    }

    #[test]
    fn the_list_judges_a_route_in_order() {
        let rules = RulesFile {
            slo: vec!["GET /a: p50<10ms".into(), "GET /b: p50<10ms".into()],
            ..RulesFile::default()
        };
        let cfg = config(false, rules);
        let checks = run(&cfg, 100, &ErrorCounts::default(), &[5_000; 100]);
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        // No KS statistic measured: no `shape`; the SLO of another route is not judged here.
        assert_eq!(names, ["responses", "errors", "latency", "slo p50<10ms"]);
        assert_eq!(class(&checks, "responses"), Some(Classification::Pass));
        assert_eq!(class(&checks, "errors"), Some(Classification::Pass));
        // Samples enough, statistics missing: the latency check says it could not compute.
        assert_eq!(class(&checks, "latency"), Some(Classification::Error));
        assert_eq!(class(&checks, "slo p50<10ms"), Some(Classification::Pass));
    }

    #[test]
    fn errors_grow_beyond_the_noise_only() {
        let grown = ErrorCounts {
            candidate: 20,
            secondary: Some(0),
            ..ErrorCounts::default()
        };
        let checks = run(&config(true, RulesFile::default()), 100, &grown, &[]);
        assert_eq!(class(&checks, "errors"), Some(Classification::High));
        // The secondary fails as often as the candidate: the environment, not the build.
        let noisy = ErrorCounts {
            secondary: Some(20),
            ..grown
        };
        let checks = run(&config(true, RulesFile::default()), 100, &noisy, &[]);
        assert_eq!(class(&checks, "errors"), Some(Classification::Pass));
        // Too few exchanges to say there was no growth.
        let checks = run(
            &config(false, RulesFile::default()),
            5,
            &ErrorCounts::default(),
            &[],
        );
        assert_eq!(class(&checks, "errors"), Some(Classification::Nodata));
        assert_eq!(class(&checks, "responses"), Some(Classification::Nodata));
    }

    #[test]
    fn a_baseline_that_did_not_answer_is_reported_and_an_slo_needs_its_tail() {
        let down = ErrorCounts {
            baseline: 90,
            baseline_unanswered: 90,
            ..ErrorCounts::default()
        };
        let rules = RulesFile {
            slo: vec!["GET /a: p99<1ms".into()],
            ..RulesFile::default()
        };
        let checks = run(&config(false, rules), 100, &down, &[5_000; 100]);
        let baseline = checks.last().expect("checks");
        assert_eq!(baseline.name, CheckName::Baseline);
        assert_eq!(baseline.classification, Classification::Error);
        assert_eq!(baseline.weight, 0.0);
        // 100 samples leave one above p99: too few to judge it.
        assert_eq!(class(&checks, "slo p99<1ms"), Some(Classification::Nodata));
        let answered = ErrorCounts::default();
        let checks = run(&config(false, RulesFile::default()), 100, &answered, &[]);
        assert_eq!(class(&checks, "baseline"), None);
    }

    #[test]
    fn unpaired_canary_traffic_has_no_responses_check() {
        let mut o = DiffOptions::new("/mem");
        o.run = Vec::new();
        o.baseline_tape = Some(vec!["/b".into()]);
        o.candidate_tape = Some(vec!["/c".into()]);
        let cfg = o.validate_with(RulesFile::default()).expect("valid");
        let checks = run(&cfg, 100, &ErrorCounts::default(), &[]);
        assert_eq!(class(&checks, "responses"), None);
        assert_eq!(class(&checks, "errors"), Some(Classification::Pass));
    }

    #[test]
    fn names_are_the_strings_of_verdict_json() {
        let slo = Slo::parse("GET /api/users: p95<300ms").expect("slo");
        let names = [
            (CheckName::Responses, "responses"),
            (CheckName::Errors, "errors"),
            (CheckName::Latency, "latency"),
            (CheckName::Shape, "shape"),
            (CheckName::slo(&slo), "slo p95<300ms"),
            (CheckName::Baseline, "baseline"),
        ];
        for (name, text) in names {
            assert_eq!(name.as_str(), text);
            assert_eq!(name.to_string(), text);
            assert_eq!(name, text);
            assert_eq!(
                serde_json::to_string(&name).expect("json"),
                format!("\"{text}\"")
            );
        }
        let CheckName::Slo(s) = CheckName::slo(&slo) else {
            panic!("not an slo");
        };
        assert_eq!(s.condition(), "p95<300ms");
        assert_eq!(
            CheckName::join(&[CheckName::Latency, CheckName::Errors]),
            "latency, errors"
        );
    }
}
