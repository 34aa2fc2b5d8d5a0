//! Record building: the request and response of an exchange, from `http` types, as a tape
//! [`Exchange`]. Header maps are copied once into one buffer per map; ids are UUIDv7 from the
//! thread-local RNG; client addresses are formatted without the formatting machinery.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
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

/// Appends `map` to the tape's header list `out`. The values are copied once, into one buffer,
/// and each header holds a slice of it: one allocation for all values instead of one each (for
/// up to [`INLINE_VALUES`] bytes of values, the buffer is the `Bytes` owner itself: one
/// allocation in all, where a `Vec` takes two once sliced). Names up to 24 bytes are kept inline
/// ([`CompactString`]): no allocation either.
pub(crate) fn append_headers(out: &mut Vec<Header>, map: &http::HeaderMap) {
    if map.is_empty() {
        return;
    }
    let total: usize = map.values().map(|v| v.len()).sum();
    let buf = if total <= INLINE_VALUES / 4 {
        inline_values::<{ INLINE_VALUES / 4 }>(map)
    } else if total <= INLINE_VALUES {
        inline_values::<INLINE_VALUES>(map)
    } else {
        let mut v = Vec::with_capacity(total);
        for value in map.values() {
            v.extend_from_slice(value.as_bytes());
        }
        Bytes::from(v)
    };
    out.reserve(map.len());
    let mut at = 0;
    for (name, value) in map {
        let end = at + value.len();
        out.push(Header {
            name: CompactString::new(name.as_str()),
            value: buf.slice(at..end),
        });
        at = end;
    }
}

/// Most bytes of header values (of one map) kept in the `Bytes` owner's allocation: a map with
/// more takes a separate buffer. A quarter of it is the smaller size class.
const INLINE_VALUES: usize = 512;

/// Header values in a fixed-size buffer, as the owner of a `Bytes`.
struct InlineValues<const N: usize> {
    len: usize,
    buf: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for InlineValues<N> {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The values of `map` (at most `N` bytes together) in one [`InlineValues`].
fn inline_values<const N: usize>(map: &http::HeaderMap) -> Bytes {
    let mut b = InlineValues {
        len: 0,
        buf: [0; N],
    };
    for value in map.values() {
        let v = value.as_bytes();
        let end = b.len + v.len();
        b.buf[b.len..end].copy_from_slice(v);
        b.len = end;
    }
    Bytes::from_owner(b)
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

pub(crate) fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_repeats_and_values_in_one_buffer() {
        let mut map = http::HeaderMap::new();
        map.append(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        map.append("x-empty", http::HeaderValue::from_static(""));
        map.append("set-cookie", http::HeaderValue::from_static("a=1"));
        map.append("set-cookie", http::HeaderValue::from_static("b=2"));
        let mut out = vec![Header::new("first", "kept")];
        append_headers(&mut out, &map);
        let got: Vec<(&str, &[u8])> = out
            .iter()
            .map(|h| (h.name.as_str(), &h.value[..]))
            .collect();
        assert_eq!(
            got,
            [
                ("first", &b"kept"[..]),
                ("content-type", b"application/json"),
                ("x-empty", b""),
                ("set-cookie", b"a=1"),
                ("set-cookie", b"b=2"),
            ]
        );
        // The values are adjacent slices of one buffer.
        let ct = out[1].value.as_ptr();
        assert_eq!(out[3].value.as_ptr(), ct.wrapping_add(16));
        let mut none = Vec::new();
        append_headers(&mut none, &http::HeaderMap::new());
        assert!(none.is_empty());
    }

    #[test]
    fn header_values_of_every_size_class_are_kept_whole_and_in_order() {
        // Values totalling each side of both inline sizes (128 and 512 bytes), and far beyond.
        for total in [0usize, 1, 127, 128, 129, 511, 512, 513, 5000] {
            let mut map = http::HeaderMap::new();
            let mut want = Vec::new();
            let mut left = total;
            let mut i = 0;
            while left > 0 || i == 0 {
                let n = left.min(100);
                let v = "v".repeat(n.saturating_sub(3)) + &format!("{:03}", i % 1000)[..n.min(3)];
                let name = format!("x-h{i}");
                map.append(
                    http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    http::HeaderValue::from_str(&v).expect("value"),
                );
                want.push((name, v));
                left -= n;
                i += 1;
            }
            let mut out = Vec::new();
            append_headers(&mut out, &map);
            let got: Vec<(String, String)> = out
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(&h.value).into_owned(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{total} bytes of values");
            let sum: usize = out.iter().map(|h| h.value.len()).sum();
            assert_eq!(sum, total);
            // Dropping the list frees the buffer; the slices stay valid while one is held.
            let kept = out.last().map(|h| h.value.clone());
            drop(out);
            assert_eq!(kept.map(|b| b.len()), want.last().map(|(_, v)| v.len()));
        }
    }

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
