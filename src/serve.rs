//! `tapedeck serve`: `tapedeck check` as a small HTTP service, for rollout controllers that ask
//! over HTTP instead of running a Job: the Argo Rollouts **Web** metric provider and **Flagger**
//! webhooks.
//!
//! # API
//! - `POST /v1/runs` — body (JSON, every field optional, unknown fields rejected):
//!   `{id, tape, baseline, candidate, secondary, baseline_version, candidate_version}`; the rest
//!   comes from `serve`'s flags. Starts a check run in the background and answers `202` with the
//!   run document; an `id` that already exists answers `200` with that run (the id is an
//!   idempotency key, so one Argo Web metric can both start and poll a run).
//! - `GET /v1/runs` — every run's id and status.
//! - `GET /v1/runs/{id}/report.md` (or any report file: `report.html`, `verdict.json`,
//!   `junit.xml`, see `tapedeck_diff::report::REPORTS`), `GET /v1/runs/{id}/ticket.md` — the
//!   judged run's reports and (with `--tickets`, for a run that did not pass) its bug ticket.
//! - `GET /v1/runs/{id}` and `GET /v1/runs/{id}/verdict` — the run document: top-level `status`
//!   `pending | pass | fail | inconclusive | error`, plus, once judged, every field of
//!   `verdict.json` (docs/verdict.md). `status` follows the check's exit code: a marginal verdict
//!   is `pass` unless `--strict`; `--inconclusive-as` applies. `404` for an unknown id.
//! - `POST /flagger/pre-rollout` — Flagger's payload `{name, namespace, phase, checksum,
//!   metadata}`: starts the run keyed by `namespace/name/checksum` (the same checksum is the same
//!   run). `metadata` may override `tape`, `baseline`, `candidate`, `secondary`,
//!   `baseline_version`, `candidate_version`.
//! - `POST /flagger/rollout` — `200` while that run is `pending` or `pass`, `412` with a one-line
//!   reason on `fail`, `inconclusive` or `error` (never `5xx`: Flagger retries those and drops the
//!   body). A run that does not exist yet is started (as by `pre-rollout`) and reported pending.
//! - `POST /flagger/confirm-promotion` — `200` only when the run finished with `pass`.
//! - `POST /flagger/rollback` — `200` only when the run finished with `fail` (Flagger then rolls
//!   back).
//!
//! With a token (`--token` or `TAPEDECK_SERVE_TOKEN`) every request must carry
//! `Authorization: Bearer <token>`, else `401`.
//!
//! # State
//! Each run lives in `RUNS/{id}/`: `state.json` (id, status, times, the resolved check settings,
//! an error message) and `report/` (what `tapedeck check` writes: verdict.json, report.md,
//! junit.xml, and the run tape in `report/run`). `state.json` is replaced atomically (write to a
//! temporary file, rename). On start-up `serve` reads every `state.json`: finished runs answer as
//! before, runs that a stop interrupted are started again from scratch. At most
//! `--max-parallel` checks run at once; the others wait as `pending`. The newest `--keep-runs`
//! finished runs are kept; older ones are deleted when a run finishes and at start-up.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::check;

/// Largest request body accepted (JSON settings or a Flagger payload).
const MAX_BODY: usize = 64 * 1024;

