//! The redactor on arbitrary headers, query strings and bodies.
//!
//! Input: `header-name 0xFF header-value 0xFF query 0xFF body` (missing parts are empty); the
//! first byte picks the content type and the header order (both sides get the same headers).
//! Properties (mask mode, default sensitive headers + query `token` + JSON `$..password` + an
//! e-mail regex): no panic; every default sensitive header's value is the mask; no `token=` in
//! the query keeps a value; in a JSON body, and in the same body cut anywhere, every string value
//! of a `"password"` key starts with the mask. The hash-mode redactor must not panic either.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tapedeck_common::redact::{DEFAULT_SENSITIVE_HEADERS, MASK};
use tapedeck_common::{Redactor, RedactorBuilder, RuleRedactor};
use tapedeck_storage::{Exchange, Header};

const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "",
];

fn redactors() -> &'static (RuleRedactor, RuleRedactor) {
    static R: OnceLock<(RuleRedactor, RuleRedactor)> = OnceLock::new();
    R.get_or_init(|| {
        let build = |hash: bool| {
            let mut b = RedactorBuilder::new()
                .header("x-custom-secret")
                .query_param("token")
                .json_path("$..password")
                .expect("valid path")
                .json_path("$.items[*].pan")
                .expect("valid path")
                .body_regex(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
                .expect("valid regex");
            if hash {
                b = b.hash_with_key(b"fuzz-key");
            }
            b.build()
        };
        (build(false), build(true))
    })
}

fuzz_target!(|data: &[u8]| {
    let (mask, hash) = redactors();
    let selector = data.first().copied().unwrap_or(0);
    let mut parts = data.get(1..).unwrap_or_default().splitn(4, |&b| b == 0xff);
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let value = Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = Bytes::copy_from_slice(parts.next().unwrap_or_default());
    let ct = CONTENT_TYPES[usize::from(selector & 3)];

    let mut headers = vec![Header::new(name.clone(), value.clone())];
    for sensitive in DEFAULT_SENSITIVE_HEADERS {
        headers.push(Header::new(sensitive.to_ascii_uppercase(), value.clone()));
    }
    if !ct.is_empty() {
        headers.push(Header::new("content-type", ct));
    }
    let mut ex = Exchange {
        query: (!query.is_empty()).then(|| query.clone()),
        req_body: body.clone(),
        req_body_size: body.len() as u64,
        resp_body: body.clone(),
        resp_body_size: body.len() as u64,
        status: Some(200),
        ..Exchange::default()
    };
    if selector & 4 != 0 {
        // Header order varies: sensitive ones first.
        headers.rotate_left(1);
    }
    ex.resp_headers = headers.clone();
    ex.req_headers = headers;
    let mut hashed = ex.clone();
    let _ = hash.redact(&mut hashed);
    let _ = mask.redact(&mut ex);

    for h in ex.req_headers.iter().chain(ex.resp_headers.iter()) {
        let sensitive = DEFAULT_SENSITIVE_HEADERS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(h.name.trim()) && s.len() == h.name.len());
        if sensitive {
            assert_eq!(
                &h.value[..],
                MASK.as_bytes(),
                "header {:?} kept its value",
                h.name
            );
        }
    }
    if let Some(q) = &ex.query {
        for part in q.split('&') {
            if let Some(("token", v)) = part.split_once('=') {
                assert!(v.is_empty() || v == "REDACTED", "query token kept {v:?}");
            }
        }
    }
    // Bodies that are JSON, and the same bodies cut at a fuzzer-chosen length (as at the capture
    // cap): there JSON string tokenization is exact, so every `"password"` key's value must be
    // the mask. (Arbitrary malformed text has no well-defined keys to check.)
    if !ct.contains("form") && serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
        assert_password_masked(&ex.req_body);
        assert_password_masked(&ex.resp_body);
        let cut = body.len() * usize::from(selector >> 4) / 16;
        let mut cut_ex = Exchange {
            req_headers: vec![Header::new("content-type", "application/json")],
            req_body: body.slice(..cut),
            ..Exchange::default()
        };
        let _ = mask.redact(&mut cut_ex);
        assert_password_masked(&cut_ex.req_body);
    }
});

/// Every string value of a `"password"` key in `b` starts with the mask.
fn assert_password_masked(b: &[u8]) {
    let tokens = string_tokens(b);
    for pair in tokens.windows(2) {
        let (k, v) = (pair[0], pair[1]);
        let between = &b[k.1..v.0];
        let is_key = between.iter().filter(|c| **c == b':').count() == 1
            && between
                .iter()
                .all(|c| *c == b':' || c.is_ascii_whitespace());
        if is_key && &b[k.0..k.1] == b"\"password\"" {
            let value = &b[v.0..v.1];
            assert!(
                value.starts_with(b"\"[REDACTED]"),
                "password value kept: {:?} in {:?}",
                String::from_utf8_lossy(value),
                String::from_utf8_lossy(b)
            );
        }
    }
}

/// The JSON string tokens of `b` as (start, end) byte ranges, quotes included (the last one may
/// be unterminated, as in a body cut at the capture cap).
fn string_tokens(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        i = (i + 1).min(b.len());
        out.push((start, i));
    }
    out
}
