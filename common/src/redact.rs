//! Redaction: secrets are replaced in a record *before* it is handed to the tape writer, so they
//! never reach the spool or a sealed file.
//!
//! The plug-in point is the [`Redactor`] trait. The built-in [`RuleRedactor`] is made by
//! [`RedactorBuilder`] and applies, in this order:
//! 1. sensitive headers (request and response): [`DEFAULT_SENSITIVE_HEADERS`] plus a user list;
//! 2. path segments by template (`/reset-password/{token}`; `*` and a final `**` match and keep);
//! 3. query parameters by name (also in `application/x-www-form-urlencoded` bodies);
//! 4. JSON body fields by path (`$.password`, `$.user.ssn`, `$..card_number`, `$.items[*].pan`).
//!    A body that does not parse as JSON (for example one truncated at the capture cap) still has
//!    the *last key* of every path redacted textually (`"password": "…"`), so a cut body cannot
//!    leak a field that a whole body would have hidden;
//! 5. regular expressions over bodies (card numbers, e-mail addresses…).
//!
//! Two modes: [`RedactMode::Mask`] writes a fixed placeholder ([`MASK`]); [`RedactMode::Hash`]
//! writes `hmac-sha256:<32 hex digits>`, a keyed HMAC-SHA256 of the secret, so equal secrets map
//! to equal tokens (correlation survives) while the secret cannot be recovered without the key.
//!
//! Compressed bodies (`Content-Encoding: gzip`, `x-gzip`, `deflate`, `br`, `zstd`, stacked) are
//! looked into whenever a body rule (JSON path, regex, query parameter) is configured:
//! - the body is decoded, at most [`DEFAULT_DECODED_LIMIT`] bytes
//!   ([`RedactorBuilder::decoded_limit`]), and the rules run on the decoded bytes;
//! - nothing found and the stream decoded completely: the stored body stays the upstream's bytes;
//! - something redacted, or only a prefix decoded (a body cut at the capture cap, a damaged
//!   stream, more than the limit): the redacted decoded bytes are *encoded again* with the same
//!   codings and stored, so the tape stays self-consistent (the stored body decodes with the
//!   stored `Content-Encoding`, and the differ and replayer need no special case). The exchange
//!   gets [`flags::BODY_REENCODED`] and, for a prefix, the body's truncated flag;
//! - nothing decodes (an unknown coding such as `compress`, or garbage): the body is dropped
//!   (stored empty, flagged truncated, [`flags::BODY_DROPPED`]), because it cannot be shown to
//!   be free of secrets.
//!
//! Without body rules, bodies are never decoded: the stored bytes are the wire bytes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use tapedeck_storage::{Exchange, Header, find_header, flags};

use crate::coding;
pub use json_path::JsonPath;
use json_path::Seg;
#[cfg(test)]
use json_path::parse_path;
use path::PathTemplate;

/// Headers redacted by default, whatever the configuration says.
pub const DEFAULT_SENSITIVE_HEADERS: [&str; 6] = tapedeck_storage::SENSITIVE_HEADERS;

/// The placeholder written in [`RedactMode::Mask`] (in query strings: `REDACTED`). Shared with
/// the replayer through the storage crate, which recognizes it
/// ([`tapedeck_storage::is_redaction_placeholder`]).
pub const MASK: &str = tapedeck_storage::REDACTED_MASK;
const QUERY_MASK: &str = tapedeck_storage::REDACTED_URL_MASK;

/// Most bytes a compressed body is decoded to for redaction, unless
/// [`RedactorBuilder::decoded_limit`] says otherwise.
pub const DEFAULT_DECODED_LIMIT: usize = 8 << 20;

/// A component that removes secrets from a record before it is written.
///
/// It runs in the proxy's `logging` phase, after the response has been sent to the client, on the
/// proxy's worker thread: keep it CPU-only (no I/O) and proportional to the record's size.
pub trait Redactor: Send + Sync + fmt::Debug {
    /// Redacts `exchange` in place. Returns `true` when anything was replaced; the caller then
    /// sets [`flags::REDACTED`].
    fn redact(&self, exchange: &mut Exchange) -> bool;
}

/// How a secret is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedactMode {
    /// A fixed placeholder ([`MASK`]).
    #[default]
    Mask,
    /// A keyed HMAC-SHA256 token: equal secrets give equal tokens.
    Hash,
}

