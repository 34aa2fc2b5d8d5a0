//! The bodies the hyper engine forwards, and the exchange they belong to.
//!
//! - [`ReqBody`] wraps the client's request body on its way to the upstream: it keeps chunks for
//!   the record (up to `max-body`), notes progress (the upstream timeout counts from the last
//!   byte moved either way), and fails the request when the client pauses longer than
//!   `header-timeout` (counted as a body timeout).
//! - [`RespBody`] wraps the upstream's response body on its way to the client: it keeps chunks
//!   and trailers for the record, fails when the upstream pauses longer than `upstream-timeout`,
//!   and ends the exchange ([`Flight::finish`]) when the body ends, fails, or is dropped (the
//!   client went away).
//! - [`Flight`] is the exchange in progress: the record (when recorded), timings, the response
//!   capture, and the connection to tell when it is over. Dropping an unfinished flight ends it
//!   as a failure, so no exchange is ever forgotten.
//!
//! Timers exist only while a body is waiting (`Pending`), one per body, moved afterwards.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tapedeck_common::timer::Timer;
use tapedeck_storage::{ErrorKind, Exchange};

use super::Shared;
use super::drive::Streams;
use super::upstream::{Lease, body_error_kind};
use crate::capture::{BodyCapture, Failure, ResponseCapture, Timings};
use crate::engine::head_deadline::Phase;

/// What the client did wrong with its request body, as seen by [`ReqBody`].
const CLIENT_OK: u8 = 0;
const CLIENT_ABORTED: u8 = 1;
const CLIENT_PAUSED: u8 = 2;

/// State shared by a request body (polled by the upstream connection) and its exchange.
#[derive(Debug)]
pub(crate) struct ReqState {
    /// The kept chunks, when the exchange is recorded.
    capture: Option<Mutex<BodyCapture>>,
    max_body: usize,
    /// Chunks moved to the upstream so far: progress for the upstream timeout.
    frames: AtomicU64,
    client: AtomicU8,
    pause_timeout: Duration,
}

impl ReqState {
    pub(crate) fn new(record: bool, max_body: usize, pause_timeout: Duration) -> Self {
        ReqState {
            capture: record.then(|| Mutex::new(BodyCapture::default())),
            max_body,
            frames: AtomicU64::new(0),
            client: AtomicU8::new(CLIENT_OK),
            pause_timeout,
        }
    }

    /// Chunks moved so far.
    pub(crate) fn progress(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// How the client failed its request body, if it did.
    pub(crate) fn client_failure(&self) -> Option<Failure> {
        match self.client.load(Ordering::Relaxed) {
            CLIENT_ABORTED => Some(Failure {
                kind: ErrorKind::ClientAbort,
                message: "the client's request body ended early".to_owned(),
            }),
            CLIENT_PAUSED => Some(Failure {
                kind: ErrorKind::ClientAbort,
                message: format!(
                    "the client's request body paused longer than header-timeout ({} ms)",
                    self.pause_timeout.as_millis()
                ),
            }),
            _ => None,
        }
    }

    fn take_capture(&self) -> BodyCapture {
        self.capture
            .as_ref()
            .and_then(|c| c.lock().ok().map(|mut c| std::mem::take(&mut *c)))
            .unwrap_or_default()
    }
}

/// The error a body reports to hyper.
#[derive(Debug)]
pub(crate) struct BodyError(pub(crate) String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for BodyError {}

/// How long a body has been waiting: the deadline starts at the first `Pending` after progress.
#[derive(Debug, Default)]
struct GapTimer {
    timer: Timer,
    deadline: Option<Instant>,
}

impl GapTimer {
    /// Data moved: the next wait starts a new gap.
    fn progress(&mut self) {
        self.deadline = None;
    }

    /// Whether the body has now waited `timeout` since its last progress (otherwise `cx` is
    /// woken when it has).
    fn expired(&mut self, timeout: Duration, cx: &mut Context<'_>) -> bool {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + timeout);
        self.timer.poll_until(cx, deadline).is_ready()
    }
}

/// The client's request body on its way to the upstream. See the [module docs](self).
pub(crate) struct ReqBody {
    inner: Incoming,
    state: Option<Arc<ReqState>>,
    shared: Option<Arc<Shared>>,
    pause: GapTimer,
}

impl fmt::Debug for ReqBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqBody").finish_non_exhaustive()
    }
}

