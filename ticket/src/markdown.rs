//! `ticket.md`: the bug ticket for people, rendered from the verdict and what was bundled.

use std::fmt::Write as _;

use serde_json::Value;
use tapedeck_common::format::thousands;
use tapedeck_common::{Redactor, RuleRedactor};
use tapedeck_storage::Exchange;
use uuid::Uuid;

use crate::bundle::Bundled;
use crate::verdict::{Route, Verdict};
use crate::{TicketOptions, rfc3339_ms, truncate_chars};

pub(crate) fn ms(us: Option<f64>) -> String {
    match us {
        None => "–".to_owned(),
        Some(us) if us >= 100_000.0 => format!("{:.0} ms", us / 1000.0),
        Some(us) => format!("{:.1} ms", us / 1000.0),
    }
}

/// Masks `-H 'name: value'` in a curl command for every header in `names`.
pub(crate) fn redact_curl(curl: &str, names: &[String]) -> String {
    let mut out = curl.to_owned();
    for name in names {
        let needle = format!("-h '{}: ", name.to_ascii_lowercase());
        let mut from = 0;
        while let Some(pos) = out[from..].to_ascii_lowercase().find(&needle) {
            let start = from + pos + needle.len();
            // The value ends at the closing quote; `'\''` is an escaped quote inside it.
            let rest = &out[start..];
            let mut end = None;
            let mut i = 0;
            while let Some(q) = rest[i..].find('\'') {
                let at = i + q;
                if rest[at..].starts_with("'\\''") {
                    i = at + 4;
                } else {
                    end = Some(at);
                    break;
                }
            }
            let Some(end) = end else { break };
            out.replace_range(start..start + end, "[REDACTED]");
            from = start + "[REDACTED]".len();
        }
    }
    out
}

pub(crate) fn excerpt(s: &str, max: usize) -> String {
    truncate_chars(s, max)
}

/// The last field name of a JSON path: `$.user.email` → `email`, `$.items[*].pan` → `pan`.
pub(crate) fn last_key(path: &str) -> &str {
    path.rsplit(['.', '[', ']'])
        .find(|s| !s.is_empty() && *s != "*" && *s != "$")
        .unwrap_or(path)
}

/// A `HTTP 200\n{body}` excerpt from verdict.json with the bundle's body rules applied.
pub(crate) fn redact_response(redactor: &RuleRedactor, text: &str) -> String {
    let (head, body) = text.split_once('\n').unwrap_or(("", text));
    let mut ex = Exchange {
        resp_headers: vec![tapedeck_storage::Header::new(
            "content-type",
            "application/json",
        )],
        resp_body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        ..Exchange::default()
    };
    if redactor.redact(&mut ex) {
        format!("{head}\n{}", String::from_utf8_lossy(&ex.resp_body))
    } else {
        text.to_owned()
    }
}

pub(crate) struct Render<'a> {
    pub(crate) v: &'a Verdict,
    pub(crate) title: &'a str,
    pub(crate) failing: &'a [&'a Route],
    pub(crate) bundled: Option<&'a Bundled>,
    pub(crate) fingerprint: &'a str,
    pub(crate) opts: &'a TicketOptions,
    pub(crate) redactor: &'a RuleRedactor,
}

