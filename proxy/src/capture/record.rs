//! Record building: the request and response of an exchange, from `http` types, as a tape
//! [`Exchange`]. Header maps are copied once into one buffer per map; ids are UUIDv7 from the
//! thread-local RNG; client addresses are formatted without the formatting machinery.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode, Uri, Version};
use tapedeck_common::tape_http::{append_headers, version_str};
use tapedeck_storage::{CompactString, ErrorKind, Exchange, Header, TRAILER_MARKER, flags, now_us};

use super::BodyCapture;

/// The request head of an exchange, as either engine sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    /// The method.
    pub(crate) method: &'a Method,
    /// The request target (origin-form for HTTP/1.1, absolute for HTTP/2).
    pub(crate) uri: &'a Uri,
    /// The protocol version the client spoke.
    pub(crate) version: Version,
    /// The headers as the client sent them.
    pub(crate) headers: &'a HeaderMap,
    /// The client's address.
    pub(crate) client: Option<SocketAddr>,
}

/// When an exchange started and when its upstream answered, for its timing columns and the
/// upstream latency histogram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    /// When the request head was complete (monotonic).
    pub(crate) start: Instant,
    /// The same moment as µs since the epoch (the `started_at_us` column).
    pub(crate) started_at_us: i64,
    /// Time to the upstream's response head.
    pub(crate) ttfb: Option<Duration>,
    /// Time to the end of the upstream's response (body and trailers).
    pub(crate) upstream_done: Option<Duration>,
}

impl Timings {
    /// Timings of an exchange whose request head is complete now.
    pub(crate) fn now() -> Self {
        Timings {
            start: Instant::now(),
            started_at_us: now_us(),
            ttfb: None,
            upstream_done: None,
        }
    }

    /// Timings of an exchange whose request head is complete now, without the wall clock
    /// (`started_at_us` is 0): for exchanges that are not recorded, which never need it.
    pub(crate) fn monotonic() -> Self {
        Timings {
            start: Instant::now(),
            started_at_us: 0,
            ttfb: None,
            upstream_done: None,
        }
    }

    /// Notes that the upstream's response head arrived; returns the time it took.
    pub(crate) fn response_head(&mut self) -> Duration {
        let d = self.start.elapsed();
        self.ttfb = Some(d);
        d
    }

    /// Notes that the upstream finished its response.
    pub(crate) fn upstream_done(&mut self) {
        self.upstream_done = Some(self.start.elapsed());
    }
}

/// What is kept of a response, from the upstream side (before the engine changes anything):
/// status, headers (then a [`TRAILER_MARKER`] and the trailers), the body up to the cap, flags.
#[derive(Debug, Default)]
pub(crate) struct ResponseCapture {
    /// The upstream's status.
    pub(crate) status: Option<u16>,
    /// The tape's response header list; values are slices of one buffer per map.
    pub(crate) headers: Vec<Header>,
    /// The body, up to the cap.
    pub(crate) body: BodyCapture,
    /// [`flags`] learnt from the response (`GRPC`, `UPGRADE`).
    pub(crate) flags: u32,
}

impl ResponseCapture {
    /// The upstream's response head. Assigned, not appended to, should an engine call it twice.
    pub(crate) fn head(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.status = Some(status.as_u16());
        self.headers.clear();
        append_headers(&mut self.headers, headers);
        if headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
        {
            self.flags |= flags::GRPC;
        }
    }

    /// The upstream's trailers, after a [`TRAILER_MARKER`].
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        self.headers
            .push(Header::new(TRAILER_MARKER, bytes::Bytes::new()));
        append_headers(&mut self.headers, trailers);
    }
}

/// Why an exchange has no complete response.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The tape's error kind.
    pub(crate) kind: ErrorKind,
    /// What happened, for people (names the peer and, if one was sent, the status the client got).
    pub(crate) message: String,
}

