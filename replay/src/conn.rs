//! Connections to targets, owned by the senders instead of looked up in a shared pool per
//! request.
//!
//! - [`Endpoint`]: one per target, shared: how to connect (TCP with `TCP_NODELAY` and a connect
//!   timeout, then TLS with ALPN for `https://`) and what each request needs from the target
//!   (scheme, authority, path prefix, `Host`).
//! - [`Conn`]: one connection, HTTP/1.1 ([`http1::SendRequest`]) or HTTP/2
//!   ([`http2::SendRequest`]). Its I/O runs in a task spawned on the runtime of the worker
//!   thread that opened it, so a connection never wakes another thread.
//! - [`Pool`]: one per (worker thread, target). HTTP/1.1 connections carry one request at a
//!   time: a closed-loop sender keeps its own for the whole run, an open-loop origin takes an
//!   idle one and gives it back. HTTP/2 connections are shared: the pool holds a few and hands
//!   out clones, so every request in flight is a stream on one of them. For open loop the pool
//!   is filled before the clock starts and a keeper task tops it up off the send path, so a
//!   send does not wait for a handshake unless a burst outgrows the spares.
//!
//! Invariants: a connection is reused only after its previous response was read to the end (a
//! request cut by its timeout drops its connection); a request that hyper reports as never
//! written (the peer closed an idle connection) is retried once on another connection, any
//! other failure is the request's result.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tapedeck_storage::ErrorKind;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use crate::config::{Protocol, Target};

/// Request bodies: the recorded body, whole.
pub(crate) type Body = Full<Bytes>;

/// Why an exchange got no (complete) response: the kind stored in `error_kind` and the message
/// stored in `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A failure of an established connection or of a request on it.
    pub(crate) fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(classify(e, false), chain(e))
    }
}

/// What ALPN (or the URL) decided a target's connections speak.
const PROTO_UNKNOWN: u8 = 0;
const PROTO_H1: u8 = 1;
const PROTO_H2: u8 = 2;

