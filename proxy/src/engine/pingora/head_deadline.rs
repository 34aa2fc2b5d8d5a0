//! A deadline on the whole request head, against slowloris clients.
//!
//! pingora 0.9 bounds each *read* of a request head (`keepalive`/`read_timeout` per `read()`),
//! not the head as a whole: a client that sends one byte every few seconds holds a connection
//! and a task for as long as it likes (up to the 1 MiB head limit). [`HeadDeadline`] closes that
//! hole without touching pingora: it is a [`ServerApp`] that wraps the app pingora would run
//! (the `HttpProxy`) and hands it every accepted connection wrapped in a [`DeadlineIo`].
//!
//! ## The phases of a connection
//! `DeadlineIo` keeps one small phase per connection:
//!
//! | phase  | entered when                                           | reads                           |
//! |--------|--------------------------------------------------------|---------------------------------|
//! | `Head` | accept (first request); first byte after `Idle`        | must finish by the deadline     |
//! | `Body` | the proxy's `early_request_filter` ([`head_done`])     | passed through untouched        |
//! | `Idle` | the proxy's `logging`, body fully read ([`request_done`]) | passed through; the first byte starts `Head` |
//! | `Off`  | an HTTP/2 connection (h2c preface peeked, or 24 bytes read after ALPN `h2`) | passed through untouched |
//!
//! The deadline of a `Head` is `header-timeout` after accept (the first request of a
//! connection, so a client that connects and says nothing is also bounded) or after the first
//! byte of the request (later requests of a keep-alive connection; the wait for that first byte
//! is the idle time, bounded by pingora's keep-alive timeout = `idle-timeout`). Past the
//! deadline the read fails with `TimedOut`; if some bytes of the head had arrived, a
//! `408 Request Timeout` with `connection: close` is written first (best effort, never
//! waited for). A client that sent nothing gets no 408 (like Apache and nginx: a speculative
//! pre-connect must not see an error). Each cut is counted in
//! `tapedeck_client_timeouts_total{phase="header"}` and logged at debug.
//!
//! ## Cost
//! The wrapper is created once per connection (one allocation; pingora's HTTP/1 keep-alive loop
//! runs *inside* the wrapped app, so wrappers never nest). A read in `Body`, `Idle` or `Off` is
//! one extra branch. A timer exists only while a head is incomplete *and* the socket has no more
//! bytes (the `Pending` path): a head that arrives in one read never touches the timer or the
//! clock. The hooks find the wrapper with one `Any` downcast of the session's stream.
//! Measured with callgrind on a release build (pass-through, keep-alive GETs, one worker): about
//! 360 instructions per request spent in this module, of about 102 000 per request in all.
//!
//! ## HTTP/2
//! h2 multiplexes streams on one connection; its framing has its own limits (the h2 crate's
//! header-list size and CONTINUATION limits, pingora's `h2_idle_timeout` set to
//! `idle-timeout`). Once the h2c preface is peeked, or the first 24 bytes (the preface) of a
//! TLS connection that chose `h2` by ALPN have arrived, the connection is `Off`. Until then the
//! preface is under the head deadline (no 408 on an h2 connection: it is just closed); pingora's
//! own h2c peek and h2 handshake have no timeout at all.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, IO, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::metrics::Metrics;

/// The HTTP/2 connection preface (RFC 9113 §3.4), what pingora peeks for to detect h2c.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Written to a client whose request head did not arrive in time.
const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

const HEAD: u8 = 0;
const BODY: u8 = 1;
const IDLE: u8 = 2;
const OFF: u8 = 3;
/// The deadline passed: every further read fails.
const EXPIRED: u8 = 4;
/// TLS with ALPN `h2`: the 24-byte connection preface is due by the deadline, then `OFF`.
const PREFACE: u8 = 5;

/// What every connection's deadline needs: the limit and where to count cuts.
#[derive(Debug)]
pub(crate) struct HeadLimits {
    /// Longest time a whole request head may take.
    pub(crate) header_timeout: Duration,
    /// Where cuts are counted.
    pub(crate) metrics: Arc<Metrics>,
}

