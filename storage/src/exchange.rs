//! The in-memory form of one row of a tape: an HTTP request and what came back.

use bytes::Bytes;
use compact_str::CompactString;
use uuid::Uuid;

/// One header as it crossed the wire: the name as sent (case kept) and the raw value bytes
/// (values need not be UTF-8). Order and repeats are kept by storing headers as a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name as sent on the wire. A [`CompactString`]: names up to 24 bytes (nearly all)
    /// live inside the struct, so recording a header allocates nothing for its name (the
    /// recorder copies every header of every exchange; issue 13).
    pub name: CompactString,
    /// Raw header value; may hold any bytes HTTP allows, including non-UTF-8.
    pub value: Bytes,
}

impl Header {
    /// A header from a name and a value.
    pub fn new(name: impl Into<CompactString>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The value as text, replacing invalid UTF-8 (for display and matching, never for storage).
    pub fn value_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// Headers whose values never reach disk by default: the recorder redacts them, the replayer masks
/// them in results, and reports never print them. Lower-case; compare ASCII case-insensitively.
pub const SENSITIVE_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
];

/// What the recorder stores instead of a redacted value in mask mode.
pub const REDACTED_MASK: &str = "[REDACTED]";

/// What the recorder stores instead of a redacted query parameter, form field or path segment in
/// mask mode (URL-safe, unlike [`REDACTED_MASK`]).
pub const REDACTED_URL_MASK: &str = "REDACTED";

/// What the recorder stores instead of a redacted value in hash mode starts with this, followed
/// by 32 lower-case hex digits (a keyed HMAC-SHA256 of the secret, truncated).
pub const REDACTED_HASH_PREFIX: &str = "hmac-sha256:";

/// Whether a stored header value is a redaction placeholder ([`REDACTED_MASK`] or a hash token)
/// rather than a real value: replaying it sends the placeholder, not a credential.
pub fn is_redaction_placeholder(value: &[u8]) -> bool {
    if value == REDACTED_MASK.as_bytes() {
        return true;
    }
    value
        .strip_prefix(REDACTED_HASH_PREFIX.as_bytes())
        .is_some_and(|hex| {
            hex.len() == 32
                && hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
}

/// Whether `name` is one of [`SENSITIVE_HEADERS`] (ASCII case-insensitive).
pub fn is_sensitive_header(name: &str) -> bool {
    SENSITIVE_HEADERS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
}

/// Finds the first header named `name` (ASCII case-insensitive) in a header list.
pub fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a Header> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))
}

/// Why an exchange has no (complete) response. Stored as its kebab-case name in `error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The connection to the upstream or target was refused.
    ConnectRefused,
    /// Establishing the connection took longer than allowed.
    ConnectTimeout,
    /// The peer reset or closed the connection before the exchange completed.
    Reset,
    /// The peer accepted the request but did not answer in time.
    Timeout,
    /// The TLS handshake or session failed.
    Tls,
    /// The peer spoke invalid HTTP.
    Protocol,
    /// The client went away before the exchange completed (recording only).
    ClientAbort,
    /// Anything else; the `error` column holds the message.
    Other,
}

