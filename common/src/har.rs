//! HAR 1.2 (as browser DevTools and many proxies write it) ⇄ exchanges: the model of the file
//! ([`Har`]) and the conversion of one entry ([`entry_to_exchange`], [`exchange_to_entry`]). What
//! `tapedeck import-har` and `export-har` run; outside data, so it has a fuzz target
//! (`fuzz/fuzz_targets/har_import.rs`).
//!
//! Mapping (one HAR entry ⇄ one [`Exchange`]):
//! - `request.url` ⇄ `scheme://authority` + `path` + `?query` (the raw query is kept; on export
//!   `queryString` is derived from it, percent-decoded); `request.httpVersion` ⇄ `http_version`
//!   (`h2`/`HTTP/2.0` read as `HTTP/2`); `request.headers` / `response.headers` ⇄ header lists in
//!   order with repeats (HTTP/2 pseudo-headers such as `:authority` are dropped on import).
//! - `request.postData.text` ⇄ `req_body`; `response.content.text` ⇄ `resp_body`. Bodies that are
//!   not UTF-8 are written base64 with `"encoding": "base64"` (for `postData` too, an extension
//!   several tools use); `content.size` ⇄ `resp_body_size`.
//! - `startedDateTime` ⇄ `started_at_us` (written with µs precision). Timings are milliseconds:
//!   on import `ttfb_us` = `blocked + dns + connect + send + wait` (parts that are -1 skipped),
//!   `duration_us` = that plus `receive`, `total_us` = `time`; on export `wait` = ttfb,
//!   `receive` = duration − ttfb, `time` = total, and the connection phases are -1.
//! - Browsers store response bodies with their Content-Encoding undone, so on import of an entry
//!   not written by tapedeck the `Content-Encoding` header is dropped; on export a compressed body
//!   is decoded into `content.text` (what HAR viewers show) and the tape's bytes are kept in
//!   `_tapedeck.raw_body`.
//! - `response.status` 0 (a failed request in DevTools) ⇄ no status.
//! - What HAR cannot carry goes into a custom `_tapedeck` object on the entry (HAR allows fields
//!   starting with `_`): id, source, truncation flags, true request-body size, error kind and
//!   message, flags, client address, response trailers, which durations were unknown, and the
//!   replay fields of result tapes (origin id, target, scheduled and sent times). Import uses it when present, so a
//!   tape → HAR → tape round trip keeps ids; entries without it get a UUIDv7 made from
//!   `startedDateTime`.
//!
//! Unknown fields are ignored on import: browsers add their own (`_initiator`, `_priority`…).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tapedeck_storage::{ErrorKind, Exchange, Header, TRAILER_MARKER};
use uuid::Uuid;

/// Decoded response bodies larger than this are exported cut (a zip bomb must not take the
/// export down).
const MAX_DECODED: usize = 16 * 1024 * 1024;

/// Why a HAR entry cannot become an exchange.
#[derive(Debug, thiserror::Error)]
pub enum HarError {
    /// The request URL has no `scheme://`.
    #[error("URL `{0}` is not absolute (no `scheme://`)")]
    NotAbsolute(String),
    /// `startedDateTime` is not an ISO 8601 time.
    #[error("startedDateTime `{0}` is not an ISO 8601 time")]
    Time(String),
    /// A field has a value HAR (or tapedeck's `_tapedeck` extension) does not allow.
    #[error("{field}: {message}")]
    Field {
        /// The field, as a JSON path from the entry (`request.postData`, `_tapedeck.id`…).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Parses a whole HAR file.
pub fn parse(json: &[u8]) -> Result<Har, serde_json::Error> {
    serde_json::from_slice(json)
}

/// The top level of a HAR file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Har {
    /// The log.
    pub log: Log,
}

/// `log`: the creator and the entries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Log {
    /// HAR version (`1.2`).
    #[serde(default = "default_version")]
    pub version: String,
    /// The tool that wrote the file.
    #[serde(default)]
    pub creator: Creator,
    /// One entry per request.
    pub entries: Vec<Entry>,
}

fn default_version() -> String {
    "1.2".to_owned()
}

/// `log.creator`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Creator {
    /// Tool name.
    #[serde(default)]
    pub name: String,
    /// Tool version.
    #[serde(default)]
    pub version: String,
}

