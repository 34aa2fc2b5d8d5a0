//! [`ClientIo`]: a client connection with the request-head deadline and the keep-alive idle
//! timeout, and the h2c preface sniffing.
//!
//! | phase     | entered when                                          | a read that would block          |
//! |-----------|-------------------------------------------------------|----------------------------------|
//! | `HEAD`    | accept (first request); first byte after `IDLE`       | must finish by the deadline      |
//! | `BUSY`    | the proxy service got the head ([`Phase::busy`])      | waits (body pauses are bounded by the request body itself) |
//! | `IDLE`    | the exchange ended ([`Phase::idle`])                  | waits up to `idle-timeout`, then EOF |
//! | `PREFACE` | TLS with ALPN `h2`: the 24-byte preface is due         | must finish by the deadline      |
//! | `OFF`     | HTTP/2 past its preface                               | waits (h2 idle is the connection driver's) |
//!
//! The deadline of a head is `header-timeout` after accept (first request: a client that
//! connects and says nothing is bounded too) or after its first byte (later requests). Past it
//! the read fails with `TimedOut`; if part of a head had arrived, a `408 Request Timeout` with
//! `connection: close` is written first (best effort, never waited for). Each cut is counted in
//! `tapedeck_client_timeouts_total{phase="header"}`. An idle keep-alive connection past
//! `idle-timeout` reads as closed (end of file), which hyper treats as a normal close.
//!
//! Cost: one relaxed load per read; one timer per connection, created the first time a read
//! blocks and then only moved (`Sleep::reset`); the clock is read only when a read blocks.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
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
/// The deadline passed: every further read fails.
const EXPIRED: u8 = 5;

/// The phase of one client connection, shared by its I/O and the proxy service.
#[derive(Debug)]
pub(crate) struct Phase(AtomicU8);

impl Phase {
    /// The service has a request head: no deadline until the exchange ends.
    pub(crate) fn busy(&self) {
        self.0.store(BUSY, Ordering::Relaxed);
    }

    /// The exchange ended: the connection is idle until the next byte arrives.
    pub(crate) fn idle(&self) {
        self.0.store(IDLE, Ordering::Relaxed);
    }
}

/// Timeouts of client connections.
#[derive(Debug, Clone)]
pub(crate) struct ClientLimits {
    /// Longest time a whole request head (or an h2 preface) may take.
    pub(crate) header_timeout: Duration,
    /// Longest idle time between requests.
    pub(crate) idle_timeout: Duration,
    /// Where cuts are counted.
    pub(crate) metrics: Arc<Metrics>,
}

