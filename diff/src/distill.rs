//! Distilling a tape (`tapedeck distill`): a small tape that keeps what a regression check needs.
//!
//! Every exchange falls into a **group**: route (method, path template, query parameter names,
//! keyed as the judge keys routes) × response status × content type × response shape (the JSON
//! key/type signature of the body, or `text`/`binary`/`empty`) × latency band (powers of 4 from
//! 2 ms). The distilled tape keeps the first `per_group` exchanges of every group, the first
//! `per_route` of every route (by default twice the judge's `min_samples`, so that the judge has
//! enough per route however the route's latencies fall into bands, and a regression that touches
//! only part of a route's requests still shows), and **every** error exchange (5xx or no
//! response), in the tape's order; nothing else. One streaming pass: memory grows with the number
//! of groups, not with the tape.

use std::collections::HashMap;
use std::fmt::Write as _;

use tapedeck_storage::{Exchange, ReadOptions, Tape, TapeWriter, find_header};

use crate::error::DiffError;
use crate::route::RouteKeys;

/// Exchanges kept per route by default: twice the judge's default `min_samples` (20). At exactly
/// `min_samples` a route is judged on the bare minimum: one lost sample leaves it unjudged, and a
/// regression that slows only some of a route's requests (later pages of a list, one tenant) is
/// diluted below what the latency test can see on a loaded machine.
pub const DEFAULT_PER_ROUTE: u64 = 40;

/// Settings of one distillation.
#[derive(Debug, Clone)]
pub struct DistillOptions {
    /// Exchanges kept per group (at least 1).
    pub per_group: u64,
    /// Exchanges kept per route at least ([`DEFAULT_PER_ROUTE`] by default).
    pub per_route: u64,
    /// How requests are keyed into routes (the judge's default unless a rules file says).
    pub route_keys: RouteKeys,
    /// Read on past damaged tape files.
    pub skip_corrupt: bool,
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self {
            per_group: 5,
            per_route: DEFAULT_PER_ROUTE,
            route_keys: RouteKeys::default(),
            skip_corrupt: false,
        }
    }
}

/// What a distillation kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DistillStats {
    /// Exchanges read.
    pub rows_in: u64,
    /// Exchanges written to the distilled tape.
    pub rows_out: u64,
    /// Groups found in the tape.
    pub groups_found: u64,
    /// Groups with at least one exchange in the distilled tape (all of them).
    pub groups_kept: u64,
    /// Groups that had fewer than `per_group` exchanges in the whole tape (kept whole).
    pub groups_short: u64,
    /// Routes found (method, path template, query parameter names).
    pub routes: u64,
    /// Error exchanges (5xx or no response), all kept.
    pub errors_kept: u64,
    /// Damaged files skipped (`skip_corrupt`).
    pub files_skipped: Vec<String>,
}

/// Latency bands: below 2 ms, 8 ms, 32 ms, 128 ms, 512 ms, 2 s, 8 s, and above.
fn latency_band(ex: &Exchange) -> &'static str {
    const BANDS: [(i64, &str); 7] = [
        (2_000, "<2ms"),
        (8_000, "<8ms"),
        (32_000, "<32ms"),
        (128_000, "<128ms"),
        (512_000, "<512ms"),
        (2_000_000, "<2s"),
        (8_000_000, "<8s"),
    ];
    let Some(us) = ex.total_us.or(ex.duration_us).or(ex.ttfb_us) else {
        return "none";
    };
    BANDS
        .iter()
        .find(|(limit, _)| us < *limit)
        .map_or(">=8s", |(_, name)| name)
}

/// The JSON key/type signature of a value: objects as their sorted keys with the signatures of
/// their values, arrays as the signature of their first element, scalars as a letter. Deeper
/// than `depth` levels only the kind is kept.
fn signature(v: &serde_json::Value, depth: usize, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null => out.push('z'),
        Value::Bool(_) => out.push('b'),
        Value::Number(_) => out.push('n'),
        Value::String(_) => out.push('s'),
        Value::Array(items) => {
            out.push('[');
            if depth > 0
                && let Some(first) = items.first()
            {
                signature(first, depth - 1, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            if depth > 0 {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push(':');
                    signature(&map[k], depth - 1, out);
                }
            }
            out.push('}');
        }
    }
}

/// The response's shape: the JSON signature of the body, or `text`, `binary`, `empty`,
/// `undecodable`.
fn shape(ex: &Exchange) -> String {
    if ex.status.is_none() {
        return "no-response".to_owned();
    }
    if ex.resp_body.is_empty() {
        return "empty".to_owned();
    }
    let body = match crate::body::decode(&ex.resp_headers, &ex.resp_body) {
        Ok(b) => b,
        Err(_) => return "undecodable".to_owned(),
    };
    match crate::body::kind(&ex.resp_headers, &body) {
        crate::body::BodyKind::Json => match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => {
                let mut s = String::new();
                signature(&v, 4, &mut s);
                s
            }
            Err(_) => "invalid-json".to_owned(),
        },
        crate::body::BodyKind::Text => "text".to_owned(),
        crate::body::BodyKind::Binary => "binary".to_owned(),
    }
}

fn is_error(ex: &Exchange) -> bool {
    ex.status.is_none_or(|s| s >= 500)
}

