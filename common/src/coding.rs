//! `Content-Encoding`: the one decoder (bounded) and the encoder every part of tapedeck uses.
//!
//! The recorder decodes bodies to redact inside them and re-encodes what it changed; the judge,
//! HAR export and tickets decode stored bodies to compare and show them. All of them go through
//! [`codings`] (every `Content-Encoding` header, in order) and [`decode`], so a body the recorder
//! re-encodes is a body the judge decodes: the invariant "a stored body always decodes with its
//! stored `content-encoding`" rests on this one module.
//!
//! Codings: `gzip`/`x-gzip` (also multi-member), `deflate` (zlib-wrapped as RFC 9110 says, or raw
//! deflate as some servers send it), `br`, `zstd`, `identity`, stacked in any order. Decoding
//! never produces more than a given limit (a compression bomb costs at most that much memory),
//! and a stream that ends early (a body cut at the capture cap) yields the prefix that did decode,
//! marked as such.

use std::borrow::Cow;
use std::io::{Read, Write};

use tapedeck_storage::{Header, TRAILER_MARKER};

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `Content-Encoding` names a coding this module does not know (e.g. `compress`).
    #[error("unknown content-encoding {0:?}")]
    UnknownCoding(String),
    /// Not one byte of the body decodes with its coding.
    #[error("{coding} body does not decode")]
    Undecodable {
        /// The coding that failed, as named in the header.
        coding: &'static str,
    },
    /// Some bytes decoded, then the stream was damaged or ended early.
    #[error("{coding} body is damaged or cut short after {decoded} decoded bytes")]
    Damaged {
        /// The coding that failed.
        coding: &'static str,
        /// Bytes decoded before the damage.
        decoded: usize,
    },
}

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

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Zlib | Coding::RawDeflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// The codings of a body, in the order they were applied (as listed in `Content-Encoding`,
/// all such headers taken together, trailers excluded). `Ok(empty)` when there is none (or only
/// `identity`).
pub fn codings(headers: &[Header]) -> Result<Vec<Coding>, DecodeError> {
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
                return Err(DecodeError::UnknownCoding(
                    String::from_utf8_lossy(token).into_owned(),
                ));
            };
            out.push(c);
        }
    }
    Ok(out)
}

/// How a decoded body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every coding decoded to its end within the limit.
    Complete,
    /// The decoded bytes reached the limit; what follows was not decoded.
    Limit,
    /// A stream was damaged or ended early (a body cut at the capture cap) after some output.
    Damaged {
        /// The coding whose stream broke.
        coding: &'static str,
    },
}

/// A decoded body.
#[derive(Debug)]
pub struct Decoded {
    /// The decoded bytes (a prefix unless [`complete`](Decoded::complete)).
    pub bytes: Vec<u8>,
    /// The codings as actually found (`deflate` may turn out to be raw deflate).
    pub codings: Vec<Coding>,
    /// Whether the whole body decoded, and if not, why not.
    pub ending: Ending,
}

impl Decoded {
    /// Whether every coding decoded to its end within the limit.
    pub fn complete(&self) -> bool {
        self.ending == Ending::Complete
    }
}

/// Undoes `codings` (applied in that order) on `body`, producing at most `limit` bytes. An empty
/// body decodes to an empty body. [`DecodeError::Undecodable`] when not a single byte could be
/// decoded from a non-empty stream; a stream that breaks after some output is an `Ok` whose
/// [`ending`](Decoded::ending) says so.
pub fn decode(body: &[u8], codings: &[Coding], limit: usize) -> Result<Decoded, DecodeError> {
    let mut data = body.to_vec();
    let mut ending = Ending::Complete;
    let mut found = codings.to_vec();
    for (i, c) in codings.iter().enumerate().rev() {
        if data.is_empty() {
            break;
        }
        let (out, ok, actual) = match c {
            Coding::Zlib | Coding::RawDeflate => {
                let (out, ok) = read_limited(flate2::read::ZlibDecoder::new(&data[..]), limit);
                if ok != StreamEnd::Failed || !out.is_empty() {
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
                Err(_) => (Vec::new(), StreamEnd::Failed, Coding::Zstd),
            },
        };
        let end = match ok {
            StreamEnd::Complete => None,
            StreamEnd::Limit => Some(Ending::Limit),
            StreamEnd::Failed if out.is_empty() => {
                return Err(DecodeError::Undecodable { coding: c.name() });
            }
            StreamEnd::Failed => Some(Ending::Damaged { coding: c.name() }),
        };
        found[i] = actual;
        // The first (innermost-reached) problem is the one to report.
        if let (Ending::Complete, Some(e)) = (ending, end) {
            ending = e;
        }
        data = out;
    }
    Ok(Decoded {
        bytes: data,
        codings: found,
        ending,
    })
}

/// Undoes the `Content-Encoding` of a stored body (every such header, in order), producing at most
/// `limit` bytes: the body itself when it has no coding, a prefix when the decoded body is longer
/// than `limit`, an error when it cannot be decoded completely (an unknown coding, a damaged or
/// cut stream). What the judge, HAR export and tickets read bodies with.
pub fn decode_body<'a>(
    headers: &[Header],
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let codings = codings(headers)?;
    if codings.is_empty() || body.is_empty() {
        return Ok(Cow::Borrowed(body));
    }
    let d = decode(body, &codings, limit)?;
    match d.ending {
        Ending::Complete | Ending::Limit => Ok(Cow::Owned(d.bytes)),
        Ending::Damaged { coding } => Err(DecodeError::Damaged {
            coding,
            decoded: d.bytes.len(),
        }),
    }
}

