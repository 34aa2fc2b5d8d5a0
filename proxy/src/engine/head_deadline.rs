//! [`DeadlineIo`]: an accepted client stream with a deadline on the whole request head, against
//! slowloris clients, and (optionally) the keep-alive idle timeout. Shared by both engines.
//!
//! Neither data plane bounds a request head as a whole: hyper has no head timeout for a
//! connection's later requests, and pingora 0.9 bounds each *read* of a head, not the head, so a
//! client that sends one byte every few seconds would hold a connection and a task for as long
//! as it likes (up to the head size limit). The engine wraps every accepted stream (TCP or TLS)
//! in a `DeadlineIo` and tells it where the connection is through its [`Phase`]: the hyper
//! engine from its service, pingora from its `early_request_filter` and `logging` hooks (see
//! `engine::pingora::head_deadline`).
//!
//! ## The phases of a connection
//!
//! | phase     | entered when                                              | a read that would block            |
//! |-----------|-----------------------------------------------------------|------------------------------------|
//! | `HEAD`    | accept (first request); first byte after `IDLE`           | must finish by the deadline        |
//! | `BUSY`    | the engine has the head ([`Phase::busy`])                 | waits (the body is bounded elsewhere) |
//! | `IDLE`    | the exchange ended ([`Phase::idle`])                      | waits up to `idle-timeout` ([`HeadLimits::idle_timeout`]), then end of file |
//! | `PREFACE` | TLS with ALPN `h2`: the 24-byte preface is due            | must finish by the deadline        |
//! | `OFF`     | HTTP/2 past its preface (peeked, or 24 bytes read after ALPN `h2`) | waits (HTTP/2's own limits apply) |
//!
//! The deadline of a head is `header-timeout` after accept (the first request of a connection,
//! so a client that connects and says nothing is bounded too) or after the first byte of the
//! request (later requests of a keep-alive connection). Past it the read fails with `TimedOut`;
//! if part of a head had arrived, a `408 Request Timeout` with `connection: close` is written
//! first (best effort, never waited for). A client that sent nothing gets no 408 (like Apache
//! and nginx: a speculative pre-connect must not see an error), nor does an h2 connection. Each
//! cut is counted in `tapedeck_client_timeouts_total{phase="header"}` and logged at debug.
//!
//! ## The one difference between the engines: who ends an idle keep-alive connection
//! [`HeadLimits::idle_timeout`] is `Some(idle-timeout)` for hyper, whose HTTP/1 server has no
//! keep-alive timeout of its own: an idle connection past it reads as closed (end of file), which
//! hyper treats as a normal close. It is `None` for pingora, which closes idle keep-alive
//! connections itself (`set_keepalive(idle-timeout)` in its `logging` hook): a second timer
//! here would race pingora's and turn its quiet close into a read error.
//!
//! ## Cost
//! One relaxed load per read. One timer per connection, created the first time a read of a head
//! (or an idle wait, with an idle timeout) would block, then only moved (`Sleep::reset`) and
//! dropped once the connection is HTTP/2; the clock is read only when a read blocks, so a head
//! that arrives in one read never touches the timer or the clock. Measured with callgrind on a
//! release build of pingora's copy before the two engines shared this one (pass-through,
//! keep-alive GETs, one worker): about 360 instructions per request, of about 102 000 in all;
//! `benches/callgrind.sh` measures both engines.
//!
//! ## HTTP/2
//! h2 multiplexes streams on one connection; its framing has its own limits (the h2 crate's
//! header-list size and CONTINUATION limits, and each engine's h2 idle timeout). Until the
//! preface is known the connection is under the head deadline: a cleartext connection's first
//! bytes are peeked for the h2c preface ([`DeadlineIo::sniff_h2c`], [`DeadlineIo::peek`]) and
//! served again to whoever reads next; a TLS connection that chose `h2` by ALPN starts in
//! `PREFACE`.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tapedeck_common::timer::Timer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::metrics::Metrics;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Written to a client whose request head did not arrive in time.
const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
const OFF: u8 = 3;
const PREFACE: u8 = 4;
/// The deadline (or the idle timeout) passed: every further read fails.
const EXPIRED: u8 = 5;

/// The phase of one client connection, written by the engine and read by its [`DeadlineIo`].
/// The hyper engine shares it with its service (`Arc<Phase>`); pingora's hooks reach it inside
/// the stream (a `DeadlineIo<_, Phase>`).
#[derive(Debug)]
pub(crate) struct Phase(AtomicU8);

