//! Which recorded exchanges are replayed: filters, deterministic sampling, sharding and the
//! unsafe-method guard, with counts of everything left out.
//!
//! **Shard hash** (stable across versions and machines; a documented contract so that N workers
//! split a tape exactly): FNV-1a 64-bit over the 16 bytes of the exchange id (big-endian UUID
//! bytes as stored), then `hash % N`. **Sample hash**: FNV-1a 64-bit over the byte `0x53`
//! (`'S'`) followed by the same 16 bytes; an exchange is kept when `(hash >> 11) / 2^53 < f`.
//! The two hashes differ so that sampling within a shard stays uniform.

use std::collections::BTreeMap;

use serde::Serialize;
use tapedeck_storage::Exchange;
use tapedeck_storage::route::{push_template_path, template_path};
use uuid::Uuid;

use crate::config::Selection;

/// At most this many distinct routes are counted; the rest are summed under [`OTHER_ROUTES`].
const MAX_ROUTES: usize = 1000;
/// Key under which routes beyond the first 1000 distinct ones are counted.
pub const OTHER_ROUTES: &str = "(other routes)";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The shard hash of an exchange id: FNV-1a 64 over its 16 bytes.
pub fn shard_hash(id: &Uuid) -> u64 {
    fnv1a(FNV_OFFSET, id.as_bytes())
}

/// The sampling position of an id in `[0, 1)`.
pub fn sample_position(id: &Uuid) -> f64 {
    let h = fnv1a(fnv1a(FNV_OFFSET, b"S"), id.as_bytes());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// `K/N`: this worker replays shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// K, in `0..count`.
    pub index: u64,
    /// N ≥ 1.
    pub count: u64,
}

/// Why a `--shard` value is not `K/N` with `0 ≤ K < N`. Every variant names the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// No `/` between K and N.
    #[error("`{text}`: expected K/N, e.g. 0/3")]
    NotKOverN {
        /// The value as written.
        text: String,
    },
    /// K is not a non-negative integer.
    #[error("`{text}`: `{index}` is not a shard index")]
    BadIndex {
        /// The value as written.
        text: String,
        /// The K part.
        index: String,
        /// Why it is not a number.
        #[source]
        source: std::num::ParseIntError,
    },
    /// N is not a non-negative integer.
    #[error("`{text}`: `{count}` is not a shard count")]
    BadCount {
        /// The value as written.
        text: String,
        /// The N part.
        count: String,
        /// Why it is not a number.
        #[source]
        source: std::num::ParseIntError,
    },
    /// N is 0, or K is not below N.
    #[error("`{text}`: need 0 ≤ K < N (shards are numbered from 0)")]
    OutOfRange {
        /// The value as written.
        text: String,
        /// K.
        index: u64,
        /// N.
        count: u64,
    },
}

impl Shard {
    /// Parses `K/N`.
    pub fn parse(s: &str) -> Result<Shard, ShardError> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| ShardError::NotKOverN { text: s.to_owned() })?;
        let index: u64 = k.trim().parse().map_err(|source| ShardError::BadIndex {
            text: s.to_owned(),
            index: k.to_owned(),
            source,
        })?;
        let count: u64 = n.trim().parse().map_err(|source| ShardError::BadCount {
            text: s.to_owned(),
            count: n.to_owned(),
            source,
        })?;
        if count == 0 || index >= count {
            return Err(ShardError::OutOfRange {
                text: s.to_owned(),
                index,
                count,
            });
        }
        Ok(Shard { index, count })
    }

    /// Whether the exchange with this id belongs to this shard.
    pub fn contains(&self, id: &Uuid) -> bool {
        shard_hash(id) % self.count == self.index
    }
}

/// Whether a method may change state on the target (POST, PUT, PATCH, DELETE, and anything not
/// known to be safe).
pub fn is_unsafe_method(m: &str) -> bool {
    !["GET", "HEAD", "OPTIONS", "TRACE"]
        .iter()
        .any(|safe| safe.eq_ignore_ascii_case(m))
}

