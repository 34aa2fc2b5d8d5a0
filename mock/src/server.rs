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

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use tapedeck_common::trace::TraceSource;
use tapedeck_storage::{ErrorKind, Exchange, Header, TRAILER_MARKER, TapeSender, flags, now_us};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use crate::fault::FaultPlan;
use crate::index::{Index, Live, Lookup};
use crate::spec::{LatencyMode, OnMiss, UnknownTrace};
use crate::stats::{Counters, Fate, MissRoutes};

/// Connections waiting to be accepted, per listener.
const BACKLOG: i32 = 1024;
/// Output records a worker gathers before handing them to the writer.
const BATCH: usize = 128;
/// How often a worker hands its output records over.
const TICK: Duration = Duration::from_millis(50);
/// Pass-through: the longest wait for the target's whole answer.
const PASSTHROUGH_TIMEOUT: Duration = Duration::from_secs(30);
/// Pass-through: the largest answer body read.
const PASSTHROUGH_MAX_BODY: usize = 64 << 20;
/// Request headers the pass-through does not forward (connection framing; the host is set).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
];

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

/// Tells a worker's connections to finish. Only the worker's own thread and the stop call
/// touch it, so its lock is uncontended; a connection registers its waker once.
#[derive(Debug, Default)]
struct Stopper {
    stopping: AtomicBool,
    next: AtomicU64,
    wakers: Mutex<HashMap<u64, Waker>>,
}

impl Stopper {
    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let wakers: Vec<Waker> = match self.wakers.lock() {
            Ok(mut w) => w.drain().map(|(_, w)| w).collect(),
            Err(_) => Vec::new(),
        };
        for w in wakers {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.wakers.lock() {
            w.insert(key, waker.clone());
        }
        key
    }

    fn unregister(&self, key: u64) {
        if let Ok(mut w) = self.wakers.lock() {
            w.remove(&key);
        }
    }
}

/// One worker thread's state.
pub(crate) struct Worker {
    id: usize,
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

/// Binds `threads` listeners on `addr` with `SO_REUSEPORT`: the kernel spreads connections over
/// them and each worker accepts on its own.
pub(crate) fn bind(
    addr: SocketAddr,
    threads: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(threads);
    let mut at = addr;
    for _ in 0..threads.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&at.into())?;
        s.listen(BACKLOG)?;
        let l: std::net::TcpListener = s.into();
        // Port 0: every listener takes the port the first one got.
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
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
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
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
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tokio::spawn(serve(tcp, peer, sh.clone(), w.clone()));
                    }
                    Err(e) => accept_failed(e).await,
                },
                _ = tick.tick(), if writes => w.flush(&sh),
            }
        }
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

