//! Structural JSON diff with JSON-path locations.
//!
//! (Over 800 lines on purpose: about 410 of them are the unit tests that pin the differ's paths
//! and kinds down, kept next to it; the lockstep fast path is `json/lockstep.rs`.)
//!
//! Paths are written `$.a.b[3]` (keys that are not identifiers as `$['a b']`). Kinds: a value
//! changed, its type changed, a key missing from or extra in the candidate, an array's length
//! changed, or an array holding the same elements in another order. An array whose length changed
//! is reported once at the array (its elements are not compared one by one: an insertion would
//! make every later element look changed).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of difference a [`JsonDiff`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JsonDiffKind {
    /// Same type, another value.
    ValueChanged,
    /// Another JSON type (e.g. number → string).
    TypeChanged,
    /// The key is in the baseline, not in the candidate.
    Missing,
    /// The key is in the candidate, not in the baseline.
    Extra,
    /// The array has another length.
    ArrayLengthChanged,
    /// The array holds the same elements in another order.
    OrderChanged,
}

impl JsonDiffKind {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JsonDiffKind::ValueChanged => "value-changed",
            JsonDiffKind::TypeChanged => "type-changed",
            JsonDiffKind::Missing => "missing",
            JsonDiffKind::Extra => "extra",
            JsonDiffKind::ArrayLengthChanged => "array-length-changed",
            JsonDiffKind::OrderChanged => "order-changed",
        }
    }
}

/// One difference between two JSON documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonDiff {
    /// Where: `$.users[0].name`.
    pub path: String,
    /// What kind of difference.
    pub kind: JsonDiffKind,
    /// The baseline's value there (compact JSON), `None` when missing.
    pub baseline: Option<String>,
    /// The candidate's value there (compact JSON), `None` when missing.
    pub candidate: Option<String>,
}

/// Upper bound on reported differences per document pair (a completely different document
/// should not produce a million findings).
pub const MAX_DIFFS: usize = 200;

/// Compares two JSON values; returns the differences in document order (at most [`MAX_DIFFS`]).
pub fn diff(baseline: &Value, candidate: &Value) -> Vec<JsonDiff> {
    let a = Node::from_value(baseline);
    let b = Node::from_value(candidate);
    diff_nodes(&a, &b)
}

/// Parses two JSON documents and compares them. This is the fast path the comparator uses:
/// strings are borrowed from the input and objects are flat vectors, so a 2 KB document costs a
/// few dozen allocations instead of hundreds.
pub fn diff_bytes(baseline: &[u8], candidate: &[u8]) -> Result<Vec<JsonDiff>, ParseFailure> {
    // Fast path: walk both documents in lockstep, without building trees, while they have the
    // same shape; only subtrees that differ are parsed. Anything unexpected falls back to the
    // tree diff below, which also produces the parse errors.
    if let Ok(diffs) = lockstep::diff(baseline, candidate) {
        return Ok(diffs);
    }
    tree_diff_bytes(baseline, candidate)
}

/// The tree diff of two documents: what [`diff_bytes`] returns, computed without its lockstep
/// fast path (both documents parsed whole). The reference the fast path must agree with, on
/// valid and invalid input alike; slower, for tests and fuzzing.
pub fn tree_diff_bytes(baseline: &[u8], candidate: &[u8]) -> Result<Vec<JsonDiff>, ParseFailure> {
    let a: Node<'_> =
        serde_json::from_slice(baseline).map_err(|e| ParseFailure::Baseline(e.to_string()))?;
    let b: Node<'_> =
        serde_json::from_slice(candidate).map_err(|e| ParseFailure::Candidate(e.to_string()))?;
    Ok(diff_nodes(&a, &b))
}

/// Which side of [`diff_bytes`] is not valid JSON (both: the baseline is reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseFailure {
    /// The baseline does not parse; the message says why.
    Baseline(String),
    /// The candidate does not parse; the message says why.
    Candidate(String),
}

fn diff_nodes(a: &Node<'_>, b: &Node<'_>) -> Vec<JsonDiff> {
    let mut out = Vec::new();
    let mut path = String::from("$");
    walk(a, b, &mut path, &mut out);
    out
}

