//! `tapedeck-mock`: serves a service's recorded dependency calls as a mock, so a replay of the
//! service runs against the answers its dependencies gave at recording time — per trace, in
//! recorded order — with misses, faults and every call written down.
//!
//! ```no_run
//! use tapedeck_mock::{Mock, MockSpec};
//! let spec = MockSpec::new(vec!["./tapes/pricing".into()], "127.0.0.1:0".parse()?);
//! let mock = Mock::start(spec)?;                 // loads and indexes the tape, binds, serves
//! println!("pricing mock on {}", mock.addr());
//! // … point the service under test at mock.addr(), replay …
//! let summary = mock.stop()?;                     // finishes in-flight calls, closes --out
//! print!("{}", tapedeck_mock::render_text(&summary));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How a request finds its answer
//! 1. **Bucket**: method + route template (`GET /prices/{id}`, the templating of
//!    [`tapedeck_storage::route::template_path`]). A bucket the tape does not have is a miss.
//! 2. **Scope**: with a trace id (W3C `traceparent`, or the header given as
//!    [`MockSpec::trace`]) that the tape knows, only that trace's recorded calls are candidates;
//!    a trace id the tape does not know is a miss ([`UnknownTrace::Miss`], the default: an
//!    answer recorded for another trace is never served) or matched untraced
//!    ([`UnknownTrace::Untraced`]). Without a trace id, or when the tape has no trace ids at
//!    all, the whole tape is the scope.
//! 3. **Equal requests** (path, query pairs, body; see [`shape`](crate) rules below) form a
//!    *class* per scope. A class answers in recorded order: the n-th call gets the n-th
//!    recorded answer; after the last, the last one again (flagged `MOCK_REPEAT`). When several
//!    classes match (wildcards), the one with answers left wins, then the one needing the
//!    fewest wildcards, then the earliest recorded.
//! 4. **Nearest**: no equal request in the scope → the closest recorded request of the same
//!    bucket in the scope answers (flagged `MOCK_NEAREST`): score = 4 × share of equal path
//!    segments + 2 × Jaccard similarity of query pairs + 1 × body similarity (JSON: share of
//!    equal leaves; other bodies: 1 if equal), ties to the earliest recorded.
//!
//! Request comparison: the query as a multiset of decoded pairs; the body after undoing its
//! `Content-Encoding`: JSON structurally (key order, whitespace, `1` vs `1.0` do not matter),
//! form bodies by parameters, other bodies byte for byte. Recorded redaction placeholders
//! (`[REDACTED]`, `REDACTED`, `hmac-sha256:…`) match any value (in text bodies, any run of
//! bytes); ignored fields ([`IgnoreRule`]: `$.timestamp`, `$..request_id`, `?cachebuster`)
//! match anything and may be absent. A recorded request body cut at the capture cap matches
//! bodies that start with it; one the recorder dropped matches any body.
//!
//! # What is served
//! The recorded status, headers and body as stored (the body in its stored `Content-Encoding`,
//! with the stored headers), `Content-Length` recomputed, hop-by-hop headers dropped, trailers
//! sent when recorded. A body the tape holds only in part (cut at the capture cap) is served as
//! stored — a prefix — and counted (`incomplete`); one the recorder dropped goes out empty,
//! without its `Content-Encoding`. A recording without a response (the dependency failed)
//! resets the connection. With [`LatencyMode::Recorded`] the answer waits the recorded time.
//!
//! # Lanes
//! Callers that share trace ids — the baseline and the candidate of one replay both carry the
//! recorded trace — would otherwise share each trace's cursors (the baseline's first call using
//! up the first answer the candidate needs). A request whose `tracestate` holds the member
//! `tapedeck=<name>` (replay adds it, naming the target) with `<name>` in [`MockSpec::lanes`]
//! has cursors of its own; every other request uses lane 0. Up to 7 named lanes.
//!
//! # Faults, misses, output
//! Faults ([`FaultRule`], seeded and keyed per trace, see [`fault`]) come first: a status fault
//! answers instead of the recording and does not use up a recorded answer; a delay fault delays
//! the lookup; a reset fault resets the TCP connection (`SO_LINGER` 0, so the peer gets an
//! RST; on HTTP/2 the whole connection). A miss gets [`OnMiss`]: a status with a JSON body
//! naming method, path, query, trace id and the reason, or the pass-through target's answer.
//! Each request is counted once as `hit`, `miss` or `fault` (a fault wins). With an output
//! tape, every call is an exchange with `target = "mock"`, `source` = the mock's name, the
//! caller's trace id, `origin_id` = the recorded exchange served, and the flags `MOCK_MISS`,
//! `MOCK_FAULT`, `MOCK_NEAREST`, `MOCK_REPEAT` (`error` says why it missed or which fault);
//! the default sensitive headers are redacted before it is written. The writer blocks rather
//! than drop (`WhenFull::Block`).
//!
//! # Invariants
//! - An answer recorded in trace A is never served to a request of trace B (unless
//!   [`UnknownTrace::Untraced`] is chosen for traces the tape does not know).
//! - Within a trace and class, answers go out in recorded order, each once, then the last
//!   repeats; concurrent requests never get the same answer while unused ones are left.
//! - The request path takes no lock shared between worker threads.
//! - Every request is counted exactly once; `/metrics` and the summary read the same counters.
//! - A stop finishes in-flight requests (up to the grace period), writes every record, and
//!   closes the output tape before it returns.
#![forbid(unsafe_code)]