pub(crate) fn render_markdown(r: &Render<'_>) -> String {
    let Render {
        v,
        title,
        failing,
        bundled,
        fingerprint,
        opts,
        redactor,
    } = *r;
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let score = v
        .score
        .map_or_else(|| "–".to_owned(), |s| format!("{s:.0}/100"));
    let _ = writeln!(
        md,
        "**Verdict: {}** — rollback: **{}** — score: {score} — exit code {}\n",
        v.verdict.to_uppercase(),
        if v.rollback { "yes" } else { "no" },
        v.exit_code
    );
    let _ = writeln!(md, "## What happened\n");
    if v.rollback {
        let _ = writeln!(
            md,
            "The candidate `{}` was judged a regression against the baseline `{}` and should be \
             rolled back to `{}`.\n",
            v.candidate_version, v.baseline_version, v.baseline_version
        );
    } else {
        let _ = writeln!(
            md,
            "The judgement of `{}` against `{}` was **{}**: nothing was rolled back; the evidence \
             was not enough to decide.\n",
            v.candidate_version, v.baseline_version, v.verdict
        );
    }
    for r in &v.reasons {
        let _ = writeln!(md, "- {r}");
    }
    let _ = writeln!(md, "\n## Versions and traffic\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| baseline | `{}` (target `{}`) |",
        v.baseline_version, v.baseline
    );
    let _ = writeln!(
        md,
        "| candidate | `{}` (target `{}`) |",
        v.candidate_version, v.candidate
    );
    if let Some(n) = &v.noise {
        let _ = writeln!(md, "| noise | target `{n}` |");
    }
    if let Some([a, b]) = v.window_us {
        let _ = writeln!(
            md,
            "| traffic window | {} … {} |",
            rfc3339_ms(a),
            rfc3339_ms(b)
        );
    }
    let count = |k: &str| v.counts.get(k).and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(
        md,
        "| exchanges | {} paired ({} with noise), {} rows |",
        thousands(count("paired")),
        thousands(count("with_noise")),
        thousands(count("rows"))
    );
    let _ = writeln!(md, "| run | `{}` |", v.run_id);
    let _ = writeln!(md, "| fingerprint | `{fingerprint}` |\n");

    let _ = writeln!(md, "## Routes\n");
    let _ = writeln!(
        md,
        "| route | verdict | score | n | p95 base → cand | errors base → cand | failed checks |\n|---|---|---|---|---|---|---|"
    );
    for r in &v.routes {
        let failed: Vec<&str> = r.failed_checks().map(|c| c.name.as_str()).collect();
        let err = |k: &str| r.errors.get(k).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} → {} | {} → {} | {} |",
            r.route,
            r.verdict,
            r.score
                .map_or_else(|| "–".to_owned(), |s| format!("{s:.0}")),
            thousands(r.paired),
            r.p95("baseline"),
            r.p95("candidate"),
            err("baseline"),
            err("candidate"),
            if failed.is_empty() {
                "–".to_owned()
            } else {
                failed.join(", ")
            }
        );
    }

    let _ = writeln!(md, "\n## Top findings\n");
    let mut shown = 0usize;
    for r in failing {
        let _ = writeln!(md, "### `{}`\n", r.route);
        for c in r.failed_checks() {
            let _ = writeln!(
                md,
                "- **{}**{}: {}",
                c.name,
                if c.critical { " (critical)" } else { "" },
                c.reason
            );
        }
        let _ = writeln!(md);
        // Latency and error regressions have no response example: show the worst exchange.
        let has_example = r.regressions().any(|p| p.example.is_some());
        if !has_example
            && let Some(b) = bundled
            && let Some((id, latency)) = b.worst.get(&r.route)
            && let Some(curl) = b.curls.get(id)
        {
            let what = match latency {
                Some(us) => format!("slowest candidate exchange, {}", ms(Some(*us as f64))),
                None => "a failed candidate exchange".to_owned(),
            };
            let _ = writeln!(md, "Repro ({what}; origin `{id}`):\n");
            let _ = writeln!(md, "```sh\n{curl}\n```\n");
        }
        for p in r.regressions().take(3) {
            let noise = p.noise_rate.map_or_else(
                || "no noise target".to_owned(),
                |n| format!("noise {:.1} %", n * 100.0),
            );
            let _ = writeln!(
                md,
                "`{}` ({}) differs in {:.1} % of responses ({}), {noise}.\n",
                p.path,
                p.kind,
                p.raw_rate * 100.0,
                thousands(p.raw_count)
            );
            let Some(e) = &p.example else { continue };
            if shown >= 6 {
                continue;
            }
            shown += 1;
            let _ = writeln!(md, "Repro (origin `{}`):\n", e.origin_id);
            // Prefer the command made from the redacted exchange in the bundle.
            let curl = Uuid::parse_str(&e.origin_id)
                .ok()
                .and_then(|id| bundled.and_then(|b| b.curls.get(&id)))
                .cloned()
                .unwrap_or_else(|| redact_curl(&e.curl, &opts.redact.headers));
            let _ = writeln!(md, "```sh\n{curl}\n```\n");
            let secret_path = opts
                .redact
                .json
                .iter()
                .any(|rp| last_key(rp) == last_key(&p.path));
            if secret_path {
                let _ = writeln!(md, "Values at `{}` are redacted.\n", p.path);
            } else if !e.baseline_value.is_empty() || !e.candidate_value.is_empty() {
                let _ = writeln!(
                    md,
                    "Baseline `{}` → candidate `{}`\n",
                    excerpt(&e.baseline_value, 200),
                    excerpt(&e.candidate_value, 200)
                );
            }
            if !e.baseline_response.is_empty() {
                let _ = writeln!(
                    md,
                    "<details><summary>responses</summary>\n\nBaseline:\n\n```\n{}\n```\n\nCandidate:\n\n```\n{}\n```\n\n</details>\n",
                    excerpt(&redact_response(redactor, &e.baseline_response), 2000),
                    excerpt(&redact_response(redactor, &e.candidate_response), 2000)
                );
            }
        }
    }
    if failing.is_empty() {
        let _ = writeln!(md, "No route failed; see the reasons above.\n");
    }

    let _ = writeln!(md, "## Reproduce\n");
    match bundled {
        Some(b) => {
            let _ = writeln!(
                md,
                "`tape/` holds {} exchanges of {} origins (baseline, candidate and noise rows; {} \
                 redacted). Look at them and judge them again:\n",
                thousands(b.rows),
                thousands(b.origins),
                thousands(b.redacted)
            );
            let noise = v
                .noise
                .as_ref()
                .map(|n| format!(" --noise {n}"))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "```sh\ntapedeck inspect ./tape\ntapedeck diff --run ./tape --baseline {} --candidate {}{noise} --report ./rejudged\n```\n",
                v.baseline, v.candidate
            );
        }
        None => {
            let _ = writeln!(
                md,
                "The replay run was not available: no tape is bundled.\n"
            );
        }
    }
    let _ = writeln!(
        md,
        "_Filed by tapedeck. Sensitive headers are masked in curl commands and in the bundled tape._"
    );
    md
}