/// Serve check runs over HTTP: an Argo Rollouts Web provider and Flagger webhooks.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck serve --runs ./runs --tape ./tapes/svc \\\n      \
--baseline http://svc-stable:80 --candidate http://svc-canary:80\n  \
TAPEDECK_SERVE_TOKEN=s3cret tapedeck serve --listen 0.0.0.0:8480 --runs /data/runs \\\n      \
--tape /data/tape --baseline http://svc-stable --candidate http://svc-canary \\\n      \
-- --slo 'GET /api/users: p95<300ms' --limit 5000\n\n\
Endpoints:\n  \
POST /v1/runs                    start a run; JSON: id, tape, baseline, candidate, …\n  \
GET  /v1/runs/{id}/verdict       {\"status\": \"pending|pass|fail|inconclusive|error\", …}\n  \
GET  /v1/runs/{id}/report.md     the report (report.html, verdict.json, junit.xml too; ticket.md with --tickets)\n  \
POST /flagger/pre-rollout        start the run for the canary's checksum\n  \
POST /flagger/rollout            200 while pending/pass, 412 + reason otherwise\n  \
POST /flagger/confirm-promotion  200 only on a finished pass\n  \
POST /flagger/rollback           200 only on a finished fail\n\n\
Arguments after `--` are `tapedeck check` flags used for every run (e.g. --rate, --limit).\n\
Binds loopback unless told otherwise; anyone who can reach the port can start runs against any\n\
URL, so set a token before listening on other interfaces.")]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8480", value_name = "ADDR")]
    listen: SocketAddr,
    /// Directory for the runs' state and reports (created).
    #[arg(long, value_name = "DIR")]
    runs: PathBuf,
    /// Require `Authorization: Bearer TOKEN` on every request.
    #[arg(
        long,
        env = "TAPEDECK_SERVE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Checks running at once; more wait as pending.
    #[arg(long, default_value_t = 1, value_name = "N")]
    max_parallel: usize,
    /// Default tape to replay (repeatable).
    #[arg(long, value_name = "PATH")]
    tape: Vec<PathBuf>,
    /// Default baseline URL.
    #[arg(long, value_name = "URL")]
    baseline: Option<String>,
    /// Default candidate URL.
    #[arg(long, value_name = "URL")]
    candidate: Option<String>,
    /// Default second baseline URL (noise).
    #[arg(long, value_name = "URL")]
    secondary: Option<String>,
    /// Rules file (TOML) for every run.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Latency objective for every run (repeatable), e.g. 'GET /api/users: p95<300ms'.
    #[arg(long, value_name = "SLO")]
    slo: Vec<String>,
    /// Treat a marginal verdict as a failure.
    #[arg(long)]
    strict: bool,
    /// Write a bug-ticket bundle to RUNS/{id}/ticket when a run does not pass.
    #[arg(long)]
    tickets: bool,
    /// Keep the newest N finished runs; older ones (state and reports) are deleted.
    #[arg(long, default_value_t = 500, value_name = "N")]
    keep_runs: usize,
    /// More `tapedeck check` flags for every run, after `--`.
    #[arg(last = true, value_name = "CHECK-FLAGS")]
    check_args: Vec<String>,
}

/// What a run was asked to do: resolved settings, persisted in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunSpec {
    /// Tapes to replay.
    tape: Vec<String>,
    /// Baseline URL.
    baseline: String,
    /// Candidate URL.
    candidate: String,
    /// Second baseline URL, if any.
    secondary: Option<String>,
    /// Version label of the baseline.
    baseline_version: Option<String>,
    /// Version label of the candidate.
    candidate_version: Option<String>,
    /// Written by earlier versions (the check flags in effect, as strings); read and ignored:
    /// every run applies the settings `serve` was started with.
    #[serde(default, skip_serializing, rename = "extra")]
    _extra: Option<serde::de::IgnoredAny>,
}

/// Optional overrides in `POST /v1/runs` (and Flagger metadata).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// Run id (idempotency key); a new UUIDv7 when absent.
    id: Option<String>,
    /// Tape path(s).
    tape: Option<OneOrMany>,
    /// Baseline URL.
    baseline: Option<String>,
    /// Candidate URL.
    candidate: Option<String>,
    /// Second baseline URL.
    secondary: Option<String>,
    /// Version label of the baseline.
    baseline_version: Option<String>,
    /// Version label of the candidate.
    candidate_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Flagger's webhook payload (fields it may add are ignored).
#[derive(Debug, Deserialize)]
struct FlaggerPayload {
    name: String,
    namespace: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    checksum: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// Waiting for a slot.
    Queued,
    /// Replaying and judging.
    Running,
    /// Judged: pass (also marginal unless strict).
    Pass,
    /// Judged: regression.
    Fail,
    /// Judged: too little data.
    Inconclusive,
    /// The check could not run.
    Error,
}

impl Status {
    /// The status as the API shows it: queued and running are both `pending`.
    fn public(self) -> &'static str {
        match self {
            Status::Queued | Status::Running => "pending",
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Inconclusive => "inconclusive",
            Status::Error => "error",
        }
    }
    fn done(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

/// `RUNS/{id}/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    id: String,
    status: Status,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// Why the run errored.
    message: Option<String>,
    /// One line for humans: the verdict's title once judged.
    title: Option<String>,
    /// Flagger canary `namespace/name` and checksum, for runs started by a webhook.
    flagger: Option<String>,
    spec: RunSpec,
}

