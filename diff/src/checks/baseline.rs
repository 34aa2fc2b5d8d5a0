//! `baseline`: did the baseline answer? A baseline that mostly did not (refused, reset, timed
//! out) is no reference: whatever the candidate did, the route cannot be judged — both targets
//! down must never read as "no difference". Classified `error` with weight 0, so it never moves
//! the score; the judge makes a route with this check inconclusive.

use super::{CheckName, RouteCheck, RouteEvidence};
use crate::config::DiffConfig;
use crate::fmt::fmt_rate;
use crate::outcome::{Check, Classification};

/// The `baseline` check (present only when the baseline did not answer).
#[derive(Debug)]
pub(super) struct Baseline;

impl RouteCheck for Baseline {
    fn check(&self, r: &RouteEvidence<'_>, cfg: &DiffConfig, out: &mut Vec<Check>) {
        let unanswered = r.errors.baseline_unanswered as f64 / r.n_base.max(1) as f64;
        let down = r.n_base > 0 && unanswered > cfg.settings.max_baseline_unanswered;
        if !down {
            return;
        }
        out.push(Check {
            name: CheckName::Baseline,
            classification: Classification::Error,
            critical: false,
            weight: 0.0,
            reason: format!(
                "the baseline did not answer {} of {} requests ({}): nothing to compare against",
                r.errors.baseline_unanswered,
                r.n_base,
                fmt_rate(unanswered)
            ),
        });
    }
}