/// A target: how to reach it and what its requests carry. Shared by every worker.
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    /// `http` or `https`, as written to the result's `scheme`.
    pub(crate) scheme: &'static str,
    /// The target's authority as text (the result's `authority`).
    pub(crate) authority: String,
    /// `host:port` to connect to (the scheme's default port made explicit).
    addr: String,
    /// `Host` for HTTP/1.1 requests: the target's authority.
    pub(crate) host: HeaderValue,
    scheme_uri: Scheme,
    authority_uri: Authority,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    proto: AtomicU8,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.target.name)
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("h2", &self.is_h2())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// `tls` is used for `https://` targets only. Fails when the host cannot be a TLS server
    /// name (validated settings make that impossible, but outside data never panics).
    pub(crate) fn new(
        target: Target,
        connect_timeout: Duration,
        tls: Option<&rustls::ClientConfig>,
    ) -> Result<Self, String> {
        let tls = match (target.protocol, tls) {
            (Protocol::Https, Some(cfg)) => {
                let host = target.authority.host().trim_matches(['[', ']']).to_owned();
                let name = ServerName::try_from(host)
                    .map_err(|e| format!("target `{}`: TLS server name: {e}", target.name))?;
                Some((TlsConnector::from(Arc::new(cfg.clone())), name))
            }
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = HeaderValue::from_str(target.authority.as_str())
            .map_err(|e| format!("target `{}`: Host header: {e}", target.name))?;
        let proto = match target.protocol {
            Protocol::Http1 => PROTO_H1,
            Protocol::H2c => PROTO_H2,
            Protocol::Https => PROTO_UNKNOWN,
        };
        let port = target
            .authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let addr = format!("{}:{port}", target.authority.host());
        Ok(Self {
            scheme,
            addr,
            authority: target.authority.to_string(),
            host,
            scheme_uri: if tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority_uri: target.authority.clone(),
            tls,
            connect_timeout,
            proto: AtomicU8::new(proto),
            target,
        })
    }

    /// Whether this target's connections are known to speak HTTP/2 (h2c, or ALPN picked h2).
    pub(crate) fn is_h2(&self) -> bool {
        self.proto.load(Ordering::Relaxed) == PROTO_H2
    }

    /// The HTTP version results are labelled with before a response says otherwise.
    pub(crate) fn version(&self) -> http::Version {
        if self.is_h2() {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        }
    }

    /// The request URI for `path_and_query` on this target: origin-form for HTTP/1.1
    /// (`/prefix/path?query`), absolute for HTTP/2 (hyper sends `:scheme` and `:authority`
    /// from it).
    pub(crate) fn uri(&self, path_and_query: &PathAndQuery, h2: bool) -> Result<Uri, String> {
        let pq = if self.target.prefix.is_empty() {
            path_and_query.clone()
        } else {
            let joined = format!("{}{}", self.target.prefix, path_and_query.as_str());
            PathAndQuery::try_from(joined).map_err(|e| format!("path with prefix: {e}"))?
        };
        let mut parts = http::uri::Parts::default();
        if h2 {
            parts.scheme = Some(self.scheme_uri.clone());
            parts.authority = Some(self.authority_uri.clone());
        }
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).map_err(|e| format!("recorded path is not a valid URI: {e}"))
    }

    /// Opens a connection: TCP (with the connect timeout), TLS for `https://`, then the
    /// HTTP/1.1 or HTTP/2 handshake; the connection's I/O task is spawned on the current
    /// runtime.
    ///
    /// Boxed: the TLS and HTTP/2 handshake futures are kilobytes, and every request future
    /// that might connect would otherwise carry (and move) them on every request.
    pub(crate) fn connect(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Conn, Failure>> + Send + '_>> {
        Box::pin(self.open())
    }

    async fn open(&self) -> Result<Conn, Failure> {
        let addr = self.addr.as_str();
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return Err(Failure::new(
                    classify(&e, true),
                    format!("connecting to {addr}: {e}"),
                ));
            }
            Err(_) => {
                return Err(Failure::new(
                    ErrorKind::ConnectTimeout,
                    format!(
                        "connecting to {addr}: no connection within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                ));
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some((tls, name)) = &self.tls else {
            return self.handshake(TokioIo::new(tcp), self.is_h2()).await;
        };
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tls.connect(name.clone(), tcp),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Failure::new(
                    classify(&e, true),
                    format!("TLS handshake with {addr}: {}", chain(&e)),
                ));
            }
            Err(_) => {
                return Err(Failure::new(
                    ErrorKind::ConnectTimeout,
                    format!(
                        "TLS handshake with {addr}: not done within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                ));
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        self.proto
            .store(if h2 { PROTO_H2 } else { PROTO_H1 }, Ordering::Relaxed);
        self.handshake(TokioIo::new(stream), h2).await
    }

    async fn handshake<T>(&self, io: TokioIo<T>, h2: bool) -> Result<Conn, Failure>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let fail = |e: hyper::Error| {
            Failure::new(
                classify(&e, true),
                format!("HTTP handshake with {}: {}", self.authority, chain(&e)),
            )
        };
        if h2 {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(fail)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            });
            Ok(Conn::H2(send))
        } else {
            let (send, conn) = http1::Builder::new().handshake(io).await.map_err(fail)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTP/1.1 connection ended");
                }
            });
            Ok(Conn::H1(send))
        }
    }
}

/// One connection to a target.
#[derive(Debug)]
pub(crate) enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// What [`Conn::send`] gives back when the request never left: the request, to send elsewhere.
pub(crate) enum SendError {
    /// Not written; the connection is unusable. Retry on another one.
    Unsent(Box<Request<Body>>),
    /// Failed after (or while) being written.
    Failed(Failure),
}

impl Conn {
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self, Conn::H2(_))
    }

    /// Whether the connection has closed (a cheap check, no waiting).
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    /// Sends `req` and waits for the response head.
    pub(crate) async fn send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let res = match self {
            Conn::H1(s) => s.try_send_request(req).await,
            Conn::H2(s) => s.try_send_request(req).await,
        };
        res.map_err(|mut e| match e.take_message() {
            Some(req) => SendError::Unsent(Box::new(req)),
            None => SendError::Failed(Failure::of(e.error())),
        })
    }
}

