//! Unit tests of `index.rs`.

use super::*;
use tapedeck_common::JsonPath;

fn ex(
    i: i64,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &str,
    trace: Option<&str>,
    answer: &str,
) -> Exchange {
    Exchange {
        id: Uuid::from_u128(i as u128 + 1),
        started_at_us: 1_000 + i,
        method: method.into(),
        path: path.into(),
        query: query.map(str::to_owned),
        req_headers: vec![Header::new("content-type", "application/json")],
        req_body: Bytes::from(body.to_owned()),
        req_body_size: body.len() as u64,
        status: Some(200),
        resp_headers: vec![
            Header::new("content-type", "application/json"),
            Header::new("content-length", "999"),
            Header::new("connection", "close"),
        ],
        resp_body: Bytes::from(answer.to_owned()),
        resp_body_size: answer.len() as u64,
        trace_id: trace.map(str::to_owned),
        ..Exchange::default()
    }
}

fn live<'a>(method: &'a str, path: &'a str, query: Option<&'a str>, body: &'a Bytes) -> Live<'a> {
    Live {
        method,
        path,
        query,
        headers: &[],
        body,
    }
}

fn body_of(l: Lookup<'_>) -> (String, bool, bool) {
    match l {
        Lookup::Hit {
            rec,
            nearest,
            repeat,
        } => (
            String::from_utf8_lossy(&rec.answer.body).into_owned(),
            nearest,
            repeat,
        ),
        Lookup::Miss { reason } => (format!("MISS {reason}"), false, false),
    }
}

#[test]
fn each_lane_gets_a_trace_in_recorded_order() {
    let t1 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let idx = Index::build(
        vec![
            ex(1, "GET", "/stock/7", None, "", Some(t1), "first"),
            ex(2, "GET", "/stock/7", None, "", Some(t1), "second"),
        ],
        Normalizer::default(),
    );
    let empty = Bytes::new();
    let get = || live("GET", "/stock/7", None, &empty);
    let u = UnknownTrace::Miss;
    let lanes = ["baseline".to_owned(), "candidate".to_owned()];
    let base = lane_of([&b"vendor=x,tapedeck=baseline"[..]].into_iter(), &lanes);
    let cand = lane_of([&b"tapedeck=candidate"[..]].into_iter(), &lanes);
    assert_eq!((base, cand), (1, 2));
    assert_eq!(lane_of([&b"tapedeck=other"[..]].into_iter(), &lanes), 0);
    assert_eq!(lane_of(std::iter::empty(), &lanes), 0);
    // Interleaved, as a replay sends them: each lane starts at the first answer.
    for lane in [base, cand] {
        assert_eq!(body_of(idx.lookup(&get(), Some(t1), u, lane)).0, "first");
    }
    for lane in [cand, base] {
        assert_eq!(body_of(idx.lookup(&get(), Some(t1), u, lane)).0, "second");
    }
    assert_eq!(
        body_of(idx.lookup(&get(), Some(t1), u, cand)),
        ("second".into(), false, true)
    );
    assert_eq!(body_of(idx.lookup(&get(), Some(t1), u, 0)).0, "first");
}

#[test]
fn sequences_are_served_in_recorded_order_per_trace() {
    let t1 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let t2 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    // Recorded out of order on purpose: the index sorts by start time.
    let idx = Index::build(
        vec![
            ex(3, "GET", "/stock/7", None, "", Some(t1), "t1-second"),
            ex(1, "GET", "/stock/7", None, "", Some(t1), "t1-first"),
            ex(2, "GET", "/stock/7", None, "", Some(t2), "t2-only"),
        ],
        Normalizer::default(),
    );
    assert!(idx.traced());
    assert_eq!(idx.report().traces, 2);
    let empty = Bytes::new();
    let get = || live("GET", "/stock/7", None, &empty);
    let u = UnknownTrace::Miss;
    assert_eq!(
        body_of(idx.lookup(&get(), Some(t2), u, 0)),
        ("t2-only".into(), false, false)
    );
    assert_eq!(
        body_of(idx.lookup(&get(), Some(t1), u, 0)),
        ("t1-first".into(), false, false)
    );
    assert_eq!(
        body_of(idx.lookup(&get(), Some(t1), u, 0)),
        ("t1-second".into(), false, false)
    );
    assert_eq!(
        body_of(idx.lookup(&get(), Some(t1), u, 0)),
        ("t1-second".into(), false, true)
    );
    assert_eq!(
        body_of(idx.lookup(&get(), Some(t2), u, 0)),
        ("t2-only".into(), false, true)
    );
    // An unknown trace is a miss, or untraced matching when asked for.
    let unknown = "cccccccccccccccccccccccccccccccc";
    assert!(
        body_of(idx.lookup(&get(), Some(unknown), u, 0))
            .0
            .contains("not on the tape")
    );
    assert_eq!(
        body_of(idx.lookup(&get(), Some(unknown), UnknownTrace::Untraced, 0)).0,
        "t1-first"
    );
    // Untraced: the whole tape in recorded order.
    assert_eq!(body_of(idx.lookup(&get(), None, u, 0)).0, "t2-only");
    assert_eq!(body_of(idx.lookup(&get(), None, u, 0)).0, "t1-second");
    idx.rewind();
    assert_eq!(body_of(idx.lookup(&get(), Some(t1), u, 0)).0, "t1-first");
    // A trace that made no such call does not borrow another trace's answer.
    let other = live("GET", "/stock/8", None, &empty);
    let (b, nearest, _) = body_of(idx.lookup(&other, Some(t2), u, 0));
    assert_eq!(
        (b.as_str(), nearest),
        ("t2-only", true),
        "nearest within the trace"
    );
    let post = live("POST", "/stock/7", None, &empty);
    assert!(
        body_of(idx.lookup(&post, Some(t2), u, 0))
            .0
            .contains("no recorded POST /stock/{id}")
    );
}

