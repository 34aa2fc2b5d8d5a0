//! The data plane: worker threads, connections, and the request path.
//!
//! ```text
//!  worker thread × threads: current_thread tokio runtime (I/O + timers)
//!    SO_REUSEPORT listener ─ accept ─► connection task (Drive: graceful stop, reset)
//!      hyper server conn (HTTP/1.1, or HTTP/2 with prior knowledge) ─► handle():
//!        trace id ─► fault decision ─► index lookup ─► recorded answer | miss policy
//!        ─► counters (this worker's) ─► output record into this worker's batch
//!    tick (50 ms): the batch goes to the output tape writer
//! ```
//!
//! Everything a connection does runs on the thread that accepted it. The request path takes no
//! lock shared between threads: the index is read-only apart from its atomic cursors, counters
//! are per worker, and output records leave in batches.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tapedeck_common::Redactor;
use tapedeck_common::RuleRedactor;
use tapedeck_common::stop::Stopper;
use tapedeck_common::trace::TraceSource;
use tapedeck_storage::{ErrorKind, Exchange, Header, TRAILER_MARKER, TapeSender, flags, now_us};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use crate::fault::FaultPlan;
use crate::index::{Index, Live, Lookup};
use crate::spec::{LatencyMode, OnMiss, UnknownTrace};
use crate::stats::{Counters, Fate, MissRoutes};

mod handle;
use handle::Svc;

/// Output records a worker gathers before handing them to the writer.
const BATCH: usize = 128;
/// How often a worker hands its output records over.
const TICK: Duration = Duration::from_millis(50);
/// Pass-through: the longest wait for the target's whole answer.
const PASSTHROUGH_TIMEOUT: Duration = Duration::from_secs(30);
/// Pass-through: the largest answer body read.
const PASSTHROUGH_MAX_BODY: usize = 64 << 20;

/// The output tape: a sender and the redactor that keeps credentials the caller sent off it.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) sender: TapeSender,
    pub(crate) redactor: RuleRedactor,
}

/// What every worker shares; read-only on the request path apart from atomics.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) index: Index,
    pub(crate) faults: FaultPlan,
    pub(crate) on_miss: OnMiss,
    pub(crate) latency: LatencyMode,
    pub(crate) trace: TraceSource,
    pub(crate) unknown_trace: UnknownTrace,
    /// Named lanes (see [`crate::lane_of`]).
    pub(crate) lanes: Vec<String>,
    pub(crate) max_request_body: usize,
    pub(crate) grace: Duration,
    pub(crate) out: Option<Output>,
    pub(crate) counters: Vec<Counters>,
    pub(crate) misses: MissRoutes,
    /// Some answer may reset a connection: each connection keeps a duplicate of its socket to
    /// set `SO_LINGER` 0 on.
    pub(crate) resets_possible: bool,
    pub(crate) http: auto::Builder<TokioExecutor>,
}

impl Shared {
    pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .auto_date_header(false)
            .writev(false)
            .keep_alive(true);
        b.http2().timer(TokioTimer::new()).auto_date_header(false);
        b
    }
}

/// One worker thread's state.
pub(crate) struct Worker {
    id: usize,
    /// Only the worker's own thread and the stop call touch it: its lock is uncontended.
    stopper: Stopper,
    open: AtomicUsize,
    batch: Mutex<Vec<Exchange>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Worker {
    fn new(id: usize) -> Worker {
        Worker {
            id,
            stopper: Stopper::default(),
            open: AtomicUsize::new(0),
            batch: Mutex::new(Vec::new()),
            client: Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http(),
        }
    }

    fn push(&self, sh: &Shared, ex: Exchange) {
        let full = match self.batch.lock() {
            Ok(mut b) => {
                b.push(ex);
                b.len() >= BATCH
            }
            Err(_) => false,
        };
        if full {
            self.flush(sh);
        }
    }

    fn flush(&self, sh: &Shared) {
        let Some(out) = &sh.out else { return };
        let batch = match self.batch.lock() {
            Ok(mut b) => std::mem::take(&mut *b),
            Err(_) => return,
        };
        // One queue operation per batch, no wake-up of the spool thread per batch. Blocking
        // queue: only a closed writer drops (and counts) records.
        let n = out.sender.append_batch(batch).dropped();
        if n > 0 {
            debug!(
                records = n,
                "output exchanges not written: the writer has closed"
            );
        }
    }
}

/// Starts one worker thread serving `listener` until `stop` turns true.
pub(crate) fn spawn_worker(
    id: usize,
    listener: std::net::TcpListener,
    sh: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("mock-w{id}"))
        .spawn(move || worker(id, listener, sh, stop))
}

