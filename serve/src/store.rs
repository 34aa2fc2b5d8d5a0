//! The run store: every run's [`RunState`] in memory and in `RUNS/{id}/state.json` (replaced
//! atomically), the `max_parallel` slots, the checks themselves (on blocking threads, through
//! `tapedeck_check::check`), pruning beyond `keep_runs`, and loading at start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tapedeck_check::{CheckError, CheckSpec, Noise, ProgressStyle};

use crate::request::{Defaults, RunSpec, valid_id};
use crate::{ServeError, ServeSpec};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
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
    pub(crate) fn public(self) -> &'static str {
        match self {
            Status::Queued | Status::Running => "pending",
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Inconclusive => "inconclusive",
            Status::Error => "error",
        }
    }

    pub(crate) fn done(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    /// The status of a judged run from the check's exit code (which already applies `strict`
    /// and `inconclusive_as`).
    fn from_exit_code(code: u8) -> Status {
        match code {
            0 => Status::Pass,
            1 => Status::Fail,
            _ => Status::Inconclusive,
        }
    }
}

/// `RUNS/{id}/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunState {
    pub(crate) id: String,
    pub(crate) status: Status,
    pub(crate) created_at: String,
    pub(crate) started_at: Option<String>,
    pub(crate) finished_at: Option<String>,
    /// Why the run errored.
    pub(crate) message: Option<String>,
    /// One line for humans: the verdict's title once judged.
    pub(crate) title: Option<String>,
    /// Flagger canary `namespace/name` and checksum, for runs started by a webhook.
    pub(crate) flagger: Option<String>,
    pub(crate) spec: RunSpec,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Every run, and what runs them.
