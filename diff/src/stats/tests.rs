//! Statistics checked against values computed once with scipy 1.17 (snippets in the comments).

use super::*;

fn close(a: f64, b: f64, rel: f64) {
    assert!(
        (a - b).abs() <= rel * b.abs().max(1e-300),
        "{a} vs expected {b} (rel tol {rel})"
    );
}

const A: [f64; 12] = [
    12.1, 15.3, 11.8, 14.2, 19.9, 13.3, 16.4, 12.7, 18.1, 15.0, 14.2, 13.9,
];
const B: [f64; 11] = [
    10.2, 11.1, 12.7, 9.8, 13.0, 10.9, 11.5, 12.2, 10.4, 14.2, 11.9,
];

#[test]
fn erfc_and_normal_match_scipy() {
    // from scipy import special, stats
    // [special.erfc(x) for x in [0.1, 0.5, 1.0, 1.9, 2.5, 4.0, 7.0]]
    let expected = [
        (0.1, 0.8875370839817152),
        (0.5, 0.4795001221869535),
        (1.0, 0.15729920705028516),
        (1.9, 0.007209570764742531),
        (2.5, 0.00040695201744495886),
        (4.0, 1.541725790028002e-08),
        (7.0, 4.183825607779414e-23),
    ];
    for (x, e) in expected {
        close(erfc(x), e, 1e-12);
    }
    close(erfc(-1.0), 2.0 - 0.15729920705028516, 1e-14);
    // stats.norm.sf(1.0), stats.norm.sf(5.0)
    close(norm_sf(1.0), 0.15865525393145707, 1e-12);
    close(norm_sf(5.0), 2.866515718791933e-07, 1e-12);
    // stats.norm.ppf(0.99), stats.norm.ppf(0.975), stats.norm.ppf(0.001)
    close(norm_ppf(0.99), 2.3263478740408408, 1e-8);
    close(norm_ppf(0.975), 1.959963984540054, 1e-8);
    close(norm_ppf(0.001), -3.090232306167813, 1e-8);
}

#[test]
fn mann_whitney_matches_scipy() {
    // stats.mannwhitneyu(A, B, alternative='greater', method='asymptotic', use_continuity=True)
    //   -> statistic 117.5, pvalue 0.000836937273118626
    // stats.mannwhitneyu(A, B, alternative='less', ...) -> pvalue 0.9993231354368618
    let r = mann_whitney(&A, &B).expect("samples");
    assert_eq!(r.u, 117.5);
    close(r.p_greater, 0.000836937273118626, 1e-9);
    close(r.p_less, 0.9993231354368618, 1e-9);
    // Heavy ties:
    // stats.mannwhitneyu([1,2,2,3,3,3,4,5,5,6], [1,1,2,2,2,3,3,4,4,4,5], alternative='greater',
    //   method='asymptotic', use_continuity=True) -> statistic 66.5, pvalue 0.21487818467924952
    let c = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0, 5.0, 6.0];
    let d = [1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0, 5.0];
    let r = mann_whitney(&c, &d).expect("samples");
    assert_eq!(r.u, 66.5);
    close(r.p_greater, 0.21487818467924952, 1e-9);
    assert!(mann_whitney(&[], &d).is_none());
    let same = mann_whitney(&[3.0; 5], &[3.0; 5]).expect("samples");
    assert_eq!(same.p_greater, 1.0);
}

#[test]
fn kolmogorov_matches_scipy() {
    // [stats.kstwobign.sf(x) for x in [0.2, 0.5, 1.0, 1.36, 2.0]]
    let expected = [
        (0.2, 0.999999999999495),
        (0.5, 0.9639452436648751),
        (1.0, 0.26999967167735456),
        (1.36, 0.049485876755377876),
        (2.0, 0.0006709252557796953),
    ];
    for (x, e) in expected {
        close(kolmogorov_sf(x), e, 1e-9);
    }
    // stats.ks_2samp(A, B).statistic -> 0.6590909090909091;
    // en = 12*11/23; stats.kstwobign.sf(np.sqrt(en) * d) -> 0.013663610523146616
    let ks = ks_2samp(&A, &B).expect("samples");
    close(ks.d, 0.6590909090909091, 1e-12);
    close(ks.p, 0.013663610523146616, 1e-8);
}

