//! The hyper engine (the default): a lean HTTP data plane on hyper 1.x.
//!
//! ```text
//!  main thread: signals (SIGTERM graceful, SIGINT fast), the grace period
//!  worker thread × threads: current_thread tokio runtime (I/O only: deadlines are
//!    `tapedeck_common::timer`s, served by one timer thread)
//!    SO_REUSEPORT listener ─ accept ─► connection task
//!      DeadlineIo (head deadline, idle timeout, h2c sniff; engine::head_deadline)  or  TLS (rustls, ALPN h2/http1.1)
//!      hyper server conn (HTTP/1.1 with upgrades, or HTTP/2) ─► ProxyService::call
//!        capture.decide / begin ─► ReqBody ─► upstream:
//!          HTTP/1.1: an idle client conn of the worker, or a new one (task on the same thread)
//!          HTTP/2:   the worker's shared client conn
//!        ◄─ response head ─ RespBody (capture, upstream gap timeout) ─► Flight::finish
//!    tick (≤ 50 ms): hand this thread's batch of records to the writer; close upstream
//!                    connections parked for idle-timeout
//! ```
//!
//! Everything a connection does runs on the thread that accepted it: no wake-up of another
//! thread per exchange (records leave in batches), no lock shared between threads on the
//! request path (the worker's idle upstream connections and its HTTP/2 slot are only used by that
//! thread), no blocking I/O.
//!
//! Shutdown: `SIGTERM` turns `/readyz` off, closes the listeners, asks every connection to
//! finish ([`drive::Stopper`]: HTTP/1.1 connections close after their exchange in progress,
//! HTTP/2 ones send GOAWAY), waits until none is left or the grace period ends, then drops what
//! remains (recorded as cut off) and returns; the recorder then seals the tape. `SIGINT` skips
//! the wait.

mod body;
mod drive;
mod headers;
mod service;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::capture::{Capture, MAX_REQUEST_HEAD, flush_local};
use crate::config::Settings;
use crate::engine::Readiness;
use crate::engine::head_deadline::{DeadlineIo, HeadLimits, Phase};
use crate::recorder::RecordError;
use drive::{Drive, Streams};
use service::{ConnCtx, ConnKind, ProxyService};
use tapedeck_common::stop::Stopper;
use upstream::{Upstream, WorkerUpstream};

/// What every connection of every worker shares. Read-only on the request path, apart from
/// relaxed counters.
pub(crate) struct Shared {
    pub(crate) capture: Arc<Capture>,
    pub(crate) upstream: Upstream,
    pub(crate) limits: Arc<HeadLimits>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    h2c: bool,
    /// How long an HTTP/2 connection may sit without streams (HTTP/1's idle timeout is in
    /// `limits`).
    idle_timeout: Duration,
    stopper: Arc<Stopper>,
    /// Client connections and upgraded tunnels still open.
    open: AtomicUsize,
    /// The grace period ended: what is still running is cut off.
    forced: AtomicBool,
    /// How often a worker hands its batch of records over.
    tick: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("upstream", &self.upstream)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn new(s: &Settings, capture: Arc<Capture>) -> Result<Shared, RecordError> {
        let mut h1 = http1::Builder::new();
        h1.auto_date_header(false)
            .header_read_timeout(None)
            .max_header_size(MAX_REQUEST_HEAD)
            .writev(false)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.auto_date_header(false)
            .max_header_list_size(MAX_REQUEST_HEAD as u32);
        let tls = match &s.tls {
            None => None,
            Some(t) => {
                let config = tapedeck_common::tls::server_config(
                    &t.identity,
                    &tapedeck_common::tls::ALPN_H2_HTTP1,
                )
                .map_err(|e| RecordError::Tls {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    message: e.to_string(),
                })?;
                Some(TlsAcceptor::from(Arc::new(config)))
            }
        };
        let limits = Arc::new(HeadLimits {
            header_timeout: s.header_timeout,
            // hyper's HTTP/1 server has no keep-alive timeout: the wrapper ends idle connections.
            idle_timeout: Some(s.idle_timeout),
            metrics: capture.metrics().clone(),
        });
        Ok(Shared {
            upstream: Upstream::new(s)?,
            capture,
            limits,
            h1,
            h2,
            tls,
            h2c: s.h2c,
            idle_timeout: s.idle_timeout,
            stopper: Arc::new(Stopper::default()),
            open: AtomicUsize::new(0),
            forced: AtomicBool::new(false),
            tick: (s.flush_interval / 10)
                .clamp(Duration::from_millis(5), Duration::from_millis(50)),
        })
    }

