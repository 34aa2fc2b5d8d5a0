//! Sending one prepared request to one target and turning what happened into a result
//! [`Exchange`]: a connection from the sender's slot or its [`Pool`], a per-request timeout
//! (connecting included), and failures classified into [`ErrorKind`]s instead of propagated.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use tapedeck_common::tape_http::{append_headers, version_str};
use tapedeck_storage::{ErrorKind, Exchange, Header, TRAILER_MARKER, flags};
use tokio::time::Sleep;

use crate::conn::{Body, Conn, Endpoint, Failure, Pool, SendError};
use crate::rewrite::{self, Prepared};

/// Maps [`Instant`]s to µs since the Unix epoch from one reading of both clocks, so that every
/// timestamp of a run is monotonic and consistent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
    base_us: i64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            base_us: tapedeck_storage::now_us(),
        }
    }

    /// µs since the epoch at `t`.
    pub(crate) fn us(&self, t: Instant) -> i64 {
        match t.checked_duration_since(self.base) {
            Some(d) => self.base_us + d.as_micros() as i64,
            None => self.base_us - self.base.duration_since(t).as_micros() as i64,
        }
    }
}

/// µs between two instants, 0 if `later` is earlier.
pub(crate) fn micros_between(earlier: Instant, later: Instant) -> i64 {
    later.saturating_duration_since(earlier).as_micros() as i64
}

/// Per-run settings of every send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendSettings {
    pub(crate) clock: Clock,
    /// Whole exchange, from the actual send (connecting included).
    pub(crate) timeout: Duration,
    /// Response body bytes kept per result.
    pub(crate) max_body: usize,
}

/// A sender's state for one target: its connection and, for a sender that lives for the whole
/// run, its timeout timer, moved to each request's deadline instead of created, registered and
/// dropped per request.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The connection, when the sender holds a live one.
    pub(crate) conn: Option<Conn>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Slot {
    /// A slot for one request (a timer of its own per request).
    pub(crate) fn one_shot() -> Self {
        Self::default()
    }

    /// A slot reused request after request, holding `conn` (call inside the runtime).
    pub(crate) fn long_lived(conn: Option<Conn>) -> Self {
        Self {
            conn,
            timer: Some(Box::pin(tokio::time::sleep_until(
                tokio::time::Instant::now(),
            ))),
        }
    }
}

/// `fut`'s output, or `None` when `timer` fires first. Both are pinned where they live: the
/// request future is large (hyper's send, the request), and moving it into a combinator costs
/// a copy per move, per request.
async fn within<F: Future>(mut fut: Pin<&mut F>, mut timer: Pin<&mut Sleep>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Sends `p` (due at `scheduled`) to `pool`'s target with `headers` (its own or a copy), waits
/// for the whole response (or the timeout) and returns the result exchange without its request
/// strings and headers (see [`fill_request`], [`fill_request_owned`]). Never fails: errors are
/// recorded in the exchange.
///
/// `slot` is the sender's state for this target: its connection is used when live (else one
/// comes from the pool) and held again afterwards when the exchange left it reusable.
pub(crate) async fn exchange(
    pool: &Pool,
    slot: &mut Slot,
    p: &Prepared,
    headers: http::HeaderMap,
    scheduled: Instant,
    s: &SendSettings,
) -> Exchange {
    let ep = &pool.ep;
    let sent = Instant::now();
    let sent_us = s.clock.us(sent);
    let mut out = skeleton(ep, p, s.clock.us(scheduled), sent_us);
    out.started_at_us = sent_us;
    out.sent_at_us = Some(sent_us);
    let mut st = Received::default();
    let deadline = tokio::time::Instant::from(sent + s.timeout);
    let outcome = {
        let fut = std::pin::pin!(fetch(pool, &mut slot.conn, p, headers, &mut st, s.max_body));
        match slot.timer.as_mut() {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                within(fut, timer.as_mut()).await
            }
            None => within(fut, std::pin::pin!(tokio::time::sleep_until(deadline))).await,
        }
    };
    let end = Instant::now();
    if let Some(t) = st.ttfb {
        out.ttfb_us = Some(micros_between(scheduled, t));
    }
    out.status = st.status;
    out.http_version = if st.status.is_some() {
        version_str(st.version)
    } else {
        version_str(ep.version())
    }
    .into();
    out.resp_headers = st.headers;
    if mask_sensitive(&mut out.resp_headers) {
        out.flags |= flags::REDACTED;
    }
    out.resp_body = st.body.freeze();
    out.resp_body_size = st.size;
    out.resp_body_truncated = st.truncated;
    match outcome {
        Some(Ok(())) => {
            let total = micros_between(scheduled, end);
            out.total_us = Some(total);
            out.duration_us = Some(total);
        }
        Some(Err(f)) => {
            out.error_kind = Some(f.kind);
            out.error = Some(f.message);
        }
        None => {
            out.error_kind = Some(ErrorKind::Timeout);
            out.error = Some(format!(
                "no complete response within {} ms",
                s.timeout.as_millis()
            ));
        }
    }
    out
}