#[test]
fn hodges_lehmann_is_the_median_pairwise_difference() {
    let c = [11.0, 12.0, 13.0, 14.0, 15.0];
    let b = [1.0, 2.0, 3.0, 4.0, 5.0];
    let hl = hodges_lehmann(&c, &b, 0.98).expect("samples");
    assert_eq!(hl.shift, 10.0);
    assert!(hl.ci_low <= 10.0 && hl.ci_high >= 10.0);
    assert!(hl.ci_low > 0.0);
    // Brute force on A/B: the median of the 132 pairwise differences.
    let mut d: Vec<f64> = A
        .iter()
        .flat_map(|a| B.iter().map(move |b| a - b))
        .collect();
    d.sort_by(f64::total_cmp);
    let hl = hodges_lehmann(&A, &B, 0.98).expect("samples");
    assert_eq!(hl.shift, (d[65] + d[66]) / 2.0);
    // k = floor(132/2 - z(0.99) * sqrt(12*11*24/12)) = floor(66 - 2.3263 * 16.248) = 28
    assert_eq!(hl.ci_low, d[27]);
    assert_eq!(hl.ci_high, d[132 - 28]);
}

#[test]
fn bootstrap_is_reproducible_and_sane() {
    let base: Vec<f64> = (0..200)
        .map(|i| 1000.0 + f64::from(i % 37) * 10.0)
        .collect();
    let cand: Vec<f64> = base.iter().map(|x| x * 10.0).collect();
    let r1 = bootstrap_ratio(&cand, &base, &[0.5, 0.95], 300, 0.95, 42);
    let r2 = bootstrap_ratio(&cand, &base, &[0.5, 0.95], 300, 0.95, 42);
    assert_eq!(r1, r2);
    assert_eq!(r1.len(), 2);
    for r in &r1 {
        close(r.ratio, 10.0, 1e-9);
        assert!(r.ci_low > 8.0 && r.ci_high < 12.5, "{r:?}");
    }
    let same = bootstrap_ratio(&base, &base, &[0.5], 300, 0.95, 7);
    assert!(same[0].ci_low <= 1.0 && same[0].ci_high >= 1.0, "{same:?}");
}

#[test]
fn percentiles_and_reservoir() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile_sorted(&v, 0.5), Some(50.0));
    assert_eq!(percentile_sorted(&v, 0.99), Some(99.0));
    assert_eq!(percentile_sorted(&[], 0.5), None);
    let mut r = Reservoir::new(10, 1);
    for i in 0..1000 {
        r.push(f64::from(i));
    }
    assert_eq!(r.values().len(), 10);
    assert_eq!(r.seen(), 1000);
    assert_eq!(thin(&v, 10).len(), 10);
}

#[test]
fn counting_resample_reads_the_right_order_statistics() {
    let sorted: Vec<f64> = (0..97).map(|i| f64::from(i * i)).collect();
    let qs = [0.99, 0.5, 0.95];
    let order = [1, 2, 0];
    let mut counts = vec![0u32; sorted.len()];
    let mut out = vec![0.0; 3];
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..50 {
        resample_percentiles(&sorted, &qs, &order, &mut counts, &mut out, &mut rng);
        // Rebuild the resample from the counts and take its percentiles the slow way.
        let resample: Vec<f64> = counts
            .iter()
            .enumerate()
            .flat_map(|(i, &c)| std::iter::repeat_n(sorted[i], c as usize))
            .collect();
        assert_eq!(resample.len(), sorted.len());
        for (k, &q) in qs.iter().enumerate() {
            assert_eq!(Some(out[k]), percentile_sorted(&resample, q), "q={q}");
        }
    }
}