impl ReqBody {
    /// A body without state: nothing to keep, nothing to wait for (it is already complete).
    pub(crate) fn plain(inner: Incoming) -> Self {
        ReqBody {
            inner,
            state: None,
            shared: None,
            pause: GapTimer::default(),
        }
    }

    pub(crate) fn new(inner: Incoming, state: Arc<ReqState>, shared: Arc<Shared>) -> Self {
        ReqBody {
            inner,
            state: Some(state),
            shared: Some(shared),
            pause: GapTimer::default(),
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(state) = &this.state else {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(|e| BodyError(e.to_string()));
        };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.pause.progress();
                state.frames.fetch_add(1, Ordering::Relaxed);
                if let (Some(data), Some(c)) = (frame.data_ref(), &state.capture)
                    && let Ok(mut c) = c.lock()
                {
                    c.push(data, state.max_body);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                state.client.store(CLIENT_ABORTED, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyError(format!("client request body: {e}")))))
            }
            Poll::Pending => {
                if !this.pause.expired(state.pause_timeout, cx) {
                    return Poll::Pending;
                }
                state.client.store(CLIENT_PAUSED, Ordering::Relaxed);
                if let Some(sh) = &this.shared {
                    sh.capture
                        .metrics()
                        .client_timeouts_body
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(
                    timeout_ms = state.pause_timeout.as_millis() as u64,
                    "request body paused too long"
                );
                Poll::Ready(Some(Err(BodyError(
                    "the client's request body paused longer than header-timeout".to_owned(),
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whom to tell that an exchange is over.
#[derive(Debug)]
pub(crate) enum ConnEnd {
    /// An HTTP/1.1 connection: idle again.
    H1(Arc<Phase>),
    /// An HTTP/2 connection: one stream fewer.
    H2(Arc<Streams>),
}

/// One exchange in progress. See the [module docs](self).
pub(crate) struct Flight {
    pub(crate) shared: Arc<Shared>,
    /// The record (request fields filled) when the exchange is recorded. Inline, not boxed: the
    /// flight itself is boxed (one allocation for both; a recorded exchange allocates on the
    /// proxy's thread and is freed on the writer's, which glibc's allocator makes expensive).
    pub(crate) ex: Option<Exchange>,
    pub(crate) req: Option<Arc<ReqState>>,
    pub(crate) resp: ResponseCapture,
    pub(crate) t: Timings,
    /// The HTTP/1.1 upstream connection of the exchange, parked again when it ends well.
    pub(crate) lease: Option<Lease>,
    end: Option<ConnEnd>,
    done: bool,
}

impl fmt::Debug for Flight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("recorded", &self.ex.is_some())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Flight {
    pub(crate) fn new(
        shared: Arc<Shared>,
        ex: Option<Exchange>,
        t: Timings,
        end: Option<ConnEnd>,
    ) -> Self {
        if let Some(ConnEnd::H2(s)) = &end {
            s.opened();
        }
        Flight {
            shared,
            ex,
            req: None,
            resp: ResponseCapture::default(),
            t,
            lease: None,
            end,
            done: false,
        }
    }

    /// Whether the exchange is recorded.
    pub(crate) fn recorded(&self) -> bool {
        self.ex.is_some()
    }

    /// Ends the exchange: tells the connection, and hands the record (if any) to the capture
    /// layer. Runs once.
    pub(crate) fn finish(&mut self, failure: Option<Failure>) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(lease) = self.lease.take()
            && failure.is_none()
        {
            self.shared.upstream.park(lease);
        }
        match &self.end {
            Some(ConnEnd::H1(p)) => p.idle(),
            Some(ConnEnd::H2(s)) => s.closed(),
            None => {}
        }
        if let Some(ex) = self.ex.take() {
            let req_body = self
                .req
                .as_ref()
                .map(|r| r.take_capture())
                .unwrap_or_default();
            let resp = std::mem::take(&mut self.resp);
            self.shared
                .capture
                .finish(ex, req_body, resp, &self.t, failure);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.done {
            let failure = if self.shared.forced() {
                Failure {
                    kind: ErrorKind::Other,
                    message: "cut off: the shutdown grace period ended".to_owned(),
                }
            } else {
                Failure {
                    kind: ErrorKind::ClientAbort,
                    message: "the client went away before the response was complete".to_owned(),
                }
            };
            self.finish(Some(failure));
        }
    }
}

/// The body of a response to the client. See the [module docs](self).
pub(crate) struct RespBody {
    inner: Option<Incoming>,
    flight: Option<Box<Flight>>,
    gap: GapTimer,
    timeout: Duration,
}

impl fmt::Debug for RespBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespBody")
            .field("flight", &self.flight)
            .finish_non_exhaustive()
    }
}

impl RespBody {
    /// No body (responses made by the proxy, `101`).
    pub(crate) fn empty() -> Self {
        RespBody {
            inner: None,
            flight: None,
            gap: GapTimer::default(),
            timeout: Duration::ZERO,
        }
    }

    /// The upstream's body, ending `flight` when it ends.
    pub(crate) fn upstream(inner: Incoming, flight: Box<Flight>, timeout: Duration) -> Self {
        RespBody {
            inner: Some(inner),
            flight: Some(flight),
            gap: GapTimer::default(),
            timeout,
        }
    }

    fn end(&mut self, failure: Option<Failure>) {
        if let Some(mut f) = self.flight.take() {
            match &failure {
                None => {
                    // Only records need the time the upstream finished.
                    if f.recorded() && f.t.upstream_done.is_none() {
                        f.t.upstream_done();
                    }
                }
                Some(fail) => f.shared.capture.metrics().upstream_error(fail.kind),
            }
            f.finish(failure);
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.gap.progress();
                if let Some(f) = &mut this.flight {
                    if let Some(data) = frame.data_ref() {
                        if f.recorded() {
                            let cap = f.shared.capture.max_body();
                            f.resp.body.push(data, cap);
                        }
                    } else if let Some(trailers) = frame.trailers_ref()
                        && f.recorded()
                    {
                        f.t.upstream_done();
                        f.resp.trailers(trailers);
                    }
                }
                if inner.is_end_stream() {
                    this.end(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let kind = body_error_kind(&e);
                let message =
                    format!("upstream response body: {e} (the client's response was cut short)");
                this.end(Some(Failure { kind, message }));
                Poll::Ready(Some(Err(BodyError(e.to_string()))))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                if !this.gap.expired(timeout, cx) {
                    return Poll::Pending;
                }
                let message = format!(
                    "the upstream sent nothing for upstream-timeout ({} ms) in the middle of its \
                     response body (the client's response was cut short)",
                    timeout.as_millis()
                );
                this.end(Some(Failure {
                    kind: ErrorKind::Timeout,
                    message,
                }));
                this.inner = None;
                Poll::Ready(Some(Err(BodyError("upstream timed out".to_owned()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(i) => i.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // A body hyper never had to poll (empty, HEAD, 204) ended well; one dropped half-way
        // leaves its flight unfinished, which ends it as the client going away.
        if self.flight.is_some() && self.inner.as_ref().is_some_and(|i| i.is_end_stream()) {
            self.end(None);
        }
    }
}
