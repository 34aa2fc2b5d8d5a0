//! The chaos section of a verdict: how the candidate answered when its dependencies failed.
//!
//! `check --chaos FAULTS.toml` replays the tape a second time, to the candidate alone (target
//! label [`ChaosInput::target`]), with its dependency mocks injecting the faults of the file. A
//! replayed request is *affected* by a fault when a dependency call of its trace got that fault
//! (the mock's calls tape: flag `MOCK_FAULT`, `error` ending in `(rule LABEL)`). Each affected
//! request's answer is compared with the candidate's own fault-free answer to the same recorded
//! request (same `origin_id`, from the first run):
//! - **timeout**: no answer within the replay's timeout;
//! - **5xx introduced**: a 5xx or no response where the fault-free answer was neither;
//! - **slower than the fault**: latency beyond the fault-free latency plus the injected delay
//!   plus a slack of `max(250 ms, half the fault-free latency)` (retry storms, stacked
//!   timeouts);
//! - otherwise **graceful** (a cached value, a default, a 4xx the client can act on…).
//!
//! A fault is `graceful` when every affected request was, `degraded` when one was not,
//! `not-triggered` when no call got it. The section informs; it does not change the verdict.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;
use tapedeck_storage::{ErrorKind, Exchange, ReadOptions, flags, schema::col};

use crate::deps::read_all;
use crate::error::DiffError;
use crate::route::RouteKeyer;

/// Examples kept per fault.
const MAX_EXAMPLES: usize = 3;

/// The smallest latency slack before an affected request counts as slower than its fault.
const MIN_SLACK_US: i64 = 250_000;

/// One injected fault, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosFault {
    /// Its label, as the mock writes it in `error` (`(rule LABEL)`).
    pub label: String,
    /// What it does (`status=503`, `delay=2000ms reset`).
    pub effect: String,
    /// Its injected delay, µs.
    pub delay_us: i64,
}

/// The chaos run to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosInput {
    /// The run with faults (the candidate alone).
    pub run: Vec<PathBuf>,
    /// The candidate's target label in that run.
    pub target: String,
    /// The dependency mocks' calls tapes of that run.
    pub calls: Vec<PathBuf>,
    /// The faults injected.
    pub faults: Vec<ChaosFault>,
}

/// An affected request that did not degrade gracefully.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosExample {
    /// Its route.
    pub route: String,
    /// The recorded exchange replayed.
    pub origin_id: String,
    /// The fault-free answer: status (or error kind) and latency.
    pub fault_free: String,
    /// The answer with the fault.
    pub with_fault: String,
}

/// How the candidate answered under one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// The fault's label.
    pub fault: String,
    /// What it does.
    pub effect: String,
    /// `graceful`, `degraded` or `not-triggered`.
    pub outcome: String,
    /// Dependency calls that got the fault.
    pub injected: u64,
    /// Replayed requests with such a call in their trace (and a fault-free answer to compare).
    pub requests: u64,
    /// Of those, answered as well as a dependency failure allows.
    pub graceful: u64,
    /// Of those, a 5xx (or no response) where the fault-free answer was fine.
    pub server_errors: u64,
    /// Of those, no answer within the replay's timeout.
    pub timeouts: u64,
    /// Of those, slower than the fault-free answer by more than the injected delay (and slack).
    pub slower_than_fault: u64,
    /// Affected routes.
    pub routes: Vec<String>,
    /// Requests that did not degrade gracefully, the first few.
    pub examples: Vec<ChaosExample>,
}

/// The chaos section.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The candidate's label in the chaos run.
    pub target: String,
    /// Requests replayed with faults.
    pub requests: u64,
    /// Of those, requests no fault touched.
    pub unaffected: u64,
    /// Requests with no fault-free answer to compare with.
    pub unpaired: u64,
    /// Per fault.
    pub faults: Vec<FaultReport>,
}

