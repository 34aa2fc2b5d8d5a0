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

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tapedeck_common::format::thousands;
use tapedeck_common::{RedactRules, Redactor, RuleRedactor};
use tapedeck_storage::{Exchange, Filter, Tape, TapeWriter, WhenFull, flags};
use uuid::Uuid;

mod error;
mod post;

pub use error::{PostError, TicketError};
pub use post::{PostSettings, parse_header, post_ticket};

/// Microseconds since the epoch as RFC 3339 UTC with millisecond precision.
fn rfc3339_ms(us: i64) -> String {
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

// ---- verdict.json, schema version 1 (docs/verdict.md); only what a ticket needs ----

#[derive(Debug, Deserialize)]
struct Verdict {
    schema_version: u32,
    #[serde(default)]
    run_id: String,
    verdict: String,
    #[serde(default)]
    rollback: bool,
    score: Option<f64>,
    #[serde(default)]
    exit_code: i64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    baseline: String,
    #[serde(default)]
    candidate: String,
    noise: Option<String>,
    #[serde(default)]
    baseline_version: String,
    #[serde(default)]
    candidate_version: String,
    window_us: Option<[i64; 2]>,
    #[serde(default)]
    counts: Value,
    #[serde(default)]
    routes: Vec<Route>,
    /// How the judge keyed routes (absent in reports of older versions: the defaults).
    #[serde(default)]
    route_keys: tapedeck_diff::route::RouteKeys,
}

#[derive(Debug, Deserialize)]
struct Route {
    route: String,
    verdict: String,
    score: Option<f64>,
    #[serde(default)]
    paired: u64,
    #[serde(default)]
    checks: Vec<Check>,
    #[serde(default)]
    paths: Vec<PathFinding>,
    #[serde(default)]
    errors: Value,
    #[serde(default)]
    latency: Value,
}

#[derive(Debug, Deserialize)]
struct Check {
    name: String,
    classification: String,
    #[serde(default)]
    critical: bool,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct PathFinding {
    path: String,
    kind: String,
    #[serde(default)]
    raw_count: u64,
    #[serde(default)]
    raw_rate: f64,
    noise_rate: Option<f64>,
    status: String,
    example: Option<Example>,
}

#[derive(Debug, Deserialize)]
struct Example {
    origin_id: String,
    #[serde(default)]
    curl: String,
    #[serde(default)]
    baseline_value: String,
    #[serde(default)]
    candidate_value: String,
    #[serde(default)]
    baseline_response: String,
    #[serde(default)]
    candidate_response: String,
}

impl Route {
    fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.classification == "high")
    }
    fn regressions(&self) -> impl Iterator<Item = &PathFinding> {
        self.paths.iter().filter(|p| p.status == "regression")
    }
    /// The p95 of one side as text: the value, `~value` when it is only a low-n estimate
    /// (`low_n.p95`), `–` without samples.
    fn p95(&self, side: &str) -> String {
        let p = self.latency.get(side);
        match (
            p.and_then(|p| p.get("p95")?.as_f64()),
            p.and_then(|p| p.get("low_n")?.get("p95")?.as_f64()),
        ) {
            (Some(us), _) => ms(Some(us)),
            (None, Some(us)) => format!("{}{}", tapedeck_diff::report::LOW_N_MARK, ms(Some(us))),
            (None, None) => ms(None),
        }
    }
}

/// Whether a verdict calls for a ticket: `fail` and `inconclusive` do; `pass` never; `marginal`
/// only when it was judged strictly (a non-zero exit code).
fn wants_ticket(v: &Verdict) -> bool {
    match v.verdict.as_str() {
        "pass" => false,
        "marginal" => v.exit_code != 0,
        _ => true,
    }
}

/// Reads `REPORT/verdict.json`.
fn read_verdict(report: &Path) -> Result<Verdict, TicketError> {
    let path = report.join("verdict.json");
    let data = std::fs::read(&path).map_err(|source| TicketError::Io {
        action: "reading (is this a tapedeck report?)",
        path: path.clone(),
        source,
    })?;
    parse_verdict(&data, path)
}

