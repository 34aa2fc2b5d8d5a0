//! The upstream side of the hyper engine: connecting (TCP, TLS with ALPN), and sending a request
//! on the right connection.
//!
//! - HTTP/1.1 (`http://`, or `https://` where the upstream picks `http/1.1` by ALPN): each
//!   worker thread keeps its idle upstream connections on a stack ([`WorkerUpstream`]): a
//!   request takes the most recently parked one that is ready (or connects), and its exchange
//!   parks it again when the response has ended well ([`Lease`]); at most `upstream-keepalive`
//!   stay parked, each at most `idle-timeout`. Two uncontended lock operations and a clock read
//!   a request; what it buys: the upstream sees as many connections as there are requests in
//!   flight, not as many as there are clients, so clients that connect per request, or
//!   thousands of mostly idle keep-alive clients, do not make the upstream accept a connection
//!   each (nginx's `keepalive`). A request that a parked connection could not even send (the
//!   upstream closed it meanwhile) is sent once more on a fresh one.
//! - HTTP/2 (`upstream-h2c`, or `https://` where the upstream picks `h2`): one multiplexed
//!   connection per worker thread ([`WorkerUpstream`]), shared by the thread's client
//!   connections; opened again when it closed.
//!
//! - Forward-proxy mode (`forward`): an HTTP/1.1 request with an absolute-form `http://` target
//!   goes to the host it names, on a connection of its own (closed after the exchange: a proxy
//!   for test traffic favours simplicity over reuse); an origin-form request goes to the
//!   configured upstream, or gets 400 without one. `https://` targets and `CONNECT` get 501: a
//!   TLS tunnel cannot be recorded. A target that is the proxy's own listener gets 508.
//!
//! Time limits: `connect-timeout` for TCP and TLS set-up (504 past it); `upstream-timeout` for
//! the upstream's silence, counted from the last request byte sent (progress) until the
//! response head, then between response body chunks ([`super::body::RespBody`]).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tapedeck_common::timer::Timer;
use tapedeck_storage::ErrorKind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::debug;

use super::body::{ReqBody, ReqState};
use super::headers;
use crate::config::Settings;
use crate::recorder::RecordError;

/// How to reach the upstream. Built once, at start.
pub(crate) struct Upstream {
    /// `None`: forward-proxy mode without an upstream.
    addr: Option<SocketAddr>,
    /// Forward-proxy mode, and the proxy's own listener (never a forward target).
    forward: Option<SocketAddr>,
    /// `host:port` as configured: `:authority` of HTTP/2 requests that came without a host.
    authority: Authority,
    scheme: Scheme,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// HTTP/2 with prior knowledge (h2c) to a plaintext upstream.
    h2c: bool,
    connect_timeout: Duration,
    timeout: Duration,
    /// Idle HTTP/1.1 connections a worker keeps between requests (`upstream-keepalive`).
    keepalive: usize,
    /// How long one is kept idle (`idle-timeout`).
    keep_for: Duration,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("h2c", &self.h2c)
            .finish_non_exhaustive()
    }
}

/// An HTTP/1.1 upstream connection lent to one exchange from its response head on: parked on
/// its worker thread again when the exchange ends well ([`Upstream::park`]), closed otherwise.
#[derive(Debug)]
pub(crate) struct Lease {
    worker: Arc<WorkerUpstream>,
    tx: http1::SendRequest<ReqBody>,
}

/// A client connection's timer for the wait of each request's response head, kept between
/// requests: a timer is registered once and then only moved.
#[derive(Debug, Default)]
pub(crate) struct TimerSlot(Mutex<Option<Timer>>);

impl TimerSlot {
    fn take(&self) -> Option<Timer> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }

    fn put(&self, mut timer: Timer) {
        // Kept for the next wait, not woken for this one.
        timer.disarm();
        if let Ok(mut s) = self.0.lock() {
            *s = Some(timer);
        }
    }
}

/// A worker thread's upstream connections: its shared HTTP/2 connection, and its idle HTTP/1.1
/// connections.
#[derive(Debug, Default)]
pub(crate) struct WorkerUpstream {
    h2: tokio::sync::Mutex<Option<http2::SendRequest<ReqBody>>>,
    /// The upstream chose `h2` by ALPN once: later requests go to the shared connection.
    speaks_h2: AtomicBool,
    /// Idle HTTP/1.1 connections, the most recently parked last.
    idle: Mutex<VecDeque<Parked>>,
}

