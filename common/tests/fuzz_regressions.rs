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

/// fuzz `har_import`: a HAR URL with an empty authority (`https:///844:a3h/b`) imported as an
/// exchange without one, which the export wrote as `https://localhost/…` (a HAR URL must be
/// absolute), so a re-import invented the authority `localhost`. The export now records which URL
/// parts the tape did not have (`_tapedeck.missing_url_parts`) and the import leaves them empty.
#[test]
fn fuzz_har_url_without_authority_round_trips() {
    use tapedeck_common::har::{self, Entry, entry_to_exchange, exchange_to_entry};
    let file = br#"{"log":{"version":"1.2","creator":{"name":"x","version":"1"},"entries":[{"startedDateTime":"2026-01-02T03:04:05.123Z","time":12.5,"request":{"method":"POST","url":"https:///844:a3h/b?#=1&y=%2$","httpVersion":"h2","headers":[{"name":"Authorization","value":"Bearer t"}],"queryString":[],"postData":{"mimeType":"application/json","text":"eyJhIjoxgQ==","encoding":"base64"},"headersSize":-1,"bodySize":7},"response":{"status":200,"statusText":"OK","httpVersion":"h2","headers":[],"content":{"size":2,"mimeType":"application/json","text":"{}"},"redirectURL":"","headersSize":-1,"bodySize":-1},"cache":{},"timings":{"send":1,"wait":10,"receive":1.5}}]}}"#;
    let parsed = har::parse(file).expect("the finding parses");
    for entry in parsed.log.entries {
        let ex = entry_to_exchange(entry, "fuzz").expect("the finding converts");
        assert_eq!(ex.authority, "");
        let json = serde_json::to_vec(&exchange_to_entry(&ex)).expect("serializes");
        let again: Entry = serde_json::from_slice(&json).expect("parses");
        assert_eq!(entry_to_exchange(again, "other").expect("converts"), ex);
    }
    // The same with no scheme either.
    let ex = Exchange {
        scheme: Default::default(),
        authority: Default::default(),
        path: "/x".into(),
        method: "GET".into(),
        ..Exchange::default()
    };
    let json = serde_json::to_vec(&exchange_to_entry(&ex)).expect("serializes");
    let back =
        entry_to_exchange(serde_json::from_slice(&json).expect("parses"), "x").expect("converts");
    assert_eq!((back.scheme.as_str(), back.authority.as_str()), ("", ""));
}