/// Why a redaction rule was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A JSON path that is not of the supported form.
    #[error("JSON path `{path}`: {message} (supported: $.a.b, $..name, $.list[*].x, $.list[0])")]
    JsonPath {
        /// The path as written.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A path template that cannot be used.
    #[error(
        "path template `{template}`: {message} (supported: /reset/{{token}}, /orgs/*/keys/{{}}/**)"
    )]
    PathTemplate {
        /// The template as written.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A regular expression that does not compile.
    #[error("regex `{pattern}`: {source}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The compiler's error.
        #[source]
        source: Box<regex::Error>,
    },
    /// `mode = "hash"` without a key in the environment variable.
    #[error("`hash` needs a key: set the environment variable {env} or `redact-key-file`")]
    MissingKey {
        /// The environment variable that was read.
        env: String,
    },
    /// The key file could not be read.
    #[error("cannot read {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key shorter than 16 bytes (after trimming whitespace).
    #[error("the `hash` key must be at least 16 bytes")]
    ShortKey,
}

impl RuleError {
    /// The config key (and, with `--` in front, the flag) the rule came from.
    pub fn key(&self) -> &'static str {
        match self {
            RuleError::JsonPath { .. } => "redact-json",
            RuleError::PathTemplate { .. } => "redact-path",
            RuleError::Regex { .. } => "redact-regex",
            RuleError::MissingKey { .. } | RuleError::ShortKey => "redact-mode",
            RuleError::KeyFile { .. } => "redact-key-file",
        }
    }
}

/// The redaction rules as a user writes them: `tapedeck record`'s `redact-*` flags and config
/// keys, `import-har` and `ticket` flags. Every way into a tape builds its redactor from this one
/// type with [`RedactRules::build`]; the default sensitive headers are always redacted on top.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RedactRules {
    /// Extra header names to redact (request and response), on top of the default list.
    pub headers: Vec<String>,
    /// Path templates whose `{…}` segments are redacted: `/reset-password/{token}`.
    pub path: Vec<String>,
    /// Query parameter names to redact (also in form-encoded bodies).
    pub query: Vec<String>,
    /// JSON body paths: `$.password`, `$.user.ssn`, `$..card_number`, `$.items[*].pan`.
    pub json: Vec<String>,
    /// Regular expressions whose matches in bodies are redacted.
    pub regex: Vec<String>,
    /// `mask` (a fixed placeholder, the default) or `hash` (a keyed HMAC-SHA256 token).
    pub mode: RedactMode,
    /// Environment variable holding the `hash` key (default `TAPEDECK_REDACT_KEY`).
    pub key_env: Option<String>,
    /// File holding the `hash` key (instead of the environment variable).
    pub key_file: Option<std::path::PathBuf>,
}

/// The environment variable read for the `hash` key unless `key-env` names another.
pub const DEFAULT_KEY_ENV: &str = "TAPEDECK_REDACT_KEY";

impl RedactRules {
    /// Checks every rule, reads the `hash` key (from `key_file` or the environment), and builds
    /// the redactor. Compressed bodies are decoded for redaction up to `decoded_limit` bytes.
    pub fn build(&self, decoded_limit: usize) -> Result<RuleRedactor, RuleError> {
        let mut b = RedactorBuilder::new().decoded_limit(decoded_limit);
        for h in &self.headers {
            b = b.header(h);
        }
        for t in &self.path {
            b = b.path_template(t)?;
        }
        for q in &self.query {
            b = b.query_param(q);
        }
        for p in &self.json {
            b = b.json_path(p)?;
        }
        for r in &self.regex {
            b = b.body_regex(r)?;
        }
        if self.mode == RedactMode::Hash {
            let key = match (&self.key_file, &self.key_env) {
                (Some(path), _) => std::fs::read(path).map_err(|source| RuleError::KeyFile {
                    path: path.clone(),
                    source,
                })?,
                (None, env) => {
                    let env = env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
                    std::env::var_os(env)
                        .map(|v| v.into_encoded_bytes())
                        .ok_or_else(|| RuleError::MissingKey {
                            env: env.to_owned(),
                        })?
                }
            };
            let key = key.trim_ascii();
            if key.len() < 16 {
                return Err(RuleError::ShortKey);
            }
            b = b.hash_with_key(key);
        }
        Ok(b.build())
    }
}

/// Builds a [`RuleRedactor`]. The default sensitive headers are always included.
#[derive(Debug, Clone, Default)]
pub struct RedactorBuilder {
    headers: Vec<String>,
    paths: Vec<PathTemplate>,
    query: Vec<String>,
    json: Vec<JsonPath>,
    regexes: Vec<regex::bytes::Regex>,
    key: Option<Vec<u8>>,
    decoded_limit: Option<usize>,
}

