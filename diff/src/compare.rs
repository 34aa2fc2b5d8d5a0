//! Comparing one pair of responses: status, the headers that matter, and bodies (JSON
//! structurally, text by lines, binary by size and hash) after undoing Content-Encoding.
//!
//! [`Comparator`] is the plug-in point: [`StandardComparator`] implements the rules above; a
//! caller can add its own comparisons by wrapping it.

use serde::Serialize;
use sha2::{Digest, Sha256};
use tapedeck_storage::{Exchange, TRAILER_MARKER};

use crate::body::{self, BodyKind};
use crate::json::{self, JsonDiffKind};

/// What kind of difference a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The status class changed (2xx → 5xx).
    StatusClass,
    /// The exact status changed within its class (200 → 204).
    StatusCode,
    /// One side got no response (connect error, timeout…), the other did, or the kinds differ.
    Error,
    /// A compared header changed, appeared or disappeared.
    Header,
    /// A JSON difference (see [`JsonDiffKind`]).
    Json(JsonDiffKind),
    /// One body is JSON and the other is not (or does not parse).
    BodyType,
    /// Text bodies differ (line diff).
    Text,
    /// Binary bodies differ (size and hash).
    Binary,
    /// A body could not be decoded (bogus Content-Encoding): compared as raw bytes.
    Undecodable,
}

impl FindingKind {
    /// Kebab-case name (JSON kinds without a prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::StatusClass => "status-class",
            FindingKind::StatusCode => "status-code",
            FindingKind::Error => "error",
            FindingKind::Header => "header",
            FindingKind::Json(k) => k.as_str(),
            FindingKind::BodyType => "body-type",
            FindingKind::Text => "text-changed",
            FindingKind::Binary => "binary-changed",
            FindingKind::Undecodable => "undecodable",
        }
    }
}

/// One difference between a baseline and a candidate response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `status`, `error`, `header:content-type`, `body`, or a JSON path `$.a[0].b`.
    pub path: String,
    /// What kind of difference.
    pub kind: FindingKind,
    /// The baseline's side (an excerpt), empty when absent.
    pub baseline: String,
    /// The candidate's side (an excerpt), empty when absent.
    pub candidate: String,
}

impl Finding {
    fn new(
        path: impl Into<String>,
        kind: FindingKind,
        b: impl Into<String>,
        c: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            kind,
            baseline: b.into(),
            candidate: c.into(),
        }
    }
}

/// Compares two responses to the same request. Implementations must not panic on any input.
pub trait Comparator: Send + Sync + std::fmt::Debug {
    /// Appends the differences between `baseline` and `candidate` to `out`.
    fn compare(&self, baseline: &Exchange, candidate: &Exchange, out: &mut Vec<Finding>);
}

/// The built-in comparator: status, compared headers, bodies.
#[derive(Debug, Clone)]
pub struct StandardComparator {
    headers: Vec<String>,
}

impl StandardComparator {
    /// Compares the given lower-case header names (see
    /// [`DEFAULT_COMPARED_HEADERS`](crate::config::DEFAULT_COMPARED_HEADERS)).
    pub fn new(headers: Vec<String>) -> Self {
        Self { headers }
    }
}

/// The values of response header `name` (trimmed), trailers excluded.
fn header_iter<'a>(ex: &'a Exchange, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    ex.resp_headers
        .iter()
        .take_while(|h| h.name != TRAILER_MARKER)
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.trim_ascii())
}

