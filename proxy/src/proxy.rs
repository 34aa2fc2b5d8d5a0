//! The recording proxy: pingora's [`ProxyHttp`] implemented by [`RecordingProxy`].
//!
//! Per request, [`Ctx`] is created by pingora and filled by the hooks, in this order:
//! - `early_request_filter`: start time; per-read body timeout against slow clients; tells
//!   [`head_deadline`](crate::head_deadline) the head is complete;
//! - `request_filter`: the capture decision (filters, sampling) from the request head;
//! - `request_body_filter`: request body chunks, cloned (`Bytes` refcount) up to the cap;
//! - `upstream_response_filter`: status and headers *as the upstream sent them*; time to first
//!   byte;
//! - `upstream_response_body_filter` / `_trailer_filter`: response body chunks up to the cap,
//!   trailers; the time the upstream finished;
//! - `logging` (after the response went out, or on a fatal error): the request head is read from
//!   the session, the record is assembled, redacted and pushed to the [`Batcher`], which never
//!   blocks (a full queue drops and counts).
//!
//! Nothing on the request path does I/O or copies body bytes; bodies beyond the cap are forwarded
//! untouched and the record is flagged truncated with the true size.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::ALPN;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use tapedeck_storage::{ErrorKind, Exchange, Header, TRAILER_MARKER, TapeSender, flags, now_us};
use tracing::{debug, info, warn};

use crate::batch::Batcher;
use crate::config::Upstream;
use crate::metrics::Metrics;
use crate::sample::{Sampler, Skip};
use tapedeck_common::Redactor;

/// Largest request head (target plus header names and values) that is forwarded; a larger one is
/// answered `431` and never reaches the upstream. pingora alone accepts heads up to 1 MiB; common
/// servers refuse far less (nginx: 32 KiB by default).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// The size of a request head as counted against [`MAX_REQUEST_HEAD`].
fn request_head_len(req: &pingora::http::RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target
}

/// A body captured up to a cap, as clones of the chunks that passed through.
#[derive(Debug, Default)]
pub struct BodyCapture {
    chunks: Vec<Bytes>,
    captured: usize,
    size: u64,
    truncated: bool,
}

impl BodyCapture {
    /// Accounts for `chunk` and keeps (a refcounted slice of) it while under `cap` bytes.
    pub fn push(&mut self, chunk: &Bytes, cap: usize) {
        self.size += chunk.len() as u64;
        if chunk.is_empty() {
            return;
        }
        let room = cap.saturating_sub(self.captured);
        if room == 0 {
            self.truncated = true;
            return;
        }
        let take = room.min(chunk.len());
        if take < chunk.len() {
            self.truncated = true;
            self.chunks.push(chunk.slice(..take));
        } else {
            self.chunks.push(chunk.clone());
        }
        self.captured += take;
    }

    /// The true size seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether bytes beyond the cap were seen.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The captured bytes as one buffer (no copy for a single chunk).
    pub fn take(&mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut b = BytesMut::with_capacity(self.captured);
                for c in self.chunks.drain(..) {
                    b.extend_from_slice(&c);
                }
                b.freeze()
            }
        }
    }
}

/// Per-request state, owned by pingora for the life of one exchange.
#[derive(Debug)]
pub struct Ctx {
    start: Instant,
    started_at_us: i64,
    record: bool,
    upgraded: bool,
    flags: u32,
    req_body: BodyCapture,
    status: Option<u16>,
    /// The upstream's headers (then a [`TRAILER_MARKER`] and its trailers, if any) as the tape's
    /// header list; values are slices of one buffer per map.
    resp_headers: Vec<Header>,
    resp_body: BodyCapture,
    ttfb: Option<Duration>,
    upstream_done: Option<Duration>,
}

/// Where the recorder sends records: a tape writer, or nothing (pass-through or a tape that
/// could not be opened).
#[derive(Debug, Clone)]
pub enum Sink {
    /// Recording is off: nothing is captured.
    Off,
    /// The tape could not be opened (yet): requests pass, records are dropped and counted until
    /// a background retry succeeds.
    Unavailable(Arc<PendingTape>),
    /// Records go to this writer, through a [`Batcher`].
    Tape(TapeSink),
}

/// A tape that could not be opened at start; a background thread keeps retrying and, once it
/// succeeds, [`PendingTape::ready`] returns the sink (lock-free for the request path).
#[derive(Debug, Default)]
pub struct PendingTape {
    reason: std::sync::Mutex<String>,
    ready: std::sync::OnceLock<TapeSink>,
}