fn worker(
    id: usize,
    listener: std::net::TcpListener,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let rt = match tapedeck_common::net::worker_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start a mock worker runtime");
            return;
        }
    };
    let w = Arc::new(Worker::new(id));
    let writes = sh.out.is_some();
    rt.block_on(async {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, "cannot use a mock listener");
                return;
            }
        };
        tapedeck_common::net::accept_until(
            &listener,
            async { while stop.changed().await.is_ok() && !*stop.borrow() {} },
            writes.then_some(TICK),
            || w.flush(&sh),
            |tcp, peer| {
                tokio::spawn(serve(tcp, peer, sh.clone(), w.clone()));
            },
        )
        .await;
        drop(listener);
        // Not accepting any more: connections finish what they are doing, then close.
        w.stopper.stop();
        let deadline = tokio::time::Instant::now() + sh.grace;
        while w.open.load(Ordering::Relaxed) > 0 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        open = w.open.load(Ordering::Relaxed),
                        "grace period over; cutting off connections still open"
                    );
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    });
    // Dropping the runtime drops what still runs.
    drop(rt);
    w.flush(&sh);
}

/// One connection's state, shared by its service calls.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    /// A duplicate of the socket, for `SO_LINGER` 0 before a reset (only when resets may happen).
    fd: Option<OwnedFd>,
    /// Set by a call that resets the connection; the driver then drops it at once.
    reset: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Ends (its sender drops) when the connection task ends.
    closed: watch::Receiver<()>,
}

impl Conn {
    fn trigger_reset(&self) {
        if let Some(fd) = &self.fd
            && let Err(e) = socket2::SockRef::from(fd).set_linger(Some(Duration::ZERO))
        {
            debug!(error = %e, "cannot set SO_LINGER for a reset");
        }
        self.reset.store(true, Ordering::Release);
        let w = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// The connection was reset on purpose.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the mock")
    }
}

impl std::error::Error for Reset {}

type HttpConn = auto::Connection<'static, TokioIo<TcpStream>, Svc, TokioExecutor>;

/// Drives a connection to its end: asks it to finish when the worker stops, and drops it at
/// once (no shutdown, so `SO_LINGER` 0 makes the close a reset) when a call resets it.
struct Drive {
    conn: Pin<Box<HttpConn>>,
    ctx: Arc<Conn>,
    worker: Arc<Worker>,
    key: Option<u64>,
    graceful: bool,
    _closed: watch::Sender<()>,
}

impl Future for Drive {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.key.is_none() {
            // A task's waker stays the same, so registering once is enough.
            this.key = Some(this.worker.stopper.register(cx.waker()));
            if let Ok(mut w) = this.ctx.waker.lock() {
                *w = Some(cx.waker().clone());
            }
        }
        if this.ctx.reset.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !this.graceful && this.worker.stopper.stopping() {
            this.graceful = true;
            this.conn.as_mut().graceful_shutdown();
        }
        match this.conn.as_mut().poll(cx) {
            Poll::Ready(r) => {
                if let Err(e) = r {
                    debug!(error = %e, "mock connection ended");
                }
                Poll::Ready(())
            }
            Poll::Pending if this.ctx.reset.load(Ordering::Acquire) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Drive {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.worker.stopper.unregister(k);
        }
        self.worker.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(tcp: TcpStream, peer: SocketAddr, sh: Arc<Shared>, w: Arc<Worker>) {
    w.open.fetch_add(1, Ordering::Relaxed);
    let _ = tcp.set_nodelay(true);
    let fd = if sh.resets_possible {
        tcp.as_fd().try_clone_to_owned().ok()
    } else {
        None
    };
    let (closed_tx, closed_rx) = watch::channel(());
    let ctx = Arc::new(Conn {
        peer,
        fd,
        reset: AtomicBool::new(false),
        waker: Mutex::new(None),
        closed: closed_rx,
    });
    let svc = Svc {
        sh: sh.clone(),
        w: w.clone(),
        conn: ctx.clone(),
    };
    let conn = sh
        .http
        .serve_connection(TokioIo::new(tcp), svc)
        .into_owned();
    let drive = Drive {
        conn: Box::pin(conn),
        ctx,
        worker: w,
        key: None,
        graceful: false,
        _closed: closed_tx,
    };
    drive.await;
}
