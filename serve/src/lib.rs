//! `tapedeck serve`: the check pipeline (`tapedeck_check`) as a small HTTP/1.1 service, for
//! rollout controllers that ask over HTTP instead of running a Job: the Argo Rollouts **Web**
//! metric provider and **Flagger** webhooks.
//!
//! A [`ServeSpec`] says where to listen and keep runs, the defaults of a run's request
//! ([`Defaults`]) and the template of every run's check (a [`CheckSpec`]: pacing, selection,
//! judge settings, mocks, corpus…, built once by the caller, never re-parsed here).
//! [`Server::start`] binds and loads the runs; [`Server::run`] answers until a shutdown future
//! resolves.
//!
//! ```no_run
//! # async fn example() -> Result<(), tapedeck_serve::ServeError> {
//! let mut spec = tapedeck_serve::ServeSpec::new("127.0.0.1:8480".parse().unwrap(), "./runs");
//! spec.defaults.tape = vec!["./tapes/svc".into()];
//! spec.defaults.baseline = Some("http://svc-stable:80".into());
//! spec.check.replay.limit = Some(5000);
//! let server = tapedeck_serve::Server::start(spec).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! # API
//! - `POST /v1/runs` — body (JSON, every field optional, unknown fields rejected, at most
//!   [`MAX_BODY`] bytes): [`RunRequest`] `{id, tape, baseline, candidate, secondary,
//!   baseline_version, candidate_version}`; the rest comes from the [`Defaults`]. Starts a check
//!   run in the background and answers `202` with the run document; an `id` that already exists
//!   answers `200` with that run (the id is an idempotency key, so one Argo Web metric can both
//!   start and poll a run).
//! - `GET /v1/runs` — every run's id and status.
//! - `GET /v1/runs/{id}/report.md` (or any report file: `report.html`, `verdict.json`,
//!   `junit.xml`, see `tapedeck_diff::report::REPORTS`), `GET /v1/runs/{id}/ticket.md` — the
//!   judged run's reports and (with [`ServeSpec::tickets`], for a run that did not pass) its bug
//!   ticket.
//! - `GET /v1/runs/{id}` and `GET /v1/runs/{id}/verdict` — the run document: top-level `status`
//!   `pending | pass | fail | inconclusive | error`, plus, once judged, every field of
//!   `verdict.json` (docs/verdict.md). `status` follows the check's exit code: a marginal verdict
//!   is `pass` unless the judge is strict; `inconclusive_as` applies. `404` for an unknown id.
//! - `POST /flagger/pre-rollout` — Flagger's payload ([`FlaggerPayload`] `{name, namespace,
//!   phase, checksum, metadata}`): starts the run keyed by `namespace/name/checksum`
//!   ([`FlaggerPayload::run_id`]: the same checksum is the same run). `metadata` may override
//!   `tape`, `baseline`, `candidate`, `secondary`, `baseline_version`, `candidate_version`.
//! - `POST /flagger/rollout` — `200` while that run is `pending` or `pass`, `412` with a one-line
//!   reason on `fail`, `inconclusive` or `error` (never `5xx`: Flagger retries those and drops the
//!   body). A run that does not exist yet is started (as by `pre-rollout`) and reported pending.
//! - `POST /flagger/confirm-promotion` — `200` only when the run finished with `pass`.
//! - `POST /flagger/rollback` — `200` only when the run finished with `fail` (Flagger then rolls
//!   back).
//! - `GET /healthz` — `ok`.
//!
//! A refused request answers with its [`RequestError`]'s status and message (JSON `{"error"}` on
//! `/v1`, one line of text on `/flagger`). With a [`ServeSpec::token`] every request must carry
//! `Authorization: Bearer <token>` (compared in constant time), else `401`.
//!
//! # State
//! Each run lives in `RUNS/{id}/`: `state.json` (id, status, times, the resolved [`RunSpec`], an
//! error message) and `report/` (what `tapedeck check` writes: verdict.json, report.md,
//! junit.xml, and the run tape in `report/run`). `state.json` is replaced atomically (write to a
//! temporary file, rename). At start-up every `state.json` is read: finished runs answer as
//! before, runs that a stop interrupted are started again from scratch. At most
//! [`ServeSpec::max_parallel`] checks run at once; the others wait as `pending`. The newest
//! [`ServeSpec::keep_runs`] finished runs are kept; older ones are deleted when a run finishes
//! and at start-up.