impl PendingTape {
    /// A pending tape that failed to open for `reason`.
    pub fn new(reason: String) -> Self {
        PendingTape {
            reason: std::sync::Mutex::new(reason),
            ready: std::sync::OnceLock::new(),
        }
    }

    /// The sink, once the tape has been opened.
    pub fn ready(&self) -> Option<&TapeSink> {
        self.ready.get()
    }

    /// Why the tape is not open.
    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Records the latest failure.
    pub fn set_reason(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason;
        }
    }

    /// Switches recording on.
    pub fn set_ready(&self, sink: TapeSink) {
        let _ = self.ready.set(sink);
    }
}

/// A tape writer and the batching hand-off in front of it.
#[derive(Debug, Clone)]
pub struct TapeSink {
    /// Where `logging` puts records.
    pub batcher: Batcher,
    /// The writer's handle, for its counters and health.
    pub sender: TapeSender,
}

/// The [`ProxyHttp`] implementation. Cheap to share: everything is behind `Arc`s.
#[derive(Debug)]
pub struct RecordingProxy {
    peer: HttpPeer,
    scheme: &'static str,
    source: Arc<str>,
    max_body: usize,
    read_timeout: Duration,
    idle_timeout_secs: u64,
    sink: Sink,
    redactor: Arc<dyn Redactor>,
    sampler: Sampler,
    metrics: Arc<Metrics>,
}

