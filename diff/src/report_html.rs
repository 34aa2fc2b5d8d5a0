//! `report.html`: the verdict for people, in one self-contained file.
//!
//! Invariants: the page loads nothing (no scripts, no stylesheets, fonts or images from
//! anywhere; a `Content-Security-Policy` meta tag forbids it too), every piece of text that came
//! from traffic or configuration is HTML-escaped, and the plots are inline SVG drawn from the
//! percentiles in the [`DiffOutcome`] (HDR histograms, 3 significant digits), so the page
//! says exactly what `verdict.json` says. Sizes are bounded like `report.md`'s: at most
//! [`MAX_PLOTTED_ROUTES`] plots, [`MAX_EXAMPLES`] worked examples, [`MAX_DIFF_ROUTES`] routes of
//! differences with 30 paths each.

use std::fmt::Write as _;

use crate::fmt::{fmt_pct, fmt_us};
use crate::outcome::*;
use crate::report::{LOW_N_LEGEND, LOW_N_MARK, rfc3339_us, thousands};

mod plots;

use plots::latency_plots;

/// At most this many per-route latency plots.
pub(crate) const MAX_PLOTTED_ROUTES: usize = 40;
/// At most this many worked examples (side-by-side responses).
pub(crate) const MAX_EXAMPLES: usize = 12;
/// At most this many routes in the differences section.
pub(crate) const MAX_DIFF_ROUTES: usize = 100;
/// Response excerpts longer than this many characters are cut.
const MAX_EXCERPT_CHARS: usize = 6000;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Marginal => "marginal",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn class_class(c: Classification) -> &'static str {
    match c {
        Classification::Pass | Classification::Low => "pass",
        Classification::High => "fail",
        Classification::Nodata | Classification::Error => "inconclusive",
    }
}