/// Copies the request side of `p` into a result (for all but the last target of an origin).
pub(crate) fn fill_request(out: &mut Exchange, p: &Prepared) {
    let o = &p.origin;
    out.source = o.source.clone();
    out.method = o.method.clone();
    out.path = o.path.clone();
    out.query = o.query.clone();
    out.req_headers = p.stored_headers.clone();
}

/// Moves the request side of `p` into a result (the last or only target of an origin). Takes
/// the fields out of the box in place: moving the whole `Prepared` out first would copy it.
pub(crate) fn fill_request_owned(out: &mut Exchange, mut p: Box<Prepared>) {
    let o = &mut p.origin;
    out.source = std::mem::take(&mut o.source);
    out.method = std::mem::take(&mut o.method);
    out.path = std::mem::take(&mut o.path);
    out.query = o.query.take();
    out.req_headers = std::mem::take(&mut p.stored_headers);
}

fn skeleton(ep: &Endpoint, p: &Prepared, scheduled_us: i64, sent_us: i64) -> Exchange {
    let o = &p.origin;
    Exchange {
        // From the send time already read (not another clock reading per result).
        id: Exchange::new_id_at(sent_us),
        started_at_us: scheduled_us,
        scheme: ep.scheme.into(),
        authority: ep.authority.as_str().into(),
        req_body: p.body.clone(),
        req_body_size: o.req_body_size,
        req_body_truncated: o.req_body_truncated,
        flags: o.flags,
        origin_id: Some(o.id),
        target: Some(ep.target.name.clone()),
        scheduled_at_us: Some(scheduled_us),
        trace_id: o.trace_id.clone().or_else(|| p.trace.clone()),
        // Not `default()`: its four strings would be allocated only to be replaced (the
        // request side comes from `fill_request*`, the version once the response is in).
        ..Exchange::blank()
    }
}

/// The request for `p` on a connection that speaks HTTP/2 (`h2`) or HTTP/1.1.
fn request(
    ep: &Endpoint,
    p: &Prepared,
    mut headers: http::HeaderMap,
    h2: bool,
) -> Result<Request<Body>, Failure> {
    let uri = ep
        .uri(&p.path_and_query, h2)
        .map_err(|m| Failure::new(ErrorKind::Other, m))?;
    rewrite::for_target(&mut headers, ep, h2, p.trace.as_deref());
    let mut req = Request::new(Full::new(p.body.clone()));
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// What was received so far (kept when the timeout cuts the exchange short).
#[derive(Default)]
struct Received {
    ttfb: Option<Instant>,
    status: Option<u16>,
    version: Version,
    headers: Vec<Header>,
    /// The body bytes kept (up to `max_body`).
    body: BytesMut,
    size: u64,
    truncated: bool,
}

async fn fetch(
    pool: &Pool,
    slot: &mut Option<Conn>,
    p: &Prepared,
    headers: http::HeaderMap,
    st: &mut Received,
    max_body: usize,
) -> Result<(), Failure> {
    let mut conn = match slot.take() {
        // A live connection takes the request at once (hyper buffers one while it finishes
        // the previous exchange); one that closed meanwhile gives the request back, below.
        Some(c) if !c.is_closed() => c,
        _ => pool.checkout().await?,
    };
    let h2 = conn.is_h2();
    let req = request(&pool.ep, p, headers, h2)?;
    let resp = match conn.send(req).await {
        Ok(r) => r,
        Err(SendError::Failed(f)) => return Err(f),
        Err(SendError::Unsent(req)) => {
            // The peer closed the connection before the request left (an idle keep-alive
            // timeout, a `Connection: close`): once more, on another connection.
            conn = pool.checkout().await?;
            let again = if conn.is_h2() == h2 {
                conn.send(*req).await
            } else {
                let (parts, body) = req.into_parts();
                let req = request(&pool.ep, p, parts.headers, conn.is_h2())?;
                drop(body);
                conn.send(req).await
            };
            match again {
                Ok(r) => r,
                Err(SendError::Failed(f)) => return Err(f),
                Err(SendError::Unsent(_)) => {
                    return Err(Failure::new(
                        ErrorKind::Reset,
                        "the connection closed before the request was sent, twice",
                    ));
                }
            }
        }
    };
    st.ttfb = Some(Instant::now());
    st.status = Some(resp.status().as_u16());
    st.version = resp.version();
    let (parts, mut body) = resp.into_parts();
    st.headers.clear();
    append_headers(&mut st.headers, &parts.headers);
    // The kept bytes are copied into a buffer sized from `Content-Length`: hyper's chunks are
    // slices of the connection's read buffer (8 KiB and more), which a result holding them
    // would keep alive until the tape spooled it, and then free on the spool thread.
    let hint = hyper::body::Body::size_hint(&body);
    let expected = hint.exact().unwrap_or(hint.lower()).min(max_body as u64);
    st.body = BytesMut::with_capacity(expected as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::of(&e))?;
        match frame.into_data() {
            Ok(data) => {
                st.size += data.len() as u64;
                let keep = data.len().min(max_body.saturating_sub(st.body.len()));
                st.body.extend_from_slice(&data[..keep]);
                if keep < data.len() {
                    st.truncated = true;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    st.headers.push(Header::new(TRAILER_MARKER, Bytes::new()));
                    append_headers(&mut st.headers, &trailers);
                }
            }
        }
    }
    // Read to the end: the connection can carry the sender's next request.
    *slot = Some(conn);
    Ok(())
}

