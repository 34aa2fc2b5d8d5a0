//! `shape`: did the latency distribution's shape change (two-sample Kolmogorov-Smirnov)? An
//! informational note — weight 0, always `pass` — shown when the statistic could be computed.

use super::{CheckName, RouteCheck, RouteEvidence};
use crate::config::DiffConfig;
use crate::outcome::{Check, Classification};

/// The `shape` check.
#[derive(Debug)]
pub(super) struct Shape;

impl RouteCheck for Shape {
    fn check(&self, r: &RouteEvidence<'_>, cfg: &DiffConfig, out: &mut Vec<Check>) {
        let Some(ks) = r.latency.ks else {
            return;
        };
        out.push(Check {
            name: CheckName::Shape,
            classification: Classification::Pass,
            critical: false,
            weight: 0.0,
            reason: if ks.p < cfg.settings.alpha {
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
}
