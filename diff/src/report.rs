//! Reports: `verdict.json` (schema in `docs/verdict.md`), `report.md` (a bug ticket, at most
//! [`MAX_REPORT_CHARS`]), `junit.xml` (one testcase per route check), `report.html`
//! (`report_html.rs`), the terminal summary, and the learned rules file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tapedeck_common::format;

use crate::checks::CheckName;
use crate::config::IgnoreRule;
use crate::error::DiffError;
use crate::fmt::{fmt_pct, fmt_us};
use crate::outcome::*;

mod markdown;

pub use markdown::markdown;

/// `report.md` never exceeds this many characters (GitHub's issue body limit is 65,536).
pub const MAX_REPORT_CHARS: usize = 65_000;

/// Request headers whose values never appear in a report.
pub use tapedeck_storage::SENSITIVE_HEADERS;

pub use tapedeck_common::format::thousands;

/// RFC 3339 (UTC, whole seconds) of a time in µs since the epoch.
pub fn rfc3339_us(us: i64) -> String {
    format::rfc3339(us, format::Precision::Seconds)
}

pub use tapedeck_common::format::rfc3339_now;

/// Marks a percentile estimated from too few samples above it ([`Percentiles::low_n`]).
pub const LOW_N_MARK: &str = "~";

/// Explains [`LOW_N_MARK`] under a table or summary that shows one.
pub const LOW_N_LEGEND: &str = "~ estimated from few samples above that percentile (fewer than 40 for p95): not used by the checks";

/// Percentile `label` of `p` for people: `9.6 ms`, `~9.6 ms` (a low-n estimate) or `nodata`.
pub fn fmt_percentile(p: &Percentiles, label: &str) -> String {
    match p.shown(label) {
        Some((v, false)) => fmt_us(v),
        Some((v, true)) => format!("{LOW_N_MARK}{}", fmt_us(v)),
        None => "nodata".to_owned(),
    }
}

/// Whether any of these routes' percentiles `labels` is shown as a low-n estimate.
fn any_low_n<'a>(mut routes: impl Iterator<Item = &'a RouteReport>, labels: &[&str]) -> bool {
    routes.any(|r| {
        [&r.latency.baseline, &r.latency.candidate].iter().any(|p| {
            labels
                .iter()
                .any(|l| p.shown(l).is_some_and(|(_, low)| low))
        })
    })
}

fn write_file(path: PathBuf, data: &[u8]) -> Result<(), DiffError> {
    std::fs::write(&path, data).map_err(|e| DiffError::Write { path, source: e })
}

/// One report file `write_reports` writes: its name, what it is served as, how it is made.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// File name in the report directory.
    pub file: &'static str,
    /// HTTP content type (`serve` answers with it).
    pub content_type: &'static str,
    /// What it is for, in a few words.
    pub about: &'static str,
    render: fn(&DiffOutcome) -> Vec<u8>,
}

impl Report {
    /// The file's contents for `outcome`.
    pub fn render(&self, outcome: &DiffOutcome) -> Vec<u8> {
        (self.render)(outcome)
    }
}

/// Every report file, in the order they are written and listed. A new format is one entry here:
/// `write_reports`, the CLI's "reports:" lines and `serve`'s report endpoints read this list.
pub const REPORTS: &[Report] = &[
    Report {
        file: "verdict.json",
        content_type: "application/json",
        about: "the verdict for machines (docs/verdict.md)",
        // A tree of strings and numbers always serializes.
        render: |o| serde_json::to_vec_pretty(o).unwrap_or_default(),
    },
    Report {
        file: "report.md",
        content_type: "text/markdown; charset=utf-8",
        about: "the report as a bug ticket",
        render: |o| markdown(o).into_bytes(),
    },
    Report {
        file: "report.html",
        content_type: "text/html; charset=utf-8",
        about: "the report for a browser (self-contained)",
        render: |o| crate::report_html::html(o).into_bytes(),
    },
    Report {
        file: "junit.xml",
        content_type: "application/xml",
        about: "one testcase per route check, for CI",
        render: |o| junit(o).into_bytes(),
    },
    Report {
        file: "report.gha.md",
        content_type: "text/markdown; charset=utf-8",
        about: "a GitHub Actions job summary (append to $GITHUB_STEP_SUMMARY)",
        render: |o| crate::report_gha::job_summary(o).into_bytes(),
    },
];

/// The report file named `file`, if it is one of [`REPORTS`].
pub fn report(file: &str) -> Option<&'static Report> {
    REPORTS.iter().find(|r| r.file == file)
}

