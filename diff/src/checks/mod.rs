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
