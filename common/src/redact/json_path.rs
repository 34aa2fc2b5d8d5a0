//! [`JsonPath`]: the JSON paths of `redact-json` rules and of the mock's `--ignore` rules.

use std::fmt;

use serde_json::Value;

use super::RuleError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Child(String),
    Descendant(String),
    Any,
    Index(usize),
}

/// A JSON path as redaction rules (`redact-json`) and mock ignore rules write it: `$.a.b`,
/// `$..name` (at any depth), `$.list[*].x`, `$.list[0]`, `$['odd key']`. Parsed once, applied
/// to parsed bodies with [`JsonPath::visit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    pub(super) segs: Vec<Seg>,
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonPath {
    /// Parses a path; the error names it and says what is wrong.
    pub fn parse(path: &str) -> Result<JsonPath, RuleError> {
        Ok(JsonPath {
            text: path.trim().to_owned(),
            segs: parse_path(path)?,
        })
    }

    /// The path as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Calls `f` on every value the path selects in `v` (`$..name` selects every `name` at any
    /// depth, and does not look inside a selected value). Returns whether `f` returned `true`
    /// for any of them.
    pub fn visit(&self, v: &mut Value, f: &mut dyn FnMut(&mut Value) -> bool) -> bool {
        visit(v, &self.segs, f)
    }
}

fn visit(v: &mut Value, path: &[Seg], f: &mut dyn FnMut(&mut Value) -> bool) -> bool {
    let Some((seg, rest)) = path.split_first() else {
        return false;
    };
    let leaf_or_descend = |child: &mut Value, f: &mut dyn FnMut(&mut Value) -> bool| {
        if rest.is_empty() {
            f(child)
        } else {
            visit(child, rest, f)
        }
    };
    let mut hit = false;
    match seg {
        Seg::Child(name) => {
            if let Some(child) = v.as_object_mut().and_then(|o| o.get_mut(name)) {
                hit |= leaf_or_descend(child, f);
            }
        }
        Seg::Index(i) => {
            if let Some(child) = v.as_array_mut().and_then(|a| a.get_mut(*i)) {
                hit |= leaf_or_descend(child, f);
            }
        }
        Seg::Any => match v {
            Value::Array(a) => {
                for child in a {
                    hit |= leaf_or_descend(child, f);
                }
            }
            Value::Object(o) => {
                for (_, child) in o.iter_mut() {
                    hit |= leaf_or_descend(child, f);
                }
            }
            _ => {}
        },
        Seg::Descendant(name) => match v {
            Value::Object(o) => {
                for (k, child) in o.iter_mut() {
                    if k == name {
                        hit |= leaf_or_descend(child, f);
                    } else {
                        hit |= visit(child, path, f);
                    }
                }
            }
            Value::Array(a) => {
                for child in a {
                    hit |= visit(child, path, f);
                }
            }
            _ => {}
        },
    }
    hit
}

pub(super) fn parse_path(path: &str) -> Result<Vec<Seg>, RuleError> {
    let err = |m: &str| RuleError::JsonPath {
        path: path.to_owned(),
        message: m.to_owned(),
    };
    let rest = path
        .trim()
        .strip_prefix('$')
        .ok_or_else(|| err("must start with `$`"))?;
    let b = rest.as_bytes();
    let mut segs = Vec::new();
    let mut i = 0;
    let name_end = |from: usize| {
        b[from..]
            .iter()
            .position(|&c| c == b'.' || c == b'[')
            .map_or(b.len(), |p| from + p)
    };
    while i < b.len() {
        if b[i..].starts_with(b"..") {
            let end = name_end(i + 2);
            let name = &rest[i + 2..end];
            if name.is_empty() || name == "*" {
                return Err(err("`..` must be followed by a field name"));
            }
            segs.push(Seg::Descendant(name.to_owned()));
            i = end;
        } else if b[i] == b'.' {
            let end = name_end(i + 1);
            let name = &rest[i + 1..end];
            match name {
                "" => return Err(err("empty field name")),
                "*" => segs.push(Seg::Any),
                n => segs.push(Seg::Child(n.to_owned())),
            }
            i = end;
        } else if b[i] == b'[' {
            let close = b[i..]
                .iter()
                .position(|&c| c == b']')
                .ok_or_else(|| err("unclosed `[`"))?
                + i;
            let inner = rest[i + 1..close].trim();
            if inner == "*" {
                segs.push(Seg::Any);
            } else if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                segs.push(Seg::Child(q.to_owned()));
            } else {
                let n: usize = inner
                    .parse()
                    .map_err(|_| err("index must be a number, `*` or a quoted name"))?;
                segs.push(Seg::Index(n));
            }
            i = close + 1;
        } else {
            return Err(err("expected `.`, `..` or `[` after `$`"));
        }
    }
    if segs.is_empty() {
        return Err(err("path selects the whole body"));
    }
    Ok(segs)
}
