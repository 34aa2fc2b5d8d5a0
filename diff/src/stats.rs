//! Statistics for latency comparison: Mann-Whitney U (normal approximation with tie and
//! continuity correction), the Hodges-Lehmann shift with its distribution-free confidence
//! interval, bootstrap confidence intervals of percentile ratios, and the two-sample
//! Kolmogorov-Smirnov statistic. All functions take plain samples and never panic on any input
//! (empty samples give `None`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// `erfc(x)`, accurate to about 1e-14 relative (series near 0, continued fraction in the tails).
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf by its Taylor series: sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = x;
        let mut sum = x;
        let x2 = x * x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() && n < 200.0 {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        1.0 - sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // Continued fraction (modified Lentz): erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + ...)))
        let tiny = 1e-300;
        let mut f = x;
        let mut c = x;
        let mut d = 0.0;
        for i in 1..500 {
            let a = f64::from(i) / 2.0;
            d = x + a * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = x + a / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x * x).exp() / f / std::f64::consts::PI.sqrt()
    }
}

/// Standard normal survival function `P(Z > z)`.
pub(crate) fn norm_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Standard normal quantile (Acklam's algorithm, relative error < 1.2e-9).
#[allow(clippy::excessive_precision)]
pub(crate) fn norm_ppf(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239e0,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838e0,
        -2.549732539343734e0,
        4.374664141464968e0,
        2.938163982698783e0,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996e0,
        3.754408661907416e0,
    ];
    let lo = 0.02425;
    if p < lo {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - lo {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -norm_ppf(1.0 - p)
    }
}

/// Result of a one-sided Mann-Whitney U test "candidate is stochastically greater".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MannWhitney {
    /// U statistic of the candidate sample.
    pub u: f64,
    /// Normal deviate after tie and continuity correction.
    pub z: f64,
    /// One-sided p-value (candidate greater).
    pub p_greater: f64,
    /// One-sided p-value (candidate smaller).
    pub p_less: f64,
}

/// Average ranks (1-based) of `values`, and the tie term `sum(t^3 - t)`.
fn ranks(values: &[f64]) -> (Vec<f64>, f64) {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut r = vec![0.0; values.len()];
    let mut ties = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && values[idx[j]] == values[idx[i]] {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        for &k in &idx[i..j] {
            r[k] = avg;
        }
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    (r, ties)
}

/// Mann-Whitney U of `candidate` against `baseline`, normal approximation with tie correction
/// and continuity correction (as `scipy.stats.mannwhitneyu(..., method="asymptotic")`).
pub(crate) fn mann_whitney(candidate: &[f64], baseline: &[f64]) -> Option<MannWhitney> {
    let n1 = candidate.len() as f64;
    let n2 = baseline.len() as f64;
    if candidate.is_empty() || baseline.is_empty() {
        return None;
    }
    let all: Vec<f64> = candidate.iter().chain(baseline).copied().collect();
    let (r, ties) = ranks(&all);
    let r1: f64 = r[..candidate.len()].iter().sum();
    let u = r1 - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    let mu = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return Some(MannWhitney {
            u,
            z: 0.0,
            p_greater: 1.0,
            p_less: 1.0,
        });
    }
    let sd = var.sqrt();
    let z = (u - mu) / sd;
    let p_greater = norm_sf((u - mu - 0.5) / sd).min(1.0);
    let p_less = norm_sf((mu - u - 0.5) / sd).min(1.0);
    Some(MannWhitney {
        u,
        z,
        p_greater,
        p_less,
    })
}

/// Hodges-Lehmann estimate of the shift `candidate - baseline` with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HodgesLehmann {
    /// Median of all pairwise differences.
    pub shift: f64,
    /// Low end of the interval.
    pub ci_low: f64,
    /// High end of the interval.
    pub ci_high: f64,
    /// Confidence of the interval.
    pub confidence: f64,
}

fn kth(v: &mut [f64], k: usize) -> f64 {
    let k = k.min(v.len() - 1);
    *v.select_nth_unstable_by(k, f64::total_cmp).1
}

