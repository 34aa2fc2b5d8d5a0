//! Counters, the exit summary and `/metrics`. Each worker thread bumps its own counters (relaxed
//! atomics on a cache line of its own); readers add them up, so the summary and `/metrics`
//! read the same numbers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tapedeck_common::format::thousands;
use tapedeck_storage::WriterStats;

use crate::index::LoadReport;

/// Distinct routes kept in the list of misses (the rest are counted as `(other)`).
const MAX_MISS_ROUTES: usize = 256;

/// How one request ended; each request is counted exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// A recorded answer was served.
    Hit,
    /// Nothing recorded matched; the miss policy answered.
    Miss,
    /// A fault was injected (whatever answered after it).
    Fault,
}

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) nearest: AtomicU64,
    pub(crate) repeats: AtomicU64,
    pub(crate) passthrough: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) incomplete: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, fate: Fate) {
        match fate {
            Fate::Hit => &self.hits,
            Fate::Miss => &self.misses,
            Fate::Fault => &self.faults,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Misses per route key, for the summary (slow path only).
#[derive(Debug, Default)]
pub(crate) struct MissRoutes(Mutex<HashMap<String, u64>>);

impl MissRoutes {
    pub(crate) fn add(&self, key: String) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_MISS_ROUTES && !m.contains_key(&key) {
                *m.entry("(other)".into()).or_insert(0) += 1;
            } else {
                *m.entry(key).or_insert(0) += 1;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<RouteCount> {
        let mut v: Vec<RouteCount> = match self.0.lock() {
            Ok(m) => m
                .iter()
                .map(|(k, n)| RouteCount {
                    route: k.clone(),
                    count: *n,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.route.cmp(&b.route)));
        v
    }
}

/// A live snapshot of a mock's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MockStats {
    /// Requests answered (hits + misses + faults).
    pub requests: u64,
    /// Requests answered with a recorded answer.
    pub hits: u64,
    /// Requests that matched nothing (the miss policy answered).
    pub misses: u64,
    /// Requests that got a fault.
    pub faults: u64,
    /// Recorded answers served for the closest recorded request rather than an equal one.
    pub nearest: u64,
    /// Recorded answers served again after their sequence was used up.
    pub repeats: u64,
    /// Misses forwarded to the pass-through target.
    pub passthrough: u64,
    /// Connections reset (reset faults, and recordings without a response).
    pub resets: u64,
    /// Answers served whose recorded body is incomplete on the tape.
    pub incomplete: u64,
}

impl MockStats {
    pub(crate) fn sum<'a>(all: impl Iterator<Item = &'a Counters>) -> MockStats {
        let mut s = MockStats::default();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for c in all {
            s.hits += l(&c.hits);
            s.misses += l(&c.misses);
            s.faults += l(&c.faults);
            s.nearest += l(&c.nearest);
            s.repeats += l(&c.repeats);
            s.passthrough += l(&c.passthrough);
            s.resets += l(&c.resets);
            s.incomplete += l(&c.incomplete);
        }
        s.requests = s.hits + s.misses + s.faults;
        s
    }
}

/// Requests per route key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteCount {
    /// `GET /prices/{id}`.
    pub route: String,
    /// How many.
    pub count: u64,
}

/// Faults injected by one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultCount {
    /// The rule as written.
    pub rule: String,
    /// Its configured rate.
    pub rate: f64,
    /// How many requests it matched and spoiled.
    pub injected: u64,
}

/// The output tape at the end.
#[derive(Debug, Clone, Serialize)]
pub struct OutSummary {
    /// Where it is.
    pub path: PathBuf,
    /// Exchanges written.
    pub written: u64,
    /// Exchanges lost (the writer failed; with the blocking queue, never because it was full).
    pub dropped: u64,
}

impl OutSummary {
    pub(crate) fn new(path: PathBuf, s: &WriterStats) -> OutSummary {
        OutSummary {
            path,
            written: s.written,
            dropped: s.dropped(),
        }
    }
}

/// What a mock did, returned by [`MockHandle::stop`](crate::MockHandle::stop).
#[derive(Debug, Clone, Serialize)]
pub struct MockSummary {
    /// The mock's name.
    pub name: String,
    /// Where it listened.
    pub addr: SocketAddr,
    /// What loading the tape found.
    pub tape: LoadReport,
    /// The counters.
    pub stats: MockStats,
    /// Faults injected, per rule.
    pub faults: Vec<FaultCount>,
    /// Misses per route key (most first).
    pub misses_by_route: Vec<RouteCount>,
    /// The output tape, when there was one.
    pub out: Option<OutSummary>,
    /// How long the mock ran, in seconds.
    pub seconds: f64,
}

