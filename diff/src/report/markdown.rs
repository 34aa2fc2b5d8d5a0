//! `report.md`: the run as a bug ticket — what failed with worked examples, the latency table,
//! the extra sections — never over [`MAX_REPORT_CHARS`] (long tables and examples are cut, with
//! a note, to fit).

use std::fmt::Write as _;

use super::*;

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn fence(s: &str) -> String {
    // A fence longer than any backtick run inside.
    let mut longest = 0;
    let mut run = 0;
    for ch in s.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn delta(b: Option<u64>, c: Option<u64>) -> String {
    match (b, c) {
        (Some(b), Some(c)) if b > 0 => fmt_pct(c as f64 / b as f64 - 1.0),
        _ => "–".to_owned(),
    }
}

/// `report.md`: a bug ticket, at most [`MAX_REPORT_CHARS`] characters.
/// The chaos section of report.md.
fn chaos_md(md: &mut String, c: &crate::chaos::ChaosReport) {
    let _ = writeln!(
        md,
        "## Chaos: the candidate with failing dependencies\n\n{} request(s) replayed to the candidate with faults ({} untouched by any fault, {} without a fault-free answer).\n\n| fault | effect | outcome | calls faulted | requests affected | graceful | 5xx introduced | timeouts | slower than the fault |\n|---|---|---|---:|---:|---:|---:|---:|---:|",
        c.requests, c.unaffected, c.unpaired
    );
    for f in &c.faults {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            md_escape(&f.fault),
            md_escape(&f.effect),
            if f.outcome == "degraded" {
                format!("**{}**", f.outcome)
            } else {
                f.outcome.clone()
            },
            f.injected,
            f.requests,
            f.graceful,
            f.server_errors,
            f.timeouts,
            f.slower_than_fault
        );
    }
    md.push('\n');
    for f in &c.faults {
        for e in &f.examples {
            let _ = writeln!(
                md,
                "- `{}` under `{}`: recorded `{}` answered {} without the fault, {} with it",
                md_escape(&e.route),
                md_escape(&f.fault),
                e.origin_id,
                e.fault_free,
                e.with_fault
            );
        }
    }
    md.push('\n');
}

