//! Unit tests of `redact.rs`.

use super::*;
use proptest::prelude::*;

fn ex() -> Exchange {
    Exchange {
            path: "/invites/INVITETOKEN/accept".into(),
            query: Some("user=al&token=s3cr3t&x=1".into()),
            req_headers: vec![
                Header::new("authorization", "Bearer TOPSECRET"),
                Header::new("content-type", "application/json"),
                Header::new("x-trace", "abc"),
            ],
            req_body: Bytes::from_static(
                br#"{"user":"al","password":"hunter2","card":{"card_number":"4111111111111111"},"items":[{"card_number":"5500000000000004"}]}"#,
            ),
            resp_headers: vec![Header::new("Set-Cookie", "sid=COOKIESECRET")],
            resp_body: Bytes::from_static(b"contact: al@example.com"),
            ..Exchange::default()
        }
}

fn full() -> RedactorBuilder {
    RedactorBuilder::new()
        .path_template("/invites/{token}/accept")
        .expect("template")
        .query_param("token")
        .json_path("$.password")
        .and_then(|b| b.json_path("$..card_number"))
        .and_then(|b| b.body_regex(r"[a-z]+@[a-z]+\.com"))
        .expect("rules")
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn mask_mode_removes_every_secret() {
    let r = full().build();
    let mut e = ex();
    assert!(r.redact(&mut e));
    assert!(e.has_flag(flags::REDACTED));
    let all = format!("{e:?}{}{}", text(&e.req_body), text(&e.resp_body));
    for secret in [
        "TOPSECRET",
        "COOKIESECRET",
        "INVITETOKEN",
        "s3cr3t",
        "hunter2",
        "4111111111111111",
        "5500000000000004",
        "al@example.com",
    ] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    assert_eq!(e.query.as_deref(), Some("user=al&token=REDACTED&x=1"));
    assert_eq!(e.path, "/invites/REDACTED/accept");
    assert!(is_placeholder(b"REDACTED"));
    assert_eq!(e.req_headers[2].value, Bytes::from_static(b"abc"));
    let body: Value = serde_json::from_slice(&e.req_body).expect("still json");
    assert_eq!(body["user"], "al");
    assert_eq!(body["password"], MASK);
    assert_eq!(body["items"][0]["card_number"], MASK);
    // The replayer recognizes what the recorder wrote into a sensitive header.
    assert!(tapedeck_storage::is_redaction_placeholder(
        &e.req_headers[0].value
    ));
}

#[test]
fn hash_mode_is_keyed_and_stable() {
    let a = full().hash_with_key(b"0123456789abcdef-key").build();
    let b = full().hash_with_key(b"another-key-0123456789").build();
    assert_eq!(a.mode(), RedactMode::Hash);
    assert_eq!(a.token(b"x"), a.token(b"x"));
    assert_ne!(a.token(b"x"), a.token(b"y"));
    assert_ne!(a.token(b"x"), b.token(b"x"));
    assert!(a.token(b"x").starts_with("hmac-sha256:"));
    let (mut e1, mut e2) = (ex(), ex());
    a.redact(&mut e1);
    a.redact(&mut e2);
    assert_eq!(e1.req_headers[0].value, e2.req_headers[0].value);
    assert!(!text(&e1.req_headers[0].value).contains("TOPSECRET"));
    assert!(tapedeck_storage::is_redaction_placeholder(
        &e1.req_headers[0].value
    ));
    let v: Value = serde_json::from_slice(&e1.req_body).expect("json");
    assert_eq!(v["password"], Value::String(a.token(b"hunter2")));
    // Path segments get the same token, so one secret correlates across requests.
    assert_eq!(
        e1.path,
        format!("/invites/{}/accept", a.token(b"INVITETOKEN"))
    );
}

#[test]
fn truncated_json_still_redacted() {
    let r = full().build();
    let mut e = Exchange {
        req_headers: vec![Header::new("content-type", "application/json")],
        req_body: Bytes::from_static(br#"{"a":1,"password": "hunt"#),
        ..Exchange::default()
    };
    assert!(r.redact(&mut e));
    assert!(!text(&e.req_body).contains("hunt"), "{}", text(&e.req_body));
    let mut e = Exchange {
        req_body: Bytes::from_static(br#"{"password":12345, "card_number":"41111"#),
        ..Exchange::default()
    };
    assert!(r.redact(&mut e));
    let t = text(&e.req_body);
    assert!(!t.contains("12345") && !t.contains("41111"), "{t}");
}

#[test]
fn form_bodies_and_nothing_to_do() {
    let r = full().build();
    let mut e = Exchange {
        req_headers: vec![Header::new(
            "content-type",
            "application/x-www-form-urlencoded",
        )],
        req_body: Bytes::from_static(b"a=1&token=zzz"),
        ..Exchange::default()
    };
    assert!(r.redact(&mut e));
    assert_eq!(text(&e.req_body), "a=1&token=REDACTED");
    let mut plain = Exchange {
        req_body: Bytes::from_static(b"{\"ok\":true}"),
        ..Exchange::default()
    };
    assert!(!r.redact(&mut plain));
    assert_eq!(plain.flags, 0);
    assert_eq!(text(&plain.req_body), "{\"ok\":true}");
}

/// A JSON value of keys/strings from `[a-m0-9]` only, so the secret's letters (`QZXJ`) can
/// only come from the planted field.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        "[a-m0-9]{0,8}".prop_map(Value::String),
        any::<i32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-m]{1,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Puts `"password": secret` into the first object found along `path`, or wraps.
fn plant(v: &mut Value, secret: &str, path: &[usize]) {
    match v {
        Value::Object(o) if path.is_empty() || o.is_empty() => {
            o.insert("password".into(), Value::String(secret.into()));
        }
        Value::Object(o) => {
            let n = o.len();
            let (_, child) = o.iter_mut().nth(path[0] % n).expect("non-empty");
            if child.is_object() || child.is_array() {
                plant(child, secret, &path[1..]);
            } else {
                o.insert("password".into(), Value::String(secret.into()));
            }
        }
        Value::Array(a) if !a.is_empty() && !path.is_empty() => {
            let n = a.len();
            plant(&mut a[path[0] % n], secret, &path[1..]);
        }
        other => {
            let inner = std::mem::take(other);
            *other = serde_json::json!({ "wrapped": inner, "password": secret });
        }
    }
}

proptest! {
    #[test]
    fn planted_password_never_survives_in_compressed_bodies(
        mut v in arb_json(),
        secret in "[QZXJ]{4,24}",
        path in prop::collection::vec(any::<usize>(), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        plant(&mut v, &secret, &path);
        let r = RedactorBuilder::new().json_path("$..password").expect("path").build();
        let whole = gz(&serde_json::to_vec(&v).expect("json"));
        let cut_at = cut.index(whole.len() + 1);
        let mut e = coded("gzip", whole.slice(..cut_at));
        e.resp_body_truncated = cut_at < whole.len();
        r.redact(&mut e);
        // Whatever is stored decodes (or is empty) and holds no letter of the secret.
        let out = if e.resp_body.is_empty() { Vec::new() } else { stored_plain(&e) };
        let text = String::from_utf8_lossy(&out).into_owned();
        prop_assert!(!text.contains(['Q', 'Z', 'X', 'J']), "secret left in {}", text);
    }

    #[test]
    fn planted_password_never_survives(
        mut v in arb_json(),
        secret in "[QZXJ]{4,24}",
        path in prop::collection::vec(any::<usize>(), 0..4),
        cut in any::<prop::sample::Index>(),
        hash in any::<bool>(),
    ) {
        plant(&mut v, &secret, &path);
        let mut b = RedactorBuilder::new().json_path("$..password").expect("path");
        if hash {
            b = b.hash_with_key(b"0123456789abcdef0123");
        }
        let r = b.build();
        let body = serde_json::to_vec(&v).expect("json");
        // The whole body, and the body cut anywhere (as at the capture cap).
        let cut_at = cut.index(body.len() + 1);
        for b in [Bytes::from(body.clone()), Bytes::copy_from_slice(&body[..cut_at])] {
            let mut e = Exchange { req_body: b, ..Exchange::default() };
            r.redact(&mut e);
            let out = String::from_utf8_lossy(&e.req_body).into_owned();
            prop_assert!(
                !out.contains(['Q', 'Z', 'X', 'J']),
                "secret (or part of it) left in {}", out
            );
        }
    }
}

fn gz(plain: &[u8]) -> Bytes {
    Bytes::from(coding::encode(plain, &[coding::Coding::Gzip]).expect("gzip"))
}

/// Everything the stored body decodes to (with the exchange's own Content-Encoding).
fn stored_plain(e: &Exchange) -> Vec<u8> {
    let cs = coding::codings(&e.resp_headers).expect("known codings");
    if cs.is_empty() {
        return e.resp_body.to_vec();
    }
    let d = coding::decode(&e.resp_body, &cs, 1 << 24).expect("stored body decodes");
    assert!(d.complete(), "the stored body is a whole stream");
    d.bytes
}

fn coded(ce: &str, body: Bytes) -> Exchange {
    Exchange {
        resp_headers: vec![
            Header::new("content-type", "application/json"),
            Header::new("content-encoding", ce.to_owned()),
        ],
        resp_body_size: body.len() as u64,
        resp_body: body,
        ..Exchange::default()
    }
}

#[test]
fn compressed_bodies_are_redacted_and_stay_decodable() {
    let r = full().build();
    let plain = br#"{"user":"al","password":"hunter2","mail":"al@example.com"}"#;
    for (ce, cs) in [
        ("gzip", vec![coding::Coding::Gzip]),
        ("br", vec![coding::Coding::Brotli]),
        ("zstd", vec![coding::Coding::Zstd]),
        ("deflate", vec![coding::Coding::Zlib]),
        (
            "gzip, br",
            vec![coding::Coding::Gzip, coding::Coding::Brotli],
        ),
    ] {
        let body = Bytes::from(coding::encode(plain, &cs).expect("encode"));
        let mut e = coded(ce, body);
        assert!(r.redact(&mut e), "{ce}");
        assert!(e.has_flag(flags::REDACTED) && e.has_flag(flags::BODY_REENCODED));
        assert!(!e.resp_body_truncated);
        let out = stored_plain(&e);
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["password"], MASK, "{ce}");
        assert_eq!(v["user"], "al");
        let t = String::from_utf8_lossy(&out);
        assert!(
            !t.contains("hunter2") && !t.contains("al@example.com"),
            "{ce}: {t}"
        );
    }
}

#[test]
fn compressed_bodies_without_secrets_or_rules_are_untouched() {
    let body = gz(br#"{"user":"al"}"#);
    let mut e = coded("gzip", body.clone());
    assert!(!full().build().redact(&mut e));
    assert_eq!(
        e.resp_body.as_ptr(),
        body.as_ptr(),
        "the wire bytes are kept"
    );
    assert_eq!(e.flags, 0);
    // No body rule: bodies are never decoded, whatever they hold.
    let secret = gz(br#"{"password":"hunter2"}"#);
    let mut e = coded("gzip", secret.clone());
    assert!(!RedactorBuilder::new().build().redact(&mut e));
    assert_eq!(e.resp_body, secret);
}

#[test]
fn undecodable_bodies_are_dropped_and_prefixes_reencoded() {
    let r = full().build();
    for (ce, body) in [
        ("compress", Bytes::from_static(b"\x1f\x9d password hunter2")),
        ("gzip", Bytes::from_static(b"not gzip: password hunter2")),
    ] {
        let mut e = coded(ce, body);
        assert!(r.redact(&mut e), "{ce}");
        assert!(e.resp_body.is_empty() && e.resp_body_truncated, "{ce}");
        assert!(e.has_flag(flags::BODY_DROPPED) && e.has_flag(flags::REDACTED));
    }
    // A gzip stream cut at the capture cap: the decodable prefix, redacted, encoded again.
    let mut doc = String::from("[");
    for i in 0..2000 {
        doc.push_str(&format!("{{\"n\":{i},\"password\":\"pw{i}QZX\"}},"));
    }
    doc.push_str("{}]");
    let whole = gz(doc.as_bytes());
    let r = RedactorBuilder::new()
        .json_path("$..password")
        .expect("path")
        .build();
    let mut e = coded("gzip", whole.slice(..whole.len() / 2));
    e.resp_body_truncated = true;
    assert!(r.redact(&mut e));
    assert!(e.resp_body_truncated && e.has_flag(flags::BODY_REENCODED));
    let out = stored_plain(&e);
    assert!(out.len() > 100, "a prefix was kept");
    assert!(!String::from_utf8_lossy(&out).contains("QZX"));
    // More than the decoded limit: cut there, flagged truncated, no secret past the cut.
    let r = RedactorBuilder::new()
        .json_path("$..password")
        .expect("path")
        .decoded_limit(1000)
        .build();
    let mut e = coded("gzip", whole);
    assert!(r.redact(&mut e));
    assert!(e.resp_body_truncated);
    let out = stored_plain(&e);
    // 1000 decoded bytes, with the masks in place of the values.
    assert!(out.len() > 900 && out.len() < 1500, "{}", out.len());
    assert!(!String::from_utf8_lossy(&out).contains("QZX"));
}

#[test]
fn paths_parse() {
    assert_eq!(
        parse_path("$.a.b[2]['c d'][*]..e").expect("ok"),
        vec![
            Seg::Child("a".into()),
            Seg::Child("b".into()),
            Seg::Index(2),
            Seg::Child("c d".into()),
            Seg::Any,
            Seg::Descendant("e".into())
        ]
    );
    for bad in ["password", "$", "$.", "$[x", "$..", "$[abc]"] {
        assert!(parse_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn json_paths_visit_what_they_select() {
    let mut v: Value =
        serde_json::from_str(r#"{"ts":1,"a":{"ts":2,"b":[{"ts":3},{"x":4}]},"list":[5,6]}"#)
            .expect("json");
    let mut seen = Vec::new();
    let p = JsonPath::parse("$..ts").expect("path");
    assert_eq!(p.as_str(), "$..ts");
    assert!(p.visit(&mut v, &mut |leaf| {
        seen.push(leaf.clone());
        *leaf = Value::Null;
        true
    }));
    // Every `ts` at any depth (the order follows serde_json's map order).
    let mut seen: Vec<i64> = seen.iter().filter_map(Value::as_i64).collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3]);
    let second = JsonPath::parse("$.list[1]").expect("path");
    assert!(second.visit(&mut v, &mut |leaf| {
        *leaf = Value::from("x");
        true
    }));
    assert_eq!(v["list"], serde_json::json!([5, "x"]));
    assert!(
        !JsonPath::parse("$.missing")
            .expect("path")
            .visit(&mut v, &mut |_| true)
    );
}

#[test]
fn placeholders_are_recognised() {
    let r = full().hash_with_key(b"0123456789abcdef0123").build();
    assert!(is_placeholder(r.token(b"secret").as_bytes()));
    assert!(is_placeholder(MASK.as_bytes()));
    assert!(is_placeholder(b"REDACTED"));
    for not in [&b"hmac-sha256:xyz"[..], b"[redacted]", b"", b"hmac-sha256:"] {
        assert!(!is_placeholder(not), "{}", String::from_utf8_lossy(not));
    }
}

#[test]
fn path_templates_come_from_the_rules_and_a_bad_one_names_its_key() {
    let rules = RedactRules {
        path: vec!["/reset/{token}".into()],
        ..RedactRules::default()
    };
    let r = rules.build(DEFAULT_DECODED_LIMIT).expect("rules");
    let mut e = Exchange {
        path: "/reset/abc123".into(),
        ..Exchange::default()
    };
    assert!(r.redact(&mut e));
    assert_eq!(e.path, "/reset/REDACTED");
    assert!(e.has_flag(flags::REDACTED));
    let bad = RedactRules {
        path: vec!["/reset/static".into()],
        ..RedactRules::default()
    };
    let err = bad
        .build(DEFAULT_DECODED_LIMIT)
        .expect_err("no secret segment");
    assert_eq!(err.key(), "redact-path");
    assert!(err.to_string().contains("/reset/static"), "{err}");
}

#[test]
fn header_names_are_matched_by_length_and_case_insensitively_at_every_length() {
    // Names of the same length as a sensitive one but different, names whose length is past
    // what the filter's key keeps (256 bytes), and mixed case.
    let long = "x-".to_owned() + &"a".repeat(298);
    let longer = "x-".to_owned() + &"a".repeat(42);
    let at_63 = "y".repeat(63);
    let r = RedactorBuilder::new()
        .header(&long.to_ascii_uppercase())
        .header(&at_63)
        .build();
    let mut e = Exchange {
        req_headers: vec![
            Header::new("Authorization", "a1"),
            Header::new("user-agent", "keep1"),
            Header::new("set-cookie", "a2"),
            Header::new("accept", "keep2"),
            Header::new("COOKIE", "a3"),
            Header::new(long.as_str(), "a4"),
            Header::new(longer.as_str(), "keep3"),
            Header::new(at_63.to_ascii_uppercase(), "a5"),
            Header::new("y".repeat(64), "keep4"),
        ],
        ..Exchange::default()
    };
    assert!(r.redact(&mut e));
    let kept: Vec<String> = e.req_headers.iter().map(|h| text(&h.value)).collect();
    assert_eq!(
        kept,
        [
            MASK, "keep1", MASK, "keep2", MASK, MASK, "keep3", MASK, "keep4"
        ]
    );
}
