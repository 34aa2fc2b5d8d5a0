//! The dependency section of a verdict: what the candidate asked of its dependencies, compared
//! with what the recording says the service asked for the same inbound requests.
//!
//! Inputs per dependency ([`DependencyInput`]): its recorded tape (what the service called
//! while traffic was recorded, each call with the trace id of the inbound request that caused
//! it) and the calls tape a dependency mock wrote during the replay (`tapedeck mock --out`:
//! each call with the caller's trace id, the recorded exchange served as `origin_id`, and the
//! flags `MOCK_MISS` / `MOCK_FAULT`). The replay run links a trace id to the candidate route it
//! was replayed on (replay sends the recorded trace id on and stores it with each result).
//!
//! Calls are attributed to the candidate by the `tracestate` member `tapedeck=<target>` that
//! replay adds and an instrumented service forwards. When no call of a mock carries a lane the
//! mock's calls all count as the candidate's (`attribution: "untagged"`, said in the report):
//! right when only the candidate calls that mock, wrong when the baseline does too.
//!
//! Per candidate route and dependency call (`pricing GET /prices/{id}`, the method and the
//! templated path), over the traces replayed on that route:
//! - **new calls**: per trace, the calls made beyond those recorded (a call the recording never
//!   made, or one made more often: `calls pricing twice per order`); misses of the mock are new
//!   calls by definition;
//! - **calls no longer made**: per trace, the recorded calls the candidate did not make;
//! - **changed requests**: calls answered from a recording whose request body differs from the
//!   recorded one (JSON compared structurally, with the judge's differ; recorded redaction
//!   placeholders match anything; other bodies byte for byte), with the JSON paths that changed.
//!
//! Traces that were recorded but not replayed (`--limit`, `--route`) are left out, so a partial
//! replay does not report every call of the rest as "no longer made". Memory: one entry per
//! replayed trace and per recorded call of those traces (request bodies of the recorded calls
//! the mock served are kept until compared).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Serialize;
use tapedeck_storage::route::template_path;
use tapedeck_storage::{Exchange, Header, ReadOptions, Tape, flags, schema::col};

use crate::config::InconclusiveAs;
use crate::error::DiffError;
use crate::outcome::{DiffOutcome, Verdict};
use crate::route::RouteKeyer;

/// The `tracestate` member naming the replay target (the same key replay and the mock use).
pub const LANE_KEY: &str = "tapedeck";

/// Changed JSON paths kept per dependency call.
const MAX_PATHS: usize = 20;

/// One dependency of the candidate, as mocked during the replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyInput {
    /// Its name (`pricing`).
    pub name: String,
    /// The recorded dependency tape the mock served.
    pub tape: Vec<PathBuf>,
    /// The calls the mock received during the replay (its `--out` tape).
    pub calls: Vec<PathBuf>,
}

/// What happened to one dependency call on one candidate route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    /// The recording never made this call on this route.
    New,
    /// The candidate never made this recorded call.
    NoLongerMade,
    /// Made more often than recorded in some traces (and no fewer in others).
    MoreCalls,
    /// Made less often than recorded in some traces (and no more in others).
    FewerCalls,
    /// More in some traces, fewer in others.
    CountChanged,
    /// As often as recorded, but with other request bodies.
    ChangedRequest,
    /// As recorded.
    Unchanged,
}

impl CallStatus {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::New => "new",
            CallStatus::NoLongerMade => "no-longer-made",
            CallStatus::MoreCalls => "more-calls",
            CallStatus::FewerCalls => "fewer-calls",
            CallStatus::CountChanged => "count-changed",
            CallStatus::ChangedRequest => "changed-request",
            CallStatus::Unchanged => "unchanged",
        }
    }
}

/// A changed request body, for people.
#[derive(Debug, Clone, Serialize)]
pub struct ChangedExample {
    /// The trace (inbound request) it happened in.
    pub trace_id: String,
    /// The recorded dependency exchange the mock answered with.
    pub recorded_id: String,
    /// Where (`$.items[0].qty`, or `body` for non-JSON bodies).
    pub path: String,
    /// The recorded value there (compact JSON), `None` when absent.
    pub recorded: Option<String>,
    /// The candidate's value there, `None` when absent.
    pub candidate: Option<String>,
}