/// An idle HTTP/1.1 upstream connection and when it was parked.
#[derive(Debug)]
struct Parked {
    since: Instant,
    tx: http1::SendRequest<ReqBody>,
}

/// Why a request got no response head from the upstream.
#[derive(Debug)]
pub(crate) enum UpError {
    /// TCP connect failed.
    Connect(io::Error),
    /// TCP connect or TLS set-up took longer than `connect-timeout`.
    ConnectTimeout,
    /// The TLS handshake failed.
    Tls(io::Error),
    /// The upstream was silent for `upstream-timeout`.
    Timeout,
    /// The HTTP exchange failed.
    Http(hyper::Error),
    /// Forward-proxy mode cannot send this request (the status the client gets, and why).
    Forward(u16, String),
}

impl std::fmt::Display for UpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpError::Connect(e) => write!(f, "connecting to the upstream: {e}"),
            UpError::ConnectTimeout => f.write_str("connecting to the upstream timed out"),
            UpError::Tls(e) => write!(f, "TLS handshake with the upstream: {e}"),
            UpError::Timeout => f.write_str("the upstream did not answer within upstream-timeout"),
            UpError::Forward(_, why) => f.write_str(why),
            UpError::Http(e) => {
                write!(f, "upstream: {e}")?;
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    write!(f, ": {s}")?;
                    src = s.source();
                }
                Ok(())
            }
        }
    }
}

impl UpError {
    /// The tape's error kind.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            UpError::Connect(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
                io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                _ => ErrorKind::Other,
            },
            UpError::ConnectTimeout => ErrorKind::ConnectTimeout,
            UpError::Tls(_) => ErrorKind::Tls,
            UpError::Timeout => ErrorKind::Timeout,
            UpError::Http(e) => http_error_kind(e),
            UpError::Forward(..) => ErrorKind::Protocol,
        }
    }

    /// What the client gets: 504 when the upstream was too slow, else 502.
    pub(crate) fn status(&self) -> u16 {
        if let UpError::Forward(status, _) = self {
            return *status;
        }
        match self.kind() {
            ErrorKind::Timeout | ErrorKind::ConnectTimeout => 504,
            _ => 502,
        }
    }
}

/// The tape's error kind of a hyper error on the upstream side.
fn http_error_kind(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return ErrorKind::Protocol;
    }
    // Look for the cause: an I/O error, a TLS alert, an HTTP/2 error.
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return ErrorKind::Tls;
        }
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return ErrorKind::Tls;
            }
            return match io.kind() {
                io::ErrorKind::TimedOut => ErrorKind::Timeout,
                io::ErrorKind::InvalidData => ErrorKind::Protocol,
                _ => ErrorKind::Reset,
            };
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return if h2.is_io() || h2.is_go_away() || h2.is_remote() {
                ErrorKind::Reset
            } else {
                ErrorKind::Protocol
            };
        }
        src = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() || e.is_body_write_aborted() {
        return ErrorKind::Reset;
    }
    ErrorKind::Other
}

/// The tape's error kind of an error in the upstream's response body.
pub(crate) fn body_error_kind(e: &hyper::Error) -> ErrorKind {
    match http_error_kind(e) {
        ErrorKind::Other => ErrorKind::Reset,
        k => k,
    }
}

