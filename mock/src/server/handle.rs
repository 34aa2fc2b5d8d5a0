//! The request path: one request matched against the index and answered (a recorded answer, a
//! fault, a miss, or the target's own answer when passing through), and the call recorded.

use super::*;
use crate::index::HOP_BY_HOP;
use tapedeck_common::tape_http::{append_headers, version_str};

/// The per-connection service.
#[derive(Debug, Clone)]
pub(super) struct Svc {
    pub(super) sh: Arc<Shared>,
    pub(super) w: Arc<Worker>,
    pub(super) conn: Arc<Conn>,
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
        append_headers(&mut req_headers, &self.parts.headers);
        let mut resp_headers = Vec::new();
        let (status, resp_body) = match answer {
            Some((status, h, trailers, body)) => {
                append_headers(&mut resp_headers, h);
                if let Some(t) = trailers {
                    resp_headers.push(Header::new(TRAILER_MARKER, Bytes::new()));
                    append_headers(&mut resp_headers, t);
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
            source: sh.name.as_str().into(),
            started_at_us: self.started_at_us,
            ttfb_us: status.map(|_| elapsed),
            duration_us: status.map(|_| elapsed),
            total_us: Some(elapsed),
            client_addr: Some(conn.peer.to_string().into()),
            method: self.parts.method.as_str().into(),
            scheme: "http".into(),
            authority: authority.into(),
            path: self.parts.uri.path().into(),
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
        // The host is set below.
        if !HOP_BY_HOP.contains(&n.as_str()) && n != HOST {
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