/// One dependency call on one candidate route.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyCall {
    /// The dependency (mock) name.
    pub dependency: String,
    /// `METHOD /templated/{id}`.
    pub call: String,
    /// The verdict on it.
    pub status: CallStatus,
    /// Calls recorded in the route's replayed traces.
    pub recorded: u64,
    /// Calls the candidate made in those traces.
    pub made: u64,
    /// Calls beyond the recorded ones, summed per trace.
    pub new_calls: u64,
    /// Recorded calls not made, summed per trace.
    pub missing_calls: u64,
    /// Of the calls made, those the mock had no answer for.
    pub misses: u64,
    /// Of the calls made, those answered with an injected fault.
    pub faults: u64,
    /// Calls answered from a recording whose request body differs.
    pub changed_requests: u64,
    /// Traces with more calls than recorded.
    pub traces_with_new: u64,
    /// Traces with fewer calls than recorded.
    pub traces_with_missing: u64,
    /// Generalized JSON paths of changed request bodies, with how often (most first).
    pub changed_paths: Vec<(String, u64)>,
    /// The first changed request seen.
    pub example: Option<ChangedExample>,
}

/// The dependency calls of one candidate route.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyRoute {
    /// The candidate route (`POST /orders`), keyed like the verdict's routes.
    pub route: String,
    /// Replayed traces on this route.
    pub traces: u64,
    /// Its dependency calls, changes first.
    pub calls: Vec<DependencyCall>,
}

/// What was read of one dependency.
#[derive(Debug, Clone, Serialize)]
pub struct DependencySummary {
    /// The name.
    pub name: String,
    /// Calls on its recorded tape (all traces).
    pub recorded_calls: u64,
    /// Calls its mock received during the replay (every caller).
    pub calls: u64,
    /// Of those, the candidate's.
    pub candidate_calls: u64,
    /// Candidate calls without a trace id (not attributable to a route).
    pub untraced_calls: u64,
    /// Candidate calls whose trace id the replay did not send (not attributable to a route).
    pub unknown_trace_calls: u64,
    /// `tracestate` (calls told apart by the replay target's lane) or `untagged` (no call
    /// carried a lane: all the mock's calls were counted as the candidate's).
    pub attribution: String,
}

/// The dependency section of a verdict.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyReport {
    /// Per dependency: what was read.
    pub dependencies: Vec<DependencySummary>,
    /// Per candidate route with dependency calls: the calls (routes with changes first).
    pub routes: Vec<DependencyRoute>,
    /// Dependency calls (route × call) that are not `unchanged`.
    pub changes: u64,
}

impl DependencyReport {
    /// The calls that changed, as `(route, call)`.
    pub fn changed(&self) -> impl Iterator<Item = (&DependencyRoute, &DependencyCall)> {
        self.routes.iter().flat_map(|r| {
            r.calls
                .iter()
                .filter(|c| c.status != CallStatus::Unchanged)
                .map(move |c| (r, c))
        })
    }