/// The group of an exchange (its route key first); `keyer` learns high-cardinality segments.
pub fn group_key(keyer: &mut crate::route::RouteKeyer, ex: &Exchange) -> (String, String) {
    let route = keyer.key(&ex.method, &ex.path, ex.query.as_deref());
    let ct = find_header(&ex.resp_headers, "content-type")
        .map(|h| {
            let v = h.value_lossy().to_ascii_lowercase();
            v.split(';').next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default();
    let mut key = String::with_capacity(route.len() + 64);
    let _ = write!(
        key,
        "{route}\u{1f}{}\u{1f}{ct}\u{1f}{}\u{1f}{}",
        ex.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        shape(ex),
        latency_band(ex)
    );
    (route, key)
}

/// Reads `tape` and writes its distillation to `out` (which the caller opened and closes).
pub fn distill(
    tape: &Tape,
    out: &TapeWriter,
    opts: &DistillOptions,
) -> Result<DistillStats, DiffError> {
    let read = ReadOptions {
        skip_corrupt: opts.skip_corrupt,
        ..ReadOptions::default()
    };
    tape.verify(&read).map_err(|source| DiffError::Tape {
        what: "input",
        source,
    })?;
    let per_group = opts.per_group.max(1);
    let mut keyer = opts.route_keys.keyer();
    let mut groups: HashMap<String, u64> = HashMap::new();
    let mut routes: HashMap<String, u64> = HashMap::new();
    let mut stats = DistillStats::default();
    let mut rows = tape.scan(read).exchanges();
    for row in rows.by_ref() {
        let ex = row.map_err(|source| DiffError::Tape {
            what: "input",
            source,
        })?;
        stats.rows_in += 1;
        let (route, key) = group_key(&mut keyer, &ex);
        let on_route = routes.entry(route).or_default();
        *on_route += 1;
        let seen = groups.entry(key).or_default();
        *seen += 1;
        let error = is_error(&ex);
        if *seen <= per_group || *on_route <= opts.per_route || error {
            if error {
                stats.errors_kept += 1;
            }
            out.append(ex).map_err(|e| DiffError::Output {
                what: "the distilled tape",
                reason: e.to_string(),
            })?;
            stats.rows_out += 1;
        }
    }
    stats.files_skipped = rows
        .report()
        .files_skipped
        .iter()
        .map(|s| format!("{}: {}", s.path.display(), s.reason))
        .collect();
    stats.groups_found = groups.len() as u64;
    stats.groups_kept = groups.len() as u64;
    stats.groups_short = groups.values().filter(|n| **n < per_group).count() as u64;
    stats.routes = routes.len() as u64;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tapedeck_storage::Header;

    fn ex(path: &str, status: u16, body: &str, us: i64) -> Exchange {
        Exchange {
            method: "GET".into(),
            path: path.into(),
            status: Some(status),
            resp_headers: vec![Header::new(
                "Content-Type",
                "application/json; charset=utf-8",
            )],
            resp_body: Bytes::from(body.to_owned()),
            total_us: Some(us),
            ..Exchange::default()
        }
    }

    #[test]
    fn groups_by_route_status_shape_and_band() {
        let mut k = RouteKeys::default().keyer();
        let a = group_key(&mut k, &ex("/u/1", 200, r#"{"id":1,"name":"a"}"#, 1_000)).1;
        let b = group_key(&mut k, &ex("/u/2", 200, r#"{"name":"b","id":2}"#, 1_500)).1;
        assert_eq!(a, b, "same route, shape (key order ignored) and band");
        let renamed = group_key(&mut k, &ex("/u/2", 200, r#"{"id":2,"full":"b"}"#, 1_500)).1;
        assert_ne!(a, renamed);
        let slow = group_key(&mut k, &ex("/u/3", 200, r#"{"id":3,"name":"c"}"#, 50_000)).1;
        assert_ne!(a, slow);
        let missing = group_key(&mut k, &ex("/u/3", 404, r#"{"error":"x"}"#, 1_000)).1;
        assert_ne!(a, missing);
        let mut s = String::new();
        signature(
            &serde_json::json!({"items": [{"a": 1}, {"b": true}], "n": null}),
            4,
            &mut s,
        );
        assert_eq!(s, "{items:[{a:n}],n:z}");
        let mut e = ex("/u/1", 200, "", 1);
        e.status = None;
        assert!(
            is_error(&e) && is_error(&ex("/u", 503, "", 1)) && !is_error(&ex("/u", 404, "", 1))
        );
    }

    #[test]
    fn keeps_k_per_group_every_error_and_the_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        let w = TapeWriter::builder(&input)
            .when_full(tapedeck_storage::WhenFull::Block)
            .open()
            .expect("writer");
        for i in 0..200u64 {
            let (status, body) = match i % 10 {
                9 => (503, r#"{"error":"busy"}"#.to_owned()),
                _ => (200, format!(r#"{{"id":{i}}}"#)),
            };
            let mut e = ex(&format!("/items/{i}"), status, &body, 1_000);
            e.started_at_us = 1_000_000 + i as i64;
            w.append(e).expect("append");
        }
        w.close().expect("close");
        let out = TapeWriter::builder(&output)
            .when_full(tapedeck_storage::WhenFull::Block)
            .open()
            .expect("writer");
        let stats = distill(
            &Tape::open(&[&input]).expect("open"),
            &out,
            &DistillOptions {
                per_group: 3,
                per_route: 5,
                ..DistillOptions::default()
            },
        )
        .expect("distilled");
        out.close().expect("close");
        assert_eq!(stats.rows_in, 200);
        assert_eq!(stats.groups_found, 2);
        assert_eq!(stats.errors_kept, 20);
        // The first 5 of the route (4 ok, 1 error), then 3 ok in all, and every error.
        assert_eq!(stats.rows_out, 5 + 20);
        let kept: Vec<Exchange> = Tape::open(&[&output])
            .expect("open")
            .scan(ReadOptions::default())
            .exchanges()
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(kept.len(), 25);
        assert!(
            kept.windows(2)
                .all(|w| w[0].started_at_us < w[1].started_at_us)
        );
        assert_eq!(kept.iter().filter(|e| e.status == Some(503)).count(), 20);
    }
}
