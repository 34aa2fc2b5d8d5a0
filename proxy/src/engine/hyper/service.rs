//! The proxy service: one client request forwarded to the upstream and its response back,
//! with the capture layer called at each step (see `crate::capture` for the order).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tapedeck_storage::{ErrorKind, flags};
use tracing::debug;

use super::Shared;
use super::body::{ConnEnd, Flight, ReqBody, ReqState, RespBody};
use super::drive::Streams;
use super::headers;
use super::upstream::{TimerSlot, UpError, WorkerUpstream};
use crate::capture::{Failure, RequestHead, Timings};
use crate::engine::head_deadline::Phase;

/// What the service knows of the client connection it serves.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) peer: SocketAddr,
    pub(crate) kind: ConnKind,
    /// The timer of the wait for each response head (HTTP/1.1 clients: one at a time).
    pub(crate) timer: TimerSlot,
    /// The worker thread's upstream connections.
    pub(crate) worker: Arc<WorkerUpstream>,
}

/// HTTP/1.1 (with its deadline phase) or HTTP/2 (with its open streams).
#[derive(Debug)]
pub(crate) enum ConnKind {
    H1(Arc<Phase>),
    H2(Arc<Streams>),
}

/// The client broke its request (its body failed or paused too long): no response, the
/// connection closes.
#[derive(Debug)]
pub(crate) struct ClientFailed;

impl std::fmt::Display for ClientFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client's request failed")
    }
}

impl std::error::Error for ClientFailed {}

/// hyper's service for one client connection. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ProxyService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: Arc<ConnCtx>,
}

type Answer = Result<Response<RespBody>, ClientFailed>;

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<RespBody>;
    type Error = ClientFailed;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(handle(self.shared.clone(), self.conn.clone(), req))
    }
}

async fn handle(sh: Arc<Shared>, conn: Arc<ConnCtx>, mut req: Request<Incoming>) -> Answer {
    let mut t = Timings::monotonic();
    let end = match &conn.kind {
        ConnKind::H1(phase) => {
            phase.busy();
            ConnEnd::H1(phase.clone())
        }
        ConnKind::H2(streams) => ConnEnd::H2(streams.clone()),
    };
    let capture = &sh.capture;
    let record = capture.decide(req.method(), req.uri().path(), req.headers());
    let ex = record.then(|| {
        t.started_at_us = tapedeck_storage::now_us();
        capture.begin(
            &RequestHead {
                method: req.method(),
                uri: req.uri(),
                version: req.version(),
                headers: req.headers(),
                client: Some(conn.peer),
            },
            t.started_at_us,
        )
    });
    // Boxed: hyper moves the response body (which takes the flight) several times.
    let mut flight = Box::new(Flight::new(sh.clone(), ex, t, Some(end)));
    let version = req.version();
    let h2_client = version == Version::HTTP_2;
    let hop = headers::scan(req.headers());
    let upgrade =
        !h2_client && hop.wants_upgrade(req.headers()) && sh.upstream.may_upgrade(&conn.worker);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    hop.strip(req.headers_mut(), upgrade);
    let state = (!req.body().is_end_stream()).then(|| {
        Arc::new(ReqState::new(
            flight.recorded(),
            capture.max_body(),
            sh.limits.header_timeout,
        ))
    });
    flight.req = state.clone();
    let req = req.map(|body| match state {
        Some(state) => ReqBody::new(body, state, sh.clone()),
        None => ReqBody::plain(body),
    });
    let timer = match conn.kind {
        ConnKind::H1(_) => Some(&conn.timer),
        ConnKind::H2(_) => None,
    };
    let sent = sh
        .upstream
        .send(
            &conn.worker,
            req,
            flight.req.as_deref(),
            timer,
            flight.t.start,
        )
        .await;
    let (mut resp, lease) = match sent {
        Ok(sent) => sent,
        Err(e) => return failed(&sh, &mut flight, e, h2_client),
    };
    let status = resp.status();
    let metrics = capture.metrics();
    metrics.observe_upstream_latency(flight.t.response_head());
    if flight.recorded() {
        flight.resp.head(status, resp.headers());
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // A 101 nobody asked for cannot be forwarded.
            let e = Failure {
                kind: ErrorKind::Protocol,
                message: "the upstream switched protocols without being asked (client got 502)"
                    .to_owned(),
            };
            metrics.upstream_error(e.kind);
            metrics.status(502);
            flight.finish(Some(e));
            return Ok(error_response(502, h2_client));
        };
        // The upstream connection is the tunnel's now: never parked.
        drop(lease);
        flight.resp.flags |= flags::UPGRADE;
        metrics.upgrades.fetch_add(1, Ordering::Relaxed);
        metrics.status(101);
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        headers::scan(&parts.headers).strip(&mut parts.headers, true);
        parts.version = version;
        let guard = sh.open_guard();
        tokio::spawn(async move {
            let _guard = guard;
            let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
            match (client, upstream) {
                (Ok(c), Ok(u)) => {
                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        debug!(error = %e, "upgraded connection ended");
                    }
                    flight.finish(None);
                }
                (Err(e), _) | (_, Err(e)) => flight.finish(Some(Failure {
                    kind: ErrorKind::Other,
                    message: format!("upgrade failed: {e}"),
                })),
            }
        });
        return Ok(Response::from_parts(parts, RespBody::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    let hop = headers::scan(&parts.headers);
    if h2_client {
        hop.strip_for_h2(&mut parts.headers);
    } else {
        hop.strip(&mut parts.headers, false);
    }
    parts.version = version;
    metrics.status(status.as_u16());
    flight.lease = lease;
    Ok(Response::from_parts(
        parts,
        RespBody::upstream(body, flight, sh.upstream.timeout()),
    ))
}

/// No response head came from the upstream: the client gets 502 or 504 and the exchange is
/// recorded as an error — unless the client itself broke its request.
fn failed(sh: &Shared, flight: &mut Flight, e: UpError, h2_client: bool) -> Answer {
    if let Some(client) = flight.req.as_ref().and_then(|r| r.client_failure()) {
        flight.finish(Some(client));
        return Err(ClientFailed);
    }
    let (kind, status) = (e.kind(), e.status());
    let metrics = sh.capture.metrics();
    metrics.upstream_error(kind);
    metrics.status(status);
    debug!(kind = %kind, error = %e, "exchange failed");
    flight.finish(Some(Failure {
        kind,
        message: format!("{e} (client got {status})"),
    }));
    Ok(error_response(status, h2_client))
}

/// A response made by the proxy: the status alone (and, on HTTP/1.1, the end of the
/// connection, as after any failed exchange).
fn error_response(status: u16, h2_client: bool) -> Response<RespBody> {
    let mut r = Response::new(RespBody::empty());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if !h2_client {
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    r
}
