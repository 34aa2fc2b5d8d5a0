//! Sending one prepared request to one target and turning what happened into a result
//! [`Exchange`]: pooled hyper clients (HTTP/1.1 keep-alive or h2c), a per-request timeout, and
//! failures classified into [`ErrorKind`]s instead of propagated.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::tls::Connector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tapedeck_storage::{ErrorKind, Exchange, Header, TRAILER_MARKER, flags};

use crate::config::{Protocol, Target};
use crate::rewrite::Prepared;

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

/// A target and its connection pool.
#[derive(Debug, Clone)]
pub(crate) struct TargetClient {
    pub(crate) target: Target,
    client: Client<Connector, Full<Bytes>>,
    /// `http://authority[/prefix]`, prepended to the recorded path and query.
    base: String,
    authority: String,
    scheme: &'static str,
}

impl TargetClient {
    pub(crate) fn new(
        target: Target,
        connect_timeout: Duration,
        pool_size: usize,
        tls: Option<&rustls::ClientConfig>,
    ) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        let tls = match target.protocol {
            Protocol::Https => tls.cloned(),
            Protocol::Http1 | Protocol::H2c => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let conn = Connector::new(conn, tls);
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(pool_size)
            .retry_canceled_requests(false);
        if target.protocol == Protocol::H2c {
            b.http2_only(true);
        }
        let client = b.build(conn);
        let base = format!("{scheme}://{}{}", target.authority, target.prefix);
        let authority = target.authority.to_string();
        Self {
            target,
            client,
            base,
            authority,
            scheme,
        }
    }

    /// Sends `p` (due at `scheduled`), waits for the whole response (or the timeout) and
    /// returns the result exchange. Never fails: errors are recorded in the exchange.
    pub(crate) async fn send(
        &self,
        p: &Prepared,
        scheduled: Instant,
        clock: Clock,
        timeout: Duration,
        max_body: usize,
    ) -> Exchange {
        let headers = p.headers.clone();
        let mut out = self
            .exchange(p, headers, scheduled, clock, timeout, max_body)
            .await;
        let o = &p.origin;
        out.source = o.source.clone();
        out.method = o.method.clone();
        out.path = o.path.clone();
        out.query = o.query.clone();
        out.req_headers = p.stored_headers.clone();
        out
    }

    /// [`send`](Self::send) for the last (or only) target of an origin: the request side of
    /// the result is moved out of `p` instead of cloned.
    pub(crate) async fn send_owned(
        &self,
        mut p: Box<Prepared>,
        scheduled: Instant,
        clock: Clock,
        timeout: Duration,
        max_body: usize,
    ) -> Exchange {
        let headers = std::mem::take(&mut p.headers);
        let mut out = self
            .exchange(&p, headers, scheduled, clock, timeout, max_body)
            .await;
        let Prepared {
            origin,
            stored_headers,
            ..
        } = *p;
        out.source = origin.source;
        out.method = origin.method;
        out.path = origin.path;
        out.query = origin.query;
        out.req_headers = stored_headers;
        out
    }

    /// Sends `p` with `headers` (its own or a copy) and fills everything but the request's
    /// strings and headers.
    async fn exchange(
        &self,
        p: &Prepared,
        headers: http::HeaderMap,
        scheduled: Instant,
        clock: Clock,
        timeout: Duration,
        max_body: usize,
    ) -> Exchange {
        let mut out = self.result_skeleton(p, clock.us(scheduled));
        let mut uri = String::with_capacity(self.base.len() + p.path_and_query.len());
        uri.push_str(&self.base);
        uri.push_str(&p.path_and_query);
        let uri = match Uri::try_from(uri) {
            Ok(u) => u,
            Err(e) => {
                out.started_at_us = clock.us(Instant::now());
                out.sent_at_us = Some(out.started_at_us);
                out.error_kind = Some(ErrorKind::Other);
                out.error = Some(format!("recorded path is not a valid URI: {e}"));
                return out;
            }
        };
        let mut req = Request::new(Full::new(p.body.clone()));
        *req.method_mut() = p.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;

        let sent = Instant::now();
        out.started_at_us = clock.us(sent);
        out.sent_at_us = Some(out.started_at_us);
        let mut st = Progress::default();
        let fut = fetch(&self.client, req, &mut st, max_body);
        let outcome = tokio::time::timeout_at((sent + timeout).into(), fut).await;
        let end = Instant::now();
        if let Some(t) = st.ttfb {
            out.ttfb_us = Some(micros_between(scheduled, t));
        }
        out.status = st.status;
        if st.status.is_some() {
            out.http_version = version_str(st.version).to_owned();
        }
        out.resp_headers = st.headers;
        if mask_sensitive(&mut out.resp_headers) {
            out.flags |= flags::REDACTED;
        }
        out.resp_body = join(st.chunks, st.kept);
        out.resp_body_size = st.size;
        out.resp_body_truncated = st.truncated;
        match outcome {
            Ok(Ok(())) => {
                let total = micros_between(scheduled, end);
                out.total_us = Some(total);
                out.duration_us = Some(total);
            }
            Ok(Err((kind, msg))) => {
                out.error_kind = Some(kind);
                out.error = Some(msg);
            }
            Err(_) => {
                out.error_kind = Some(ErrorKind::Timeout);
                out.error = Some(format!(
                    "no complete response within {} ms",
                    timeout.as_millis()
                ));
            }
        }
        out
    }