/// The request fields of a record: everything but bodies, response and timings.
pub(crate) fn request_record(
    head: &RequestHead<'_>,
    started_at_us: i64,
    scheme: &'static str,
    source: &CompactString,
) -> Exchange {
    let uri = head.uri;
    let authority = uri
        .authority()
        .map(|a| CompactString::new(a.as_str()))
        .or_else(|| {
            head.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(CompactString::new)
        })
        .unwrap_or_default();
    let mut req_headers = Vec::new();
    append_headers(&mut req_headers, head.headers);
    Exchange {
        id: fast_v7(started_at_us),
        source: source.clone(),
        started_at_us,
        client_addr: head.client.as_ref().map(addr_string),
        method: CompactString::new(head.method.as_str()),
        scheme: CompactString::const_new(scheme),
        authority,
        path: CompactString::new(uri.path()),
        query: uri.query().map(str::to_owned),
        http_version: CompactString::const_new(version_str(head.version)),
        req_headers,
        ..Exchange::blank()
    }
}

/// Fills the response, body, timing and error fields of `ex`.
pub(crate) fn complete_record(
    ex: &mut Exchange,
    mut req_body: BodyCapture,
    mut resp: ResponseCapture,
    t: &Timings,
    failure: Option<Failure>,
) {
    let upgraded = resp.flags & flags::UPGRADE != 0;
    ex.ttfb_us = t.ttfb.map(micros);
    // A response without a body (HEAD, 204, 304) is done when its headers are.
    ex.duration_us = t
        .upstream_done
        .or(t.ttfb.filter(|_| upgraded || failure.is_none()))
        .map(micros);
    ex.total_us = Some(micros(t.start.elapsed()));
    ex.req_body = req_body.take();
    ex.req_body_size = req_body.size();
    ex.req_body_truncated = req_body.truncated();
    ex.status = resp.status;
    ex.resp_headers = std::mem::take(&mut resp.headers);
    ex.resp_body = resp.body.take();
    ex.resp_body_size = resp.body.size();
    ex.resp_body_truncated = resp.body.truncated();
    ex.flags |= resp.flags;
    if let Some(f) = failure {
        ex.error_kind = Some(f.kind);
        ex.error = Some(f.message);
    }
}

/// `ip:port`, as `Display` writes it, without the formatting machinery for IPv4 (`to_string`
/// measured ~1.9k instructions per exchange, a fifth of the `logging` hook; pushing `char`s one
/// at a time still ~600): the digits go into a stack buffer, copied into the string once.
pub(crate) fn addr_string(a: &SocketAddr) -> CompactString {
    /// Writes `n` in decimal at `buf[at..]`; returns the new end.
    fn put_num(buf: &mut [u8; 21], mut at: usize, n: u16) -> usize {
        let mut digits = [0u8; 5];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            buf[at] = d;
            at += 1;
        }
        at
    }
    match a {
        SocketAddr::V4(v4) => {
            // "255.255.255.255:65535" is 21 bytes.
            let mut buf = [0u8; 21];
            let mut at = 0;
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    buf[at] = b'.';
                    at += 1;
                }
                at = put_num(&mut buf, at, u16::from(*octet));
            }
            buf[at] = b':';
            at = put_num(&mut buf, at + 1, v4.port());
            // ASCII digits, dots and a colon: always UTF-8.
            std::str::from_utf8(&buf[..at])
                .map_or_else(|_| CompactString::from(a.to_string()), CompactString::new)
        }
        SocketAddr::V6(_) => CompactString::from(a.to_string()),
    }
}

/// A UUIDv7 for an exchange that started at `started_at_us`, with random bits from the
/// thread-local RNG (the `uuid` crate's default asks the OS for randomness: one syscall per id).
pub(crate) fn fast_v7(started_at_us: i64) -> uuid::Uuid {
    let millis = u64::try_from(started_at_us / 1000).unwrap_or(0);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn client_addresses_print_as_display_does(ip in proptest::prelude::any::<[u8; 4]>(), port in proptest::prelude::any::<u16>()) {
            let a = std::net::SocketAddr::from((ip, port));
            proptest::prop_assert_eq!(addr_string(&a), a.to_string());
        }
    }

    #[test]
    fn client_address_edges() {
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "127.0.0.1:8080",
            "[::1]:443",
        ] {
            let a: std::net::SocketAddr = a.parse().expect("addr");
            assert_eq!(addr_string(&a), a.to_string());
        }
    }

    #[test]
    fn ids_are_v7_and_ordered_by_start() {
        let a = fast_v7(1_700_000_000_000_000);
        let b = fast_v7(1_700_000_000_001_000);
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b);
        assert_ne!(fast_v7(5_000), fast_v7(5_000));
    }
}
