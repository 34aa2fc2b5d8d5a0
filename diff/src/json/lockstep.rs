//! Lockstep walk over two JSON texts of (mostly) the same shape.
//!
//! Equal regions are compared as raw bytes and never parsed into values. At the first difference
//! inside an array, or when an object's keys diverge, that container is parsed on both sides and
//! handed to the tree walk (which knows about reordering, missing keys and numeric equality);
//! differing scalars are parsed and compared the same way. Findings emitted inside a container
//! that falls back are discarded first, so the result equals the tree diff.
//!
//! Validity: the walk must accept exactly the documents serde_json accepts (the tree diff is the
//! reference, and a malformed body must be reported undecodable). A region that is equal on both
//! sides is validated once, on the baseline side, by a single validating scan ([`check`]) that
//! also finds its end: `b` holds the same bytes, so it holds the same valid value. Regions that
//! differ are parsed by serde_json on both sides; separators, whitespace and the document's end
//! are checked on both sides. Whenever the scan is unsure (a surrogate escape, a number with an
//! exponent, deep nesting) it asks serde_json or gives up (`Bail`), and the tree diff decides.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{JsonDiff, Node, push_key, walk};

/// Malformed input, nesting too deep or a case the walk leaves to the tree: use the tree diff
/// instead (which also gives serde_json's verdict on validity).
#[derive(Debug)]
pub(super) struct Bail;

/// Deepest nesting (containers around a value, plus its own) the walk handles: serde_json
/// refuses 128 levels, and every region parsed on its own starts with a fresh budget, so the
/// walk leaves documents anywhere near that to the tree diff.
const MAX_DEPTH: usize = 100;

pub(super) fn diff(a: &[u8], b: &[u8]) -> Result<Vec<JsonDiff>, Bail> {
    let mut w = Walk {
        a,
        b,
        path: String::from("$"),
        out: Vec::new(),
    };
    let (ea, eb) = w.value(ws(a, 0), ws(b, 0), 0)?;
    if ws(a, ea) != a.len() || ws(b, eb) != b.len() {
        return Err(Bail);
    }
    Ok(w.out)
}

fn ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn at(s: &[u8], i: usize) -> Result<u8, Bail> {
    s.get(i).copied().ok_or(Bail)
}

/// Whether `c` may follow a value (what ends a number or a literal).
fn is_delimiter(c: u8) -> bool {
    matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
}