/// Parses a `verdict.json` (schema 1) as a ticket reads it; `path` names it in errors.
fn parse_verdict(data: &[u8], path: PathBuf) -> Result<Verdict, TicketError> {
    let v: Verdict = serde_json::from_slice(data).map_err(|source| TicketError::Verdict {
        path: path.clone(),
        source,
    })?;
    if v.schema_version != 1 {
        return Err(TicketError::Schema {
            path,
            found: v.schema_version,
        });
    }
    Ok(v)
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

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

// ---- the bundled tape ----

#[derive(Debug, Clone)]
struct Bundled {
    rows: u64,
    origins: u64,
    redacted: u64,
    /// The candidate's request of each bundled origin as a curl command, made from the
    /// redacted exchange.
    curls: HashMap<Uuid, String>,
    /// Per failing route, the candidate's worst exchange: its origin and its latency (`None`: it
    /// failed).
    worst: HashMap<String, (Uuid, Option<i64>)>,
}

/// Selects the failing origins from the run and writes all their rows, redacted, to `tape_dir`.
fn bundle_exchanges(
    redactor: &RuleRedactor,
    v: &Verdict,
    run: &Path,
    tape_dir: &Path,
    opts: &TicketOptions,
) -> Result<Bundled, TicketError> {
    // 1. Origins named as examples of regressions.
    let mut chosen: BTreeSet<Uuid> = BTreeSet::new();
    let failing: Vec<&Route> = v.routes.iter().filter(|r| r.verdict == "fail").collect();
    let mut per_route: HashMap<&str, usize> = HashMap::new();
    for r in &failing {
        for p in r.regressions() {
            if let Some(id) = p
                .example
                .as_ref()
                .and_then(|e| Uuid::parse_str(&e.origin_id).ok())
                && *per_route.get(r.route.as_str()).unwrap_or(&0) < opts.max_per_route
                && chosen.insert(id)
            {
                *per_route.entry(r.route.as_str()).or_default() += 1;
            }
        }
    }
    // 2. Per failing route, the candidate's failed and slowest exchanges (bounded memory: at most
    //    `max_per_route` kept per route).
    let tape = Tape::open(&[run]).map_err(|source| TicketError::Run {
        run: run.to_owned(),
        source,
    })?;
    let mut worst: HashMap<&str, Vec<(i64, Uuid)>> = HashMap::new();
    // The judge's own keying: the rules' templates and threshold, recorded in verdict.json.
    // It sees the candidate's rows in run order, as the judge did, so it infers the same
    // `{param}` positions (rows keyed before a position collapsed still match by
    // `tapedeck_diff::route::matches`).
    let mut keyer = v.route_keys.keyer();
    for ex in tape.exchanges(Filter::default()) {
        let ex = ex.map_err(|source| TicketError::Run {
            run: run.to_owned(),
            source,
        })?;
        if ex.target.as_deref() != Some(v.candidate.as_str()) {
            continue;
        }
        let Some(origin) = ex.origin_id else { continue };
        let key = keyer.key(&ex.method, &ex.path, ex.query.as_deref());
        let Some(route) = failing
            .iter()
            .find(|r| tapedeck_diff::route::matches(&r.route, &key))
        else {
            continue;
        };
        let failed = ex.error_kind.is_some() || ex.status.is_none_or(|s| s >= 500);
        // Failed exchanges rank above any latency.
        let rank = if failed {
            i64::MAX
        } else {
            ex.total_us.or(ex.duration_us).unwrap_or(0)
        };
        let list = worst.entry(route.route.as_str()).or_default();
        list.push((rank, origin));
        if list.len() > opts.max_per_route.saturating_mul(4).max(64) {
            list.sort_unstable_by(|a, b| b.cmp(a));
            list.truncate(opts.max_per_route);
        }
    }
    let mut worst_of_route: HashMap<String, (Uuid, Option<i64>)> = HashMap::new();
    for (route, mut list) in worst {
        list.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&(rank, id)) = list.first() {
            worst_of_route.insert(route.to_owned(), (id, (rank != i64::MAX).then_some(rank)));
        }
        let have = per_route.get(route).copied().unwrap_or(0);
        for (_, id) in list
            .into_iter()
            .take(opts.max_per_route.saturating_sub(have))
        {
            chosen.insert(id);
        }
    }

    // 3. Write every row of the chosen origins, redacted.
    let writer = TapeWriter::builder(tape_dir)
        .when_full(WhenFull::Block)
        .metadata("tapedeck.ticket.run", v.run_id.clone())
        .metadata("tapedeck.ticket.baseline", v.baseline.clone())
        .metadata("tapedeck.ticket.candidate", v.candidate.clone())
        .open()
        .map_err(|source| TicketError::Tape {
            tape: tape_dir.to_owned(),
            source,
        })?;
    let mut out = Bundled {
        rows: 0,
        origins: chosen.len() as u64,
        redacted: 0,
        curls: HashMap::new(),
        worst: worst_of_route,
    };
    let tape = Tape::open(&[run]).map_err(|source| TicketError::Run {
        run: run.to_owned(),
        source,
    })?;
    for ex in tape.exchanges(Filter::default()) {
        let mut ex = ex.map_err(|source| TicketError::Run {
            run: run.to_owned(),
            source,
        })?;
        if !ex.origin_id.is_some_and(|o| chosen.contains(&o)) {
            continue;
        }
        if redactor.redact(&mut ex) {
            ex.flags |= flags::REDACTED;
            out.redacted += 1;
        }
        if ex.target.as_deref() == Some(v.candidate.as_str())
            && let Some(origin) = ex.origin_id
        {
            out.curls
                .insert(origin, tapedeck_diff::report::curl_command(&ex));
        }
        if writer.append(ex).is_err() {
            return Err(TicketError::Lost {
                tape: tape_dir.to_owned(),
                lost: 1,
            });
        }
        out.rows += 1;
    }
    let stats = writer.close().map_err(|source| TicketError::Tape {
        tape: tape_dir.to_owned(),
        source,
    })?;
    if stats.dropped() > 0 {
        return Err(TicketError::Lost {
            tape: tape_dir.to_owned(),
            lost: stats.dropped(),
        });
    }
    Ok(out)
}