impl Phase {
    /// The phase of a freshly accepted connection: its first head (or, with `h2`, its
    /// connection preface) is due.
    pub(crate) fn new(h2: bool) -> Self {
        Phase(AtomicU8::new(if h2 { PREFACE } else { HEAD }))
    }

    /// The engine has a request head: no deadline until the exchange ends.
    pub(crate) fn busy(&self) {
        self.0.store(BUSY, Ordering::Relaxed);
    }

    /// The exchange ended: the connection is idle until the next byte arrives.
    pub(crate) fn idle(&self) {
        self.0.store(IDLE, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::Relaxed);
    }
}

impl AsRef<Phase> for Phase {
    fn as_ref(&self) -> &Phase {
        self
    }
}

/// The limits of client connections, shared by all of an engine's connections.
#[derive(Debug)]
pub(crate) struct HeadLimits {
    /// Longest time a whole request head (or an h2 preface) may take.
    pub(crate) header_timeout: Duration,
    /// Longest idle time between requests, when this wrapper enforces it (hyper); `None` when
    /// the engine does (pingora). See the [module docs](self).
    pub(crate) idle_timeout: Option<Duration>,
    /// Where cuts are counted.
    pub(crate) metrics: Arc<Metrics>,
}

/// An accepted client stream with the deadlines of the [module docs](self). `P` holds the
/// connection's [`Phase`]: `Arc<Phase>` when the engine keeps a handle on it, `Phase` when it
/// reaches it through the stream.
pub(crate) struct DeadlineIo<T, P = Arc<Phase>> {
    inner: T,
    phase: P,
    /// The client, for the debug log of a cut.
    peer: Option<SocketAddr>,
    /// Bytes of the current head read so far (saturating): whether a 408 is owed.
    head_bytes: u32,
    /// When the current head must be complete; set at accept for the first one, else the
    /// first time a read of it would block (a head that arrives at once never needs one).
    deadline: Option<Instant>,
    /// When an idle wait for the next request ends; set the first time a read of it blocks.
    idle_deadline: Option<Instant>,
    /// The one timer of this connection, created the first time a read blocks.
    sleep: Timer,
    /// Bytes taken from the socket by a peek, served again before the socket.
    peeked: [u8; H2_PREFACE.len()],
    peeked_pos: u8,
    peeked_len: u8,
    limits: Arc<HeadLimits>,
}