async fn accept_failed(e: std::io::Error) {
    match e.raw_os_error() {
        Some(23 | 24) => {
            // ENFILE, EMFILE: wait instead of spinning.
            warn!(error = %e, "cannot accept: out of file descriptors; retrying in 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        _ => debug!(error = %e, "accept failed"),
    }
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
        if !this.graceful && this.worker.stopper.stopping.load(Ordering::Acquire) {
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

/// The per-connection service.
#[derive(Debug, Clone)]
struct Svc {
    sh: Arc<Shared>,
    w: Arc<Worker>,
    conn: Arc<Conn>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<MockBody>, Reset>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<MockBody>;
    type Error = Reset;
    type Future = BoxFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(handle(self.clone(), req))
    }
}

/// An answer body: the bytes at once, then trailers if any.
#[derive(Debug)]
pub(crate) struct MockBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    len: u64,
}

impl MockBody {
    fn new(data: Bytes, trailers: Option<HeaderMap>) -> MockBody {
        MockBody {
            len: data.len() as u64,
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact (hence Content-Length) unless trailers follow, which need chunked framing.
        if self.trailers.is_some() {
            let mut h = SizeHint::new();
            h.set_lower(self.len);
            h
        } else {
            SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
        }
    }
}

/// What the output record says about how the call was answered.
#[derive(Debug, Default)]
struct Served {
    flags: u32,
    origin: Option<uuid::Uuid>,
    error: Option<String>,
    error_kind: Option<ErrorKind>,
    incomplete: bool,
}

/// A request as received, for the output record.
struct Call {
    parts: Parts,
    body: Bytes,
    trace: Option<String>,
    started_at_us: i64,
    t0: Instant,
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn headers_vec(h: &HeaderMap, out: &mut Vec<Header>) {
    for (n, v) in h {
        out.push(Header::new(
            n.as_str(),
            Bytes::copy_from_slice(v.as_bytes()),
        ));
    }
}

impl Call {
    /// Writes the output record (when there is an output tape).
    fn record(
        &self,
        sh: &Shared,
        w: &Worker,
        conn: &Conn,
        answer: Option<(StatusCode, &HeaderMap, Option<&HeaderMap>, &Bytes)>,
        served: Served,
    ) {
        let Some(out) = &sh.out else { return };
        let elapsed = i64::try_from(self.t0.elapsed().as_micros()).unwrap_or(i64::MAX);
        let mut req_headers = Vec::with_capacity(self.parts.headers.len());
        headers_vec(&self.parts.headers, &mut req_headers);
        let mut resp_headers = Vec::new();
        let (status, resp_body) = match answer {
            Some((status, h, trailers, body)) => {
                headers_vec(h, &mut resp_headers);
                if let Some(t) = trailers {
                    resp_headers.push(Header::new(TRAILER_MARKER, Bytes::new()));
                    headers_vec(t, &mut resp_headers);
                }
                (Some(status.as_u16()), body.clone())
            }
            None => (None, Bytes::new()),
        };
        let authority = self
            .parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let mut ex = Exchange {
            id: Exchange::new_id(),
            source: sh.name.clone(),
            started_at_us: self.started_at_us,
            ttfb_us: status.map(|_| elapsed),
            duration_us: status.map(|_| elapsed),
            total_us: Some(elapsed),
            client_addr: Some(conn.peer.to_string()),
            method: self.parts.method.as_str().to_owned(),
            scheme: "http".into(),
            authority,
            path: self.parts.uri.path().to_owned(),
            query: self.parts.uri.query().map(str::to_owned),
            http_version: version_str(self.parts.version).into(),
            req_headers,
            req_body_size: self.body.len() as u64,
            req_body: self.body.clone(),
            req_body_truncated: false,
            status,
            resp_headers,
            resp_body_size: resp_body.len() as u64,
            resp_body,
            resp_body_truncated: served.incomplete,
            error_kind: served.error_kind,
            error: served.error,
            flags: served.flags,
            origin_id: served.origin,
            target: Some("mock".into()),
            scheduled_at_us: None,
            sent_at_us: None,
            trace_id: self.trace.clone(),
        };
        // Credentials the caller sent (authorization, cookies…) never reach the output tape.
        if out.redactor.redact(&mut ex) {
            ex.flags |= flags::REDACTED;
        }
        w.push(sh, ex);
    }
}

/// Resets the connection: `SO_LINGER` 0, then the driver drops it without a shutdown.
async fn reset(conn: &Conn) -> Result<Response<MockBody>, Reset> {
    conn.trigger_reset();
    let mut closed = conn.closed.clone();
    // Resolves (with an error) when the connection task has dropped the connection.
    let _ = closed.changed().await;
    Err(Reset)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> (StatusCode, HeaderMap, Bytes) {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    (status, h, Bytes::from(bytes))
}

fn respond(
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
) -> Response<MockBody> {
    let mut r = Response::new(MockBody::new(body, trailers));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

async fn handle(svc: Svc, req: Request<Incoming>) -> Result<Response<MockBody>, Reset> {
    let Svc { sh, w, conn } = svc;
    let t0 = Instant::now();
    let started_at_us = now_us();
    let counters = &sh.counters[w.id];
    let (parts, body) = req.into_parts();
    let trace = parts
        .headers
        .get(sh.trace.header_name())
        .and_then(|v| sh.trace.trace_id(v.as_bytes()));
    let body = match Limited::new(body, sh.max_request_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let (status, reason) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {} bytes", sh.max_request_body),
                )
            } else {
                (StatusCode::BAD_REQUEST, format!("request body: {e}"))
            };
            counters.count(Fate::Miss);
            let call = Call {
                parts,
                body: Bytes::new(),
                trace,
                started_at_us,
                t0,
            };
            return Ok(miss_answer(
                &sh,
                &w,
                &conn,
                &call,
                status,
                reason,
                Served::default(),
            ));
        }
    };
    let call = Call {
        parts,
        body,
        trace,
        started_at_us,
        t0,
    };
    let path = call.parts.uri.path();
    let mut served = Served::default();

    let fault = if sh.faults.is_empty() {
        None
    } else {
        sh.faults
            .decide(&call.parts.method, path, call.trace.as_deref())
    };
    if let Some(i) = fault {
        let rule = &sh.faults.rules()[i];
        counters.count(Fate::Fault);
        served.flags |= flags::MOCK_FAULT;
        served.error = Some(format!(
            "injected fault: {} (rule {})",
            rule.effect(),
            rule.label
        ));
        if let Some(d) = rule.delay {
            tokio::time::sleep(d).await;
        }
        if rule.reset {
            counters.resets.fetch_add(1, Ordering::Relaxed);
            served.error_kind = Some(ErrorKind::Reset);
            call.record(&sh, &w, &conn, None, served);
            return reset(&conn).await;
        }
        if let Some(status) = rule.status {
            let (status, h, b) = json_response(
                status,
                serde_json::json!({
                    "error": "injected fault",
                    "mock": sh.name,
                    "status": status.as_u16(),
                    "rule": rule.label,
                }),
            );
            call.record(&sh, &w, &conn, Some((status, &h, None, &b)), served);
            return Ok(respond(status, h, b, None));
        }
    }

    // Only the headers matching reads: content type and coding.
    let mut live_headers = Vec::new();
    for name in [CONTENT_TYPE, CONTENT_ENCODING] {
        for v in call.parts.headers.get_all(&name) {
            live_headers.push(Header::new(
                name.as_str(),
                Bytes::copy_from_slice(v.as_bytes()),
            ));
        }
    }
    let live = Live {
        method: call.parts.method.as_str(),
        path,
        query: call.parts.uri.query(),
        headers: &live_headers,
        body: &call.body,
    };
    let lane = if sh.lanes.is_empty() {
        0
    } else {
        crate::index::lane_of(
            call.parts
                .headers
                .get_all("tracestate")
                .iter()
                .map(|v| v.as_bytes()),
            &sh.lanes,
        )
    };
    match sh
        .index
        .lookup(&live, call.trace.as_deref(), sh.unknown_trace, lane)
    {
        Lookup::Hit {
            rec,
            nearest,
            repeat,
        } => {
            if fault.is_none() {
                counters.count(Fate::Hit);
            }
            if nearest {
                counters.nearest.fetch_add(1, Ordering::Relaxed);
                served.flags |= flags::MOCK_NEAREST;
            }
            if repeat {
                counters.repeats.fetch_add(1, Ordering::Relaxed);
                served.flags |= flags::MOCK_REPEAT;
            }
            served.origin = Some(rec.id);
            let a = &rec.answer;
            if sh.latency == LatencyMode::Recorded && !a.latency.is_zero() {
                tokio::time::sleep(a.latency).await;
            }
            match a.status {
                None => {
                    counters.resets.fetch_add(1, Ordering::Relaxed);
                    served.error_kind = Some(ErrorKind::Reset);
                    if served.error.is_none() {
                        served.error = Some(format!(
                            "recorded without a response ({})",
                            a.error.as_deref().unwrap_or("no error recorded")
                        ));
                    }
                    call.record(&sh, &w, &conn, None, served);
                    reset(&conn).await
                }
                Some(status) => {
                    if a.incomplete {
                        counters.incomplete.fetch_add(1, Ordering::Relaxed);
                        served.incomplete = true;
                    }
                    call.record(
                        &sh,
                        &w,
                        &conn,
                        Some((status, &a.headers, a.trailers.as_ref(), &a.body)),
                        served,
                    );
                    Ok(respond(
                        status,
                        a.headers.clone(),
                        a.body.clone(),
                        a.trailers.clone(),
                    ))
                }
            }
        }
        Lookup::Miss { reason } => {
            if fault.is_none() {
                counters.count(Fate::Miss);
            }
            let key = format!(
                "{} {}",
                call.parts.method,
                tapedeck_storage::route::template_path(path)
            );
            sh.misses.add(key);
            match &sh.on_miss {
                OnMiss::Status(status) => {
                    Ok(miss_answer(&sh, &w, &conn, &call, *status, reason, served))
                }
                OnMiss::Passthrough(base) => {
                    counters.passthrough.fetch_add(1, Ordering::Relaxed);
                    served.flags |= flags::MOCK_MISS;
                    match passthrough(&w, base, &call).await {
                        Ok((status, h, b)) => {
                            served.error = Some(format!(
                                "no recorded answer: {reason}; passed through to {base}"
                            ));
                            call.record(&sh, &w, &conn, Some((status, &h, None, &b)), served);
                            Ok(respond(status, h, b, None))
                        }
                        Err(e) => {
                            let why = format!("{reason}; pass-through to {base} failed: {e}");
                            Ok(miss_answer(
                                &sh,
                                &w,
                                &conn,
                                &call,
                                StatusCode::BAD_GATEWAY,
                                why,
                                served,
                            ))
                        }
                    }
                }
            }
        }
    }
}

/// The miss policy's own answer: `status` with a JSON body naming what was asked and why
/// nothing matched.
fn miss_answer(
    sh: &Shared,
    w: &Worker,
    conn: &Conn,
    call: &Call,
    status: StatusCode,
    reason: String,
    mut served: Served,
) -> Response<MockBody> {
    let (status, h, b) = json_response(
        status,
        serde_json::json!({
            "error": "no recorded answer",
            "mock": sh.name,
            "method": call.parts.method.as_str(),
            "path": call.parts.uri.path(),
            "query": call.parts.uri.query(),
            "trace_id": call.trace,
            "reason": reason,
        }),
    );
    served.flags |= flags::MOCK_MISS;
    let why = format!("no recorded answer: {reason}");
    served.error = Some(match served.error.take() {
        Some(fault) => format!("{fault}; {why}"),
        None => why,
    });
    call.record(sh, w, conn, Some((status, &h, None, &b)), served);
    respond(status, h, b, None)
}

/// Forwards a missed request to the pass-through target and reads its whole answer.
async fn passthrough(
    w: &Worker,
    base: &Uri,
    call: &Call,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let prefix = base.path().trim_end_matches('/');
    let pq = call.parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = base.authority().ok_or("no authority")?;
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(format!("{prefix}{pq}"))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(Full::new(call.body.clone()));
    *req.method_mut() = call.parts.method.clone();
    *req.uri_mut() = uri;
    for (n, v) in &call.parts.headers {
        if !HOP_BY_HOP.contains(&n.as_str()) {
            req.headers_mut().append(n.clone(), v.clone());
        }
    }
    if let Ok(h) = HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().insert(HOST, h);
    }
    let resp = tokio::time::timeout(PASSTHROUGH_TIMEOUT, async {
        let resp = w.client.request(req).await.map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        })?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, PASSTHROUGH_MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, body))
    })
    .await
    .map_err(|_| format!("no answer within {}s", PASSTHROUGH_TIMEOUT.as_secs()))??;
    let (parts, body) = resp;
    let mut h = HeaderMap::new();
    for (n, v) in &parts.headers {
        let name = n.as_str();
        if !HOP_BY_HOP.contains(&name) && name != "content-length" {
            h.append(n.clone(), v.clone());
        }
    }
    Ok((parts.status, h, body))
}