#![forbid(unsafe_code)]

mod error;
mod flagger;
mod http;
mod request;
mod store;

pub use error::{RequestError, ServeError};
pub use request::{
    Defaults, FlaggerPayload, MAX_BODY, RunRequest, RunSpec, Tapes, parse_flagger,
    parse_run_request, valid_id,
};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tapedeck_check::CheckSpec;

use crate::http::Api;
use crate::store::Store;

/// Everything a server needs.
#[derive(Debug, Clone)]
pub struct ServeSpec {
    /// Address to listen on (port 0: any free port, see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Directory for the runs' state and reports (created).
    pub runs: PathBuf,
    /// Require `Authorization: Bearer TOKEN` on every request (an empty token is none).
    pub token: Option<String>,
    /// Checks running at once (at least 1); more wait as pending.
    pub max_parallel: usize,
    /// Keep the newest N finished runs; older ones (state and reports) are deleted.
    pub keep_runs: usize,
    /// Write a bug-ticket bundle to `RUNS/{id}/ticket` when a run does not pass.
    pub tickets: bool,
    /// What a run uses when its request does not say.
    pub defaults: Defaults,
    /// The template of every run's check. Each run replaces its tapes, baseline and candidate,
    /// the noise target when the run names a second baseline, the version labels, `report`
    /// (`RUNS/{id}/report`), `out` (the run tape goes in `report/run`), `ticket` and `progress`
    /// (quiet); everything else applies as given.
    pub check: CheckSpec,
}

impl ServeSpec {
    /// A server on `listen` keeping runs in `runs`: no token, one check at a time, the newest 500
    /// finished runs kept, no tickets, no defaults, and `tapedeck check`'s default check.
    pub fn new(listen: SocketAddr, runs: impl Into<PathBuf>) -> ServeSpec {
        ServeSpec {
            listen,
            runs: runs.into(),
            token: None,
            max_parallel: 1,
            keep_runs: 500,
            tickets: false,
            defaults: Defaults::default(),
            check: CheckSpec::new(Vec::new(), "", "", ""),
        }
    }
}

/// Checks the template as a run would use it, with the defaults, and stand-ins for the tape and
/// targets a run request may still name (nothing is read from them or sent to them).
fn validate_template(spec: &ServeSpec) -> Result<(), ServeError> {
    let probe = RunSpec::probe(&spec.defaults);
    let check = store::check_for(&spec.check, &probe, spec.runs.join("report"), None);
    tapedeck_check::validate(&check).map_err(ServeError::Check)
}

/// A bound server with its runs loaded.
#[derive(Debug)]
pub struct Server {
    api: Arc<Api>,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
}

impl Server {
    /// Creates the runs directory, binds the listen address, loads the runs kept there and
    /// starts again, in the background, the ones that a stop interrupted. Must be called inside
    /// a Tokio runtime (checks run on its blocking threads).
    pub async fn start(spec: ServeSpec) -> Result<Server, ServeError> {
        validate_template(&spec)?;
        std::fs::create_dir_all(&spec.runs).map_err(|source| ServeError::RunsDir {
            doing: "creating",
            path: spec.runs.clone(),
            source,
        })?;
        let listener = tokio::net::TcpListener::bind(spec.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: spec.listen,
                source,
            })?;
        let local = listener.local_addr().unwrap_or(spec.listen);
        let store = Arc::new(Store::new(&spec));
        store.load()?;
        let token = spec.token.filter(|t| !t.is_empty());
        Ok(Server {
            api: Arc::new(Api { store, token }),
            listener,
            local,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Answers requests until `shutdown` resolves. Checks in flight cannot be interrupted: they
    /// keep running on the runtime's blocking threads (a binary drops its runtime with
    /// `shutdown_background`), and their runs, still `running` in `state.json`, start again
    /// from scratch at the next [`Server::start`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            api,
            listener,
            local,
        } = self;
        tracing::info!(listen = %local, runs = %api.store.dir().display(), auth = api.token.is_some(), "serving check runs");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let api = api.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| http::handle(api.clone(), req));
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
    }
}