/// How reading one coding's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Complete,
    Limit,
    Failed,
}

/// Reads `r` to its end or to `limit` bytes.
fn read_limited(r: impl Read, limit: usize) -> (Vec<u8>, StreamEnd) {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // On an error, `read_to_end` keeps what it read before it.
    let ok = r.take(cap).read_to_end(&mut out).is_ok();
    if out.len() > limit {
        out.truncate(limit);
        return (out, StreamEnd::Limit);
    }
    (
        out,
        if ok {
            StreamEnd::Complete
        } else {
            StreamEnd::Failed
        },
    )
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
        assert_eq!(
            codings(&ce("compress")),
            Err(DecodeError::UnknownCoding("compress".to_owned()))
        );
        // Every Content-Encoding header counts, in order (one decoder for the proxy and the
        // judge; the judge used to read only the first header, issue 17).
        let two = vec![
            Header::new("content-encoding", "gzip"),
            Header::new("Content-Encoding", "br"),
        ];
        assert_eq!(codings(&two), Ok(vec![Coding::Gzip, Coding::Brotli]));
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
            assert!(d.complete(), "{cs:?}");
            assert_eq!(d.bytes, plain, "{cs:?}");
            assert_eq!(d.codings, cs);
        }
    }

    #[test]
    fn limits_cuts_and_garbage() {
        let plain = vec![b'a'; 100_000];
        let enc = encode(&plain, &[Coding::Gzip]).expect("encode");
        let d = decode(&enc, &[Coding::Gzip], 1000).expect("decode");
        assert_eq!((d.bytes.len(), d.ending), (1000, Ending::Limit));
        // A stream cut in the middle yields a prefix, flagged incomplete.
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let enc = encode(&text, &[Coding::Gzip]).expect("encode");
        let d = decode(&enc[..enc.len() / 2], &[Coding::Gzip], 1 << 20).expect("prefix");
        assert_eq!(d.ending, Ending::Damaged { coding: "gzip" });
        assert!(!d.bytes.is_empty() && text.starts_with(&d.bytes));
        for c in [Coding::Gzip, Coding::Zlib, Coding::Brotli, Coding::Zstd] {
            assert_eq!(
                decode(b"\xff\xfe not compressed", &[c], 1 << 20).map(|d| d.bytes),
                Err(DecodeError::Undecodable { coding: c.name() }),
                "{c:?}"
            );
        }
        let empty = decode(b"", &[Coding::Gzip], 10).expect("empty");
        assert!(empty.complete() && empty.bytes.is_empty());
    }

    #[test]
    fn stored_bodies_decode_by_their_headers() {
        let plain = br#"{"hello":"world"}"#.repeat(50);
        for (header, cs) in [
            ("gzip", vec![Coding::Gzip]),
            ("x-gzip", vec![Coding::Gzip]),
            ("deflate", vec![Coding::Zlib]),
            ("br", vec![Coding::Brotli]),
            ("zstd", vec![Coding::Zstd]),
            ("identity, gzip, br", vec![Coding::Gzip, Coding::Brotli]),
        ] {
            let enc = encode(&plain, &cs).expect("encode");
            let got = decode_body(&ce(header), &enc, 1 << 20).expect(header);
            assert_eq!(got.as_ref(), &plain[..], "{header}");
        }
        // Raw deflate under `deflate`, as some servers send it.
        let raw = encode(&plain, &[Coding::RawDeflate]).expect("encode");
        assert_eq!(
            decode_body(&ce("deflate"), &raw, 1 << 20)
                .expect("raw")
                .as_ref(),
            &plain[..]
        );
        // No coding: the stored bytes themselves, not a copy.
        let body = b"abc";
        assert!(matches!(decode_body(&[], body, 10), Ok(Cow::Borrowed(b)) if b == body));
        // Longer than the limit: a prefix.
        let gz = encode(&plain, &[Coding::Gzip]).expect("gz");
        let got = decode_body(&ce("gzip"), &gz, 10);
        assert_eq!(got.expect("prefix").as_ref(), &plain[..10]);
        // Bogus or cut bodies are errors that say what was wrong, never panics.
        assert!(matches!(
            decode_body(&ce("gzip"), b"definitely not gzip", 1 << 20),
            Err(DecodeError::Undecodable { coding: "gzip" })
        ));
        assert!(decode_body(&ce("br"), b"\xff\xff\xff\xff not brotli", 1 << 20).is_err());
        assert!(decode_body(&ce("zstd"), b"nope", 1 << 20).is_err());
        assert_eq!(
            decode_body(&ce("snappy"), b"x", 1 << 20),
            Err(DecodeError::UnknownCoding("snappy".into()))
        );
        // A stream cut short is an error, never a silently shorter body.
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let gz = encode(&text, &[Coding::Gzip]).expect("gz");
        assert!(matches!(
            decode_body(&ce("gzip"), &gz[..gz.len() / 2], 1 << 20),
            Err(DecodeError::Damaged { coding: "gzip", .. })
        ));
    }
}
