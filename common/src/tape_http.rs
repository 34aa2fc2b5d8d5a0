//! `http` types as tape fields: header lists and version strings, for every stage that turns a
//! live exchange into a record (the recorder's capture layer, replay's results, the mock's output
//! tape).
//!
//! A header list is [`Header`]s in the map's order (repeated names kept, one entry each); the
//! values are copied once, into one buffer, and each header holds a slice of it.

use bytes::Bytes;
use tapedeck_storage::{CompactString, Header};

/// Appends `map` to the tape's header list `out`. The values are copied once, into one buffer,
/// and each header holds a slice of it: one allocation for all values instead of one each (for
/// up to 512 bytes of values, the buffer is the `Bytes` owner itself: one allocation in all,
/// where a `Vec` takes two once sliced). Names up to 24 bytes are kept inline
/// ([`CompactString`]): no allocation either.
pub fn append_headers(out: &mut Vec<Header>, map: &http::HeaderMap) {
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

/// The tape's `http_version` string of `v` (`HTTP/1.1` for versions `http` may add later).
pub fn version_str(v: http::Version) -> &'static str {
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

    #[test]
    fn versions_are_named_as_on_the_wire() {
        assert_eq!(version_str(http::Version::HTTP_09), "HTTP/0.9");
        assert_eq!(version_str(http::Version::HTTP_10), "HTTP/1.0");
        assert_eq!(version_str(http::Version::HTTP_11), "HTTP/1.1");
        assert_eq!(version_str(http::Version::HTTP_2), "HTTP/2");
        assert_eq!(version_str(http::Version::HTTP_3), "HTTP/3");
    }
}