    /// Whether the grace period ended.
    pub(crate) fn forced(&self) -> bool {
        self.forced.load(Ordering::Relaxed)
    }

    /// Counts an open connection or tunnel until the guard drops.
    pub(crate) fn open_guard(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.clone())
    }
}

/// An open client connection or tunnel, for the graceful stop.
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the workers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    /// Stop accepting; connections finish.
    Graceful,
    /// Stop now.
    Force,
}

/// Runs the proxy until `SIGTERM` or `SIGINT` (see the module docs). Blocks the calling thread.
pub(crate) fn run(
    s: &Settings,
    capture: Arc<Capture>,
    readiness: Arc<Readiness>,
) -> Result<(), RecordError> {
    let start = |what: &'static str| move |source| RecordError::Start { what, source };
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(start("the control runtime"))?;
    // Signal handlers first: a SIGTERM right after the listener is up is a graceful stop.
    let (mut term, mut int) = {
        let _rt = control.enter();
        (
            signal(SignalKind::terminate()).map_err(start("the SIGTERM handler"))?,
            signal(SignalKind::interrupt()).map_err(start("the SIGINT handler"))?,
        )
    };
    let shared = Arc::new(Shared::new(s, capture)?);
    let listeners = {
        let _rt = control.enter();
        bind(s.listen, s.threads)?
    };
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    readiness.expect(listeners.len());
    let mut workers = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.into_iter().enumerate() {
        let (shared, readiness, stop) = (shared.clone(), readiness.clone(), stop_rx.clone());
        let w = std::thread::Builder::new()
            .name(format!("tapedeck-w{i}"))
            .spawn(move || worker(l, shared, readiness, stop))
            .map_err(start("a worker thread"))?;
        workers.push(w);
    }

    let fast = control.block_on(async {
        tokio::select! {
            _ = term.recv() => false,
            _ = int.recv() => true,
        }
    });
    readiness.stopping();
    if fast {
        info!("SIGINT: stopping now");
    } else {
        info!(
            grace_ms = s.grace_period.as_millis() as u64,
            "SIGTERM: finishing the exchanges in progress"
        );
        let _ = stop_tx.send(Stop::Graceful);
        shared.stopper.stop();
        control.block_on(async {
            let deadline = tokio::time::sleep(s.grace_period);
            tokio::pin!(deadline);
            loop {
                if shared.open.load(Ordering::Relaxed) == 0 {
                    break;
                }
                tokio::select! {
                    _ = &mut deadline => {
                        warn!(
                            open = shared.open.load(Ordering::Relaxed),
                            "grace period over; cutting off what is still open"
                        );
                        break;
                    }
                    _ = int.recv() => break,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        });
    }
    shared.forced.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(Stop::Force);
    for w in workers {
        if w.join().is_err() {
            error!("a worker thread panicked");
        }
    }
    Ok(())
}

/// `threads` listeners on `addr` with `SO_REUSEPORT` (`tapedeck_common::net`).
fn bind(addr: SocketAddr, threads: usize) -> Result<Vec<std::net::TcpListener>, RecordError> {
    tapedeck_common::net::reuseport_listeners(addr, threads)
        .map_err(tapedeck_common::net::BindError::on("proxy", addr))
        .map_err(RecordError::from)
}

/// One worker thread: its runtime, its accept loop, its connections.
fn worker(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    mut stop: watch::Receiver<Stop>,
) {
    let rt = match tapedeck_common::net::io_worker_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    rt.block_on(async {
        let mut tick = tapedeck_common::timer::Interval::new(shared.tick);
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                let up = Arc::new(WorkerUpstream::default());
                let _accepting = readiness.accepting();
                tapedeck_common::net::accept_until(
                    &listener,
                    async {
                        let _ = stop.changed().await;
                    },
                    Some(shared.tick),
                    || {
                        flush_local();
                        shared.upstream.sweep(&up);
                    },
                    |tcp, peer| {
                        tokio::spawn(serve(tcp, peer, shared.clone(), up.clone()));
                    },
                )
                .await;
            }
            Err(e) => error!(error = %e, "cannot use a listener"),
        }
        // Not accepting any more: the connections finish until the workers are told to stop.
        while *stop.borrow_and_update() != Stop::Force {
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                _ = tick.tick() => flush_local(),
            }
        }
    });
    // Dropping the runtime drops what still runs: those exchanges end as cut off.
    drop(rt);
    flush_local();
}