/// One request and its response.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// When the request started (ISO 8601 / RFC 3339).
    pub started_date_time: String,
    /// Total time in milliseconds.
    #[serde(default)]
    pub time: f64,
    /// The request.
    pub request: Request,
    /// The response.
    pub response: Response,
    /// Cache information (always empty on export).
    #[serde(default)]
    pub cache: serde_json::Value,
    /// Phase timings in milliseconds (-1 = not applicable).
    #[serde(default)]
    pub timings: Timings,
    /// What HAR cannot carry.
    #[serde(rename = "_tapedeck", default, skip_serializing_if = "Option::is_none")]
    pub tapedeck: Option<Extra>,
}

/// `name`/`value` pairs (headers, query parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// `entry.request`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// `HTTP/1.1`, `h2`…
    #[serde(default)]
    pub http_version: String,
    /// Cookies (not used on import: they are in the headers too).
    #[serde(default)]
    pub cookies: Vec<serde_json::Value>,
    /// Headers in order.
    #[serde(default)]
    pub headers: Vec<Pair>,
    /// Query parameters (decoded).
    #[serde(default)]
    pub query_string: Vec<Pair>,
    /// The request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_data: Option<PostData>,
    /// Size of the request headers (-1 = unknown).
    #[serde(default = "minus_one")]
    pub headers_size: i64,
    /// Size of the request body (-1 = unknown).
    #[serde(default = "minus_one")]
    pub body_size: i64,
}

fn minus_one() -> i64 {
    -1
}

/// `request.postData`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostData {
    /// Content type.
    #[serde(default)]
    pub mime_type: String,
    /// The body as text (base64 when `encoding` says so).
    #[serde(default)]
    pub text: String,
    /// `base64` for binary bodies (an extension; HAR 1.2 has it only on `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Form parameters (used only when `text` is empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Pair>,
}

/// `entry.response`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// Status; 0 when the request failed.
    #[serde(default)]
    pub status: u16,
    /// Reason phrase.
    #[serde(default)]
    pub status_text: String,
    /// Protocol version.
    #[serde(default)]
    pub http_version: String,
    /// Cookies (not used on import).
    #[serde(default)]
    pub cookies: Vec<serde_json::Value>,
    /// Headers in order.
    #[serde(default)]
    pub headers: Vec<Pair>,
    /// The body.
    #[serde(default)]
    pub content: Content,
    /// `Location` of a redirect.
    #[serde(rename = "redirectURL", default)]
    pub redirect_url: String,
    /// Size of the response headers (-1 = unknown).
    #[serde(default = "minus_one")]
    pub headers_size: i64,
    /// Size of the response body as transferred (-1 = unknown).
    #[serde(default = "minus_one")]
    pub body_size: i64,
    /// DevTools' error text for failed requests (`net::ERR_CONNECTION_REFUSED`).
    #[serde(rename = "_error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `response.content`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// Size of the (decoded) body.
    #[serde(default)]
    pub size: i64,
    /// Content type.
    #[serde(default)]
    pub mime_type: String,
    /// The body (base64 when `encoding` says so); absent when not captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `base64` for binary bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// `entry.timings` in milliseconds; -1 means "does not apply".
#[derive(Debug, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for a connection.
    #[serde(default = "minus_one_f")]
    pub blocked: f64,
    /// DNS lookup.
    #[serde(default = "minus_one_f")]
    pub dns: f64,
    /// TCP (and TLS) connect.
    #[serde(default = "minus_one_f")]
    pub connect: f64,
    /// Sending the request.
    #[serde(default)]
    pub send: f64,
    /// Waiting for the first response byte.
    #[serde(default)]
    pub wait: f64,
    /// Reading the response.
    #[serde(default)]
    pub receive: f64,
    /// TLS handshake (part of `connect`).
    #[serde(default = "minus_one_f")]
    pub ssl: f64,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            blocked: -1.0,
            dns: -1.0,
            connect: -1.0,
            send: 0.0,
            wait: 0.0,
            receive: 0.0,
            ssl: -1.0,
        }
    }
}

fn minus_one_f() -> f64 {
    -1.0
}

/// The `_tapedeck` custom field: what HAR cannot carry.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Extra {
    /// Exchange id (UUID text).
    #[serde(default)]
    pub id: Option<String>,
    /// `source` label.
    #[serde(default)]
    pub source: Option<String>,
    /// True size of the request body.
    #[serde(default)]
    pub req_body_size: Option<u64>,
    /// The request body on the tape is a prefix.
    #[serde(default)]
    pub req_body_truncated: bool,
    /// The response body on the tape is a prefix.
    #[serde(default)]
    pub resp_body_truncated: bool,
    /// Error kind (`timeout`, `reset`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Exchange flags.
    #[serde(default)]
    pub flags: u32,
    /// Client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// Response trailers (gRPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<Pair>,
    /// True size of the response body on the tape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_body_size: Option<u64>,
    /// The response body as on the tape (base64) when `content.text` holds it with its
    /// Content-Encoding undone (HAR viewers expect decoded text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
    /// Replay results: id of the replayed exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_id: Option<String>,
    /// Replay results: target label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Replay results: when the request was due (µs since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at_us: Option<i64>,
    /// Replay results: when it left (µs since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_us: Option<i64>,
    /// The trace the exchange belongs to (tape schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Durations the tape did not have (`ttfb`, `duration`, `total`); HAR's are numbers, always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_times: Vec<String>,
    /// URL parts the tape did not have (`scheme`, `authority`): HAR's URL is absolute, so the
    /// export writes `http` and `localhost` in their place, and the import leaves them empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_url_parts: Vec<String>,
}

