//! The end-of-run summary ([`ReplaySummary`], serializable for `--json`) and the collector that
//! builds it from result exchanges on the writer thread (no locks on the send path).

use std::collections::BTreeMap;
use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::Serialize;
use tapedeck_storage::{ErrorKind, Exchange, SkippedFile, WriterStats};

use crate::config::{Protocol, Target};
use crate::pace::Pace;
use crate::select::{SelectionStats, Shard};

/// Version of the `--json` summary layout (bumped on incompatible changes).
pub const SUMMARY_VERSION: u32 = 1;

/// A latency distribution in microseconds (HDR histogram, 3 significant digits).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// What one target did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetSummary {
    /// Label.
    pub name: String,
    /// URL as given.
    pub url: String,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// Requests sent.
    pub requests: u64,
    /// Complete responses (any status).
    pub responses: u64,
    /// Exchanges that ended in an error (no or incomplete response).
    pub errors: u64,
    /// Errors by kind (`connect-refused`, `timeout`…).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Responses by status class (`2xx`…).
    pub status_classes: BTreeMap<String, u64>,
    /// Time to the whole response, measured from the scheduled send time (complete responses).
    pub latency_us: Percentiles,
    /// Time to the response headers, measured from the scheduled send time.
    pub ttfb_us: Percentiles,
}

/// How well the run kept its schedule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PacingSummary {
    /// The pacing mode's name (`recorded`, `rate`, `poisson`, `max`…).
    pub mode: &'static str,
    /// `recorded`: the speed factor.
    pub speed: Option<f64>,
    /// Intended origin rate (requests/s to each target): `--rate`, or for recorded pacing the
    /// rate the (scaled) schedule implies; `None` for `--max`.
    pub target_rate: Option<f64>,
    /// Achieved origin rate over the sending window.
    pub achieved_rate: Option<f64>,
    /// Seconds from the first to the last send.
    pub send_window_s: f64,
    /// How late requests left versus their schedule.
    pub lateness_us: Percentiles,
}

/// Everything a replay did; printed as a table, or as JSON with `--json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplaySummary {
    /// Layout version ([`SUMMARY_VERSION`]).
    pub version: u32,
    /// Input tape paths.
    pub tape: Vec<PathBuf>,
    /// Output tape (absent for a dry run).
    pub out: Option<PathBuf>,
    /// Nothing was sent.
    pub dry_run: bool,
    /// The shard replayed.
    pub shard: Option<Shard>,
    /// Wall-clock seconds of the whole run.
    pub duration_s: f64,
    /// Recorded exchanges replayed (each sent to every target).
    pub origins: u64,
    /// The run was stopped early ([`Stop`](crate::Stop)); everything sent was still recorded.
    pub interrupted: bool,
    /// Result exchanges written to the output tape.
    pub results_written: u64,
    /// Result exchanges that could not be written (should be 0).
    pub results_lost: u64,
    /// What was selected and what was left out (and why).
    pub selection: SelectionStats,
    /// Pacing accuracy.
    pub pacing: PacingSummary,
    /// One entry per target, in the order given.
    pub targets: Vec<TargetSummary>,
    /// Tape files read.
    pub files_read: usize,
    /// Damaged tape files skipped (`--skip-corrupt`).
    pub files_skipped: Vec<SkippedFile>,
}

/// Longest duration tracked (1 hour in µs); longer samples saturate to it.
const HIST_MAX_US: u64 = 3_600_000_000;

fn hist() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits; `saturating_record` never fails.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).unwrap_or_else(|_| fallback_hist())
}

#[allow(clippy::unwrap_used)]
fn fallback_hist() -> Histogram<u64> {
    // Only reached if the constant bounds above were invalid; auto-resizing instead.
    Histogram::new(3).unwrap()
}

#[derive(Debug)]
struct TargetStats {
    requests: u64,
    responses: u64,
    errors: u64,
    by_kind: [u64; ErrorKind::ALL.len()],
    classes: [u64; 6],
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
}

/// Accumulates result exchanges (on the writer thread) into per-target statistics.
#[derive(Debug)]
pub(crate) struct Collector {
    names: Vec<String>,
    targets: Vec<TargetStats>,
    lateness: Histogram<u64>,
    pub(crate) written: u64,
}