struct Shared {
    runs_dir: PathBuf,
    token: Option<String>,
    defaults: Args,
    /// The check settings of every run: `--rules`, `--slo`, `--strict` and the flags after `--`.
    settings: check::Settings,
    runs: Mutex<BTreeMap<String, RunState>>,
    slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("runs_dir", &self.runs_dir)
            .finish_non_exhaustive()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A run id is a directory name: `[A-Za-z0-9._-]`, 1–128 characters, not starting with a dot.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The run id of a Flagger canary revision.
fn flagger_id(p: &FlaggerPayload) -> String {
    let raw = format!("flagger-{}-{}-{}", p.namespace, p.name, p.checksum);
    let mut id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    id.truncate(128);
    id
}

impl Shared {
    fn run_dir(&self, id: &str) -> PathBuf {
        self.runs_dir.join(id)
    }

    /// Resolves a request's overrides against the flags' defaults.
    fn resolve(&self, req: RunRequest) -> Result<RunSpec, String> {
        let d = &self.defaults;
        let tape = match req.tape {
            Some(OneOrMany::One(t)) => vec![t],
            Some(OneOrMany::Many(t)) => t,
            None => d.tape.iter().map(|p| p.display().to_string()).collect(),
        };
        if tape.is_empty() {
            return Err("no tape: start serve with --tape or send \"tape\"".into());
        }
        let baseline = req.baseline.or_else(|| d.baseline.clone()).ok_or(
            "no baseline URL: start serve with --baseline or send \"baseline\"".to_owned(),
        )?;
        let candidate = req.candidate.or_else(|| d.candidate.clone()).ok_or(
            "no candidate URL: start serve with --candidate or send \"candidate\"".to_owned(),
        )?;
        let spec = RunSpec {
            tape,
            baseline,
            candidate,
            secondary: req.secondary.or_else(|| d.secondary.clone()),
            baseline_version: req.baseline_version,
            candidate_version: req.candidate_version,
            _extra: None,
        };
        Ok(spec)
    }

    fn save(&self, state: &RunState) {
        let dir = self.run_dir(&state.id);
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join("state.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
            std::fs::rename(&tmp, dir.join("state.json"))
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, run = %state.id, dir = %dir.display(), "could not save the run state");
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut RunState)) {
        let snapshot = {
            let Ok(mut runs) = self.runs.lock() else {
                return;
            };
            let Some(s) = runs.get_mut(id) else { return };
            f(s);
            s.clone()
        };
        self.save(&snapshot);
    }

    fn get(&self, id: &str) -> Option<RunState> {
        self.runs.lock().ok()?.get(id).cloned()
    }

    /// Starts a run unless one with this id exists. Returns the run and whether it is new.
    fn start(
        self: &Arc<Self>,
        id: String,
        spec: RunSpec,
        flagger: Option<String>,
    ) -> (RunState, bool) {
        let state = {
            let Ok(mut runs) = self.runs.lock() else {
                // A poisoned lock only follows a panic elsewhere; answer with what we have.
                return (
                    RunState {
                        id,
                        status: Status::Error,
                        created_at: now(),
                        started_at: None,
                        finished_at: None,
                        message: Some("internal state is unavailable".into()),
                        title: None,
                        flagger,
                        spec,
                    },
                    false,
                );
            };
            if let Some(existing) = runs.get(&id) {
                return (existing.clone(), false);
            }
            let state = RunState {
                id: id.clone(),
                status: Status::Queued,
                created_at: now(),
                started_at: None,
                finished_at: None,
                message: None,
                title: None,
                flagger,
                spec,
            };
            runs.insert(id.clone(), state.clone());
            state
        };
        self.save(&state);
        self.spawn(id);
        (state, true)
    }