/// A connected upstream.
enum Connected {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

impl Upstream {
    /// The upstream of `s`, with its TLS configuration built once.
    pub(crate) fn new(s: &Settings) -> Result<Upstream, RecordError> {
        let mut h1 = http1::Builder::new();
        h1.writev(false);
        let h2 = http2::Builder::new(TokioExecutor::new());
        let forward = s.forward.then_some(s.listen);
        let Some(up) = &s.upstream else {
            // Forward-proxy mode without an upstream: every target comes with its request.
            return Ok(Upstream {
                addr: None,
                forward,
                authority: Authority::from_static("forward"),
                scheme: Scheme::HTTP,
                tls: None,
                h2c: false,
                connect_timeout: s.connect_timeout,
                timeout: s.upstream_timeout,
                keepalive: s.upstream_keepalive,
                keep_for: s.idle_timeout,
                h1,
                h2,
            });
        };
        let tls_err = |e: tapedeck_common::tls::TlsError| RecordError::Start {
            what: "the upstream TLS configuration",
            source: io::Error::other(e.to_string()),
        };
        let tls = if up.tls {
            let opts = &up.tls_options;
            let config = opts
                .client_tls(&tapedeck_common::tls::ALPN_H2_HTTP1)
                .config()
                .map_err(tls_err)?;
            let name = opts.server_name(&up.host).map_err(tls_err)?;
            if opts.insecure {
                tracing::warn!(
                    upstream = %up.authority,
                    "UPSTREAM CERTIFICATE VERIFICATION IS OFF (upstream-insecure): anyone on the \
                     path can impersonate the upstream and read the traffic; use upstream-ca instead"
                );
            }
            tracing::info!(
                upstream = %up.authority,
                sni = ?name,
                ca = if opts.ca.is_some() { "upstream-ca" } else { "system roots" },
                client_cert = opts.client_cert.as_ref().map(|c| c.cert_path().display().to_string()),
                "https upstream"
            );
            Some((TlsConnector::from(std::sync::Arc::new(config)), name))
        } else {
            None
        };
        let authority: Authority = up.authority.parse().map_err(|e| RecordError::Start {
            what: "the upstream",
            source: io::Error::other(format!("authority {}: {e}", up.authority)),
        })?;
        Ok(Upstream {
            addr: Some(up.addr),
            forward,
            authority,
            scheme: if up.tls { Scheme::HTTPS } else { Scheme::HTTP },
            tls,
            h2c: s.upstream_h2c,
            connect_timeout: s.connect_timeout,
            timeout: s.upstream_timeout,
            keepalive: s.upstream_keepalive,
            keep_for: s.idle_timeout,
            h1,
            h2,
        })
    }

    /// The longest silence of the upstream.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether an `Upgrade` can be forwarded (it needs HTTP/1.1 to the upstream).
    pub(crate) fn may_upgrade(&self, worker: &WorkerUpstream) -> bool {
        !self.h2c && !worker.speaks_h2.load(Ordering::Relaxed)
    }

