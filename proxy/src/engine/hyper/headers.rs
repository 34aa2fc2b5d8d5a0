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

/// Which hop-by-hop headers a message has: found by one pass over its names ([`scan`]), so
/// that only those present are looked up again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HopByHop(u8);

const CONN: u8 = 1;
const UPG: u8 = 1 << 1;
const TE_: u8 = 1 << 2;
const KA: u8 = 1 << 3;
const PC: u8 = 1 << 4;
const TRANSFER: u8 = 1 << 5;

/// One pass over the header names.
pub(crate) fn scan(headers: &HeaderMap) -> HopByHop {
    let mut found = 0;
    for n in headers.keys() {
        found |= if *n == CONNECTION {
            CONN
        } else if *n == UPGRADE {
            UPG
        } else if *n == TE {
            TE_
        } else if *n == TRANSFER_ENCODING {
            TRANSFER
        } else if n == KEEP_ALIVE {
            KA
        } else if n == PROXY_CONNECTION {
            PC
        } else {
            0
        };
    }
    HopByHop(found)
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

impl HopByHop {
    /// Whether an HTTP/1.1 request asks for a protocol upgrade (`Connection: upgrade` +
    /// `Upgrade`).
    pub(crate) fn wants_upgrade(self, headers: &HeaderMap) -> bool {
        self.0 & UPG != 0
            && self.0 & CONN != 0
            && headers
                .get_all(CONNECTION)
                .iter()
                .any(|v| has_token(v.as_bytes(), b"upgrade"))
    }

    /// Removes the hop-by-hop headers of a message about to be forwarded; with `upgrade`, the
    /// `Upgrade` header and the `upgrade` token of `Connection` stay.
    pub(crate) fn strip(self, headers: &mut HeaderMap, upgrade: bool) {
        let found = self.0;
        if found & !TRANSFER == 0 {
            return;
        }
        if found & CONN != 0 {
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
        if found & UPG != 0 && !upgrade {
            headers.remove(UPGRADE);
        }
        if found & KA != 0 {
            headers.remove(&KEEP_ALIVE);
        }
        if found & PC != 0 {
            headers.remove(&PROXY_CONNECTION);
        }
        if found & TE_ != 0
            && headers
                .get(TE)
                .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            headers.remove(TE);
        }
    }

    /// [`HopByHop::strip`], and what HTTP/2 forbids on top: `Transfer-Encoding`.
    pub(crate) fn strip_for_h2(self, headers: &mut HeaderMap) {
        self.strip(headers, false);
        if self.0 & TRANSFER != 0 {
            headers.remove(TRANSFER_ENCODING);
        }
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
        let mut h2 = m.clone();
        scan(&m).strip(&mut m, false);
        assert_eq!(names(&m), ["host", "transfer-encoding", "x-end"]);
        scan(&h2).strip_for_h2(&mut h2);
        assert_eq!(names(&h2), ["host", "x-end"]);

        let mut grpc = map(&[("te", "trailers"), ("content-type", "application/grpc")]);
        scan(&grpc).strip(&mut grpc, false);
        assert_eq!(names(&grpc), ["content-type", "te"]);
    }

    #[test]
    fn upgrades_keep_what_they_need() {
        let mut m = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(scan(&m).wants_upgrade(&m));
        scan(&m).strip(&mut m, true);
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
            !scan(&plain).wants_upgrade(&plain),
            "Upgrade without Connection: upgrade"
        );
        scan(&plain).strip(&mut plain, false);
        assert!(plain.is_empty());
    }
}
