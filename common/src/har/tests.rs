//! Unit tests of `har.rs`.

use super::*;
use proptest::prelude::*;

#[test]
fn splits_urls() {
    let (s, a, p, q) = split_url("HTTPS://example.com:8443/a/b?x=1&y=%20#frag").expect("test data");
    assert_eq!(
        (s.as_str(), a.as_str(), p.as_str(), q.as_deref()),
        ("https", "example.com:8443", "/a/b", Some("x=1&y=%20"))
    );
    let (_, a, p, q) = split_url("http://h?x").expect("test data");
    assert_eq!(
        (a.as_str(), p.as_str(), q.as_deref()),
        ("h", "/", Some("x"))
    );
    assert!(split_url("/relative").is_err());
}

#[test]
fn decodes_queries() {
    assert_eq!(
        query_pairs("a=1&b=%C3%A9t%C3%A9&c&d=%zz"),
        vec![
            Pair {
                name: "a".into(),
                value: "1".into()
            },
            Pair {
                name: "b".into(),
                value: "été".into()
            },
            Pair {
                name: "c".into(),
                value: "".into()
            },
            Pair {
                name: "d".into(),
                value: "%zz".into()
            },
        ]
    );
}

#[test]
fn exchange_round_trips() {
    let ex = Exchange {
        id: Exchange::new_id(),
        source: "s".into(),
        started_at_us: 1_767_225_600_123_456,
        ttfb_us: Some(1500),
        duration_us: Some(2500),
        total_us: Some(2600),
        method: "POST".into(),
        authority: "127.0.0.1:1".into(),
        path: "/x".into(),
        query: Some("a=1".into()),
        req_headers: vec![Header::new("A", "1"), Header::new("a", "2")],
        req_body: Bytes::from_static(&[0xff, 0, 1]),
        req_body_size: 10,
        req_body_truncated: true,
        status: Some(200),
        resp_headers: vec![
            Header::new("content-type", "application/grpc"),
            Header::new(TRAILER_MARKER, ""),
            Header::new("grpc-status", "0"),
        ],
        resp_body: Bytes::from_static(b"hello"),
        resp_body_size: 5,
        flags: 2,
        ..Exchange::default()
    };
    let json = serde_json::to_string(&exchange_to_entry(&ex)).expect("test data");
    let back =
        entry_to_exchange(serde_json::from_str(&json).expect("test data"), "x").expect("test data");
    assert_eq!(back, ex);
}

#[test]
fn ids_of_foreign_entries_are_uuidv7_of_the_start_time() {
    let entry: Entry = serde_json::from_str(
            r#"{"startedDateTime":"2026-03-01T11:00:00.125+01:00","time":3,
                "request":{"method":"GET","url":"http://127.0.0.1/x","httpVersion":"h2",
                           "headers":[{"name":":authority","value":"127.0.0.1"},{"name":"a","value":"b"}]},
                "response":{"status":200,"headers":[{"name":"Content-Encoding","value":"gzip"}],
                            "content":{"size":2,"text":"ok"}},
                "timings":{"blocked":1,"dns":-1,"connect":-1,"send":0.5,"wait":1,"receive":0.5}}"#,
        )
        .expect("entry");
    let ex = entry_to_exchange(entry, "devtools").expect("imports");
    assert_eq!(ex.id.get_version_num(), 7);
    let (secs, nanos) = ex.id.get_timestamp().expect("v7 timestamp").to_unix();
    assert_eq!(
        secs as i64 * 1_000_000 + i64::from(nanos / 1000),
        ex.started_at_us
    );
    assert_eq!(ex.started_at_us, 1_772_359_200_125_000);
    assert_eq!(ex.http_version, "HTTP/2");
    assert_eq!(ex.req_headers, vec![Header::new("a", "b")]);
    assert!(ex.resp_headers.is_empty(), "the browser's body is decoded");
    assert_eq!(&ex.resp_body[..], b"ok");
    assert_eq!(
        (ex.ttfb_us, ex.duration_us, ex.total_us),
        (Some(2500), Some(3000), Some(3000))
    );
    assert_eq!(ex.source, "devtools");
}