// ---- ticket.md ----

fn ms(us: Option<f64>) -> String {
    match us {
        None => "–".to_owned(),
        Some(us) if us >= 100_000.0 => format!("{:.0} ms", us / 1000.0),
        Some(us) => format!("{:.1} ms", us / 1000.0),
    }
}

/// Masks `-H 'name: value'` in a curl command for every header in `names`.
fn redact_curl(curl: &str, names: &[String]) -> String {
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

fn excerpt(s: &str, max: usize) -> String {
    truncate_chars(s, max)
}

/// The redactor for the bundle: the default sensitive headers plus the user's rules.
fn build_redactor(opts: &TicketOptions) -> Result<RuleRedactor, TicketError> {
    opts.redact
        .build(tapedeck_common::redact::DEFAULT_DECODED_LIMIT)
        .map_err(TicketError::Redact)
}

/// The last field name of a JSON path: `$.user.email` → `email`, `$.items[*].pan` → `pan`.
fn last_key(path: &str) -> &str {
    path.rsplit(['.', '[', ']'])
        .find(|s| !s.is_empty() && *s != "*" && *s != "$")
        .unwrap_or(path)
}

/// A `HTTP 200\n{body}` excerpt from verdict.json with the bundle's body rules applied.
fn redact_response(redactor: &RuleRedactor, text: &str) -> String {
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

struct Render<'a> {
    v: &'a Verdict,
    title: &'a str,
    failing: &'a [&'a Route],
    bundled: Option<&'a Bundled>,
    fingerprint: &'a str,
    opts: &'a TicketOptions,
    redactor: &'a RuleRedactor,
}

