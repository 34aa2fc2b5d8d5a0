//! `Content-Encoding` for redaction: undo it (bounded), and apply it again to the redacted bytes.
//!
//! The decoders are the ones the differ uses (`flate2` for `gzip`/`x-gzip`/`deflate`, `brotli`,
//! `zstd`), so a body the recorder re-encodes is a body the differ decodes. Decoding never
//! produces more than a given limit (a compression bomb costs at most that much memory), and a
//! stream that ends early (a body cut at the capture cap) yields the prefix that did decode.

use std::io::{Read, Write};

use tapedeck_storage::{Header, TRAILER_MARKER};

/// One content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` / `x-gzip`.
    Gzip,
    /// `deflate` as RFC 9110 says: zlib-wrapped.
    Zlib,
    /// `deflate` as some servers send it: raw deflate.
    RawDeflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// The codings of a body, in the order they were applied (as listed in `Content-Encoding`,
/// all such headers taken together). `Ok(empty)` when there is none (or only `identity`);
/// `Err(name)` for a coding this module does not know.
pub fn codings(headers: &[Header]) -> Result<Vec<Coding>, String> {
    let mut out = Vec::new();
    for h in headers {
        if h.name == TRAILER_MARKER {
            break;
        }
        if !h.name.eq_ignore_ascii_case("content-encoding") {
            continue;
        }
        for token in h.value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            let c = if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                continue;
            } else if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
                Coding::Gzip
            } else if token.eq_ignore_ascii_case(b"deflate") {
                Coding::Zlib
            } else if token.eq_ignore_ascii_case(b"br") {
                Coding::Brotli
            } else if token.eq_ignore_ascii_case(b"zstd") {
                Coding::Zstd
            } else {
                return Err(String::from_utf8_lossy(token).into_owned());
            };
            out.push(c);
        }
    }
    Ok(out)
}

/// A decoded body.
#[derive(Debug)]
pub struct Decoded {
    /// The decoded bytes (a prefix when not `complete`).
    pub bytes: Vec<u8>,
    /// The codings as actually found (`deflate` may turn out to be raw deflate).
    pub codings: Vec<Coding>,
    /// `false` when the stream ended early, was damaged after some output, or decoded to more
    /// than the limit.
    pub complete: bool,
}

/// Undoes `codings` (applied in that order) on `body`, producing at most `limit` bytes.
/// `None` when not a single byte could be decoded from a non-empty body.
pub fn decode(body: &[u8], codings: &[Coding], limit: usize) -> Option<Decoded> {
    let mut data = body.to_vec();
    let mut complete = true;
    let mut found = codings.to_vec();
    for (i, c) in codings.iter().enumerate().rev() {
        let (out, ok, actual) = match c {
            Coding::Zlib | Coding::RawDeflate => {
                let (out, ok) = read_limited(flate2::read::ZlibDecoder::new(&data[..]), limit);
                if ok || !out.is_empty() {
                    (out, ok, Coding::Zlib)
                } else {
                    let (out, ok) =
                        read_limited(flate2::read::DeflateDecoder::new(&data[..]), limit);
                    (out, ok, Coding::RawDeflate)
                }
            }
            Coding::Gzip => {
                let (out, ok) = read_limited(flate2::read::MultiGzDecoder::new(&data[..]), limit);
                (out, ok, Coding::Gzip)
            }
            Coding::Brotli => {
                let (out, ok) = read_limited(brotli::Decompressor::new(&data[..], 4096), limit);
                (out, ok, Coding::Brotli)
            }
            Coding::Zstd => match zstd::stream::read::Decoder::new(&data[..]) {
                Ok(d) => {
                    let (out, ok) = read_limited(d, limit);
                    (out, ok, Coding::Zstd)
                }
                Err(_) => (Vec::new(), false, Coding::Zstd),
            },
        };
        if out.is_empty() && !ok {
            return None;
        }
        found[i] = actual;
        complete &= ok;
        data = out;
    }
    Some(Decoded {
        bytes: data,
        codings: found,
        complete,
    })
}

