//! Counters of the recorder, updated with relaxed atomics on the request path and rendered in the
//! Prometheus text format by the admin listener.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tapedeck_storage::{ErrorKind, Health, WriterStats};

/// Upper bounds (seconds) of the upstream latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What became of one proxied request, counted exactly once in [`Metrics`] by
/// [`Metrics::count`]: `/metrics` and the recorder's exit summary read the same counters
/// ([`Counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Accepted into the tape writer's queue (it may still lose it to a failed write, counted
    /// by the writer as `io`). A record the writer's queue refuses (full, closed) is counted
    /// by the writer, not here: [`Metrics::counts`] adds the writer's counts to these.
    Recorded,
    /// Not recorded by choice.
    Skipped(SkipReason),
    /// Should have been recorded but was not.
    Dropped(DropReason),
}

/// Why a request was not recorded by choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Excluded by a method or path filter.
    Filter,
    /// Not selected by sampling.
    Sample,
    /// Recording is off (pass-through mode).
    Off,
}

/// Why a record the proxy meant to keep was dropped before it reached the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No room in front of the writer (counted here only for a record handed over by a
    /// thread that is exiting; the writer counts the records its full queue refuses).
    QueueFull,
    /// The tape could not be opened (yet).
    Unavailable,
}

/// Live counters. Shared by every worker thread; each update is one relaxed atomic add.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests seen (every exchange, recorded or not).
    pub requests: AtomicU64,
    recorded: AtomicU64,
    /// Skipped by [`SkipReason`], in [`Counts::SKIP_REASONS`] order.
    skipped: [AtomicU64; 3],
    dropped_queue_full: AtomicU64,
    dropped_unavailable: AtomicU64,
    /// Records with a truncated request or response body.
    pub truncated: AtomicU64,
    /// Records in which something was redacted.
    pub redacted: AtomicU64,
    /// HTTP/1.1 upgrades (WebSocket…) passed through.
    pub upgrades: AtomicU64,
    /// Connections closed because a request head did not arrive within `header-timeout`.
    pub client_timeouts_header: AtomicU64,
    /// Requests failed because the client's request body paused longer than
    /// `header-timeout`.
    pub client_timeouts_body: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    upstream_errors: [AtomicU64; ErrorKind::ALL.len()],
    status_class: [AtomicU64; 6],
}

/// One reading of the counters that say what became of each request: rendered by `/metrics`
/// and printed by the recorder's exit summary, so the two cannot disagree. Made by
/// [`Metrics::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests proxied.
    pub requests: u64,
    /// Exchanges handed to the tape writer.
    pub recorded: u64,
    /// Exchanges written to the spool.
    pub written: u64,
    /// Not recorded by choice, by reason: [`Counts::SKIP_REASONS`].
    pub skipped: [u64; 3],
    /// Should have been recorded but were not, by reason: [`Counts::DROP_REASONS`].
    pub dropped: [u64; 4],
}

impl Counts {
    /// Labels of [`Counts::skipped`] (the `reason` of `tapedeck_skipped_total`).
    pub const SKIP_REASONS: [&'static str; 3] = ["filter", "sample", "off"];
    /// Labels of [`Counts::dropped`] (the `reason` of `tapedeck_dropped_total`): the queues in
    /// front of the writer were full, the disk failed, the writer had closed, the tape could not
    /// be opened.
    pub const DROP_REASONS: [&'static str; 4] = ["queue_full", "io", "closed", "unavailable"];

    /// Skipped exchanges, whatever the reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }

    /// Dropped exchanges, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// `(reason, count)` of every skip reason, in [`Counts::SKIP_REASONS`] order.
    pub fn skipped_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::SKIP_REASONS.into_iter().zip(self.skipped)
    }

    /// `(reason, count)` of every drop reason, in [`Counts::DROP_REASONS`] order.
    pub fn dropped_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::DROP_REASONS.into_iter().zip(self.dropped)
    }
}