/// The placeholder written instead of a sensitive header's value (as the recorder's mask).
const MASK: &[u8] = b"[REDACTED]";

/// Masks the values of the default sensitive headers ([`tapedeck_storage::SENSITIVE_HEADERS`]),
/// trailers included, so a target's session cookies and tokens never reach the run tape; `true`
/// when any was masked.
fn mask_sensitive(headers: &mut [Header]) -> bool {
    let mut masked = false;
    for h in headers.iter_mut() {
        if tapedeck_storage::is_sensitive_header(&h.name) {
            h.value = Bytes::from_static(MASK);
            masked = true;
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::test_endpoint;

    /// A prepared `GET /` with no header rules.
    fn get_root() -> Prepared {
        crate::rewrite::prepare(
            Exchange {
                method: "GET".into(),
                path: "/".into(),
                ..Exchange::default()
            },
            &Default::default(),
            &[],
        )
    }

    /// Bodies are kept up to `max_body` (copied out of hyper's read buffer), whole or cut,
    /// `Content-Length` or chunked, with the true size recorded; the connection carries the
    /// next request.
    #[test]
    fn bodies_are_kept_up_to_max_body_over_one_connection() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answers: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: 1\r\n\r\n0123456789",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        ];
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut out = stream;
            for answer in answers {
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).expect("read") == 0 || line == "\r\n" {
                        break;
                    }
                }
                out.write_all(answer).expect("write");
            }
        });
        let ep = test_endpoint(
            &format!("t=http://127.0.0.1:{port}"),
            Duration::from_secs(5),
        );
        let pool = Pool::new(std::sync::Arc::new(ep), 1, 0);
        let p = get_root();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let got: Vec<Exchange> = rt.block_on(async {
            let mut slot = Slot::long_lived(None);
            let mut got = Vec::new();
            for max_body in [4, 100, 10] {
                let s = SendSettings {
                    clock: Clock::new(),
                    timeout: Duration::from_secs(5),
                    max_body,
                };
                let headers = p.headers.clone();
                got.push(exchange(&pool, &mut slot, &p, headers, Instant::now(), &s).await);
            }
            got
        });
        server.join().expect("server");
        let seen: Vec<_> = got
            .iter()
            .map(|e| {
                (
                    e.error.as_deref(),
                    e.status,
                    &e.resp_body[..],
                    e.resp_body_size,
                    e.resp_body_truncated,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (None, Some(200), &b"0123"[..], 10, true),
                (None, Some(200), &b"abcdefg"[..], 7, false),
                (None, Some(200), &b"0123456789"[..], 10, false),
            ]
        );
        assert!(
            got[0]
                .resp_headers
                .iter()
                .any(|h| &*h.name == "x-a" && &h.value[..] == b"1")
        );
    }

    /// The request future is moved a few times per request (into the timeout, into the task),
    /// so its size is paid per request: connection set-up (TLS and HTTP/2 handshakes, kilobytes)
    /// stays behind a box (`Endpoint::connect`).
    #[test]
    fn the_request_future_stays_small() {
        let ep = std::sync::Arc::new(test_endpoint(
            "t=https://127.0.0.1:9",
            Duration::from_secs(1),
        ));
        let pool = Pool::new(ep, 1, 0);
        let p = get_root();
        let s = SendSettings {
            clock: Clock::new(),
            timeout: Duration::from_secs(1),
            max_body: 1,
        };
        let mut slot = Slot::one_shot();
        let fut = exchange(
            &pool,
            &mut slot,
            &p,
            http::HeaderMap::new(),
            Instant::now(),
            &s,
        );
        let size = std::mem::size_of_val(&fut);
        eprintln!("exchange future: {size} bytes");
        assert!(size < 4096, "the request future grew to {size} bytes");
    }

    #[test]
    fn target_set_cookie_is_masked_in_results() {
        let mut h = vec![
            Header::new("Set-Cookie", "session=s3cret"),
            Header::new("x-auth-token", "t0ken"),
            Header::new("content-type", "application/json"),
        ];
        assert!(mask_sensitive(&mut h));
        assert_eq!(&h[0].value[..], MASK);
        assert_eq!(&h[1].value[..], MASK);
        assert_eq!(&h[2].value[..], b"application/json");
        let mut plain = vec![Header::new("etag", "1")];
        assert!(!mask_sensitive(&mut plain));
    }

    #[test]
    fn clock_is_monotonic_and_near_now() {
        let c = Clock::new();
        let a = c.us(Instant::now());
        let b = c.us(Instant::now() + Duration::from_millis(5));
        assert!(b - a >= 5000);
        assert!((a - tapedeck_storage::now_us()).abs() < 1_000_000);
    }
}
