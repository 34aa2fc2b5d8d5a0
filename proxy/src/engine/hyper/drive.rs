//! Driving a client connection to its end: graceful shutdown on `SIGTERM`, and the idle timeout
//! of HTTP/2 connections.
//!
//! A shutdown reaches connections that sit idle in a read through `tapedeck_common::stop::Stopper`
//! (each connection's waker registered once, a flag checked per poll).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::rt::{Read, Write};
use hyper::service::HttpService;
use tapedeck_common::stop::Stopper;
use tapedeck_common::timer::Sleep;

/// A served connection that can be asked to finish (hyper's HTTP/1 and HTTP/2 connections).
pub(crate) trait Graceful: Future {
    /// Finish the exchanges in progress, take no new ones, then end.
    fn graceful(self: Pin<&mut Self>);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<I, B, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, B, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Open streams of an HTTP/2 client connection, for its idle timeout.
#[derive(Debug)]
pub(crate) struct Streams {
    open: AtomicUsize,
    /// When the connection last had no stream open, in ms since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Streams {
    pub(crate) fn new() -> Self {
        Streams {
            open: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A stream opened.
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream ended.
    pub(crate) fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            let ms = self.epoch.elapsed().as_millis() as u64;
            self.idle_since_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// When the connection has been idle long enough, or `None` while a stream is open.
    fn idle_until(&self, idle_timeout: Duration) -> Option<Instant> {
        if self.open.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.epoch + since + idle_timeout)
    }
}

/// The future a connection task runs: the connection, stopped gracefully when asked, and (for
/// HTTP/2) after `idle-timeout` without an open stream.
pub(crate) struct Drive<C> {
    conn: Pin<Box<C>>,
    stopper: Arc<Stopper>,
    key: Option<u64>,
    finishing: bool,
    idle: Option<(Arc<Streams>, Duration, Sleep)>,
}

impl<C: Graceful> Drive<C> {
    pub(crate) fn new(conn: C, stopper: Arc<Stopper>) -> Self {
        Drive {
            conn: Box::pin(conn),
            stopper,
            key: None,
            finishing: false,
            idle: None,
        }
    }

    /// Ends the connection after `idle_timeout` without an open stream (HTTP/2).
    pub(crate) fn idle_timeout(mut self, streams: Arc<Streams>, idle_timeout: Duration) -> Self {
        let first = Instant::now() + idle_timeout;
        self.idle = Some((
            streams,
            idle_timeout,
            tapedeck_common::timer::sleep_until(first),
        ));
        self
    }

    fn finish(&mut self) {
        if !self.finishing {
            self.finishing = true;
            self.conn.as_mut().graceful();
        }
    }
}

impl<C: Graceful> Future for Drive<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        if this.key.is_none() && !this.finishing {
            // The task's waker is the same on every poll: register it once.
            this.key = Some(this.stopper.register(cx.waker()));
        }
        if this.stopper.stopping() {
            this.finish();
        }
        if !this.finishing
            && let Some((streams, idle_timeout, sleep)) = &mut this.idle
            && Pin::new(&mut *sleep).poll(cx).is_ready()
        {
            let idle = match streams.idle_until(*idle_timeout) {
                Some(at) if at <= Instant::now() => true,
                Some(at) => {
                    sleep.reset(at);
                    false
                }
                None => {
                    sleep.reset(Instant::now() + *idle_timeout);
                    false
                }
            };
            if idle {
                this.finish();
            } else {
                // Register the timer again.
                let _ = Pin::new(&mut *sleep).poll(cx);
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

impl<C> Drop for Drive<C> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.stopper.unregister(key);
        }
    }
}
