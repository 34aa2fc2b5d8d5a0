//! Response bodies: undoing Content-Encoding and telling JSON, text and binary apart.

use std::borrow::Cow;
use std::io::Read;

use tapedeck_storage::{Header, find_header};

/// Decoded bodies larger than this are cut (a zip bomb must not take the judge down).
pub const MAX_DECODED: u64 = 16 * 1024 * 1024;

/// Undoes the `Content-Encoding` of a response body (`gzip`, `x-gzip`, `deflate`, `br`, `zstd`,
/// `identity`, also stacked). Returns the decoded bytes or why they could not be decoded.
pub fn decode<'a>(headers: &[Header], body: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
    let Some(h) = find_header(headers, "content-encoding") else {
        return Ok(Cow::Borrowed(body));
    };
    let value = h.value_lossy().to_ascii_lowercase();
    let mut data: Cow<'a, [u8]> = Cow::Borrowed(body);
    // Encodings are listed in the order they were applied; undo them in reverse.
    for enc in value.split(',').map(str::trim).rev() {
        if body.is_empty() {
            break;
        }
        let mut out = Vec::new();
        let res = match enc {
            "" | "identity" => continue,
            "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&data[..])
                .take(MAX_DECODED)
                .read_to_end(&mut out),
            "deflate" => {
                // RFC 9110 says zlib-wrapped; some servers send raw deflate.
                let r = flate2::read::ZlibDecoder::new(&data[..])
                    .take(MAX_DECODED)
                    .read_to_end(&mut out);
                if r.is_err() {
                    out.clear();
                    flate2::read::DeflateDecoder::new(&data[..])
                        .take(MAX_DECODED)
                        .read_to_end(&mut out)
                } else {
                    r
                }
            }
            "br" => brotli::Decompressor::new(&data[..], 4096)
                .take(MAX_DECODED)
                .read_to_end(&mut out),
            "zstd" => match zstd::stream::read::Decoder::new(&data[..]) {
                Ok(d) => d.take(MAX_DECODED).read_to_end(&mut out),
                Err(e) => Err(e),
            },
            other => return Err(format!("unknown content-encoding {other:?}")),
        };
        if let Err(e) = res {
            return Err(format!("{enc} body does not decode: {e}"));
        }
        data = Cow::Owned(out);
    }
    Ok(data)
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
    fn decodes_each_encoding() {
        let plain = br#"{"hello":"world"}"#.repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("gz");
        let gz = gz.finish().expect("gz");
        assert_eq!(decode(&ce("gzip"), &gz).expect("gzip").as_ref(), &plain[..]);
        let z = zstd::encode_all(&plain[..], 3).expect("zstd");
        assert_eq!(decode(&ce("zstd"), &z).expect("zstd").as_ref(), &plain[..]);
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&plain).expect("br");
        }
        assert_eq!(decode(&ce("br"), &br).expect("br").as_ref(), &plain[..]);
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&plain).expect("zlib");
        let zl = zl.finish().expect("zlib");
        assert_eq!(
            decode(&ce("deflate"), &zl).expect("deflate").as_ref(),
            &plain[..]
        );
        assert_eq!(decode(&[], b"abc").expect("identity").as_ref(), b"abc");
    }

    #[test]
    fn bogus_encodings_are_reported_not_fatal() {
        assert!(decode(&ce("gzip"), b"definitely not gzip").is_err());
        assert!(decode(&ce("br"), b"\xff\xff\xff\xff not brotli").is_err());
        assert!(decode(&ce("zstd"), b"nope").is_err());
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