/// `verdict.json, report.md, …`: the files [`write_reports`] writes, for messages.
pub fn report_files() -> String {
    REPORTS
        .iter()
        .map(|r| r.file)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes every report of [`REPORTS`] into `dir` (created if needed).
pub fn write_reports(outcome: &DiffOutcome, dir: &Path) -> Result<(), DiffError> {
    std::fs::create_dir_all(dir).map_err(|e| DiffError::Write {
        path: dir.to_owned(),
        source: e,
    })?;
    for r in REPORTS {
        write_file(dir.join(r.file), &r.render(outcome))?;
    }
    Ok(())
}

/// The learned ignore rules as a rules file `--rules` accepts.
pub fn learned_rules_toml(outcome: &DiffOutcome) -> String {
    #[derive(serde::Serialize)]
    struct Learned<'a> {
        ignore: &'a [IgnoreRule],
    }
    let body = toml::to_string_pretty(&Learned {
        ignore: &outcome.learned_rules,
    })
    .unwrap_or_default();
    format!(
        "# Ignore rules learned by `tapedeck diff` from run {:?} ({} → {}).\n\
         # Review them: every rule here hides differences at that route and path.\n\
         # Use with `tapedeck diff --rules FILE`.\n\n{body}",
        outcome.run_id, outcome.baseline_version, outcome.candidate_version
    )
}