const CSS: &str = r#"
:root{--pass:#1a7f37;--marginal:#9a6700;--fail:#cf222e;--inconclusive:#8250df;--base:#0969da;--cand:#d1242f;--muted:#57606a;--line:#d0d7de;--bg2:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;margin:0;padding:0 24px 40px;max-width:1400px}
h1{font-size:20px;margin:0}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--bg2);border:1px solid var(--line);border-radius:6px;padding:8px;margin:0;overflow:auto;white-space:pre-wrap;word-break:break-all;max-height:420px}
.banner{margin:0 -24px 16px;padding:18px 24px;color:#fff;display:flex;gap:24px;align-items:center;flex-wrap:wrap}
.banner.pass{background:var(--pass)}.banner.marginal{background:var(--marginal)}.banner.fail{background:var(--fail)}.banner.inconclusive{background:var(--inconclusive)}
.banner .verdict{font-size:34px;font-weight:700;letter-spacing:1px}
.banner .facts{display:flex;gap:18px;flex-wrap:wrap;margin-top:4px;opacity:.95}
.banner .rollback{font-weight:700;border:2px solid #fff;border-radius:6px;padding:2px 8px}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;white-space:nowrap}
.badge.pass{background:var(--pass)}.badge.marginal{background:var(--marginal)}.badge.fail{background:var(--fail)}.badge.inconclusive{background:var(--inconclusive)}
ul.reasons li{margin:3px 0}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg2);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.regression td{background:#ffebe9}
.worse{color:var(--fail);font-weight:600}.better{color:var(--pass)}
.muted{color:var(--muted)}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px}
.plot{border:1px solid var(--line);border-radius:6px;padding:8px}
.plot h3{margin:0 0 4px;font-size:13px;word-break:break-all}
svg{width:100%;height:auto}svg text{font:11px sans-serif;fill:#57606a}
svg .b{stroke:var(--base);fill:none;stroke-width:2}svg .c{stroke:var(--cand);fill:none;stroke-width:2;stroke-dasharray:6 3}
svg .bp{fill:var(--base)}svg .cp{fill:var(--cand)}svg .grid{stroke:#eaeef2}svg .axis{stroke:#8c959f}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.side{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.side h4{margin:4px 0;font-size:13px}
pre .del{background:#ffd7d5;display:block}pre .ins{background:#ccffd8;display:block}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dl.kv dt{color:var(--muted)}dl.kv dd{margin:0}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"#;

/// `report.html`: a self-contained page with the verdict banner, the route table, latency
/// percentile plots (baseline vs candidate), the differences and side-by-side examples.
pub(crate) fn html(o: &DiffOutcome) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>tapedeck {}: {}</title><style>{CSS}</style></head><body>\n",
        escape(o.verdict.as_str()),
        escape(&o.title)
    );
    banner(&mut h, o);
    traffic(&mut h, o);
    corpus(&mut h, o);
    dependencies(&mut h, o);
    chaos(&mut h, o);
    routes_table(&mut h, o);
    latency_plots(&mut h, o);
    differences(&mut h, o);
    examples(&mut h, o);
    noise_candidates(&mut h, o);
    let _ = write!(
        h,
        "<footer>Generated by tapedeck {} at {} · run <code>{}</code> · verdict schema v{} · \
         the same data as <code>verdict.json</code>.</footer>\n</body></html>\n",
        escape(&o.tool_version),
        escape(&o.generated_at),
        escape(&o.run_id),
        o.schema_version
    );
    h
}

fn banner(h: &mut String, o: &DiffOutcome) {
    let _ = writeln!(
        h,
        "<header class=\"banner {cls}\" id=\"verdict\"><div class=\"verdict\">{v}</div>\
<div><h1>{title}</h1><div class=\"facts\">{rb}<span>score: {score}</span>\
<span>exit code {code}</span><span>{base} ({bv}) → {cand} ({cv})</span></div></div></header>",
        cls = verdict_class(o.verdict),
        v = escape(&o.verdict.as_str().to_uppercase()),
        title = escape(&o.title),
        rb = if o.rollback {
            "<span class=\"rollback\">ROLL BACK</span>"
        } else {
            "<span>rollback: no</span>"
        },
        score = o
            .score
            .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.0}/100")),
        code = o.exit_code,
        base = escape(&o.baseline),
        bv = escape(&o.baseline_version),
        cand = escape(&o.candidate),
        cv = escape(&o.candidate_version),
    );
    if let Some(line) = crate::report::early_stop_line(o) {
        let _ = writeln!(h, "<p class=\"muted\">{}</p>", escape(&line));
    }
    if let Some(line) = crate::corpus::corpus_line(o) {
        let _ = writeln!(h, "<p class=\"muted\">{}</p>", escape(&line));
    }
    if !o.reasons.is_empty() {
        h.push_str("<ul class=\"reasons\">\n");
        for r in o.reasons.iter().take(40) {
            let _ = writeln!(h, "<li>{}</li>", escape(r));
        }
        if o.reasons.len() > 40 {
            let _ = writeln!(
                h,
                "<li class=\"muted\">… {} more in verdict.json</li>",
                o.reasons.len() - 40
            );
        }
        h.push_str("</ul>\n");
    }
}

fn traffic(h: &mut String, o: &DiffOutcome) {
    let c = &o.counts;
    let window = o.window_us.map_or_else(
        || "no paired traffic".to_owned(),
        |(a, b)| format!("{} … {}", rfc3339_us(a), rfc3339_us(b)),
    );
    let _ = writeln!(
        h,
        "<h2>Traffic</h2><dl class=\"kv\">\
<dt>run</dt><dd><code>{}</code></dd><dt>window</dt><dd>{}</dd>\
<dt>rows</dt><dd>{}</dd><dt>paired</dt><dd>{} (with noise target: {})</dd>\
<dt>unpaired</dt><dd>baseline only {}, candidate only {}, not replayed {}</dd>\
<dt>ignored findings</dt><dd>{}</dd>{}</dl>",
        escape(&o.run_id),
        escape(&window),
        thousands(c.rows),
        thousands(c.paired),
        thousands(c.with_noise),
        thousands(c.baseline_only),
        thousands(c.candidate_only),
        thousands(c.not_replayed),
        thousands(c.ignored_findings),
        o.noise
            .as_ref()
            .map(|n| format!("<dt>noise target</dt><dd>{}</dd>", escape(n)))
            .unwrap_or_default()
    );
}

fn delta_cell(base: &Percentiles, cand: &Percentiles, label: &str) -> String {
    let (b, c) = (
        base.shown(label).filter(|(_, low)| !low).map(|(v, _)| v),
        cand.shown(label).filter(|(_, low)| !low).map(|(v, _)| v),
    );
    match (b, c) {
        (Some(b), Some(c)) if b > 0 => {
            let change = c as f64 / b as f64 - 1.0;
            let cls = if change > 0.2 {
                "worse"
            } else if change < -0.2 {
                "better"
            } else {
                "muted"
            };
            format!(
                "{} → {} <span class=\"{cls}\">({})</span>",
                fmt_us(b),
                fmt_us(c),
                escape(&fmt_pct(change))
            )
        }
        _ => format!("{} → {}", shown_us(base, label), shown_us(cand, label)),
    }
}

/// A percentile cell: the value, a muted `~value` for a low-n estimate, or a muted `nodata`.
fn shown_us(p: &Percentiles, label: &str) -> String {
    match p.shown(label) {
        Some((v, false)) => fmt_us(v),
        Some((v, true)) => format!(
            "<span class=\"muted\" title=\"{}\">{}{}</span>",
            escape(LOW_N_LEGEND),
            LOW_N_MARK,
            fmt_us(v)
        ),
        None => "<span class=\"muted\">nodata</span>".to_owned(),
    }
}

fn routes_table(h: &mut String, o: &DiffOutcome) {
    h.push_str("<h2>Routes</h2>\n");
    if o.routes.is_empty() {
        h.push_str("<p class=\"muted\">No routes were paired.</p>\n");
        return;
    }
    h.push_str(
        "<table><thead><tr><th>route</th><th>verdict</th><th>score</th><th>n</th>\
<th>p50 base → cand</th><th>p95 base → cand</th><th>p99 base → cand</th>\
<th>errors base → cand</th><th>checks</th><th>regressed paths</th></tr></thead><tbody>\n",
    );
    for r in o.routes.iter().take(500) {
        let l = &r.latency;
        let checks: Vec<String> = r
            .checks
            .iter()
            .map(|c| {
                format!(
                    "<span class=\"badge {}\" title=\"{}\">{}: {}</span>",
                    class_class(c.classification),
                    escape(&c.reason),
                    escape(c.name.as_str()),
                    c.classification.as_str()
                )
            })
            .collect();
        let regress = r
            .paths
            .iter()
            .filter(|p| p.status == PathStatus::Regression)
            .count();
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td><span class=\"badge {}\">{}</span></td>\
<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
<td class=\"num\">{}</td><td class=\"num\">{} → {}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&r.route),
            verdict_class(r.verdict),
            r.verdict.as_str(),
            r.score
                .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.0}")),
            thousands(r.paired),
            delta_cell(&l.baseline, &l.candidate, "p50"),
            delta_cell(&l.baseline, &l.candidate, "p95"),
            delta_cell(&l.baseline, &l.candidate, "p99"),
            r.errors.baseline,
            r.errors.candidate,
            checks.join(" "),
            regress
        );
    }
    if o.routes.len() > 500 {
        let _ = writeln!(
            h,
            "<tr><td colspan=\"10\" class=\"muted\">… {} more routes in verdict.json</td></tr>",
            o.routes.len() - 500
        );
    }
    h.push_str("</tbody></table>\n");
    // Check reasons, for routes that did not pass.
    for r in o
        .routes
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .take(50)
    {
        let _ = write!(h, "<h3><code>{}</code></h3><ul>", escape(&r.route));
        for c in &r.checks {
            let _ = write!(
                h,
                "<li><span class=\"badge {}\">{}: {}</span> {}</li>",
                class_class(c.classification),
                escape(c.name.as_str()),
                c.classification.as_str(),
                escape(&c.reason)
            );
        }
        h.push_str("</ul>\n");
    }
}