impl ErrorKind {
    /// Every kind, in a stable order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Tls,
        ErrorKind::Protocol,
        ErrorKind::ClientAbort,
        ErrorKind::Other,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect-refused",
            ErrorKind::ConnectTimeout => "connect-timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ClientAbort => "client-abort",
            ErrorKind::Other => "other",
        }
    }

    /// Parses a stored name; unknown names (from a newer writer) map to [`ErrorKind::Other`].
    pub fn parse(s: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or(ErrorKind::Other)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bit flags stored in the `flags` column.
pub mod flags {
    /// The request asked for a protocol upgrade (e.g. WebSocket); only the handshake was recorded.
    pub const UPGRADE: u32 = 1;
    /// The exchange is gRPC; response trailers are appended to `resp_headers` after a
    /// [`TRAILER_MARKER`](super::TRAILER_MARKER) entry.
    pub const GRPC: u32 = 1 << 1;
    /// At least one value in this exchange was redacted before it was written.
    pub const REDACTED: u32 = 1 << 2;
    /// A body with a `Content-Encoding` was decoded for redaction and is stored encoded again
    /// (same codings, redacted content): its bytes differ from the wire bytes, it still decodes
    /// with the exchange's `Content-Encoding`, and `*_body_size` is still the wire size.
    pub const BODY_REENCODED: u32 = 1 << 3;
    /// A body that had to be looked into for redaction could not be decoded (unknown or damaged
    /// `Content-Encoding`), so it was not stored: the body is empty and flagged truncated.
    pub const BODY_DROPPED: u32 = 1 << 4;
    /// Written by `tapedeck mock`: no recorded exchange matched the request; the answer is the
    /// mock's miss policy (`404`, `502`, or the pass-through target's answer), `origin_id` is
    /// null and `error` says why nothing matched.
    pub const MOCK_MISS: u32 = 1 << 5;
    /// Written by `tapedeck mock`: a fault was injected into this answer (status, delay or
    /// connection reset); `error` names the fault rule.
    pub const MOCK_FAULT: u32 = 1 << 6;
    /// Written by `tapedeck mock`: no recorded request was equal to this one, so the closest
    /// recorded request of the same method and route template answered (`origin_id`).
    pub const MOCK_NEAREST: u32 = 1 << 7;
    /// Written by `tapedeck mock`: the recorded answers to this request (in its trace) had all
    /// been served, so the last one was served again (`origin_id`).
    pub const MOCK_REPEAT: u32 = 1 << 8;
}

/// Header name that separates response headers from trailers in `resp_headers`.
pub const TRAILER_MARKER: &str = ":trailers";

/// One HTTP exchange: a request, the response (or the error), and timings.
///
/// The short request strings (`source`, `client_addr`, `method`, `scheme`, `authority`, `path`,
/// `http_version`) are [`CompactString`]s: up to 24 bytes are kept inline, so recording an
/// exchange does not allocate for each of them (issue 13).
///
/// The same struct serves recorded traffic and replay results; the replay-only fields
/// (`origin_id`, `target`, `scheduled_at_us`, `sent_at_us`) are `None` on recorded tapes.
/// Times are microseconds since the Unix epoch (UTC); durations are microseconds measured from
/// `scheduled_at_us` when it is set (replay: free of coordinated omission) and from
/// `started_at_us` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Time-ordered unique id (UUIDv7).
    pub id: Uuid,
    /// Label of the service or tape this exchange belongs to.
    pub source: CompactString,
    /// When the request started: the proxy saw its headers, or the replayer sent it.
    pub started_at_us: i64,
    /// Time to the first response byte (response headers).
    pub ttfb_us: Option<i64>,
    /// Time until the upstream finished sending the response body.
    pub duration_us: Option<i64>,
    /// Time until the response was fully delivered to the client (or read, for replay).
    pub total_us: Option<i64>,
    /// Client address as the proxy saw it (`ip:port`), if recorded.
    pub client_addr: Option<CompactString>,

    /// Request method, e.g. `GET`.
    pub method: CompactString,
    /// `http` or `https`.
    pub scheme: CompactString,
    /// Host (and port) the client addressed.
    pub authority: CompactString,
    /// Path without the query, as sent (percent-encoding kept).
    pub path: CompactString,
    /// Raw query string without the `?`, if there was one.
    pub query: Option<String>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub http_version: CompactString,
    /// Request headers in wire order.
    pub req_headers: Vec<Header>,
    /// Request body as captured (at most the capture cap).
    pub req_body: Bytes,
    /// True size of the request body in bytes, even when the capture was truncated.
    pub req_body_size: u64,
    /// The captured request body is a prefix of the real one.
    pub req_body_truncated: bool,

    /// Response status; `None` when no response was received.
    pub status: Option<u16>,
    /// Response headers in wire order (trailers after [`TRAILER_MARKER`]).
    pub resp_headers: Vec<Header>,
    /// Response body as received (Content-Encoding not undone), up to the capture cap.
    pub resp_body: Bytes,
    /// True size of the response body in bytes.
    pub resp_body_size: u64,
    /// The captured response body is a prefix of the real one.
    pub resp_body_truncated: bool,

    /// Why the exchange failed, if it did.
    pub error_kind: Option<ErrorKind>,
    /// Human-readable error message.
    pub error: Option<String>,
    /// Bit set of [`flags`].
    pub flags: u32,

    /// Replay results: id of the recorded exchange that was replayed.
    pub origin_id: Option<Uuid>,
    /// Replay results: label of the target that answered (`baseline`, `candidate`…).
    pub target: Option<String>,
    /// Replay results: when the request was due to be sent.
    pub scheduled_at_us: Option<i64>,
    /// Replay results: when it actually left.
    pub sent_at_us: Option<i64>,

    /// The trace this exchange belongs to (schema 2): the trace id of a W3C `traceparent` request
    /// header, or the value of the recorder's `--trace-header`. Links a dependency call to the
    /// inbound exchange that caused it; replay sends it on, mocks are scoped by it.
    pub trace_id: Option<String>,
}

impl Default for Exchange {
    /// A `GET /` over `http` HTTP/1.1 with nothing else set.
    fn default() -> Self {
        Self {
            method: CompactString::const_new("GET"),
            scheme: CompactString::const_new("http"),
            path: CompactString::const_new("/"),
            http_version: CompactString::const_new("HTTP/1.1"),
            ..Self::blank()
        }
    }
}

impl Exchange {
    /// Every field empty: nil id, empty strings (no allocation), no bodies, no response, no
    /// timings. The base of a record built field by field (`Exchange { method, ..Exchange::blank() }`).
    pub fn blank() -> Self {
        Self {
            id: Uuid::nil(),
            source: CompactString::const_new(""),
            started_at_us: 0,
            ttfb_us: None,
            duration_us: None,
            total_us: None,
            client_addr: None,
            method: CompactString::const_new(""),
            scheme: CompactString::const_new(""),
            authority: CompactString::const_new(""),
            path: CompactString::const_new(""),
            query: None,
            http_version: CompactString::const_new(""),
            req_headers: Vec::new(),
            req_body: Bytes::new(),
            req_body_size: 0,
            req_body_truncated: false,
            status: None,
            resp_headers: Vec::new(),
            resp_body: Bytes::new(),
            resp_body_size: 0,
            resp_body_truncated: false,
            error_kind: None,
            error: None,
            flags: 0,
            origin_id: None,
            target: None,
            scheduled_at_us: None,
            sent_at_us: None,
            trace_id: None,
        }
    }

