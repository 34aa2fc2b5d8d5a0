//! Hop-by-hop headers (RFC 9110 §7.6.1): what a proxy must not forward. Everything else is
//! forwarded unchanged, in both directions, and the proxy adds nothing to a forwarded response.
//!
//! - `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`: removed.
//! - `Upgrade` (and `Connection: upgrade`): kept only while an upgrade is being forwarded
//!   (an HTTP/1.1 request asking for one, the `101` that grants it).
//! - `TE`: only `TE: trailers` is kept (gRPC needs it on HTTP/2).
//! - `Transfer-Encoding`: framing, kept between HTTP/1.1 peers (hyper frames the body the way
//!   the header says); removed towards an HTTP/2 peer, where it is not allowed.
//!
//! The common case (no `Connection` header) costs a few map lookups.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether an HTTP/1.1 request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"upgrade"))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    *n == CONNECTION
        || *n == UPGRADE
        || *n == TE
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
}

/// Removes the hop-by-hop headers of a message about to be forwarded; with `upgrade`, the
/// `Upgrade` header and the `upgrade` token of `Connection` stay.
pub(crate) fn strip(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names first: most messages have none of these.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        // Headers named as connection options go too (`Connection: close, x-hop`).
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            // `close` and `keep-alive` are options, not header names worth a lookup
            // (`Keep-Alive` goes anyway); `upgrade` is handled below.
            .filter(|t| {
                !(t.is_empty()
                    || t.eq_ignore_ascii_case(b"close")
                    || t.eq_ignore_ascii_case(b"keep-alive")
                    || t.eq_ignore_ascii_case(b"upgrade"))
            })
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        headers.remove(CONNECTION);
        for n in named {
            headers.remove(&n);
        }
        if upgrade {
            headers.insert(CONNECTION, http::HeaderValue::from_static("upgrade"));
        }
    }
    if !upgrade {
        headers.remove(UPGRADE);
    }
    if headers.contains_key(&KEEP_ALIVE) {
        headers.remove(&KEEP_ALIVE);
    }
    if headers.contains_key(&PROXY_CONNECTION) {
        headers.remove(&PROXY_CONNECTION);
    }
    if let Some(te) = headers.get(TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(TE);
    }
}

/// Removes what HTTP/2 forbids on top of [`strip`]: `Transfer-Encoding`, `Upgrade`,
/// `Connection`.
pub(crate) fn strip_for_h2(headers: &mut HeaderMap) {
    strip(headers, false);
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(TRANSFER_ENCODING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(*n, http::HeaderValue::from_static(v));
        }
        m
    }

    /// The names left, sorted (removing from a `HeaderMap` may reorder what stays).
    fn names(m: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stays() {
        let mut m = map(&[
            ("host", "a"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("x-end", "2"),
        ]);
        strip(&mut m, false);
        assert_eq!(names(&m), ["host", "transfer-encoding", "x-end"]);
        strip_for_h2(&mut m);
        assert_eq!(names(&m), ["host", "x-end"]);

        let mut grpc = map(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip(&mut grpc, false);
        assert_eq!(names(&grpc), ["content-type", "te"]);
    }

    #[test]
    fn upgrades_keep_what_they_need() {
        let mut m = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(wants_upgrade(&m));
        strip(&mut m, true);
        assert_eq!(
            m.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert_eq!(
            m.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        let mut plain = map(&[("upgrade", "websocket")]);
        assert!(
            !wants_upgrade(&plain),
            "Upgrade without Connection: upgrade"
        );
        strip(&mut plain, false);
        assert!(plain.is_empty());
    }
}
