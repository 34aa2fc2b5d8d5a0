//! Broken upstreams and replay targets: error exchanges with their kinds, the proxy healthy
//! after each; odd bodies recorded byte for byte and judged as undecodable.

use std::time::Duration;

use bytes::Bytes;
use tapedeck_storage::{ErrorKind, Exchange, now_us};

use super::recorder;
use super::wire::{BadUpstream, first_status, raw_exchange, status_of};
use crate::util::{Diff, Engine, Replay, curl, get, read_tape, stderr, stdout, write_tape};

fn upstream_faults_incl_a_bad_chunk_give_502_504_error_exchanges_with_kinds(engine: Engine) {
    let up = BadUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        // Far beyond any scheduling delay of a loaded machine (the stalls last 10 s): only the
        // stalls time out, never the next request's answer.
        .args(&["--upstream-timeout", "3s"])
        .start(dir.path());
    let mut faults = 0;
    for (path, want) in [
        ("/garbage", 502),
        ("/stall", 504),
        ("/reset", 0),
        ("/rst", 0),
        ("/stall-body", 0),
        ("/bad-chunk", 0),
    ] {
        let mut req =
            format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").into_bytes();
        if path == "/rst" {
            req = format!(
                "POST {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 65536\r\n\r\n"
            )
            .into_bytes();
            req.extend(std::iter::repeat_n(b'u', 65536));
        }
        let resp = raw_exchange(rec.port, &req, Duration::from_secs(20));
        faults += 1;
        let text = String::from_utf8_lossy(&resp).into_owned();
        if want != 0 {
            assert_eq!(status_of(&resp), want, "{path}: {text}");
        } else {
            // Headers may already be on their way: the client either gets a 502 or a response
            // that is cut short -- never a complete 1000-byte body.
            let st = status_of(&resp);
            assert!(
                st == 502 || st == 200 && resp.len() < 1000,
                "{path}: {st} {} bytes: {text}",
                resp.len()
            );
        }
        // The next request through the same proxy is served normally.
        let (st, body) = curl(&[&rec.url(&format!("/next{path}"))]);
        assert_eq!(
            (st, body.as_str()),
            (200, &*format!("ok /next{path}")),
            "after {path}"
        );
    }
    let tape = rec.stop();
    let kind = |p: &str| {
        tape.iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} not on the tape: {tape:?}"))
            .error_kind
    };
    assert_eq!(kind("/garbage"), Some(ErrorKind::Protocol));
    assert_eq!(kind("/stall"), Some(ErrorKind::Timeout));
    assert_eq!(kind("/reset"), Some(ErrorKind::Reset));
    assert_eq!(kind("/rst"), Some(ErrorKind::Reset));
    assert_eq!(kind("/stall-body"), Some(ErrorKind::Timeout));
    assert!(
        matches!(
            kind("/bad-chunk"),
            Some(ErrorKind::Protocol | ErrorKind::Reset)
        ),
        "{:?}",
        kind("/bad-chunk")
    );
    for p in [
        "/garbage",
        "/stall",
        "/reset",
        "/rst",
        "/stall-body",
        "/bad-chunk",
    ] {
        let next = format!("/next{p}");
        let e = tape.iter().find(|e| e.path == next).expect("next recorded");
        assert_eq!(e.status, Some(200));
        assert_eq!(e.error_kind, None);
    }
    eprintln!(
        "upstream faults injected: {faults}, tape rows {}",
        tape.len()
    );
}

#[test]
fn replay_target_faults_give_error_exchanges_and_a_complete_summary() {
    let up = BadUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    let paths = [
        "/garbage",
        "/ok/1",
        "/stall",
        "/ok/2",
        "/reset",
        "/ok/3",
        "/stall-body",
        "/ok/4",
        "/bad-chunk",
    ];
    let recorded: Vec<Exchange> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| get(p, t0 + i as i64 * 1000))
        .collect();
    write_tape(&tape, &recorded);
    let v = Replay::new(&tape)
        .out(&out_dir)
        .target("bad", &up.url())
        .args(["--timeout", "500ms"])
        .summary();
    let t = &v["targets"][0];
    assert_eq!(t["responses"], 4, "{v}");
    assert_eq!(t["errors_by_kind"]["protocol"], 2, "{v}");
    assert_eq!(t["errors_by_kind"]["reset"], 1, "{v}");
    assert_eq!(t["errors_by_kind"]["timeout"], 2, "{v}");
    let results = read_tape(&out_dir);
    assert_eq!(
        results.len(),
        paths.len(),
        "one result per recorded request"
    );
    for r in &results {
        let want = match r.path.as_str() {
            "/garbage" | "/bad-chunk" => Some(ErrorKind::Protocol),
            "/reset" => Some(ErrorKind::Reset),
            "/stall" | "/stall-body" => Some(ErrorKind::Timeout),
            _ => None,
        };
        assert_eq!(r.error_kind, want, "{}: {:?}", r.path, r.error);
        if want.is_none() {
            assert_eq!(r.status, Some(200), "{}", r.path);
        }
    }
}