    /// A new id for an exchange starting now: UUIDv7, so ids sort by time.
    pub fn new_id() -> Uuid {
        Uuid::now_v7()
    }

    /// A new id for an exchange that started at `at_us` (µs since the epoch), for a caller that
    /// has read the clock already: UUIDv7 of that millisecond, ordered after every id made
    /// before it on the same thread (a per-thread counter below the millisecond, as
    /// [`new_id`](Self::new_id) keeps one per process), the rest random.
    pub fn new_id_at(at_us: i64) -> Uuid {
        thread_local! {
            static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
        }
        let us = at_us.max(0) as u64;
        let (secs, nanos) = (us / 1_000_000, (us % 1_000_000) as u32 * 1_000);
        CONTEXT.with(|c| Uuid::new_v7(uuid::Timestamp::from_unix(c, secs, nanos)))
    }

    /// Path plus `?query` when there is one: what goes on the request line.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.to_string(),
        }
    }

    /// The time the durations are measured from.
    pub fn reference_time_us(&self) -> i64 {
        self.scheduled_at_us.unwrap_or(self.started_at_us)
    }

    /// An approximation of the exchange's size on the wire (headers and bodies as captured),
    /// used to report compression ratios and throughput.
    pub fn raw_size(&self) -> u64 {
        let headers =
            |hs: &[Header]| -> usize { hs.iter().map(|h| h.name.len() + h.value.len() + 4).sum() };
        (self.method.len()
            + self.authority.len()
            + self.path.len()
            + self.query.as_ref().map_or(0, String::len)
            + self.http_version.len()
            + headers(&self.req_headers)
            + self.req_body.len()
            + headers(&self.resp_headers)
            + self.resp_body.len()
            + 16) as u64
    }

    /// The memory this record holds while it waits for the tape writer: the struct itself, its
    /// strings, its header lists and its bodies. What the writer's byte bound
    /// ([`TapeWriterBuilder::queue_bytes`](crate::TapeWriterBuilder::queue_bytes)) counts, and
    /// what a hand-off in front of the writer should count too. Allocator overhead is not
    /// included, and a body that is a slice of a larger shared buffer counts only its slice.
    pub fn mem_size(&self) -> usize {
        const HEADER: usize = std::mem::size_of::<Header>();
        let headers = |hs: &[Header]| -> usize {
            hs.iter()
                .map(|h| HEADER + h.name.len() + h.value.len())
                .sum()
        };
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let copt = |s: &Option<CompactString>| s.as_ref().map_or(0, CompactString::len);
        std::mem::size_of::<Exchange>()
            + self.source.len()
            + copt(&self.client_addr)
            + self.method.len()
            + self.scheme.len()
            + self.authority.len()
            + self.path.len()
            + opt(&self.query)
            + self.http_version.len()
            + headers(&self.req_headers)
            + self.req_body.len()
            + headers(&self.resp_headers)
            + self.resp_body.len()
            + opt(&self.error)
            + opt(&self.target)
            + opt(&self.trace_id)
    }

    /// Whether the flag bit is set.
    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_a_send_time_are_v7_of_that_millisecond_and_ordered() {
        let at = now_us();
        let ids: Vec<Uuid> = (0..1000)
            .map(|i| Exchange::new_id_at(at + i / 10))
            .collect();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            let (secs, nanos) = id.get_timestamp().expect("v7 has a timestamp").to_unix();
            let ms = secs as i64 * 1000 + i64::from(nanos) / 1_000_000;
            assert!((ms - at / 1000).abs() <= 1, "{ms} vs {}", at / 1000);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in creation order");
        // A clock that steps back does not reorder ids made on the same thread.
        let before = Exchange::new_id_at(at + 5_000);
        assert!(Exchange::new_id_at(at) > before);
    }

    #[test]
    fn redaction_placeholders_are_recognized_and_real_values_are_not() {
        assert!(is_redaction_placeholder(REDACTED_MASK.as_bytes()));
        assert!(is_redaction_placeholder(
            b"hmac-sha256:0123456789abcdef0123456789abcdef"
        ));
        for real in [
            &b"Bearer [REDACTED]"[..],
            b"[redacted]",
            b"hmac-sha256:0123",
            b"hmac-sha256:0123456789ABCDEF0123456789ABCDEF",
            b"hmac-sha256:0123456789abcdef0123456789abcdefff",
            b"Bearer eyJhbGciOi",
            b"",
        ] {
            assert!(
                !is_redaction_placeholder(real),
                "{}",
                String::from_utf8_lossy(real)
            );
        }
    }
}