impl Collector {
    pub(crate) fn new(targets: &[Target]) -> Self {
        Self {
            names: targets.iter().map(|t| t.name.clone()).collect(),
            targets: targets
                .iter()
                .map(|_| TargetStats {
                    requests: 0,
                    responses: 0,
                    errors: 0,
                    by_kind: [0; ErrorKind::ALL.len()],
                    classes: [0; 6],
                    latency: hist(),
                    ttfb: hist(),
                })
                .collect(),
            lateness: hist(),
            written: 0,
        }
    }

    /// Counts one result of target number `t`.
    pub(crate) fn record(&mut self, t: usize, ex: &Exchange) {
        let Some(s) = self.targets.get_mut(t) else {
            return;
        };
        s.requests += 1;
        if let (Some(sched), Some(sent)) = (ex.scheduled_at_us, ex.sent_at_us) {
            self.lateness
                .saturating_record((sent - sched).max(0) as u64);
        }
        if let Some(ttfb) = ex.ttfb_us {
            s.ttfb.saturating_record(ttfb.max(0) as u64);
        }
        match ex.error_kind {
            Some(k) => {
                s.errors += 1;
                if let Some(i) = ErrorKind::ALL.iter().position(|x| *x == k) {
                    s.by_kind[i] += 1;
                }
            }
            None => {
                s.responses += 1;
                if let Some(total) = ex.total_us {
                    s.latency.saturating_record(total.max(0) as u64);
                }
                let class = ex.status.map_or(0, |c| usize::from(c / 100)).min(5);
                s.classes[class] += 1;
            }
        }
    }

    /// The per-target summaries and the lateness distribution.
    pub(crate) fn finish(&self, targets: &[Target]) -> (Vec<TargetSummary>, Percentiles) {
        let out = self
            .targets
            .iter()
            .zip(targets)
            .zip(&self.names)
            .map(|((s, t), name)| TargetSummary {
                name: name.clone(),
                url: t.url.clone(),
                protocol: t.protocol,
                requests: s.requests,
                responses: s.responses,
                errors: s.errors,
                errors_by_kind: ErrorKind::ALL
                    .iter()
                    .zip(s.by_kind)
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| (k.as_str().to_owned(), n))
                    .collect(),
                status_classes: s
                    .classes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| {
                        let key = if i == 0 {
                            "other".to_owned()
                        } else {
                            format!("{i}xx")
                        };
                        (key, *n)
                    })
                    .collect(),
                latency_us: Percentiles::of(&s.latency),
                ttfb_us: Percentiles::of(&s.ttfb),
            })
            .collect();
        (out, Percentiles::of(&self.lateness))
    }
}

pub(crate) fn pacing_summary(
    pace: &Pace,
    origins: u64,
    first_sched_us: Option<i64>,
    last_sched_us: Option<i64>,
    first_sent_us: Option<i64>,
    last_sent_us: Option<i64>,
    lateness: Percentiles,
) -> PacingSummary {
    let window = match (first_sent_us, last_sent_us) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => 0.0,
    };
    let achieved = (origins > 1 && window > 0.0).then(|| (origins - 1) as f64 / window);
    let planned = match (first_sched_us, last_sched_us) {
        (Some(a), Some(b)) if b > a && origins > 1 => {
            Some((origins - 1) as f64 / ((b - a) as f64 / 1e6))
        }
        _ => None,
    };
    let p = pace.pacer();
    let (mode, speed, target_rate) = (p.name(), p.speed(), p.target_rate(planned));
    PacingSummary {
        mode,
        speed,
        target_rate,
        achieved_rate: achieved,
        send_window_s: window,
        lateness_us: lateness,
    }
}

/// Writer counters that matter to the summary.
pub(crate) fn lost(stats: &WriterStats) -> u64 {
    stats.dropped()
}

