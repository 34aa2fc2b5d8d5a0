//! `tapedeck serve`'s request bodies on arbitrary bytes: `POST /v1/runs` (`parse_run_request`)
//! and the Flagger webhooks (`parse_flagger`).
//!
//! Properties: no panic; an accepted run request serializes to a body that parses back to the
//! same request, and both resolve (with defaults and without) to the same `RunSpec` or to the
//! same refusal; a resolved spec survives its `state.json` round trip; an id that is accepted is
//! a safe directory name; a Flagger payload always has a checksum and its run id is a safe
//! directory name; its metadata resolves like the same overrides sent to `POST /v1/runs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_serve::{
    Defaults, RequestError, RunRequest, RunSpec, parse_flagger, parse_run_request, valid_id,
};

fn defaults() -> [Defaults; 2] {
    [
        Defaults {
            tape: vec!["/tapes/svc".into()],
            baseline: Some("http://127.0.0.1:9000".into()),
            candidate: Some("http://127.0.0.1:9001".into()),
            secondary: Some("http://127.0.0.1:9002".into()),
        },
        Defaults::default(),
    ]
}

/// `req` and `again` resolve alike; a resolved spec survives `state.json`.
fn same_resolution(req: &RunRequest, again: &RunRequest) {
    for d in &defaults() {
        match (req.clone().resolve(d), again.clone().resolve(d)) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "a re-parsed request resolves differently");
                let state = serde_json::to_vec(&a).expect("a spec serializes");
                let back: RunSpec = serde_json::from_slice(&state).expect("a saved spec loads");
                assert_eq!(back, a, "state.json changed the spec");
                assert!(!a.tape.is_empty());
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("one resolves, the other not: {a:?} vs {b:?}"),
        }
    }
}

fn refusal_is_a_4xx(e: &RequestError) {
    let code = e.status().as_u16();
    assert!((400..500).contains(&code), "{e}: {code}");
    assert!(!e.to_string().is_empty());
}

fuzz_target!(|data: &[u8]| {
    match parse_run_request(data) {
        Ok(req) => {
            let body = serde_json::to_vec(&req).expect("a request serializes");
            let again = parse_run_request(&body).expect("a serialized request parses");
            assert_eq!(again, req, "serialize then parse changed the request");
            same_resolution(&req, &again);
            match req.run_id() {
                Ok(id) => assert!(valid_id(&id) && !id.contains('/'), "{id:?}"),
                Err(e) => refusal_is_a_4xx(&e),
            }
        }
        Err(e) => refusal_is_a_4xx(&e),
    }
    match parse_flagger(data) {
        Ok(p) => {
            assert!(!p.checksum.is_empty());
            let id = p.run_id();
            assert!(valid_id(&id), "{id:?}");
            let req = p.run_request();
            assert_eq!(req.id, None);
            let body = serde_json::to_vec(&req).expect("metadata overrides serialize");
            let again = parse_run_request(&body).expect("metadata overrides are a run request");
            same_resolution(&req, &again);
        }
        Err(e) => refusal_is_a_4xx(&e),
    }
});