mod admin;
mod error;
pub mod fault;
mod index;
mod server;
mod shape;
mod spec;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tapedeck_storage::{TapeWriter, WhenFull};
use tokio::sync::watch;
use tracing::{info, warn};

pub use error::MockError;
pub use fault::{FaultConfig, FaultRule, FaultsFile, RouteGlob, RouteGlobError};
pub use index::{LANE_KEY, LoadReport, lane_of};
pub use spec::{IgnoreRule, LatencyMode, MockOptions, MockSpec, OnMiss, UnknownTrace};
pub use stats::{FaultCount, MockStats, MockSummary, OutSummary, RouteCount, render_text};

use fault::FaultPlan;
use index::Index;
use server::{Output, Shared};
use shape::Normalizer;

/// Starts mocks.
#[derive(Debug)]
pub struct Mock;

impl Mock {
    /// Loads and indexes the tapes, opens the output tape, binds the listeners and starts
    /// serving. Returns once the mock accepts connections. Blocking (the tape is read here):
    /// call it from a plain thread, or `spawn_blocking` in async code.
    pub fn start(spec: MockSpec) -> Result<MockHandle, MockError> {
        if spec.tapes.is_empty() {
            return Err(MockError::NoTape);
        }
        if let Some(out) = &spec.out
            && spec.tapes.iter().any(|t| t == out)
        {
            return Err(MockError::invalid(
                "--out",
                format!("{} is also a dependency tape", out.display()),
            ));
        }
        let started = Instant::now();
        let mut json = Vec::new();
        let mut params = Vec::new();
        for r in &spec.ignore {
            match r {
                IgnoreRule::Json(p) => json.push(p.clone()),
                IgnoreRule::Param(p) => params.push(p.clone()),
            }
        }
        let index = Index::load(
            &spec.tapes,
            spec.skip_corrupt,
            Normalizer::new(json, params),
        )?;
        let name = spec
            .name
            .clone()
            .or_else(|| index.first_source().map(str::to_owned))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "mock".to_owned());
        let report = index.report().clone();
        if report.exchanges == 0 {
            warn!(mock = %name, "the dependency tape holds no exchange: every request will miss");
        }
        let listeners = tapedeck_common::net::reuseport_listeners(spec.listen, spec.threads)
            .map_err(tapedeck_common::net::BindError::on("mock", spec.listen))?;
        let addr = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(spec.listen);
        let writer = match &spec.out {
            None => None,
            Some(path) => Some(
                TapeWriter::builder(path)
                    .when_full(WhenFull::Block)
                    .metadata("tapedeck.mock", name.clone())
                    .metadata(
                        "tapedeck.mock.tapes",
                        spec.tapes
                            .iter()
                            .map(|t| t.display().to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                    .open()
                    .map_err(|source| MockError::Out {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let faults = FaultPlan::new(spec.faults.clone(), spec.seed);
        let resets_possible = faults.any_reset() || report.without_response > 0;
        let shared = Arc::new(Shared {
            name: name.clone(),
            index,
            faults,
            on_miss: spec.on_miss.clone(),
            latency: spec.latency,
            trace: spec.trace.clone(),
            unknown_trace: spec.unknown_trace,
            lanes: spec.lanes.clone(),
            max_request_body: spec.max_request_body,
            grace: spec.grace,
            out: writer.as_ref().map(|w| Output {
                sender: w.sender(),
                redactor: tapedeck_common::RuleRedactor::default(),
            }),
            counters: (0..listeners.len())
                .map(|_| stats::Counters::default())
                .collect(),
            misses: stats::MissRoutes::default(),
            resets_possible,
            http: Shared::http_builder(),
        });
        let admin = match spec.admin {
            None => None,
            Some(a) => Some(admin::Admin::start(a, shared.clone())?),
        };
        // Grown once now rather than by doubling while connections arrive: each growth stalls
        // a worker, and every connection on it, for 5–10 ms.
        tapedeck_common::net::reserve_fd_table(tapedeck_common::net::SERVER_FD_TABLE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            match server::spawn_worker(i, l, shared.clone(), stop_rx.clone()) {
                Ok(w) => workers.push(w),
                Err(source) => {
                    let _ = stop_tx.send(true);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(MockError::Start {
                        what: "a mock worker thread",
                        source,
                    });
                }
            }
        }
        info!(
            mock = %name,
            addr = %addr,
            exchanges = report.exchanges,
            routes = report.routes,
            traces = report.traces,
            load_ms = started.elapsed().as_millis() as u64,
            "mock serving"
        );
        Ok(MockHandle {
            name,
            addr,
            shared,
            workers,
            stop: stop_tx,
            admin,
            writer,
            out: spec.out,
            started,
        })
    }
}

/// A running mock. Dropping it stops it (like [`stop`](MockHandle::stop), without the
/// summary).
#[derive(Debug)]
pub struct MockHandle {
    name: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    admin: Option<admin::Admin>,
    writer: Option<TapeWriter>,
    out: Option<std::path::PathBuf>,
    started: Instant,
}

pub(crate) fn fault_counts(plan: &FaultPlan) -> Vec<FaultCount> {
    plan.rules()
        .iter()
        .zip(plan.injected())
        .map(|(r, injected)| FaultCount {
            rule: r.label.clone(),
            rate: r.rate,
            injected,
        })
        .collect()
}

impl MockHandle {
    /// The address the mock listens on (the port it got when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The mock's name (the `source` of its output exchanges).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What loading the tape found.
    pub fn tape(&self) -> &LoadReport {
        self.shared.index.report()
    }

    /// The live counters.
    pub fn stats(&self) -> MockStats {
        stats::MockStats::sum(self.shared.counters.iter())
    }

    /// Starts every recorded sequence again at its first answer (for a second pass of the
    /// same replay through the same mock).
    pub fn rewind(&self) {
        self.shared.index.rewind();
    }

    fn summary(&self, out: Option<OutSummary>) -> MockSummary {
        MockSummary {
            name: self.name.clone(),
            addr: self.addr,
            tape: self.shared.index.report().clone(),
            stats: self.stats(),
            faults: fault_counts(&self.shared.faults),
            misses_by_route: self.shared.misses.snapshot(),
            out,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                warn!("a mock worker thread panicked");
            }
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), writes every
    /// record and closes the output tape; returns what the mock did.
    pub fn stop(mut self) -> Result<MockSummary, MockError> {
        self.shutdown();
        let out = match (self.writer.take(), self.out.clone()) {
            (Some(w), Some(path)) => {
                let stats = w.close().map_err(|source| MockError::Out {
                    path: path.clone(),
                    source,
                })?;
                Some(OutSummary::new(path, &stats))
            }
            _ => None,
        };
        Ok(self.summary(out))
    }
}

/// Starts the mock and serves until `SIGINT` or `SIGTERM`, then [`stop`](MockHandle::stop)s it
/// and returns the summary. The signal handlers are installed before the tape is loaded, so a
/// signal at any time is a graceful stop. `on_start` runs once the mock accepts connections
/// (the command line prints the address there). For command-line front ends.
pub fn run_until_signal(
    spec: MockSpec,
    on_start: impl FnOnce(&MockHandle),
) -> Result<MockSummary, MockError> {
    use tokio::signal::unix::{SignalKind, signal};
    let start = |source| MockError::Start {
        what: "the signal handlers",
        source,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(start)?;
    let (mut term, mut int) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate()).map_err(start)?,
            signal(SignalKind::interrupt()).map_err(start)?,
        )
    };
    let mock = Mock::start(spec)?;
    on_start(&mock);
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    info!(mock = %mock.name, "stopping: finishing the calls in flight");
    mock.stop()
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.shutdown();
        }
    }
}