/// Hodges-Lehmann shift and the distribution-free interval from the order statistics of the
/// pairwise differences (normal approximation of the Mann-Whitney null distribution).
/// Samples are used as given; cap them first (the cost is `n1 * n2`).
pub(crate) fn hodges_lehmann(
    candidate: &[f64],
    baseline: &[f64],
    confidence: f64,
) -> Option<HodgesLehmann> {
    if candidate.is_empty() || baseline.is_empty() {
        return None;
    }
    let mut d: Vec<f64> = Vec::with_capacity(candidate.len() * baseline.len());
    for c in candidate {
        for b in baseline {
            d.push(c - b);
        }
    }
    let m = d.len();
    let shift = if m % 2 == 1 {
        kth(&mut d, m / 2)
    } else {
        (kth(&mut d, m / 2 - 1) + kth(&mut d, m / 2)) / 2.0
    };
    let n1 = candidate.len() as f64;
    let n2 = baseline.len() as f64;
    let z = norm_ppf(1.0 - (1.0 - confidence) / 2.0);
    let ca = (n1 * n2 / 2.0 - z * (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt()).floor();
    let k = if ca < 1.0 { 1 } else { ca as usize };
    let ci_low = kth(&mut d, k - 1);
    let ci_high = kth(&mut d, m.saturating_sub(k));
    Some(HodgesLehmann {
        shift,
        ci_low,
        ci_high,
        confidence,
    })
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Nearest-rank percentiles `qs` of one resample (with replacement) of the sorted `sorted`,
/// written to `out`. `order` lists the indices of `qs` in ascending order.
fn resample_percentiles(
    sorted: &[f64],
    qs: &[f64],
    order: &[usize],
    counts: &mut [u32],
    out: &mut [f64],
    rng: &mut StdRng,
) {
    let n = sorted.len();
    counts.fill(0);
    for _ in 0..n {
        counts[rng.random_range(0..n)] += 1;
    }
    let rank = |q: f64| ((q * n as f64).ceil() as usize).clamp(1, n);
    let mut next = 0;
    let mut cum = 0usize;
    for (i, &c) in counts.iter().enumerate() {
        cum += c as usize;
        while next < order.len() && cum >= rank(qs[order[next]]) {
            out[order[next]] = sorted[i];
            next += 1;
        }
        if next == order.len() {
            break;
        }
    }
}

/// A bootstrap interval of `percentile(candidate) / percentile(baseline)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RatioCi {
    /// The percentile (0.95 for p95).
    pub q: f64,
    /// The ratio of the sample percentiles.
    pub ratio: f64,
    /// Low end of the interval.
    pub ci_low: f64,
    /// High end of the interval.
    pub ci_high: f64,
}

/// Bootstrap (percentile method) confidence intervals of the candidate/baseline ratio at each
/// of `qs`, with `resamples` resamples from a generator seeded with `seed` (reproducible).
pub(crate) fn bootstrap_ratio(
    candidate: &[f64],
    baseline: &[f64],
    qs: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Vec<RatioCi> {
    if candidate.is_empty() || baseline.is_empty() || resamples == 0 {
        return Vec::new();
    }
    let mut sc = candidate.to_vec();
    let mut sb = baseline.to_vec();
    sc.sort_by(f64::total_cmp);
    sb.sort_by(f64::total_cmp);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    // Resampling a sorted sample with replacement = drawing a count per element; the order
    // statistics of the resample are then read off the running sum, in O(n) instead of a sort.
    let mut order: Vec<usize> = (0..qs.len()).collect();
    order.sort_by(|&i, &j| qs[i].total_cmp(&qs[j]));
    let mut counts_c = vec![0u32; sc.len()];
    let mut counts_b = vec![0u32; sb.len()];
    let mut pc = vec![0.0; qs.len()];
    let mut pb = vec![0.0; qs.len()];
    for _ in 0..resamples {
        resample_percentiles(&sc, qs, &order, &mut counts_c, &mut pc, &mut rng);
        resample_percentiles(&sb, qs, &order, &mut counts_b, &mut pb, &mut rng);
        for i in 0..qs.len() {
            if pb[i] > 0.0 {
                ratios[i].push(pc[i] / pb[i]);
            }
        }
    }
    let alpha = (1.0 - confidence) / 2.0;
    qs.iter()
        .zip(ratios)
        .filter_map(|(&q, mut r)| {
            let c = percentile_sorted(&sc, q)?;
            let b = percentile_sorted(&sb, q)?;
            if r.is_empty() || b <= 0.0 {
                return None;
            }
            r.sort_by(f64::total_cmp);
            Some(RatioCi {
                q,
                ratio: c / b,
                ci_low: percentile_sorted(&r, alpha)?,
                ci_high: percentile_sorted(&r, 1.0 - alpha)?,
            })
        })
        .collect()
}

/// Two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KolmogorovSmirnov {
    /// Largest distance between the two empirical distribution functions.
    pub d: f64,
    /// Asymptotic p-value from the Kolmogorov distribution (`kstwobign.sf(sqrt(en) * d)`).
    pub p: f64,
}

/// Survival function of the Kolmogorov distribution (`scipy.stats.kstwobign.sf`).
pub(crate) fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 0.3 {
        // The alternating series converges badly near 0; use the theta-function form of the CDF.
        let t = -std::f64::consts::PI * std::f64::consts::PI / (8.0 * x * x);
        let cdf = (2.0 * std::f64::consts::PI).sqrt() / x
            * (1..=20)
                .map(|k| (f64::from(2 * k - 1).powi(2) * t).exp())
                .sum::<f64>();
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let kf = f64::from(k);
        let term = (-2.0 * kf * kf * x * x).exp();
        sum += if k % 2 == 1 { term } else { -term };
        if term < 1e-17 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Two-sample KS test (two-sided, asymptotic).
pub(crate) fn ks_2samp(a: &[f64], b: &[f64]) -> Option<KolmogorovSmirnov> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut sa = a.to_vec();
    let mut sb = b.to_vec();
    sa.sort_by(f64::total_cmp);
    sb.sort_by(f64::total_cmp);
    let (n, m) = (sa.len() as f64, sb.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < sa.len() && j < sb.len() {
        let x = sa[i].min(sb[j]);
        while i < sa.len() && sa[i] <= x {
            i += 1;
        }
        while j < sb.len() && sb[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let en = n * m / (n + m);
    Some(KolmogorovSmirnov {
        d,
        p: kolmogorov_sf(en.sqrt() * d),
    })
}

/// Fixed-size uniform sample of a stream (Algorithm R), seeded so runs are reproducible.
#[derive(Debug)]
pub(crate) struct Reservoir {
    cap: usize,
    seen: u64,
    items: Vec<f64>,
    rng: StdRng,
}

impl Reservoir {
    /// An empty reservoir keeping at most `cap` values.
    pub(crate) fn new(cap: usize, seed: u64) -> Self {
        Self {
            cap: cap.max(1),
            seen: 0,
            items: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Offers one value.
    pub(crate) fn push(&mut self, v: f64) {
        self.seen += 1;
        if self.items.len() < self.cap {
            self.items.push(v);
        } else {
            let j = self.rng.random_range(0..self.seen);
            if (j as usize) < self.cap {
                self.items[j as usize] = v;
            }
        }
    }

    /// Adds another reservoir's sample (its values are offered one by one; the result is an
    /// approximately uniform sample of both streams).
    pub(crate) fn merge(&mut self, other: &Reservoir) {
        for &v in &other.items {
            self.push(v);
        }
        self.seen += other.seen.saturating_sub(other.items.len() as u64);
    }

    /// The sample.
    pub(crate) fn values(&self) -> &[f64] {
        &self.items
    }

    /// How many values were offered.
    #[cfg(test)]
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }
}

/// An evenly spaced subsample of at most `cap` values (deterministic), for the quadratic tests.
pub(crate) fn thin(values: &[f64], cap: usize) -> Vec<f64> {
    if values.len() <= cap || cap == 0 {
        return values.to_vec();
    }
    let step = values.len() as f64 / cap as f64;
    (0..cap)
        .map(|i| values[((i as f64 * step) as usize).min(values.len() - 1)])
        .collect()
}

#[cfg(test)]
mod tests;
