//! The demo checks itself: the verdict must name exactly the regressions planted in the build
//! it compared (and, with `--chaos`, the degradation planted with pricing down).

use std::collections::BTreeSet;

use tapedeck_diff::{Classification, DiffOutcome, Verdict};

use super::{CandidateBuild, PLANTED};

/// What is wrong with the chaos section for the build the demo compared (pricing down): v2-bad
/// must have degraded (a 500 on every product request), v2-good degraded gracefully.
pub(super) fn chaos_check(o: &DiffOutcome, build: CandidateBuild) -> Vec<String> {
    let Some(f) = o.chaos.as_ref().and_then(|c| c.faults.first()) else {
        return vec!["the verdict has no chaos section".into()];
    };
    let want = match build {
        CandidateBuild::Bad => "degraded",
        CandidateBuild::Good => "graceful",
    };
    let mut problems = Vec::new();
    if f.outcome != want {
        problems.push(format!(
            "with pricing down the candidate was {}, expected {want}",
            f.outcome
        ));
    }
    if build == CandidateBuild::Bad && f.server_errors != f.requests {
        problems.push(format!(
            "with pricing down v2-bad answered 5xx to {} of {} product requests, expected all",
            f.server_errors, f.requests
        ));
    }
    if f.routes != [PLANTED_DEPENDENCY.0] {
        problems.push(format!("pricing being down affected {:?}", f.routes));
    }
    problems
}

/// The planted dependency regression: (candidate route, pricing call), made twice per product.
pub(crate) const PLANTED_DEPENDENCY: (&str, &str) = ("GET /api/products/{id}", "GET /prices/{id}");

/// What is wrong with the outcome for the build the demo compared; empty when it is right.
pub(super) fn self_check(o: &DiffOutcome, build: CandidateBuild) -> Vec<String> {
    let mut problems = Vec::new();
    match &o.dependencies {
        None => problems.push("the verdict has no dependency section".into()),
        Some(d) => {
            let changed: Vec<(String, String, tapedeck_diff::deps::CallStatus)> = d
                .changed()
                .map(|(r, c)| (r.route.clone(), c.call.clone(), c.status))
                .collect();
            let want: Vec<(String, String, tapedeck_diff::deps::CallStatus)> = match build {
                CandidateBuild::Good => Vec::new(),
                CandidateBuild::Bad => vec![(
                    PLANTED_DEPENDENCY.0.to_owned(),
                    PLANTED_DEPENDENCY.1.to_owned(),
                    tapedeck_diff::deps::CallStatus::MoreCalls,
                )],
            };
            if changed != want {
                problems.push(format!("dependency changes {changed:?}, expected {want:?}"));
            }
            if d.dependencies.iter().any(|s| s.attribution != "tracestate") {
                problems.push("pricing calls were not told apart by tracestate".into());
            }
        }
    }
    let failing: BTreeSet<String> = o
        .routes
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .map(|r| r.route.clone())
        .collect();
    match build {
        CandidateBuild::Good => {
            if o.verdict != Verdict::Pass {
                problems.push(format!("verdict is {:?}, expected pass", o.verdict));
            }
            if o.rollback {
                problems.push("rollback was requested for the good build".into());
            }
            for r in &failing {
                problems.push(format!("route {r} failed"));
            }
        }
        CandidateBuild::Bad => {
            if o.verdict != Verdict::Fail || !o.rollback {
                problems.push(format!(
                    "verdict is {:?} (rollback {}), expected fail with rollback",
                    o.verdict, o.rollback
                ));
            }
            let expected: BTreeSet<String> = PLANTED.iter().map(|(r, _)| (*r).to_owned()).collect();
            for r in expected.difference(&failing) {
                problems.push(format!("planted regression on {r} was not found"));
            }
            for r in failing.difference(&expected) {
                problems.push(format!("route {r} failed but nothing was planted there"));
            }
            for (route, what) in PLANTED {
                let Some(r) = o.routes.iter().find(|r| r.route == route) else {
                    continue;
                };
                let named = r
                    .checks
                    .iter()
                    .filter(|c| c.classification != Classification::Pass)
                    .any(|c| c.name.as_str().contains(what) || c.reason.contains(what));
                if !named {
                    problems.push(format!("{route} failed, but no check names {what}"));
                }
            }
        }
    }
    problems
}
