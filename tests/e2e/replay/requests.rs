//! What reaches the targets: requests as recorded after the rewrites, the recorded trace
//! propagated, redacted credentials, the recorded host and an output that already holds a run
//! refused.

use std::collections::HashSet;

use bytes::Bytes;
use tapedeck_storage::{Exchange, Header, Tape, TapeWriter, WhenFull, now_us};

use super::per_origin;
use super::write_gets;
use crate::util::{
    Replay, Reply, TestServer, files_under, get, json_stdout, read_in_order, stderr, stdout,
    write_tape,
};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn replays_requests_faithfully_to_two_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 60_000_000;
    let mut recorded = Vec::new();
    for i in 0..6i64 {
        let mut ex = get(&format!("/api/users/{i}"), t0 + i * 1000);
        ex.query = (i % 2 == 0).then(|| format!("page={i}&sort=name"));
        ex.req_headers.extend([
            Header::new("X-Custom", "one"),
            Header::new("X-Custom", "two"),
            Header::new("Connection", "keep-alive"),
            Header::new("X-Drop", "secret-ish"),
            Header::new("Authorization", "[REDACTED]"),
        ]);
        recorded.push(ex);
    }
    let mut post = get("/api/orders", t0 + 7000);
    post.method = "POST".into();
    post.req_headers
        .push(Header::new("Content-Type", "application/json"));
    post.req_body = Bytes::from_static(br#"{"sku":"kelp-7","qty":2}"#);
    post.req_body_size = post.req_body.len() as u64;
    recorded.push(post);
    write_tape(&tape, &recorded);

    let a = TestServer::start(|_| Reply::json(r#"{"ok":true}"#));
    let b = TestServer::start(|_| Reply::json(r#"{"ok":true,"v":2}"#));
    let replay = Replay::new(&tape)
        .out(&out_dir)
        .target("baseline", &a.url())
        .target("candidate", &b.url())
        .args(["--speed", "10"])
        .allow_writes()
        .flag("--set-header", "Authorization: Bearer ${REPLAY_TOKEN}")
        .flag("--drop-header", "x-drop")
        .env("REPLAY_TOKEN", "tok-8c1f2e");
    let summary = replay.summary();
    assert_eq!(summary["origins"], 7);
    assert_eq!(summary["results_written"], 14);
    for t in 0..2 {
        assert_eq!(summary["targets"][t]["requests"], 7, "{summary}");
        assert_eq!(summary["targets"][t]["errors"], 0, "{summary}");
        assert_eq!(summary["targets"][t]["status_classes"]["2xx"], 7);
    }

    // Each target received every request as recorded, after the rewrites.
    for (server, name) in [(&a, "baseline"), (&b, "candidate")] {
        let got = server.requests();
        assert_eq!(got.len(), 7, "{name} received {}", got.len());
        for ex in &recorded {
            let uri = ex.path_and_query();
            let r = got
                .iter()
                .find(|r| r.uri == uri && r.method == ex.method)
                .unwrap_or_else(|| panic!("{name} never received {} {uri}", ex.method));
            assert_eq!(r.body, ex.req_body, "{uri}");
            assert_eq!(r.header("host").as_deref(), Some(&*server.addr.to_string()));
            assert_eq!(
                r.header("authorization").as_deref(),
                Some("Bearer tok-8c1f2e")
            );
            assert!(r.header("x-drop").is_none(), "dropped header arrived");
            assert_eq!(r.header("accept").as_deref(), Some("application/json"));
            if ex.method == "GET" {
                let custom: Vec<&[u8]> = r
                    .headers
                    .iter()
                    .filter(|(n, _)| n == "x-custom")
                    .map(|(_, v)| v.as_slice())
                    .collect();
                assert_eq!(custom, [b"one".as_slice(), b"two".as_slice()]);
            } else {
                assert_eq!(
                    r.header("content-type").as_deref(),
                    Some("application/json")
                );
            }
        }
    }

    // Results: one per (origin, target), adjacent per origin, timings from the schedule.
    let results = replay.results();
    assert_eq!(results.len(), 14);
    let pairs = per_origin(&results, &recorded, &["baseline", "candidate"]);
    assert_eq!(pairs.len(), recorded.len(), "every origin replayed");
    for pair in pairs {
        for r in pair {
            assert_eq!(r.status, Some(200));
            let (sched, sent) = (
                r.scheduled_at_us.expect("sched"),
                r.sent_at_us.expect("sent"),
            );
            assert!(sent >= sched && r.started_at_us <= sent && r.started_at_us >= sched);
            let (ttfb, total) = (r.ttfb_us.expect("ttfb"), r.total_us.expect("total"));
            assert!(ttfb <= total && total >= sent - sched);
            let auth = r
                .req_headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                .expect("authorization stored");
            assert_eq!(&auth.value[..], b"Bearer ${REPLAY_TOKEN}");
        }
        assert_eq!(
            pair[0].scheduled_at_us, pair[1].scheduled_at_us,
            "same instant"
        );
        assert_eq!(
            pair[0].started_at_us, pair[1].started_at_us,
            "one hour partition"
        );
        assert_eq!(&pair[1].resp_body[..], br#"{"ok":true,"v":2}"#);
    }
    let raw: Vec<u8> = files_under(&out_dir)
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    assert!(
        !raw.windows(10).any(|w| w == b"tok-8c1f2e"),
        "the injected token reached the result tape"
    );
}

#[test]
fn refuses_a_target_on_the_recorded_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let server = TestServer::start(|_| Reply::json("{}"));
    let mut ex = get("/a", now_us() - 1_000_000);
    ex.authority = server.addr.to_string().into();
    write_tape(&tape, &[ex]);
    let target = format!("prod={}", server.url());
    let replay = Replay::new(&tape)
        .out(&out_dir)
        .target("prod", &server.url());
    let out = replay.run();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--allow-same-host"),
        "{}",
        stderr(&out)
    );
    assert!(server.requests().is_empty());
    let out = replay.arg("--allow-same-host").run();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 1);
    // The output tape says what was replayed where.
    let md = Tape::open(&[&out_dir])
        .expect("open results")
        .metadata()
        .expect("metadata");
    assert_eq!(md.get("tapedeck.run.targets"), Some(&target));
    assert_eq!(
        md.get("tapedeck.kind").map(String::as_str),
        Some("replay-results")
    );
    assert_eq!(
        md.get("tapedeck.run.source_tape").map(String::as_str),
        Some(s(&tape))
    );

    // The recorder's upstream (file metadata) is protected too, whatever the Host clients used.
    let tape2 = dir.path().join("tape2");
    let w = TapeWriter::builder(&tape2)
        .when_full(WhenFull::Block)
        .metadata("tapedeck.recorder.upstream", server.addr.to_string())
        .open()
        .expect("open tape");
    w.append(get("/b", now_us() - 1_000_000)).expect("append");
    w.close().expect("close");
    let out = Replay::new(&tape2)
        .out(&dir.path().join("run2"))
        .target("prod", &server.url())
        .run();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 1, "nothing more was sent");
}

/// Issue 17: `replay --out DIR` into a directory that already held results mixed two runs
/// (42 rows for 21 origins, no warning). An output that holds results is refused (exit 2,
/// naming `--append`) before anything is sent; `--append` adds to it on purpose.
#[test]
fn issue_17_replay_refuses_an_output_that_holds_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us();
    write_gets(&tape, "/api/items", 21, t0, 1000);
    let target = TestServer::start(|_| Reply::json("{}"));
    let out = dir.path().join("run");
    // An empty directory is a fine place for a new run.
    std::fs::create_dir_all(&out).expect("mkdir");
    let replay = |extra: &[&str]| {
        Replay::new(&tape)
            .target("c", &target.url())
            .max()
            .arg("--quiet")
            .out(&out)
            .args(extra)
            .run()
    };
    let o = replay(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(read_in_order(&out).len(), 21);
    assert_eq!(target.requests().len(), 21);

    let o = replay(&[]);
    assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--append") && err.contains(s(&out)) && err.contains("already holds"),
        "the error names the output and the flag: {err}"
    );
    assert_eq!(target.requests().len(), 21, "nothing was sent");
    assert_eq!(read_in_order(&out).len(), 21, "the first run is untouched");

    let o = replay(&["--append"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(read_in_order(&out).len(), 42, "--append adds on purpose");
}

/// Issue 17: replaying a tape whose credentials were redacted sent the placeholders
/// (`Authorization: [REDACTED]`, `hmac-sha256:…`) without a word. The replay warns once, before
/// sending, naming the headers, their counts and the `--set-header` that fixes it, and counts
/// them in the summary; `--strict-credentials` refuses to start (exit 2, nothing sent).
#[test]
fn issue_17_redacted_credentials_are_warned_about_or_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us();
    // What `tapedeck record` stores: the mask in mask mode, an HMAC token in hash mode.
    let recorded: Vec<Exchange> = (0..20)
        .map(|i| {
            let mut ex = get(&format!("/api/items/{i}"), t0 + i * 1000);
            ex.req_headers
                .push(Header::new("Authorization", "[REDACTED]"));
            ex.req_headers.push(Header::new(
                "X-Api-Key",
                "hmac-sha256:0123456789abcdef0123456789abcdef",
            ));
            if i % 2 == 0 {
                ex.req_headers.push(Header::new("Cookie", "[REDACTED]"));
            }
            ex
        })
        .collect();
    write_tape(&tape, &recorded);
    let target = TestServer::start(|_| Reply::json("{}"));
    let replay = |out: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut r = Replay::new(&tape)
            .target("c", &target.url())
            .max()
            .out(&dir.path().join(out))
            .args(extra);
        for (k, v) in env {
            r = r.env(k, v);
        }
        r.run()
    };

    // Without --strict-credentials: sent, with one warning before the first request, and counted.
    let o = replay("r1", &["--json"], &[]);
    let summary = json_stdout(&o);
    let err = stderr(&o);
    assert_eq!(
        err.matches("redaction placeholder").count(),
        1,
        "one warning:\n{err}"
    );
    for needle in [
        "authorization",
        "x-api-key",
        "cookie",
        "--set-header 'Authorization: ${AUTHORIZATION}'",
        "--strict-credentials",
    ] {
        assert!(err.contains(needle), "the warning lacks {needle:?}:\n{err}");
    }
    let counted = &summary["selection"]["redacted_credentials"];
    assert_eq!(counted["authorization"], 20, "{summary:#}");
    assert_eq!(counted["x-api-key"], 20, "{summary:#}");
    assert_eq!(counted["cookie"], 10, "{summary:#}");
    assert_eq!(target.requests().len(), 20);

    // --strict-credentials: refused before anything is sent.
    let o = replay("r2", &["--strict-credentials"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("authorization") && err.contains("--set-header") && err.contains("20"),
        "{err}"
    );
    assert_eq!(target.requests().len(), 20, "nothing was sent");
    assert!(!dir.path().join("r2").exists(), "no output was written");

    // Real values (or dropped headers) leave nothing to warn about.
    let o = replay(
        "r3",
        &[
            "--strict-credentials",
            "--set-header",
            "Authorization: Bearer ${TOKEN}",
            "--drop-header",
            "x-api-key",
            "--drop-header",
            "cookie",
            "--json",
        ],
        &[("TOKEN", "t0ken-42")],
    );
    let summary = json_stdout(&o);
    assert!(
        !stderr(&o).contains("redaction placeholder"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        summary["selection"]["redacted_credentials"],
        serde_json::json!({})
    );
    let sent = target.requests();
    assert_eq!(sent.len(), 40);
    assert!(sent[20..].iter().all(|r| {
        r.header("authorization").as_deref() == Some("Bearer t0ken-42")
            && r.header("x-api-key").is_none()
    }));
}

/// Issue 15: each replayed request carries its recorded trace id in a `traceparent` with a new
/// span id (per request, per target: HTTP/1.1 and h2c), in place of the recorded header; requests
/// without a recorded trace get none; the result tape stores the trace id.
#[test]
fn issue_15_replay_propagates_the_recorded_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    let trace = |i: usize| format!("{:032x}", 0xabc0 + i);
    let mut recorded = Vec::new();
    for i in 0..4usize {
        let mut ex = get(&format!("/traced/{i}"), t0 + i as i64);
        ex.trace_id = Some(trace(i));
        ex.req_headers.push(Header::new(
            "traceparent",
            format!("00-{}-00f067aa0ba902b7-01", trace(i)),
        ));
        recorded.push(ex);
    }
    // Recorded with `--trace-header x-request-id`: that header travels, no traceparent added.
    let mut by_id = get("/by-request-id", t0 + 10);
    by_id.trace_id = Some("req-42".into());
    by_id
        .req_headers
        .push(Header::new("x-request-id", "req-42"));
    recorded.push(by_id);
    recorded.push(get("/untraced", t0 + 11));
    write_tape(&tape, &recorded);
    let h1 = TestServer::start(|_| Reply::json("{}"));
    let h2 = TestServer::start(|_| Reply::json("{}"));
    let replay = Replay::new(&tape)
        .out(&out_dir)
        .target("h1", &h1.url())
        .target("h2", &format!("h2c://{}", h2.addr));
    let v = replay.summary();
    assert_eq!(v["targets"][0]["responses"], 6);
    assert_eq!(v["targets"][1]["responses"], 6);
    let mut spans = HashSet::new();
    for (name, server) in [("h1", &h1), ("h2", &h2)] {
        let got = server.requests();
        assert_eq!(got.len(), 6);
        for r in &got {
            let tp = r.header("traceparent");
            match r.uri.strip_prefix("/traced/") {
                Some(i) => {
                    let i: usize = i.parse().expect("index");
                    let tp = tp.expect("traceparent sent");
                    let parts: Vec<&str> = tp.split('-').collect();
                    assert_eq!(parts.len(), 4, "{tp}");
                    assert_eq!((parts[0], parts[3]), ("00", "01"), "{tp}");
                    assert_eq!(parts[1], trace(i), "the recorded trace id");
                    assert_eq!(parts[2].len(), 16);
                    assert_ne!(parts[2], "00f067aa0ba902b7", "a fresh span id");
                    assert_ne!(parts[2], "0000000000000000");
                    let n = r
                        .headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("traceparent"))
                        .count();
                    assert_eq!(n, 1, "replaces the recorded header");
                    // The target's lane for dependency mocks.
                    assert_eq!(r.header("tracestate"), Some(format!("tapedeck={name}")));
                    spans.insert(parts[2].to_owned());
                }
                None => {
                    assert_eq!(tp, None, "{}", r.uri);
                    assert_eq!(r.header("tracestate"), None, "{}", r.uri);
                    let rid = r.header("x-request-id");
                    let want = (r.uri == "/by-request-id").then(|| "req-42".to_owned());
                    assert_eq!(rid, want, "{}", r.uri);
                }
            }
        }
    }
    assert_eq!(spans.len(), 8, "one span id per request and target");
    let results = replay.results();
    assert_eq!(results.len(), 12);
    for r in &results {
        let want = match r.path.strip_prefix("/traced/") {
            Some(i) => Some(trace(i.parse().expect("index"))),
            None if r.path == "/by-request-id" => Some("req-42".to_owned()),
            None => None,
        };
        assert_eq!(r.trace_id, want, "{}", r.path);
    }
}
