//! The capture layer: everything the recorder does with an exchange that is not I/O, written
//! once against `http` types and called by both engines (`engine::hyper`, `engine::pingora`).
//!
//! Per request, an engine calls, in this order:
//! 1. [`Capture::decide`] with the request head: counts the request and decides from filters and
//!    sampling whether it is recorded (a skip is counted at once, with its [`SkipReason`]);
//! 2. for a recorded request, [`Capture::begin`]: the request fields of the record (headers
//!    copied once into one buffer, a UUIDv7 id from the thread-local RNG, the client address);
//! 3. while the exchange runs: [`BodyCapture::push`] for each body chunk (refcounted slices up
//!    to `max-body`, copies of chunks of at most 4 KiB, true sizes kept),
//!    [`ResponseCapture::head`] / [`ResponseCapture::trailers`] with what the *upstream* sent,
//!    [`Timings`] at the response head and the upstream's end;
//! 4. after the response went out (or failed, with a [`Failure`]): [`Capture::finish`], which
//!    fills the record, runs the [`Redactor`], and hands the record over to the writer through a
//!    per-thread batch ([`handoff`]), where it is counted once: [`Fate::Recorded`] or dropped.
//!
//! Invariants: a record enters the hand-off only after the redactor ran (no secret reaches the
//! writer's queue); every request is counted once in [`Metrics`] as recorded, skipped or
//! dropped; nothing here blocks or does I/O; body bytes are copied on the request path only for
//! small chunks (so that a record does not pin the engine's read buffer) and in one join of the
//! kept chunks in `finish`.

mod body;
pub(crate) mod handoff;
mod record;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderMap, HeaderName, Method};
use tapedeck_common::Redactor;
use tapedeck_common::trace::TraceSource;
use tapedeck_storage::{CompactString, Exchange, flags};

pub(crate) use body::BodyCapture;
pub(crate) use handoff::{Handoff, flush_local, queue_bytes_split};
pub(crate) use handoff::{PendingTape, Sink, TapeSink};
pub(crate) use record::{Failure, RequestHead, ResponseCapture, Timings};

use crate::metrics::{DropReason, Fate, Metrics, SkipReason};
use crate::sample::{Sampler, Skip};

/// Largest request head (request target plus header names and values) that is forwarded; a
/// larger one is answered `431` and never reaches the upstream. Common servers refuse far less
/// (nginx: 32 KiB by default).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// What [`Capture::new`] needs.
#[derive(Debug)]
pub(crate) struct CaptureParts {
    /// `source` column.
    pub(crate) source: String,
    /// `scheme` column: `https` when the listener terminates TLS.
    pub(crate) tls_listener: bool,
    /// Body capture cap per direction.
    pub(crate) max_body: usize,
    /// Filters and sampling.
    pub(crate) sampler: Sampler,
    /// The redactor.
    pub(crate) redactor: Arc<dyn Redactor>,
    /// Counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Where records go.
    pub(crate) sink: Sink,
    /// Where the `trace_id` column comes from.
    pub(crate) trace: TraceSource,
}

/// The shared, engine-agnostic half of the recorder. Cheap to share (`Arc`).
#[derive(Debug)]
pub(crate) struct Capture {
    source: CompactString,
    scheme: &'static str,
    max_body: usize,
    sampler: Sampler,
    redactor: Arc<dyn Redactor>,
    metrics: Arc<Metrics>,
    sink: Sink,
    trace: TraceSource,
    /// `trace`'s header, parsed once (`None`: not a valid name, so never present).
    trace_header: Option<HeaderName>,
    /// The sampler's key header, parsed once (`None`: no key header, or not a valid name).
    key_header: Option<HeaderName>,
}