impl<T: fmt::Debug, P: AsRef<Phase>> fmt::Debug for DeadlineIo<T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineIo")
            .field("inner", &self.inner)
            .field("phase", &self.phase.as_ref().get())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, P: AsRef<Phase>> DeadlineIo<T, P> {
    /// Wraps a freshly accepted stream whose phase is `phase` (made by [`Phase::new`]): its first
    /// request head (or connection preface) is due `header-timeout` from now.
    pub(crate) fn new(
        inner: T,
        phase: P,
        peer: Option<SocketAddr>,
        limits: Arc<HeadLimits>,
    ) -> Self {
        DeadlineIo {
            inner,
            phase,
            peer,
            head_bytes: 0,
            deadline: Some(Instant::now() + limits.header_timeout),
            idle_deadline: None,
            sleep: Timer::default(),
            peeked: [0; H2_PREFACE.len()],
            peeked_pos: 0,
            peeked_len: 0,
            limits,
        }
    }

    /// The connection's phase.
    pub(crate) fn phase(&self) -> &P {
        &self.phase
    }

    /// The wrapped stream.
    pub(crate) fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped stream, mutably (reads and writes past the wrapper are the caller's
    /// business).
    pub(crate) fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Reads until the bytes seen either are the h2c preface (true: the connection is HTTP/2
    /// from here, past the head deadline) or cannot be, or the client closed (false). The bytes
    /// read are served again to whoever reads next. Under the head deadline.
    pub(crate) async fn sniff_h2c(&mut self) -> io::Result<bool> {
        let held = self
            .peek_until(H2_PREFACE.len(), |held| !H2_PREFACE.starts_with(held))
            .await?;
        let h2 = held == H2_PREFACE.as_slice();
        if h2 {
            self.h2_from_here();
        }
        Ok(h2)
    }

    /// Fills `buf` with the next bytes of the stream, under the head deadline, and keeps them to
    /// be read again; `Ok(false)` when `buf` is longer than the peek buffer (24 bytes), an
    /// `UnexpectedEof` error when the client closes first. A peek of the h2c preface turns the
    /// deadline off (HTTP/2).
    pub(crate) async fn peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if buf.len() > self.peeked.len() {
            return Ok(false);
        }
        let held = self.peek_until(buf.len(), |_| false).await?;
        if held.len() < buf.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&held[..buf.len()]);
        if buf == H2_PREFACE.as_slice() {
            self.h2_from_here();
        }
        Ok(true)
    }

    /// Reads from the socket under the phase's limits until `want` (≤ 24) bytes are held to be
    /// read again, `enough(held)` says stop, or the client closes. Returns the bytes held.
    async fn peek_until(
        &mut self,
        want: usize,
        enough: impl Fn(&[u8]) -> bool,
    ) -> io::Result<&[u8]> {
        // Bytes already served again are gone: keep only those still to be read.
        let (pos, len) = (usize::from(self.peeked_pos), usize::from(self.peeked_len));
        self.peeked.copy_within(pos..len, 0);
        self.peeked_len = (len - pos) as u8;
        self.peeked_pos = 0;
        loop {
            let have = usize::from(self.peeked_len);
            if have >= want || enough(&self.peeked[..have]) {
                return Ok(&self.peeked[..have]);
            }
            let mut chunk = [0u8; H2_PREFACE.len()];
            let n = poll_fn(|cx| {
                let mut rb = ReadBuf::new(&mut chunk[..want - have]);
                ready!(self.poll_read_limited(cx, &mut rb))?;
                Poll::Ready(Ok::<_, io::Error>(rb.filled().len()))
            })
            .await?;
            if n == 0 {
                return Ok(&self.peeked[..have]);
            }
            self.peeked[have..have + n].copy_from_slice(&chunk[..n]);
            self.peeked_len += n as u8;
        }
    }

    /// The connection is HTTP/2 from here: no deadline ever again, so no timer either.
    fn h2_from_here(&mut self) {
        self.phase.as_ref().set(OFF);
        self.sleep.clear();
    }

    /// A read from the socket under the phase's limits.
    fn poll_read_limited(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let phase = self.phase.as_ref().get();
        if phase == BUSY || phase == OFF {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if phase == EXPIRED {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    if phase == IDLE {
                        // The first byte of the next request: its head is due from now (the
                        // deadline is computed when a read of it first blocks).
                        self.phase.as_ref().set(HEAD);
                        self.head_bytes = 0;
                        self.deadline = None;
                        self.idle_deadline = None;
                    } else if self.sleep.is_elapsed()
                        && self.deadline.is_some_and(|d| d <= Instant::now())
                    {
                        // The timer fired, but the bytes won the race to this poll.
                        return Poll::Ready(Err(self.expire(cx)));
                    }
                    self.head_bytes = self.head_bytes.saturating_add(n as u32);
                    if phase == PREFACE && self.head_bytes as usize >= H2_PREFACE.len() {
                        // The h2 crate checks the preface; from here HTTP/2's own limits apply.
                        self.h2_from_here();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if phase == IDLE => {
                let Some(idle_timeout) = self.limits.idle_timeout else {
                    // The engine bounds the wait for the next request.
                    return Poll::Pending;
                };
                let deadline = *self
                    .idle_deadline
                    .get_or_insert_with(|| Instant::now() + idle_timeout);
                ready!(self.poll_timer(cx, deadline));
                // Idle for too long: read as the end of the connection.
                debug!(peer = ?self.peer, "idle keep-alive connection closed");
                self.phase.as_ref().set(EXPIRED);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let header_timeout = self.limits.header_timeout;
                let deadline = *self
                    .deadline
                    .get_or_insert_with(|| Instant::now() + header_timeout);
                ready!(self.poll_timer(cx, deadline));
                Poll::Ready(Err(self.expire(cx)))
            }
        }
    }

    /// Polls the connection's timer, set to `deadline`.
    fn poll_timer(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        self.sleep.poll_until(cx, deadline)
    }

    /// The head deadline passed: count, log, answer 408 if the client sent part of a head.
    fn expire(&mut self, cx: &mut Context<'_>) -> io::Error {
        let h1 = self.phase.as_ref().get() != PREFACE;
        self.phase.as_ref().set(EXPIRED);
        self.sleep.clear();
        self.limits
            .metrics
            .client_timeouts_header
            .fetch_add(1, Ordering::Relaxed);
        debug!(
            peer = ?self.peer,
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
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request head not complete in time")
}

impl<T: AsyncRead + AsyncWrite + Unpin, P: AsRef<Phase> + Unpin> AsyncRead for DeadlineIo<T, P> {
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
        this.poll_read_limited(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, P: AsRef<Phase> + Unpin> AsyncWrite for DeadlineIo<T, P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const T: Duration = Duration::from_millis(200);
    /// A generous bound for things that must happen "soon" (CI machines are loaded).
    const BOUND: Duration = Duration::from_secs(20);

    type Io = DeadlineIo<DuplexStream>;

    /// A wrapped stream as the hyper engine makes it (`idle`: `Some`) or pingora (`None`).
    fn wrap_with(idle: Option<Duration>, h2: bool) -> (Io, DuplexStream, Arc<Metrics>) {
        let (server, client) = tokio::io::duplex(1 << 16);
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(HeadLimits {
            header_timeout: T,
            idle_timeout: idle,
            metrics: metrics.clone(),
        });
        let io = DeadlineIo::new(server, Arc::new(Phase::new(h2)), None, limits);
        (io, client, metrics)
    }

    fn wrap() -> (Io, DuplexStream, Arc<Metrics>) {
        wrap_with(Some(T * 2), false)
    }

    fn cuts(m: &Metrics) -> u64 {
        m.client_timeouts_header.load(Ordering::Relaxed)
    }

    /// Reads until an error or end of file (bounded); returns the bytes and the error kind.
    async fn read_until_error(io: &mut Io) -> (Vec<u8>, Option<io::ErrorKind>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(BOUND, async {
            loop {
                match io.read(&mut buf).await {
                    Ok(0) => return None,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Some(e.kind()),
                }
            }
        })
        .await
        .expect("the deadline must end the read");
        (got, r)
    }

    /// Writes `bytes` after `delay`; hands the client back.
    fn write_later(
        mut client: DuplexStream,
        delay: Duration,
        bytes: &'static [u8],
    ) -> tokio::task::JoinHandle<DuplexStream> {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            client.write_all(bytes).await.expect("write later");
            client
        })
    }

    /// The client sends a whole head at once; the engine reads it and takes the exchange
    /// (`BUSY`).
    async fn first_head(io: &mut Io, client: &mut DuplexStream, head: &[u8]) {
        client.write_all(head).await.expect("write");
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.expect("head") > 0);
        io.phase().busy();
    }

    /// On a connection past its preface (HTTP/2), data arriving long after the head deadline
    /// would have passed is read normally and nothing is counted.
    async fn frames_after_a_pause_are_not_cut(mut io: Io, client: DuplexStream, m: &Metrics) {
        let later = write_later(client, T * 3, b"frames");
        let mut buf = [0u8; 16];
        let n = io.read(&mut buf).await.expect("h2 read");
        assert_eq!(&buf[..n], b"frames");
        assert_eq!(cuts(m), 0);
        drop(later.await.expect("writer"));
    }

    #[tokio::test]
    async fn a_trickled_head_is_cut_with_408_and_counted() {
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
    async fn a_silent_client_is_cut_without_a_response() {
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
    async fn busy_reads_have_no_deadline_and_idle_ends_quietly() {
        let (mut io, mut client, metrics) = wrap();
        first_head(
            &mut io,
            &mut client,
            b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
        )
        .await;
        let slow = write_later(client, T * 3, b"ok");
        let mut buf = [0u8; 64];
        let n = io
            .read(&mut buf)
            .await
            .expect("a slow body read is not cut");
        assert_eq!(&buf[..n], b"ok");
        let _client = slow.await.expect("writer");
        io.phase().idle();
        // Idle past idle-timeout: the connection reads as closed; not a slow client.
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!((got.len(), err), (0, None));
        assert_eq!(cuts(&metrics), 0);
    }

    #[tokio::test]
    async fn the_next_head_gets_a_fresh_deadline_from_its_first_byte() {
        let (mut io, mut client, metrics) = wrap();
        first_head(&mut io, &mut client, b"GET /a HTTP/1.1\r\n\r\n").await;
        io.phase().idle();
        // Longer than the header timeout, shorter than the idle timeout.
        tokio::time::sleep(T + T / 2).await;
        client.write_all(b"GET /b HT").await.expect("next");
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!(got, b"GET /b HT");
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert_eq!(cuts(&metrics), 1);
    }

    /// Without an idle timeout (pingora ends idle connections itself), an idle wait far longer
    /// than both timeouts is not cut, and the next head still gets its own deadline.
    #[tokio::test]
    async fn without_an_idle_timeout_idle_waits_are_the_engines() {
        let (mut io, mut client, metrics) = wrap_with(None, false);
        first_head(&mut io, &mut client, b"GET /a HTTP/1.1\r\n\r\n").await;
        io.phase().idle();
        let next = write_later(client, T * 4, b"GET /next HT");
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!(got, b"GET /next HT");
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert_eq!(cuts(&metrics), 1);
        drop(next.await.expect("next writer"));
    }

    #[tokio::test]
    async fn h2c_preface_is_sniffed_and_read_again() {
        let (mut io, mut client, metrics) = wrap();
        client.write_all(H2_PREFACE).await.expect("preface");
        assert!(io.sniff_h2c().await.expect("sniff"));
        let mut got = [0u8; 24];
        io.read_exact(&mut got).await.expect("preface again");
        assert_eq!(&got, H2_PREFACE);
        // HTTP/2 from here: a long pause is not cut.
        frames_after_a_pause_are_not_cut(io, client, &metrics).await;

        let (mut io, mut client, _) = wrap();
        let head = b"GET /some/path HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(head).await.expect("write");
        assert!(!io.sniff_h2c().await.expect("sniff"));
        let mut got = vec![0u8; head.len()];
        io.read_exact(&mut got).await.expect("whole head");
        assert_eq!(&got[..], head);

        // A client that closes before saying anything is not HTTP/2.
        let (mut io, client, _) = wrap();
        drop(client);
        assert!(!io.sniff_h2c().await.expect("sniff"));
    }

    #[tokio::test]
    async fn h2c_preface_peek_turns_the_deadline_off_and_is_read_again() {
        let (mut io, mut client, metrics) = wrap_with(None, false);
        client.write_all(H2_PREFACE).await.expect("preface");
        let mut peek = [0u8; 24];
        assert!(io.peek(&mut peek).await.expect("peek"));
        assert_eq!(&peek, H2_PREFACE);
        assert_eq!(io.phase().get(), OFF);
        let mut got = [0u8; 24];
        io.read_exact(&mut got).await.expect("preface again");
        assert_eq!(&got, H2_PREFACE);
        frames_after_a_pause_are_not_cut(io, client, &metrics).await;
    }

    #[tokio::test]
    async fn http1_peek_is_replayed_and_a_short_head_is_still_cut() {
        let (mut io, mut client, metrics) = wrap_with(None, false);
        // Shorter than the preface: the h2c peek itself waits under the deadline.
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut peek = [0u8; 24];
        let err = io.peek(&mut peek).await.expect_err("cut during peek");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(cuts(&metrics), 1);

        let (mut io, mut client, _) = wrap_with(None, false);
        let head = b"GET /some/path HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(head).await.expect("write");
        assert!(io.peek(&mut peek).await.expect("peek"));
        assert_eq!(&peek, &head[..24]);
        assert_eq!(io.phase().get(), HEAD);
        // A second, shorter peek sees the same bytes; then the whole head reads once.
        let mut again = [0u8; 8];
        assert!(io.peek(&mut again).await.expect("peek again"));
        assert_eq!(&again, &head[..8]);
        let mut got = vec![0u8; head.len()];
        io.read_exact(&mut got).await.expect("whole head");
        assert_eq!(&got[..], head);
        // Longer than the buffer: not peeked.
        assert!(!io.peek(&mut [0u8; 25]).await.expect("too long"));

        let (mut io, client, _) = wrap_with(None, false);
        drop(client);
        let err = io.peek(&mut peek).await.expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn alpn_h2_preface_is_due_by_the_deadline_then_h2_is_free() {
        // A stalled preface: closed, counted, and no HTTP/1 408 on an h2 connection.
        let (mut io, mut client, metrics) = wrap_with(Some(T), true);
        client.write_all(&H2_PREFACE[..10]).await.expect("part");
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!((got.len(), err), (10, Some(io::ErrorKind::TimedOut)));
        assert_eq!(cuts(&metrics), 1);
        drop(io);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        assert!(answer.is_empty(), "{answer:?}");

        // A whole preface: HTTP/2 from then on, however slow.
        let (mut io, mut client, metrics) = wrap_with(None, true);
        client.write_all(H2_PREFACE).await.expect("preface");
        let mut got = [0u8; 24];
        io.read_exact(&mut got).await.expect("preface");
        assert_eq!(io.phase().get(), OFF);
        frames_after_a_pause_are_not_cut(io, client, &metrics).await;
    }
}