/// The connections of one worker thread to one target.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) ep: Arc<Endpoint>,
    /// Idle HTTP/1.1 connections (open loop).
    idle: Mutex<Vec<Conn>>,
    /// Shared HTTP/2 connections and the next one to hand out.
    h2: Mutex<(Vec<Option<http2::SendRequest<Body>>>, usize)>,
    /// Wakes the keeper when the idle connections run low.
    low: Notify,
    /// Idle connections the keeper keeps ready (0: no keeper).
    spare: usize,
}

impl Pool {
    /// `h2_conns`: HTTP/2 connections this worker opens to the target; `spare`: idle HTTP/1.1
    /// connections kept ready for open-loop sends (0 for closed loop).
    pub(crate) fn new(ep: Arc<Endpoint>, h2_conns: usize, spare: usize) -> Self {
        Self {
            ep,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(((0..h2_conns.max(1)).map(|_| None).collect(), 0)),
            low: Notify::new(),
            spare,
        }
    }

    /// A connection for one request: a shared HTTP/2 one, an idle HTTP/1.1 one, or a new one.
    pub(crate) async fn checkout(&self) -> Result<Conn, Failure> {
        if self.ep.is_h2() {
            return self.h2_conn().await;
        }
        loop {
            let popped = {
                let mut idle = lock(&self.idle);
                let c = idle.pop();
                if self.spare > 0 && idle.len() < self.spare / 2 {
                    self.low.notify_one();
                }
                c
            };
            match popped {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        let conn = self.ep.connect().await?;
        if conn.is_h2() {
            // ALPN picked h2 on this first connection: share it from now on.
            return Ok(self.share_h2(conn));
        }
        Ok(conn)
    }

    /// Gives back a connection whose last response was read to the end.
    pub(crate) fn checkin(&self, conn: Conn) {
        if conn.is_h2() || conn.is_closed() {
            return; // HTTP/2 connections stay shared in `h2`; clones need no return.
        }
        lock(&self.idle).push(conn);
    }

    async fn h2_conn(&self) -> Result<Conn, Failure> {
        let slot = {
            let mut g = lock(&self.h2);
            let (conns, next) = &mut *g;
            let i = *next % conns.len();
            *next = next.wrapping_add(1);
            match &conns[i] {
                Some(s) if !s.is_closed() => return Ok(Conn::H2(s.clone())),
                _ => i,
            }
        };
        let conn = self.ep.connect().await?;
        let Conn::H2(s) = conn else {
            // ALPN changed its mind (a different server behind the name): use it as is.
            return Ok(conn);
        };
        let mut g = lock(&self.h2);
        match &g.0[slot] {
            // Another sender reconnected this slot meanwhile: share theirs, drop ours.
            Some(other) if !other.is_closed() => Ok(Conn::H2(other.clone())),
            _ => {
                g.0[slot] = Some(s.clone());
                Ok(Conn::H2(s))
            }
        }
    }

    fn share_h2(&self, conn: Conn) -> Conn {
        let Conn::H2(s) = conn else { return conn };
        let mut g = lock(&self.h2);
        let (conns, _) = &mut *g;
        if let Some(free) = conns
            .iter_mut()
            .find(|c| c.as_ref().is_none_or(|c| c.is_closed()))
        {
            *free = Some(s.clone());
        }
        Conn::H2(s)
    }

    /// Opens connections before the clock starts: every HTTP/2 connection of this worker, or
    /// `n` idle HTTP/1.1 ones (opened concurrently). Failures are left for the sends to meet
    /// (and record) in their turn.
    pub(crate) async fn warm(&self, n: usize) {
        if self.ep.is_h2() {
            let n = lock(&self.h2).0.len();
            for _ in 0..n {
                if self.h2_conn().await.is_err() {
                    return;
                }
            }
            return;
        }
        let opened = futures_util::future::join_all((0..n).map(|_| self.ep.connect())).await;
        for c in opened.into_iter().flatten() {
            if c.is_h2() {
                self.share_h2(c);
            } else {
                lock(&self.idle).push(c);
            }
        }
    }

    /// Keeps `spare` idle HTTP/1.1 connections ready while the run lasts (open loop): woken
    /// when a checkout leaves fewer than half, it opens connections one at a time, off the
    /// send path. After a failure it waits before trying again, so a target that is down is
    /// not flooded with connection attempts (the sends record the failures).
    pub(crate) async fn keep_spares(self: Arc<Self>) {
        if self.spare == 0 {
            return;
        }
        loop {
            self.low.notified().await;
            while !self.ep.is_h2() && lock(&self.idle).len() < self.spare {
                match self.ep.connect().await {
                    Ok(c) if !c.is_h2() => lock(&self.idle).push(c),
                    Ok(c) => {
                        self.share_h2(c);
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error and its sources, joined with `: `.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Classifies an error by walking its source chain; `connect` when it happened while opening
/// the connection.
pub(crate) fn classify(e: &(dyn std::error::Error + 'static), connect: bool) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return ErrorKind::Tls;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return ErrorKind::Tls;
            }
            match io.kind() {
                K::ConnectionRefused => return ErrorKind::ConnectRefused,
                K::TimedOut if connect => return ErrorKind::ConnectTimeout,
                K::TimedOut => return ErrorKind::Timeout,
                K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::NotConnected => return ErrorKind::Reset,
                K::InvalidData => return ErrorKind::Protocol,
                _ => {}
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return ErrorKind::Timeout;
            }
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return ErrorKind::Protocol;
            }
            if (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
                && err.source().is_none()
            {
                // An io error below would be more precise; there is none.
                return ErrorKind::Reset;
            }
        }
        cur = err.source();
    }
    let msg = chain(e).to_ascii_lowercase();
    if msg.contains("refused") {
        ErrorKind::ConnectRefused
    } else if msg.contains("timed out") || msg.contains("timeout") {
        if connect {
            ErrorKind::ConnectTimeout
        } else {
            ErrorKind::Timeout
        }
    } else if msg.contains("reset") || msg.contains("closed") || msg.contains("incomplete") {
        ErrorKind::Reset
    } else if msg.contains("protocol") || msg.contains("parse") || msg.contains("invalid") {
        ErrorKind::Protocol
    } else if msg.contains("tls") || msg.contains("certificate") {
        ErrorKind::Tls
    } else {
        ErrorKind::Other
    }
}

/// Tests: the endpoint of one `--target NAME=URL`, validated as `replay` would.
#[cfg(test)]
pub(crate) fn test_endpoint(target: &str, connect_timeout: Duration) -> Endpoint {
    let cfg = crate::config::ReplayOptions {
        tape: vec!["t".into()],
        out: Some("o".into()),
        targets: vec![target.to_owned()],
        ..Default::default()
    }
    .validate()
    .expect("valid");
    Endpoint::new(cfg.targets()[0].clone(), connect_timeout, cfg.tls.as_ref()).expect("endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_io_errors() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "nope");
        assert_eq!(classify(&refused, true), ErrorKind::ConnectRefused);
        let to = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(classify(&to, true), ErrorKind::ConnectTimeout);
        assert_eq!(classify(&to, false), ErrorKind::Timeout);
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "rst");
        assert_eq!(classify(&reset, false), ErrorKind::Reset);
    }

    fn endpoint(url: &str) -> Endpoint {
        test_endpoint(&format!("t={url}"), Duration::from_secs(1))
    }

    #[test]
    fn uris_are_origin_form_for_http1_and_absolute_for_h2() {
        let pq = PathAndQuery::from_static("/a/b?x=1");
        let ep = endpoint("http://127.0.0.1:9/base/");
        assert_eq!(ep.uri(&pq, false).expect("uri"), "/base/a/b?x=1");
        assert_eq!(ep.host, "127.0.0.1:9");
        assert!(!ep.is_h2());
        let ep = endpoint("h2c://127.0.0.1:9");
        assert!(ep.is_h2());
        assert_eq!(
            ep.uri(&pq, true).expect("uri").to_string(),
            "http://127.0.0.1:9/a/b?x=1"
        );
        let ep = endpoint("https://localhost:8443");
        assert_eq!(ep.scheme, "https");
        assert_eq!(
            ep.uri(&pq, true).expect("uri").to_string(),
            "https://localhost:8443/a/b?x=1"
        );
    }

    #[test]
    fn a_refused_connection_is_classified() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let ep = endpoint(&format!("http://127.0.0.1:{port}"));
        let e = rt.block_on(ep.connect()).expect_err("nothing listens");
        assert_eq!(e.kind, ErrorKind::ConnectRefused, "{e:?}");
    }
}