/// What [`RecordingProxy::new`] needs.
#[derive(Debug)]
pub struct ProxyParts {
    /// The upstream to forward to.
    pub upstream: Upstream,
    /// Verify the upstream's certificate (https upstreams).
    pub upstream_verify: bool,
    /// HTTP/2 prior knowledge to a plaintext upstream.
    pub upstream_h2c: bool,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream read timeout.
    pub upstream_timeout: Duration,
    /// Per-read timeout of a client's request body (the head has its own deadline,
    /// [`head_deadline`](crate::head_deadline)).
    pub read_timeout: Duration,
    /// Idle keep-alive timeout.
    pub idle_timeout: Duration,
    /// `scheme` column: `https` when the listener terminates TLS.
    pub tls_listener: bool,
    /// `source` column.
    pub source: String,
    /// Body capture cap.
    pub max_body: usize,
    /// Where records go.
    pub sink: Sink,
    /// The redactor.
    pub redactor: Arc<dyn Redactor>,
    /// The capture decision.
    pub sampler: Sampler,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl RecordingProxy {
    /// Builds the proxy logic.
    pub fn new(p: ProxyParts) -> Self {
        // SNI only matters for TLS; an empty one keeps the per-request peer clone allocation-free.
        let sni = if p.upstream.tls {
            p.upstream.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(p.upstream.addr, p.upstream.tls, sni);
        peer.options.connection_timeout = Some(p.connect_timeout);
        peer.options.read_timeout = Some(p.upstream_timeout);
        peer.options.write_timeout = Some(p.upstream_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if p.upstream.tls {
            peer.options.alpn = ALPN::H2H1;
            let tls = &p.upstream.tls_options;
            tls.apply(&mut peer);
            let verify = p.upstream_verify && !tls.insecure;
            peer.options.verify_cert = verify;
            peer.options.verify_hostname = verify;
            if !verify {
                warn!(
                    upstream = %p.upstream.authority,
                    "UPSTREAM CERTIFICATE VERIFICATION IS OFF (upstream-insecure): anyone on the \
                     path can impersonate the upstream and read the traffic; use upstream-ca instead"
                );
            }
            info!(
                upstream = %p.upstream.authority,
                sni = %peer.sni,
                ca = if tls.ca.is_some() { "upstream-ca" } else { "system roots" },
                client_cert = tls.client_cert.as_ref().map(|c| c.cert_path().display().to_string()),
                "https upstream"
            );
        } else if p.upstream_h2c {
            peer.options.set_http_version(2, 2);
        }
        RecordingProxy {
            peer,
            scheme: if p.tls_listener { "https" } else { "http" },
            source: Arc::from(p.source),
            max_body: p.max_body,
            read_timeout: p.read_timeout,
            idle_timeout_secs: p.idle_timeout.as_secs().max(1),
            sink: p.sink,
            redactor: p.redactor,
            sampler: p.sampler,
            metrics: p.metrics,
        }
    }

    fn build_record(&self, session: &Session, ctx: &mut Ctx, e: Option<&Error>) -> Exchange {
        let req = session.req_header();
        let uri = &req.uri;
        let http2 = session.is_http2();
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut req_headers = Vec::new();
        append_headers(&mut req_headers, &req.headers);
        let total = ctx.start.elapsed();
        let mut ex = Exchange {
            id: fast_v7(ctx.started_at_us),
            source: self.source.to_string(),
            started_at_us: ctx.started_at_us,
            ttfb_us: ctx.ttfb.map(micros),
            // A response without a body (HEAD, 204, 304) is done when its headers are.
            duration_us: ctx
                .upstream_done
                .or(ctx.ttfb.filter(|_| ctx.upgraded || e.is_none()))
                .map(micros),
            total_us: Some(micros(total)),
            client_addr: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(addr_string),
            method: req.method.as_str().to_owned(),
            scheme: self.scheme.to_owned(),
            authority,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            http_version: if http2 {
                "HTTP/2".to_owned()
            } else {
                version_str(req.version).to_owned()
            },
            req_headers,
            req_body: ctx.req_body.take(),
            req_body_size: ctx.req_body.size(),
            req_body_truncated: ctx.req_body.truncated(),
            status: ctx.status,
            resp_headers: std::mem::take(&mut ctx.resp_headers),
            resp_body: ctx.resp_body.take(),
            resp_body_size: ctx.resp_body.size(),
            resp_body_truncated: ctx.resp_body.truncated(),
            error_kind: None,
            error: None,
            flags: ctx.flags,
            // Every field is spelled out: `..Exchange::default()` allocates four strings that
            // would be dropped at once (measured: ~1k instructions per exchange).
            origin_id: None,
            target: None,
            scheduled_at_us: None,
            sent_at_us: None,
            trace_id: None,
        };
        if let Some(e) = e {
            let kind = error_kind(e);
            ex.error_kind = Some(kind);
            let sent = session
                .response_written()
                .map(|r| r.status.as_u16())
                .filter(|_| ctx.status.is_none());
            ex.error = Some(match sent {
                Some(code) => format!("{e} (client got {code})"),
                None => e.to_string(),
            });
        }
        ex
    }
}

/// Appends `map` to the tape's header list `out`. The values are copied once, into one buffer,
/// and each header holds a slice of it: one allocation for all values instead of one each.
fn append_headers(out: &mut Vec<Header>, map: &http::HeaderMap) {
    let total: usize = map.values().map(|v| v.len()).sum();
    let mut buf = BytesMut::with_capacity(total);
    for v in map.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = buf.freeze();
    out.reserve(map.len());
    let mut at = 0;
    for (name, value) in map {
        let end = at + value.len();
        out.push(Header {
            name: name.as_str().to_owned(),
            value: buf.slice(at..end),
        });
        at = end;
    }
}

/// `ip:port`, as `Display` writes it, without the formatting machinery for IPv4 (`to_string`
/// measured ~1.9k instructions per exchange, a fifth of the `logging` hook).
fn addr_string(a: &std::net::SocketAddr) -> String {
    fn push_num(s: &mut String, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            s.push(char::from(d));
        }
    }
    match a {
        std::net::SocketAddr::V4(v4) => {
            let mut s = String::with_capacity(21);
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_num(&mut s, u32::from(*octet));
            }
            s.push(':');
            push_num(&mut s, u32::from(v4.port()));
            s
        }
        std::net::SocketAddr::V6(_) => a.to_string(),
    }
}

/// A UUIDv7 for an exchange that started at `started_at_us`, with random bits from the
/// thread-local RNG (the `uuid` crate's default asks the OS for randomness: one syscall per id).
fn fast_v7(started_at_us: i64) -> uuid::Uuid {
    let millis = u64::try_from(started_at_us / 1000).unwrap_or(0);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Maps a pingora error to the tape's [`ErrorKind`].
pub fn error_kind(e: &Error) -> ErrorKind {
    use ErrorType::*;
    let downstream = matches!(e.esource(), ErrorSource::Downstream);
    match e.etype() {
        ConnectRefused => ErrorKind::ConnectRefused,
        ConnectTimedout => ErrorKind::ConnectTimeout,
        TLSWantX509Lookup | TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert
        | HandshakeError => ErrorKind::Tls,
        InvalidHTTPHeader | H1Error | H2Error | H2Downgrade | InvalidH2 => ErrorKind::Protocol,
        // pingora's HTTP/1 body errors are custom types, known only by name.
        Custom("InvalidChunk" | "InvalidTrailerEnd") => ErrorKind::Protocol,
        Custom("PrematureBodyEnd") if downstream => ErrorKind::ClientAbort,
        Custom("PrematureBodyEnd") => ErrorKind::Reset,
        Custom("PingTimedout") => ErrorKind::Timeout,
        ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout if downstream => {
            ErrorKind::ClientAbort
        }
        ReadError | WriteError | ConnectionClosed => ErrorKind::Reset,
        ReadTimedout | WriteTimedout => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    }
}

#[async_trait]
impl ProxyHttp for RecordingProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            started_at_us: 0,
            record: false,
            upgraded: false,
            flags: 0,
            req_body: BodyCapture::default(),
            status: None,
            resp_headers: Vec::new(),
            resp_body: BodyCapture::default(),
            ttfb: None,
            upstream_done: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.start = Instant::now();
        ctx.started_at_us = now_us();
        session.set_read_timeout(Some(self.read_timeout));
        crate::head_deadline::head_done(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let head_len = request_head_len(session.req_header());
        if head_len > MAX_REQUEST_HEAD {
            warn!(
                bytes = head_len,
                limit = MAX_REQUEST_HEAD,
                "request head too large; answered 431"
            );
            session.set_keepalive(None);
            session.respond_error(431).await?;
            return Ok(true);
        }
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(self.sink, Sink::Off) {
            self.metrics.skipped_off.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let req = session.req_header();
        let key = self
            .sampler
            .key_header()
            .and_then(|k| req.headers.get(k))
            .map(|v| v.as_bytes());
        match self
            .sampler
            .decide(req.method.as_str(), req.uri.path(), key)
        {
            Ok(()) => ctx.record = true,
            Err(Skip::Filtered) => {
                self.metrics.skipped_filter.fetch_add(1, Ordering::Relaxed);
            }
            Err(Skip::Sampled) => {
                self.metrics.skipped_sample.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.record
            && !ctx.upgraded
            && let Some(b) = body
        {
            ctx.req_body.push(b, self.max_body);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if resp.status.is_informational() && status != 101 {
            return Ok(());
        }
        let ttfb = ctx.start.elapsed();
        ctx.ttfb = Some(ttfb);
        self.metrics.observe_upstream_latency(ttfb);
        if status == 101 {
            ctx.upgraded = true;
            ctx.flags |= flags::UPGRADE;
            self.metrics.upgrades.fetch_add(1, Ordering::Relaxed);
        }
        if !ctx.record {
            return Ok(());
        }
        ctx.status = Some(status);
        // Assigned, not appended to, should pingora call this hook twice for one exchange.
        ctx.resp_headers.clear();
        append_headers(&mut ctx.resp_headers, &resp.headers);
        if resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
        {
            ctx.flags |= flags::GRPC;
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if ctx.upgraded {
            return Ok(None);
        }
        if ctx.record
            && let Some(b) = body
        {
            ctx.resp_body.push(b, self.max_body);
        }
        if end_of_stream {
            ctx.upstream_done = Some(ctx.start.elapsed());
        }
        Ok(None)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_done = Some(ctx.start.elapsed());
        if ctx.record {
            ctx.resp_headers
                .push(Header::new(TRAILER_MARKER, Bytes::new()));
            append_headers(&mut ctx.resp_headers, trailers);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => match error_kind(e) {
                    ErrorKind::Timeout | ErrorKind::ConnectTimeout => 504,
                    _ => 502,
                },
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError
                    | ErrorType::ReadError
                    | ErrorType::ConnectionClosed
                    | ErrorType::ReadTimedout => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0
            && session.response_written().is_none()
            && let Err(err) = session.respond_error(code).await
        {
            debug!(error = %err, "could not send the error response");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(resp) = session.response_written() {
            self.metrics.status(resp.status.as_u16());
        }
        if let Some(e) = e
            && !matches!(e.esource(), ErrorSource::Downstream)
        {
            let kind = error_kind(e);
            self.metrics.upstream_error(kind);
            debug!(kind = %kind, error = %e, path = session.req_header().uri.path(), "exchange failed");
        }
        if let Some(e) = e
            && matches!(e.esource(), ErrorSource::Downstream)
            && matches!(e.etype(), ErrorType::ReadTimedout)
        {
            self.metrics
                .client_timeouts_body
                .fetch_add(1, Ordering::Relaxed);
            debug!(
                path = session.req_header().uri.path(),
                "request body read timed out"
            );
        }
        // Idle keep-alive connections are closed after idle-timeout instead of never.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.idle_timeout_secs));
        }
        crate::head_deadline::request_done(session);
        if !ctx.record {
            return;
        }
        let batcher = match &self.sink {
            Sink::Tape(s) => &s.batcher,
            Sink::Unavailable(p) => match p.ready() {
                Some(s) => &s.batcher,
                None => {
                    self.metrics
                        .dropped_unavailable
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            Sink::Off => return,
        };
        let mut ex = self.build_record(session, ctx, e);
        if ex.req_body_truncated || ex.resp_body_truncated {
            self.metrics.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if self.redactor.redact(&mut ex) {
            ex.flags |= flags::REDACTED;
            self.metrics.redacted.fetch_add(1, Ordering::Relaxed);
        }
        if batcher.push(ex) {
            self.metrics.recorded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        // Client aborts are routine; everything else is logged by pingora.
        matches!(e.esource(), ErrorSource::Downstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_caps_and_counts() {
        let mut c = BodyCapture::default();
        c.push(&Bytes::from_static(b"hello "), 8);
        c.push(&Bytes::from_static(b"world"), 8);
        c.push(&Bytes::from_static(b"!!"), 8);
        assert_eq!(c.size(), 13);
        assert!(c.truncated());
        assert_eq!(c.take(), Bytes::from_static(b"hello wo"));

        let mut one = BodyCapture::default();
        let chunk = Bytes::from_static(b"abc");
        one.push(&chunk, 10);
        assert!(!one.truncated());
        let got = one.take();
        assert_eq!(got, chunk);
        // A single chunk is handed over without a copy.
        assert_eq!(got.as_ptr(), chunk.as_ptr());

        let mut empty = BodyCapture::default();
        empty.push(&Bytes::new(), 0);
        assert!(!empty.truncated());
        assert_eq!(empty.take(), Bytes::new());
    }

    #[test]
    fn headers_keep_order_repeats_and_values_in_one_buffer() {
        let mut map = http::HeaderMap::new();
        map.append(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        map.append("x-empty", http::HeaderValue::from_static(""));
        map.append("set-cookie", http::HeaderValue::from_static("a=1"));
        map.append("set-cookie", http::HeaderValue::from_static("b=2"));
        let mut out = vec![Header::new("first", "kept")];
        append_headers(&mut out, &map);
        let got: Vec<(&str, &[u8])> = out
            .iter()
            .map(|h| (h.name.as_str(), &h.value[..]))
            .collect();
        assert_eq!(
            got,
            [
                ("first", &b"kept"[..]),
                ("content-type", b"application/json"),
                ("x-empty", b""),
                ("set-cookie", b"a=1"),
                ("set-cookie", b"b=2"),
            ]
        );
        // The values are adjacent slices of one buffer.
        let ct = out[1].value.as_ptr();
        assert_eq!(out[3].value.as_ptr(), ct.wrapping_add(16));
        let mut none = Vec::new();
        append_headers(&mut none, &http::HeaderMap::new());
        assert!(none.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn client_addresses_print_as_display_does(ip in proptest::prelude::any::<[u8; 4]>(), port in proptest::prelude::any::<u16>()) {
            let a = std::net::SocketAddr::from((ip, port));
            proptest::prop_assert_eq!(addr_string(&a), a.to_string());
        }
    }

    #[test]
    fn client_address_edges() {
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "127.0.0.1:8080",
            "[::1]:443",
        ] {
            let a: std::net::SocketAddr = a.parse().expect("addr");
            assert_eq!(addr_string(&a), a.to_string());
        }
    }

    #[test]
    fn ids_are_v7_and_ordered_by_start() {
        let a = fast_v7(1_700_000_000_000_000);
        let b = fast_v7(1_700_000_000_001_000);
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b);
        assert_ne!(fast_v7(5_000), fast_v7(5_000));
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            error_kind(&Error::new_up(ErrorType::ConnectRefused)),
            ErrorKind::ConnectRefused
        );
        assert_eq!(
            error_kind(&Error::new_up(ErrorType::ReadTimedout)),
            ErrorKind::Timeout
        );
        assert_eq!(
            error_kind(&Error::new_up(ErrorType::ConnectionClosed)),
            ErrorKind::Reset
        );
        assert_eq!(
            error_kind(&Error::new_down(ErrorType::ConnectionClosed)),
            ErrorKind::ClientAbort
        );
        assert_eq!(
            error_kind(&Error::new_up(ErrorType::InvalidHTTPHeader)),
            ErrorKind::Protocol
        );
        // pingora's body errors (found by tests/e2e/faults.rs: a bad chunk size was `other`).
        assert_eq!(
            error_kind(&Error::new_up(ErrorType::Custom("InvalidChunk"))),
            ErrorKind::Protocol
        );
        assert_eq!(
            error_kind(&Error::new_up(ErrorType::Custom("PrematureBodyEnd"))),
            ErrorKind::Reset
        );
        assert_eq!(
            error_kind(&Error::new_down(ErrorType::Custom("PrematureBodyEnd"))),
            ErrorKind::ClientAbort
        );
    }
}