impl Capture {
    /// The capture layer for one recorder.
    pub(crate) fn new(p: CaptureParts) -> Self {
        // Looking a header up by a `&str` parses and hashes the name each time (measured ~400
        // instructions per exchange): parse each name once here.
        let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).ok();
        let trace_header = name(p.trace.header_name());
        let key_header = p.sampler.key_header().and_then(name);
        Capture {
            source: CompactString::from(p.source),
            scheme: if p.tls_listener { "https" } else { "http" },
            max_body: p.max_body,
            sampler: p.sampler,
            redactor: p.redactor,
            metrics: p.metrics,
            sink: p.sink,
            trace: p.trace,
            trace_header,
            key_header,
        }
    }

    /// The counters.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The body capture cap per direction.
    pub(crate) fn max_body(&self) -> usize {
        self.max_body
    }

    /// Counts a request whose head is complete and decides whether it is recorded. A request
    /// that is not is counted here: skipped with its reason, or dropped when the tape could not
    /// be opened.
    pub(crate) fn decide(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(self.sink, Sink::Off) {
            self.metrics.count(Fate::Skipped(SkipReason::Off), 1);
            return false;
        }
        let key = self
            .key_header
            .as_ref()
            .and_then(|k| headers.get(k))
            .map(|v| v.as_bytes());
        match self.sampler.decide(method.as_str(), path, key) {
            Ok(()) if self.sink.tape().is_some() => true,
            Ok(()) => {
                // Recording is on but the tape could not be opened (yet).
                self.metrics
                    .count(Fate::Dropped(DropReason::Unavailable), 1);
                false
            }
            Err(Skip::Filtered) => {
                self.metrics.count(Fate::Skipped(SkipReason::Filter), 1);
                false
            }
            Err(Skip::Sampled) => {
                self.metrics.count(Fate::Skipped(SkipReason::Sample), 1);
                false
            }
        }
    }

    /// The request fields of a recorded exchange that started at `started_at_us`, its trace id
    /// included (read before redaction: a trace id is not a secret, and a `--trace-header` that
    /// is also redacted still links the exchange to its trace).
    pub(crate) fn begin(&self, head: &RequestHead<'_>, started_at_us: i64) -> Exchange {
        let mut ex = record::request_record(head, started_at_us, self.scheme, &self.source);
        ex.trace_id = self
            .trace_header
            .as_ref()
            .and_then(|n| head.headers.get(n))
            .and_then(|v| self.trace.trace_id(v.as_bytes()));
        ex
    }

    /// Completes a recorded exchange after its response went out (or failed): fills the record,
    /// redacts it, and hands it to the writer. Never blocks; the record's fate is counted once.
    pub(crate) fn finish(
        &self,
        mut ex: Exchange,
        req_body: BodyCapture,
        resp: ResponseCapture,
        timings: &Timings,
        failure: Option<Failure>,
    ) {
        let Some(tape) = self.sink.tape() else {
            // Only reached if the tape went away after `decide` (it never does).
            self.metrics
                .count(Fate::Dropped(DropReason::Unavailable), 1);
            return;
        };
        record::complete_record(&mut ex, req_body, resp, timings, failure);
        if ex.req_body_truncated || ex.resp_body_truncated {
            self.metrics.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if self.redactor.redact(&mut ex) {
            ex.flags |= flags::REDACTED;
            self.metrics.redacted.fetch_add(1, Ordering::Relaxed);
        }
        tape.handoff.push(ex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapedeck_storage::{Filter, Tape, TapeWriter};

    use crate::sample::SamplerBuilder;

    fn capture(sink: Sink, metrics: &Arc<Metrics>) -> Capture {
        Capture::new(CaptureParts {
            source: "svc".into(),
            tls_listener: false,
            max_body: 4,
            sampler: SamplerBuilder::new()
                .exclude_path("/skip")
                .and_then(|b| b.build())
                .expect("sampler"),
            redactor: Arc::new(tapedeck_common::RuleRedactor::default()),
            metrics: metrics.clone(),
            sink,
            trace: TraceSource::Traceparent,
        })
    }

    fn head_of<'a>(
        method: &'a Method,
        uri: &'a http::Uri,
        headers: &'a HeaderMap,
    ) -> RequestHead<'a> {
        RequestHead {
            method,
            uri,
            version: http::Version::HTTP_11,
            headers,
            client: Some(([127, 0, 0, 1], 4000).into()),
        }
    }

    #[test]
    fn every_request_has_one_fate_and_records_are_redacted_before_the_hand_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = TapeWriter::builder(dir.path()).open().expect("writer");
        let metrics = Arc::new(Metrics::default());
        let handoff = Handoff::new(writer.sender(), 64, 1 << 20, metrics.clone());
        let c = capture(
            Sink::Tape(TapeSink {
                handoff,
                sender: writer.sender(),
            }),
            &metrics,
        );
        let get = Method::GET;
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer SECRET".parse().expect("value"));
        headers.insert("host", "svc.example".parse().expect("value"));
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("value"),
        );
        assert!(!c.decide(&get, "/skip", &headers));
        assert!(c.decide(&get, "/keep", &headers));
        let uri: http::Uri = "/keep?a=1".parse().expect("uri");
        let ex = c.begin(&head_of(&get, &uri, &headers), 1_700_000_000_000_000);
        let mut req_body = BodyCapture::default();
        req_body.push(&bytes::Bytes::from_static(b"hello"), c.max_body());
        let mut resp = ResponseCapture::default();
        resp.head(http::StatusCode::OK, &HeaderMap::new());
        let mut t = Timings::now();
        t.response_head();
        c.finish(ex, req_body, resp, &t, None);
        // In this thread's batch until it is handed over.
        assert_eq!(metrics.counts(None).recorded, 0);
        flush_local();
        let counts = metrics.counts(None);
        assert_eq!(
            (counts.requests, counts.recorded, counts.skipped_total()),
            (2, 1, 1)
        );
        assert_eq!(counts.skipped[0], 1, "skipped by the filter");
        assert_eq!(metrics.truncated.load(Ordering::Relaxed), 1);
        writer.close().expect("close");
        let tape: Vec<Exchange> = Tape::open(&[dir.path()])
            .expect("open")
            .exchanges(Filter::default())
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(tape.len(), 1);
        let ex = &tape[0];
        assert_eq!(
            (ex.path.as_str(), ex.query.as_deref(), ex.authority.as_str()),
            ("/keep", Some("a=1"), "svc.example")
        );
        assert_eq!(&ex.req_body[..], b"hell");
        assert!(ex.req_body_truncated && ex.req_body_size == 5);
        assert_eq!(ex.client_addr.as_deref(), Some("127.0.0.1:4000"));
        assert_eq!(
            ex.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(ex.has_flag(flags::REDACTED));
        let auth = tapedeck_storage::find_header(&ex.req_headers, "authorization")
            .expect("kept, redacted");
        assert!(!auth.value_lossy().contains("SECRET"));
    }

    #[test]
    fn off_and_unavailable_are_counted_at_the_decision() {
        let metrics = Arc::new(Metrics::default());
        let off = capture(Sink::Off, &metrics);
        assert!(!off.decide(&Method::GET, "/x", &HeaderMap::new()));
        let pending = capture(
            Sink::Unavailable(Arc::new(PendingTape::new("disk".into()))),
            &metrics,
        );
        assert!(!pending.decide(&Method::GET, "/x", &HeaderMap::new()));
        // A filtered request is skipped, not dropped, even without a tape.
        assert!(!pending.decide(&Method::GET, "/skip", &HeaderMap::new()));
        let c = metrics.counts(None);
        assert_eq!(c.requests, 3);
        assert_eq!(c.skipped, [1, 0, 1]);
        assert_eq!(c.dropped, [0, 0, 0, 1]);
    }
}