#[test]
fn untraced_requests_get_the_exact_match_else_the_closest() {
    let idx = Index::build(
        vec![
            ex(
                1,
                "POST",
                "/quote",
                Some("cur=eur"),
                r#"{"sku":"a","qty":1}"#,
                None,
                "a1",
            ),
            ex(
                2,
                "POST",
                "/quote",
                Some("cur=eur"),
                r#"{"sku":"b","qty":1}"#,
                None,
                "b1",
            ),
            ex(
                3,
                "POST",
                "/quote",
                Some("cur=usd"),
                r#"{"sku":"b","qty":2}"#,
                None,
                "b2",
            ),
            ex(4, "GET", "/users/17", None, "", None, "u17"),
            ex(5, "GET", "/users/42", None, "", None, "u42"),
        ],
        Normalizer::default(),
    );
    assert!(!idx.traced());
    let b = |s: &str| Bytes::from(s.to_owned());
    let u = UnknownTrace::Miss;
    let body = b(r#"{"qty":1,"sku":"b"}"#);
    assert_eq!(
        body_of(idx.lookup(&live("POST", "/quote", Some("cur=eur"), &body), None, u, 0)),
        ("b1".into(), false, false)
    );
    // Closest: the query weighs 2, the body 1 (share of equal leaves).
    let body = b(r#"{"qty":2,"sku":"b"}"#);
    assert_eq!(
        body_of(idx.lookup(&live("POST", "/quote", Some("cur=eur"), &body), None, u, 0)),
        ("b1".into(), true, true),
        "same query and half the body beat the same body alone"
    );
    assert_eq!(
        body_of(idx.lookup(&live("POST", "/quote", Some("cur=gbp"), &body), None, u, 0)),
        ("b2".into(), true, false),
        "no query in common: the body decides"
    );
    let empty = Bytes::new();
    assert_eq!(
        body_of(idx.lookup(&live("GET", "/users/42", None, &empty), None, u, 0)).0,
        "u42"
    );
    // A trace id on the request changes nothing when the tape has none.
    assert_eq!(
        body_of(idx.lookup(&live("GET", "/users/17", None, &empty), Some("t"), u, 0)).0,
        "u17"
    );
    let (b99, nearest, _) =
        body_of(idx.lookup(&live("GET", "/users/99", None, &empty), None, u, 0));
    assert!(nearest && b99.starts_with('u'), "{b99}");
    assert!(
        body_of(idx.lookup(&live("DELETE", "/users/1", None, &empty), None, u, 0))
            .0
            .contains("no recorded DELETE /users/{id}")
    );
}

#[test]
fn wildcards_are_found_by_hash_and_prefer_exact_classes() {
    let n = Normalizer::new(vec![JsonPath::parse("$.ts").expect("path")], vec![]);
    let idx = Index::build(
        vec![
            ex(
                1,
                "POST",
                "/pay",
                None,
                r#"{"card":"[REDACTED]","amount":5,"ts":1}"#,
                None,
                "wild",
            ),
            ex(
                2,
                "POST",
                "/pay",
                None,
                r#"{"card":"4111","amount":5,"ts":2}"#,
                None,
                "exact",
            ),
        ],
        n,
    );
    let u = UnknownTrace::Miss;
    let body = Bytes::from_static(br#"{"card":"4111","amount":5,"ts":3}"#);
    assert_eq!(
        body_of(idx.lookup(&live("POST", "/pay", None, &body), None, u, 0)).0,
        "exact"
    );
    let body = Bytes::from_static(br#"{"card":"5500","amount":5,"ts":4}"#);
    assert_eq!(
        body_of(idx.lookup(&live("POST", "/pay", None, &body), None, u, 0)),
        ("wild".into(), false, false)
    );
}

#[test]
fn answers_drop_framing_headers_and_keep_trailers() {
    let mut e = ex(1, "GET", "/g", None, "", None, "ok");
    e.resp_headers.push(Header::new(TRAILER_MARKER, ""));
    e.resp_headers.push(Header::new("grpc-status", "0"));
    e.resp_headers.push(Header::new("bad name", "x"));
    let mut failed = ex(2, "GET", "/f", None, "", None, "");
    failed.status = None;
    failed.error_kind = Some(tapedeck_storage::ErrorKind::Reset);
    let idx = Index::build(vec![e, failed], Normalizer::default());
    let empty = Bytes::new();
    let Lookup::Hit { rec, .. } = idx.lookup(
        &live("GET", "/g", None, &empty),
        None,
        UnknownTrace::Miss,
        0,
    ) else {
        panic!("hit expected");
    };
    assert!(rec.answer.headers.get("content-length").is_none());
    assert!(rec.answer.headers.get("connection").is_none());
    assert_eq!(rec.answer.headers["content-type"], "application/json");
    assert_eq!(
        rec.answer
            .trailers
            .as_ref()
            .map(|t| t["grpc-status"].clone()),
        Some(HeaderValue::from_static("0"))
    );
    assert_eq!(idx.report().invalid_headers, 1);
    assert_eq!(idx.report().without_response, 1);
    let Lookup::Hit { rec, .. } = idx.lookup(
        &live("GET", "/f", None, &empty),
        None,
        UnknownTrace::Miss,
        0,
    ) else {
        panic!("hit expected");
    };
    assert!(rec.answer.status.is_none());
    assert_eq!(rec.answer.error.as_deref(), Some("reset"));
}