    /// Runs the check for `id` in the background, when a slot is free.
    fn spawn(self: &Arc<Self>, id: String) {
        let shared = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = shared.slots.acquire().await else {
                return;
            };
            let Some(state) = shared.get(&id) else { return };
            shared.update(&id, |s| {
                s.status = Status::Running;
                s.started_at = Some(now());
            });
            tracing::info!(run = %id, baseline = %state.spec.baseline, candidate = %state.spec.candidate, "check started");
            let report = shared.run_dir(&id).join("report");
            let spec = state.spec.clone();
            let settings = shared.settings.clone();
            let ticket = shared
                .defaults
                .tickets
                .then(|| shared.run_dir(&id).join("ticket"));
            let joined = tokio::task::spawn_blocking(move || {
                run_check(&spec, &settings, &report, ticket.as_deref())
            })
            .await;
            let (status, title, message) = match joined {
                Ok(Ok((code, title))) => (
                    match code {
                        0 => Status::Pass,
                        1 => Status::Fail,
                        _ => Status::Inconclusive,
                    },
                    Some(title),
                    None,
                ),
                Ok(Err(e)) => (Status::Error, None, Some(format!("{e:#}"))),
                Err(e) => (
                    Status::Error,
                    None,
                    Some(format!("the check panicked: {e}")),
                ),
            };
            tracing::info!(run = %id, status = status.public(), message = message.as_deref().unwrap_or(""), "check finished");
            shared.update(&id, |s| {
                s.status = status;
                s.finished_at = Some(now());
                s.title = title;
                s.message = message;
            });
            let pruner = shared.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || pruner.prune()).await {
                tracing::warn!(error = %e, "pruning old runs failed");
            }
        });
    }

    /// Deletes the oldest finished runs beyond `--keep-runs` (never a pending one).
    fn prune(&self) {
        let doomed: Vec<String> = {
            let Ok(mut runs) = self.runs.lock() else {
                return;
            };
            let mut done: Vec<(String, String)> = runs
                .values()
                .filter(|s| s.status.done())
                .map(|s| (s.finished_at.clone().unwrap_or_default(), s.id.clone()))
                .collect();
            if done.len() <= self.defaults.keep_runs {
                return;
            }
            done.sort();
            let excess = done.len() - self.defaults.keep_runs;
            let doomed: Vec<String> = done.into_iter().take(excess).map(|(_, id)| id).collect();
            for id in &doomed {
                runs.remove(id);
            }
            doomed
        };
        for id in doomed {
            let dir = self.run_dir(&id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(run = %id, "old run deleted (--keep-runs)"),
                Err(e) => {
                    tracing::warn!(run = %id, dir = %dir.display(), error = %e, "could not delete an old run")
                }
            }
        }
    }

    /// The run document: `status`, the run's bookkeeping, and verdict.json's fields when judged.
    fn document(&self, state: &RunState) -> Value {
        let mut doc = serde_json::Map::new();
        if matches!(
            state.status,
            Status::Pass | Status::Fail | Status::Inconclusive
        ) {
            let path = self.run_dir(&state.id).join("report/verdict.json");
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Value>(&b)) {
                Ok(Ok(Value::Object(v))) => doc = v,
                Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                    tracing::warn!(file = %path.display(), "verdict.json missing or unreadable");
                }
            }
        }
        doc.insert("status".into(), json!(state.status.public()));
        doc.insert("id".into(), json!(state.id));
        doc.insert("phase".into(), json!(state.status));
        doc.insert("created_at".into(), json!(state.created_at));
        doc.insert("started_at".into(), json!(state.started_at));
        doc.insert("finished_at".into(), json!(state.finished_at));
        if let Some(m) = &state.message {
            doc.insert("message".into(), json!(m));
        }
        if let Some(f) = &state.flagger {
            doc.insert("flagger".into(), json!(f));
        }
        doc.insert(
            "report_dir".into(),
            json!(self.run_dir(&state.id).join("report").display().to_string()),
        );
        let ticket = self.run_dir(&state.id).join("ticket/ticket.json");
        if ticket.is_file() {
            doc.insert("ticket".into(), json!(ticket.display().to_string()));
        }
        Value::Object(doc)
    }

    /// Loads `RUNS/*/state.json`; restarts runs that a stop interrupted.
    fn load(self: &Arc<Self>) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(&self.runs_dir)
            .with_context(|| format!("reading {}", self.runs_dir.display()))?;
        let mut restart = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path().join("state.json");
            if !path.is_file() {
                continue;
            }
            let state: RunState = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable run state");
                    continue;
                }
            };
            if !valid_id(&state.id) || entry.file_name().to_str() != Some(state.id.as_str()) {
                tracing::warn!(file = %path.display(), "skipping a run state whose id does not match its directory");
                continue;
            }
            if !state.status.done() {
                restart.push(state.id.clone());
            }
            if let Ok(mut runs) = self.runs.lock() {
                runs.insert(state.id.clone(), state);
            }
        }
        self.prune();
        let loaded = self.runs.lock().map(|r| r.len()).unwrap_or(0);
        tracing::info!(runs = loaded, restarted = restart.len(), dir = %self.runs_dir.display(), "runs loaded");
        for id in restart {
            for sub in ["report", "ticket"] {
                let dir = self.run_dir(&id).join(sub);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).with_context(|| {
                        format!("clearing the interrupted run's {}", dir.display())
                    })?;
                }
            }
            self.update(&id, |s| {
                s.status = Status::Queued;
                s.started_at = None;
            });
            self.spawn(id);
        }
        Ok(())
    }
}

