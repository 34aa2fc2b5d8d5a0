//! Regression tests for inputs found by the `fuzz/` targets (issue 8), named after the finding.

use bytes::Bytes;
use tapedeck_common::{Redactor, RedactorBuilder};
use tapedeck_storage::{Exchange, Header};

/// fuzz `redact`: a JSON body cut at the capture cap whose password value holds bytes that are
/// not UTF-8 kept everything after the first such byte (`"hunt\xff\xffte` → `"[REDACTED]"\xff\xffte`):
/// the textual fallback must treat the value as bytes.
#[test]
fn fuzz_cut_json_password_with_invalid_utf8_is_fully_masked() {
    let redactor = RedactorBuilder::new()
        .json_path("$..password")
        .expect("path")
        .build();
    for (body, want) in [
        (
            &b"{\"password\":\"hunt\xff\xffte"[..],
            &b"{\"password\":\"[REDACTED]\""[..],
        ),
        (
            &b"{\"a\":1,\"password\":\"x\xfe\\\"y\",\"b\":2"[..],
            &b"{\"a\":1,\"password\":\"[REDACTED]\",\"b\":2"[..],
        ),
        (
            &b"{\"password\":12\xff34}"[..],
            &b"{\"password\":\"[REDACTED]\"}"[..],
        ),
    ] {
        let mut ex = Exchange {
            req_headers: vec![Header::new("content-type", "application/json")],
            req_body: Bytes::copy_from_slice(body),
            ..Exchange::default()
        };
        assert!(redactor.redact(&mut ex));
        assert_eq!(
            ex.req_body,
            Bytes::copy_from_slice(want),
            "{:?}",
            String::from_utf8_lossy(&ex.req_body)
        );
    }
}

/// The byte-mode fallback still handles field names that are not ASCII.
#[test]
fn cut_json_with_a_non_ascii_field_name_is_masked() {
    let redactor = RedactorBuilder::new()
        .json_path("$..pässwort")
        .expect("path")
        .build();
    let mut ex = Exchange {
        req_headers: vec![Header::new("content-type", "application/json")],
        req_body: Bytes::from_static("{\"pässwort\": \"geheim".as_bytes()),
        ..Exchange::default()
    };
    assert!(redactor.redact(&mut ex));
    assert_eq!(
        ex.req_body,
        Bytes::from_static("{\"pässwort\": \"[REDACTED]\"".as_bytes())
    );
}