fn render_markdown(r: &Render<'_>) -> String {
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
mod tests {
    use super::*;

    fn report_with(verdict: &Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("verdict.json"),
            serde_json::to_vec(verdict).expect("json"),
        )
        .expect("write verdict.json");
        dir
    }

    #[test]
    fn an_inconclusive_report_without_a_run_makes_a_low_severity_ticket() {
        let report = report_with(&serde_json::json!({
            "schema_version": 1, "run_id": "r1", "verdict": "inconclusive", "rollback": false,
            "score": null, "exit_code": 3, "title": "Too little traffic to judge (v1 → v2)",
            "reasons": ["GET /a — too few samples"], "baseline": "baseline",
            "candidate": "candidate", "noise": null, "baseline_version": "v1",
            "candidate_version": "v2", "window_us": null, "counts": {"paired": 3},
            "routes": [{"route": "GET /a", "verdict": "inconclusive", "score": null,
                        "paired": 3, "checks": [], "paths": [], "errors": {}, "latency": {}}],
            "future_field": {"ignored": true}
        }));
        let out = report.path().join("ticket");
        let outcome = write_ticket(&TicketOptions::new(report.path(), &out)).expect("ticket");
        let TicketOutcome::Written(t) = outcome else {
            panic!("an inconclusive verdict is filed");
        };
        assert_eq!(t.severity, "low");
        assert!(t.labels.contains(&"tapedeck-inconclusive".to_owned()));
        assert_eq!(t.routes, vec!["GET /a".to_owned()]);
        assert_eq!(t.exchanges, 0);
        assert!(t.body.contains("no tape is bundled"), "{}", t.body);
        assert!(t.body.contains("**Verdict: INCONCLUSIVE**"));
        assert!(out.join("ticket.md").is_file() && out.join("ticket.json").is_file());
    }

    #[test]
    fn a_verdict_alone_makes_a_ticket_without_the_run() {
        let opts = TicketOptions::new(Path::new("report"), Path::new("out"));
        let fail = serde_json::json!({
            "schema_version": 1, "verdict": "fail", "rollback": true, "exit_code": 1,
            "title": "GET /a p95 +900 % (v1 → v2)", "baseline_version": "v1",
            "candidate_version": "v2",
            "routes": [{"route": "GET /a", "verdict": "fail", "checks": [
                {"name": "latency", "classification": "high", "critical": true,
                 "reason": "slower"}]}]
        });
        let t = ticket_for(fail.to_string().as_bytes(), &opts)
            .expect("parses")
            .expect("a fail is filed");
        assert_eq!(t.severity, "critical");
        assert_eq!(t.fingerprint.len(), 64);
        assert!(t.body.starts_with("# GET /a p95 +900 %"), "{}", t.body);
        let pass = serde_json::json!({"schema_version": 1, "verdict": "pass", "routes": []});
        assert!(
            ticket_for(pass.to_string().as_bytes(), &opts)
                .expect("parses")
                .is_none()
        );
        assert!(matches!(
            ticket_for(b"{\"schema_version\": 1", &opts),
            Err(TicketError::Verdict { .. })
        ));
        assert!(matches!(
            ticket_for(br#"{"schema_version": 2, "verdict": "fail"}"#, &opts),
            Err(TicketError::Schema { found: 2, .. })
        ));
    }

    #[test]
    fn a_foreign_tape_dir_in_out_is_never_deleted() {
        let report = report_with(&serde_json::json!({
            "schema_version": 1, "run_id": "run", "verdict": "fail", "exit_code": 1,
            "routes": []
        }));
        std::fs::create_dir_all(report.path().join("run")).expect("run dir");
        let out = report.path().join("out");
        std::fs::create_dir_all(out.join("tape")).expect("foreign tape");
        std::fs::write(out.join("tape/precious"), b"x").expect("file");
        let e = write_ticket(&TicketOptions::new(report.path(), &out)).expect_err("refused");
        assert!(
            format!("{e:#}").contains("not part of a ticket bundle"),
            "{e:#}"
        );
        assert!(out.join("tape/precious").is_file());
    }

    #[test]
    fn unreadable_reports_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = write_ticket(&TicketOptions::new(dir.path(), &dir.path().join("t")))
            .expect_err("no verdict.json");
        assert!(format!("{e:#}").contains("verdict.json"), "{e:#}");
        let report = report_with(&serde_json::json!({"schema_version": 2, "verdict": "fail"}));
        let e = write_ticket(&TicketOptions::new(report.path(), &report.path().join("t")))
            .expect_err("future schema");
        assert!(format!("{e:#}").contains("schema_version 2"), "{e:#}");
    }

    #[test]
    fn fingerprint_is_stable_and_depends_on_every_part() {
        let a = fingerprint("GET /a", "responses", "v1", "v2");
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint("GET /a", "responses", "v1", "v2"));
        assert_ne!(a, fingerprint("GET /a", "latency", "v1", "v2"));
        assert_ne!(a, fingerprint("GET /a", "responses", "v1", "v3"));
        assert_ne!(a, fingerprint("GET /b", "responses", "v1", "v2"));
    }

    #[test]
    fn post_headers_expand_the_environment() {
        // PATH is set in any test environment.
        let path = std::env::var("PATH").unwrap_or_default();
        let (n, v) = parse_header("X-Where: a ${PATH} b").expect("valid");
        assert_eq!(n, "X-Where");
        assert_eq!(v, format!("a {path} b"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("X: ${TAPEDECK_SURELY_UNSET_VAR_93}").is_err());
        assert!(parse_header("X: ${OPEN").is_err());
        assert!(parse_header("bad name: v").is_err());
    }

    #[test]
    fn curl_headers_are_masked() {
        let c = "curl -sS -X GET 'http://x/a' -H 'x-tenant-secret: s3cr3t' -H 'accept: */*'";
        let r = redact_curl(c, &["X-Tenant-Secret".to_owned()]);
        assert!(!r.contains("s3cr3t"), "{r}");
        assert!(r.contains("-H 'x-tenant-secret: [REDACTED]'"), "{r}");
        assert!(r.contains("accept: */*"));
        let quoted = r"curl 'http://x/' -H 'x-k: it'\''s secret' -H 'a: b'";
        let r = redact_curl(quoted, &["x-k".to_owned()]);
        assert_eq!(r, "curl 'http://x/' -H 'x-k: [REDACTED]' -H 'a: b'");
    }

    #[test]
    fn pass_and_lenient_marginal_want_no_ticket() {
        let v = |verdict: &str, exit_code: i64| Verdict {
            schema_version: 1,
            run_id: String::new(),
            verdict: verdict.into(),
            rollback: false,
            score: None,
            exit_code,
            title: String::new(),
            reasons: vec![],
            baseline: String::new(),
            candidate: String::new(),
            noise: None,
            baseline_version: String::new(),
            candidate_version: String::new(),
            window_us: None,
            counts: Value::Null,
            routes: vec![],
            route_keys: Default::default(),
        };
        assert!(!wants_ticket(&v("pass", 0)));
        assert!(!wants_ticket(&v("marginal", 0)));
        assert!(wants_ticket(&v("marginal", 1)));
        assert!(wants_ticket(&v("fail", 1)));
        assert!(wants_ticket(&v("inconclusive", 3)));
    }
}