/// The check settings of every run, from `--rules`, `--slo`, `--strict` and the `tapedeck check`
/// flags after `--` (parsed once, at start-up).
fn check_settings(args: &Args) -> anyhow::Result<check::Settings> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        settings: check::Settings,
    }
    let mut argv = vec!["tapedeck serve --".to_owned()];
    if let Some(r) = &args.rules {
        argv.extend(["--rules".to_owned(), r.display().to_string()]);
    }
    for s in &args.slo {
        argv.extend(["--slo".to_owned(), s.clone()]);
    }
    if args.strict {
        argv.push("--strict".into());
    }
    argv.extend(args.check_args.iter().cloned());
    Ok(Wrap::try_parse_from(argv)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string().lines().next().unwrap_or("bad check flags")
            )
        })?
        .settings)
}

/// The check of one run.
fn check_spec(
    spec: &RunSpec,
    settings: &check::Settings,
    report: &Path,
) -> tapedeck_check::CheckSpec {
    let mut check = tapedeck_check::CheckSpec::new(
        spec.tape.iter().map(PathBuf::from).collect(),
        &spec.baseline,
        &spec.candidate,
        report,
    );
    if let Some(s) = &spec.secondary {
        check.noise = tapedeck_check::Noise::Secondary(s.clone());
    }
    check.judge.baseline_version = spec.baseline_version.clone();
    check.judge.candidate_version = spec.candidate_version.clone();
    settings.apply(&mut check);
    check
}

/// Runs one check (blocking); returns its exit code and the verdict's title. With `ticket`, a
/// run that does not pass also gets a bug-ticket bundle there (a failure to write it is logged,
/// not fatal: the verdict stands).
fn run_check(
    spec: &RunSpec,
    settings: &check::Settings,
    report: &Path,
    ticket: Option<&Path>,
) -> anyhow::Result<(u8, String)> {
    let mut check = check_spec(spec, settings, report);
    check.ticket = ticket.map(Path::to_owned);
    let checked = tapedeck_check::check(&check)?;
    if let (Some(dir), Some(ticket)) = (ticket, &checked.ticket) {
        match ticket {
            Ok(outcome) => {
                tracing::info!(summary = %tapedeck_ticket::describe(outcome, dir), "ticket")
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), dir = %dir.display(), "could not write the ticket")
            }
        }
    }
    Ok((checked.outcome.exit_code, checked.outcome.title.clone()))
}

// ---- HTTP ----

