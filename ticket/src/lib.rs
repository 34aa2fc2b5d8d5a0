//! `tapedeck ticket` (and `tapedeck check --ticket DIR`): turn a failing verdict into a
//! self-contained, redacted bug-ticket bundle that an on-call engineer can act on.
//!
//! The bundle (`OUT/`) holds:
//! - `ticket.md`: title, verdict, what to roll back, versions, traffic window, the per-route
//!   table and the top findings with their `curl` repros;
//! - `ticket.json`: the same, shaped for issue trackers (schema below);
//! - `tape/`: the failing exchanges as a small tape: every row (baseline, candidate, noise) of the
//!   origins that are examples of a regression, plus, per failing route, the candidate's slowest
//!   or failed exchanges, up to `--max-per-route` origins. Headers from the default sensitive list
//!   (and `--redact-header`) are masked before they are written.
//!
//! `ticket.json` (schema version 1): `{schema_version, title, body (markdown, = ticket.md),
//! labels, fingerprint, severity, verdict, rollback, baseline_version, candidate_version,
//! routes (failing), run_id, window: [rfc3339, rfc3339] | null, exchanges, origins}`.
//! `fingerprint` is the SHA-256 (hex) of `route \n check \n baseline_version \n
//! candidate_version` for the first failing route and its first failing check: the same
//! regression between the same versions gets the same fingerprint, so trackers can deduplicate.
//! `severity` is `critical` (a critical check failed: responses, errors, an SLO), `high` (only
//! non-critical checks, e.g. latency, failed) or `low` (inconclusive).
//!
//! The bundle reads `verdict.json` through its documented schema (`docs/verdict.md`), never the
//! diff crate's internals, so a ticket can be made from any report a compatible tapedeck wrote.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tapedeck_common::{RedactRules, RuleRedactor};

mod bundle;
mod error;
mod markdown;
mod post;
mod verdict;

pub use error::{PostError, TicketError};
pub use post::{PostSettings, parse_header, post_ticket};

use bundle::{Bundled, bundle_exchanges};
use markdown::{Render, render_markdown};
use verdict::{Route, Verdict, parse_verdict, read_verdict, wants_ticket};

/// Microseconds since the epoch as RFC 3339 UTC with millisecond precision.
pub(crate) fn rfc3339_ms(us: i64) -> String {
    tapedeck_common::format::rfc3339(us, tapedeck_common::format::Precision::Millis)
}

/// What to bundle; shared by `ticket` and `check --ticket`.
#[derive(Debug, Clone)]
pub struct TicketOptions {
    pub report: PathBuf,
    pub out: PathBuf,
    pub run: Option<PathBuf>,
    pub max_per_route: usize,
    pub redact: RedactRules,
    pub labels: Vec<String>,
}

impl TicketOptions {
    /// Defaults for a report directory and an output directory.
    pub fn new(report: &Path, out: &Path) -> Self {
        Self {
            report: report.to_path_buf(),
            out: out.to_path_buf(),
            run: None,
            max_per_route: 20,
            redact: RedactRules::default(),
            labels: Vec::new(),
        }
    }
}

/// What [`write_ticket`] did.
#[derive(Debug)]
pub enum TicketOutcome {
    /// The verdict passed: nothing to file.
    Passed { verdict: String },
    /// A bundle was written.
    Written(Box<Ticket>),
}

/// `ticket.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub schema_version: u32,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub fingerprint: String,
    pub severity: &'static str,
    pub verdict: String,
    pub rollback: bool,
    pub baseline_version: String,
    pub candidate_version: String,
    pub routes: Vec<String>,
    pub run_id: String,
    pub window: Option<[String; 2]>,
    /// Rows written to the bundled tape.
    pub exchanges: u64,
    /// Origins (recorded requests) bundled.
    pub origins: u64,
}

/// The ticket a `verdict.json` makes, without the run's exchanges (no repro from the run, no
/// bundled tape): `None` when the verdict passed. What `write_ticket` writes as ticket.json and
/// ticket.md when the run is not at hand; the `verdict_json` fuzz target drives it.
pub fn ticket_for(
    verdict_json: &[u8],
    opts: &TicketOptions,
) -> Result<Option<Ticket>, TicketError> {
    let v = parse_verdict(verdict_json, opts.report.join("verdict.json"))?;
    if !wants_ticket(&v) {
        return Ok(None);
    }
    let redactor = build_redactor(opts)?;
    Ok(Some(build(&v, opts, &redactor, None)))
}