#[test]
fn compressed_bodies_export_decoded_and_round_trip() {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"hello":"world"}"#).expect("gzip");
    let raw = Bytes::from(gz.finish().expect("gzip"));
    let ex = Exchange {
        id: Exchange::new_id(),
        status: Some(200),
        ttfb_us: Some(1),
        duration_us: Some(2),
        total_us: Some(3),
        authority: "127.0.0.1:8080".into(),
        resp_headers: vec![Header::new("Content-Encoding", "gzip")],
        resp_body_size: raw.len() as u64,
        resp_body: raw,
        ..Exchange::default()
    };
    let entry = exchange_to_entry(&ex);
    assert_eq!(
        entry.response.content.text.as_deref(),
        Some(r#"{"hello":"world"}"#)
    );
    assert_eq!(entry.response.content.encoding, None);
    assert_eq!(entry.response.content.size, 17);
    let json = serde_json::to_string(&entry).expect("serializes");
    let back =
        entry_to_exchange(serde_json::from_str(&json).expect("parses"), "x").expect("imports");
    assert_eq!(back, ex);
}

#[test]
fn failed_entries_have_no_status() {
    let ex = Exchange {
        id: Exchange::new_id(),
        error_kind: Some(ErrorKind::Timeout),
        error: Some("timed out".into()),
        total_us: Some(5),
        ..Exchange::default()
    };
    let entry = exchange_to_entry(&ex);
    assert_eq!(entry.response.status, 0);
    let back = entry_to_exchange(entry, "x").expect("test data");
    assert_eq!(back.status, None);
    assert_eq!(back.error_kind, Some(ErrorKind::Timeout));
}

fn header_strategy() -> impl Strategy<Value = Header> {
    ("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,20}").prop_map(|(n, v)| Header::new(n, v))
}

fn body_strategy() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        "[ -~\\n\\t]{0,40}".prop_map(Bytes::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from),
    ]
}

prop_compose! {
    /// Exchanges HAR can carry: printable header values, URL-safe paths and queries.
    fn exchange()(
        method in "GET|POST|PUT|DELETE|PATCH",
        scheme in "http|https",
        authority in "[a-z0-9.]{1,12}(:[0-9]{1,5})?",
        path in "(/[A-Za-z0-9._~%-]{0,8}){1,4}",
        query in proptest::option::of("[A-Za-z0-9=&%._-]{0,20}"),
        started in 0i64..4_000_000_000_000_000,
        timing in proptest::option::of((0i64..10_000_000, 0i64..10_000_000, 0i64..1000)),
        req_headers in proptest::collection::vec(header_strategy(), 0..5),
        resp_headers in proptest::collection::vec(header_strategy(), 0..5),
        req_body in body_strategy(),
        resp_body in body_strategy(),
        extra_size in 0u64..100,
        truncated in any::<(bool, bool)>(),
        status in proptest::option::of(100u16..600),
        flags in 0u32..8,
        replay in proptest::option::of(("[a-z]{1,8}", 0i64..1_000_000)),
    ) -> Exchange {
        let (ttfb, duration, total) = match (status, timing) {
            (Some(_), Some((a, b, c))) => (Some(a), Some(a + b), Some(a + b + c)),
            (_, t) => (None, None, t.map(|(a, _, _)| a)),
        };
        Exchange {
            id: Exchange::new_id(),
            source: "prop".into(),
            started_at_us: started,
            ttfb_us: ttfb,
            duration_us: duration,
            total_us: total,
            method: method.into(),
            scheme: scheme.into(),
            authority: authority.into(),
            path: path.into(),
            query,
            req_headers,
            req_body_size: req_body.len() as u64 + extra_size * u64::from(truncated.0),
            req_body,
            req_body_truncated: truncated.0,
            status,
            resp_headers,
            resp_body_size: resp_body.len() as u64 + extra_size * u64::from(truncated.1),
            resp_body,
            resp_body_truncated: truncated.1,
            error_kind: status.is_none().then_some(ErrorKind::Reset),
            error: status.is_none().then(|| "reset by peer".to_owned()),
            flags,
            origin_id: replay.as_ref().map(|_| Exchange::new_id()),
            target: replay.as_ref().map(|(t, _)| t.clone()),
            scheduled_at_us: replay.as_ref().map(|_| started),
            sent_at_us: replay.as_ref().map(|(_, lag)| started + lag),
            trace_id: (flags % 2 == 0).then(|| format!("{:032x}", started)),
            ..Exchange::default()
        }
    }
}

proptest! {
    #[test]
    fn har_round_trip(ex in exchange()) {
        let json = serde_json::to_string(&Har {
            log: Log {
                version: "1.2".into(),
                creator: Creator::default(),
                entries: vec![exchange_to_entry(&ex)],
            },
        }).expect("serializes");
        let har: Har = serde_json::from_str(&json).expect("parses");
        let entry = har.log.entries.into_iter().next().expect("one entry");
        let back = entry_to_exchange(entry, "other").expect("imports");
        prop_assert_eq!(back, ex);
    }
}
