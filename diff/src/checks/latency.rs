//! `latency`: is the candidate significantly *and* largely slower than the baseline, beyond the
//! environment's drift (the secondary's shift against the baseline)? All of: Mann-Whitney
//! `p_greater < alpha`, the Hodges-Lehmann interval above the drift with the shift minus the
//! drift at least `min_shift_ms`, and at least one percentile ratio whose bootstrap interval
//! clears `1 + ratio_tolerance` with that percentile `min_shift_ms` slower. Faster by the same
//! rules is `low` (reported, counts as a pass).

use super::{CheckName, RouteCheck, RouteEvidence};
use crate::config::{DiffConfig, Percentile, Settings};
use crate::fmt::{fmt_pct, fmt_signed_us, fmt_us};
use crate::outcome::{Check, Classification, LatencyReport};
use crate::stats::RatioCi;

/// The `latency` check.
#[derive(Debug)]
pub(super) struct Latency;

impl RouteCheck for Latency {
    fn check(&self, r: &RouteEvidence<'_>, cfg: &DiffConfig, out: &mut Vec<Check>) {
        let s = &cfg.settings;
        let (classification, reason) = classify(r.latency, r.latency_samples, s);
        out.push(Check {
            name: CheckName::Latency,
            classification,
            critical: s.critical_latency,
            weight: s.weight_latency,
            reason,
        });
    }
}

/// Classifies a latency comparison measured from `samples` (baseline, candidate) samples.
fn classify(
    report: &LatencyReport,
    (b, c): (usize, usize),
    s: &Settings,
) -> (Classification, String) {
    if b < s.min_samples || c < s.min_samples {
        let why = format!(
            "not enough latency samples ({b} baseline, {c} candidate; need {})",
            s.min_samples
        );
        return (Classification::Nodata, why);
    }
    let drift = report.noise_shift.map_or(0.0, |n| n.shift.abs());
    let floor = s.min_shift_ms * 1000.0;
    let (Some(mw), Some(hl)) = (report.mann_whitney, report.hodges_lehmann) else {
        return (
            Classification::Error,
            "latency statistics could not be computed".to_owned(),
        );
    };
    let pct = |q: f64| (report.candidate.at(q), report.baseline.at(q));
    let slower: Vec<&RatioCi> = report
        .ratios
        .iter()
        .filter(|r| {
            r.ci_low > 1.0 + s.ratio_tolerance
                && match pct(r.q) {
                    (Some(cv), Some(bv)) => cv as f64 - bv as f64 >= floor,
                    _ => false,
                }
        })
        .collect();
    let faster: Vec<&RatioCi> = report
        .ratios
        .iter()
        .filter(|r| {
            r.ci_high < 1.0 / (1.0 + s.ratio_tolerance)
                && match pct(r.q) {
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
            let label = Percentile(w.q).label();
            why.push_str(&format!(
                "{label} {} → {} ({}; ratio 95 % CI {:.2}..{:.2}), ",
                fmt_us(report.baseline.at(w.q).unwrap_or(0)),
                fmt_us(report.candidate.at(w.q).unwrap_or(0)),
                fmt_pct(report.hdr_change(w.q).unwrap_or(w.ratio - 1.0)),
                w.ci_low,
                w.ci_high
            ));
        }
        why.push_str(&shift);
        (Classification::High, why)
    } else if mw.p_less < s.alpha
        && hl.ci_high < -drift
        && -hl.shift - drift >= floor
        && !faster.is_empty()
    {
        (Classification::Low, format!("faster: {shift}"))
    } else {
        (
            Classification::Pass,
            format!("no significant and large slowdown: {shift}"),
        )
    }
}

/// The percentile a latency title quotes: p95 when its interval clears the tolerance, else p99,
/// else p50, else the largest ratio.
pub(crate) fn headline_ratio<'r>(ratios: &'r [RatioCi], s: &Settings) -> Option<&'r RatioCi> {
    let tol = 1.0 + s.ratio_tolerance;
    [0.95, 0.99, 0.5]
        .iter()
        .find_map(|&q| ratios.iter().find(|r| r.q == q && r.ci_low > tol))
        .or_else(|| ratios.iter().max_by(|a, b| a.ratio.total_cmp(&b.ratio)))
}