/// A JSON number as parsed.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }

    fn eq(self, other: Num) -> bool {
        match (self, other) {
            (Num::U(a), Num::U(b)) => a == b,
            (Num::I(a), Num::I(b)) => a == b,
            _ => self.as_f64() == other.as_f64(),
        }
    }

    fn write(self, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            Num::U(u) => write!(out, "{u}"),
            Num::I(i) => write!(out, "{i}"),
            Num::F(f) => match serde_json::Number::from_f64(f) {
                Some(n) => write!(out, "{n}"),
                None => write!(out, "null"),
            },
        };
    }
}

/// A parsed JSON value that borrows its strings from the input when it can.
#[derive(Debug, Clone)]
enum Node<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    fn from_value(v: &'a Value) -> Node<'a> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Num(if let Some(u) = n.as_u64() {
                Num::U(u)
            } else if let Some(i) = n.as_i64() {
                Num::I(i)
            } else {
                Num::F(n.as_f64().unwrap_or(f64::NAN))
            }),
            Value::String(s) => Node::Str(Cow::Borrowed(s)),
            Value::Array(a) => Node::Arr(a.iter().map(Node::from_value).collect()),
            Value::Object(m) => Node::Obj(
                m.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::from_value(v)))
                    .collect(),
            ),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Num(_) => "number",
            Node::Str(_) => "string",
            Node::Arr(_) => "array",
            Node::Obj(_) => "object",
        }
    }

    /// Compact JSON.
    fn write(&self, out: &mut String) {
        match self {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Num(n) => n.write(out),
            Node::Str(s) => write_str(s, out),
            Node::Arr(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    x.write(out);
                }
                out.push(']');
            }
            Node::Obj(m) => {
                out.push('{');
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    x.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Looks a key up (objects are small vectors; big ones go through an index).
    fn get<'n>(
        entries: &'n [(Cow<'a, str>, Node<'a>)],
        index: Option<&HashMap<&str, usize>>,
        key: &str,
    ) -> Option<&'n Node<'a>> {
        match index {
            Some(ix) => ix.get(key).map(|&i| &entries[i].1),
            None => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"?\""),
    }
}

/// Objects with more keys than this get a hash index for lookups.
const INDEX_ABOVE: usize = 16;

fn index<'n>(entries: &'n [(Cow<'_, str>, Node<'_>)]) -> Option<HashMap<&'n str, usize>> {
    (entries.len() > INDEX_ABOVE).then(|| {
        let mut ix = HashMap::with_capacity(entries.len());
        for (i, (k, _)) in entries.iter().enumerate() {
            ix.entry(k.as_ref()).or_insert(i);
        }
        ix
    })
}