fn odd_bodies_are_recorded_faithfully_and_diff_reports_undecodable(engine: Engine) {
    let up = BadUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine).start(dir.path());
    // A request body that is not UTF-8, sent raw.
    let mut req = b"POST /bad-utf8 HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
                    content-length: 6\r\nconnection: close\r\n\r\n"
        .to_vec();
    req.extend_from_slice(b"\"\xff\xfe\xc3\x28\"");
    let resp = raw_exchange(rec.port, &req, Duration::from_secs(20));
    assert_eq!(first_status(&resp), 200);
    for p in ["/bogus-gzip", "/weird-encoding"] {
        // curl without --compressed passes the bytes through as they came.
        assert_eq!(curl(&[&rec.url(p)]).0, 200, "{p}");
    }
    let tape = rec.stop();
    let find = |p: &str| {
        tape.iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} not recorded"))
    };
    let enc = |e: &Exchange| {
        tapedeck_storage::find_header(&e.resp_headers, "content-encoding")
            .map(|h| h.value_lossy().into_owned())
    };
    let utf = find("/bad-utf8");
    assert_eq!(&utf.req_body[..], b"\"\xff\xfe\xc3\x28\"");
    assert_eq!(&utf.resp_body[..], b"{\"name\":\"\xff\xfe\xc3\x28\"}");
    let gz = find("/bogus-gzip");
    assert_eq!(&gz.resp_body[..], b"{\"this is\": \"not gzip\"}");
    assert_eq!(enc(gz).as_deref(), Some("gzip"));
    let weird = find("/weird-encoding");
    assert_eq!(&weird.resp_body[..], b"\x00\x01binary\x80");
    assert_eq!(enc(weird).as_deref(), Some("x-made-up"));

    // A run where baseline and candidate both answer with these bodies, the candidate's bodies
    // changed: diff compares them as raw bytes and says so, and does not fail to run.
    let run_dir = dir.path().join("run");
    let w = tapedeck_storage::TapeWriter::builder(&run_dir)
        .when_full(tapedeck_storage::WhenFull::Block)
        .open()
        .expect("open run");
    let t0 = now_us();
    let mut k = 0i64;
    for i in 0..30 {
        for ex in [utf, gz, weird] {
            let origin = Exchange::new_id();
            for target in ["baseline", "candidate"] {
                let mut body = ex.resp_body.to_vec();
                if target == "candidate" && ex.path != "/bad-utf8" {
                    body.extend_from_slice(b" changed");
                }
                let body = Bytes::from(body);
                k += 1;
                w.append(Exchange {
                    id: Exchange::new_id(),
                    started_at_us: t0 + k * 1000,
                    scheduled_at_us: Some(t0 + k * 1000),
                    total_us: Some(5_000 + (i % 7) * 100),
                    resp_body_size: body.len() as u64,
                    resp_body: body,
                    origin_id: Some(origin),
                    target: Some(target.into()),
                    ..ex.clone()
                })
                .expect("append");
            }
        }
    }
    w.close().expect("close run");
    let report = dir.path().join("report");
    let out = Diff::of(&run_dir).report(&report).run();
    assert!(
        matches!(out.status.code(), Some(0 | 1 | 3)),
        "diff failed to run ({:?}):\n{}\n{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    let verdict = std::fs::read_to_string(report.join("verdict.json")).expect("verdict.json");
    assert!(verdict.contains("undecodable"), "{verdict}");
    let v: serde_json::Value = serde_json::from_str(&verdict).expect("verdict JSON");
    assert_eq!(v["counts"]["paired"], 90, "{v}");
}

on_both_engines!(
    upstream_faults_incl_a_bad_chunk_give_502_504_error_exchanges_with_kinds,
    odd_bodies_are_recorded_faithfully_and_diff_reports_undecodable,
);
