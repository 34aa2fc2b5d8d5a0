//! Measuring a route once the run has been read: its paths judged against noise
//! ([`judge_paths`]) and its latency comparison ([`measure`]) — the numbers the checks classify
//! and the reports show.

use hdrhistogram::Histogram;
use tracing::debug;

use super::accumulate::{LatencyAcc, RouteAcc};
use crate::compare::FindingKind;
use crate::config::Settings;
use crate::outcome::{LatencyReport, PathReport, PathStatus, Percentiles};
use crate::stats;

/// Percentiles the bootstrap ratio is computed at.
const RATIO_QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Whether `n` samples estimate the `q` percentile: at least `tail_samples` lie above it.
pub(crate) fn estimable(n: usize, q: f64, s: &Settings) -> bool {
    n > 0 && n as f64 * (1.0 - q) >= s.tail_samples
}

fn percentiles(h: &Histogram<u64>, s: &Settings) -> Percentiles {
    let n = h.len();
    let at = |q: f64| -> Option<u64> {
        (n > 0 && n as f64 * (1.0 - q) >= s.tail_samples).then(|| h.value_at_quantile(q))
    };
    let mut p = Percentiles {
        count: n,
        p50: at(0.5),
        p90: at(0.9),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        max: (n > 0).then(|| h.max()),
        low_n: std::collections::BTreeMap::new(),
    };
    // What the tail rule leaves out is still worth showing, marked (issue 17).
    for (label, q, v) in [
        ("p50", 0.5, p.p50),
        ("p90", 0.9, p.p90),
        ("p95", 0.95, p.p95),
        ("p99", 0.99, p.p99),
        ("p999", 0.999, p.p999),
    ] {
        if n > 0 && v.is_none() {
            p.low_n.insert(label.to_owned(), h.value_at_quantile(q));
        }
    }
    p
}

/// The latency comparison of `acc`: percentiles of both sides and, with at least
/// `min_samples` samples on each, the statistics (Mann-Whitney, Hodges-Lehmann with the noise
/// target's shift, bootstrap ratios at the estimable percentiles, Kolmogorov-Smirnov).
pub(crate) fn measure(acc: &LatencyAcc, s: &Settings, seed: u64) -> LatencyReport {
    let b = acc.base.res.values();
    let c = acc.cand.res.values();
    let mut report = LatencyReport {
        baseline: percentiles(&acc.base.hist, s),
        candidate: percentiles(&acc.cand.hist, s),
        ..LatencyReport::default()
    };
    if b.len() < s.min_samples || c.len() < s.min_samples {
        return report;
    }
    report.mann_whitney = stats::mann_whitney(c, b);
    report.hodges_lehmann = stats::hodges_lehmann(
        &stats::thin(c, 1000),
        &stats::thin(b, 1000),
        s.hl_confidence,
    );
    // Environment drift: how far a second baseline instance moved from the baseline.
    report.noise_shift = acc
        .sec
        .as_ref()
        .map(|sec| sec.res.values())
        .filter(|v| v.len() >= s.min_samples)
        .and_then(|v| {
            stats::hodges_lehmann(
                &stats::thin(v, 1000),
                &stats::thin(b, 1000),
                s.hl_confidence,
            )
        });
    let qs: Vec<f64> = RATIO_QUANTILES
        .iter()
        .copied()
        .filter(|&q| estimable(b.len().min(c.len()), q, s))
        .collect();
    report.ratios = stats::bootstrap_ratio(
        &stats::thin(c, 1000),
        &stats::thin(b, 1000),
        &qs,
        s.bootstrap_resamples,
        s.bootstrap_confidence,
        seed,
    );
    report.ks = stats::ks_2samp(c, b);
    report
}

/// The samples [`measure`] computes the statistics from: baseline, candidate.
pub(crate) fn latency_samples(acc: &LatencyAcc) -> (usize, usize) {
    (acc.base.res.values().len(), acc.cand.res.values().len())
}

/// Judges every path of `route` (draining `acc.paths`): a regression when the candidate differs
/// clearly more often than the noise (with a secondary: relative and absolute margins), or
/// more often than `noise_absolute` leaving out volatile-looking values (without); noise
/// otherwise. Regressions first, then by rate.
pub(crate) fn judge_paths(
    route: &str,
    acc: &mut RouteAcc,
    s: &Settings,
    noise_on: bool,
) -> Vec<PathReport> {
    let mut out = Vec::new();
    for (path, pa) in acc.paths.drain() {
        let n = acc.paired.max(1) as f64;
        let raw_rate = pa.raw as f64 / n;
        let noise_rate =
            (noise_on && acc.with_noise > 0).then(|| pa.noise as f64 / acc.with_noise as f64);
        let status = if noise_on {
            let nr = noise_rate.unwrap_or(0.0);
            let excess = raw_rate - nr;
            if raw_rate > nr && excess / raw_rate > s.noise_relative && excess > s.noise_absolute {
                PathStatus::Regression
            } else if pa.noise > 0 {
                PathStatus::Noise
            } else {
                PathStatus::BelowThreshold
            }
        } else if pa.raw > 0 && pa.volatile == pa.raw {
            PathStatus::NoiseCandidate
        } else {
            let rate = (pa.raw - pa.volatile) as f64 / n;
            if rate > s.noise_absolute {
                PathStatus::Regression
            } else {
                PathStatus::BelowThreshold
            }
        };
        debug!(route, path = %path, raw = pa.raw, noise = pa.noise, ?status, "path judged");
        out.push(PathReport {
            kind: pa.kind.map_or("unknown", FindingKind::as_str).to_owned(),
            path,
            raw_count: pa.raw,
            raw_rate,
            noise_count: noise_on.then_some(pa.noise),
            noise_rate,
            volatile: pa.volatile_kind.filter(|_| pa.volatile > 0),
            status,
            example: pa.example,
        });
    }
    out.sort_by(|a, b| {
        a.status
            .cmp(&b.status)
            .then(b.raw_rate.total_cmp(&a.raw_rate))
            .then(a.path.cmp(&b.path))
    });
    out
}