impl ChaosReport {
    /// One sentence per fault that degraded the candidate.
    pub fn reasons(&self) -> Vec<String> {
        self.faults
            .iter()
            .filter(|f| f.outcome == "degraded")
            .map(|f| {
                let mut what = Vec::new();
                if f.server_errors > 0 {
                    what.push(format!("{} answered 5xx", f.server_errors));
                }
                if f.timeouts > 0 {
                    what.push(format!("{} timed out", f.timeouts));
                }
                if f.slower_than_fault > 0 {
                    what.push(format!("{} slower than the fault", f.slower_than_fault));
                }
                format!(
                    "Chaos: under `{}` ({}) the candidate did not degrade gracefully: of {} affected request(s), {}.",
                    f.fault,
                    f.effect,
                    f.requests,
                    what.join(", ")
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
struct Answer {
    status: Option<u16>,
    error: Option<ErrorKind>,
    total_us: Option<i64>,
}

impl Answer {
    fn of(ex: &Exchange) -> Answer {
        Answer {
            status: ex.status,
            error: ex.error_kind,
            total_us: ex.total_us.or(ex.ttfb_us),
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some() || self.status.is_none_or(|s| s >= 500)
    }

    fn describe(&self) -> String {
        let what = match (self.status, self.error) {
            (_, Some(e)) => e.as_str().to_owned(),
            (Some(s), None) => s.to_string(),
            (None, None) => "no response".to_owned(),
        };
        match self.total_us {
            Some(us) => format!("{what} in {} ms", us / 1000),
            None => what,
        }
    }
}

/// Builds the chaos section from the fault-free run (`run`, the candidate labelled
/// `candidate`) and the chaos run.
pub fn analyze(
    run: &[PathBuf],
    candidate: &str,
    chaos: &ChaosInput,
    keyer: &mut RouteKeyer,
    skip_corrupt: bool,
) -> Result<ChaosReport, DiffError> {
    let read = ReadOptions {
        skip_corrupt,
        columns: Some(
            [
                col::TARGET,
                col::ORIGIN_ID,
                col::TRACE_ID,
                col::METHOD,
                col::PATH,
                col::QUERY,
                col::STATUS,
                col::ERROR_KIND,
                col::TOTAL_US,
                col::TTFB_US,
            ]
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        ),
        ..ReadOptions::default()
    };
    let mut fault_free: HashMap<uuid::Uuid, Answer> = HashMap::new();
    read_all(run, "run", &read, |ex| {
        if ex.target.as_deref() == Some(candidate)
            && let Some(o) = ex.origin_id
        {
            fault_free.insert(o, Answer::of(&ex));
        }
    })?;
    // trace → faults its dependency calls got; per fault, calls.
    let mut faults_of: HashMap<String, HashSet<usize>> = HashMap::new();
    let mut injected = vec![0u64; chaos.faults.len()];
    let calls_read = ReadOptions {
        skip_corrupt,
        columns: Some(
            [col::TRACE_ID, col::FLAGS, col::ERROR]
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        ),
        ..ReadOptions::default()
    };
    read_all(&chaos.calls, "chaos calls", &calls_read, |ex| {
        if !ex.has_flag(flags::MOCK_FAULT) {
            return;
        }
        let error = ex.error.as_deref().unwrap_or_default();
        let Some(i) = chaos
            .faults
            .iter()
            .position(|f| error.ends_with(&format!("(rule {})", f.label)))
        else {
            return;
        };
        injected[i] += 1;
        if let Some(t) = ex.trace_id {
            faults_of.entry(t).or_default().insert(i);
        }
    })?;
    let mut reports: Vec<FaultReport> = chaos
        .faults
        .iter()
        .zip(&injected)
        .map(|(f, n)| FaultReport {
            fault: f.label.clone(),
            effect: f.effect.clone(),
            outcome: String::new(),
            injected: *n,
            requests: 0,
            graceful: 0,
            server_errors: 0,
            timeouts: 0,
            slower_than_fault: 0,
            routes: Vec::new(),
            examples: Vec::new(),
        })
        .collect();
    let (mut requests, mut unaffected, mut unpaired) = (0u64, 0u64, 0u64);
    read_all(&chaos.run, "chaos run", &read, |ex| {
        if ex.target.as_deref() != Some(chaos.target.as_str()) {
            return;
        }
        requests += 1;
        let hit = ex.trace_id.as_ref().and_then(|t| faults_of.get(t));
        let Some(hit) = hit.filter(|h| !h.is_empty()) else {
            unaffected += 1;
            return;
        };
        let Some(free) = ex.origin_id.and_then(|o| fault_free.get(&o)) else {
            unpaired += 1;
            return;
        };
        let with = Answer::of(&ex);
        let route = keyer.key(&ex.method, &ex.path, ex.query.as_deref());
        for &i in hit {
            let (f, r) = (&chaos.faults[i], &mut reports[i]);
            r.requests += 1;
            if !r.routes.contains(&route) {
                r.routes.push(route.clone());
            }
            let slack = MIN_SLACK_US.max(free.total_us.unwrap_or(0) / 2);
            let bad = if with.error == Some(ErrorKind::Timeout) {
                r.timeouts += 1;
                true
            } else if with.failed() && !free.failed() {
                r.server_errors += 1;
                true
            } else if let (Some(w), Some(b)) = (with.total_us, free.total_us)
                && w > b + f.delay_us + slack
            {
                r.slower_than_fault += 1;
                true
            } else {
                r.graceful += 1;
                false
            };
            if bad && r.examples.len() < MAX_EXAMPLES {
                r.examples.push(ChaosExample {
                    route: route.clone(),
                    origin_id: ex.origin_id.map(|o| o.to_string()).unwrap_or_default(),
                    fault_free: free.describe(),
                    with_fault: with.describe(),
                });
            }
        }
    })?;
    for r in &mut reports {
        r.routes.sort();
        r.outcome = if r.injected == 0 || r.requests == 0 {
            "not-triggered"
        } else if r.graceful == r.requests {
            "graceful"
        } else {
            "degraded"
        }
        .to_owned();
    }
    Ok(ChaosReport {
        target: chaos.target.clone(),
        requests,
        unaffected,
        unpaired,
        faults: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_storage::{TapeWriter, WhenFull};

    fn write(dir: &std::path::Path, rows: &[Exchange]) {
        let w = TapeWriter::builder(dir)
            .when_full(WhenFull::Block)
            .open()
            .expect("open");
        for r in rows {
            w.append(r.clone()).expect("append");
        }
        w.close().expect("close");
    }

    fn row(target: &str, i: u128, status: Option<u16>, ms: i64) -> Exchange {
        Exchange {
            id: Exchange::new_id(),
            method: "GET".into(),
            path: format!("/orders/{i}").into(),
            target: Some(target.into()),
            origin_id: Some(uuid::Uuid::from_u128(i + 1)),
            trace_id: Some(format!("{:032x}", i + 1)),
            status,
            error_kind: status.is_none().then_some(ErrorKind::Timeout),
            total_us: Some(ms * 1000),
            ..Exchange::default()
        }
    }

    #[test]
    fn each_affected_request_is_judged_against_its_fault_free_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, chaos_run, calls) = (
            dir.path().join("run"),
            dir.path().join("chaos"),
            dir.path().join("calls"),
        );
        write(
            &run,
            &(0..5)
                .map(|i| row("candidate", i, Some(200), 10))
                .collect::<Vec<_>>(),
        );
        // 0: cached answer (graceful); 1: 500; 2: timeout; 3: 200 but 2 s slower than a
        // 300 ms delay allows; 4: no fault in its trace.
        write(
            &chaos_run,
            &[
                row("chaos", 0, Some(200), 12),
                row("chaos", 1, Some(500), 5),
                row("chaos", 2, None, 30_000),
                row("chaos", 3, Some(200), 2_400),
                row("chaos", 4, Some(200), 10),
            ],
        );
        let fault = |i: u128, rule: &str| Exchange {
            id: Exchange::new_id(),
            trace_id: Some(format!("{:032x}", i + 1)),
            flags: flags::MOCK_FAULT,
            error: Some(format!("injected fault: status=503 (rule {rule})")),
            ..Exchange::default()
        };
        write(
            &calls,
            &[
                fault(0, "down"),
                fault(1, "down"),
                fault(2, "down"),
                fault(3, "slow"),
            ],
        );
        let input = ChaosInput {
            run: vec![chaos_run],
            target: "chaos".into(),
            calls: vec![calls],
            faults: vec![
                ChaosFault {
                    label: "down".into(),
                    effect: "status=503".into(),
                    delay_us: 0,
                },
                ChaosFault {
                    label: "slow".into(),
                    effect: "delay=300ms".into(),
                    delay_us: 300_000,
                },
                ChaosFault {
                    label: "never".into(),
                    effect: "reset".into(),
                    delay_us: 0,
                },
            ],
        };
        let mut keyer = crate::route::RouteKeys::default().keyer();
        let r = analyze(&[run], "candidate", &input, &mut keyer, false).expect("analyze");
        assert_eq!((r.requests, r.unaffected, r.unpaired), (5, 1, 0));
        let down = &r.faults[0];
        assert_eq!(
            (
                down.outcome.as_str(),
                down.injected,
                down.requests,
                down.graceful,
                down.server_errors,
                down.timeouts
            ),
            ("degraded", 3, 3, 1, 1, 1)
        );
        assert_eq!(down.examples.len(), 2);
        assert_eq!(down.examples[0].fault_free, "200 in 10 ms");
        let slow = &r.faults[1];
        assert_eq!(
            (slow.outcome.as_str(), slow.slower_than_fault),
            ("degraded", 1)
        );
        assert_eq!(r.faults[2].outcome, "not-triggered");
        assert_eq!(r.reasons().len(), 2);
    }
}