fn kind_index(k: ErrorKind) -> usize {
    ErrorKind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

impl Metrics {
    /// Records one upstream time-to-first-byte.
    pub fn observe_upstream_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts an upstream failure of this kind.
    pub fn upstream_error(&self, k: ErrorKind) {
        self.upstream_errors[kind_index(k)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response status sent to a client.
    pub fn status(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.status_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Upstream failures of this kind so far.
    pub fn upstream_errors(&self, k: ErrorKind) -> u64 {
        self.upstream_errors[kind_index(k)].load(Ordering::Relaxed)
    }

    /// Counts what became of one request (or of `n` requests with the same fate).
    pub fn count(&self, fate: Fate, n: u64) {
        let c = match fate {
            Fate::Recorded => &self.recorded,
            Fate::Skipped(r) => &self.skipped[r as usize],
            Fate::Dropped(DropReason::QueueFull) => &self.dropped_queue_full,
            Fate::Dropped(DropReason::Unavailable) => &self.dropped_unavailable,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of what became of each request, with the tape writer's when a tape is open.
    pub fn counts(&self, writer: Option<&WriterStats>) -> Counts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let w = writer.cloned().unwrap_or_default();
        Counts {
            requests: l(&self.requests),
            recorded: l(&self.recorded),
            written: w.written,
            skipped: [
                l(&self.skipped[0]),
                l(&self.skipped[1]),
                l(&self.skipped[2]),
            ],
            dropped: [
                l(&self.dropped_queue_full) + w.dropped_queue_full,
                w.dropped_io,
                w.dropped_closed,
                l(&self.dropped_unavailable),
            ],
        }
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, writer: Option<(&WriterStats, &Health)>) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counts = self.counts(writer.map(|(s, _)| s));
        let mut o = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "tapedeck_requests_total",
            "Requests proxied.",
            counts.requests,
        );
        counter(
            "tapedeck_recorded_total",
            "Exchanges handed to the tape writer.",
            counts.recorded,
        );
        counter(
            "tapedeck_truncated_total",
            "Recorded exchanges whose body capture was cut at max-body.",
            l(&self.truncated),
        );
        counter(
            "tapedeck_redacted_total",
            "Recorded exchanges in which something was redacted.",
            l(&self.redacted),
        );
        counter(
            "tapedeck_upgrades_total",
            "Upgraded connections (WebSocket) passed through.",
            l(&self.upgrades),
        );
        let _ = writeln!(
            o,
            "# HELP tapedeck_client_timeouts_total Client requests cut off for being too slow, by phase.\n\
             # TYPE tapedeck_client_timeouts_total counter\n\
             tapedeck_client_timeouts_total{{phase=\"header\"}} {}\n\
             tapedeck_client_timeouts_total{{phase=\"body\"}} {}",
            l(&self.client_timeouts_header),
            l(&self.client_timeouts_body)
        );
        let w = writer.map(|(s, _)| s.clone()).unwrap_or_default();
        let _ = writeln!(
            o,
            "# HELP tapedeck_skipped_total Exchanges not recorded by choice.\n\
             # TYPE tapedeck_skipped_total counter"
        );
        for (reason, n) in counts.skipped_by_reason() {
            let _ = writeln!(o, "tapedeck_skipped_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP tapedeck_dropped_total Exchanges that should have been recorded but were not.\n\
             # TYPE tapedeck_dropped_total counter"
        );
        for (reason, n) in counts.dropped_by_reason() {
            let _ = writeln!(o, "tapedeck_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP tapedeck_tape_written_total Exchanges written to the spool.\n\
             # TYPE tapedeck_tape_written_total counter\ntapedeck_tape_written_total {}\n\
             # HELP tapedeck_tape_bytes_written_total Bytes written to spool segments.\n\
             # TYPE tapedeck_tape_bytes_written_total counter\ntapedeck_tape_bytes_written_total {}\n\
             # HELP tapedeck_tape_bytes_sealed_total Bytes of sealed Parquet files written.\n\
             # TYPE tapedeck_tape_bytes_sealed_total counter\ntapedeck_tape_bytes_sealed_total {}\n\
             # HELP tapedeck_tape_files_sealed_total Sealed Parquet files written.\n\
             # TYPE tapedeck_tape_files_sealed_total counter\ntapedeck_tape_files_sealed_total {}\n\
             # HELP tapedeck_tape_seal_errors_total Failed attempts to seal a spool segment.\n\
             # TYPE tapedeck_tape_seal_errors_total counter\ntapedeck_tape_seal_errors_total {}\n\
             # HELP tapedeck_writer_queue_depth Records waiting in the tape writer queue.\n\
             # TYPE tapedeck_writer_queue_depth gauge\ntapedeck_writer_queue_depth {}\n\
             # HELP tapedeck_writer_queue_bytes Bytes of records waiting for the tape writer (bounded by queue-bytes).\n\
             # TYPE tapedeck_writer_queue_bytes gauge\ntapedeck_writer_queue_bytes {}\n\
             # HELP tapedeck_tape_seal_backlog_bytes Bytes of closed spool segments not yet sealed.\n\
             # TYPE tapedeck_tape_seal_backlog_bytes gauge\ntapedeck_tape_seal_backlog_bytes {}",
            counts.written,
            w.bytes_spooled,
            w.bytes_sealed,
            w.files_sealed,
            w.seal_errors,
            w.queue_depth,
            w.queue_bytes,
            w.seal_backlog_bytes
        );
        let degraded = match writer {
            Some((_, h)) => h.degraded,
            None => true,
        };
        let _ = writeln!(
            o,
            "# HELP tapedeck_writer_degraded 1 when the tape writer cannot record.\n\
             # TYPE tapedeck_writer_degraded gauge\ntapedeck_writer_degraded {}",
            u8::from(degraded)
        );
        let _ = writeln!(
            o,
            "# HELP tapedeck_tape_files_uploaded_total Sealed files uploaded to the object store.\n\
             # TYPE tapedeck_tape_files_uploaded_total counter\ntapedeck_tape_files_uploaded_total {}\n\
             # HELP tapedeck_tape_bytes_uploaded_total Bytes of sealed files uploaded.\n\
             # TYPE tapedeck_tape_bytes_uploaded_total counter\ntapedeck_tape_bytes_uploaded_total {}\n\
             # HELP tapedeck_tape_upload_failures_total Failed upload attempts (retried).\n\
             # TYPE tapedeck_tape_upload_failures_total counter\ntapedeck_tape_upload_failures_total {}\n\
             # HELP tapedeck_tape_upload_pending Sealed files waiting locally for upload.\n\
             # TYPE tapedeck_tape_upload_pending gauge\ntapedeck_tape_upload_pending {}",
            w.files_uploaded, w.bytes_uploaded, w.upload_failures, w.upload_pending
        );
        let _ = writeln!(
            o,
            "# HELP tapedeck_upstream_errors_total Upstream failures by kind.\n\
             # TYPE tapedeck_upstream_errors_total counter"
        );
        for k in ErrorKind::ALL {
            let _ = writeln!(
                o,
                "tapedeck_upstream_errors_total{{kind=\"{k}\"}} {}",
                self.upstream_errors(k)
            );
        }
        let _ = writeln!(
            o,
            "# HELP tapedeck_responses_total Responses sent to clients by status class.\n\
             # TYPE tapedeck_responses_total counter"
        );
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                o,
                "tapedeck_responses_total{{class=\"{class}\"}} {}",
                l(&self.status_class[i + 1])
            );
        }
        let _ = writeln!(
            o,
            "# HELP tapedeck_upstream_latency_seconds Time from request to upstream response headers.\n\
             # TYPE tapedeck_upstream_latency_seconds histogram"
        );
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += l(&self.latency_buckets[i]);
            let _ = writeln!(
                o,
                "tapedeck_upstream_latency_seconds_bucket{{le=\"{b}\"}} {cum}"
            );
        }
        let count = l(&self.latency_count);
        let _ = writeln!(
            o,
            "tapedeck_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             tapedeck_upstream_latency_seconds_sum {}\n\
             tapedeck_upstream_latency_seconds_count {count}",
            l(&self.latency_sum_us) as f64 / 1e6
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_what_render_prints() {
        let m = Metrics::default();
        m.requests.fetch_add(20, Ordering::Relaxed);
        m.count(Fate::Recorded, 9);
        m.count(Fate::Skipped(SkipReason::Sample), 4);
        m.count(Fate::Dropped(DropReason::Unavailable), 2);
        m.count(Fate::Dropped(DropReason::QueueFull), 1);
        let stats = WriterStats {
            written: 6,
            dropped_queue_full: 3,
            ..WriterStats::default()
        };
        let c = m.counts(Some(&stats));
        assert_eq!((c.requests, c.recorded, c.written), (20, 9, 6));
        assert_eq!((c.dropped_total(), c.skipped_total()), (6, 4));
        assert_eq!(
            c.dropped[0], 4,
            "the hand-off's and the writer's queue drops add up"
        );
        let health = Health {
            degraded: false,
            reason: None,
        };
        let t = m.render(Some((&stats, &health)));
        for (reason, n) in c.dropped_by_reason() {
            assert!(t.contains(&format!(
                "tapedeck_dropped_total{{reason=\"{reason}\"}} {n}\n"
            )));
        }
        for (reason, n) in c.skipped_by_reason() {
            assert!(t.contains(&format!(
                "tapedeck_skipped_total{{reason=\"{reason}\"}} {n}\n"
            )));
        }
        assert!(t.contains("tapedeck_tape_written_total 6\n"), "{t}");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.requests.fetch_add(3, Ordering::Relaxed);
        m.observe_upstream_latency(Duration::from_millis(3));
        m.observe_upstream_latency(Duration::from_secs(20));
        m.upstream_error(ErrorKind::ConnectRefused);
        m.status(502);
        let stats = WriterStats {
            dropped_io: 7,
            ..WriterStats::default()
        };
        let health = Health {
            degraded: true,
            reason: Some("disk".into()),
        };
        let t = m.render(Some((&stats, &health)));
        assert!(t.contains("tapedeck_requests_total 3\n"), "{t}");
        assert!(t.contains("tapedeck_dropped_total{reason=\"io\"} 7\n"));
        assert!(t.contains("tapedeck_upstream_errors_total{kind=\"connect-refused\"} 1\n"));
        assert!(t.contains("tapedeck_upstream_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(t.contains("tapedeck_upstream_latency_seconds_bucket{le=\"10\"} 1\n"));
        assert!(t.contains("tapedeck_upstream_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(t.contains("tapedeck_responses_total{class=\"5xx\"} 1\n"));
        assert!(t.contains("tapedeck_writer_degraded 1\n"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().expect("value");
            assert!(v.parse::<f64>().is_ok(), "bad sample line {line}");
        }
    }
}
