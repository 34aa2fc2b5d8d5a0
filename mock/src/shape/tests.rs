//! Unit tests of `shape.rs`.

use super::*;

fn norm() -> Normalizer {
    Normalizer::new(
        vec![
            JsonPath::parse("$.ts").expect("path"),
            JsonPath::parse("$..request_id").expect("path"),
        ],
        vec!["_".into()],
    )
}

fn json_headers() -> Vec<Header> {
    vec![Header::new("content-type", "application/json")]
}

fn rec(path: &str, q: Option<&str>, body: &str) -> Shape {
    norm().shape(
        path,
        q,
        &json_headers(),
        &Bytes::from(body.to_owned()),
        Side::Recorded { truncated: false },
    )
}

fn live(path: &str, q: Option<&str>, body: &str) -> Shape {
    norm().shape(
        path,
        q,
        &json_headers(),
        &Bytes::from(body.to_owned()),
        Side::Live,
    )
}

fn key_of(r: &Shape, l: &Shape) -> (u64, u64) {
    let mut m = Mask::default();
    m.add(r);
    (r.key(&m), l.key(&m))
}

#[test]
fn json_is_compared_structurally() {
    let r = rec("/p", None, r#"{"a":1,"b":[1,2,{"c":"x"}]}"#);
    let l = live("/p", None, r#" { "b" : [1, 2.0, {"c":"x"}], "a" : 1 } "#);
    assert_eq!(matches(&r, &l), Some(0));
    let (a, b) = key_of(&r, &l);
    assert_eq!(a, b, "equal shapes hash alike");
    assert_eq!(
        matches(&r, &live("/p", None, r#"{"a":2,"b":[1,2,{"c":"x"}]}"#)),
        None
    );
    assert_eq!(matches(&r, &live("/p", None, r#"{"a":1,"b":[1,2]}"#)), None);
    assert_eq!(
        matches(&r, &live("/q", None, r#"{"a":1,"b":[1,2,{"c":"x"}]}"#)),
        None
    );
}

#[test]
fn placeholders_and_ignored_fields_match_anything() {
    let r = rec(
        "/charge",
        Some("token=REDACTED&x=1"),
        r#"{"card":"[REDACTED]","amount":5,"ts":"2026-01-01","meta":{"request_id":"r1"}}"#,
    );
    let l = live(
        "/charge",
        Some("x=1&token=abc"),
        r#"{"card":"4111111111111111","amount":5,"ts":"2027-02-02","meta":{"request_id":"r9"}}"#,
    );
    assert_eq!(matches(&r, &l), Some(4));
    let (a, b) = key_of(&r, &l);
    assert_eq!(a, b, "wildcard positions are left out of the hash");
    // An ignored field may be missing on one side.
    let l2 = live(
        "/charge",
        Some("token=zzz&x=1"),
        r#"{"card":"5500","amount":5,"meta":{}}"#,
    );
    assert!(matches(&r, &l2).is_some());
    let (a, b) = key_of(&r, &l2);
    assert_eq!(a, b);
    // A real difference still counts.
    let l3 = live("/charge", Some("x=2&token=a"), r#"{"card":"1","amount":5}"#);
    assert_eq!(matches(&r, &l3), None);
    let l4 = live("/charge", Some("x=1&token=a"), r#"{"card":"1","amount":6}"#);
    assert_eq!(matches(&r, &l4), None);
    // hmac tokens are wildcards too; ignored query parameters are dropped on both sides.
    let r = rec(
        "/u",
        Some("_=1&id=hmac-sha256:0123456789abcdef0123456789abcdef"),
        "",
    );
    assert_eq!(matches(&r, &live("/u", Some("id=42&_=999"), "")), Some(1));
    assert_eq!(matches(&r, &live("/u", Some("id=42&id=43"), "")), None);
}

#[test]
fn queries_are_multisets() {
    let r = rec("/s", Some("a=1&a=2&b=x%20y"), "");
    assert_eq!(matches(&r, &live("/s", Some("b=x+y&a=2&a=1"), "")), Some(0));
    assert_eq!(matches(&r, &live("/s", Some("b=x+y&a=1&a=1"), "")), None);
    assert_eq!(matches(&r, &live("/s", Some("b=x+y&a=1"), "")), None);
    assert_eq!(matches(&r, &live("/s", None, "")), None);
}

#[test]
fn forms_text_prefixes_and_unknown_bodies() {
    let form = vec![Header::new(
        "content-type",
        "application/x-www-form-urlencoded",
    )];
    let n = norm();
    let r = n.shape(
        "/f",
        None,
        &form,
        &Bytes::from_static(b"user=al&pin=REDACTED"),
        Side::Recorded { truncated: false },
    );
    let l = n.shape(
        "/f",
        None,
        &form,
        &Bytes::from_static(b"pin=1234&user=al"),
        Side::Live,
    );
    assert_eq!(matches(&r, &l), Some(1));

    let text = vec![Header::new("content-type", "text/plain")];
    let r = n.shape(
        "/t",
        None,
        &text,
        &Bytes::from_static(b"mail [REDACTED] now, [REDACTED]!"),
        Side::Recorded { truncated: false },
    );
    let l = |b: &'static [u8]| n.shape("/t", None, &text, &Bytes::from_static(b), Side::Live);
    assert!(matches(&r, &l(b"mail al@example.com now, bob!")).is_some());
    assert!(matches(&r, &l(b"mail  now, !")).is_some());
    assert!(matches(&r, &l(b"mail al now, bob?")).is_none());
    assert!(matches(&r, &l(b"post al now, bob!")).is_none());

    let r = n.shape(
        "/t",
        None,
        &text,
        &Bytes::from_static(b"abc"),
        Side::Recorded { truncated: true },
    );
    assert!(matches(&r, &l(b"abcdef")).is_some());
    assert!(matches(&r, &l(b"abX")).is_none());

    let r = n.shape(
        "/t",
        None,
        &text,
        &Bytes::new(),
        Side::Recorded { truncated: true },
    );
    assert_eq!(r.body, Body::Unknown);
    assert!(matches(&r, &l(b"anything")).is_some());
}

#[test]
fn compressed_bodies_are_compared_decoded() {
    let plain = br#"{"a":1}"#;
    let gz = coding::encode(plain, &[coding::Coding::Gzip]).expect("gzip");
    let headers = vec![
        Header::new("content-type", "application/json"),
        Header::new("content-encoding", "gzip"),
    ];
    let r = norm().shape(
        "/z",
        None,
        &headers,
        &Bytes::from(gz),
        Side::Recorded { truncated: false },
    );
    assert_eq!(matches(&r, &live("/z", None, r#"{ "a": 1 }"#)), Some(0));
}

#[test]
fn glob_pieces() {
    let p = text_pieces(b"[REDACTED]x[REDACTED]");
    assert_eq!(p, vec![Piece::Any, Piece::Lit(b"x".to_vec()), Piece::Any]);
    assert!(glob_match(&p, b"x"));
    assert!(glob_match(&p, b"aaxbb"));
    assert!(!glob_match(&p, b"ab"));
    let p = text_pieces(b"a[REDACTED]a");
    assert!(glob_match(&p, b"aa"));
    assert!(glob_match(&p, b"abca"));
    assert!(!glob_match(&p, b"a"));
}

#[test]
fn similarity_prefers_the_closer_request() {
    let l = live("/p/1", Some("a=1&b=2"), r#"{"x":1,"y":2,"z":3}"#);
    let close = rec("/p/1", Some("a=1&b=3"), r#"{"x":1,"y":2,"z":4}"#);
    let far = rec("/p/2", Some("a=9"), r#"{"x":0}"#);
    assert!(similarity(&close, &l) > similarity(&far, &l));
    assert!(similarity(&close, &l) <= 7.0);
    let same = rec("/p/1", Some("a=1&b=2"), r#"{"x":1,"y":2,"z":3}"#);
    assert!((similarity(&same, &l) - 7.0).abs() < 1e-9);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "[a-c0-9]{0,3}".prop_map(Value::String),
            (0i32..4).prop_map(Value::from),
            (0i32..4).prop_map(|i| Value::from(f64::from(i))),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            Just(Value::String(MASK.to_owned())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn shape_of(v: &Value, q: &str, side: Side) -> Shape {
        norm().shape(
            "/p",
            Some(q),
            &json_headers(),
            &Bytes::from(serde_json::to_vec(v).expect("json")),
            side,
        )
    }

    /// `v` with every placeholder replaced by a value taken from `fills` (cycled).
    fn fill(v: &Value, fills: &[i32], at: &mut usize) -> Value {
        match v {
            Value::String(s) if s == MASK => {
                *at += 1;
                match fills.get(*at % fills.len().max(1)) {
                    Some(n) if n % 2 == 0 => Value::from(*n),
                    Some(n) => Value::String(format!("secret-{n}")),
                    None => Value::Null,
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, fills, at)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), fill(x, fills, at)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    proptest! {
        /// A live request that differs from a recording only where the recording holds
        /// placeholders matches it and hashes like it.
        #[test]
        fn placeholders_accept_any_value(
            rec in arb_json(),
            fills in prop::collection::vec(any::<i32>(), 1..6),
        ) {
            let r = shape_of(&rec, "b=REDACTED&a=1", Side::Recorded { truncated: false });
            let mut mask = Mask::default();
            mask.add(&r);
            let live = shape_of(&fill(&rec, &fills, &mut 0), "a=1&b=zz", Side::Live);
            prop_assert!(matches(&r, &live).is_some(), "{:?} vs {:?}", r.body, live.body);
            prop_assert_eq!(r.key(&mask), live.key(&mask));
        }

        /// What `matches` accepts hashes alike, so the one hash lookup never misses a match.
        #[test]
        fn matching_shapes_share_their_key(
            recs in prop::collection::vec((arb_json(), "(a=[12]|b=REDACTED|c=[xy])(&(a|b|c)=[12x])?"), 1..4),
            live in arb_json(),
            lq in "(a|b|c)=[12xy](&(a|b|c)=[12xy])?",
        ) {
            let recs: Vec<Shape> = recs
                .iter()
                .map(|(v, q)| shape_of(v, q, Side::Recorded { truncated: false }))
                .collect();
            let mut mask = Mask::default();
            for r in &recs {
                mask.add(r);
            }
            let live = shape_of(&live, &lq, Side::Live);
            for r in &recs {
                if matches(r, &live).is_some() {
                    prop_assert_eq!(r.key(&mask), live.key(&mask));
                }
                // A request always matches its own recording, exactly when it has no
                // wildcard.
                let own = shape_of(
                    &serde_json::from_slice(&r.raw).expect("json"),
                    "",
                    Side::Live,
                );
                let mut r2 = r.clone();
                r2.query.clear();
                prop_assert!(matches(&r2, &own).is_some());
                prop_assert_eq!(r2.key(&mask), own.key(&mask));
            }
        }
    }
}