fn ms_to_us(ms: f64) -> Option<i64> {
    (ms.is_finite() && ms >= 0.0).then(|| (ms * 1000.0).round() as i64)
}

fn us_to_ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Splits an absolute URL into scheme, authority, path and raw query (fragment dropped).
fn split_url(url: &str) -> Result<(String, String, String, Option<String>), HarError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(HarError::NotAbsolute(url.to_owned()));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let rest = &rest[end..];
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((
        scheme.to_ascii_lowercase(),
        authority.to_owned(),
        path.to_owned(),
        query,
    ))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn query_pairs(query: &str) -> Vec<Pair> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            Pair {
                name: percent_decode(n),
                value: percent_decode(v),
            }
        })
        .collect()
}

fn normalize_version(v: &str) -> String {
    match v.to_ascii_lowercase().as_str() {
        "" => "HTTP/1.1".to_owned(),
        "h2" | "http/2" | "http/2.0" => "HTTP/2".to_owned(),
        "h3" | "http/3" | "http/3.0" => "HTTP/3".to_owned(),
        "http/1.0" => "HTTP/1.0".to_owned(),
        "http/1.1" => "HTTP/1.1".to_owned(),
        other => other.to_ascii_uppercase(),
    }
}

fn decode_body(text: &str, encoding: Option<&str>, field: &'static str) -> Result<Bytes, HarError> {
    match encoding {
        None | Some("") => Ok(Bytes::copy_from_slice(text.as_bytes())),
        Some(e) if e.eq_ignore_ascii_case("base64") => B64
            .decode(text.trim())
            .map(Bytes::from)
            .map_err(|err| HarError::Field {
                field,
                message: format!("invalid base64: {err}"),
            }),
        Some(e) => Err(HarError::Field {
            field,
            message: format!("unknown encoding `{e}` (only base64 is defined)"),
        }),
    }
}

fn encode_body(body: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(body) {
        Ok(t) => (t.to_owned(), None),
        Err(_) => (B64.encode(body), Some("base64".to_owned())),
    }
}

fn headers_from(pairs: &[Pair]) -> Vec<Header> {
    pairs
        .iter()
        .filter(|p| !p.name.starts_with(':'))
        .map(|p| Header::new(p.name.clone(), Bytes::copy_from_slice(p.value.as_bytes())))
        .collect()
}

fn pairs_from(headers: &[Header]) -> Vec<Pair> {
    headers
        .iter()
        .map(|h| Pair {
            name: h.name.as_str().to_owned(),
            value: h.value_lossy().into_owned(),
        })
        .collect()
}