impl RedactorBuilder {
    /// A builder with the default sensitive headers and no other rule, in mask mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also redact this header (case-insensitive).
    pub fn header(mut self, name: &str) -> Self {
        self.headers.push(name.trim().to_ascii_lowercase());
        self
    }

    /// Redact the `{…}` segments of request paths that match this template
    /// (`/reset-password/{token}`; `*` matches and keeps one segment, a final `**` the rest).
    pub fn path_template(mut self, template: &str) -> Result<Self, RuleError> {
        self.paths.push(PathTemplate::parse(template)?);
        Ok(self)
    }

    /// Redact this query parameter (exact name) in the query string and in form bodies.
    pub fn query_param(mut self, name: &str) -> Self {
        self.query.push(name.to_owned());
        self
    }

    /// Redact the JSON body field(s) at `path`.
    pub fn json_path(mut self, path: &str) -> Result<Self, RuleError> {
        self.json.push(JsonPath::parse(path)?);
        Ok(self)
    }

    /// Redact every match of `pattern` in bodies.
    pub fn body_regex(mut self, pattern: &str) -> Result<Self, RuleError> {
        let re = regex::bytes::Regex::new(pattern).map_err(|e| RuleError::Regex {
            pattern: pattern.to_owned(),
            source: Box::new(e),
        })?;
        self.regexes.push(re);
        Ok(self)
    }

    /// Switch to [`RedactMode::Hash`] with this HMAC key.
    pub fn hash_with_key(mut self, key: &[u8]) -> Self {
        self.key = Some(key.to_vec());
        self
    }

    /// Decode compressed bodies to at most `limit` bytes (default [`DEFAULT_DECODED_LIMIT`]);
    /// what lies beyond is not stored.
    pub fn decoded_limit(mut self, limit: usize) -> Self {
        self.decoded_limit = Some(limit.max(1));
        self
    }

    /// Builds the redactor.
    pub fn build(self) -> RuleRedactor {
        let mut headers: Vec<String> = DEFAULT_SENSITIVE_HEADERS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for h in self.headers {
            if !headers.contains(&h) {
                headers.push(h);
            }
        }
        let mut names: Vec<String> = self
            .json
            .iter()
            .filter_map(|p| match p.segs.last() {
                Some(Seg::Child(n)) | Some(Seg::Descendant(n)) => Some(regex::escape(n)),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        let json_fallback = if names.is_empty() {
            None
        } else {
            let pattern = format!(
                // `(?-u)`: values are matched as bytes, so a byte that is not UTF-8 cannot end a
                // value early and leave its tail unmasked (found by fuzzing, issue 8).
                r#"(?-u)("(?:{})"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}}\]\s]+)"#,
                names.join("|")
            );
            regex::bytes::Regex::new(&pattern).ok()
        };
        let mac = self
            .key
            .and_then(|k| Hmac::<Sha256>::new_from_slice(&k).ok());
        let mut header_keys = [0u64; 4];
        for h in &headers {
            let k = name_key(h);
            header_keys[usize::from(k >> 6)] |= 1 << (k & 63);
        }
        RuleRedactor {
            inner: Arc::new(Inner {
                headers,
                paths: self.paths,
                header_keys,
                query: self.query,
                json: self.json,
                json_fallback,
                regexes: self.regexes,
                mac,
                decoded_limit: self.decoded_limit.unwrap_or(DEFAULT_DECODED_LIMIT),
            }),
        }
    }
}

/// The built-in [`Redactor`]: headers, path segments, query parameters, JSON paths and body
/// regexes. Cheap to
/// clone (shared rules).
#[derive(Clone)]
pub struct RuleRedactor {
    inner: Arc<Inner>,
}

impl Default for RuleRedactor {
    fn default() -> Self {
        RedactorBuilder::new().build()
    }
}

impl fmt::Debug for RuleRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RuleRedactor")
            .field("headers", &i.headers)
            .field("paths", &i.paths.len())
            .field("query", &i.query)
            .field("json_paths", &i.json.len())
            .field("regexes", &i.regexes.len())
            .field("decoded_limit", &i.decoded_limit)
            .field("mode", &self.mode())
            .finish()
    }
}

struct Inner {
    headers: Vec<String>,
    paths: Vec<PathTemplate>,
    /// The [`name_key`]s of `headers`: a header whose key is not in this set is not sensitive,
    /// which rules out nearly every header without comparing names (issue 13).
    header_keys: [u64; 4],
    query: Vec<String>,
    json: Vec<JsonPath>,
    json_fallback: Option<regex::bytes::Regex>,
    regexes: Vec<regex::bytes::Regex>,
    mac: Option<Hmac<Sha256>>,
    decoded_limit: usize,
}