    /// One sentence per changed call (for the verdict's reasons).
    pub fn reasons(&self) -> Vec<String> {
        self.changed()
            .map(|(r, c)| {
                let what = match c.status {
                    CallStatus::New => format!(
                        "new dependency call: {} × {} in {} of {} trace(s), never recorded",
                        c.made, c.call, c.traces_with_new, r.traces
                    ),
                    CallStatus::NoLongerMade => format!(
                        "dependency call no longer made: {} (recorded {} ×)",
                        c.call, c.recorded
                    ),
                    CallStatus::MoreCalls | CallStatus::FewerCalls | CallStatus::CountChanged => {
                        let mut parts = Vec::new();
                        if c.new_calls > 0 {
                            parts.push(format!(
                                "{} extra in {} trace(s)",
                                c.new_calls, c.traces_with_new
                            ));
                        }
                        if c.missing_calls > 0 {
                            parts.push(format!(
                                "{} missing in {} trace(s)",
                                c.missing_calls, c.traces_with_missing
                            ));
                        }
                        if c.changed_requests > 0 {
                            parts.push(format!("{} with a changed body", c.changed_requests));
                        }
                        format!(
                            "{} made {} × where the recording made it {} × ({})",
                            c.call,
                            c.made,
                            c.recorded,
                            parts.join(", ")
                        )
                    }
                    CallStatus::ChangedRequest => format!(
                        "{} request body changed in {} of {} call(s) (at {})",
                        c.call,
                        c.changed_requests,
                        c.made,
                        c.changed_paths
                            .iter()
                            .take(3)
                            .map(|(p, _)| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    CallStatus::Unchanged => String::new(),
                };
                format!("{} — dependency {}: {what}.", r.route, c.dependency)
            })
            .collect()
    }
}

/// Puts the dependency section into `outcome`. Changed dependency calls make a passing verdict
/// `marginal` (exit 0, 1 with `--strict`): a new or dropped dependency call may be intended (a
/// feature that calls a new service), so a person decides; their reasons come first. A
/// failing or inconclusive verdict stays as it is, with the reasons added.
pub fn attach(
    outcome: &mut DiffOutcome,
    report: DependencyReport,
    strict: bool,
    inconclusive_as: InconclusiveAs,
) {
    let mut reasons = report.reasons();
    const MAX_REASONS: usize = 10;
    if reasons.len() > MAX_REASONS {
        let more = reasons.len() - MAX_REASONS;
        reasons.truncate(MAX_REASONS);
        reasons.push(format!(
            "… {more} more changed dependency call(s) in the dependency section."
        ));
    }
    if report.changes > 0 && outcome.verdict == Verdict::Pass {
        outcome.verdict = Verdict::Marginal;
        outcome.exit_code = outcome.verdict.exit_code(strict, inconclusive_as);
        outcome.title = format!(
            "{} dependency call(s) changed ({} → {})",
            report.changes, outcome.baseline_version, outcome.candidate_version
        );
        outcome.reasons.splice(0..0, reasons);
    } else {
        outcome.reasons.extend(reasons);
    }
    outcome.dependencies = Some(report);
}

/// The lane (`tapedeck=<name>` member of `tracestate`) of a call, if any.
pub fn lane(headers: &[Header]) -> Option<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("tracestate"))
        .flat_map(|h| {
            h.value_lossy()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .find_map(|m| {
            let (k, v) = m.split_once('=')?;
            (k == LANE_KEY).then(|| v.to_owned())
        })
}

/// `METHOD /templated/{id}`, as the mock buckets calls.
fn call_key(method: &str, path: &str) -> String {
    format!("{} {}", method.to_ascii_uppercase(), template_path(path))
}

/// Calls `f` with every exchange of the tape at `paths` (`what` names it in errors). Shared
/// with the chaos section.
pub(crate) fn read_all(
    paths: &[PathBuf],
    what: &'static str,
    read: &ReadOptions,
    mut f: impl FnMut(Exchange),
) -> Result<(), DiffError> {
    let tape = Tape::open(paths).map_err(|source| DiffError::Tape { what, source })?;
    for ex in tape.scan(read.clone()).exchanges() {
        f(ex.map_err(|source| DiffError::Tape { what, source })?);
    }
    Ok(())
}

/// Counts of one (trace, call).
#[derive(Debug, Default, Clone, Copy)]
struct PerTrace {
    recorded: u64,
    made: u64,
}

#[derive(Debug, Default)]
struct Acc {
    per_trace: HashMap<String, PerTrace>,
    misses: u64,
    faults: u64,
    changed: u64,
    paths: BTreeMap<String, u64>,
    example: Option<ChangedExample>,
}

/// Builds the dependency section: reads the run (candidate rows: trace id → route), then each
/// dependency's recorded tape and calls tape.
pub fn analyze(
    run: &[PathBuf],
    candidate: &str,
    inputs: &[DependencyInput],
    keyer: &mut RouteKeyer,
    skip_corrupt: bool,
) -> Result<DependencyReport, DiffError> {
    let read = |cols: Option<&[&str]>| ReadOptions {
        skip_corrupt,
        columns: cols.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
        ..ReadOptions::default()
    };
    // trace id → candidate route (the first replayed request of the trace).
    let mut route_of: HashMap<String, String> = HashMap::new();
    let mut traces_per_route: BTreeMap<String, u64> = BTreeMap::new();
    let run_cols = [
        col::TARGET,
        col::TRACE_ID,
        col::METHOD,
        col::PATH,
        col::QUERY,
    ];
    read_all(run, "run", &read(Some(&run_cols)), |ex| {
        if ex.target.as_deref() != Some(candidate) {
            return;
        }
        let Some(t) = ex.trace_id else { return };
        if route_of.contains_key(&t) {
            return;
        }
        let route = keyer.key(&ex.method, &ex.path, ex.query.as_deref());
        *traces_per_route.entry(route.clone()).or_default() += 1;
        route_of.insert(t, route);
    })?;

    let mut dependencies = Vec::new();
    // (route, dependency, call) → accumulator.
    let mut acc: BTreeMap<(String, String, String), Acc> = BTreeMap::new();
    for dep in inputs {
        // Recorded calls of the replayed traces; request bodies kept for comparison.
        let mut recorded_calls = 0u64;
        let mut recorded: HashMap<uuid::Uuid, (Vec<Header>, bytes::Bytes)> = HashMap::new();
        read_all(&dep.tape, "dependency tape", &read(None), |ex| {
            recorded_calls += 1;
            let Some(t) = ex.trace_id.as_deref() else {
                return;
            };
            let Some(route) = route_of.get(t) else { return };
            let key = (
                route.clone(),
                dep.name.clone(),
                call_key(&ex.method, &ex.path),
            );
            acc.entry(key)
                .or_default()
                .per_trace
                .entry(t.to_owned())
                .or_default()
                .recorded += 1;
            recorded.insert(ex.id, (ex.req_headers, ex.req_body));
        })?;
        let mut calls: Vec<Exchange> = Vec::new();
        read_all(&dep.calls, "dependency calls", &read(None), |ex| {
            calls.push(ex)
        })?;
        let tagged = calls.iter().any(|c| lane(&c.req_headers).is_some());
        let mut summary = DependencySummary {
            name: dep.name.clone(),
            recorded_calls,
            calls: calls.len() as u64,
            candidate_calls: 0,
            untraced_calls: 0,
            unknown_trace_calls: 0,
            attribution: if tagged { "tracestate" } else { "untagged" }.to_owned(),
        };
        for c in calls {
            if tagged && lane(&c.req_headers).as_deref() != Some(candidate) {
                continue;
            }
            summary.candidate_calls += 1;
            let Some(t) = c.trace_id.as_deref() else {
                summary.untraced_calls += 1;
                continue;
            };
            let Some(route) = route_of.get(t) else {
                summary.unknown_trace_calls += 1;
                continue;
            };
            let key = (
                route.clone(),
                dep.name.clone(),
                call_key(&c.method, &c.path),
            );
            let a = acc.entry(key).or_default();
            a.per_trace.entry(t.to_owned()).or_default().made += 1;
            if c.has_flag(flags::MOCK_MISS) {
                a.misses += 1;
            }
            if c.has_flag(flags::MOCK_FAULT) {
                a.faults += 1;
            }
            let served = c
                .origin_id
                .filter(|_| !c.has_flag(flags::MOCK_MISS))
                .and_then(|id| recorded.get(&id).map(|r| (id, r)));
            if let Some((id, (rec_headers, rec_body))) = served {
                let diffs = request_diffs(rec_headers, rec_body, &c.req_headers, &c.req_body);
                if !diffs.is_empty() {
                    a.changed += 1;
                    for d in &diffs {
                        *a.paths.entry(crate::json::generalize(&d.path)).or_default() += 1;
                    }
                    if a.example.is_none() {
                        let d = &diffs[0];
                        a.example = Some(ChangedExample {
                            trace_id: t.to_owned(),
                            recorded_id: id.to_string(),
                            path: d.path.clone(),
                            recorded: d.baseline.clone(),
                            candidate: d.candidate.clone(),
                        });
                    }
                }
            }
        }
        dependencies.push(summary);
    }

    let mut by_route: BTreeMap<String, Vec<DependencyCall>> = BTreeMap::new();
    for ((route, dependency, call), a) in acc {
        let (mut recorded, mut made, mut new_calls, mut missing) = (0, 0, 0, 0);
        let (mut traces_with_new, mut traces_with_missing) = (0, 0);
        for p in a.per_trace.values() {
            recorded += p.recorded;
            made += p.made;
            if p.made > p.recorded {
                new_calls += p.made - p.recorded;
                traces_with_new += 1;
            }
            if p.recorded > p.made {
                missing += p.recorded - p.made;
                traces_with_missing += 1;
            }
        }
        let status = match (recorded, made) {
            (0, _) => CallStatus::New,
            (_, 0) => CallStatus::NoLongerMade,
            _ if new_calls > 0 && missing > 0 => CallStatus::CountChanged,
            _ if new_calls > 0 => CallStatus::MoreCalls,
            _ if missing > 0 => CallStatus::FewerCalls,
            _ if a.changed > 0 => CallStatus::ChangedRequest,
            _ => CallStatus::Unchanged,
        };
        let mut changed_paths: Vec<(String, u64)> = a.paths.into_iter().collect();
        changed_paths.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        changed_paths.truncate(MAX_PATHS);
        by_route.entry(route).or_default().push(DependencyCall {
            dependency,
            call,
            status,
            recorded,
            made,
            new_calls,
            missing_calls: missing,
            misses: a.misses,
            faults: a.faults,
            changed_requests: a.changed,
            traces_with_new,
            traces_with_missing,
            changed_paths,
            example: a.example,
        });
    }
    let mut routes: Vec<DependencyRoute> = by_route
        .into_iter()
        .map(|(route, mut calls)| {
            calls.sort_by(|a, b| {
                a.status
                    .cmp(&b.status)
                    .then_with(|| a.dependency.cmp(&b.dependency))
                    .then_with(|| a.call.cmp(&b.call))
            });
            DependencyRoute {
                traces: traces_per_route.get(&route).copied().unwrap_or(0),
                route,
                calls,
            }
        })
        .collect();
    let changed_in = |r: &DependencyRoute| {
        r.calls
            .iter()
            .filter(|c| c.status != CallStatus::Unchanged)
            .count()
    };
    routes.sort_by(|a, b| {
        changed_in(b)
            .cmp(&changed_in(a))
            .then_with(|| a.route.cmp(&b.route))
    });
    let changes = routes.iter().map(|r| changed_in(r) as u64).sum();
    Ok(DependencyReport {
        dependencies,
        routes,
        changes,
    })
}

/// How the candidate's request body differs from the recorded one: JSON structurally (recorded
/// redaction placeholders match anything), other bodies byte for byte (one `body` difference).
fn request_diffs(
    rec_headers: &[Header],
    rec_body: &[u8],
    live_headers: &[Header],
    live_body: &[u8],
) -> Vec<crate::json::JsonDiff> {
    let decode = |h: &[Header], b: &[u8]| {
        crate::body::decode(h, b).map_or_else(|_| b.to_vec(), |c| c.into_owned())
    };
    let (a, b) = (
        decode(rec_headers, rec_body),
        decode(live_headers, live_body),
    );
    if a == b {
        return Vec::new();
    }
    if tapedeck_common::redact::is_placeholder(a.trim_ascii()) {
        return Vec::new();
    }
    match (
        serde_json::from_slice::<serde_json::Value>(&a),
        serde_json::from_slice::<serde_json::Value>(&b),
    ) {
        (Ok(x), Ok(y)) => crate::json::diff(&x, &y)
            .into_iter()
            .filter(|d| {
                // A recorded placeholder (`"[REDACTED]"`) stands for any value.
                !d.baseline.as_deref().is_some_and(|v| {
                    serde_json::from_str::<String>(v)
                        .is_ok_and(|s| tapedeck_common::redact::is_placeholder(s.as_bytes()))
                })
            })
            .collect(),
        _ => vec![crate::json::JsonDiff {
            path: "body".to_owned(),
            kind: crate::json::JsonDiffKind::ValueChanged,
            baseline: Some(crate::body::excerpt(&a, 200)),
            candidate: Some(crate::body::excerpt(&b, 200)),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
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

    fn trace(i: u32) -> String {
        format!("{:032x}", i + 1)
    }

    fn call(t: &str, path: &str, body: &str) -> Exchange {
        Exchange {
            id: Exchange::new_id(),
            method: "POST".into(),
            path: path.into(),
            trace_id: Some(t.to_owned()),
            req_headers: vec![Header::new("content-type", "application/json")],
            req_body: Bytes::from(body.to_owned()),
            status: Some(200),
            ..Exchange::default()
        }
    }

    #[test]
    fn new_missing_extra_and_changed_calls_per_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, tape, calls) = (
            dir.path().join("run"),
            dir.path().join("tape"),
            dir.path().join("calls"),
        );
        // Four traces replayed on POST /orders; trace 9 was recorded but not replayed.
        let mut rows = Vec::new();
        for i in 0..4 {
            for target in ["baseline", "candidate"] {
                rows.push(Exchange {
                    id: Exchange::new_id(),
                    method: "POST".into(),
                    path: "/orders".into(),
                    target: Some(target.into()),
                    trace_id: Some(trace(i)),
                    origin_id: Some(uuid::Uuid::from_u128(u128::from(i) + 1)),
                    ..Exchange::default()
                });
            }
        }
        write(&run, &rows);
        // Recorded: one quote per trace (and an audit call in trace 3), trace 9 too.
        let mut recorded: Vec<Exchange> = (0..4)
            .map(|i| {
                call(
                    &trace(i),
                    "/quote/7",
                    r#"{"sku":7,"qty":1,"token":"[REDACTED]"}"#,
                )
            })
            .collect();
        recorded.push(call(&trace(3), "/audit", "{}"));
        recorded.push(call(&trace(9), "/quote/7", "{}"));
        write(&tape, &recorded);
        // The candidate: two quotes per trace, qty changed in trace 0, a new /stock call; the
        // baseline's calls (lane baseline) are not the candidate's.
        let mut made = Vec::new();
        for i in 0..4u32 {
            let r = &recorded[i as usize];
            for n in 0..2 {
                let body = if i == 0 && n == 0 {
                    r#"{"sku":7,"qty":2,"token":"abc"}"#
                } else {
                    r#"{"qty":1,"sku":7,"token":"xyz"}"#
                };
                let mut c = call(&trace(i), "/quote/7", body);
                c.origin_id = Some(r.id);
                c.req_headers
                    .push(Header::new("tracestate", "tapedeck=candidate,x=1"));
                if n == 1 {
                    c.flags |= flags::MOCK_REPEAT;
                }
                made.push(c);
            }
            let mut b = call(&trace(i), "/quote/7", "{}");
            b.req_headers
                .push(Header::new("tracestate", "tapedeck=baseline"));
            made.push(b);
        }
        let mut stock = call(&trace(1), "/stock/7", "{}");
        stock.flags |= flags::MOCK_MISS;
        stock
            .req_headers
            .push(Header::new("tracestate", "tapedeck=candidate"));
        made.push(stock);
        write(&calls, &made);

        let mut keyer = crate::route::RouteKeys::default().keyer();
        let report = analyze(
            &[run],
            "candidate",
            &[DependencyInput {
                name: "pricing".into(),
                tape: vec![tape],
                calls: vec![calls],
            }],
            &mut keyer,
            false,
        )
        .expect("analyze");
        let d = &report.dependencies[0];
        assert_eq!(
            (
                d.recorded_calls,
                d.calls,
                d.candidate_calls,
                d.attribution.as_str()
            ),
            (6, 13, 9, "tracestate")
        );
        assert_eq!(report.routes.len(), 1);
        let r = &report.routes[0];
        assert_eq!((r.route.as_str(), r.traces), ("POST /orders", 4));
        let by_call: HashMap<&str, &DependencyCall> =
            r.calls.iter().map(|c| (c.call.as_str(), c)).collect();
        let quote = by_call["POST /quote/{id}"];
        assert_eq!(quote.status, CallStatus::MoreCalls);
        assert_eq!(
            (
                quote.recorded,
                quote.made,
                quote.new_calls,
                quote.traces_with_new
            ),
            (4, 8, 4, 4)
        );
        assert_eq!(
            quote.changed_requests, 1,
            "key order and the placeholder match"
        );
        assert_eq!(quote.changed_paths, vec![("$.qty".to_owned(), 1)]);
        let ex = quote.example.as_ref().expect("example");
        assert_eq!(
            (ex.recorded.as_deref(), ex.candidate.as_deref()),
            (Some("1"), Some("2"))
        );
        let stock = by_call["POST /stock/{id}"];
        assert_eq!(
            (stock.status, stock.made, stock.misses),
            (CallStatus::New, 1, 1)
        );
        let audit = by_call["POST /audit"];
        assert_eq!(
            (audit.status, audit.missing_calls),
            (CallStatus::NoLongerMade, 1)
        );
        assert_eq!(report.changes, 3);
        let reasons = report.reasons();
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("made 8 × where the recording made it 4 ×")),
            "{reasons:?}"
        );
    }

    #[test]
    fn lanes_and_untagged_calls() {
        assert_eq!(
            lane(&[Header::new("tracestate", "a=1, tapedeck=candidate")]).as_deref(),
            Some("candidate")
        );
        assert_eq!(lane(&[Header::new("tracestate", "a=1")]), None);
        assert!(request_diffs(&[], b"[REDACTED]", &[], b"anything").is_empty());
        let d = request_diffs(&[], b"abc", &[], b"abd");
        assert_eq!(d[0].path, "body");
    }
}