type Body = Full<Bytes>;

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn text_response(status: StatusCode, line: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{line}\n"))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error_json(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// Constant-time comparison of the presented token.
fn authorized(token: &str, header: Option<&hyper::header::HeaderValue>) -> bool {
    let Some(presented) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (presented.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("could not read the request body (at most {MAX_BODY} bytes): {e}"),
        )),
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Some(token) = &shared.token
        && !authorized(token, req.headers().get(hyper::header::AUTHORIZATION))
    {
        tracing::debug!(%method, %path, "unauthorized request");
        let mut r = error_json(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return Ok(r);
    }
    let resp = route(&shared, method.clone(), &path, req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    Ok(resp)
}

async fn route(
    shared: &Arc<Shared>,
    method: Method,
    path: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["healthz"]) => text_response(StatusCode::OK, "ok"),
        (Method::POST, ["v1", "runs"]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
                RunRequest::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        return error_json(
                            StatusCode::BAD_REQUEST,
                            &format!("bad run request: {e}"),
                        );
                    }
                }
            };
            let id = request
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            if !valid_id(&id) {
                return error_json(
                    StatusCode::BAD_REQUEST,
                    "bad id: use 1-128 characters of [A-Za-z0-9._-], not starting with a dot",
                );
            }
            if let Some(existing) = shared.get(&id) {
                return json_response(StatusCode::OK, &shared.document(&existing));
            }
            let spec = match shared.resolve(request) {
                Ok(s) => s,
                Err(e) => return error_json(StatusCode::BAD_REQUEST, &e),
            };
            let (state, new) = shared.start(id, spec, None);
            let code = if new {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            json_response(code, &shared.document(&state))
        }
        (Method::GET, ["v1", "runs"]) => {
            let list: Vec<Value> = shared
                .runs
                .lock()
                .map(|runs| {
                    runs.values()
                        .map(|s| json!({"id": s.id, "status": s.status.public(), "created_at": s.created_at}))
                        .collect()
                })
                .unwrap_or_default();
            json_response(StatusCode::OK, &json!({ "runs": list }))
        }
        (Method::GET, ["v1", "runs", id]) | (Method::GET, ["v1", "runs", id, "verdict"]) => {
            match shared.get(id) {
                Some(s) => json_response(StatusCode::OK, &shared.document(&s)),
                None => error_json(StatusCode::NOT_FOUND, &format!("no run {id}")),
            }
        }
        (Method::GET, ["v1", "runs", id, file])
            if *file == "ticket.md" || tapedeck_diff::report::report(file).is_some() =>
        {
            let Some(state) = shared.get(id) else {
                return error_json(StatusCode::NOT_FOUND, &format!("no run {id}"));
            };
            let (sub, content_type) = match tapedeck_diff::report::report(file) {
                Some(r) => ("report", r.content_type),
                None => ("ticket", "text/markdown; charset=utf-8"),
            };
            let path = shared.run_dir(&state.id).join(sub).join(file);
            match tokio::fs::read(&path).await {
                Ok(text) => Response::builder()
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(text)))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                Err(_) => error_json(
                    StatusCode::NOT_FOUND,
                    &format!("run {id} has no {file} (yet)"),
                ),
            }
        }
        (Method::POST, ["flagger", hook]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            flagger(shared, hook, &body)
        }
        (_, ["v1", ..]) | (_, ["flagger", ..]) | (_, ["healthz"]) => {
            error_json(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error_json(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// Flagger webhooks. Answers are one line of text; never 5xx (Flagger retries those and drops the
/// body).
fn flagger(shared: &Arc<Shared>, hook: &str, body: &[u8]) -> Response<Body> {
    let payload: FlaggerPayload = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return text_response(
                StatusCode::BAD_REQUEST,
                &format!("bad Flagger payload: {e}"),
            );
        }
    };
    if payload.checksum.is_empty() {
        return text_response(
            StatusCode::BAD_REQUEST,
            "the Flagger payload has no checksum to key the run by",
        );
    }
    let id = flagger_id(&payload);
    let canary = format!(
        "{}/{} checksum {}",
        payload.namespace, payload.name, payload.checksum
    );
    tracing::info!(hook, canary = %canary, phase = %payload.phase, run = %id, "flagger webhook");
    let start = |shared: &Arc<Shared>| -> Result<RunState, String> {
        if let Some(s) = shared.get(&id) {
            return Ok(s);
        }
        let mut req = RunRequest::default();
        for (k, v) in &payload.metadata {
            match k.as_str() {
                "tape" => req.tape = Some(OneOrMany::One(v.clone())),
                "baseline" => req.baseline = Some(v.clone()),
                "candidate" => req.candidate = Some(v.clone()),
                "secondary" => req.secondary = Some(v.clone()),
                "baseline_version" => req.baseline_version = Some(v.clone()),
                "candidate_version" => req.candidate_version = Some(v.clone()),
                _ => {}
            }
        }
        let spec = shared.resolve(req)?;
        Ok(shared.start(id.clone(), spec, Some(canary.clone())).0)
    };
    let reason = |s: &RunState| -> String {
        let what =
            s.title.clone().or_else(|| s.message.clone()).or_else(|| {
                (s.status == Status::Queued).then(|| "waiting for a free slot".to_owned())
            });
        let line = match what {
            Some(w) => format!("tapedeck run {}: {}: {w}", s.id, s.status.public()),
            None => format!("tapedeck run {}: {}", s.id, s.status.public()),
        };
        // One line, and not a novel: Flagger shows it in events.
        let first = line.lines().next().unwrap_or_default();
        first.chars().take(300).collect()
    };
    match hook {
        "pre-rollout" => match start(shared) {
            Ok(s) => text_response(StatusCode::OK, &reason(&s)),
            Err(e) => text_response(StatusCode::BAD_REQUEST, &e),
        },
        "rollout" => match start(shared) {
            Ok(s) => match s.status {
                Status::Queued | Status::Running | Status::Pass => {
                    text_response(StatusCode::OK, &reason(&s))
                }
                _ => text_response(StatusCode::PRECONDITION_FAILED, &reason(&s)),
            },
            Err(e) => text_response(StatusCode::BAD_REQUEST, &e),
        },
        "confirm-promotion" | "rollback" => {
            let Some(s) = shared.get(&id) else {
                return text_response(
                    StatusCode::PRECONDITION_FAILED,
                    &format!("tapedeck: no run for {canary} (is the pre-rollout webhook set?)"),
                );
            };
            let wanted = if hook == "rollback" {
                Status::Fail
            } else {
                Status::Pass
            };
            let code = if s.status == wanted {
                StatusCode::OK
            } else {
                StatusCode::PRECONDITION_FAILED
            };
            text_response(code, &reason(&s))
        }
        other => text_response(
            StatusCode::NOT_FOUND,
            &format!(
                "unknown Flagger hook {other:?}: use pre-rollout, rollout, confirm-promotion or rollback"
            ),
        ),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.runs)
        .with_context(|| format!("creating {}", args.runs.display()))?;
    let token = args.token.clone().filter(|t| !t.is_empty());
    if token.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "listening beyond loopback without --token: anyone who reaches the port can start runs");
    }
    // Bad check flags are refused at start-up, not at the first run.
    let settings = check_settings(&args).context("check flags after --")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server runtime")?;
    rt.block_on(async move {
        let shared = Arc::new(Shared {
            runs_dir: args.runs.clone(),
            token,
            slots: tokio::sync::Semaphore::new(args.max_parallel.max(1)),
            defaults: args.clone(),
            settings,
            runs: Mutex::new(BTreeMap::new()),
        });
        shared.load()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let local = listener.local_addr().unwrap_or(args.listen);
        tracing::info!(listen = %local, runs = %args.runs.display(), auth = shared.token.is_some(), "serving check runs");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                        {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                    });
                }
            }
        }
        tracing::info!("stopping; unfinished runs start again at the next start-up");
        Ok::<_, anyhow::Error>(())
    })?;
    // Blocking checks cannot be interrupted; do not wait for them.
    rt.shutdown_background();
    Ok(crate::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_directory_names() {
        assert!(valid_id("run-1.a_b"));
        assert!(!valid_id(""));
        assert!(!valid_id(".."));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(129)));
        let p = FlaggerPayload {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            checksum: "6d8f/..x".into(),
            metadata: BTreeMap::new(),
        };
        let id = flagger_id(&p);
        assert!(valid_id(&id), "{id}");
        assert_eq!(id, "flagger-test-podinfo-6d8f-..x");
    }

    #[test]
    fn bearer_tokens_compare_exactly() {
        let h = |s: &'static str| hyper::header::HeaderValue::from_static(s);
        assert!(authorized("abc", Some(&h("Bearer abc"))));
        assert!(!authorized("abc", Some(&h("Bearer abd"))));
        assert!(!authorized("abc", Some(&h("Bearer ab"))));
        assert!(!authorized("abc", Some(&h("Basic abc"))));
        assert!(!authorized("abc", None));
    }

    #[test]
    fn status_is_pending_until_done() {
        assert_eq!(Status::Queued.public(), "pending");
        assert_eq!(Status::Running.public(), "pending");
        assert!(!Status::Running.done());
        assert!(Status::Error.done());
    }
}