/// A [`ServerApp`] that runs `A` on connections whose request heads must arrive within
/// [`HeadLimits::header_timeout`]. See the [module docs](self).
pub(crate) struct HeadDeadline<A> {
    inner: Arc<A>,
    limits: Arc<HeadLimits>,
}

impl<A> HeadDeadline<A> {
    /// Wraps `inner` (typically pingora's `HttpProxy`).
    pub(crate) fn new(inner: A, limits: HeadLimits) -> Self {
        HeadDeadline {
            inner: Arc::new(inner),
            limits: Arc::new(limits),
        }
    }
}

impl<A> fmt::Debug for HeadDeadline<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Written out instead of `#[async_trait]` so that the inner app's boxed future is returned as
/// it is: no extra allocation per connection and no extra future layer polled on every wake-up.
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeadDeadline<A> {
    fn process_new<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        stream: Stream,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<Stream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        // A stream handed back for reuse is already wrapped: never nest.
        let io: &dyn IO = &*stream;
        let stream: Stream = if io.as_any().is::<DeadlineIo>() {
            stream
        } else {
            Box::new(DeadlineIo::new(stream, self.limits.clone()))
        };
        self.inner.process_new(stream, shutdown)
    }

    fn cleanup<'life0, 'async_trait>(
        &'life0 self,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.cleanup()
    }
}

/// Tells the connection's deadline that pingora has parsed a request head: the body (if any)
/// is read under pingora's per-read `read_timeout` only. Call from `early_request_filter`.
/// A no-op for HTTP/2 and for streams not wrapped by [`HeadDeadline`].
pub(crate) fn head_done(session: &Session) {
    if let Some(io) = deadline_io(session) {
        io.phase.store(BODY, Ordering::Relaxed);
    }
}

/// Tells the connection's deadline that the exchange is over: the next byte read starts the
/// next request's head. Call from `logging`. If the request body was not read to its end,
/// pingora would drain it before reusing the connection and those reads would be taken for the
/// next head, so keep-alive is turned off instead (pingora already closes such connections by
/// default, `close_on_response_before_downstream_finish`).
pub(crate) fn request_done(session: &mut Session) {
    if deadline_io(session).is_none() {
        return;
    }
    let body_done = session.as_downstream_mut().is_body_done();
    if let Some(io) = deadline_io(session) {
        io.phase
            .store(if body_done { IDLE } else { BODY }, Ordering::Relaxed);
    }
    if !body_done {
        session.set_keepalive(None);
    }
}

fn deadline_io(session: &Session) -> Option<&DeadlineIo> {
    let stream = session.as_downstream().stream()?;
    let io: &dyn IO = &**stream;
    io.as_any().downcast_ref::<DeadlineIo>()
}

/// The accepted stream with a request-head deadline. See the [module docs](self).
pub(crate) struct DeadlineIo {
    inner: Stream,
    /// `HEAD`, `BODY`, `IDLE`, `OFF` or `EXPIRED`. Written by the proxy hooks through `&self`,
    /// read by the I/O methods through `&mut self` (no atomic operation there).
    phase: AtomicU8,
    /// Bytes of the current head read so far (saturating): whether a 408 is owed.
    head_bytes: u32,
    /// When the current head must be complete; `None` until the first time a read of it would
    /// block (a head that arrives at once never needs one).
    deadline: Option<Instant>,
    /// The timer for `deadline`, created on the `Pending` path only.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes taken from the socket by [`Peek::try_peek`], served before the socket again.
    peeked: [u8; H2_PREFACE.len()],
    peeked_pos: u8,
    peeked_len: u8,
    limits: Arc<HeadLimits>,
}