/// Writes [`learned_rules_toml`] to `path`.
pub fn write_learned_rules(outcome: &DiffOutcome, path: &Path) -> Result<(), DiffError> {
    write_file(path.to_owned(), learned_rules_toml(outcome).as_bytes())
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

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// `junit.xml`: one testcase per route check (classname = route); `high` is a failure, `nodata`
/// and `error` are skipped.
pub fn junit(o: &DiffOutcome) -> String {
    let cases: Vec<(&RouteReport, &Check)> = o
        .routes
        .iter()
        .flat_map(|r| r.checks.iter().map(move |c| (r, c)))
        .collect();
    let hits = o.corpus.as_ref().map_or(&[][..], |c| c.hits.as_slice());
    let failures = cases
        .iter()
        .filter(|(_, c)| c.classification == Classification::High)
        .count()
        + hits.len();
    let skipped = cases
        .iter()
        .filter(|(_, c)| {
            matches!(
                c.classification,
                Classification::Nodata | Classification::Error
            )
        })
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"tapedeck diff\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        cases.len() + hits.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" timestamp=\"{}\">",
        xml_escape(&o.title),
        cases.len() + hits.len(),
        xml_escape(&o.generated_at)
    );
    for h in hits {
        let from: Vec<String> = h
            .tickets
            .iter()
            .map(|t| format!("ticket {} {} ({})", t.fingerprint, t.title, t.dir))
            .collect();
        let message = format!(
            "known regression reappeared: {} failed {}",
            h.route,
            CheckName::join(&h.checks)
        );
        let _ = write!(
            x,
            "    <testcase classname=\"corpus\" name=\"{}\">\n      <failure message=\"{}\" type=\"known-regression\">{}</failure>\n    </testcase>\n",
            xml_escape(&h.route),
            xml_escape(&message),
            xml_escape(&from.join("\n"))
        );
    }
    for (r, c) in cases {
        let _ = write!(
            x,
            "    <testcase classname=\"{}\" name=\"{}\">",
            xml_escape(&r.route),
            xml_escape(c.name.as_str())
        );
        match c.classification {
            Classification::High => {
                let mut details = format!("{}\n", c.reason);
                if c.name == CheckName::Responses {
                    for p in r
                        .paths
                        .iter()
                        .filter(|p| p.status == PathStatus::Regression)
                        .take(20)
                    {
                        let _ = writeln!(
                            details,
                            "{} {}: rate {:.2} % noise {}",
                            p.path,
                            p.kind,
                            p.raw_rate * 100.0,
                            p.noise_rate
                                .map_or("n/a".to_owned(), |n| format!("{:.2} %", n * 100.0))
                        );
                    }
                }
                let _ = write!(
                    x,
                    "\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    ",
                    xml_escape(&c.reason),
                    if c.critical { "critical" } else { "regression" },
                    xml_escape(&details)
                );
            }
            Classification::Nodata | Classification::Error => {
                let _ = write!(
                    x,
                    "\n      <skipped message=\"{}\"/>\n    ",
                    xml_escape(&c.reason)
                );
            }
            Classification::Pass | Classification::Low => {}
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// A one-screen terminal summary; ANSI colors when `color`.
/// One line about a `--early-stop` run (`None` without it): where the replay stopped, how long
/// the verdict took and what the sequential tests decided.
pub fn early_stop_line(o: &DiffOutcome) -> Option<String> {
    let seq = o.sequential.as_ref()?;
    let sent = o
        .requests_sent
        .as_ref()
        .and_then(|m| m.values().max().copied())
        .unwrap_or(seq.origins);
    let when = if o.stopped_early == Some(true) {
        format!(
            "stopped early after {} requests per target",
            thousands(sent)
        )
    } else {
        format!("ran to the end ({} requests per target)", thousands(sent))
    };
    let took = o
        .time_to_verdict_ms
        .map(|ms| format!(", verdict in {:.1} s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let decided = match seq.crossed.first() {
        Some(c) => format!(
            "sequential fail: {} {}{} (e-value {} ≥ {})",
            c.route,
            c.check,
            c.path
                .as_deref()
                .map(|p| format!(" {p}"))
                .unwrap_or_default(),
            crate::fmt::fmt_e(c.e_value),
            crate::fmt::fmt_e(c.threshold)
        ),
        None => format!("sequential {}", seq.decision),
    };
    Some(format!(
        "early stop: {when}{took}; {decided}; α = {}",
        seq.alpha
    ))
}

pub fn summary(o: &DiffOutcome, color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let vcolor = |v: Verdict| match v {
        Verdict::Pass => "1;32",
        Verdict::Marginal => "1;33",
        Verdict::Fail => "1;31",
        Verdict::Inconclusive => "1;35",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {}",
        paint(
            vcolor(o.verdict),
            &format!("{:<12}", o.verdict.as_str().to_uppercase())
        ),
        o.title
    );
    let _ = writeln!(
        out,
        "rollback: {}   score: {}   paired: {}   routes: {}",
        if o.rollback {
            paint("1;31", "YES")
        } else {
            "no".to_owned()
        },
        o.score
            .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.0}")),
        thousands(o.counts.paired),
        o.routes.len()
    );
    if let Some(line) = early_stop_line(o) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(line) = crate::corpus::corpus_line(o) {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
    let limit = 12;
    for r in o.routes.iter().take(limit) {
        let l = &r.latency;
        let checks: Vec<String> = r
            .checks
            .iter()
            .filter(|c| c.weight > 0.0)
            .map(|c| {
                let s = format!("{}:{}", c.name, c.classification.as_str());
                match c.classification {
                    Classification::High => paint("31", &s),
                    Classification::Nodata | Classification::Error => paint("35", &s),
                    _ => s,
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "  {} {:<40} n={:<6} p95 {} → {}  {}",
            paint(vcolor(r.verdict), &format!("{:<12}", r.verdict.as_str())),
            truncate(&r.route, 40),
            r.paired,
            fmt_percentile(&l.baseline, "p95"),
            fmt_percentile(&l.candidate, "p95"),
            checks.join(" ")
        );
    }
    if o.routes.len() > limit {
        let _ = writeln!(
            out,
            "  … {} more routes (see report)",
            o.routes.len() - limit
        );
    }
    if any_low_n(o.routes.iter().take(limit), &["p95"]) {
        let _ = writeln!(out, "  {LOW_N_LEGEND}");
    }
    if let Some(c) = &o.chaos {
        let degraded = c.faults.iter().filter(|f| f.outcome == "degraded").count();
        let _ = writeln!(
            out,
            "  chaos: {} fault(s), {} degraded the candidate ({} requests replayed with faults)",
            c.faults.len(),
            if degraded > 0 {
                paint("1;33", &degraded.to_string())
            } else {
                "0".to_owned()
            },
            c.requests
        );
    }
    if let Some(d) = &o.dependencies {
        let calls: u64 = d.dependencies.iter().map(|s| s.candidate_calls).sum();
        let names: Vec<&str> = d.dependencies.iter().map(|s| s.name.as_str()).collect();
        let _ = writeln!(
            out,
            "  dependencies ({}): {} candidate call(s), {} changed dependency call(s)",
            names.join(", "),
            thousands(calls),
            if d.changes > 0 {
                paint("1;33", &d.changes.to_string())
            } else {
                "0".to_owned()
            }
        );
    }
    out.push('\n');
    for r in o.reasons.iter().take(8) {
        let _ = writeln!(out, "  • {}", truncate(r, 300));
    }
    if o.reasons.len() > 8 {
        let _ = writeln!(
            out,
            "  • … {} more reasons in the report",
            o.reasons.len() - 8
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_us(1_764_448_981_000_000), "2025-11-29T20:43:01Z");
        assert_eq!(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
