//! Response bodies: undoing Content-Encoding and telling JSON, text and binary apart.

use std::borrow::Cow;

use tapedeck_common::coding::{self, DecodeError};
use tapedeck_storage::{Header, find_header};

/// Decoded bodies larger than this are cut (a zip bomb must not take the judge down).
pub const MAX_DECODED: usize = 16 * 1024 * 1024;

/// Undoes the `Content-Encoding` of a stored body (every such header, stacked codings too) with
/// the one decoder the recorder also uses ([`tapedeck_common::coding`]), up to [`MAX_DECODED`].
pub fn decode<'a>(headers: &[Header], body: &'a [u8]) -> Result<Cow<'a, [u8]>, DecodeError> {
    coding::decode_body(headers, body, MAX_DECODED)
}

/// How a body is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Parsed and compared structurally.
    Json,
    /// Compared line by line.
    Text,
    /// Compared by size and hash.
    Binary,
}

/// Picks how to compare a body from its content type (and, when that says nothing, its bytes).
pub fn kind(headers: &[Header], body: &[u8]) -> BodyKind {
    let ct = find_header(headers, "content-type")
        .map(|h| h.value_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ct.contains("json") {
        return BodyKind::Json;
    }
    let texty = ct.starts_with("text/")
        || ct.contains("xml")
        || ct.contains("javascript")
        || ct.contains("x-www-form-urlencoded")
        || ct.contains("yaml");
    if texty {
        return BodyKind::Text;
    }
    if ct.is_empty() || ct.starts_with("application/octet-stream") {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if matches!(first, Some(b'{') | Some(b'[')) {
            return BodyKind::Json;
        }
        if !body.is_empty() && ct.is_empty() && std::str::from_utf8(body).is_ok() {
            return BodyKind::Text;
        }
    }
    BodyKind::Binary
}

/// A short, printable excerpt of a body (at most `max` characters).
pub fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ce(v: &str) -> Vec<Header> {
        vec![Header::new("Content-Encoding", v.to_owned())]
    }

    #[test]
    fn decodes_with_the_shared_decoder() {
        let plain = br#"{"hello":"world"}"#.repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("gz");
        let gz = gz.finish().expect("gz");
        assert_eq!(decode(&ce("gzip"), &gz).expect("gzip").as_ref(), &plain[..]);
        assert_eq!(decode(&[], b"abc").expect("identity").as_ref(), b"abc");
        assert!(decode(&ce("gzip"), b"definitely not gzip").is_err());
        assert!(decode(&ce("snappy"), b"x").is_err());
    }

    #[test]
    fn kinds() {
        let ct = |v: &str| vec![Header::new("content-type", v.to_owned())];
        assert_eq!(
            kind(&ct("application/json; charset=utf-8"), b"{}"),
            BodyKind::Json
        );
        assert_eq!(kind(&ct("application/problem+json"), b"{}"), BodyKind::Json);
        assert_eq!(kind(&ct("text/html"), b"<p>"), BodyKind::Text);
        assert_eq!(kind(&ct("image/png"), b"\x89PNG"), BodyKind::Binary);
        assert_eq!(kind(&[], b" [1]"), BodyKind::Json);
        assert_eq!(kind(&[], b"hello"), BodyKind::Text);
    }
}
