//! The whole-request-head deadline for pingora: [`HeadDeadline`], a [`ServerApp`] that wraps the
//! app pingora would run (the `HttpProxy`) and hands it every accepted connection wrapped in a
//! [`DeadlineIo`] (the engine-agnostic wrapper of [`crate::engine::head_deadline`], which
//! explains the phases, the 408 and the costs), plus the pingora traits a stream must have and
//! the two hooks that move the phase.
//!
//! pingora 0.9 bounds each *read* of a request head (`keepalive`/`read_timeout` per `read()`),
//! not the head as a whole; this closes that hole without touching pingora. The phase lives in
//! the stream (`DeadlineIo<Stream, Phase>`): the hooks find it with one `Any` downcast of the
//! session's stream. pingora ends idle keep-alive connections itself (its keep-alive timeout,
//! set to `idle-timeout` in `logging`), so the wrapper has no idle timeout here; pingora's own
//! h2c peek and h2 handshake have no timeout at all, so [`Peek`] goes through the deadline.
//!
//! The wrapper is created once per connection (one allocation; pingora's HTTP/1 keep-alive loop
//! runs *inside* the wrapped app, so wrappers never nest).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
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

use crate::engine::head_deadline::{self, HeadLimits, Phase};

/// A pingora stream under the head deadline; its phase lives inside it.
pub(crate) type DeadlineIo = head_deadline::DeadlineIo<Stream, Phase>;

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
            let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
            let peer = stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
            Box::new(DeadlineIo::new(
                stream,
                Phase::new(h2),
                peer,
                self.limits.clone(),
            ))
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
        io.phase().busy();
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
        if body_done {
            io.phase().idle();
        } else {
            io.phase().busy();
        }
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

#[async_trait]
impl Shutdown for DeadlineIo {
    async fn shutdown(&mut self) {
        self.inner_mut().shutdown().await;
    }
}

impl UniqueID for DeadlineIo {
    fn id(&self) -> UniqueIDType {
        self.inner().id()
    }
}

impl Ssl for DeadlineIo {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner().selected_alpn_proto()
    }
}

impl GetTimingDigest for DeadlineIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner().get_write_pending_time()
    }
}

impl GetProxyDigest for DeadlineIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner_mut().set_proxy_digest(digest);
    }
}

impl GetSocketDigest for DeadlineIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner_mut().set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for DeadlineIo {
    /// Reads `buf.len()` bytes under the head deadline and keeps them to be read again. This is
    /// how pingora looks for the h2c preface; a match turns the deadline off (HTTP/2).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    //! The deadline's behaviour is tested in [`crate::engine::head_deadline`]; these check that a
    //! pingora [`Stream`] goes through it (as `Box<dyn IO>`, with pingora's `Peek`).
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T: Duration = Duration::from_millis(200);
    /// Far longer than `T`: every wait in these tests is bounded by it.
    const BOUND: Duration = Duration::from_secs(10);

    fn wrap() -> (Stream, tokio::io::DuplexStream, Arc<Metrics>) {
        let (server, client) = tokio::io::duplex(4096);
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(HeadLimits {
            header_timeout: T,
            idle_timeout: None,
            metrics: metrics.clone(),
        });
        let io: Stream = Box::new(DeadlineIo::new(
            Box::new(server),
            Phase::new(false),
            None,
            limits,
        ));
        (io, client, metrics)
    }

    #[tokio::test]
    async fn pingoras_h2c_peek_goes_through_the_deadline() {
        let (mut io, mut client, metrics) = wrap();
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        let mut peek = [0u8; 24];
        assert!(io.try_peek(&mut peek).await.expect("peek"));
        let mut got = [0u8; 24];
        io.read_exact(&mut got).await.expect("preface again");
        assert_eq!(got, peek);
        // HTTP/2 from here: a pause longer than the deadline is not cut.
        let later = tokio::spawn(async move {
            tokio::time::sleep(T * 3).await;
            client.write_all(b"frames").await.expect("frames");
            client
        });
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(BOUND, io.read(&mut buf))
            .await
            .expect("bounded")
            .expect("h2 read");
        assert_eq!(&buf[..n], b"frames");
        assert_eq!(metrics.client_timeouts_header.load(Ordering::Relaxed), 0);
        drop(later.await.expect("writer"));
    }

    #[tokio::test]
    async fn a_silent_pingora_stream_is_cut() {
        let (mut io, _client, metrics) = wrap();
        let io_ref: &dyn IO = &*io;
        assert!(
            io_ref.as_any().is::<DeadlineIo>(),
            "found by the hooks' downcast"
        );
        let mut buf = [0u8; 16];
        let err = tokio::time::timeout(BOUND, io.read(&mut buf))
            .await
            .expect("the deadline must end the read")
            .expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(metrics.client_timeouts_header.load(Ordering::Relaxed), 1);
    }
}
