//! Request shapes: what of a request the mock compares, normalised once (recorded requests at
//! load, live requests on arrival), and the three operations on them: equality up to wildcards
//! ([`matches`]), a hash that equal shapes share ([`Shape::key`]), and a closeness score for
//! the nearest match ([`similarity`]).
//!
//! What is compared:
//! - the **path**, exactly (the method and route template select the bucket before this);
//! - the **query** as a multiset of decoded `name=value` pairs (order does not matter);
//! - the **body**, after undoing its `Content-Encoding`: JSON structurally (object key order
//!   and whitespace do not matter, `1` equals `1.0`), `application/x-www-form-urlencoded` by its
//!   parameters like a query, anything else byte for byte.
//!
//! Wildcards: a recorded value that is a redaction placeholder (`[REDACTED]`, `REDACTED` in
//! queries and forms, `hmac-sha256:…` tokens; see [`tapedeck_common::redact::is_placeholder`])
//! matches any value, and so does a JSON field selected by an ignore rule (`$.timestamp`,
//! `$..request_id`) on either side — an ignored field may also be absent on one side. Ignored
//! query/form parameters (`?name`) are removed from both sides. In text bodies a placeholder
//! matches any run of bytes. A recorded body that was cut at the capture cap matches a live
//! body that starts with it; one the recorder dropped matches any body.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use serde_json::Value;
use tapedeck_common::JsonPath;
use tapedeck_common::coding;
use tapedeck_common::redact::{MASK, is_placeholder};
use tapedeck_storage::Header;

/// Most bytes a request body is decoded to for matching.
const DECODE_LIMIT: usize = 16 << 20;

/// A parsed JSON value, object members sorted by key; [`Json::Any`] matches anything.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
    Any,
}

/// What an ignore rule writes over the fields it selects before the tree is built (a string no
/// JSON body holds: it starts with a NUL).
const IGNORED: &str = "\u{0}tapedeck-ignored";

impl Json {
    /// The tree of `v`. Ignored fields become [`Json::Any`] on both sides; redaction
    /// placeholders only on the recorded side (`wild`): in a live body they are just strings.
    fn from_value(v: Value, wild: bool) -> Json {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => Json::Num(n),
            Value::String(s) if s == IGNORED || (wild && is_placeholder(s.as_bytes())) => Json::Any,
            Value::String(s) => Json::Str(s),
            Value::Array(a) => {
                Json::Arr(a.into_iter().map(|v| Json::from_value(v, wild)).collect())
            }
            Value::Object(o) => {
                let mut members: Vec<(String, Json)> = o
                    .into_iter()
                    .map(|(k, v)| (k, Json::from_value(v, wild)))
                    .collect();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Obj(members)
            }
        }
    }

    fn leaves(&self) -> u32 {
        match self {
            Json::Arr(a) => a.iter().map(Json::leaves).sum::<u32>().max(1),
            Json::Obj(o) => o.iter().map(|(_, v)| v.leaves()).sum::<u32>().max(1),
            _ => 1,
        }
    }
}

fn num_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// One piece of a recorded text body that holds placeholders.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Lit(Vec<u8>),
    Any,
}

/// A body as compared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    Empty,
    Json(Json),
    /// Form parameters, sorted; `None` values are wildcards.
    Form(Vec<(String, Option<String>)>),
    /// Any other body, byte for byte (the decoded bytes are in [`Shape::raw`]).
    Bytes,
    /// A recorded text body with placeholders: literal pieces and wildcards.
    Text(Vec<Piece>),
    /// A recorded body cut at the capture cap: the live body must start with [`Shape::raw`].
    Prefix,
    /// A recorded body the recorder did not store: matches any body.
    Unknown,
}

/// What the mock compares of a request, normalised.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shape {
    pub(crate) path: String,
    /// Decoded query pairs, sorted; `None` values are wildcards.
    pub(crate) query: Vec<(String, Option<String>)>,
    pub(crate) body: Body,
    /// The body with its `Content-Encoding` undone (the stored bytes when that fails).
    pub(crate) raw: Bytes,
}