/// One client connection, from accept to close.
async fn serve(tcp: TcpStream, peer: SocketAddr, sh: Arc<Shared>, up: Arc<WorkerUpstream>) {
    let _open = sh.open_guard();
    let _ = tcp.set_nodelay(true);
    match &sh.tls {
        None => {
            let mut io = DeadlineIo::new(
                tcp,
                Arc::new(Phase::new(false)),
                Some(peer),
                sh.limits.clone(),
            );
            let h2 = if sh.h2c {
                match io.sniff_h2c().await {
                    Ok(h2) => h2,
                    Err(e) => {
                        debug!(error = %e, "client connection ended before its first request");
                        return;
                    }
                }
            } else {
                false
            };
            if h2 {
                serve_h2(io, peer, &sh, up).await;
            } else {
                serve_h1(io, peer, &sh, up).await;
            }
        }
        Some(acceptor) => {
            let tls = match tapedeck_common::timer::timeout(
                sh.limits.header_timeout,
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake with a client failed");
                    return;
                }
                Err(_) => {
                    sh.limits
                        .metrics
                        .client_timeouts_header
                        .fetch_add(1, Ordering::Relaxed);
                    debug!("TLS handshake not complete within header-timeout; closing");
                    return;
                }
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = DeadlineIo::new(tls, Arc::new(Phase::new(h2)), Some(peer), sh.limits.clone());
            if h2 {
                serve_h2(io, peer, &sh, up).await;
            } else {
                serve_h1(io, peer, &sh, up).await;
            }
        }
    }
}

async fn serve_h1<T>(io: DeadlineIo<T>, peer: SocketAddr, sh: &Arc<Shared>, up: Arc<WorkerUpstream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = ProxyService {
        shared: sh.clone(),
        conn: Arc::new(ConnCtx {
            peer,
            kind: ConnKind::H1(io.phase().clone()),
            timer: Default::default(),
            worker: up,
        }),
    };
    let conn = sh
        .h1
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = Drive::new(conn, sh.stopper.clone()).await {
        debug!(error = %e, "client connection ended");
    }
}

async fn serve_h2<T>(io: DeadlineIo<T>, peer: SocketAddr, sh: &Arc<Shared>, up: Arc<WorkerUpstream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let streams = Arc::new(Streams::new());
    let svc = ProxyService {
        shared: sh.clone(),
        conn: Arc::new(ConnCtx {
            peer,
            kind: ConnKind::H2(streams.clone()),
            timer: Default::default(),
            worker: up,
        }),
    };
    let conn = sh.h2.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = Drive::new(conn, sh.stopper.clone())
        .idle_timeout(streams, sh.idle_timeout)
        .await
    {
        debug!(error = %e, "HTTP/2 client connection ended");
    }
}