/// The dependency section of report.md.
fn dependencies_md(md: &mut String, d: &crate::deps::DependencyReport) {
    let _ = writeln!(md, "## Dependencies\n");
    for s in &d.dependencies {
        let _ = writeln!(
            md,
            "- `{}`: {} recorded call(s); the mock got {} call(s) during the replay, {} of them the candidate's ({}{}{})",
            md_escape(&s.name),
            thousands(s.recorded_calls),
            thousands(s.calls),
            thousands(s.candidate_calls),
            if s.attribution == "untagged" {
                "no call carried a tracestate lane: all counted as the candidate's"
            } else {
                "told apart by tracestate"
            },
            if s.untraced_calls > 0 {
                format!(", {} without a trace id", s.untraced_calls)
            } else {
                String::new()
            },
            if s.unknown_trace_calls > 0 {
                format!(", {} of traces not replayed", s.unknown_trace_calls)
            } else {
                String::new()
            },
        );
    }
    md.push('\n');
    if d.routes.is_empty() {
        let _ = writeln!(md, "No dependency call was linked to a replayed request.\n");
        return;
    }
    let _ = writeln!(
        md,
        "{} changed dependency call(s).\n\n| route | dependency call | status | recorded | made | new | no longer made | misses | changed requests | changed at |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|",
        d.changes
    );
    for r in d.routes.iter().take(200) {
        for c in &r.calls {
            let _ = writeln!(
                md,
                "| `{}` ({} traces) | `{}` `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                md_escape(&r.route),
                r.traces,
                md_escape(&c.dependency),
                md_escape(&c.call),
                if c.status == crate::deps::CallStatus::Unchanged {
                    c.status.as_str().to_owned()
                } else {
                    format!("**{}**", c.status.as_str())
                },
                c.recorded,
                c.made,
                c.new_calls,
                c.missing_calls,
                c.misses,
                c.changed_requests,
                c.changed_paths
                    .iter()
                    .take(3)
                    .map(|(p, n)| format!("`{}` ({n})", md_escape(p)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    md.push('\n');
    for (r, c) in d.changed().take(10) {
        if let Some(e) = &c.example {
            let _ = writeln!(
                md,
                "- `{}` → `{}` `{}`: trace `{}`, recorded call `{}`: `{}` was {} and is {}",
                md_escape(&r.route),
                md_escape(&c.dependency),
                md_escape(&c.call),
                e.trace_id,
                e.recorded_id,
                md_escape(&e.path),
                e.recorded
                    .as_deref()
                    .map_or("absent".to_owned(), |v| format!(
                        "`{}`",
                        md_escape(&truncate(v, 200))
                    )),
                e.candidate
                    .as_deref()
                    .map_or("absent".to_owned(), |v| format!(
                        "`{}`",
                        md_escape(&truncate(v, 200))
                    )),
            );
        }
    }
    md.push('\n');
}

fn corpus_md(md: &mut String, c: &crate::corpus::CorpusReport) {
    let _ = writeln!(
        md,
        "## Regression corpus\n\n`{}`: {} entr{} replayed before the tape, {} request(s) per target; verdict of the corpus phase: **{}** (run `{}`).\n",
        md_escape(&c.dir),
        c.entries,
        if c.entries == 1 { "y" } else { "ies" },
        c.requests,
        c.verdict.as_str(),
        md_escape(&c.run)
    );
    if c.hits.is_empty() {
        let _ = writeln!(md, "No known regression reappeared.\n");
        return;
    }
    let _ = writeln!(
        md,
        "| known regression reappeared | failed checks | entries | ticket |\n|---|---|---:|---|"
    );
    for h in &c.hits {
        let tickets = if h.tickets.is_empty() {
            "unknown".to_owned()
        } else {
            h.tickets
                .iter()
                .map(|t| {
                    format!(
                        "`{}` {} (`{}`)",
                        crate::corpus::short(&t.fingerprint),
                        md_escape(&t.title),
                        md_escape(&t.dir)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {tickets} |",
            md_escape(&h.route),
            CheckName::join(&h.checks),
            h.entries
        );
    }
    md.push('\n');
}

pub fn markdown(o: &DiffOutcome) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", o.title);
    let _ = writeln!(
        md,
        "**Verdict: {}** — rollback: **{}** — score: {} — exit code {}\n",
        o.verdict.as_str().to_uppercase(),
        if o.rollback { "yes" } else { "no" },
        o.score
            .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.0}/100")),
        o.exit_code
    );
    if let Some(line) = early_stop_line(o) {
        let _ = writeln!(md, "{}\n", md_escape(&line));
    }
    if let Some(line) = crate::corpus::corpus_line(o) {
        let _ = writeln!(md, "{}\n", md_escape(&line));
    }
    for r in &o.reasons {
        let _ = writeln!(md, "- {r}");
    }
    md.push('\n');
    let _ = writeln!(md, "## Traffic\n");
    let window = o.window_us.map_or_else(
        || "no paired traffic".to_owned(),
        |(a, b)| format!("{} … {}", rfc3339_us(a), rfc3339_us(b)),
    );
    let c = &o.counts;
    let _ = writeln!(
        md,
        "- run `{}`: baseline `{}` ({}), candidate `{}` ({}){}\n- window: {window}\n- rows: {}, paired: {}, with noise: {}, baseline only: {}, candidate only: {}, not replayed: {}, ignored findings: {}\n",
        o.run_id,
        o.baseline,
        o.baseline_version,
        o.candidate,
        o.candidate_version,
        o.noise
            .as_ref()
            .map(|n| format!(", noise `{n}`"))
            .unwrap_or_default(),
        thousands(c.rows),
        thousands(c.paired),
        thousands(c.with_noise),
        c.baseline_only,
        c.candidate_only,
        c.not_replayed,
        c.ignored_findings
    );
    if let Some(d) = &o.dependencies {
        dependencies_md(&mut md, d);
    }
    if let Some(c) = &o.corpus {
        corpus_md(&mut md, c);
    }
    if let Some(c) = &o.chaos {
        chaos_md(&mut md, c);
    }
    let _ = writeln!(md, "## Routes\n");
    let _ = writeln!(
        md,
        "| route | verdict | n | p50 base → cand (Δ) | p95 base → cand (Δ) | p99 base → cand (Δ) | p95 ratio 95 % CI | HL shift (98 % CI) | errors base → cand | diffs |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for (rows_written, r) in o.routes.iter().enumerate() {
        if md.len() > MAX_REPORT_CHARS / 3 {
            let _ = writeln!(
                md,
                "| … {} more routes | | | | | | | | | |",
                o.routes.len() - rows_written
            );
            break;
        }
        let l = &r.latency;
        let p = |label: &str, b: Option<u64>, c: Option<u64>| {
            format!(
                "{} → {} ({})",
                fmt_percentile(&l.baseline, label),
                fmt_percentile(&l.candidate, label),
                delta(b, c)
            )
        };
        let ci95 = l.ratios.iter().find(|x| x.q == 0.95).map_or_else(
            || "nodata".to_owned(),
            |x| format!("{:.2}..{:.2}", x.ci_low, x.ci_high),
        );
        let hl = l.hodges_lehmann.map_or_else(
            || "nodata".to_owned(),
            |h| {
                format!(
                    "{:+.1} ms ({:+.1} .. {:+.1})",
                    h.shift / 1000.0,
                    h.ci_low / 1000.0,
                    h.ci_high / 1000.0
                )
            },
        );
        let regress = r
            .paths
            .iter()
            .filter(|p| p.status == PathStatus::Regression)
            .count();
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} → {} | {} |",
            md_escape(&r.route),
            r.verdict.as_str(),
            r.paired,
            p("p50", l.baseline.p50, l.candidate.p50),
            p("p95", l.baseline.p95, l.candidate.p95),
            p("p99", l.baseline.p99, l.candidate.p99),
            ci95,
            hl,
            r.errors.baseline,
            r.errors.candidate,
            regress
        );
    }
    if any_low_n(o.routes.iter(), &["p50", "p95", "p99"]) {
        let _ = writeln!(md, "\n{LOW_N_LEGEND}.");
    }
    md.push('\n');

    let _ = writeln!(md, "## Differences by route and path\n");
    let mut any = false;
    let mut examples = Vec::new();
    for r in &o.routes {
        let shown: Vec<&PathReport> = r
            .paths
            .iter()
            .filter(|p| {
                matches!(
                    p.status,
                    PathStatus::Regression | PathStatus::Noise | PathStatus::NoiseCandidate
                )
            })
            .take(30)
            .collect();
        if shown.is_empty() {
            continue;
        }
        any = true;
        let _ = writeln!(md, "### `{}`\n", md_escape(&r.route));
        let _ = writeln!(md, "| path | kind | rate | noise rate | judged |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for p in &shown {
            let _ = writeln!(
                md,
                "| `{}` | {} | {:.2} % ({}) | {} | {} |",
                md_escape(&p.path),
                p.kind,
                p.raw_rate * 100.0,
                p.raw_count,
                p.noise_rate.map_or_else(
                    || p.volatile
                        .map_or("–".to_owned(), |v| format!("looks like {}", v.as_str())),
                    |n| format!("{:.2} %", n * 100.0)
                ),
                match p.status {
                    PathStatus::Regression => "**regression**",
                    PathStatus::Noise => "noise",
                    PathStatus::NoiseCandidate => "noise candidate",
                    PathStatus::BelowThreshold => "below threshold",
                }
            );
            if p.status == PathStatus::Regression
                && let Some(e) = &p.example
                && examples.len() < 10
            {
                examples.push((r.route.clone(), p.path.clone(), p.kind.clone(), e.clone()));
            }
        }
        md.push('\n');
        if md.len() > MAX_REPORT_CHARS / 2 {
            let _ = writeln!(
                md,
                "_(more routes cut to keep this report short; see verdict.json)_\n"
            );
            break;
        }
    }
    if !any {
        let _ = writeln!(md, "No response differences.\n");
    }
    if !examples.is_empty() {
        let _ = writeln!(md, "## Examples\n");
    }
    for (route, path, kind, e) in examples {
        let mut block = String::new();
        let _ = writeln!(
            block,
            "### `{}` — `{}` ({kind})\n",
            md_escape(&route),
            md_escape(&path)
        );
        let _ = writeln!(block, "Request (origin `{}`):\n", e.origin_id);
        let f = fence(&e.curl);
        let _ = writeln!(block, "{f}sh\n{}\n{f}\n", e.curl);
        let _ = writeln!(
            block,
            "At `{}`: baseline `{}` → candidate `{}`\n",
            md_escape(&path),
            md_escape(&truncate(&e.baseline_value, 200)),
            md_escape(&truncate(&e.candidate_value, 200))
        );
        for (label, text) in [
            ("Baseline response", &e.baseline_response),
            ("Candidate response", &e.candidate_response),
        ] {
            let f = fence(text);
            let _ = writeln!(block, "{label}:\n\n{f}\n{text}\n{f}\n");
        }
        if md.len() + block.len() > MAX_REPORT_CHARS - 200 {
            let _ = writeln!(
                md,
                "_(further examples cut to keep this report under {} characters)_",
                thousands(MAX_REPORT_CHARS as u64)
            );
            break;
        }
        md.push_str(&block);
    }
    if !o.noise_candidates.is_empty() && md.len() < MAX_REPORT_CHARS - 2000 {
        let _ = writeln!(md, "## Noise candidates (not regressions)\n");
        for n in o.noise_candidates.iter().take(20) {
            let _ = writeln!(
                md,
                "- `{}` `{}`: looks like {} ({:.1} %)",
                md_escape(&n.route),
                md_escape(&n.path),
                n.volatile.as_str(),
                n.rate * 100.0
            );
        }
        md.push('\n');
    }
    if md.chars().count() > MAX_REPORT_CHARS {
        md = md.chars().take(MAX_REPORT_CHARS - 40).collect();
        md.push_str("\n\n_(report truncated)_\n");
    }
    md
}