/// The summary for people.
pub fn render_text(s: &MockSummary) -> String {
    let mut out = String::new();
    let st = &s.stats;
    let (name, addr, secs) = (&s.name, &s.addr, s.seconds);
    let [requests, hits, misses, faults] =
        [st.requests, st.hits, st.misses, st.faults].map(thousands);
    let _ = writeln!(
        out,
        "mock {name} on {addr}: {requests} requests in {secs:.1}s — {hits} hit, {misses} miss, {faults} fault"
    );
    let _ = writeln!(
        out,
        "  tape: {} exchanges, {} routes, {} traces ({} files)",
        thousands(s.tape.exchanges as u64),
        s.tape.routes,
        thousands(s.tape.traces as u64),
        s.tape.files
    );
    if st.nearest + st.repeats + st.passthrough + st.resets + st.incomplete > 0 {
        let _ = writeln!(
            out,
            "  answers: {} nearest (no equal recorded request), {} repeated (sequence used up), {} passed through, {} resets, {} incomplete bodies",
            thousands(st.nearest),
            thousands(st.repeats),
            thousands(st.passthrough),
            thousands(st.resets),
            thousands(st.incomplete)
        );
    }
    for f in &s.faults {
        let _ = writeln!(
            out,
            "  fault {} (rate {}): {} injected",
            f.rule,
            f.rate,
            thousands(f.injected)
        );
    }
    if !s.misses_by_route.is_empty() {
        let _ = writeln!(out, "  misses by route:");
        for r in s.misses_by_route.iter().take(10) {
            let _ = writeln!(out, "    {:>8}  {}", thousands(r.count), r.route);
        }
        if s.misses_by_route.len() > 10 {
            let _ = writeln!(out, "    … {} more routes", s.misses_by_route.len() - 10);
        }
    }
    if let Some(o) = &s.out {
        let _ = writeln!(
            out,
            "  out: {} exchanges written to {}{}",
            thousands(o.written),
            o.path.display(),
            if o.dropped > 0 {
                format!(" ({} lost)", thousands(o.dropped))
            } else {
                String::new()
            }
        );
    }
    out
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics` in the Prometheus text format.
pub(crate) fn render_metrics(
    name: &str,
    st: &MockStats,
    faults: &[FaultCount],
    out: Option<&WriterStats>,
) -> String {
    let m = label(name);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP tapedeck_mock_requests_total Requests answered by the mock, by result.\n# TYPE tapedeck_mock_requests_total counter"
    );
    for (result, n) in [("hit", st.hits), ("miss", st.misses), ("fault", st.faults)] {
        let _ = writeln!(
            s,
            "tapedeck_mock_requests_total{{mock=\"{m}\",result=\"{result}\"}} {n}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP tapedeck_mock_answers_total Recorded answers served that were not an equal request's next answer.\n# TYPE tapedeck_mock_answers_total counter"
    );
    for (kind, n) in [("nearest", st.nearest), ("repeat", st.repeats)] {
        let _ = writeln!(
            s,
            "tapedeck_mock_answers_total{{mock=\"{m}\",kind=\"{kind}\"}} {n}"
        );
    }
    let _ = writeln!(
        s,
        "# HELP tapedeck_mock_passthrough_total Misses forwarded to the pass-through target.\n# TYPE tapedeck_mock_passthrough_total counter\ntapedeck_mock_passthrough_total{{mock=\"{m}\"}} {}",
        st.passthrough
    );
    let _ = writeln!(
        s,
        "# HELP tapedeck_mock_resets_total Connections reset on purpose.\n# TYPE tapedeck_mock_resets_total counter\ntapedeck_mock_resets_total{{mock=\"{m}\"}} {}",
        st.resets
    );
    if !faults.is_empty() {
        let _ = writeln!(
            s,
            "# HELP tapedeck_mock_faults_total Faults injected, by rule.\n# TYPE tapedeck_mock_faults_total counter"
        );
        for f in faults {
            let _ = writeln!(
                s,
                "tapedeck_mock_faults_total{{mock=\"{m}\",rule=\"{}\"}} {}",
                label(&f.rule),
                f.injected
            );
        }
    }
    if let Some(w) = out {
        let _ = writeln!(
            s,
            "# HELP tapedeck_mock_out_written_total Exchanges written to the output tape.\n# TYPE tapedeck_mock_out_written_total counter\ntapedeck_mock_out_written_total{{mock=\"{m}\"}} {}",
            w.written
        );
        let _ = writeln!(
            s,
            "# HELP tapedeck_mock_out_dropped_total Exchanges the output tape lost.\n# TYPE tapedeck_mock_out_dropped_total counter\ntapedeck_mock_out_dropped_total{{mock=\"{m}\"}} {}",
            w.dropped()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_summary_read_the_same_counters() {
        let c = [Counters::default(), Counters::default()];
        c[0].count(Fate::Hit);
        c[1].count(Fate::Hit);
        c[1].count(Fate::Miss);
        c[0].count(Fate::Fault);
        let st = MockStats::sum(c.iter());
        assert_eq!((st.requests, st.hits, st.misses, st.faults), (4, 2, 1, 1));
        let text = render_metrics("pay\"x", &st, &[], None);
        assert!(text.contains("tapedeck_mock_requests_total{mock=\"pay\\\"x\",result=\"hit\"} 2"));
        assert!(text.contains("result=\"miss\"} 1"));
        assert!(text.contains("result=\"fault\"} 1"));
        let m = MissRoutes::default();
        for i in 0..300 {
            m.add(format!("GET /r{i}"));
        }
        m.add("GET /r0".into());
        let snap = m.snapshot();
        assert_eq!(snap[0].route, "(other)");
        assert_eq!(snap.len(), MAX_MISS_ROUTES + 1);
    }
}
