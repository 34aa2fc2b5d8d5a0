//! Every change made to a recorded request before it is sent, in one place:
//!
//! - [`prepare`], once per origin (on the reader thread, ahead of the senders): hop-by-hop
//!   headers and the recorded `Host` dropped, `--drop-header` and `--set-header` applied, the
//!   path parsed; also what is written back to the result tape (credentials injected by
//!   `--set-header 'X: ${VAR}'` are stored as the unexpanded template, never the secret).
//! - [`for_target`], once per request (on the sending worker): what depends on the target and
//!   the connection — `Host` for HTTP/1.1 (HTTP/2 sends `:authority` from the URI instead) —
//!   and what must differ per request: the W3C `traceparent` carrying the recorded trace id with
//!   a fresh span id.
//!
//! Trace propagation: a request whose recorded trace is a W3C trace id (the tape's `trace_id`
//! column, else the trace id of its recorded `traceparent` header, for tapes written before the
//! column) is sent with `traceparent: 00-<trace id>-<new span id>-01` in place of the recorded
//! header, so a service that forwards `traceparent` (as OpenTelemetry-instrumented ones do)
//! carries the recorded trace to its dependencies, and dependency mocks answer it with that
//! trace's recorded calls. A request without one gets no `traceparent` added; a trace id that is
//! not a W3C one (recorded with `record --trace-header x-request-id`) travels in its own
//! recorded header, unchanged. With the `traceparent` goes a `tracestate` whose first member is
//! `tapedeck=<target name>` (recorded members kept after it): the lane a dependency mock keeps
//! per target. `--set-header traceparent: …` or `--drop-header traceparent` turn propagation
//! off. The result tape stores the trace id in its `trace_id` column; the
//! span id, different per request, is not stored.

use bytes::Bytes;
use http::Method;
use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use tapedeck_common::trace::{TRACEPARENT, trace_id_of_traceparent, traceparent};
use tapedeck_storage::{Exchange, Header};

use crate::config::{DropSet, SetHeader};
use crate::conn::Endpoint;

/// Headers that belong to one connection (RFC 9110 §7.6.1) or that the client computes itself.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "host",
    "content-length",
    "http2-settings",
];

/// A recorded exchange made ready to send to every target.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The recorded exchange (request fields; its response is not used).
    pub(crate) origin: Exchange,
    /// Method to send.
    pub(crate) method: Method,
    /// Path and query as on the recorded request line (`/` when unsendable).
    pub(crate) path_and_query: PathAndQuery,
    /// Headers to send (cloned per target).
    pub(crate) headers: HeaderMap,
    /// Headers as written to the result tape.
    pub(crate) stored_headers: Vec<Header>,
    /// Body to send.
    pub(crate) body: Bytes,
    /// Why this exchange cannot be sent (it then yields an error result per target).
    pub(crate) unsendable: Option<String>,
    /// The W3C trace id sent on in a fresh `traceparent` per request, if any.
    pub(crate) trace: Option<String>,
}