/// Counts of what the selection let through and left out.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SelectionStats {
    /// Recorded exchanges read from the tape.
    pub read: u64,
    /// Exchanges selected for replay.
    pub selected: u64,
    /// Outside `--from`/`--to`.
    pub skipped_time: u64,
    /// Not one of `--method`.
    pub skipped_method: u64,
    /// Path matches no `--route`.
    pub skipped_route: u64,
    /// Belongs to another `--shard`.
    pub skipped_shard: u64,
    /// Left out by `--sample`.
    pub skipped_sample: u64,
    /// Unsafe method without `--allow-writes`.
    pub skipped_writes: u64,
    /// Unsafe methods skipped, by route (`METHOD /template`).
    pub skipped_writes_by_route: BTreeMap<String, u64>,
    /// Recorded against the host of a target, without `--allow-same-host`.
    pub skipped_same_host: u64,
    /// Selected exchanges by route (`METHOD /template`).
    pub routes: BTreeMap<String, u64>,
    /// Selected exchanges whose recorded request body was truncated at capture (replayed with
    /// the captured prefix).
    pub truncated_bodies: u64,
    /// Selected exchanges that carry a redaction placeholder (`[REDACTED]`, `hmac-sha256:…`)
    /// in a request header that `--set-header`/`--drop-header` does not replace, by lower-case
    /// header name: the targets receive the placeholder, not a credential. Counted only when
    /// request headers are read (a real replay, a dry run, `--strict-credentials`).
    pub redacted_credentials: BTreeMap<String, u64>,
}