/// Which positions of a bucket's shapes hold wildcards: those are left out of the hash on both
/// sides, so a live request hashes like the recorded ones it matches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mask {
    /// JSON positions (array indices generalised) where some recorded body has a wildcard.
    json: Vec<Vec<Step>>,
    /// Query or form parameter names that some recorded request has a wildcard value for.
    params: Vec<String>,
    /// Some recorded body in the bucket is text with placeholders, a prefix or unknown.
    opaque_body: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index,
}

impl Mask {
    /// Adds the wildcard positions of `s`.
    pub(crate) fn add(&mut self, s: &Shape) {
        let mut add_params = |params: &[(String, Option<String>)]| {
            for (n, v) in params {
                if v.is_none() && !self.params.contains(n) {
                    self.params.push(n.clone());
                }
            }
        };
        add_params(&s.query);
        match &s.body {
            Body::Form(f) => add_params(f),
            Body::Json(j) => {
                let mut path = Vec::new();
                collect_any(j, &mut path, &mut self.json);
            }
            Body::Text(_) | Body::Prefix | Body::Unknown => self.opaque_body = true,
            Body::Empty | Body::Bytes => {}
        }
    }
}

fn collect_any(j: &Json, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match j {
        Json::Any if !out.contains(path) => out.push(path.clone()),
        Json::Arr(a) => {
            for v in a {
                path.push(Step::Index);
                collect_any(v, path, out);
                path.pop();
            }
        }
        Json::Obj(o) => {
            for (k, v) in o {
                path.push(Step::Key(k.clone()));
                collect_any(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Ignore rules, applied to recorded and live requests alike.
#[derive(Debug, Clone, Default)]
pub(crate) struct Normalizer {
    json: Vec<JsonPath>,
    params: Vec<String>,
}

/// Which side a shape is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Recorded {
        /// The stored body is a prefix of the real one.
        truncated: bool,
    },
    Live,
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn pairs(s: &str, ignored: &[String], wild: bool) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = url::form_urlencoded::parse(s.as_bytes())
        .filter(|(n, _)| !ignored.iter().any(|i| i == n))
        .map(|(n, v)| {
            let v = (!(wild && is_placeholder(v.as_bytes()))).then(|| v.into_owned());
            (n.into_owned(), v)
        })
        .collect();
    out.sort();
    out
}

impl Normalizer {
    pub(crate) fn new(json: Vec<JsonPath>, params: Vec<String>) -> Normalizer {
        Normalizer { json, params }
    }

    /// The shape of a request: its path, raw query, headers (for `Content-Type` and
    /// `Content-Encoding`) and body as received or stored.
    pub(crate) fn shape(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &[Header],
        body: &Bytes,
        side: Side,
    ) -> Shape {
        let recorded = matches!(side, Side::Recorded { .. });
        let query = query
            .map(|q| pairs(q, &self.params, recorded))
            .unwrap_or_default();
        let (body, raw) = self.body(headers, body, side);
        Shape {
            path: path.to_owned(),
            query,
            body,
            raw,
        }
    }

    fn body(&self, headers: &[Header], stored: &Bytes, side: Side) -> (Body, Bytes) {
        let truncated = matches!(side, Side::Recorded { truncated: true });
        if stored.is_empty() {
            // A recorded body that is empty but cut was not stored at all (dropped by the
            // recorder because it could not be shown to hold no secret).
            return if truncated {
                (Body::Unknown, Bytes::new())
            } else {
                (Body::Empty, Bytes::new())
            };
        }
        let raw = match coding::codings(headers) {
            Ok(c) if c.is_empty() => stored.clone(),
            Ok(c) => match coding::decode(stored, &c, DECODE_LIMIT) {
                Ok(d) if d.complete() || truncated => Bytes::from(d.bytes),
                _ if truncated => return (Body::Unknown, Bytes::new()),
                _ => stored.clone(),
            },
            Err(_) if truncated => return (Body::Unknown, Bytes::new()),
            Err(_) => stored.clone(),
        };
        if truncated {
            return (Body::Prefix, raw);
        }
        let ct = tapedeck_storage::find_header(headers, "content-type")
            .map(|h| h.value.clone())
            .unwrap_or_default();
        if contains_ci(&ct, b"x-www-form-urlencoded")
            && let Ok(text) = std::str::from_utf8(&raw)
        {
            let recorded = matches!(side, Side::Recorded { .. });
            return (Body::Form(pairs(text, &self.params, recorded)), raw);
        }
        let first = raw.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if (contains_ci(&ct, b"json") || matches!(first, Some(b'{' | b'[')))
            && let Ok(mut v) = serde_json::from_slice::<Value>(&raw)
        {
            for p in &self.json {
                p.visit(&mut v, &mut |leaf| {
                    *leaf = Value::String(IGNORED.to_owned());
                    true
                });
            }
            let wild = matches!(side, Side::Recorded { .. });
            return (Body::Json(Json::from_value(v, wild)), raw);
        }
        if matches!(side, Side::Recorded { .. }) {
            let pieces = text_pieces(&raw);
            if pieces.contains(&Piece::Any) {
                return (Body::Text(pieces), raw);
            }
        }
        (Body::Bytes, raw)
    }
}

/// Splits a text body at redaction placeholders.
fn text_pieces(raw: &[u8]) -> Vec<Piece> {
    const HMAC: &[u8] = b"hmac-sha256:";
    let mut pieces = Vec::new();
    let (mut i, mut lit_start) = (0, 0);
    while i < raw.len() {
        let len = if raw[i..].starts_with(MASK.as_bytes()) {
            MASK.len()
        } else if raw[i..].starts_with(HMAC)
            && raw.len() >= i + HMAC.len() + 32
            && is_placeholder(&raw[i..i + HMAC.len() + 32])
        {
            HMAC.len() + 32
        } else {
            i += 1;
            continue;
        };
        if lit_start < i {
            pieces.push(Piece::Lit(raw[lit_start..i].to_vec()));
        }
        pieces.push(Piece::Any);
        i += len;
        lit_start = i;
    }
    if lit_start < raw.len() {
        pieces.push(Piece::Lit(raw[lit_start..].to_vec()));
    }
    pieces
}

/// Whether `hay` matches `pieces` (`Any` = any run of bytes, possibly empty).
fn glob_match(pieces: &[Piece], hay: &[u8]) -> bool {
    let mut pos = 0;
    let mut anchored = true;
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Any => anchored = false,
            Piece::Lit(lit) => {
                let last = i + 1 == pieces.len();
                if anchored {
                    if !hay[pos..].starts_with(lit) {
                        return false;
                    }
                    pos += lit.len();
                } else if last {
                    return hay.len() >= pos + lit.len() && hay.ends_with(lit);
                } else {
                    match find(&hay[pos..], lit) {
                        Some(at) => pos += at + lit.len(),
                        None => return false,
                    }
                }
                anchored = true;
            }
        }
    }
    !anchored || pos == hay.len()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How well a recorded shape matches a live one: `None` when it does not, else the number of
/// wildcards that were needed (0 = equal).
pub(crate) fn matches(rec: &Shape, live: &Shape) -> Option<u32> {
    if rec.path != live.path {
        return None;
    }
    let mut uses = params_match(&rec.query, &live.query)?;
    uses += match (&rec.body, &live.body) {
        (Body::Unknown, _) => 1,
        (Body::Prefix, _) => {
            if !live.raw.starts_with(&rec.raw) {
                return None;
            }
            1
        }
        (Body::Text(pieces), _) => {
            if !glob_match(pieces, &live.raw) {
                return None;
            }
            1
        }
        (Body::Empty, Body::Empty) => 0,
        (Body::Json(a), Body::Json(b)) => {
            let mut n = 0;
            if !json_match(a, b, &mut n) {
                return None;
            }
            n
        }
        (Body::Form(a), Body::Form(b)) => params_match(a, b)?,
        _ => {
            if rec.raw != live.raw {
                return None;
            }
            0
        }
    };
    Some(uses)
}

fn json_match(a: &Json, b: &Json, uses: &mut u32) -> bool {
    match (a, b) {
        (Json::Any, _) | (_, Json::Any) => {
            *uses += 1;
            true
        }
        (Json::Obj(x), Json::Obj(y)) => {
            let (mut i, mut j) = (0, 0);
            while i < x.len() || j < y.len() {
                let ord = match (x.get(i), y.get(j)) {
                    (Some(a), Some(b)) => a.0.cmp(&b.0),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match ord {
                    std::cmp::Ordering::Equal => {
                        if !json_match(&x[i].1, &y[j].1, uses) {
                            return false;
                        }
                        i += 1;
                        j += 1;
                    }
                    // A member on one side only: fine when it is a wildcard (ignored field).
                    std::cmp::Ordering::Less => {
                        if x[i].1 != Json::Any {
                            return false;
                        }
                        *uses += 1;
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        if y[j].1 != Json::Any {
                            return false;
                        }
                        *uses += 1;
                        j += 1;
                    }
                }
            }
            true
        }
        (Json::Arr(x), Json::Arr(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_match(a, b, uses))
        }
        (Json::Num(x), Json::Num(y)) => num_eq(x, y),
        _ => a == b,
    }
}

/// Multisets of `name=value` pairs; a recorded `None` value matches any value of its name.
fn params_match(
    rec: &[(String, Option<String>)],
    live: &[(String, Option<String>)],
) -> Option<u32> {
    if rec.len() != live.len() {
        return None;
    }
    let mut uses = 0;
    let mut i = 0;
    while i < rec.len() {
        let name = &rec[i].0;
        let end_r = i + rec[i..].iter().take_while(|(n, _)| n == name).count();
        let start_l = live.iter().position(|(n, _)| n == name)?;
        let end_l = start_l
            + live[start_l..]
                .iter()
                .take_while(|(n, _)| n == name)
                .count();
        if end_r - i != end_l - start_l {
            return None;
        }
        let mut wild = 0;
        let mut unmatched: Vec<&Option<String>> =
            live[start_l..end_l].iter().map(|(_, v)| v).collect();
        for (_, v) in &rec[i..end_r] {
            match v {
                None => wild += 1,
                Some(_) => {
                    let at = unmatched.iter().position(|u| *u == v)?;
                    unmatched.swap_remove(at);
                }
            }
        }
        // What is left of the live values is taken by the recorded wildcards (same count).
        uses += wild;
        i = end_r;
    }
    Some(uses)
}

impl Shape {
    /// A hash shared by every pair of shapes that [`matches`] accepts, given the bucket's
    /// wildcard positions (`mask`): wildcards and masked positions are left out on both sides.
    pub(crate) fn key(&self, mask: &Mask) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.path.hash(&mut h);
        hash_params(&self.query, mask, &mut h);
        if !mask.opaque_body {
            match &self.body {
                Body::Empty => 0u8.hash(&mut h),
                Body::Json(j) => {
                    1u8.hash(&mut h);
                    let mut path = Vec::new();
                    // A recorded body that is one placeholder masks the whole body.
                    if !mask.json.contains(&path) {
                        hash_json(j, mask, &mut path, &mut h);
                    }
                }
                Body::Form(f) => {
                    2u8.hash(&mut h);
                    hash_params(f, mask, &mut h);
                }
                Body::Bytes | Body::Text(_) | Body::Prefix | Body::Unknown => {
                    3u8.hash(&mut h);
                    self.raw.hash(&mut h);
                }
            }
        }
        h.finish()
    }
}

fn hash_params(params: &[(String, Option<String>)], mask: &Mask, h: &mut impl Hasher) {
    params.len().hash(h);
    for (n, v) in params {
        n.hash(h);
        if v.is_some() && !mask.params.contains(n) {
            v.hash(h);
        }
    }
}

fn hash_json(j: &Json, mask: &Mask, path: &mut Vec<Step>, h: &mut impl Hasher) {
    match j {
        Json::Any => {}
        Json::Null => 0u8.hash(h),
        Json::Bool(b) => b.hash(h),
        Json::Num(n) => match n.as_f64() {
            // 1 and 1.0 are equal, so they must hash alike.
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).hash(h),
            Some(f) => f.to_bits().hash(h),
            None => n.to_string().hash(h),
        },
        Json::Str(s) => s.hash(h),
        Json::Arr(a) => {
            b'['.hash(h);
            a.len().hash(h);
            for v in a {
                path.push(Step::Index);
                if !mask.json.contains(path) {
                    hash_json(v, mask, path, h);
                }
                path.pop();
            }
        }
        Json::Obj(o) => {
            b'{'.hash(h);
            for (k, v) in o {
                // Wildcard members may be absent on the other side: leave key and value out.
                if *v == Json::Any {
                    continue;
                }
                path.push(Step::Key(k.clone()));
                if !mask.json.contains(path) {
                    k.hash(h);
                    hash_json(v, mask, path, h);
                }
                path.pop();
            }
        }
    }
}

/// How close a recorded shape is to a live one, in [0, 7]: 4 × the share of equal path
/// segments + 2 × the Jaccard similarity of the query pairs + 1 × the body similarity (JSON:
/// the share of equal leaves; other bodies: 1 when equal, else 0). Wildcards count as equal.
pub(crate) fn similarity(rec: &Shape, live: &Shape) -> f64 {
    let path = if rec.path == live.path {
        1.0
    } else {
        let a: Vec<&str> = rec.path.split('/').collect();
        let b: Vec<&str> = live.path.split('/').collect();
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        same as f64 / a.len().max(b.len()).max(1) as f64
    };
    let query = jaccard(&rec.query, &live.query);
    let body = match (&rec.body, &live.body) {
        (Body::Json(a), Body::Json(b)) => {
            let (same, total) = json_sim(a, b);
            if total == 0 {
                1.0
            } else {
                f64::from(same) / f64::from(total)
            }
        }
        (Body::Form(a), Body::Form(b)) => jaccard(a, b),
        _ => {
            if matches(
                &Shape {
                    path: String::new(),
                    query: Vec::new(),
                    body: rec.body.clone(),
                    raw: rec.raw.clone(),
                },
                &Shape {
                    path: String::new(),
                    query: Vec::new(),
                    body: live.body.clone(),
                    raw: live.raw.clone(),
                },
            )
            .is_some()
            {
                1.0
            } else {
                0.0
            }
        }
    };
    4.0 * path + 2.0 * query + body
}

fn jaccard(a: &[(String, Option<String>)], b: &[(String, Option<String>)]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let mut rest: Vec<&(String, Option<String>)> = b.iter().collect();
    let mut common = 0usize;
    for p in a {
        let hit = rest
            .iter()
            .position(|q| q.0 == p.0 && (p.1.is_none() || q.1.is_none() || q.1 == p.1));
        if let Some(i) = hit {
            rest.swap_remove(i);
            common += 1;
        }
    }
    common as f64 / (a.len() + b.len() - common) as f64
}

/// (equal leaves, leaves) of two JSON values.
fn json_sim(a: &Json, b: &Json) -> (u32, u32) {
    match (a, b) {
        (Json::Any, x) | (x, Json::Any) => (x.leaves(), x.leaves()),
        (Json::Obj(x), Json::Obj(y)) => {
            let (mut same, mut total) = (0, 0);
            for (k, v) in x {
                match y.iter().find(|(k2, _)| k2 == k) {
                    Some((_, w)) => {
                        let (s, t) = json_sim(v, w);
                        same += s;
                        total += t;
                    }
                    None => total += v.leaves(),
                }
            }
            for (k, w) in y {
                if !x.iter().any(|(k2, _)| k2 == k) {
                    total += w.leaves();
                }
            }
            (same, total)
        }
        (Json::Arr(x), Json::Arr(y)) => {
            let (mut same, mut total) = (0, 0);
            for (i, v) in x.iter().enumerate() {
                match y.get(i) {
                    Some(w) => {
                        let (s, t) = json_sim(v, w);
                        same += s;
                        total += t;
                    }
                    None => total += v.leaves(),
                }
            }
            for w in y.iter().skip(x.len()) {
                total += w.leaves();
            }
            (same, total)
        }
        (Json::Num(x), Json::Num(y)) => (u32::from(num_eq(x, y)), 1),
        _ if std::mem::discriminant(a) == std::mem::discriminant(b) => (u32::from(a == b), 1),
        _ => (0, a.leaves().max(b.leaves())),
    }
}

#[cfg(test)]
mod tests;
