//! The JSON differ and the comparator on two arbitrary documents.
//!
//! Input: `baseline 0xFF candidate` (0xFF never occurs in UTF-8, so it cannot be part of valid
//! JSON); the first byte also picks a Content-Encoding and statuses for the comparator.
//! Properties: no panic; a document compared with itself has no difference; at most
//! `MAX_DIFFS` differences, each at a path starting with `$`; `diff_bytes` (with its lockstep
//! fast path) gives exactly the answer of `tree_diff_bytes` (the reference); it compares two
//! documents if and only if both are valid JSON.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tapedeck_diff::compare::{Comparator, StandardComparator};
use tapedeck_diff::json;
use tapedeck_storage::{Exchange, Header};

const ENCODINGS: [&str; 8] = [
    "", "gzip", "deflate", "br", "zstd", "identity", "bogus", "gzip, br",
];

fuzz_target!(|data: &[u8]| {
    let selector = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let (a, b) = match rest.iter().position(|&x| x == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, rest),
    };

    let valid = |d: &[u8]| serde_json::from_slice::<serde_json::Value>(d).is_ok();
    let (va_ok, vb_ok) = (valid(a), valid(b));
    let got = json::diff_bytes(a, b);
    // The lockstep fast path agrees with the tree diff, on valid and invalid input alike
    // (finding 4, fixed: it used to accept two documents malformed in the same place).
    assert_eq!(
        got,
        json::tree_diff_bytes(a, b),
        "fast path and tree diff disagree"
    );
    match got {
        Ok(diffs) => {
            assert!(diffs.len() <= json::MAX_DIFFS, "{} diffs", diffs.len());
            for d in &diffs {
                assert!(d.path.starts_with('$'), "path {:?}", d.path);
                let _ = json::generalize(&d.path);
            }
            assert!(va_ok && vb_ok, "diff_bytes accepted a malformed document");
        }
        Err(e) => assert!(!(va_ok && vb_ok), "two valid documents failed: {e:?}"),
    }
    if va_ok {
        let same = json::diff_bytes(a, a).expect("a valid document parses");
        assert!(same.is_empty(), "a document differs from itself: {same:?}");
    }
    if let (Ok(va), Ok(vb)) = (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        let diffs = json::diff(&va, &vb);
        assert!(diffs.len() <= json::MAX_DIFFS);
        assert!(json::diff(&va, &va).is_empty());
    }

    let encoding = ENCODINGS[usize::from(selector & 7)];
    let make = |body: &[u8], status: u16| {
        let mut ex = Exchange {
            status: Some(status),
            resp_body: Bytes::copy_from_slice(body),
            resp_body_size: body.len() as u64,
            resp_body_truncated: selector & 0x40 != 0,
            ..Exchange::default()
        };
        let ct = if selector & 0x08 != 0 {
            "application/json"
        } else {
            "text/plain"
        };
        ex.resp_headers.push(Header::new("content-type", ct));
        if !encoding.is_empty() {
            ex.resp_headers
                .push(Header::new("content-encoding", encoding));
        }
        ex
    };
    let status_b = if selector & 0x10 != 0 { 200 } else { 503 };
    let status_c = if selector & 0x20 != 0 { 200 } else { 201 };
    let comparator = StandardComparator::new(vec!["content-type".to_owned()]);
    let mut out = Vec::new();
    comparator.compare(&make(a, status_b), &make(b, status_c), &mut out);
    let mut same = Vec::new();
    comparator.compare(&make(a, status_b), &make(a, status_b), &mut same);
    assert!(same.is_empty(), "an exchange differs from itself: {same:?}");
});