pub(crate) struct Store {
    dir: PathBuf,
    defaults: Defaults,
    /// The template of every run's check ([`check_for`]).
    check: CheckSpec,
    tickets: bool,
    keep_runs: usize,
    runs: Mutex<BTreeMap<String, RunState>>,
    slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("keep_runs", &self.keep_runs)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(spec: &ServeSpec) -> Store {
        Store {
            dir: spec.runs.clone(),
            defaults: spec.defaults.clone(),
            check: spec.check.clone(),
            tickets: spec.tickets,
            keep_runs: spec.keep_runs,
            runs: Mutex::new(BTreeMap::new()),
            slots: tokio::sync::Semaphore::new(spec.max_parallel.max(1)),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    pub(crate) fn run_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
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

    pub(crate) fn get(&self, id: &str) -> Option<RunState> {
        self.runs.lock().ok()?.get(id).cloned()
    }

    /// `GET /v1/runs`: every run's id, public status and creation time.
    pub(crate) fn list(&self) -> Vec<Value> {
        self.runs
            .lock()
            .map(|runs| {
                runs.values()
                    .map(|s| json!({"id": s.id, "status": s.status.public(), "created_at": s.created_at}))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Starts a run unless one with this id exists. Returns the run and whether it is new.
    pub(crate) fn start(
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
        let store = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = store.slots.acquire().await else {
                return;
            };
            let Some(state) = store.get(&id) else { return };
            store.update(&id, |s| {
                s.status = Status::Running;
                s.started_at = Some(now());
            });
            tracing::info!(run = %id, baseline = %state.spec.baseline, candidate = %state.spec.candidate, "check started");
            let ticket = store.tickets.then(|| store.run_dir(&id).join("ticket"));
            let check = check_for(
                &store.check,
                &state.spec,
                store.run_dir(&id).join("report"),
                ticket,
            );
            let joined = tokio::task::spawn_blocking(move || run_check(&check)).await;
            let (status, title, message) = match joined {
                Ok(Ok((code, title))) => (Status::from_exit_code(code), Some(title), None),
                Ok(Err(e)) => (Status::Error, None, Some(chain(&e))),
                Err(e) => (
                    Status::Error,
                    None,
                    Some(format!("the check panicked: {e}")),
                ),
            };
            tracing::info!(run = %id, status = status.public(), message = message.as_deref().unwrap_or(""), "check finished");
            store.update(&id, |s| {
                s.status = status;
                s.finished_at = Some(now());
                s.title = title;
                s.message = message;
            });
            let pruner = store.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || pruner.prune()).await {
                tracing::warn!(error = %e, "pruning old runs failed");
            }
        });
    }

    /// Deletes the oldest finished runs beyond `keep_runs` (never a pending one).
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
            if done.len() <= self.keep_runs {
                return;
            }
            done.sort();
            let excess = done.len() - self.keep_runs;
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
    pub(crate) fn document(&self, state: &RunState) -> Value {
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

    /// Loads `RUNS/*/state.json` (skipping unreadable ones and ones whose id is not their
    /// directory's name), prunes, and starts again the runs that a stop interrupted, from
    /// scratch (their `report/` and `ticket/` are cleared first).
    pub(crate) fn load(self: &Arc<Self>) -> Result<(), ServeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| ServeError::RunsDir {
            doing: "reading",
            path: self.dir.clone(),
            source,
        })?;
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
        tracing::info!(runs = loaded, restarted = restart.len(), dir = %self.dir.display(), "runs loaded");
        for id in restart {
            for sub in ["report", "ticket"] {
                let path = self.run_dir(&id).join(sub);
                if path.exists() {
                    std::fs::remove_dir_all(&path)
                        .map_err(|source| ServeError::ClearInterrupted { path, source })?;
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

/// The check of one run: the template with the run's tapes, targets and versions, its reports
/// in `report` (the run tape in `report/run`), a ticket bundle in `ticket` when given, quiet.
/// The run's `secondary` replaces the template's noise target; without one the template's
/// stays (the baseline replayed twice, or none).
pub(crate) fn check_for(
    template: &CheckSpec,
    run: &RunSpec,
    report: PathBuf,
    ticket: Option<PathBuf>,
) -> CheckSpec {
    let mut check = template.clone();
    check.tapes = run.tape.iter().map(PathBuf::from).collect();
    check.baseline = run.baseline.clone();
    check.candidate = run.candidate.clone();
    if let Some(s) = &run.secondary {
        check.noise = Noise::Secondary(s.clone());
    }
    check.judge.baseline_version = run.baseline_version.clone();
    check.judge.candidate_version = run.candidate_version.clone();
    check.report = report;
    check.out = None;
    check.ticket = ticket;
    check.progress = ProgressStyle::Quiet;
    check
}

/// Runs one check (blocking); returns its exit code and the verdict's title. A ticket that could
/// not be written is logged, not fatal: the verdict stands.
fn run_check(check: &CheckSpec) -> Result<(u8, String), CheckError> {
    let checked = tapedeck_check::check(check)?;
    if let (Some(dir), Some(ticket)) = (&check.ticket, &checked.ticket) {
        match ticket {
            Ok(outcome) => {
                tracing::info!(summary = %tapedeck_ticket::describe(outcome, dir), "ticket")
            }
            Err(e) => {
                tracing::warn!(error = %chain(e), dir = %dir.display(), "could not write the ticket")
            }
        }
    }
    Ok((checked.outcome.exit_code, checked.outcome.title.clone()))
}

/// An error and its causes joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RunRequest, Tapes};

    #[test]
    fn status_is_pending_until_done() {
        assert_eq!(Status::Queued.public(), "pending");
        assert_eq!(Status::Running.public(), "pending");
        assert!(!Status::Running.done());
        assert!(Status::Error.done());
        assert_eq!(Status::from_exit_code(0), Status::Pass);
        assert_eq!(Status::from_exit_code(1), Status::Fail);
        assert_eq!(Status::from_exit_code(3), Status::Inconclusive);
    }

    fn run(secondary: Option<&str>) -> RunSpec {
        RunRequest {
            tape: Some(Tapes::Many(vec!["a".into(), "b".into()])),
            baseline: Some("http://b".into()),
            candidate: Some("http://c".into()),
            secondary: secondary.map(str::to_owned),
            candidate_version: Some("v2".into()),
            ..RunRequest::default()
        }
        .resolve(&Defaults::default())
        .expect("resolves")
    }

    #[test]
    fn a_run_check_is_the_template_with_the_run_s_targets() {
        let mut template = CheckSpec::new(Vec::new(), "", "", "");
        template.replay.rate = Some(50.0);
        template.replay.limit = Some(7);
        template.judge.strict = true;
        template.judge.slos = vec!["GET /: p95<300ms".into()];
        template.out = Some(PathBuf::from("/elsewhere"));
        template.progress = ProgressStyle::Bar;

        let check = check_for(
            &template,
            &run(None),
            PathBuf::from("/runs/r/report"),
            Some(PathBuf::from("/runs/r/ticket")),
        );
        assert_eq!(check.tapes, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(check.baseline, "http://b");
        assert_eq!(check.candidate, "http://c");
        assert_eq!(check.noise, Noise::Baseline);
        assert_eq!(check.judge.candidate_version.as_deref(), Some("v2"));
        assert_eq!(check.judge.baseline_version, None);
        assert_eq!(check.report, PathBuf::from("/runs/r/report"));
        assert_eq!(check.run_dir(), PathBuf::from("/runs/r/report/run"));
        assert_eq!(check.ticket, Some(PathBuf::from("/runs/r/ticket")));
        assert_eq!(check.progress, ProgressStyle::Quiet);
        // Everything else comes from the template.
        assert_eq!(check.replay.rate, Some(50.0));
        assert_eq!(check.replay.limit, Some(7));
        assert!(check.judge.strict);
        assert_eq!(check.judge.slos, template.judge.slos);

        // A run's second baseline is its noise target; without one the template's stays.
        let check = check_for(&template, &run(Some("http://s")), PathBuf::new(), None);
        assert_eq!(check.noise, Noise::Secondary("http://s".into()));
        template.noise = Noise::Off;
        let check = check_for(&template, &run(None), PathBuf::new(), None);
        assert_eq!(check.noise, Noise::Off);
        let check = check_for(&template, &run(Some("http://s")), PathBuf::new(), None);
        assert_eq!(check.noise, Noise::Secondary("http://s".into()));
    }

    #[test]
    fn error_chains_join_their_causes() {
        let e = CheckError::Exists {
            path: PathBuf::from("/r/run"),
            choose: "--out",
        };
        assert_eq!(chain(&e), e.to_string());
        let io = std::io::Error::other("disk on fire");
        let e = ServeError::RunsDir {
            doing: "creating",
            path: PathBuf::from("/runs"),
            source: io,
        };
        assert_eq!(chain(&e), "creating /runs: disk on fire");
    }
}