/// Turns one HAR entry into an exchange; `source` labels entries without a `_tapedeck.source`.
pub fn entry_to_exchange(e: Entry, source: &str) -> Result<Exchange, HarError> {
    let started = chrono::DateTime::parse_from_rfc3339(e.started_date_time.trim())
        .map_err(|_| HarError::Time(e.started_date_time.clone()))?;
    let started_at_us = started.timestamp_micros();
    let ours = e.tapedeck.is_some();
    let extra = e.tapedeck.unwrap_or_default();
    let id = match extra.id.as_deref().map(Uuid::parse_str) {
        Some(Ok(id)) => id,
        Some(Err(err)) => {
            return Err(HarError::Field {
                field: "_tapedeck.id",
                message: err.to_string(),
            });
        }
        None => {
            let secs = started.timestamp().max(0) as u64;
            let nanos = started.timestamp_subsec_nanos();
            Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos))
        }
    };
    let origin_id = match extra.origin_id.as_deref().map(Uuid::parse_str) {
        Some(Ok(id)) => Some(id),
        Some(Err(err)) => {
            return Err(HarError::Field {
                field: "_tapedeck.origin_id",
                message: err.to_string(),
            });
        }
        None => None,
    };
    let (mut scheme, mut authority, path, query) = split_url(&e.request.url)?;
    for part in &extra.missing_url_parts {
        match part.as_str() {
            "scheme" => scheme.clear(),
            "authority" => authority.clear(),
            _ => {}
        }
    }

    let req_body = match &e.request.post_data {
        Some(pd) if !pd.text.is_empty() => {
            decode_body(&pd.text, pd.encoding.as_deref(), "request.postData")?
        }
        Some(pd) if !pd.params.is_empty() => Bytes::from(
            pd.params
                .iter()
                .map(|p| format!("{}={}", p.name, p.value))
                .collect::<Vec<_>>()
                .join("&"),
        ),
        _ => Bytes::new(),
    };
    let resp_body = match (&extra.raw_body, &e.response.content.text) {
        (Some(raw), _) => decode_body(raw, Some("base64"), "_tapedeck.raw_body")?,
        (None, Some(t)) => decode_body(
            t,
            e.response.content.encoding.as_deref(),
            "response.content",
        )?,
        (None, None) => Bytes::new(),
    };

    let t = &e.timings;
    let before_wait: f64 = [t.blocked, t.dns, t.connect, t.send]
        .iter()
        .filter(|v| **v > 0.0)
        .sum();
    let failed = e.response.status == 0;
    let ttfb_us = if failed {
        None
    } else {
        ms_to_us(before_wait + t.wait.max(0.0))
    };
    let duration_us = if failed {
        None
    } else {
        ms_to_us(before_wait + t.wait.max(0.0) + t.receive.max(0.0))
    };
    let total_us = ms_to_us(e.time).or(duration_us);
    let known =
        |name: &str, v: Option<i64>| v.filter(|_| !extra.missing_times.iter().any(|m| m == name));
    let (ttfb_us, duration_us, total_us) = (
        known("ttfb", ttfb_us),
        known("duration", duration_us),
        known("total", total_us),
    );

    let mut resp_headers = headers_from(&e.response.headers);
    if !ours {
        // Browsers store the body with its Content-Encoding undone: say so on the tape.
        resp_headers.retain(|h| !h.name.eq_ignore_ascii_case("content-encoding"));
    }
    if !extra.trailers.is_empty() {
        resp_headers.push(Header::new(TRAILER_MARKER, Bytes::new()));
        resp_headers.extend(headers_from(&extra.trailers));
    }
    let error_kind = extra
        .error_kind
        .as_deref()
        .map(ErrorKind::parse)
        .or_else(|| failed.then_some(ErrorKind::Other));
    let error = extra
        .error
        .or(e.response.error)
        .or_else(|| failed.then(|| "no response (status 0 in HAR)".to_owned()));
    let resp_body_size = if let Some(n) = extra.resp_body_size {
        n.max(resp_body.len() as u64)
    } else if e.response.content.size >= 0 {
        (e.response.content.size as u64).max(resp_body.len() as u64)
    } else {
        resp_body.len() as u64
    };
    Ok(Exchange {
        id,
        source: extra.source.unwrap_or_else(|| source.to_owned()).into(),
        started_at_us,
        ttfb_us,
        duration_us,
        total_us,
        client_addr: extra.client_addr.map(Into::into),
        method: e.request.method.into(),
        scheme: scheme.into(),
        authority: authority.into(),
        path: path.into(),
        query,
        http_version: normalize_version(&e.request.http_version).into(),
        req_headers: headers_from(&e.request.headers),
        req_body_size: extra
            .req_body_size
            .unwrap_or(req_body.len() as u64)
            .max(req_body.len() as u64),
        req_body,
        req_body_truncated: extra.req_body_truncated,
        status: (!failed).then_some(e.response.status),
        resp_headers,
        resp_body,
        resp_body_size,
        resp_body_truncated: extra.resp_body_truncated,
        error_kind: if failed { error_kind } else { None },
        error: if failed { error } else { None },
        flags: extra.flags,
        origin_id,
        target: extra.target,
        scheduled_at_us: extra.scheduled_at_us,
        sent_at_us: extra.sent_at_us,
        trace_id: extra.trace_id,
    })
}

fn mime_of(headers: &[Header]) -> String {
    tapedeck_storage::find_header(headers, "content-type")
        .map(|h| h.value_lossy().into_owned())
        .unwrap_or_default()
}