    fn result_skeleton(&self, p: &Prepared, scheduled_us: i64) -> Exchange {
        let o = &p.origin;
        Exchange {
            id: Exchange::new_id(),
            started_at_us: scheduled_us,
            scheme: self.scheme.to_owned(),
            authority: self.authority.clone(),
            http_version: version_str(match self.target.protocol {
                Protocol::Http1 | Protocol::Https => Version::HTTP_11,
                Protocol::H2c => Version::HTTP_2,
            })
            .to_owned(),
            req_body: p.body.clone(),
            req_body_size: o.req_body_size,
            req_body_truncated: o.req_body_truncated,
            flags: o.flags,
            origin_id: Some(o.id),
            target: Some(self.target.name.clone()),
            scheduled_at_us: Some(scheduled_us),
            ..Exchange::default()
        }
    }
}

/// What was received so far (kept when the timeout cuts the exchange short).
#[derive(Default)]
struct Progress {
    ttfb: Option<Instant>,
    status: Option<u16>,
    version: Version,
    headers: Vec<Header>,
    chunks: Vec<Bytes>,
    kept: usize,
    size: u64,
    truncated: bool,
}

async fn fetch(
    client: &Client<Connector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
    st: &mut Progress,
    max_body: usize,
) -> Result<(), (ErrorKind, String)> {
    let resp = client.request(req).await.map_err(|e| {
        let connect = e.is_connect();
        (classify(&e, connect), chain(&e))
    })?;
    st.ttfb = Some(Instant::now());
    st.status = Some(resp.status().as_u16());
    st.version = resp.version();
    let (parts, mut body) = resp.into_parts();
    st.headers = headers_of(&parts.headers);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (classify(&e, false), chain(&e)))?;
        match frame.into_data() {
            Ok(data) => {
                st.size += data.len() as u64;
                let room = max_body.saturating_sub(st.kept);
                if data.len() <= room {
                    st.kept += data.len();
                    st.chunks.push(data);
                } else {
                    if room > 0 {
                        st.kept += room;
                        st.chunks.push(data.slice(..room));
                    }
                    st.truncated = true;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    st.headers.push(Header::new(TRAILER_MARKER, Bytes::new()));
                    st.headers.extend(headers_of(&trailers));
                }
            }
        }
    }
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

fn headers_of(h: &http::HeaderMap) -> Vec<Header> {
    h.iter()
        .map(|(n, v)| Header {
            name: n.as_str().to_owned(),
            value: Bytes::copy_from_slice(v.as_bytes()),
        })
        .collect()
}

fn join(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(total);
            for c in chunks {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The error and its sources, joined with `: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// Classifies a client error by walking its source chain.
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
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                // Keep walking: an io error below is more precise.
                if err.source().is_none() {
                    return ErrorKind::Reset;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn classifies_io_errors() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "nope");
        assert_eq!(classify(&refused, true), ErrorKind::ConnectRefused);
        let to = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(classify(&to, true), ErrorKind::ConnectTimeout);
        assert_eq!(classify(&to, false), ErrorKind::Timeout);
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "rst");
        assert_eq!(classify(&reset, false), ErrorKind::Reset);
    }

    #[test]
    fn clock_is_monotonic_and_near_now() {
        let c = Clock::new();
        let a = c.us(Instant::now());
        let b = c.us(Instant::now() + Duration::from_millis(5));
        assert!(b - a >= 5000);
        assert!((a - tapedeck_storage::now_us()).abs() < 1_000_000);
    }

    #[test]
    fn joins_chunks() {
        assert_eq!(join(vec![], 0), Bytes::new());
        assert_eq!(
            join(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")], 3),
            Bytes::from_static(b"abc")
        );
    }
}