/// End (exclusive) of the string starting at `i` (which holds `"`). Does not validate.
fn string_end(s: &[u8], i: usize) -> Result<usize, Bail> {
    let mut j = i + 1;
    loop {
        match at(s, j)? {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
}

/// End (exclusive) of the value starting at `i`, without validating it; `Bail` when its
/// nesting (plus `depth` around it) is beyond [`MAX_DEPTH`].
fn value_end(s: &[u8], i: usize, depth: usize) -> Result<usize, Bail> {
    match at(s, i)? {
        b'"' => string_end(s, i),
        b'{' | b'[' => {
            let mut level = depth;
            let mut j = i;
            loop {
                match at(s, j)? {
                    b'"' => {
                        j = string_end(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => {
                        level += 1;
                        if level > MAX_DEPTH {
                            return Err(Bail);
                        }
                    }
                    b'}' | b']' => {
                        level -= 1;
                        if level == depth {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while j < s.len() && !is_delimiter(s[j]) {
                j += 1;
            }
            if j == i { Err(Bail) } else { Ok(j) }
        }
    }
}

/// End (exclusive) of the valid JSON value starting at `i`, found by one validating scan;
/// `Bail` when it is not valid (or the scan is unsure). `depth`: containers around it.
fn check(s: &[u8], i: usize, depth: usize) -> Result<usize, Bail> {
    match at(s, i)? {
        b'"' => check_string(s, i),
        b'{' => {
            if depth >= MAX_DEPTH {
                return Err(Bail);
            }
            let mut j = ws(s, i + 1);
            if at(s, j)? == b'}' {
                return Ok(j + 1);
            }
            loop {
                if at(s, j)? != b'"' {
                    return Err(Bail);
                }
                j = ws(s, check_string(s, j)?);
                if at(s, j)? != b':' {
                    return Err(Bail);
                }
                j = ws(s, check(s, ws(s, j + 1), depth + 1)?);
                match at(s, j)? {
                    b',' => j = ws(s, j + 1),
                    b'}' => return Ok(j + 1),
                    _ => return Err(Bail),
                }
            }
        }
        b'[' => {
            if depth >= MAX_DEPTH {
                return Err(Bail);
            }
            let mut j = ws(s, i + 1);
            if at(s, j)? == b']' {
                return Ok(j + 1);
            }
            loop {
                j = ws(s, check(s, j, depth + 1)?);
                match at(s, j)? {
                    b',' => j = ws(s, j + 1),
                    b']' => return Ok(j + 1),
                    _ => return Err(Bail),
                }
            }
        }
        b't' => literal(s, i, b"true"),
        b'f' => literal(s, i, b"false"),
        b'n' => literal(s, i, b"null"),
        b'-' | b'0'..=b'9' => check_number(s, i),
        _ => Err(Bail),
    }
}

fn literal(s: &[u8], i: usize, lit: &[u8]) -> Result<usize, Bail> {
    if s.get(i..i + lit.len()) == Some(lit) {
        Ok(i + lit.len())
    } else {
        Err(Bail)
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; a long number or one with an exponent
/// (which may be out of an f64's range) is also parsed by serde_json.
fn check_number(s: &[u8], i: usize) -> Result<usize, Bail> {
    fn digits(s: &[u8], mut j: usize) -> Result<usize, Bail> {
        let start = j;
        while s.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == start { Err(Bail) } else { Ok(j) }
    }
    let mut j = i;
    if s.get(j) == Some(&b'-') {
        j += 1;
    }
    j = match at(s, j)? {
        b'0' => j + 1,
        _ => digits(s, j)?,
    };
    if s.get(j) == Some(&b'.') {
        j = digits(s, j + 1)?;
    }
    let mut simple = true;
    if matches!(s.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        j = digits(s, j)?;
        simple = false;
    }
    if !simple || j - i > 24 {
        serde_json::from_slice::<Valid>(&s[i..j]).map_err(|_| Bail)?;
    }
    Ok(j)
}

/// A string: no control characters, valid escapes, valid UTF-8. A `\u` escape of a
/// surrogate (valid only in a well-formed pair) is left to serde_json.
fn check_string(s: &[u8], i: usize) -> Result<usize, Bail> {
    let mut j = i + 1;
    let (mut non_ascii, mut surrogate) = (false, false);
    loop {
        j = skip_plain(s, j);
        match at(s, j)? {
            b'"' => break,
            b'\\' => match at(s, j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                b'u' => {
                    let mut v = 0u32;
                    for &h in s.get(j + 2..j + 6).ok_or(Bail)? {
                        v = v * 16 + char::from(h).to_digit(16).ok_or(Bail)?;
                    }
                    surrogate |= (0xD800..0xE000).contains(&v);
                    j += 6;
                }
                _ => return Err(Bail),
            },
            0x00..=0x1f => return Err(Bail),
            0x80..=0xff => {
                non_ascii = true;
                j += 1;
            }
            _ => j += 1,
        }
    }
    if non_ascii {
        std::str::from_utf8(&s[i + 1..j]).map_err(|_| Bail)?;
    }
    if surrogate {
        serde_json::from_slice::<Valid>(&s[i..=j]).map_err(|_| Bail)?;
    }
    Ok(j + 1)
}

/// The first index at or after `j` that holds `"`, `\\`, a control character or a non-ASCII
/// byte (or `s.len()`): eight bytes at a time, then byte by byte.
fn skip_plain(s: &[u8], mut j: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte of `v` that is zero (exact for "any", which is all we ask).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = s.get(j..j + 8) {
        let Ok(w) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(w);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let special = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | below_space
            | (x & HIGH);
        if special != 0 {
            break;
        }
        j += 8;
    }
    while let Some(&c) = s.get(j) {
        if c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c) {
            break;
        }
        j += 1;
    }
    j
}

/// Accepts what [`Node`] accepts (every value through `deserialize_any`, so numbers are
/// range-checked and strings decoded), building nothing.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidVisitor)
    }
}

struct ValidVisitor;

impl<'de> Visitor<'de> for ValidVisitor {
    type Value = Valid;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_key::<Valid>()?.is_some() {
            map.next_value::<Valid>()?;
        }
        Ok(Valid)
    }
}

/// When the value at `a[ia..]` is valid and `b` holds the same bytes at `ib` (ending where a
/// value may end), the ends of both. `Bail` when `a`'s value is not valid.
fn same(
    a: &[u8],
    ia: usize,
    b: &[u8],
    ib: usize,
    depth: usize,
) -> Result<Option<(usize, usize)>, Bail> {
    let ea = check(a, ia, depth)?;
    let eb = ib + (ea - ia);
    let equal = b.get(ib..eb) == Some(&a[ia..ea]) && b.get(eb).is_none_or(|&c| is_delimiter(c));
    Ok(equal.then_some((ea, eb)))
}

/// Parses `a` and `b` (each one value) and runs the tree walk on them at `path`.
fn tree(a: &[u8], b: &[u8], path: &mut String, out: &mut Vec<JsonDiff>) -> Result<(), Bail> {
    let na: Node<'_> = serde_json::from_slice(a).map_err(|_| Bail)?;
    let nb: Node<'_> = serde_json::from_slice(b).map_err(|_| Bail)?;
    walk(&na, &nb, path, out);
    Ok(())
}

/// Where a container's walk stands after its opening bracket or after a member, on both sides.
enum Step {
    /// Another member follows on both sides, at these positions.
    Member(usize, usize),
    /// Both sides close here; positions after the closing bracket.
    Close(usize, usize),
    /// One side closes and the other goes on: the container differs in length.
    Diverge,
}

/// The step at `ia`/`ib`, where `first` says whether a member may follow directly (just after
/// the opening bracket) or only after a comma. Anything else is not JSON.
fn step(a: &[u8], ia: usize, b: &[u8], ib: usize, close: u8, first: bool) -> Result<Step, Bail> {
    let (ca, cb) = (at(a, ia)?, at(b, ib)?);
    if ca == close && cb == close {
        return Ok(Step::Close(ia + 1, ib + 1));
    }
    if first {
        return Ok(if ca == close || cb == close {
            Step::Diverge
        } else {
            Step::Member(ia, ib)
        });
    }
    match (ca, cb) {
        (b',', b',') => Ok(Step::Member(ws(a, ia + 1), ws(b, ib + 1))),
        (x, y) if (x == b',' || x == close) && (y == b',' || y == close) => Ok(Step::Diverge),
        _ => Err(Bail),
    }
}

/// One lockstep walk: the two texts, the path of the value being compared and the findings.
struct Walk<'a> {
    a: &'a [u8],
    b: &'a [u8],
    path: String,
    out: Vec<JsonDiff>,
}

impl Walk<'_> {
    fn value(&mut self, ia: usize, ib: usize, depth: usize) -> Result<(usize, usize), Bail> {
        if depth >= MAX_DEPTH {
            return Err(Bail);
        }
        match (at(self.a, ia)?, at(self.b, ib)?) {
            (b'{', b'{') => self.object(ia, ib, depth),
            (b'[', b'[') => self.array(ia, ib, depth),
            _ => match same(self.a, ia, self.b, ib, depth)? {
                Some(ends) => Ok(ends),
                None => self.differing(ia, ib, depth),
            },
        }
    }

    /// Two values that differ (or may): parsed by serde_json and compared by the tree walk.
    /// Once the findings are capped they are still parsed, for their validity.
    fn differing(&mut self, ia: usize, ib: usize, depth: usize) -> Result<(usize, usize), Bail> {
        let (a, b) = (self.a, self.b);
        let (ea, eb) = (value_end(a, ia, depth)?, value_end(b, ib, depth)?);
        tree(&a[ia..ea], &b[ib..eb], &mut self.path, &mut self.out)?;
        Ok((ea, eb))
    }

    /// Re-does the container at `sa`/`sb` with the tree walk, after discarding what it emitted
    /// (the findings from `mark` on).
    fn fall_back(
        &mut self,
        sa: usize,
        sb: usize,
        mark: usize,
        depth: usize,
    ) -> Result<(usize, usize), Bail> {
        self.out.truncate(mark);
        self.differing(sa, sb, depth)
    }

    fn object(&mut self, sa: usize, sb: usize, depth: usize) -> Result<(usize, usize), Bail> {
        let (a, b) = (self.a, self.b);
        let mark = self.out.len();
        let len = self.path.len();
        let mut next = step(a, ws(a, sa + 1), b, ws(b, sb + 1), b'}', true)?;
        loop {
            let (ia, ib) = match next {
                Step::Member(ia, ib) => (ia, ib),
                Step::Close(ea, eb) => return Ok((ea, eb)),
                Step::Diverge => return self.fall_back(sa, sb, mark, depth),
            };
            // After a comma a key must follow (`{"a":1,}` is not JSON): both sides need `"`.
            if at(a, ia)? != b'"' || at(b, ib)? != b'"' {
                return Err(Bail);
            }
            let ea = check_string(a, ia)?;
            let eb = string_end(b, ib)?;
            let (ka, kb) = (&a[ia + 1..ea - 1], &b[ib + 1..eb - 1]);
            if ka != kb {
                return self.fall_back(sa, sb, mark, depth);
            }
            let (ca, cb) = (ws(a, ea), ws(b, eb));
            if at(a, ca)? != b':' || at(b, cb)? != b':' {
                return Err(Bail);
            }
            let (va, vb) = (ws(a, ca + 1), ws(b, cb + 1));
            let (ea, eb) = match same(a, va, b, vb, depth + 1)? {
                Some(ends) => ends,
                None => {
                    let name = if ka.contains(&b'\\') {
                        serde_json::from_slice::<String>(&a[ia..ca]).map_err(|_| Bail)?
                    } else {
                        std::str::from_utf8(ka).map_err(|_| Bail)?.to_owned()
                    };
                    push_key(&mut self.path, &name);
                    let r = self.value(va, vb, depth + 1);
                    self.path.truncate(len);
                    r?
                }
            };
            next = step(a, ws(a, ea), b, ws(b, eb), b'}', false)?;
        }
    }

    fn array(&mut self, sa: usize, sb: usize, depth: usize) -> Result<(usize, usize), Bail> {
        let (a, b) = (self.a, self.b);
        let mark = self.out.len();
        let mut next = step(a, ws(a, sa + 1), b, ws(b, sb + 1), b']', true)?;
        loop {
            let (ia, ib) = match next {
                Step::Member(ia, ib) => (ia, ib),
                Step::Close(ea, eb) => return Ok((ea, eb)),
                Step::Diverge => return self.fall_back(sa, sb, mark, depth),
            };
            let Some((ea, eb)) = same(a, ia, b, ib, depth + 1)? else {
                // Elements differ: the tree walk decides between order, length and elements.
                return self.fall_back(sa, sb, mark, depth);
            };
            next = step(a, ws(a, ea), b, ws(b, eb), b']', false)?;
        }
    }
}