/// An accepted client stream (TCP or TLS) with the deadlines of the [module docs](self).
#[derive(Debug)]
pub(crate) struct ClientIo<T> {
    inner: T,
    phase: Arc<Phase>,
    /// Bytes of the current head read so far (saturating): whether a 408 is owed.
    head_bytes: u32,
    /// When the current head must be complete; set at accept for the first one, else the
    /// first time a read of it would block.
    deadline: Option<Instant>,
    /// When an idle wait for the next request ends; set the first time a read of it blocks.
    idle_deadline: Option<Instant>,
    /// The one timer of this connection, created the first time a read blocks.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes read while sniffing for the h2c preface, served again before the socket.
    sniffed: [u8; H2_PREFACE.len()],
    sniffed_pos: u8,
    sniffed_len: u8,
    limits: Arc<ClientLimits>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> ClientIo<T> {
    /// Wraps a freshly accepted stream: its first request head (or, with `h2`, its connection
    /// preface) is due `header-timeout` from now.
    pub(crate) fn new(inner: T, limits: Arc<ClientLimits>, h2: bool) -> Self {
        ClientIo {
            inner,
            phase: Arc::new(Phase(AtomicU8::new(if h2 { PREFACE } else { HEAD }))),
            head_bytes: 0,
            deadline: Some(Instant::now() + limits.header_timeout),
            idle_deadline: None,
            sleep: None,
            sniffed: [0; H2_PREFACE.len()],
            sniffed_pos: 0,
            sniffed_len: 0,
            limits,
        }
    }

    /// The connection's phase, for the proxy service.
    pub(crate) fn phase(&self) -> Arc<Phase> {
        self.phase.clone()
    }

    /// Reads until the bytes seen either are the h2c preface (true: the connection is HTTP/2
    /// from here, past the head deadline) or cannot be (false). The bytes read are served again
    /// to whoever reads next. Under the head deadline.
    pub(crate) async fn sniff_h2c(&mut self) -> io::Result<bool> {
        loop {
            let have = usize::from(self.sniffed_len);
            if self.sniffed[..have] != H2_PREFACE[..have] {
                return Ok(false);
            }
            if have == H2_PREFACE.len() {
                self.phase.0.store(OFF, Ordering::Relaxed);
                self.sleep = None;
                return Ok(true);
            }
            let mut buf = [0u8; H2_PREFACE.len()];
            let want = H2_PREFACE.len() - have;
            let n = poll_fn(|cx| {
                let mut rb = ReadBuf::new(&mut buf[..want]);
                ready!(self.poll_read_limited(cx, &mut rb))?;
                Poll::Ready(Ok::<_, io::Error>(rb.filled().len()))
            })
            .await?;
            if n == 0 {
                // Closed before saying anything useful: not HTTP/2; hyper sees the end.
                return Ok(false);
            }
            self.sniffed[have..have + n].copy_from_slice(&buf[..n]);
            self.sniffed_len += n as u8;
        }
    }

    /// A read from the socket under the phase's limits.
    fn poll_read_limited(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let phase = self.phase.0.load(Ordering::Relaxed);
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
                        self.phase.0.store(HEAD, Ordering::Relaxed);
                        self.head_bytes = 0;
                        self.deadline = None;
                        self.idle_deadline = None;
                    } else if self.sleep.as_ref().is_some_and(|s| s.is_elapsed())
                        && self.deadline.is_some_and(|d| d <= Instant::now())
                    {
                        // The timer fired, but the bytes won the race to this poll.
                        return Poll::Ready(Err(self.expire(cx)));
                    }
                    self.head_bytes = self.head_bytes.saturating_add(n as u32);
                    if phase == PREFACE && self.head_bytes as usize >= H2_PREFACE.len() {
                        // The h2 crate checks the preface; from here HTTP/2's own limits apply.
                        self.phase.0.store(OFF, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if phase == IDLE => {
                let idle_timeout = self.limits.idle_timeout;
                let deadline = *self
                    .idle_deadline
                    .get_or_insert_with(|| Instant::now() + idle_timeout);
                ready!(self.poll_timer(cx, deadline));
                // Idle for too long: read as the end of the connection.
                debug!("idle keep-alive connection closed");
                self.phase.0.store(EXPIRED, Ordering::Relaxed);
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
        sleep.as_mut().poll(cx)
    }

    /// The head deadline passed: count, log, answer 408 if the client sent part of a head.
    fn expire(&mut self, cx: &mut Context<'_>) -> io::Error {
        let h1 = self.phase.0.load(Ordering::Relaxed) != PREFACE;
        self.phase.0.store(EXPIRED, Ordering::Relaxed);
        self.sleep = None;
        self.limits
            .metrics
            .client_timeouts_header
            .fetch_add(1, Ordering::Relaxed);
        debug!(
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

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sniffed_pos < this.sniffed_len {
            let (pos, len) = (usize::from(this.sniffed_pos), usize::from(this.sniffed_len));
            let n = (len - pos).min(buf.remaining());
            buf.put_slice(&this.sniffed[pos..pos + n]);
            this.sniffed_pos += n as u8;
            return Poll::Ready(Ok(()));
        }
        this.poll_read_limited(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
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

    fn wrap() -> (ClientIo<DuplexStream>, DuplexStream, Arc<Metrics>) {
        let (server, client) = tokio::io::duplex(1 << 16);
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(ClientLimits {
            header_timeout: T,
            idle_timeout: T * 2,
            metrics: metrics.clone(),
        });
        (ClientIo::new(server, limits, false), client, metrics)
    }

    fn cuts(m: &Metrics) -> u64 {
        m.client_timeouts_header.load(Ordering::Relaxed)
    }

    /// Reads until an error or end of file (bounded); returns the bytes and the error kind.
    async fn read_until_error(io: &mut ClientIo<DuplexStream>) -> (Vec<u8>, Option<io::ErrorKind>) {
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

    #[tokio::test]
    async fn a_trickled_head_is_cut_with_408_and_counted() {
        let (mut io, mut client, metrics) = wrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nho")
            .await
            .expect("write");
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert_eq!(got, b"GET / HTTP/1.1\r\nho");
        assert_eq!(cuts(&metrics), 1);
        drop(io);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        assert!(answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
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
        assert!(answer.is_empty());
    }

    #[tokio::test]
    async fn busy_reads_have_no_deadline_and_idle_ends_quietly() {
        let (mut io, mut client, metrics) = wrap();
        client
            .write_all(b"POST / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.expect("head") > 0);
        io.phase().busy();
        let slow = tokio::spawn(async move {
            tokio::time::sleep(T * 3).await;
            client.write_all(b"ok").await.expect("body");
            client
        });
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
        client
            .write_all(b"GET /a HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.expect("head") > 0);
        io.phase().busy();
        io.phase().idle();
        // Longer than the header timeout, shorter than the idle timeout.
        tokio::time::sleep(T + T / 2).await;
        client.write_all(b"GET /b HT").await.expect("next");
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!(got, b"GET /b HT");
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert_eq!(cuts(&metrics), 1);
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
        let later = tokio::spawn(async move {
            tokio::time::sleep(T * 3).await;
            client.write_all(b"frames").await.expect("frames");
            client
        });
        let mut buf = [0u8; 16];
        let n = io.read(&mut buf).await.expect("h2 read");
        assert_eq!(&buf[..n], b"frames");
        assert_eq!(cuts(&metrics), 0);
        drop(later.await.expect("writer"));

        let (mut io, mut client, _) = wrap();
        let head = b"GET /some/path HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(head).await.expect("write");
        assert!(!io.sniff_h2c().await.expect("sniff"));
        let mut got = vec![0u8; head.len()];
        io.read_exact(&mut got).await.expect("whole head");
        assert_eq!(&got[..], head);
    }

    #[tokio::test]
    async fn a_stalled_alpn_h2_preface_is_cut_without_408() {
        let (server, mut client) = tokio::io::duplex(1 << 16);
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(ClientLimits {
            header_timeout: T,
            idle_timeout: T,
            metrics: metrics.clone(),
        });
        let mut io = ClientIo::new(server, limits, true);
        client.write_all(&H2_PREFACE[..10]).await.expect("part");
        let (got, err) = read_until_error(&mut io).await;
        assert_eq!((got.len(), err), (10, Some(io::ErrorKind::TimedOut)));
        assert_eq!(cuts(&metrics), 1);
        drop(io);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        assert!(answer.is_empty(), "{answer:?}");
    }
}