/// `authorization 400, x-api-key 400`: placeholders by header, for messages.
pub fn describe_placeholders(found: &BTreeMap<String, u64>) -> String {
    found
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The flags that send real values instead: `--set-header 'Authorization: ${AUTHORIZATION}'`
/// per header (the variable named after the header), space-separated.
pub fn set_header_fix(found: &BTreeMap<String, u64>) -> String {
    found
        .keys()
        .map(|name| {
            let shown: Vec<String> = name
                .split('-')
                .map(|part| {
                    let mut c = part.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            let var = name.to_ascii_uppercase().replace('-', "_");
            format!("--set-header '{}: ${{{var}}}'", shown.join("-"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Counts the request headers of a selected exchange that hold a redaction placeholder and are
/// not replaced: once per header name and request. `buf` is reused for the lower-case name, so
/// nothing is allocated for a header already counted.
fn count_placeholders(
    ex: &Exchange,
    replaced: &[String],
    buf: &mut String,
    s: &mut SelectionStats,
) {
    for (i, h) in ex.req_headers.iter().enumerate() {
        if !tapedeck_storage::is_redaction_placeholder(&h.value)
            || replaced.iter().any(|r| r.eq_ignore_ascii_case(&h.name))
            || ex.req_headers[..i].iter().any(|e| {
                e.name.eq_ignore_ascii_case(&h.name)
                    && tapedeck_storage::is_redaction_placeholder(&e.value)
            })
        {
            continue;
        }
        buf.clear();
        buf.extend(h.name.chars().map(|c| c.to_ascii_lowercase()));
        bump_str(&mut s.redacted_credentials, buf);
    }
}

/// Why an exchange is not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    Time,
    Method,
    Route,
    Shard,
    Sample,
    Writes,
    SameHost,
}

/// Applies a [`Selection`] to a stream of exchanges, counting.
#[derive(Debug)]
pub(crate) struct Selector {
    sel: Selection,
    /// Normalized authorities of the targets (for the same-host guard).
    target_hosts: Vec<String>,
    /// The last recorded (authority, scheme) checked by the same-host guard and whether it is a
    /// target's: a tape's rows mostly share one, so it is normalized once, not per row.
    last_host: Option<(String, String, bool)>,
    /// Reused for route keys (allocates only for a route not seen before).
    key: String,
    /// The route key of the last selected exchange, and the method and path it was made from:
    /// consecutive requests to one path are templated once.
    route: (String, String, String),
    pub(crate) stats: SelectionStats,
}

/// `host:port`, lowercase, with the scheme's default port made explicit.
pub(crate) fn normalize_authority(authority: &str, scheme: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let has_port = match a.rfind(':') {
        Some(i) => !a[i..].contains(']') && a[i + 1..].bytes().all(|b| b.is_ascii_digit()),
        None => false,
    };
    if has_port || a.is_empty() {
        a
    } else if scheme.eq_ignore_ascii_case("https") {
        format!("{a}:443")
    } else {
        format!("{a}:80")
    }
}

impl Selector {
    pub(crate) fn new(sel: Selection, target_hosts: Vec<String>) -> Self {
        Self {
            sel,
            target_hosts,
            last_host: None,
            key: String::new(),
            route: (String::new(), String::new(), String::new()),
            stats: SelectionStats::default(),
        }
    }

    /// Whether `--limit` has been reached (stop reading).
    pub(crate) fn exhausted(&self) -> bool {
        self.sel.limit.is_some_and(|l| self.stats.selected >= l)
    }

    /// Decides one exchange and counts the decision.
    pub(crate) fn decide(&mut self, ex: &Exchange) -> Result<(), Skip> {
        self.stats.read += 1;
        let r = self.check(ex);
        let s = &mut self.stats;
        match r {
            Ok(()) => {
                s.selected += 1;
                if ex.req_body_truncated {
                    s.truncated_bodies += 1;
                }
                let (key, method, path) = &mut self.route;
                if *method != ex.method || *path != ex.path {
                    method.clear();
                    method.push_str(&ex.method);
                    path.clear();
                    path.push_str(&ex.path);
                    key.clear();
                    key.push_str(method);
                    key.push(' ');
                    push_template_path(key, path);
                }
                bump_str(&mut s.routes, key);
                count_placeholders(ex, &self.sel.replaced_headers, &mut self.key, s);
            }
            Err(Skip::Time) => s.skipped_time += 1,
            Err(Skip::Method) => s.skipped_method += 1,
            Err(Skip::Route) => s.skipped_route += 1,
            Err(Skip::Shard) => s.skipped_shard += 1,
            Err(Skip::Sample) => s.skipped_sample += 1,
            Err(Skip::Writes) => {
                s.skipped_writes += 1;
                bump(&mut s.skipped_writes_by_route, route_key(ex));
            }
            Err(Skip::SameHost) => s.skipped_same_host += 1,
        }
        r
    }

    fn check(&mut self, ex: &Exchange) -> Result<(), Skip> {
        let sel = &self.sel;
        if sel.from_us.is_some_and(|f| ex.started_at_us < f)
            || sel.to_us.is_some_and(|t| ex.started_at_us >= t)
        {
            return Err(Skip::Time);
        }
        if !sel.methods.is_empty()
            && !sel
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&ex.method))
        {
            return Err(Skip::Method);
        }
        if let Some(g) = &sel.routes
            && !g.is_match(&ex.path)
        {
            return Err(Skip::Route);
        }
        if let Some(sh) = &sel.shard
            && !sh.contains(&ex.id)
        {
            return Err(Skip::Shard);
        }
        if let Some(f) = sel.sample
            && sample_position(&ex.id) >= f
        {
            return Err(Skip::Sample);
        }
        if !sel.allow_writes && is_unsafe_method(&ex.method) {
            return Err(Skip::Writes);
        }
        if !sel.allow_same_host && !ex.authority.is_empty() {
            let same = match &self.last_host {
                Some((a, s, same)) if *a == ex.authority && *s == ex.scheme => *same,
                _ => {
                    let recorded = normalize_authority(&ex.authority, &ex.scheme);
                    let same = self.target_hosts.contains(&recorded);
                    self.last_host = Some((ex.authority.to_string(), ex.scheme.to_string(), same));
                    same
                }
            };
            if same {
                return Err(Skip::SameHost);
            }
        }
        Ok(())
    }
}

/// `METHOD /path/{id}`: the route an exchange is counted under.
pub(crate) fn route_key(ex: &Exchange) -> String {
    format!("{} {}", ex.method, template_path(&ex.path))
}

/// [`bump`] without allocating for a key already counted.
fn bump_str(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => bump(map, key.to_owned()),
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: String) {
    if let Some(n) = map.get_mut(&key) {
        *n += 1;
    } else if map.len() < MAX_ROUTES {
        map.insert(key, 1);
    } else {
        *map.entry(OTHER_ROUTES.to_owned()).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_hash_is_stable() {
        // Pinned: changing the hash would silently re-split running sharded jobs.
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        assert_eq!(shard_hash(&id), fnv1a(FNV_OFFSET, id.as_bytes()));
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn shards_partition_ids() {
        let shards: Vec<Shard> = (0..3)
            .map(|k| Shard::parse(&format!("{k}/3")).expect("shard"))
            .collect();
        for i in 0..3000u128 {
            let id = Uuid::from_u128(i * 7919 + 13);
            assert_eq!(shards.iter().filter(|s| s.contains(&id)).count(), 1);
        }
        let n0 = (0..3000u128)
            .filter(|i| shards[0].contains(&Uuid::from_u128(i * 7919 + 13)))
            .count();
        assert!((700..1300).contains(&n0), "roughly a third: {n0}");
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("1").is_err());
        assert_eq!(Shard::parse(" 2 / 5 "), Ok(Shard { index: 2, count: 5 }));
    }

    #[test]
    fn shard_errors_name_the_value() {
        let err = Shard::parse("1").expect_err("no slash");
        assert_eq!(err, ShardError::NotKOverN { text: "1".into() });
        assert_eq!(err.to_string(), "`1`: expected K/N, e.g. 0/3");

        let err = Shard::parse("x/3").expect_err("bad index");
        assert!(
            matches!(&err, ShardError::BadIndex { text, index, .. } if text == "x/3" && index == "x"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "`x/3`: `x` is not a shard index");
        assert!(std::error::Error::source(&err).is_some());

        let err = Shard::parse("0/-2").expect_err("bad count");
        assert!(
            matches!(&err, ShardError::BadCount { text, count, .. } if text == "0/-2" && count == "-2"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "`0/-2`: `-2` is not a shard count");

        for (text, index, count) in [("3/3", 3, 3), ("0/0", 0, 0)] {
            let err = Shard::parse(text).expect_err("out of range");
            assert_eq!(
                err,
                ShardError::OutOfRange {
                    text: text.into(),
                    index,
                    count
                }
            );
            assert_eq!(
                err.to_string(),
                format!("`{text}`: need 0 ≤ K < N (shards are numbered from 0)")
            );
        }
    }

    #[test]
    fn sample_is_deterministic_and_roughly_right() {
        let kept = (0..10_000u128)
            .filter(|i| sample_position(&Uuid::from_u128(i * 104_729 + 7)) < 0.1)
            .count();
        assert!((700..1300).contains(&kept), "{kept}");
    }

    #[test]
    fn unsafe_methods() {
        assert!(!is_unsafe_method("GET"));
        assert!(!is_unsafe_method("head"));
        for m in ["POST", "PUT", "PATCH", "DELETE", "PURGE"] {
            assert!(is_unsafe_method(m), "{m}");
        }
    }

    #[test]
    fn normalizes_authorities() {
        assert_eq!(
            normalize_authority("API.example.test", "http"),
            "api.example.test:80"
        );
        assert_eq!(normalize_authority("a:8443", "https"), "a:8443");
        assert_eq!(normalize_authority("a", "https"), "a:443");
        assert_eq!(normalize_authority("[::1]", "http"), "[::1]:80");
        assert_eq!(normalize_authority("[::1]:9", "http"), "[::1]:9");
    }
}