    /// Sends a request on the connection it belongs to (see the module docs) and waits for the
    /// response head; with it, the HTTP/1.1 connection's [`Lease`] (none for HTTP/2 and
    /// forward-proxy targets). `timer` is the client connection's timer for the wait (HTTP/1.1
    /// clients, one exchange at a time), reused from one request to the next; `now` is about
    /// now (the exchange's start).
    pub(crate) async fn send(
        &self,
        worker: &Arc<WorkerUpstream>,
        mut req: Request<ReqBody>,
        progress: Option<&ReqState>,
        timer: Option<&TimerSlot>,
        now: Instant,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpError> {
        // The common case stays inline; connecting, HTTP/2 and retries are boxed so that the
        // future of every request stays small (it is moved into a box per request by hyper's
        // service call).
        if self.forward.is_some() && req.version() != Version::HTTP_2 {
            let absolute = req.uri().scheme().is_some() || req.method() == http::Method::CONNECT;
            if absolute || self.addr.is_none() {
                return Box::pin(self.send_forward(req, progress))
                    .await
                    .map(|resp| (resp, None));
            }
        }
        if self.h2c || worker.speaks_h2.load(Ordering::Relaxed) {
            return Box::pin(self.send_shared_h2(worker, req, progress))
                .await
                .map(|resp| (resp, None));
        }
        let Some(mut tx) = self.unpark(worker, now) else {
            return Box::pin(self.send_new(worker, req, progress)).await;
        };
        for_h1(&mut req);
        match self.wait(tx.try_send_request(req), progress, timer).await? {
            Ok(resp) => Ok((
                resp,
                Some(Lease {
                    worker: worker.clone(),
                    tx,
                }),
            )),
            Err(mut e) => match e.take_message() {
                // A parked connection the upstream closed meanwhile: the request never left.
                Some(req) => {
                    debug!("upstream connection closed while idle; sending on a new one");
                    Box::pin(self.send_new(worker, req, progress)).await
                }
                None => Err(UpError::Http(e.into_error())),
            },
        }
    }

    /// An exchange ended well: its HTTP/1.1 connection is parked for the worker's next request,
    /// unless it closed (or the worker keeps none). The oldest goes when `upstream-keepalive`
    /// are parked.
    pub(crate) fn park(&self, lease: Lease) {
        let Lease { worker, tx } = lease;
        if self.keepalive == 0 || tx.is_closed() {
            return;
        }
        let since = Instant::now();
        let Ok(mut idle) = worker.idle.lock() else {
            return;
        };
        if idle.len() >= self.keepalive {
            idle.pop_front();
        }
        idle.push_back(Parked { since, tx });
    }

    /// The most recently parked connection that is ready for a request and was parked less
    /// than `idle-timeout` before `now` (the ones parked before it are older: they all go
    /// then). Closed ones go; one still busy with its last exchange (a request body still
    /// uploading after an early answer) stays parked, so that no request waits for another's.
    fn unpark(&self, worker: &WorkerUpstream, now: Instant) -> Option<http1::SendRequest<ReqBody>> {
        let mut idle = worker.idle.lock().ok()?;
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(p) = idle.pop_back() {
            if now.saturating_duration_since(p.since) >= self.keep_for {
                idle.clear();
                break;
            }
            if p.tx.is_ready() {
                found = Some(p.tx);
                break;
            }
            if !p.tx.is_closed() {
                busy.push(p);
            }
        }
        // Back in their order, on top.
        idle.extend(busy.into_iter().rev());
        found
    }

    /// Closes the worker's connections parked for `idle-timeout` or longer (called on the
    /// worker's tick, so that a quiet worker does not hold them until its next request).
    pub(crate) fn sweep(&self, worker: &WorkerUpstream) {
        let now = Instant::now();
        if let Ok(mut idle) = worker.idle.lock() {
            while idle
                .front()
                .is_some_and(|p| now.saturating_duration_since(p.since) >= self.keep_for)
            {
                idle.pop_front();
            }
        }
    }

    /// Sends on a new connection (HTTP/1.1, lent to this exchange, or the worker's HTTP/2 one
    /// if the upstream picks `h2`).
    async fn send_new(
        &self,
        worker: &Arc<WorkerUpstream>,
        req: Request<ReqBody>,
        progress: Option<&ReqState>,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpError> {
        match self.connect().await? {
            Connected::H1(mut tx) => {
                let mut req = req;
                for_h1(&mut req);
                let resp = self
                    .wait(tx.send_request(req), progress, None)
                    .await?
                    .map_err(UpError::Http)?;
                let lease = Lease {
                    worker: worker.clone(),
                    tx,
                };
                Ok((resp, Some(lease)))
            }
            Connected::H2(tx) => self
                .adopt_h2(worker, tx, req, progress)
                .await
                .map(|resp| (resp, None)),
        }
    }

    /// Sends on the worker's HTTP/2 connection.
    async fn send_shared_h2(
        &self,
        worker: &WorkerUpstream,
        req: Request<ReqBody>,
        progress: Option<&ReqState>,
    ) -> Result<Response<Incoming>, UpError> {
        let tx = self.shared_h2(worker).await?;
        self.send_h2(tx, req, progress).await
    }

    /// The upstream picked HTTP/2 by ALPN: the connection becomes the worker's shared one.
    async fn adopt_h2(
        &self,
        worker: &WorkerUpstream,
        tx: http2::SendRequest<ReqBody>,
        req: Request<ReqBody>,
        progress: Option<&ReqState>,
    ) -> Result<Response<Incoming>, UpError> {
        worker.speaks_h2.store(true, Ordering::Relaxed);
        *worker.h2.lock().await = Some(tx.clone());
        self.send_h2(tx, req, progress).await
    }

    /// The worker's HTTP/2 connection, opened if there is none (or it closed).
    async fn shared_h2(
        &self,
        worker: &WorkerUpstream,
    ) -> Result<http2::SendRequest<ReqBody>, UpError> {
        let mut slot = worker.h2.lock().await;
        if let Some(tx) = slot.as_ref()
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        match self.connect().await? {
            Connected::H2(tx) => {
                *slot = Some(tx.clone());
                Ok(tx)
            }
            Connected::H1(_) => {
                // The upstream now prefers HTTP/1.1: go back to a connection per client.
                worker.speaks_h2.store(false, Ordering::Relaxed);
                *slot = None;
                Err(UpError::Connect(io::Error::other(
                    "the upstream stopped offering HTTP/2; retry",
                )))
            }
        }
    }

    async fn send_h2(
        &self,
        mut tx: http2::SendRequest<ReqBody>,
        req: Request<ReqBody>,
        progress: Option<&ReqState>,
    ) -> Result<Response<Incoming>, UpError> {
        let mut req = req;
        self.for_h2(&mut req);
        let resp = self
            .wait(tx.send_request(req), progress, None)
            .await?
            .map_err(UpError::Http)?;
        Ok(resp)
    }

    /// Waits for `fut` while the upstream is not silent for longer than `upstream-timeout`:
    /// the clock restarts whenever a request body chunk has been sent. The timer comes from
    /// `slot` (and goes back there when the wait ends) when there is one.
    ///
    /// A plain function returning the wait, not an `async fn`: the wait is built once, around
    /// `fut`, inside the caller's future. An `async fn` moved `fut` (which holds the request
    /// until it is sent) and then its output (the response, or the request given back) through
    /// its own state and an `Option`: eight more copies of ≈ 400 bytes a request (callgrind).
    fn wait<'a, F: Future>(
        &self,
        fut: F,
        progress: Option<&'a ReqState>,
        slot: Option<&'a TimerSlot>,
    ) -> Silence<'a, F> {
        Silence {
            fut,
            timer: slot.and_then(TimerSlot::take).unwrap_or_default(),
            slot,
            deadline: None,
            timeout: self.timeout,
            progress,
            seen: progress.map_or(0, |p| p.progress()),
        }
    }