/// Writes the bundle for the report in `opts.report` into `opts.out` (unless the verdict passed).
pub fn write_ticket(opts: &TicketOptions) -> Result<TicketOutcome, TicketError> {
    let v = read_verdict(&opts.report)?;
    if !wants_ticket(&v) {
        return Ok(TicketOutcome::Passed { verdict: v.verdict });
    }
    let redactor = build_redactor(opts)?;
    std::fs::create_dir_all(&opts.out).map_err(|source| TicketError::Io {
        action: "creating",
        path: opts.out.clone(),
        source,
    })?;

    // `check` writes its run to REPORT/run; verdict.json names the run directory.
    let run = opts.run.clone().unwrap_or_else(|| {
        let by_name = opts.report.join(&v.run_id);
        if !v.run_id.is_empty() && !opts.report.join("run").exists() && by_name.is_dir() {
            by_name
        } else {
            opts.report.join("run")
        }
    });
    let tape_dir = opts.out.join("tape");
    let bundled = if run.exists() {
        if tape_dir.exists() {
            // Replace the tape of an earlier bundle, never someone's data.
            if !opts.out.join("ticket.json").is_file() {
                return Err(TicketError::NotABundle(tape_dir));
            }
            std::fs::remove_dir_all(&tape_dir).map_err(|source| TicketError::Io {
                action: "replacing",
                path: tape_dir.clone(),
                source,
            })?;
        }
        Some(bundle_exchanges(&redactor, &v, &run, &tape_dir, opts)?)
    } else if opts.run.is_some() {
        return Err(TicketError::NoRun(run));
    } else {
        tracing::warn!(run = %run.display(), "no replay run next to the report: the ticket has no tape (give --run DIR)");
        None
    };

    let ticket = build(&v, opts, &redactor, bundled.as_ref());
    let md_path = opts.out.join("ticket.md");
    std::fs::write(&md_path, &ticket.body).map_err(|source| TicketError::Io {
        action: "writing",
        path: md_path,
        source,
    })?;
    let json_path = opts.out.join("ticket.json");
    // A struct of strings and numbers always serializes.
    let json = serde_json::to_vec_pretty(&ticket).unwrap_or_default();
    std::fs::write(&json_path, json).map_err(|source| TicketError::Io {
        action: "writing",
        path: json_path,
        source,
    })?;
    tracing::info!(out = %opts.out.display(), fingerprint = %ticket.fingerprint, rows = ticket.exchanges, "ticket written");
    Ok(TicketOutcome::Written(Box::new(ticket)))
}

/// The ticket for a verdict that did not pass, with what was bundled from the run (if anything).
fn build(
    v: &Verdict,
    opts: &TicketOptions,
    redactor: &RuleRedactor,
    bundled: Option<&Bundled>,
) -> Ticket {
    let failing: Vec<&Route> = v
        .routes
        .iter()
        .filter(|r| r.verdict == "fail" || (v.verdict != "fail" && r.verdict == v.verdict))
        .collect();
    let (fp_route, fp_check) = failing
        .first()
        .map(|r| {
            let check = r
                .failed_checks()
                .next()
                .map_or_else(|| r.verdict.clone(), |c| c.name.clone());
            (r.route.clone(), check)
        })
        .unwrap_or_else(|| ("(run)".to_owned(), v.verdict.clone()));
    let fingerprint = fingerprint(
        &fp_route,
        &fp_check,
        &v.baseline_version,
        &v.candidate_version,
    );
    let severity = if v.verdict == "fail" {
        if failing
            .iter()
            .any(|r| r.failed_checks().any(|c| c.critical))
        {
            "critical"
        } else {
            "high"
        }
    } else {
        "low"
    };
    let mut labels = vec![
        if v.verdict == "fail" {
            "regression"
        } else {
            "tapedeck-inconclusive"
        }
        .to_owned(),
        "tapedeck".to_owned(),
        format!("severity:{severity}"),
    ];
    labels.extend(failing.iter().map(|r| truncate_chars(&r.route, 50)));
    labels.extend(opts.labels.iter().cloned());
    labels.dedup();

    let title = if v.title.is_empty() {
        format!(
            "tapedeck: {} ({} → {})",
            v.verdict, v.baseline_version, v.candidate_version
        )
    } else {
        v.title.clone()
    };
    let body = render_markdown(&Render {
        v,
        title: &title,
        failing: &failing,
        bundled,
        fingerprint: &fingerprint,
        opts,
        redactor,
    });
    Ticket {
        schema_version: 1,
        title,
        body,
        labels,
        fingerprint,
        severity,
        verdict: v.verdict.clone(),
        rollback: v.rollback,
        baseline_version: v.baseline_version.clone(),
        candidate_version: v.candidate_version.clone(),
        routes: failing.iter().map(|r| r.route.clone()).collect(),
        run_id: v.run_id.clone(),
        window: v.window_us.map(|[a, b]| [rfc3339_ms(a), rfc3339_ms(b)]),
        exchanges: bundled.map_or(0, |b| b.rows),
        origins: bundled.map_or(0, |b| b.origins),
    }
}

/// `sha256(route \n check \n baseline_version \n candidate_version)` as hex.
fn fingerprint(route: &str, check: &str, baseline: &str, candidate: &str) -> String {
    let mut h = Sha256::new();
    for part in [route, check, baseline, candidate] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The redactor for the bundle: the default sensitive headers plus the user's rules.
fn build_redactor(opts: &TicketOptions) -> Result<RuleRedactor, TicketError> {
    opts.redact
        .build(tapedeck_common::redact::DEFAULT_DECODED_LIMIT)
        .map_err(TicketError::Redact)
}

/// One line saying what happened to a ticket (printed by `ticket`, `check --ticket`, `serve`).
pub fn describe(outcome: &TicketOutcome, out: &Path) -> String {
    match outcome {
        TicketOutcome::Passed { verdict } => format!(
            "no ticket: the verdict is {verdict}, nothing to file ({} left untouched)",
            out.display()
        ),
        TicketOutcome::Written(t) => format!(
            "ticket: {}/ticket.md, ticket.json, tape/ ({} exchanges of {} origins) · severity {} · fingerprint {}",
            out.display(),
            t.exchanges,
            t.origins,
            t.severity,
            &t.fingerprint[..12.min(t.fingerprint.len())]
        ),
    }
}

#[cfg(test)]
mod tests;
