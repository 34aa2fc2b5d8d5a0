//! `report.gha.md`: the verdict as a GitHub Actions job summary — short GitHub-flavoured
//! Markdown a workflow appends to `$GITHUB_STEP_SUMMARY`:
//!
//! ```sh
//! tapedeck check ... --report ./report || status=$?
//! cat ./report/report.gha.md >> "$GITHUB_STEP_SUMMARY"
//! ```
//!
//! One heading with the verdict and the rollback decision, the early-stop and corpus lines, the
//! routes that did not pass (at most [`MAX_ROUTES`]), and the reasons folded in a `<details>`.
//! Everything that comes from traffic is escaped: route keys go in code spans, text has its
//! Markdown and HTML characters escaped.

use std::fmt::Write;

use crate::outcome::{Classification, DiffOutcome, Verdict};
use crate::report::fmt_percentile;

/// Routes listed at most (failing first, as `routes` is ordered); the rest are counted.
pub(crate) const MAX_ROUTES: usize = 20;
/// Reasons listed at most.
const MAX_REASONS: usize = 30;

fn icon(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "✅",
        Verdict::Marginal => "⚠️",
        Verdict::Fail => "❌",
        Verdict::Inconclusive => "❔",
    }
}

/// Escapes text for a Markdown table cell or list item: Markdown punctuation, HTML and pipes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A code span that holds any text: a fence longer than the longest backtick run inside.
fn code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ").replace('|', "\\|");
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    format!("{fence} {s} {fence}")
}

/// The job summary.
pub(crate) fn job_summary(o: &DiffOutcome) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {} tapedeck: {}{}\n",
        icon(o.verdict),
        o.verdict.as_str().to_uppercase(),
        if o.rollback { " — roll back" } else { "" }
    );
    let _ = writeln!(md, "**{}**\n", esc(&o.title));
    let _ = writeln!(
        md,
        "score {} · {} paired requests · {} routes · {} ({}) → {} ({}) · exit code {}\n",
        o.score
            .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.0}/100")),
        o.counts.paired,
        o.routes.len(),
        esc(&o.baseline),
        esc(&o.baseline_version),
        esc(&o.candidate),
        esc(&o.candidate_version),
        o.exit_code
    );
    for line in [
        crate::report::early_stop_line(o),
        crate::corpus::corpus_line(o),
    ]
    .into_iter()
    .flatten()
    {
        let _ = writeln!(md, "> {}\n", esc(&line));
    }
    let shown: Vec<_> = o
        .routes
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .collect();
    if shown.is_empty() {
        let _ = writeln!(md, "All {} route(s) pass.\n", o.routes.len());
    } else {
        let _ = writeln!(
            md,
            "| | route | n | p95 baseline → candidate | failed checks |\n|---|---|---:|---|---|"
        );
        for r in shown.iter().take(MAX_ROUTES) {
            let failed: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| c.classification == Classification::High)
                .map(|c| c.name.as_str())
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} → {} | {} |",
                icon(r.verdict),
                code(&r.route),
                r.paired,
                fmt_percentile(&r.latency.baseline, "p95"),
                fmt_percentile(&r.latency.candidate, "p95"),
                esc(&failed.join(", "))
            );
        }
        if shown.len() > MAX_ROUTES {
            let _ = writeln!(
                md,
                "\n… {} more route(s) that did not pass: see report.md.",
                shown.len() - MAX_ROUTES
            );
        }
        md.push('\n');
    }
    if !o.reasons.is_empty() {
        md.push_str("<details><summary>Why</summary>\n\n");
        for r in o.reasons.iter().take(MAX_REASONS) {
            let _ = writeln!(md, "- {}", esc(r));
        }
        if o.reasons.len() > MAX_REASONS {
            let _ = writeln!(
                md,
                "- … {} more in verdict.json",
                o.reasons.len() - MAX_REASONS
            );
        }
        md.push_str("\n</details>\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiffOptions, Differ, RulesFile};
    use bytes::Bytes;
    use tapedeck_storage::{Exchange, Header};

    fn row(origin: u128, target: &str, path: &str, body: &str, total_us: i64) -> Exchange {
        Exchange {
            method: "GET".into(),
            path: path.into(),
            status: Some(200),
            total_us: Some(total_us),
            resp_headers: vec![Header::new("content-type", "application/json")],
            resp_body: Bytes::from(body.to_owned()),
            origin_id: Some(uuid::Uuid::from_u128(origin)),
            target: Some(target.into()),
            ..Exchange::default()
        }
    }

    #[test]
    fn a_failing_route_is_listed_escaped_and_passing_ones_are_not() {
        let rows: Vec<Exchange> = (0..120u128)
            .flat_map(|i| {
                let good = r#"{"name":"a"}"#;
                let path = if i % 2 == 0 { "/ok" } else { "/a|b`<x>" };
                let changed = if i % 2 == 0 { good } else { r#"{"name":"b"}"# };
                [
                    row(i, "baseline", path, good, 10_000),
                    row(i, "candidate", path, changed, 10_000),
                ]
            })
            .collect();
        let config = DiffOptions::new("/mem")
            .validate_with(RulesFile::default())
            .expect("valid");
        let o = Differ::new(config).run_exchanges(rows).expect("judged");
        assert_eq!(o.verdict, Verdict::Fail);
        let md = job_summary(&o);
        assert!(md.starts_with("### ❌ tapedeck: FAIL — roll back"), "{md}");
        // The failing route, in a code span whose pipe cannot end the table cell.
        assert!(md.contains("`` GET /a\\|b`<x> ``"), "{md}");
        assert!(!md.contains("GET /ok"), "{md}");
        assert!(md.contains("| responses |"), "{md}");
        assert!(md.contains("<details><summary>Why</summary>"), "{md}");
    }

    #[test]
    fn escapes_markdown_and_html() {
        assert_eq!(
            esc("a|b <i>*x*</i>\nc"),
            "a\\|b &lt;i&gt;\\*x\\*&lt;/i&gt; c"
        );
        assert_eq!(code("a`b"), "`` a`b ``");
    }
}