/// The summary as a human-readable report (what the CLI prints without `--json`).
pub fn render_text(s: &ReplaySummary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let sel = &s.selection;
    if s.dry_run {
        let _ = writeln!(
            o,
            "dry run: {} of {} recorded exchanges would be replayed; nothing was sent",
            sel.selected, sel.read
        );
    } else {
        let _ = writeln!(
            o,
            "replayed {} exchanges to {} target(s) in {:.1}s; {} results written to {}",
            s.origins,
            s.targets.len(),
            s.duration_s,
            s.results_written,
            s.out
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    if s.interrupted {
        let _ = writeln!(
            o,
            "  interrupted: stopped early; every request sent has its result on the tape"
        );
    }
    let skipped = [
        ("time range", sel.skipped_time),
        ("method", sel.skipped_method),
        ("route", sel.skipped_route),
        ("other shards", sel.skipped_shard),
        ("sampling", sel.skipped_sample),
        ("unsafe methods (use --allow-writes)", sel.skipped_writes),
        (
            "same host as recorded (use --allow-same-host)",
            sel.skipped_same_host,
        ),
    ];
    for (why, n) in skipped.iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(o, "  skipped {n:>8}  {why}");
    }
    if !sel.skipped_writes_by_route.is_empty() {
        let _ = writeln!(o, "skipped writes by route:");
        for (r, n) in &sel.skipped_writes_by_route {
            let _ = writeln!(o, "  {n:>8}  {r}");
        }
    }
    if !sel.redacted_credentials.is_empty() {
        let _ = writeln!(
            o,
            "  note: requests {} with redaction placeholders instead of credentials ({}); set real values with {}",
            if s.dry_run {
                "would be sent"
            } else {
                "were sent"
            },
            crate::select::describe_placeholders(&sel.redacted_credentials),
            crate::select::set_header_fix(&sel.redacted_credentials)
        );
    }
    if sel.truncated_bodies > 0 {
        let _ = writeln!(
            o,
            "  note: {} requests had bodies truncated at capture; the captured prefix was sent",
            sel.truncated_bodies
        );
    }
    if s.dry_run {
        let _ = writeln!(o, "would send, by route:");
        let mut routes: Vec<(&String, &u64)> = sel.routes.iter().collect();
        routes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (r, n) in routes {
            let _ = writeln!(o, "  {n:>8}  {r}");
        }
        return o;
    }
    let p = &s.pacing;
    let rate = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.1}/s"));
    let _ = writeln!(
        o,
        "pacing {}: target {}, achieved {}; send lateness p50 {} p99 {} max {}",
        p.mode,
        rate(p.target_rate),
        rate(p.achieved_rate),
        ms(p.lateness_us.p50),
        ms(p.lateness_us.p99),
        ms(p.lateness_us.max)
    );
    let _ = writeln!(
        o,
        "{:<14} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}",
        "target", "sent", "errors", "2xx", "3xx", "4xx", "5xx", "p50", "p99", "max"
    );
    for t in &s.targets {
        let c = |k: &str| t.status_classes.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "{:<14} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}",
            t.name,
            t.requests,
            t.errors,
            c("2xx"),
            c("3xx"),
            c("4xx"),
            c("5xx"),
            ms(t.latency_us.p50),
            ms(t.latency_us.p99),
            ms(t.latency_us.max)
        );
        if !t.errors_by_kind.is_empty() {
            let kinds: Vec<String> = t
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(o, "{:<14} errors: {}", "", kinds.join(", "));
        }
    }
    if s.results_lost > 0 {
        let _ = writeln!(
            o,
            "WARNING: {} results could not be written",
            s.results_lost
        );
    }
    o
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReplayOptions;

    #[test]
    fn collector_counts_and_measures() {
        let cfg = ReplayOptions {
            tape: vec!["t".into()],
            out: Some("o".into()),
            targets: vec!["a=http://127.0.0.1:1".into()],
            ..ReplayOptions::default()
        }
        .validate()
        .expect("valid");
        let mut c = Collector::new(cfg.targets());
        for i in 0..100i64 {
            let ex = Exchange {
                status: Some(if i < 90 { 200 } else { 503 }),
                scheduled_at_us: Some(1_000),
                sent_at_us: Some(1_000 + i),
                ttfb_us: Some(100_000 + i * 1000),
                total_us: Some(150_000 + i * 1000),
                ..Exchange::default()
            };
            c.record(0, &ex);
        }
        c.record(
            0,
            &Exchange {
                error_kind: Some(ErrorKind::ConnectRefused),
                ..Exchange::default()
            },
        );
        let (t, late) = c.finish(cfg.targets());
        let t = &t[0];
        assert_eq!((t.requests, t.responses, t.errors), (101, 100, 1));
        assert_eq!(t.errors_by_kind["connect-refused"], 1);
        assert_eq!(t.status_classes["2xx"], 90);
        assert_eq!(t.status_classes["5xx"], 10);
        let within = |v: u64, want: u64| v.abs_diff(want) <= want / 500 + 1;
        assert!(within(t.latency_us.p50, 199_000), "{:?}", t.latency_us);
        assert!(within(t.latency_us.max, 249_000), "{:?}", t.latency_us);
        assert!(within(t.ttfb_us.min, 100_000), "{:?}", t.ttfb_us);
        assert_eq!(late.max, 99);
        assert_eq!(late.count, 100);
    }
}