/// Turns an exchange into a HAR entry.
pub fn exchange_to_entry(ex: &Exchange) -> Entry {
    let started = chrono::DateTime::from_timestamp_micros(ex.started_at_us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let url = format!(
        "{}://{}{}",
        if ex.scheme.is_empty() {
            "http"
        } else {
            &ex.scheme
        },
        if ex.authority.is_empty() {
            "localhost"
        } else {
            &ex.authority
        },
        ex.path_and_query()
    );
    let (headers, trailers) = match ex
        .resp_headers
        .iter()
        .position(|h| h.name == TRAILER_MARKER)
    {
        Some(i) => (&ex.resp_headers[..i], &ex.resp_headers[i + 1..]),
        None => (&ex.resp_headers[..], &[][..]),
    };
    let post_data = (!ex.req_body.is_empty()).then(|| {
        let (text, encoding) = encode_body(&ex.req_body);
        PostData {
            mime_type: mime_of(&ex.req_headers),
            text,
            encoding,
            params: Vec::new(),
        }
    });
    // HAR viewers expect content.text with the Content-Encoding undone; the tape's bytes then
    // travel in `_tapedeck.raw_body`.
    let decoded = if ex.resp_body_truncated || ex.resp_body.is_empty() {
        None
    } else {
        crate::coding::decode_body(headers, &ex.resp_body, MAX_DECODED)
            .ok()
            .filter(|d| d[..] != ex.resp_body[..])
            .map(|d| d.into_owned())
    };
    let (text, encoding) = encode_body(decoded.as_deref().unwrap_or(&ex.resp_body));
    let content_size = decoded
        .as_ref()
        .map_or(ex.resp_body_size, |d| d.len() as u64);
    let ttfb = ex.ttfb_us.unwrap_or(0).max(0);
    let duration = ex.duration_us.unwrap_or(ttfb).max(ttfb);
    let total = ex.total_us.or(ex.duration_us).unwrap_or(duration).max(0);
    let is_error = ex.status.is_none() || ex.error_kind.is_some();
    Entry {
        started_date_time: started,
        time: us_to_ms(total),
        request: Request {
            method: ex.method.to_string(),
            url,
            http_version: ex.http_version.to_string(),
            cookies: Vec::new(),
            headers: pairs_from(&ex.req_headers),
            query_string: ex.query.as_deref().map(query_pairs).unwrap_or_default(),
            post_data,
            headers_size: -1,
            body_size: ex.req_body_size as i64,
        },
        response: Response {
            status: ex.status.unwrap_or(0),
            status_text: ex
                .status
                .and_then(|s| http::StatusCode::from_u16(s).ok())
                .and_then(|s| s.canonical_reason())
                .unwrap_or_default()
                .to_owned(),
            http_version: ex.http_version.to_string(),
            cookies: Vec::new(),
            headers: pairs_from(headers),
            content: Content {
                size: content_size as i64,
                mime_type: mime_of(headers),
                text: (!ex.resp_body.is_empty()).then_some(text),
                encoding,
            },
            redirect_url: tapedeck_storage::find_header(headers, "location")
                .map(|h| h.value_lossy().into_owned())
                .unwrap_or_default(),
            headers_size: -1,
            body_size: if ex.status.is_some() {
                ex.resp_body_size as i64
            } else {
                -1
            },
            error: ex.error.clone().filter(|_| is_error),
        },
        cache: serde_json::json!({}),
        timings: Timings {
            send: 0.0,
            wait: us_to_ms(ttfb),
            receive: us_to_ms(duration - ttfb),
            ..Timings::default()
        },
        tapedeck: Some(Extra {
            id: Some(ex.id.to_string()),
            source: Some(ex.source.to_string()),
            req_body_size: Some(ex.req_body_size),
            resp_body_size: Some(ex.resp_body_size),
            raw_body: decoded.as_ref().map(|_| B64.encode(&ex.resp_body)),
            req_body_truncated: ex.req_body_truncated,
            resp_body_truncated: ex.resp_body_truncated,
            error_kind: ex.error_kind.map(|k| k.as_str().to_owned()),
            error: ex.error.clone(),
            flags: ex.flags,
            client_addr: ex.client_addr.as_ref().map(ToString::to_string),
            trailers: pairs_from(trailers),
            origin_id: ex.origin_id.map(|id| id.to_string()),
            target: ex.target.clone(),
            scheduled_at_us: ex.scheduled_at_us,
            sent_at_us: ex.sent_at_us,
            trace_id: ex.trace_id.clone(),
            missing_times: [
                ("ttfb", ex.ttfb_us),
                ("duration", ex.duration_us),
                ("total", ex.total_us),
            ]
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n.to_owned())
            .collect(),
            missing_url_parts: [("scheme", &ex.scheme), ("authority", &ex.authority)]
                .into_iter()
                .filter(|(_, v)| v.is_empty())
                .map(|(n, _)| n.to_owned())
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests;