fn header_values(ex: &Exchange, name: &str) -> Option<String> {
    let vals: Vec<String> = header_iter(ex, name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    (!vals.is_empty()).then(|| vals.join(", "))
}

fn hash_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Comparator for StandardComparator {
    fn compare(&self, b: &Exchange, c: &Exchange, out: &mut Vec<Finding>) {
        match (b.status, c.status) {
            (Some(sb), Some(sc)) if sb / 100 != sc / 100 => {
                out.push(Finding::new(
                    "status",
                    FindingKind::StatusClass,
                    sb.to_string(),
                    sc.to_string(),
                ));
            }
            (Some(sb), Some(sc)) if sb != sc => {
                out.push(Finding::new(
                    "status",
                    FindingKind::StatusCode,
                    sb.to_string(),
                    sc.to_string(),
                ));
            }
            (Some(_), Some(_)) => {}
            (None, None) => {
                let kb = b.error_kind.map_or("error", |k| k.as_str());
                let kc = c.error_kind.map_or("error", |k| k.as_str());
                if kb != kc {
                    out.push(Finding::new("error", FindingKind::Error, kb, kc));
                }
                return;
            }
            _ => {
                let side = |e: &Exchange| match e.status {
                    Some(s) => s.to_string(),
                    None => e.error_kind.map_or("error", |k| k.as_str()).to_owned(),
                };
                out.push(Finding::new("error", FindingKind::Error, side(b), side(c)));
                return;
            }
        }
        for name in &self.headers {
            if header_iter(b, name).eq(header_iter(c, name)) {
                continue;
            }
            let hb = header_values(b, name);
            let hc = header_values(c, name);
            if hb != hc {
                out.push(Finding::new(
                    format!("header:{name}"),
                    FindingKind::Header,
                    hb.unwrap_or_default(),
                    hc.unwrap_or_default(),
                ));
            }
        }
        compare_bodies(b, c, out);
    }
}

fn compare_bodies(b: &Exchange, c: &Exchange, out: &mut Vec<Finding>) {
    if b.resp_body_truncated || c.resp_body_truncated {
        if b.resp_body_size != c.resp_body_size || b.resp_body != c.resp_body {
            out.push(Finding::new(
                "body",
                FindingKind::Binary,
                format!(
                    "{} bytes (truncated capture) sha256:{}",
                    b.resp_body_size,
                    hash_hex(&b.resp_body)
                ),
                format!(
                    "{} bytes (truncated capture) sha256:{}",
                    c.resp_body_size,
                    hash_hex(&c.resp_body)
                ),
            ));
        }
        return;
    }
    let db = body::decode(&b.resp_headers, &b.resp_body);
    let dc = body::decode(&c.resp_headers, &c.resp_body);
    let (db, dc) = match (db, dc) {
        (Ok(x), Ok(y)) => (x, y),
        (rb, rc) => {
            if b.resp_body != c.resp_body {
                let why = |r: &Result<_, tapedeck_common::coding::DecodeError>| match r {
                    Ok(_) => "decodes".to_owned(),
                    Err(e) => e.to_string(),
                };
                out.push(Finding::new(
                    "body",
                    FindingKind::Undecodable,
                    why(&rb),
                    why(&rc),
                ));
            }
            return;
        }
    };
    if db == dc {
        return;
    }
    let kb = body::kind(&b.resp_headers, &db);
    let kc = body::kind(&c.resp_headers, &dc);
    match (kb, kc) {
        (BodyKind::Json, BodyKind::Json) => match json::diff_bytes(&db, &dc) {
            Ok(diffs) => {
                for d in diffs {
                    out.push(Finding::new(
                        d.path,
                        FindingKind::Json(d.kind),
                        d.baseline.unwrap_or_default(),
                        d.candidate.unwrap_or_default(),
                    ));
                }
            }
            Err(json::ParseFailure::Candidate(e)) => out.push(Finding::new(
                "body",
                FindingKind::BodyType,
                "valid JSON",
                format!("invalid JSON: {e}"),
            )),
            Err(json::ParseFailure::Baseline(e)) => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&dc).is_ok() {
                    out.push(Finding::new(
                        "body",
                        FindingKind::BodyType,
                        format!("invalid JSON: {e}"),
                        "valid JSON",
                    ));
                } else {
                    text_diff(&db, &dc, out);
                }
            }
        },
        (BodyKind::Text, BodyKind::Text) => text_diff(&db, &dc, out),
        (BodyKind::Binary, BodyKind::Binary) => out.push(Finding::new(
            "body",
            FindingKind::Binary,
            format!("{} bytes sha256:{}", db.len(), hash_hex(&db)),
            format!("{} bytes sha256:{}", dc.len(), hash_hex(&dc)),
        )),
        (x, y) => out.push(Finding::new(
            "body",
            FindingKind::BodyType,
            format!("{x:?}").to_ascii_lowercase(),
            format!("{y:?}").to_ascii_lowercase(),
        )),
    }
}