/// Reads `r` to its end or to `limit` bytes; `true` when it ended cleanly within the limit.
fn read_limited(r: impl Read, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // On an error, `read_to_end` keeps what it read before it.
    let ok = r.take(cap).read_to_end(&mut out).is_ok();
    if out.len() > limit {
        out.truncate(limit);
        return (out, false);
    }
    (out, ok)
}

/// Applies `codings` (in that order) to `plain`. `None` if an encoder fails (it writes to
/// memory, so only on an encoder bug).
pub fn encode(plain: &[u8], codings: &[Coding]) -> Option<Vec<u8>> {
    let mut data = plain.to_vec();
    for c in codings {
        data = match c {
            Coding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(&data).ok()?;
                w.finish().ok()?
            }
            Coding::Zlib => {
                let mut w =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(&data).ok()?;
                w.finish().ok()?
            }
            Coding::RawDeflate => {
                let mut w =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(&data).ok()?;
                w.finish().ok()?
            }
            Coding::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 4, 22);
                    w.write_all(&data).ok()?;
                    w.flush().ok()?;
                }
                out
            }
            Coding::Zstd => zstd::encode_all(&data[..], 3).ok()?,
        };
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ce(v: &str) -> Vec<Header> {
        vec![Header::new("Content-Encoding", v.to_owned())]
    }

    #[test]
    fn codings_are_read_in_order() {
        assert_eq!(codings(&[]), Ok(vec![]));
        assert_eq!(codings(&ce("identity")), Ok(vec![]));
        assert_eq!(
            codings(&ce("gzip, br")),
            Ok(vec![Coding::Gzip, Coding::Brotli])
        );
        assert_eq!(codings(&ce("X-GZIP")), Ok(vec![Coding::Gzip]));
        assert_eq!(codings(&ce("compress")), Err("compress".to_owned()));
        // Trailers are not headers of the body.
        let h = vec![
            Header::new(TRAILER_MARKER, ""),
            Header::new("content-encoding", "gzip"),
        ];
        assert_eq!(codings(&h), Ok(vec![]));
    }

    #[test]
    fn every_coding_round_trips_and_stacks() {
        let plain = br#"{"user":"al","password":"hunter2"}"#.repeat(50);
        for cs in [
            vec![Coding::Gzip],
            vec![Coding::Zlib],
            vec![Coding::RawDeflate],
            vec![Coding::Brotli],
            vec![Coding::Zstd],
            vec![Coding::Gzip, Coding::Brotli],
        ] {
            let enc = encode(&plain, &cs).expect("encode");
            // `deflate` is read as zlib first, raw deflate second.
            let asked: Vec<Coding> = cs
                .iter()
                .map(|c| match c {
                    Coding::RawDeflate => Coding::Zlib,
                    c => *c,
                })
                .collect();
            let d = decode(&enc, &asked, 1 << 20).expect("decode");
            assert!(d.complete, "{cs:?}");
            assert_eq!(d.bytes, plain, "{cs:?}");
            assert_eq!(d.codings, cs);
        }
    }

    #[test]
    fn limits_cuts_and_garbage() {
        let plain = vec![b'a'; 100_000];
        let enc = encode(&plain, &[Coding::Gzip]).expect("encode");
        let d = decode(&enc, &[Coding::Gzip], 1000).expect("decode");
        assert_eq!((d.bytes.len(), d.complete), (1000, false));
        // A stream cut in the middle yields a prefix, flagged incomplete.
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let enc = encode(&text, &[Coding::Gzip]).expect("encode");
        let d = decode(&enc[..enc.len() / 2], &[Coding::Gzip], 1 << 20).expect("prefix");
        assert!(!d.complete);
        assert!(!d.bytes.is_empty() && text.starts_with(&d.bytes));
        for c in [Coding::Gzip, Coding::Zlib, Coding::Brotli, Coding::Zstd] {
            assert!(
                decode(b"\xff\xfe not compressed", &[c], 1 << 20).is_none(),
                "{c:?}"
            );
        }
    }
}
