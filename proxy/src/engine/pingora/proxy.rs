//! The pingora engine's proxy: pingora's [`ProxyHttp`] implemented by [`RecordingProxy`], a thin
//! adapter from pingora's hooks to the [capture layer](crate::capture).
//!
//! Per request, [`Ctx`] is created by pingora and filled by the hooks, in this order:
//! - `early_request_filter`: start time; per-read body timeout against slow clients; tells
//!   [`head_deadline`](super::head_deadline) the head is complete;
//! - `request_filter`: the `431` check, then [`Capture::decide`] from the request head;
//! - `request_body_filter`: request body chunks into a [`BodyCapture`];
//! - `upstream_response_filter`: status and headers *as the upstream sent them*
//!   ([`ResponseCapture::head`]); time to first byte;
//! - `upstream_response_body_filter` / `_trailer_filter`: response body chunks, trailers; the
//!   time the upstream finished;
//! - `logging` (after the response went out, or on a fatal error): the request head is read from
//!   the session and [`Capture::begin`] + [`Capture::finish`] build, redact and hand off the
//!   record.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::ALPN;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use tapedeck_storage::{ErrorKind, flags};
use tracing::{debug, info, warn};

use crate::capture::{
    BodyCapture, Capture, Failure, MAX_REQUEST_HEAD, RequestHead, ResponseCapture, Timings,
};
use crate::config::Upstream;

/// Per-request state, owned by pingora for the life of one exchange.
#[derive(Debug)]
pub(crate) struct Ctx {
    timings: Timings,
    record: bool,
    upgraded: bool,
    req_body: BodyCapture,
    resp: ResponseCapture,
}

/// The [`ProxyHttp`] implementation. Cheap to share: everything is behind `Arc`s.
#[derive(Debug)]
pub(crate) struct RecordingProxy {
    peer: HttpPeer,
    read_timeout: Duration,
    idle_timeout_secs: u64,
    capture: Arc<Capture>,
}

/// What [`RecordingProxy::new`] needs.
#[derive(Debug)]
pub(crate) struct ProxyParts {
    /// The upstream to forward to.
    pub(crate) upstream: Upstream,
    /// Verify the upstream's certificate (https upstreams).
    pub(crate) upstream_verify: bool,
    /// HTTP/2 prior knowledge to a plaintext upstream.
    pub(crate) upstream_h2c: bool,
    /// Upstream connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Upstream read timeout.
    pub(crate) upstream_timeout: Duration,
    /// Per-read timeout of a client's request body (the head has its own deadline,
    /// [`head_deadline`](super::head_deadline)).
    pub(crate) read_timeout: Duration,
    /// Idle keep-alive timeout.
    pub(crate) idle_timeout: Duration,
    /// The capture layer.
    pub(crate) capture: Arc<Capture>,
}

impl RecordingProxy {
    /// Builds the proxy logic.
    pub(crate) fn new(p: ProxyParts) -> Self {
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
            super::apply_tls(tls, &mut peer);
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
            read_timeout: p.read_timeout,
            idle_timeout_secs: p.idle_timeout.as_secs().max(1),
            capture: p.capture,
        }
    }

    fn finish_record(&self, session: &Session, ctx: &mut Ctx, e: Option<&Error>) {
        let req = session.req_header();
        let head = RequestHead {
            method: &req.method,
            uri: &req.uri,
            version: if session.is_http2() {
                http::Version::HTTP_2
            } else {
                req.version
            },
            headers: &req.headers,
            client: session.client_addr().and_then(|a| a.as_inet()).copied(),
        };
        let ex = self.capture.begin(&head, ctx.timings.started_at_us);
        let failure = e.map(|e| {
            let sent = session
                .response_written()
                .map(|r| r.status.as_u16())
                .filter(|_| ctx.resp.status.is_none());
            Failure {
                kind: error_kind(e),
                message: match sent {
                    Some(code) => format!("{e} (client got {code})"),
                    None => e.to_string(),
                },
            }
        });
        let resp = std::mem::take(&mut ctx.resp);
        let req_body = std::mem::take(&mut ctx.req_body);
        self.capture
            .finish(ex, req_body, resp, &ctx.timings, failure);
    }
}

/// The size of a request head as counted against [`MAX_REQUEST_HEAD`].
fn request_head_len(req: &pingora::http::RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target
}

/// Maps a pingora error to the tape's [`ErrorKind`].
pub(crate) fn error_kind(e: &Error) -> ErrorKind {
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
            timings: Timings::now(),
            record: false,
            upgraded: false,
            req_body: BodyCapture::default(),
            resp: ResponseCapture::default(),
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.timings = Timings::now();
        session.set_read_timeout(Some(self.read_timeout));
        super::head_deadline::head_done(session);
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
        let req = session.req_header();
        ctx.record = self
            .capture
            .decide(&req.method, req.uri.path(), &req.headers);
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
            ctx.req_body.push(b, self.capture.max_body());
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
        let ttfb = ctx.timings.response_head();
        let metrics = self.capture.metrics();
        metrics.observe_upstream_latency(ttfb);
        if status == 101 {
            ctx.upgraded = true;
            ctx.resp.flags |= flags::UPGRADE;
            metrics.upgrades.fetch_add(1, Ordering::Relaxed);
        }
        if ctx.record {
            ctx.resp.head(resp.status, &resp.headers);
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
            ctx.resp.body.push(b, self.capture.max_body());
        }
        if end_of_stream {
            ctx.timings.upstream_done();
        }
        Ok(None)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.timings.upstream_done();
        if ctx.record {
            ctx.resp.trailers(trailers);
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
        let metrics = self.capture.metrics();
        if let Some(resp) = session.response_written() {
            metrics.status(resp.status.as_u16());
        }
        if let Some(e) = e
            && !matches!(e.esource(), ErrorSource::Downstream)
        {
            let kind = error_kind(e);
            metrics.upstream_error(kind);
            debug!(kind = %kind, error = %e, path = session.req_header().uri.path(), "exchange failed");
        }
        if let Some(e) = e
            && matches!(e.esource(), ErrorSource::Downstream)
            && matches!(e.etype(), ErrorType::ReadTimedout)
        {
            metrics.client_timeouts_body.fetch_add(1, Ordering::Relaxed);
            debug!(
                path = session.req_header().uri.path(),
                "request body read timed out"
            );
        }
        // Idle keep-alive connections are closed after idle-timeout instead of never.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.idle_timeout_secs));
        }
        super::head_deadline::request_done(session);
        if ctx.record {
            self.finish_record(session, ctx, e);
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