impl RuleRedactor {
    /// The mode in use.
    pub fn mode(&self) -> RedactMode {
        if self.inner.mac.is_some() {
            RedactMode::Hash
        } else {
            RedactMode::Mask
        }
    }

    /// The replacement for `secret`: [`MASK`] or its HMAC token.
    pub fn token(&self, secret: &[u8]) -> String {
        match &self.inner.mac {
            None => MASK.to_owned(),
            Some(mac) => hmac_token(mac, secret),
        }
    }

    fn query_token(&self, secret: &[u8]) -> String {
        match &self.inner.mac {
            None => QUERY_MASK.to_owned(),
            Some(mac) => hmac_token(mac, secret),
        }
    }

    fn redact_headers(&self, headers: &mut [Header]) -> bool {
        let mut changed = false;
        for h in headers.iter_mut() {
            let k = name_key(&h.name);
            if self.inner.header_keys[usize::from(k >> 6)] & (1 << (k & 63)) != 0
                && self
                    .inner
                    .headers
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&h.name))
            {
                h.value = Bytes::from(self.token(&h.value));
                changed = true;
            }
        }
        changed
    }

    /// Redacts the named parameters of an `a=1&b=2` string; `None` when nothing matched.
    fn redact_pairs(&self, s: &str) -> Option<String> {
        if self.inner.query.is_empty() {
            return None;
        }
        let mut changed = false;
        let mut out = String::with_capacity(s.len());
        for (i, part) in s.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match part.split_once('=') {
                Some((name, value))
                    if !value.is_empty() && self.inner.query.iter().any(|q| q == name) =>
                {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(&self.query_token(value.as_bytes()));
                    changed = true;
                }
                _ => out.push_str(part),
            }
        }
        changed.then_some(out)
    }

    fn has_body_rules(&self) -> bool {
        let i = &self.inner;
        !i.json.is_empty() || !i.regexes.is_empty() || !i.query.is_empty()
    }

    /// Redacts a body that may carry a `Content-Encoding` (see the module doc for the policy).
    /// Returns `true` when a secret was replaced or the body dropped.
    fn redact_coded_body(
        &self,
        body: &mut Bytes,
        truncated: &mut bool,
        headers: &[Header],
        ex_flags: &mut u32,
    ) -> bool {
        if body.is_empty() || !self.has_body_rules() {
            return false;
        }
        let drop_body = |body: &mut Bytes, truncated: &mut bool, ex_flags: &mut u32| {
            *body = Bytes::new();
            *truncated = true;
            *ex_flags |= flags::BODY_DROPPED;
            true
        };
        let codings = match coding::codings(headers) {
            Ok(c) if c.is_empty() => return self.redact_body(body, headers),
            Ok(c) => c,
            Err(_) => return drop_body(body, truncated, ex_flags),
        };
        let Ok(decoded) = coding::decode(body, &codings, self.inner.decoded_limit) else {
            return drop_body(body, truncated, ex_flags);
        };
        let complete = decoded.complete();
        let mut plain = Bytes::from(decoded.bytes);
        let hit = self.redact_body(&mut plain, headers);
        if !hit && complete {
            return false;
        }
        // Something was replaced, or only a prefix was looked at: what is stored is the
        // (redacted) decoded prefix, encoded again; never the original bytes.
        match coding::encode(&plain, &decoded.codings) {
            Some(enc) => {
                *body = Bytes::from(enc);
                *ex_flags |= flags::BODY_REENCODED;
                if !complete {
                    *truncated = true;
                }
                hit
            }
            None => drop_body(body, truncated, ex_flags),
        }
    }

    fn redact_body(&self, body: &mut Bytes, headers: &[Header]) -> bool {
        if body.is_empty() {
            return false;
        }
        let mut changed = false;
        let content_type = find_header(headers, "content-type").map(|h| h.value.clone());
        let ct = content_type.as_deref().unwrap_or_default();
        let is_form = contains_ci(ct, b"x-www-form-urlencoded");
        if is_form
            && let Ok(text) = std::str::from_utf8(body)
            && let Some(new) = self.redact_pairs(text)
        {
            *body = Bytes::from(new);
            changed = true;
        }
        if !self.inner.json.is_empty() && !is_form {
            let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
            let looks_json = contains_ci(ct, b"json") || matches!(first, Some(b'{') | Some(b'['));
            if looks_json {
                match serde_json::from_slice::<Value>(body) {
                    Ok(mut v) => {
                        let mut hit = false;
                        for path in &self.inner.json {
                            hit |= path.visit(&mut v, &mut |leaf| {
                                if leaf.is_null() {
                                    return false;
                                }
                                *leaf = self.json_token(leaf);
                                true
                            });
                        }
                        if hit && let Ok(out) = serde_json::to_vec(&v) {
                            *body = Bytes::from(out);
                            changed = true;
                        }
                    }
                    Err(_) => {
                        if let Some(re) = &self.inner.json_fallback {
                            changed |= self.replace_regex(body, re, Some(1));
                        }
                    }
                }
            }
        }
        for re in &self.inner.regexes {
            changed |= self.replace_regex(body, re, None);
        }
        changed
    }

    /// Replaces every match of `re` (or only the text after capture group `keep` when given).
    fn replace_regex(
        &self,
        body: &mut Bytes,
        re: &regex::bytes::Regex,
        keep: Option<usize>,
    ) -> bool {
        if !re.is_match(body) {
            return false;
        }
        let out = re.replace_all(body, |c: &regex::bytes::Captures<'_>| {
            let whole = c.get(0).map_or(&[][..], |m| m.as_bytes());
            match keep.and_then(|g| c.get(g)) {
                Some(prefix) => {
                    let value = &whole[prefix.as_bytes().len()..];
                    let inner = value
                        .strip_prefix(b"\"")
                        .map(|v| v.strip_suffix(b"\"").unwrap_or(v))
                        .unwrap_or(value);
                    let mut r = prefix.as_bytes().to_vec();
                    r.push(b'"');
                    r.extend_from_slice(self.token(inner).as_bytes());
                    r.push(b'"');
                    r
                }
                None => self.token(whole).into_bytes(),
            }
        });
        *body = Bytes::from(out.into_owned());
        true
    }

    fn json_token(&self, v: &Value) -> Value {
        let s = match v {
            Value::String(s) => self.token(s.as_bytes()),
            other => self.token(other.to_string().as_bytes()),
        };
        Value::String(s)
    }
}