/// Builds the request for `origin`; `unsendable` says why it cannot be sent (bad method).
pub(crate) fn prepare(origin: Exchange, drop: &DropSet, set: &[SetHeader]) -> Prepared {
    let mut origin = origin;
    let (method, mut unsendable) = match Method::from_bytes(origin.method.as_bytes()) {
        Ok(m) => (m, None),
        Err(_) => (
            Method::GET,
            Some(format!(
                "recorded method `{}` is not a valid HTTP method",
                origin.method
            )),
        ),
    };
    // Built by hand: `format!` / `to_string` go through the formatter, per origin.
    let q = origin.query.as_deref();
    let mut raw = String::with_capacity(origin.path.len() + q.map_or(0, |q| q.len() + 1) + 1);
    raw.push_str(&origin.path);
    if let Some(q) = q {
        raw.push('?');
        raw.push_str(q);
    }
    if raw.is_empty() || raw.starts_with('?') {
        raw.insert(0, '/'); // as a client sends an empty path
    }
    let path_and_query = match PathAndQuery::try_from(raw) {
        Ok(pq) if pq.as_str().starts_with('/') => pq,
        Ok(pq) => {
            unsendable.get_or_insert_with(|| {
                format!("recorded path `{pq}` is not a valid URI: it must start with `/`")
            });
            PathAndQuery::from_static("/")
        }
        Err(e) => {
            unsendable.get_or_insert_with(|| format!("recorded path is not a valid URI: {e}"));
            PathAndQuery::from_static("/")
        }
    };
    let recorded = std::mem::take(&mut origin.req_headers);
    let trace = propagated_trace(&origin, &recorded, drop, set);
    // Names the recorded `Connection` header lists are hop-by-hop too.
    let mut conn_listed: Vec<String> = Vec::new();
    for h in &recorded {
        if h.name.eq_ignore_ascii_case("connection") {
            conn_listed.extend(
                h.value_lossy()
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty()),
            );
        }
    }
    let mut headers = HeaderMap::with_capacity(recorded.len() + set.len());
    let mut stored = Vec::with_capacity(recorded.len() + set.len());
    for h in recorded {
        if h.name.starts_with(':')
            || is_hop_by_hop(&h.name, &h.value)
            || (trace.is_some() && h.name.eq_ignore_ascii_case(TRACEPARENT))
        {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            tracing::debug!(header = %h.name, id = %origin.id, "skipping invalid recorded header name");
            continue;
        };
        if drop.contains(&name)
            || set.iter().any(|s| s.name == name)
            || conn_listed.iter().any(|c| c == name.as_str())
        {
            continue;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(h.value.clone()) else {
            tracing::debug!(header = %h.name, id = %origin.id, "skipping invalid recorded header value");
            continue;
        };
        headers.append(name, value);
        stored.push(h);
    }
    for s in set {
        headers.append(s.name.clone(), s.value.clone());
        stored.push(Header {
            name: s.name.as_str().into(),
            value: s.stored.clone(),
        });
    }
    let body = origin.req_body.clone();
    Prepared {
        origin,
        method,
        path_and_query,
        headers,
        stored_headers: stored,
        body,
        unsendable,
        trace,
    }
}

/// The W3C trace id `origin` is sent on with (see the module doc), or `None`.
fn propagated_trace(
    origin: &Exchange,
    recorded: &[Header],
    drop: &DropSet,
    set: &[SetHeader],
) -> Option<String> {
    let name = HeaderName::from_static(TRACEPARENT);
    if drop.contains(&name) || set.iter().any(|s| s.name == name) {
        return None;
    }
    let w3c = |t: &str| traceparent(t, 1).is_some();
    match origin.trace_id.as_deref() {
        Some(t) if w3c(t) => Some(t.to_owned()),
        // A trace id from another header: that header travels as recorded.
        Some(_) => None,
        None => recorded
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(TRACEPARENT))
            .find_map(|h| trace_id_of_traceparent(&h.value))
            .map(str::to_owned),
    }
}

/// Completes `headers` for one request to `ep` over a connection that speaks HTTP/2 or not,
/// carrying `trace` (a W3C trace id) in a `traceparent` with a new span id.
pub(crate) fn for_target(headers: &mut HeaderMap, ep: &Endpoint, h2: bool, trace: Option<&str>) {
    if h2 {
        headers.remove(HOST); // `:authority` says it
    } else {
        headers.insert(HOST, ep.host.clone());
    }
    if let Some(v) = trace
        .and_then(|t| traceparent(t, rand::random()))
        .and_then(|v| HeaderValue::try_from(v).ok())
    {
        headers.insert(HeaderName::from_static(TRACEPARENT), v);
        // The target's lane for dependency mocks: `tapedeck=<target>` first, the recorded
        // members after it (W3C: a member added or updated moves to the front).
        let mut state = format!("{LANE_KEY}={}", ep.target.name);
        for v in headers.get_all(TRACESTATE) {
            for m in v.to_str().unwrap_or_default().split(',').map(str::trim) {
                if !m.is_empty() && m.split_once('=').is_none_or(|(k, _)| k != LANE_KEY) {
                    state.push(',');
                    state.push_str(m);
                }
            }
        }
        if let Ok(v) = HeaderValue::try_from(state) {
            headers.insert(HeaderName::from_static(TRACESTATE), v);
        }
    }
}