impl<'de: 'a, 'a> Deserialize<'de> for Node<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Node<'de>, E> {
        Ok(Node::Num(Num::U(u)))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Node<'de>, E> {
        Ok(Node::Num(Num::I(i)))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Node<'de>, E> {
        Ok(Node::Num(Num::F(f)))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(x) = seq.next_element::<Node<'de>>()? {
            v.push(x);
        }
        Ok(Node::Arr(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let x = map.next_value::<Node<'de>>()?;
            v.push((k, x));
        }
        Ok(Node::Obj(v))
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

fn excerpt(v: &Node<'_>) -> String {
    let mut s = String::new();
    v.write(&mut s);
    if s.len() <= 160 {
        s
    } else {
        let mut end = 157;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
        s
    }
}

/// Equality that treats `1` and `1.0` as equal and ignores object key order.
fn equal(a: &Node<'_>, b: &Node<'_>) -> bool {
    match (a, b) {
        (Node::Null, Node::Null) => true,
        (Node::Bool(x), Node::Bool(y)) => x == y,
        (Node::Num(x), Node::Num(y)) => x.eq(*y),
        (Node::Str(x), Node::Str(y)) => x == y,
        (Node::Arr(x), Node::Arr(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Node::Obj(x), Node::Obj(y)) => {
            if x.len() != y.len() {
                return false;
            }
            // Same key order is the common case: compare in step first.
            if x.iter().zip(y).all(|((k, _), (l, _))| k == l) {
                return x.iter().zip(y).all(|((_, p), (_, q))| equal(p, q));
            }
            let ix = index(y);
            x.iter()
                .all(|(k, v)| Node::get(y, ix.as_ref(), k).is_some_and(|w| equal(v, w)))
        }
        _ => false,
    }
}

fn record(
    out: &mut Vec<JsonDiff>,
    path: &str,
    kind: JsonDiffKind,
    a: Option<&Node<'_>>,
    b: Option<&Node<'_>>,
) {
    if out.len() < MAX_DIFFS {
        out.push(JsonDiff {
            path: path.to_owned(),
            kind,
            baseline: a.map(excerpt),
            candidate: b.map(excerpt),
        });
    }
}

fn walk(a: &Node<'_>, b: &Node<'_>, path: &mut String, out: &mut Vec<JsonDiff>) {
    if out.len() >= MAX_DIFFS {
        return;
    }
    match (a, b) {
        (Node::Obj(x), Node::Obj(y)) => {
            let len = path.len();
            let same_order = x.len() == y.len() && x.iter().zip(y).all(|((k, _), (l, _))| k == l);
            if same_order {
                for ((k, va), (_, vb)) in x.iter().zip(y) {
                    if !equal(va, vb) {
                        push_key(path, k);
                        walk(va, vb, path, out);
                        path.truncate(len);
                    }
                }
                return;
            }
            let (ix, iy) = (index(x), index(y));
            for (k, va) in x {
                push_key(path, k);
                match Node::get(y, iy.as_ref(), k) {
                    Some(vb) => walk(va, vb, path, out),
                    None => record(out, path, JsonDiffKind::Missing, Some(va), None),
                }
                path.truncate(len);
            }
            for (k, vb) in y {
                if Node::get(x, ix.as_ref(), k).is_none() {
                    push_key(path, k);
                    record(out, path, JsonDiffKind::Extra, None, Some(vb));
                    path.truncate(len);
                }
            }
        }
        (Node::Arr(x), Node::Arr(y)) => {
            if x.len() != y.len() {
                record(
                    out,
                    path,
                    JsonDiffKind::ArrayLengthChanged,
                    Some(a),
                    Some(b),
                );
                return;
            }
            if x.iter().zip(y).all(|(p, q)| equal(p, q)) {
                return;
            }
            if same_elements(x, y) {
                record(out, path, JsonDiffKind::OrderChanged, Some(a), Some(b));
                return;
            }
            let len = path.len();
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if equal(p, q) {
                    continue;
                }
                use std::fmt::Write;
                let _ = write!(path, "[{i}]");
                walk(p, q, path, out);
                path.truncate(len);
            }
        }
        _ if a.type_name() != b.type_name() => {
            record(out, path, JsonDiffKind::TypeChanged, Some(a), Some(b));
        }
        _ if !equal(a, b) => record(out, path, JsonDiffKind::ValueChanged, Some(a), Some(b)),
        _ => {}
    }
}

/// Whether two arrays of equal length hold the same multiset of elements.
fn same_elements(x: &[Node<'_>], y: &[Node<'_>]) -> bool {
    let mut xs: Vec<String> = x.iter().map(canonical).collect();
    let mut ys: Vec<String> = y.iter().map(canonical).collect();
    xs.sort_unstable();
    ys.sort_unstable();
    xs == ys
}

/// A serialization in which equal values (objects in any key order, `1` vs `1.0`) are equal.
fn canonical(v: &Node<'_>) -> String {
    fn go(v: &Node<'_>, out: &mut String) {
        match v {
            Node::Obj(m) => {
                let mut entries: Vec<&(Cow<'_, str>, Node<'_>)> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                out.push('{');
                for (k, x) in entries {
                    write_str(k, out);
                    out.push(':');
                    go(x, out);
                    out.push(',');
                }
                out.push('}');
            }
            Node::Arr(a) => {
                out.push('[');
                for x in a {
                    go(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            Node::Num(n) => out.push_str(&format!("{:e}", n.as_f64())),
            other => other.write(out),
        }
    }
    let mut s = String::new();
    go(v, &mut s);
    s
}

fn push_key(path: &mut String, key: &str) {
    let ident = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !key.as_bytes()[0].is_ascii_digit();
    if ident {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str("['");
        for ch in key.chars() {
            if ch == '\'' || ch == '\\' {
                path.push('\\');
            }
            path.push(ch);
        }
        path.push_str("']");
    }
}

/// The byte-level fast path of [`diff_bytes`] (its equal result with [`tree_diff_bytes`] is
/// what the `json_diff` fuzz target checks).
mod lockstep;

/// The path with array indices replaced by `[*]`: the key findings are aggregated under.
pub fn generalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after.as_bytes().get(digits) == Some(&b']') {
            out.push_str("[*]");
            rest = &after[digits + 1..];
        } else {
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn kinds(a: Value, b: Value) -> Vec<(String, JsonDiffKind)> {
        diff(&a, &b).into_iter().map(|d| (d.path, d.kind)).collect()
    }

    #[test]
    fn finds_each_kind() {
        use JsonDiffKind::*;
        assert_eq!(
            kinds(json!({"a": 1, "b": "x"}), json!({"a": 2, "c": "x"})),
            vec![
                ("$.a".into(), ValueChanged),
                ("$.b".into(), Missing),
                ("$.c".into(), Extra)
            ]
        );
        assert_eq!(
            kinds(json!({"a": 1}), json!({"a": "1"})),
            vec![("$.a".into(), TypeChanged)]
        );
        assert_eq!(
            kinds(json!({"l": [1, 2, 3]}), json!({"l": [1, 2]})),
            vec![("$.l".into(), ArrayLengthChanged)]
        );
        assert_eq!(
            kinds(
                json!({"l": [{"id": 1}, {"id": 2}]}),
                json!({"l": [{"id": 2}, {"id": 1}]})
            ),
            vec![("$.l".into(), OrderChanged)]
        );
        assert_eq!(
            kinds(
                json!({"l": [{"id": 1}, {"id": 2}]}),
                json!({"l": [{"id": 1}, {"id": 3}]})
            ),
            vec![("$.l[1].id".into(), ValueChanged)]
        );
        assert_eq!(kinds(json!({"n": 1}), json!({"n": 1.0})), vec![]);
        assert_eq!(kinds(json!({"a b": 1}), json!({"a b": 2}))[0].0, "$['a b']");
    }

    #[test]
    fn byte_path_handles_escapes_numbers_and_bad_input() {
        let d = diff_bytes(
            br#"{"a\nb":"x\"y","n":1,"f":1.5}"#,
            br#"{"a\nb":"x\"z","n":1.0,"f":-2}"#,
        )
        .expect("valid");
        let got: Vec<(&str, JsonDiffKind, Option<&str>)> = d
            .iter()
            .map(|d| (d.path.as_str(), d.kind, d.candidate.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("$['a\nb']", JsonDiffKind::ValueChanged, Some(r#""x\"z""#)),
                ("$.f", JsonDiffKind::ValueChanged, Some("-2")),
            ]
        );
        assert_eq!(
            diff_bytes(b"{", b"{}"),
            Err(ParseFailure::Baseline(
                "EOF while parsing an object at line 1 column 1".into()
            ))
        );
        assert!(matches!(
            diff_bytes(b"{}", b"[1,"),
            Err(ParseFailure::Candidate(_))
        ));
        // Objects with many keys go through the index; key order does not matter.
        let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let mut rev = keys.clone();
        rev.reverse();
        let (a, b) = (
            format!("{{{}}}", keys.join(",")),
            format!("{{{}}}", rev.join(",")),
        );
        assert!(
            diff_bytes(a.as_bytes(), b.as_bytes())
                .expect("valid")
                .is_empty()
        );
    }

    #[test]
    fn generalizes_indices() {
        assert_eq!(generalize("$.a[3].b[10]"), "$.a[*].b[*]");
        assert_eq!(generalize("$['x[1]']"), "$['x[*]']");
        assert_eq!(generalize("$"), "$");
    }

    #[test]
    fn caps_the_number_of_diffs() {
        let a: Vec<Value> = (0..1000).map(|i| json!({"v": i})).collect();
        let b: Vec<Value> = (0..1000).map(|i| json!({"v": i + 1_000_000})).collect();
        assert_eq!(diff(&Value::Array(a), &Value::Array(b)).len(), MAX_DIFFS);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A document whose top level is an object with at least one member.
    fn arb_doc() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-z]{1,6}", arb_json(), 1..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// Every path to an object member in `v`, with the member's key.
    fn member_paths(
        v: &Value,
        path: &mut String,
        out: &mut Vec<(String, Vec<String>)>,
        keys: &mut Vec<String>,
    ) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let len = path.len();
                    push_key(path, k);
                    keys.push(k.clone());
                    out.push((path.clone(), keys.clone()));
                    member_paths(x, path, out, keys);
                    keys.pop();
                    path.truncate(len);
                }
            }
            Value::Array(_)
            | Value::Null
            | Value::Bool(_)
            | Value::Number(_)
            | Value::String(_) => {}
        }
    }

    fn get_mut<'a>(v: &'a mut Value, keys: &[String]) -> Option<&'a mut Value> {
        let mut cur = v;
        for k in keys {
            cur = cur.as_object_mut()?.get_mut(k)?;
        }
        Some(cur)
    }

    proptest! {
        #[test]
        fn diff_with_itself_is_empty(v in arb_json()) {
            prop_assert!(diff(&v, &v).is_empty());
            let text = v.to_string();
            prop_assert!(diff_bytes(text.as_bytes(), text.as_bytes()).expect("valid").is_empty());
        }

        #[test]
        fn lockstep_agrees_with_the_tree_on_same_shaped_documents(
            v in arb_doc(),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            let mut paths = Vec::new();
            member_paths(&v, &mut String::from("$"), &mut paths, &mut Vec::new());
            prop_assume!(!paths.is_empty());
            let mut changed = v.clone();
            for (n, pick) in picks.iter().enumerate() {
                let (_, keys) = paths[pick.index(paths.len())].clone();
                if let Some(slot) = get_mut(&mut changed, &keys) {
                    *slot = if n % 2 == 0 { json!(n) } else { json!([n, "x"]) };
                }
            }
            let (ta, tb) = (v.to_string(), changed.to_string());
            let fast = lockstep::diff(ta.as_bytes(), tb.as_bytes()).expect("well-formed input");
            prop_assert_eq!(&fast, &tree_diff_bytes(ta.as_bytes(), tb.as_bytes()).expect("valid"));
            prop_assert_eq!(fast, diff(&v, &changed));
        }

        #[test]
        fn the_byte_path_agrees_with_the_value_path(a in arb_json(), b in arb_json()) {
            let (ta, tb) = (a.to_string(), b.to_string());
            let from_bytes = diff_bytes(ta.as_bytes(), tb.as_bytes()).expect("valid");
            prop_assert_eq!(from_bytes, diff(&a, &b));
        }

        #[test]
        fn a_planted_change_is_found_at_its_path(v in arb_doc(), pick in any::<prop::sample::Index>()) {
            let mut paths = Vec::new();
            member_paths(&v, &mut String::from("$"), &mut paths, &mut Vec::new());
            prop_assume!(!paths.is_empty());
            let (path, keys) = paths[pick.index(paths.len())].clone();
            let mut changed = v.clone();
            let slot = get_mut(&mut changed, &keys).expect("path exists");
            *slot = json!("__planted_value__");
            let found = diff(&v, &changed);
            prop_assert_eq!(found.len(), 1, "{:?}", found);
            prop_assert_eq!(&found[0].path, &path);
            prop_assert!(matches!(found[0].kind, JsonDiffKind::ValueChanged | JsonDiffKind::TypeChanged));
        }
    }

    /// Asserts that `diff_bytes` gives the tree diff's answer (the fast path's contract).
    fn agrees(a: &[u8], b: &[u8]) -> Result<Vec<JsonDiff>, ParseFailure> {
        let got = diff_bytes(a, b);
        assert_eq!(
            got,
            tree_diff_bytes(a, b),
            "{:?} vs {:?}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
        got
    }

    /// Fuzz finding (issue 8, `fuzz/` target `json_diff`): the lockstep fast path did not validate
    /// regions that are byte-identical on both sides, so two bodies malformed in the same place
    /// compared as JSON instead of being reported undecodable.
    #[test]
    fn fuzz_identical_malformed_regions_are_undecodable() {
        let bad: &[&str] = &[
            r#"{"a":tru,"b":1}"#,
            r#"{"a":nul,"b":1}"#,
            r#"{"a":"x\qy","b":1}"#,
            "{\"a\":\"x\u{1}y\",\"b\":1}",
            r#"{"a":"\u12G4","b":1}"#,
            r#"{"a":"\ud800","b":1}"#,
            r#"{"a":"\udc00\ud800","b":1}"#,
            r#"{"a":01,"b":1}"#,
            r#"{"a":1.,"b":1}"#,
            r#"{"a":-,"b":1}"#,
            r#"{"a":+1,"b":1}"#,
            r#"{"a":.5,"b":1}"#,
            r#"{"a":1e,"b":1}"#,
            r#"{"a":1e400,"b":1}"#,
            r#"{"a":-1e400,"b":1}"#,
            r#"{"a":[1,2,],"b":1}"#,
            r#"{"a":{"x":1,},"b":1}"#,
            r#"{"a":[1 2],"b":1}"#,
            r#"{"a":{"x" 1},"b":1}"#,
            r#"{"a":{x:1},"b":1}"#,
            r#"{"a":{"x":1 "y":2},"b":1}"#,
            r#"{"a":[,1],"b":1}"#,
            "{\"a\u{1}\":1,\"b\":1}",
            r#"{"a":1,"b":1,}"#,
            r#"{"a":'x',"b":1}"#,
            r#"{"a":NaN,"b":1}"#,
            r#"{"a":[1]],"b":1}"#,
            r#"{"a":1,,"b":1}"#,
        ];
        for doc in bad {
            let other = doc.replace("\"b\":1", "\"b\":2");
            assert!(
                serde_json::from_str::<Value>(doc).is_err(),
                "{doc} is valid JSON"
            );
            let got = agrees(doc.as_bytes(), other.as_bytes());
            assert!(
                matches!(got, Err(ParseFailure::Baseline(_))),
                "{doc}: {got:?}"
            );
            // The same region in an array, and a whole document that is one bad scalar.
            let arr = format!("[{doc},1]");
            assert!(agrees(arr.as_bytes(), format!("[{doc},2]").as_bytes()).is_err());
        }
        // Invalid UTF-8 inside an identical string, and bytes that are not JSON at all.
        let mut a = br#"{"a":"x"#.to_vec();
        a.extend_from_slice(&[0xff, 0xfe]);
        a.extend_from_slice(br#"y","b":1}"#);
        let b: Vec<u8> = String::from_utf8_lossy(&a)
            .replace("\"b\":1", "\"b\":2")
            .into();
        let mut b_bad = a.clone();
        let at = b_bad.len() - 2;
        b_bad[at] = b'2';
        assert!(agrees(&a, &b_bad).is_err());
        assert!(agrees(&b, &b).is_ok(), "the lossy text is valid");
        for (x, y) in [
            (&b"tru"[..], &b"tru"[..]),
            (b"", b""),
            (b"  ", b"  "),
            (b"\xef\xbb\xbf{}", b"\xef\xbb\xbf{}"),
            (b"{} x", b"{} x"),
            (b"1 2", b"1 2"),
            (b"\"x", b"\"x"),
        ] {
            assert!(agrees(x, y).is_err(), "{:?}", String::from_utf8_lossy(x));
        }
        // One malformed side is reported as that side.
        assert!(matches!(
            agrees(br#"{"a":1,"b":1}"#, br#"{"a":1,"b":1,}"#),
            Err(ParseFailure::Candidate(_))
        ));
    }

    /// The fast path still takes valid documents with escapes, non-ASCII text, surrogate pairs
    /// and exponents (it asks serde_json about the unusual parts instead of giving up), and
    /// agrees with the tree on them.
    #[test]
    fn lockstep_accepts_valid_unusual_regions() {
        let a = r#"{"e":"\ud83d\ude00 \" \\ \/ \b\f\n\r\t \u00e9","s":"héllo wörld ✓","n":[1e5,-2.5E-3,0,-0,1.0e+2,123456789012345678901234567890],"x":1}"#;
        let b = a.replace("\"x\":1", "\"x\":2");
        let fast =
            lockstep::diff(a.as_bytes(), b.as_bytes()).expect("valid input stays on the fast path");
        assert_eq!(fast.len(), 1, "{fast:?}");
        assert_eq!(fast[0].path, "$.x");
        agrees(a.as_bytes(), b.as_bytes()).expect("valid");
        assert!(
            agrees(a.as_bytes(), a.as_bytes())
                .expect("valid")
                .is_empty()
        );
    }

    /// Around serde_json's recursion limit the fast path and the tree agree, wherever the
    /// difference is (the walk leaves deep documents to the tree).
    #[test]
    fn nesting_near_the_recursion_limit_agrees_with_the_tree() {
        for n in [1, 50, 98, 99, 100, 101, 102, 126, 127, 128, 129, 140] {
            let a = format!("{}1{}", "[".repeat(n), "]".repeat(n));
            let b = format!("{}2{}", "[".repeat(n), "]".repeat(n));
            agrees(a.as_bytes(), a.as_bytes()).ok();
            agrees(a.as_bytes(), b.as_bytes()).ok();
            let wrap = |inner: &str| format!(r#"{{"k":{inner},"z":1}}"#);
            agrees(wrap(&a).as_bytes(), wrap(&b).as_bytes()).ok();
            let deep_b = format!(r#"{{"k":{b},"z":2}}"#);
            agrees(wrap(&a).as_bytes(), deep_b.as_bytes()).ok();
            let flat = r#"{"k":0,"z":1}"#;
            agrees(flat.as_bytes(), wrap(&b).as_bytes()).ok();
        }
    }

    /// A JSON value with the unusual parts real bodies have: escapes, non-ASCII text, floats.
    fn arb_rich_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,6}".prop_map(Value::String),
            "[a-z\"\\\\/\n\té✓😀]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(".{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// One edit of a JSON text (its bytes most likely to matter), applied at `at` (a fraction).
    fn mutate(text: &mut Vec<u8>, at: f64, op: u8, byte: u8) {
        const BYTES: &[u8] = b"\"\\,:[]{}0-.eE+ tnuf\x01\x1f\x7f\x80\xc3\xff";
        let i = ((text.len() as f64) * at) as usize;
        let c = BYTES[usize::from(byte) % BYTES.len()];
        match op % 3 {
            0 if i < text.len() => text[i] = c,
            1 if i < text.len() => {
                text.remove(i);
            }
            _ => text.insert(i.min(text.len()), c),
        }
    }

    proptest! {
        /// The fast path agrees with the tree diff on arbitrary input, valid or not: documents
        /// damaged identically on both sides (the fuzz finding), on one side, or differently.
        #[test]
        fn lockstep_agrees_with_the_tree_on_arbitrary_input(
            v in arb_rich_json(),
            w in arb_rich_json(),
            same_doc in any::<bool>(),
            edits in prop::collection::vec((0.0..1.0f64, any::<u8>(), any::<u8>(), 0u8..3), 0..4),
        ) {
            let a = v.to_string().into_bytes();
            let mut b = if same_doc { a.clone() } else { w.to_string().into_bytes() };
            let mut a = a;
            for &(at, op, byte, side) in &edits {
                // 0: both sides (the same place when the documents are the same), 1: a, 2: b.
                if side != 2 {
                    mutate(&mut a, at, op, byte);
                }
                if side != 1 {
                    mutate(&mut b, at, op, byte);
                }
            }
            prop_assert_eq!(diff_bytes(&a, &b), tree_diff_bytes(&a, &b));
            prop_assert_eq!(diff_bytes(&a, &a), tree_diff_bytes(&a, &a));
        }

        #[test]
        fn lockstep_agrees_with_the_tree_on_arbitrary_bytes(
            a in prop::collection::vec(any::<u8>(), 0..64),
            b in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assert_eq!(diff_bytes(&a, &b), tree_diff_bytes(&a, &b));
            prop_assert_eq!(diff_bytes(&a, &a), tree_diff_bytes(&a, &a));
        }
    }
}