    /// Forward-proxy mode: sends an absolute-form request to the host it names, on a
    /// connection of its own.
    async fn send_forward(
        &self,
        req: Request<ReqBody>,
        progress: Option<&ReqState>,
    ) -> Result<Response<Incoming>, UpError> {
        let refuse = |status: u16, why: String| Err(UpError::Forward(status, why));
        if req.method() == http::Method::CONNECT {
            return refuse(
                501,
                "forward proxy: CONNECT (https through the proxy) is not supported: only plain-http targets can be recorded".to_owned(),
            );
        }
        let uri = req.uri();
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return refuse(
                    501,
                    format!("forward proxy: `{other}://` targets are not supported, only http://"),
                );
            }
            None => {
                return refuse(
                    400,
                    "forward proxy: the request target must be an absolute http:// URL (no upstream is configured for origin-form requests)".to_owned(),
                );
            }
        }
        let Some(authority) = uri.authority() else {
            return refuse(400, format!("forward proxy: `{uri}` names no host"));
        };
        let target = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let addrs: Vec<SocketAddr> = match tapedeck_common::timer::timeout(
            self.connect_timeout,
            tokio::net::lookup_host(target.as_str()),
        )
        .await
        {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Err(UpError::Connect(io::Error::new(
                    e.kind(),
                    format!("resolving {target}: {e}"),
                )));
            }
            Err(_) => return Err(UpError::ConnectTimeout),
        };
        let Some(addr) = addrs.first().copied() else {
            return Err(UpError::Connect(io::Error::other(format!(
                "{target} resolves to no address"
            ))));
        };
        if self.forward.is_some_and(|own| {
            addr.port() == own.port() && (addr.ip() == own.ip() || own.ip().is_unspecified())
        }) {
            return refuse(
                508,
                format!("forward proxy: {target} is this proxy's own listener"),
            );
        }
        let mut tx = match self.connect_to(addr, false).await? {
            Connected::H1(tx) => tx,
            // A plain connection opened without h2c is HTTP/1.1.
            Connected::H2(_) => {
                return refuse(502, format!("forward proxy: {target} spoke HTTP/2"));
            }
        };
        let mut req = req;
        // Meant for this proxy, never for the target.
        req.headers_mut().remove(http::header::PROXY_AUTHORIZATION);
        for_h1(&mut req);
        self.wait(tx.send_request(req), progress, None)
            .await?
            .map_err(UpError::Http)
    }

    async fn connect(&self) -> Result<Connected, UpError> {
        let Some(addr) = self.addr else {
            return Err(UpError::Forward(
                400,
                "forward proxy: no upstream is configured for origin-form requests".to_owned(),
            ));
        };
        self.connect_to(addr, true).await
    }

    /// Connects to `addr`, with the upstream's TLS and h2c settings when `configured` (else
    /// plain HTTP/1.1, for forward-proxy targets).
    async fn connect_to(&self, addr: SocketAddr, configured: bool) -> Result<Connected, UpError> {
        let tcp =
            match tapedeck_common::timer::timeout(self.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return Err(UpError::Connect(e)),
                Err(_) => return Err(UpError::ConnectTimeout),
            };
        let _ = tcp.set_nodelay(true);
        let tls = if configured { self.tls.as_ref() } else { None };
        let io = match tls {
            None => UpIo::Plain(tcp),
            Some((connector, name)) => {
                match tapedeck_common::timer::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(tls)) => UpIo::Tls(Box::new(tls)),
                    Ok(Err(e)) => return Err(UpError::Tls(e)),
                    Err(_) => return Err(UpError::ConnectTimeout),
                }
            }
        };
        let h2 = match &io {
            UpIo::Plain(_) => configured && self.h2c,
            UpIo::Tls(t) => t.get_ref().1.alpn_protocol() == Some(b"h2"),
        };
        let io = TokioIo::new(io);
        if h2 {
            let (tx, conn) = self.h2.handshake(io).await.map_err(UpError::Http)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            Ok(Connected::H2(tx))
        } else {
            let (tx, conn) = self.h1.handshake(io).await.map_err(UpError::Http)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Connected::H1(tx))
        }
    }

    /// The request head as an HTTP/2 upstream wants it: an absolute URI (`:scheme` of the
    /// upstream, `:authority` from the client's `Host` or URI), no connection-specific headers.
    fn for_h2<B>(&self, req: &mut Request<B>) {
        let authority = req
            .uri()
            .authority()
            .cloned()
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            })
            .unwrap_or_else(|| self.authority.clone());
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        *req.version_mut() = Version::HTTP_2;
        let headers = req.headers_mut();
        headers::scan(headers).strip_for_h2(headers);
    }
}

