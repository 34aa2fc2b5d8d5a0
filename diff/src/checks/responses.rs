//! `responses`: do the candidate's responses differ from the baseline's more than the noise
//! explains? The paths were judged when the route was measured (`PathStatus::Regression`: the
//! candidate differs clearly more often than a second baseline instance, or than the absolute
//! threshold without one); this check fails when any path is a regression.

use super::{CheckName, RouteCheck, RouteEvidence};
use crate::config::DiffConfig;
use crate::fmt::fmt_rate;
use crate::outcome::{Check, Classification, PathReport, PathStatus};

/// The `responses` check.
#[derive(Debug)]
pub(super) struct Responses;

impl RouteCheck for Responses {
    fn check(&self, r: &RouteEvidence<'_>, cfg: &DiffConfig, out: &mut Vec<Check>) {
        // Unpaired canary traffic has no response pairs to compare.
        if cfg.options.candidate_tape.is_some() {
            return;
        }
        let s = &cfg.settings;
        let regressions: Vec<&PathReport> = r
            .paths
            .iter()
            .filter(|p| p.status == PathStatus::Regression)
            .collect();
        let (classification, reason) = if let Some(first) = regressions.first() {
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
                    r.paired,
                    first
                        .noise_rate
                        .map(|n| format!(", noise {}", fmt_rate(n)))
                        .unwrap_or_default(),
                    more
                ),
            )
        } else if !r.enough(cfg) {
            (
                Classification::Nodata,
                format!(
                    "only {} paired exchanges (need {})",
                    r.paired, s.min_samples
                ),
            )
        } else {
            (
                Classification::Pass,
                format!(
                    "no response differences beyond noise in {} exchanges",
                    r.paired
                ),
            )
        };
        out.push(Check {
            name: CheckName::Responses,
            classification,
            critical: s.critical_responses,
            weight: s.weight_responses,
            reason,
        });
    }
}