/// The W3C `tracestate` header.
const TRACESTATE: &str = "tracestate";

/// The `tracestate` member naming the replay target (`tapedeck=<target>`): dependency mocks
/// keep a lane of cursors per target, so the baseline and the candidate, which carry the same
/// trace ids, each get a trace's recorded answers in recorded order.
const LANE_KEY: &str = "tapedeck";

fn is_hop_by_hop(name: &str, value: &[u8]) -> bool {
    if name.eq_ignore_ascii_case("te") {
        // `te: trailers` is end-to-end in practice (gRPC needs it, HTTP/2 allows only it).
        return !value.eq_ignore_ascii_case(b"trailers");
    }
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str, stored: &str) -> SetHeader {
        SetHeader {
            name: HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value: HeaderValue::from_str(value).expect("value"),
            stored: Bytes::copy_from_slice(stored.as_bytes()),
        }
    }

    #[test]
    fn rewrites_headers() {
        let ex = Exchange {
            method: "POST".into(),
            path: "/a".into(),
            query: Some("x=1".into()),
            req_headers: vec![
                Header::new("Host", "prod.example"),
                Header::new("Connection", "keep-alive, X-Hop"),
                Header::new("X-Hop", "1"),
                Header::new("Content-Length", "3"),
                Header::new("Accept", "a"),
                Header::new("accept", "b"),
                Header::new("Authorization", "[REDACTED]"),
                Header::new("X-Drop", "1"),
                Header::new("te", "trailers"),
                Header::new(":authority", "prod"),
                Header::new("X-Bin", Bytes::from_static(b"\xff\xfe")),
            ],
            req_body: Bytes::from_static(b"abc"),
            ..Exchange::default()
        };
        let drop = DropSet::new(vec![HeaderName::from_static("x-drop")]);
        let p = prepare(
            ex,
            &drop,
            &[set("authorization", "Bearer s3cret", "Bearer ${TOKEN}")],
        );
        assert!(p.unsendable.is_none());
        assert_eq!(p.method, Method::POST);
        assert_eq!(p.path_and_query, "/a?x=1");
        let names: Vec<&str> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "te", "x-bin", "authorization"]);
        assert_eq!(p.headers.get_all("accept").iter().count(), 2);
        assert_eq!(p.headers["authorization"], "Bearer s3cret");
        let stored_auth = p
            .stored_headers
            .iter()
            .find(|h| h.name == "authorization")
            .expect("stored");
        assert_eq!(&stored_auth.value[..], b"Bearer ${TOKEN}");
        assert!(
            !p.stored_headers
                .iter()
                .any(|h| h.value_lossy().contains("s3cret"))
        );
        assert_eq!(&p.body[..], b"abc");
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn traced(trace_id: Option<&str>, header: Option<&str>) -> Exchange {
        Exchange {
            method: "GET".into(),
            path: "/t".into(),
            trace_id: trace_id.map(str::to_owned),
            req_headers: header
                .map(|v| vec![Header::new("Traceparent", v.to_owned())])
                .unwrap_or_default(),
            ..Exchange::default()
        }
    }

    fn endpoint() -> Endpoint {
        crate::conn::test_endpoint("cand=http://127.0.0.1:9", std::time::Duration::from_secs(1))
    }

    #[test]
    fn the_recorded_trace_travels_with_a_fresh_span_per_request() {
        let recorded = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let none = DropSet::new(vec![]);
        let ep = endpoint();
        for ex in [
            traced(Some(TRACE), Some(&recorded)),
            // A trace id without its header (a proxy in front added it); a schema-1 tape.
            traced(Some(TRACE), None),
            traced(None, Some(&recorded)),
        ] {
            let p = prepare(ex, &none, &[]);
            assert_eq!(p.trace.as_deref(), Some(TRACE));
            assert!(p.headers.get(TRACEPARENT).is_none(), "recorded one removed");
            assert!(
                !p.stored_headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(TRACEPARENT))
            );
            let mut spans = std::collections::HashSet::new();
            for _ in 0..3 {
                let mut h = p.headers.clone();
                for_target(&mut h, &ep, false, p.trace.as_deref());
                let v = h[TRACEPARENT].to_str().expect("ascii").to_owned();
                assert_eq!(trace_id_of_traceparent(v.as_bytes()), Some(TRACE), "{v}");
                assert_ne!(v, recorded);
                assert_eq!(h[TRACESTATE], "tapedeck=cand");
                spans.insert(v);
            }
            assert_eq!(spans.len(), 3, "a new span id per request");
        }
        // Recorded tracestate members stay, after the lane; a recorded lane is replaced.
        let mut ex = traced(Some(TRACE), Some(&recorded));
        ex.req_headers
            .push(Header::new("tracestate", "vendor=1, tapedeck=old,other=2"));
        let p = prepare(ex, &none, &[]);
        let mut h = p.headers.clone();
        for _ in 0..2 {
            for_target(&mut h, &ep, true, p.trace.as_deref());
        }
        assert_eq!(h[TRACESTATE], "tapedeck=cand,vendor=1,other=2");
        // No trace: nothing added. A non-W3C trace id: its own header travels as recorded.
        let p = prepare(traced(None, None), &none, &[]);
        let mut h = p.headers.clone();
        for_target(&mut h, &ep, false, p.trace.as_deref());
        assert!(h.get(TRACEPARENT).is_none());
        let mut ex = traced(Some("req-42"), None);
        ex.req_headers.push(Header::new("x-request-id", "req-42"));
        let p = prepare(ex, &none, &[]);
        assert_eq!(p.trace, None);
        assert_eq!(p.headers["x-request-id"], "req-42");
        // An invalid recorded traceparent is sent as recorded.
        let p = prepare(traced(None, Some("garbage")), &none, &[]);
        assert_eq!(p.trace, None);
        assert_eq!(p.headers[TRACEPARENT], "garbage");
        // The user's --drop-header / --set-header win.
        let drop = DropSet::new(vec![HeaderName::from_static(TRACEPARENT)]);
        let p = prepare(traced(Some(TRACE), Some(&recorded)), &drop, &[]);
        assert!(p.trace.is_none() && p.headers.get(TRACEPARENT).is_none());
        let fixed = format!("00-{TRACE}-1111111111111111-01");
        let p = prepare(
            traced(Some(TRACE), Some(&recorded)),
            &none,
            &[set(TRACEPARENT, &fixed, &fixed)],
        );
        assert_eq!(p.trace, None);
        assert_eq!(p.headers[TRACEPARENT], fixed.as_str());
    }

    #[test]
    fn bad_method_and_bad_path_are_reported() {
        let ex = Exchange {
            method: "GE T".into(),
            path: "/".into(),
            ..Exchange::default()
        };
        assert!(prepare(ex, &DropSet::new(vec![]), &[]).unsendable.is_some());
        let ex = Exchange {
            method: "GET".into(),
            path: "/a b".into(),
            ..Exchange::default()
        };
        let p = prepare(ex, &DropSet::new(vec![]), &[]);
        assert!(
            p.unsendable
                .as_deref()
                .is_some_and(|m| m.contains("not a valid URI")),
            "{:?}",
            p.unsendable
        );
        let ex = Exchange {
            method: "GET".into(),
            path: "relative".into(),
            ..Exchange::default()
        };
        assert!(prepare(ex, &DropSet::new(vec![]), &[]).unsendable.is_some());
    }
}