impl Redactor for RuleRedactor {
    fn redact(&self, ex: &mut Exchange) -> bool {
        let mut changed = self.redact_headers(&mut ex.req_headers);
        changed |= self.redact_headers(&mut ex.resp_headers);
        let token = |secret: &[u8]| self.query_token(secret);
        if let Some(new) = self
            .inner
            .paths
            .iter()
            .find_map(|t| t.redact(&ex.path, &token))
        {
            ex.path = new.into();
            changed = true;
        }
        if let Some(q) = &ex.query
            && let Some(new) = self.redact_pairs(q)
        {
            ex.query = Some(new);
            changed = true;
        }
        changed |= self.redact_coded_body(
            &mut ex.req_body,
            &mut ex.req_body_truncated,
            &ex.req_headers,
            &mut ex.flags,
        );
        changed |= self.redact_coded_body(
            &mut ex.resp_body,
            &mut ex.resp_body_truncated,
            &ex.resp_headers,
            &mut ex.flags,
        );
        if changed {
            ex.flags |= flags::REDACTED;
        }
        changed
    }
}

fn hmac_token(mac: &Hmac<Sha256>, secret: &[u8]) -> String {
    let mut m = mac.clone();
    m.update(secret);
    let digest = m.finalize().into_bytes();
    let mut s = String::with_capacity(tapedeck_storage::REDACTED_HASH_PREFIX.len() + 32);
    s.push_str(tapedeck_storage::REDACTED_HASH_PREFIX);
    for b in &digest[..16] {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A header name's key in [`Inner::header_keys`]: its length and its last byte, ASCII case
/// folded, so that names equal ignoring ASCII case have equal keys.
fn name_key(name: &str) -> u8 {
    let last = name.as_bytes().last().map_or(0, u8::to_ascii_lowercase);
    // Only the low 8 bits of the length are kept: longer names share keys, which is allowed.
    (name.len() & 0xff).to_le_bytes()[0].wrapping_mul(29) ^ last
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether `value` is a placeholder the redactor writes: [`MASK`] (bodies and headers),
/// `REDACTED` (query strings and form bodies) or an `hmac-sha256:<32 hex digits>` token. A
/// consumer that compares recorded values with live ones (the dependency mock) treats these as
/// "any value".
pub fn is_placeholder(value: &[u8]) -> bool {
    value == QUERY_MASK.as_bytes() || tapedeck_storage::is_redaction_placeholder(value)
}

mod json_path;
mod path;

#[cfg(test)]
mod tests;
