//! `errors`: did the candidate's 5xx / no-response rate grow beyond the baseline's, by more
//! than the noise (the secondary's disagreement with the baseline) and both thresholds?

use super::{CheckName, RouteCheck, RouteEvidence};
use crate::config::DiffConfig;
use crate::fmt::fmt_rate;
use crate::outcome::{Check, Classification};

/// The `errors` check.
#[derive(Debug)]
pub(super) struct Errors;

impl RouteCheck for Errors {
    fn check(&self, r: &RouteEvidence<'_>, cfg: &DiffConfig, out: &mut Vec<Check>) {
        let s = &cfg.settings;
        let e = r.errors;
        let (b_rate, c_rate) = (
            e.baseline as f64 / r.n_base.max(1) as f64,
            e.candidate as f64 / r.n_cand.max(1) as f64,
        );
        let noise_diff = match e.secondary {
            Some(sec) if r.with_noise > 0 => {
                (sec as f64 - e.baseline as f64).abs() / r.with_noise as f64
            }
            _ => 0.0,
        };
        let excess = c_rate - b_rate - noise_diff;
        let reason = format!(
            "5xx/error rate {} → {}{}",
            fmt_rate(b_rate),
            fmt_rate(c_rate),
            if cfg.options.noise.is_some() {
                format!(" (noise {})", fmt_rate(noise_diff))
            } else {
                String::new()
            }
        );
        let classification = if e.candidate > e.baseline
            && excess > 0.0
            && excess / c_rate > s.noise_relative
            && excess > s.noise_absolute
        {
            Classification::High
        } else if !r.enough(cfg) {
            Classification::Nodata
        } else {
            Classification::Pass
        };
        out.push(Check {
            name: CheckName::Errors,
            classification,
            critical: s.critical_errors,
            weight: s.weight_errors,
            reason,
        });
    }
}