/// The request head as an HTTP/1.1 upstream wants it: origin-form target, a `Host` (from the
/// URI of an HTTP/2 client's request, which has none).
fn for_h1<B>(req: &mut Request<B>) {
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        if !req.headers().contains_key(http::header::HOST)
            && let Some(a) = req.uri().authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    if req.version() == Version::HTTP_2 {
        *req.version_mut() = Version::HTTP_11;
    }
}

pin_project_lite::pin_project! {
    /// Waits for a future while the upstream is not silent for `timeout` (see
    /// [`Upstream::wait`]). The clock is read only if the future is not ready at once.
    struct Silence<'a, F> {
        #[pin]
        fut: F,
        timer: Timer,
        // Where the timer goes back when the wait ends (taken then).
        slot: Option<&'a TimerSlot>,
        // When the upstream has been silent for too long, once this wait has had to wait.
        deadline: Option<Instant>,
        timeout: Duration,
        progress: Option<&'a ReqState>,
        seen: u64,
    }
}

impl<F: Future> Future for Silence<'_, F> {
    type Output = Result<F::Output, UpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<F::Output, UpError>> {
        let this = self.project();
        // The wait is over: the timer goes back to its slot, if it came from one.
        let end = |slot: &mut Option<&TimerSlot>, timer: &mut Timer, out| {
            if let Some(slot) = slot.take() {
                slot.put(std::mem::take(timer));
            }
            Poll::Ready(out)
        };
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return end(this.slot, this.timer, Ok(out));
        }
        let timeout = *this.timeout;
        loop {
            let deadline = *this
                .deadline
                .get_or_insert_with(|| Instant::now() + timeout);
            if this.timer.poll_until(cx, deadline).is_pending() {
                return Poll::Pending;
            }
            let now = this.progress.map_or(0, |p| p.progress());
            if now == *this.seen {
                return end(this.slot, this.timer, Err(UpError::Timeout));
            }
            // The request body moved meanwhile: the upstream is reading; wait again.
            *this.seen = now;
            *this.deadline = Some(Instant::now() + timeout);
        }
    }
}

/// The upstream stream: TCP or TLS over TCP.
enum UpIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpIo::Plain(s) => s.is_write_vectored(),
            UpIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