impl fmt::Debug for DeadlineIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineIo")
            .field("inner", &self.inner)
            .field("phase", &self.phase.load(Ordering::Relaxed))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl DeadlineIo {
    /// Wraps a freshly accepted stream: its first request head is due `header_timeout` from now.
    pub(crate) fn new(inner: Stream, limits: Arc<HeadLimits>) -> Self {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        DeadlineIo {
            inner,
            phase: AtomicU8::new(if h2 { PREFACE } else { HEAD }),
            head_bytes: 0,
            deadline: Some(Instant::now() + limits.header_timeout),
            sleep: None,
            peeked: [0; H2_PREFACE.len()],
            peeked_pos: 0,
            peeked_len: 0,
            limits,
        }
    }

    /// A read while a head is (or may be) in progress: the deadline applies.
    fn poll_read_head(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let phase = *self.phase.get_mut();
        if phase == EXPIRED {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    if phase == IDLE {
                        // The first byte of the next request.
                        *self.phase.get_mut() = HEAD;
                        self.head_bytes = 0;
                        self.deadline = None;
                        // A timer left from an earlier head must not cut this one.
                        self.sleep = None;
                    } else if self.sleep.as_ref().is_some_and(|s| s.is_elapsed()) {
                        // The timer fired, but the bytes won the race to this poll.
                        return Poll::Ready(Err(self.expire(cx)));
                    }
                    self.head_bytes = self.head_bytes.saturating_add(n as u32);
                    if phase == PREFACE && self.head_bytes as usize >= H2_PREFACE.len() {
                        // The h2 crate checks the preface; from here HTTP/2's own limits apply.
                        *self.phase.get_mut() = OFF;
                        self.sleep = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if phase == IDLE => {
                // Waiting for the next request: pingora's keep-alive timeout bounds this.
                Poll::Pending
            }
            Poll::Pending => {
                let header_timeout = self.limits.header_timeout;
                let deadline = *self
                    .deadline
                    .get_or_insert_with(|| Instant::now() + header_timeout);
                let sleep = match &mut self.sleep {
                    Some(s) => {
                        if s.deadline() != deadline {
                            s.as_mut().reset(deadline);
                        }
                        s
                    }
                    None => self
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Err(self.expire(cx)))
            }
        }
    }

    /// The head deadline passed: count, log, answer 408 if the client sent part of a head.
    fn expire(&mut self, cx: &mut Context<'_>) -> io::Error {
        let h1 = *self.phase.get_mut() != PREFACE;
        *self.phase.get_mut() = EXPIRED;
        self.sleep = None;
        self.limits
            .metrics
            .client_timeouts_header
            .fetch_add(1, Ordering::Relaxed);
        debug!(
            peer = ?self.inner.get_socket_digest().and_then(|d| d.peer_addr().cloned()),
            head_bytes = self.head_bytes,
            timeout_ms = self.limits.header_timeout.as_millis() as u64,
            "request head not complete in time; closing"
        );
        if h1 && self.head_bytes > 0 {
            // Best effort, never waited for: a client that trickles its head is not reading,
            // but an empty socket buffer takes these few bytes at once.
            let mut inner = Pin::new(&mut self.inner);
            if let Poll::Ready(Ok(n)) = inner.as_mut().poll_write(cx, RESPONSE_408) {
                if n < RESPONSE_408.len() {
                    debug!(written = n, "partial 408 response");
                }
                let _ = inner.poll_flush(cx);
            }
        }
        timed_out()
    }

    /// Moves any peeked bytes not yet read to the front of the peek buffer.
    fn compact_peeked(&mut self) {
        let (pos, len) = (usize::from(self.peeked_pos), usize::from(self.peeked_len));
        self.peeked.copy_within(pos..len, 0);
        self.peeked_len = (len - pos) as u8;
        self.peeked_pos = 0;
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request head not complete in time")
}

impl AsyncRead for DeadlineIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.peeked_pos < this.peeked_len {
            let (pos, len) = (usize::from(this.peeked_pos), usize::from(this.peeked_len));
            let n = (len - pos).min(buf.remaining());
            buf.put_slice(&this.peeked[pos..pos + n]);
            this.peeked_pos += n as u8;
            return Poll::Ready(Ok(()));
        }
        match *this.phase.get_mut() {
            BODY | OFF => {
                if this.sleep.is_some() {
                    // The head finished while a timer ran: stop it so it cannot wake us later.
                    this.sleep = None;
                }
                Pin::new(&mut this.inner).poll_read(cx, buf)
            }
            _ => this.poll_read_head(cx, buf),
        }
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for DeadlineIo {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for DeadlineIo {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for DeadlineIo {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for DeadlineIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for DeadlineIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for DeadlineIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for DeadlineIo {
    /// Reads `buf.len()` bytes under the head deadline and keeps them to be read again. This is
    /// how pingora looks for the h2c preface; a match turns the deadline off (HTTP/2).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if buf.len() > self.peeked.len() {
            return Ok(false);
        }
        self.compact_peeked();
        while usize::from(self.peeked_len) < buf.len() {
            let start = usize::from(self.peeked_len);
            let mut chunk = [0u8; H2_PREFACE.len()];
            let want = buf.len() - start;
            let n = poll_fn(|cx| {
                let mut rb = ReadBuf::new(&mut chunk[..want]);
                ready!(self.poll_read_head(cx, &mut rb))?;
                Poll::Ready(Ok::<usize, io::Error>(rb.filled().len()))
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.peeked[start..start + n].copy_from_slice(&chunk[..n]);
            self.peeked_len += n as u8;
        }
        buf.copy_from_slice(&self.peeked[..buf.len()]);
        if buf == H2_PREFACE.as_slice() {
            *self.phase.get_mut() = OFF;
            self.sleep = None;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const T: Duration = Duration::from_millis(200);
    /// Far longer than `T`: every wait in these tests is bounded by it.
    const BOUND: Duration = Duration::from_secs(10);

    fn wrap() -> (DeadlineIo, DuplexStream, Arc<Metrics>) {
        let (server, client) = tokio::io::duplex(4096);
        let metrics = Arc::new(Metrics::default());
        let io = DeadlineIo::new(
            Box::new(server),
            Arc::new(HeadLimits {
                header_timeout: T,
                metrics: metrics.clone(),
            }),
        );
        (io, client, metrics)
    }

    fn cuts(m: &Metrics) -> u64 {
        m.client_timeouts_header.load(Ordering::Relaxed)
    }

    /// Reads until an error or EOF; returns what was read and the error kind.
    async fn read_until_error(io: &mut DeadlineIo) -> (Vec<u8>, Option<io::ErrorKind>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(BOUND, io.read(&mut buf)).await {
                Err(_) => panic!("read neither failed nor finished within {BOUND:?}"),
                Ok(Ok(0)) => return (got, None),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return (got, Some(e.kind())),
            }
        }
    }

    #[tokio::test]
    async fn trickled_head_is_cut_with_408() {
        let (mut io, mut client, metrics) = wrap();
        const SENT: &[u8] =
            b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let trickler = tokio::spawn(async move {
            for b in SENT {
                if client.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(BOUND, client.read_to_end(&mut answer)).await;
            answer
        });
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert!(!got.is_empty() && SENT.starts_with(&got), "{got:?}");
        assert_eq!(cuts(&metrics), 1);
        // Every further read fails at once.
        let mut b = [0u8; 1];
        assert!(io.read(&mut b).await.is_err());
        drop(io);
        let answer = trickler.await.expect("trickler");
        assert!(
            answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[tokio::test]
    async fn silent_client_is_cut_without_a_response() {
        let (mut io, mut client, metrics) = wrap();
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!((got.len(), err), (0, Some(io::ErrorKind::TimedOut)));
        assert_eq!(cuts(&metrics), 1);
        drop(io);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        assert!(answer.is_empty(), "{answer:?}");
    }

    #[tokio::test]
    async fn body_and_idle_reads_have_no_deadline_and_the_next_head_gets_a_fresh_one() {
        let (mut io, mut client, metrics) = wrap();
        client
            .write_all(b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 128];
        let n = io.read(&mut buf).await.expect("head");
        assert!(n > 0);
        io.phase.store(BODY, Ordering::Relaxed); // what `head_done` does
        // The body comes slowly: three header-timeouts later.
        let slow = tokio::spawn(async move {
            tokio::time::sleep(T * 3).await;
            client.write_all(b"ok").await.expect("body");
            client
        });
        let n = io.read(&mut buf).await.expect("body read is not cut");
        assert_eq!(&buf[..n], b"ok");
        let mut client = slow.await.expect("writer");
        io.phase.store(IDLE, Ordering::Relaxed); // what `request_done` does
        // Idle for longer than the header timeout: still fine (pingora's keep-alive timeout
        // bounds this wait), then the next head starts and stalls.
        let next = tokio::spawn(async move {
            tokio::time::sleep(T * 3).await;
            client.write_all(b"GET /next HT").await.expect("next");
            client
        });
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!(got, b"GET /next HT");
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert_eq!(cuts(&metrics), 1);
        drop(next.await.expect("next writer"));
    }

    /// On a connection past its preface (HTTP/2), data arriving long after the head deadline
    /// would have passed is read normally and nothing is counted.
    async fn frames_after_a_pause_are_not_cut(
        mut io: DeadlineIo,
        mut client: DuplexStream,
        metrics: &Metrics,
    ) {
        let later = tokio::spawn(async move {
            tokio::time::sleep(T * 3).await;
            client.write_all(b"frames").await.expect("frames");
            client
        });
        let mut buf = [0u8; 16];
        let n = io.read(&mut buf).await.expect("h2 read");
        assert_eq!(&buf[..n], b"frames");
        assert_eq!(cuts(metrics), 0);
        drop(later.await.expect("writer"));
    }

    #[tokio::test]
    async fn h2c_preface_turns_the_deadline_off_and_is_read_again() {
        let (mut io, mut client, metrics) = wrap();
        client.write_all(H2_PREFACE).await.expect("preface");
        let mut peek = [0u8; 24];
        assert!(io.try_peek(&mut peek).await.expect("peek"));
        assert_eq!(&peek, H2_PREFACE);
        assert_eq!(io.phase.load(Ordering::Relaxed), OFF);
        let mut got = [0u8; 24];
        io.read_exact(&mut got).await.expect("preface again");
        assert_eq!(&got, H2_PREFACE);
        // HTTP/2 connections are never cut by the head deadline.
        frames_after_a_pause_are_not_cut(io, client, &metrics).await;
    }

    #[tokio::test]
    async fn alpn_h2_preface_is_due_by_the_deadline_then_h2_is_free() {
        // A stalled preface: closed, counted, and no HTTP/1 408 on an h2 connection.
        let (mut io, mut client, metrics) = wrap();
        *io.phase.get_mut() = PREFACE; // what `new` does for a TLS stream with ALPN h2
        client.write_all(&H2_PREFACE[..10]).await.expect("part");
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!((got.len(), err), (10, Some(io::ErrorKind::TimedOut)));
        assert_eq!(cuts(&metrics), 1);
        drop(io);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        assert!(answer.is_empty(), "{answer:?}");

        // A whole preface: HTTP/2 from then on, however slow.
        let (mut io, mut client, metrics) = wrap();
        *io.phase.get_mut() = PREFACE;
        client.write_all(H2_PREFACE).await.expect("preface");
        let mut got = [0u8; 24];
        io.read_exact(&mut got).await.expect("preface");
        assert_eq!(io.phase.load(Ordering::Relaxed), OFF);
        frames_after_a_pause_are_not_cut(io, client, &metrics).await;
    }

    #[tokio::test]
    async fn http1_peek_is_replayed_and_a_short_head_is_still_cut() {
        let (mut io, mut client, metrics) = wrap();
        // Shorter than the preface: the h2c peek itself waits under the deadline.
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut peek = [0u8; 24];
        let err = io.try_peek(&mut peek).await.expect_err("cut during peek");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(cuts(&metrics), 1);

        let (mut io, mut client, _) = wrap();
        let head = b"GET /some/path HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(head).await.expect("write");
        assert!(io.try_peek(&mut peek).await.expect("peek"));
        assert_eq!(&peek, &head[..24]);
        assert_eq!(io.phase.load(Ordering::Relaxed), HEAD);
        let mut got = vec![0u8; head.len()];
        io.read_exact(&mut got).await.expect("whole head");
        assert_eq!(&got[..], head);
    }
}