fn differences(h: &mut String, o: &DiffOutcome) {
    h.push_str("<h2>Differences by route and path</h2>\n");
    let mut any = false;
    let mut routes_shown = 0;
    for r in &o.routes {
        if routes_shown >= MAX_DIFF_ROUTES {
            let _ = writeln!(
                h,
                "<p class=\"muted\">More routes with differences in verdict.json (showing {MAX_DIFF_ROUTES}).</p>"
            );
            break;
        }
        let shown: Vec<&PathReport> = r
            .paths
            .iter()
            .filter(|p| p.status != PathStatus::BelowThreshold)
            .take(30)
            .collect();
        if shown.is_empty() {
            continue;
        }
        any = true;
        routes_shown += 1;
        let _ = writeln!(
            h,
            "<h3><code>{}</code></h3><table><thead><tr><th>path</th><th>kind</th><th>rate</th>\
<th>noise rate</th><th>judged</th></tr></thead><tbody>",
            escape(&r.route)
        );
        for p in shown {
            let judged = match p.status {
                PathStatus::Regression => "<span class=\"badge fail\">regression</span>",
                PathStatus::Noise => "noise",
                PathStatus::NoiseCandidate => "noise candidate",
                PathStatus::BelowThreshold => "below threshold",
            };
            let noise = p.noise_rate.map_or_else(
                || {
                    p.volatile
                        .map_or_else(|| "–".to_owned(), |v| format!("looks like {}", v.as_str()))
                },
                |n| format!("{:.2} %", n * 100.0),
            );
            let _ = writeln!(
                h,
                "<tr class=\"{}\"><td><code>{}</code></td><td>{}</td><td class=\"num\">{:.2} % ({})</td>\
<td class=\"num\">{}</td><td>{judged}</td></tr>",
                if p.status == PathStatus::Regression {
                    "regression"
                } else {
                    ""
                },
                escape(&p.path),
                escape(&p.kind),
                p.raw_rate * 100.0,
                thousands(p.raw_count),
                escape(&noise)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    if !any {
        h.push_str("<p>No response differences.</p>\n");
    }
}

/// Splits `HTTP 200\n{json}` into the status line and the body, pretty-printing JSON bodies.
fn pretty_excerpt(text: &str) -> String {
    let (head, body) = match text.split_once('\n') {
        Some((h, b)) if h.starts_with("HTTP ") => (Some(h), b),
        _ => (None, text),
    };
    let body = match serde_json::from_str::<serde_json::Value>(body.trim()) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_owned()),
        Err(_) => body.to_owned(),
    };
    let mut out = match head {
        Some(h) => format!("{h}\n{body}"),
        None => body,
    };
    if out.chars().count() > MAX_EXCERPT_CHARS {
        out = out.chars().take(MAX_EXCERPT_CHARS).collect();
        out.push_str("\n… (cut)");
    }
    out
}

/// Both excerpts as escaped `<pre>` contents, lines only on one side highlighted.
fn side_by_side(baseline: &str, candidate: &str) -> (String, String) {
    let (a, b) = (pretty_excerpt(baseline), pretty_excerpt(candidate));
    let diff = similar::TextDiff::from_lines(&a, &b);
    let (mut left, mut right) = (String::new(), String::new());
    for change in diff.iter_all_changes() {
        let line = escape(change.value().trim_end_matches('\n'));
        match change.tag() {
            similar::ChangeTag::Equal => {
                let _ = writeln!(left, "{line}");
                let _ = writeln!(right, "{line}");
            }
            similar::ChangeTag::Delete => {
                let _ = write!(left, "<span class=\"del\">{line}</span>");
            }
            similar::ChangeTag::Insert => {
                let _ = write!(right, "<span class=\"ins\">{line}</span>");
            }
        }
    }
    (left, right)
}

fn examples(h: &mut String, o: &DiffOutcome) {
    let mut seen = std::collections::HashSet::new();
    let mut shown = 0;
    for r in &o.routes {
        for p in r
            .paths
            .iter()
            .filter(|p| p.status == PathStatus::Regression)
        {
            let Some(e) = &p.example else { continue };
            if shown >= MAX_EXAMPLES {
                let _ = writeln!(
                    h,
                    "<p class=\"muted\">More examples in verdict.json (showing {MAX_EXAMPLES}).</p>"
                );
                return;
            }
            if shown == 0 {
                h.push_str("<h2>Examples</h2>\n");
            }
            shown += 1;
            let _ = write!(
                h,
                "<h3><code>{}</code> — <code>{}</code> ({})</h3>",
                escape(&r.route),
                escape(&p.path),
                escape(&p.kind)
            );
            let _ = write!(
                h,
                "<p>At <code>{}</code>: baseline {} → candidate {}</p>",
                escape(&p.path),
                value_or_absent(&e.baseline_value),
                value_or_absent(&e.candidate_value)
            );
            // The same request appears for several paths: show it and its bodies once.
            if !seen.insert(e.origin_id.clone()) {
                h.push_str("<p class=\"muted\">(same exchange as above)</p>\n");
                continue;
            }
            let _ = write!(
                h,
                "<p class=\"muted\">Request (origin <code>{}</code>):</p><pre>{}</pre>",
                escape(&e.origin_id),
                escape(&e.curl)
            );
            let (left, right) = side_by_side(&e.baseline_response, &e.candidate_response);
            let _ = write!(
                h,
                "<div class=\"side\"><div><h4>Baseline ({})</h4><pre>{left}</pre></div>\
<div><h4>Candidate ({})</h4><pre>{right}</pre></div></div>\n\
<p class=\"muted\">Highlighted: lines that differ between the two responses, noise included \
(see the table above for what was judged).</p>\n",
                escape(&o.baseline),
                escape(&o.candidate)
            );
        }
    }
}

fn value_or_absent(v: &str) -> String {
    if v.is_empty() {
        "<span class=\"muted\">(absent)</span>".to_owned()
    } else {
        format!("<code>{}</code>", escape(&truncate(v, 300)))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn corpus(h: &mut String, o: &DiffOutcome) {
    let Some(c) = &o.corpus else {
        return;
    };
    let _ = writeln!(
        h,
        "<h2>Regression corpus</h2><p><code>{}</code>: {} entr{} replayed before the tape, {} \
request(s) per target; the corpus phase: <span class=\"badge {}\">{}</span> (run <code>{}</code>).</p>",
        escape(&c.dir),
        c.entries,
        if c.entries == 1 { "y" } else { "ies" },
        c.requests,
        verdict_class(c.verdict),
        escape(c.verdict.as_str()),
        escape(&c.run)
    );
    if c.hits.is_empty() {
        h.push_str("<p class=\"muted\">No known regression reappeared.</p>\n");
        return;
    }
    h.push_str(
        "<table><thead><tr><th>known regression reappeared</th><th>failed checks</th>\
<th>entries</th><th>ticket</th></tr></thead><tbody>\n",
    );
    for hit in &c.hits {
        let tickets = if hit.tickets.is_empty() {
            "unknown".to_owned()
        } else {
            hit.tickets
                .iter()
                .map(|t| {
                    format!(
                        "<code>{}</code> {} <span class=\"muted\">({})</span>",
                        escape(crate::corpus::short(&t.fingerprint)),
                        escape(&t.title),
                        escape(&t.dir)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{tickets}</td></tr>",
            escape(&hit.route),
            escape(&crate::checks::CheckName::join(&hit.checks)),
            hit.entries
        );
    }
    h.push_str("</tbody></table>\n");
}

fn dependencies(h: &mut String, o: &DiffOutcome) {
    let Some(d) = &o.dependencies else {
        return;
    };
    h.push_str("<h2>Dependencies</h2>\n<ul>\n");
    for s in &d.dependencies {
        let _ = writeln!(
            h,
            "<li><code>{}</code>: {} recorded call(s); the mock got {} call(s), {} of them the candidate's ({})</li>",
            escape(&s.name),
            s.recorded_calls,
            s.calls,
            s.candidate_calls,
            if s.attribution == "untagged" {
                "no call carried a tracestate lane: all counted as the candidate's"
            } else {
                "told apart by tracestate"
            }
        );
    }
    h.push_str("</ul>\n");
    if d.routes.is_empty() {
        h.push_str("<p class=\"muted\">No dependency call was linked to a replayed request.</p>\n");
        return;
    }
    h.push_str(
        "<table><thead><tr><th>route</th><th>dependency call</th><th>status</th><th>recorded</th>\
<th>made</th><th>new</th><th>no longer made</th><th>misses</th><th>changed requests</th>\
<th>changed at</th></tr></thead><tbody>\n",
    );
    for r in d.routes.iter().take(200) {
        for c in &r.calls {
            let class = if c.status == crate::deps::CallStatus::Unchanged {
                "pass"
            } else {
                "marginal"
            };
            let paths: Vec<String> = c
                .changed_paths
                .iter()
                .take(3)
                .map(|(p, n)| format!("<code>{}</code> ({n})", escape(p)))
                .collect();
            let example = c.example.as_ref().map_or_else(String::new, |e| {
                format!(
                    " <span class=\"muted\">e.g. {} → {} (trace <code>{}</code>)</span>",
                    value_or_absent(e.recorded.as_deref().unwrap_or("")),
                    value_or_absent(e.candidate.as_deref().unwrap_or("")),
                    escape(&e.trace_id)
                )
            });
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code> ({} traces)</td><td><code>{}</code> <code>{}</code></td>\
<td><span class=\"badge {class}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}{example}</td></tr>",
                escape(&r.route),
                r.traces,
                escape(&c.dependency),
                escape(&c.call),
                c.status.as_str(),
                c.recorded,
                c.made,
                c.new_calls,
                c.missing_calls,
                c.misses,
                c.changed_requests,
                paths.join(", ")
            );
        }
    }
    h.push_str("</tbody></table>\n");
}

fn chaos(h: &mut String, o: &DiffOutcome) {
    let Some(c) = &o.chaos else {
        return;
    };
    let _ = writeln!(
        h,
        "<h2>Chaos: the candidate with failing dependencies</h2>\n<p>{} request(s) replayed to the candidate with faults ({} untouched by any fault, {} without a fault-free answer).</p>",
        c.requests, c.unaffected, c.unpaired
    );
    h.push_str(
        "<table><thead><tr><th>fault</th><th>effect</th><th>outcome</th><th>calls faulted</th>\
<th>requests affected</th><th>graceful</th><th>5xx introduced</th><th>timeouts</th>\
<th>slower than the fault</th><th>examples</th></tr></thead><tbody>\n",
    );
    for f in &c.faults {
        let class = match f.outcome.as_str() {
            "graceful" => "pass",
            "degraded" => "fail",
            _ => "inconclusive",
        };
        let examples: Vec<String> = f
            .examples
            .iter()
            .map(|e| {
                format!(
                    "<code>{}</code>: {} → {}",
                    escape(&e.route),
                    escape(&e.fault_free),
                    escape(&e.with_fault)
                )
            })
            .collect();
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td><span class=\"badge {class}\">{}</span></td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.fault),
            escape(&f.effect),
            escape(&f.outcome),
            f.injected,
            f.requests,
            f.graceful,
            f.server_errors,
            f.timeouts,
            f.slower_than_fault,
            examples.join("<br>")
        );
    }
    h.push_str("</tbody></table>\n");
}

fn noise_candidates(h: &mut String, o: &DiffOutcome) {
    if o.noise_candidates.is_empty() {
        return;
    }
    h.push_str("<h2>Noise candidates (not regressions)</h2><ul>\n");
    for n in o.noise_candidates.iter().take(50) {
        let _ = writeln!(
            h,
            "<li><code>{}</code> <code>{}</code>: looks like {} ({:.1} %)</li>",
            escape(&n.route),
            escape(&n.path),
            n.volatile.as_str(),
            n.rate * 100.0
        );
    }
    h.push_str("</ul>\n");
}

#[cfg(test)]
mod tests;
