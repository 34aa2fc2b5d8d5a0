//! The latency percentile plots: inline SVG, latency on a log scale against the percentile on a
//! nines axis, baseline solid and candidate dashed; percentiles without enough samples are not
//! drawn.

use std::fmt::Write as _;

use super::*;

/// The percentile points of one side: (quantile, µs). `max` is plotted as q = 0.9999.
fn points(p: &Percentiles) -> Vec<(f64, u64)> {
    [
        (0.5, p.p50),
        (0.9, p.p90),
        (0.95, p.p95),
        (0.99, p.p99),
        (0.999, p.p999),
        (0.9999, p.max),
    ]
    .into_iter()
    .filter_map(|(q, v)| v.map(|v| (q, v)))
    .collect()
}

/// x position of a quantile on a "nines" axis: log10(1 / (1 - q)).
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q)).log10()
}

/// An inline SVG percentile plot of baseline and candidate: latency (log scale) against the
/// quantile on a nines axis.
pub(crate) fn percentile_svg(l: &LatencyReport, label: &str) -> String {
    let (w, ht) = (420.0_f64, 230.0_f64);
    let (left, right, top, bottom) = (62.0, 12.0, 10.0, 34.0);
    let (pw, ph) = (w - left - right, ht - top - bottom);
    let b = points(&l.baseline);
    let c = points(&l.candidate);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg role=\"img\" aria-label=\"latency percentiles of {}\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\">",
        escape(label)
    );
    if b.is_empty() && c.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no latency data</text></svg>",
            w / 2.0,
            ht / 2.0
        );
        return s;
    }
    let values = || b.iter().chain(&c).map(|(_, v)| (*v).max(1) as f64);
    let max_v = values().fold(1.0_f64, f64::max);
    let min_v = values().fold(f64::INFINITY, f64::min).min(max_v);
    // Log scale: whole decades around the data, so p50 and a far-out max both stay readable.
    let lo = min_v.log10().floor();
    let hi = max_v.log10().ceil().max(lo + 1.0);
    let x_max = nines(0.9999);
    let x_min = nines(0.5);
    let xp = |q: f64| left + (nines(q) - x_min) / (x_max - x_min) * pw;
    let yp = |v: f64| top + ph - (v.max(1.0).log10() - lo) / (hi - lo) * ph;
    // Grid and y labels: 1, 2, 5 × 10^k when the plot spans at most two decades, else 10^k.
    let mults: &[f64] = if hi - lo <= 2.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut decade = lo;
    while decade <= hi && decade - lo < 12.0 {
        for m in mults {
            let v = m * 10f64.powf(decade);
            if v > 10f64.powf(hi) * 1.0001 {
                break;
            }
            let y = yp(v);
            let _ = write!(
                s,
                "<line class=\"grid\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left + pw,
                left - 6.0,
                y + 4.0,
                escape(&fmt_us(v.round() as u64))
            );
        }
        decade += 1.0;
    }
    // x labels.
    for (q, name) in [
        (0.5, "p50"),
        (0.9, "p90"),
        (0.95, "p95"),
        (0.99, "p99"),
        (0.999, "p99.9"),
        (0.9999, "max"),
    ] {
        let x = xp(q);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{:.1}\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
            top + ph,
            top + ph + 14.0
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{:.1}\"/>\
<line class=\"axis\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        top + ph,
        left + pw,
        top + ph,
        top + ph,
        left + pw / 2.0,
        ht - 4.0
    );
    for (pts, line, dot, who) in [(&b, "b", "bp", "baseline"), (&c, "c", "cp", "candidate")] {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(q, v)| format!("{:.1},{:.1}", xp(*q), yp(*v as f64)))
            .collect();
        let _ = write!(
            s,
            "<polyline class=\"{line}\" points=\"{}\"/>",
            path.join(" ")
        );
        for (q, v) in pts.iter() {
            let _ = write!(
                s,
                "<circle class=\"{dot}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{who} {}: {}</title></circle>",
                xp(*q),
                yp(*v as f64),
                if *q >= 0.9999 {
                    "max".to_owned()
                } else {
                    format!("p{}", q * 100.0)
                },
                escape(&fmt_us(*v))
            );
        }
    }
    s.push_str("</svg>");
    s
}

pub(super) fn latency_plots(h: &mut String, o: &DiffOutcome) {
    h.push_str(
        "<h2>Latency percentiles</h2>\n<div class=\"legend\"><span><i style=\"background:var(--base)\"></i>baseline</span>\
<span><i style=\"background:var(--cand)\"></i>candidate (dashed)</span>\
<span class=\"muted\">x: percentile (p50 … p99.9, max) on a log scale of nines; y: latency, log scale. \
Percentiles with too few samples are not drawn.</span></div>\n<div class=\"plots\">\n",
    );
    let _ = writeln!(
        h,
        "<div class=\"plot\"><h3>all routes (n = {})</h3>{}</div>",
        thousands(o.overall_latency.baseline.count),
        percentile_svg(&o.overall_latency, "all routes")
    );
    for r in o.routes.iter().take(MAX_PLOTTED_ROUTES) {
        let _ = writeln!(
            h,
            "<div class=\"plot\"><h3><span class=\"badge {}\">{}</span> <code>{}</code> (n = {})</h3>{}</div>",
            verdict_class(r.verdict),
            r.verdict.as_str(),
            escape(&r.route),
            thousands(r.paired),
            percentile_svg(&r.latency, &r.route)
        );
    }
    h.push_str("</div>\n");
    if o.routes.len() > MAX_PLOTTED_ROUTES {
        let _ = writeln!(
            h,
            "<p class=\"muted\">{} more routes not plotted (see verdict.json).</p>",
            o.routes.len() - MAX_PLOTTED_ROUTES
        );
    }
}