/// Line diff with `similar`: one finding at `body` with the first changed lines as excerpts.
fn text_diff(a: &[u8], b: &[u8], out: &mut Vec<Finding>) {
    let ta = String::from_utf8_lossy(a);
    let tb = String::from_utf8_lossy(b);
    let diff = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_millis(200))
        .diff_lines(ta.as_ref(), tb.as_ref());
    let mut removed = Vec::new();
    let mut added = Vec::new();
    let (mut n_removed, mut n_added) = (0usize, 0usize);
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Delete => {
                n_removed += 1;
                if removed.len() < 3 {
                    removed.push(change.value().trim_end().to_owned());
                }
            }
            similar::ChangeTag::Insert => {
                n_added += 1;
                if added.len() < 3 {
                    added.push(change.value().trim_end().to_owned());
                }
            }
            similar::ChangeTag::Equal => {}
        }
    }
    if n_removed + n_added == 0 {
        return;
    }
    out.push(Finding::new(
        "body",
        FindingKind::Text,
        format!(
            "-{n_removed} lines: {}",
            body::excerpt(removed.join(" | ").as_bytes(), 200)
        ),
        format!(
            "+{n_added} lines: {}",
            body::excerpt(added.join(" | ").as_bytes(), 200)
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tapedeck_storage::{ErrorKind, Header};

    fn resp(status: u16, ct: &str, body: &str) -> Exchange {
        Exchange {
            status: Some(status),
            resp_headers: vec![
                Header::new("Content-Type", ct.to_owned()),
                Header::new("Date", "Sun, 29 Nov 2026 20:00:00 GMT"),
            ],
            resp_body: Bytes::from(body.to_owned()),
            resp_body_size: body.len() as u64,
            ..Exchange::default()
        }
    }

    fn cmp(b: &Exchange, c: &Exchange) -> Vec<Finding> {
        let mut out = Vec::new();
        StandardComparator::new(
            crate::config::DEFAULT_COMPARED_HEADERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        )
        .compare(b, c, &mut out);
        out
    }

    #[test]
    fn status_class_and_code() {
        let f = cmp(&resp(200, "text/plain", "a"), &resp(503, "text/plain", "a"));
        assert_eq!(f[0].kind, FindingKind::StatusClass);
        let f = cmp(&resp(200, "text/plain", "a"), &resp(201, "text/plain", "a"));
        assert_eq!(f[0].kind, FindingKind::StatusCode);
        let mut e = resp(200, "text/plain", "a");
        e.status = None;
        e.error_kind = Some(ErrorKind::Timeout);
        let f = cmp(&resp(200, "text/plain", "a"), &e);
        assert_eq!(
            (f[0].kind, f[0].candidate.as_str()),
            (FindingKind::Error, "timeout")
        );
    }

    #[test]
    fn headers_that_matter_only() {
        let b = resp(200, "application/json", "{}");
        let mut c = resp(200, "text/html", "{}");
        c.resp_headers[1] = Header::new("Date", "Mon, 30 Nov 2026 20:00:00 GMT");
        c.resp_headers.push(Header::new("X-Request-Id", "abc"));
        let f = cmp(&b, &c);
        assert!(f.iter().any(|f| f.path == "header:content-type"));
        assert!(
            !f.iter()
                .any(|f| f.path.contains("date") || f.path.contains("request-id"))
        );
    }

    #[test]
    fn json_text_binary_and_undecodable() {
        let f = cmp(
            &resp(200, "application/json", r#"{"name":"a","n":1}"#),
            &resp(200, "application/json", r#"{"full_name":"a","n":1}"#),
        );
        let paths: Vec<_> = f.iter().map(|f| (f.path.as_str(), f.kind)).collect();
        assert_eq!(
            paths,
            vec![
                ("$.name", FindingKind::Json(JsonDiffKind::Missing)),
                ("$.full_name", FindingKind::Json(JsonDiffKind::Extra))
            ]
        );
        let f = cmp(
            &resp(200, "text/plain", "a\nb\nc\n"),
            &resp(200, "text/plain", "a\nB\nc\n"),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::Text);
        assert!(f[0].baseline.contains('b') && f[0].candidate.contains('B'));
        let f = cmp(
            &resp(200, "image/png", "\u{1}\u{2}"),
            &resp(200, "image/png", "\u{1}\u{3}"),
        );
        assert_eq!(f[0].kind, FindingKind::Binary);
        let mut c = resp(200, "application/json", "not gzip at all");
        c.resp_headers.push(Header::new("Content-Encoding", "gzip"));
        let mut b = resp(200, "application/json", "{}");
        b.resp_headers.push(Header::new("Content-Encoding", "gzip"));
        let f = cmp(&b, &c);
        assert!(
            f.iter()
                .any(|f| f.kind == FindingKind::Undecodable && f.path == "body")
        );
        assert!(cmp(&c, &c).is_empty());
    }

    #[test]
    fn gzip_vs_identity_compares_content() {
        use std::io::Write;
        let body = r#"{"a":[1,2,3]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes()).expect("gz");
        let mut c = resp(200, "application/json", "");
        c.resp_body = Bytes::from(gz.finish().expect("gz"));
        c.resp_headers.push(Header::new("Content-Encoding", "gzip"));
        let f = cmp(&resp(200, "application/json", body), &c);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].path, "header:content-encoding");
    }
}
