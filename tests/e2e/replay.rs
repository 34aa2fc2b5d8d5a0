//! `tapedeck replay` end to end: the real binary, real tapes, real HTTP servers on loopback.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapedeck_storage::{ErrorKind, Exchange, Header, Tape, TapeWriter, WhenFull, now_us};

use crate::util::{
    Reply, TestServer, TlsFiles, free_port, make_certs, run, stderr, stdout, tapedeck,
};

const T: Duration = Duration::from_secs(120);

/// Runs `tapedeck` with extra environment variables, bounded by `timeout`.
fn run_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = tapedeck();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tapedeck");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tapedeck {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn get(path: &str, t_us: i64) -> Exchange {
    Exchange {
        id: Exchange::new_id(),
        source: "e2e".into(),
        started_at_us: t_us,
        method: "GET".into(),
        authority: "prod.example.test".into(),
        path: path.into(),
        req_headers: vec![
            Header::new("Host", "prod.example.test"),
            Header::new("Accept", "application/json"),
        ],
        status: Some(200),
        ..Exchange::default()
    }
}

fn write_tape(dir: &Path, exchanges: &[Exchange]) {
    let w = TapeWriter::builder(dir)
        .when_full(WhenFull::Block)
        .open()
        .expect("open tape");
    for ex in exchanges {
        w.append(ex.clone()).expect("append");
    }
    w.close().expect("close tape");
}

fn read_tape(dir: &Path) -> Vec<Exchange> {
    Tape::open(&[dir])
        .expect("open results")
        .exchanges(Default::default())
        .collect::<Result<Vec<_>, _>>()
        .expect("read results")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "replay failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// Every file under `dir`, as raw bytes, joined.
fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
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
    let (ta, tb) = (
        format!("baseline={}", a.url()),
        format!("candidate={}", b.url()),
    );
    let out = run_env(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &ta,
            "--target",
            &tb,
            "--speed",
            "10",
            "--allow-writes",
            "--set-header",
            "Authorization: Bearer ${REPLAY_TOKEN}",
            "--drop-header",
            "x-drop",
            "--json",
        ],
        &[("REPLAY_TOKEN", "tok-8c1f2e")],
        T,
    );
    let summary = json(&out);
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
    let results = read_tape(&out_dir);
    assert_eq!(results.len(), 14);
    let ids: HashSet<_> = recorded.iter().map(|e| e.id).collect();
    let mut seen = HashSet::new();
    for pair in results.chunks(2) {
        let o = pair[0].origin_id.expect("origin id");
        assert_eq!(
            pair[1].origin_id,
            Some(o),
            "results of one origin are adjacent"
        );
        assert!(ids.contains(&o));
        assert!(seen.insert(o), "origin replayed twice");
        let labels: Vec<_> = pair.iter().map(|e| e.target.as_deref()).collect();
        assert_eq!(labels, [Some("baseline"), Some("candidate")]);
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
    assert_eq!(seen, ids);
    let raw = raw_bytes(&out_dir);
    assert!(
        !raw.windows(10).any(|w| w == b"tok-8c1f2e"),
        "the injected token reached the result tape"
    );
}

#[test]
fn shards_cover_the_tape_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let out = run(
        &[
            "synth",
            "--out",
            s(&tape),
            "--count",
            "300",
            "--mean-gap-us",
            "20",
        ],
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded: HashSet<_> = read_tape(&tape).iter().map(|e| e.id).collect();
    assert_eq!(recorded.len(), 300);

    let server = TestServer::start(|_| Reply::json("{}"));
    let target = format!("t={}", server.url());
    let mut union = Vec::new();
    let mut origins = 0;
    for k in 0..3 {
        let out_dir = dir.path().join(format!("run-{k}"));
        let shard = format!("{k}/3");
        let out = run(
            &[
                "replay",
                "--tape",
                s(&tape),
                "--out",
                s(&out_dir),
                "--target",
                &target,
                "--shard",
                &shard,
                "--max",
                "--concurrency",
                "8",
                "--allow-writes",
                "--json",
            ],
            T,
        );
        let v = json(&out);
        let n = v["origins"].as_u64().expect("origins");
        assert!(
            n > 50,
            "shard {k} has {n} of 300: the hash should spread ids"
        );
        assert_eq!(v["shard"]["index"], k);
        origins += n;
        union.extend(
            read_tape(&out_dir)
                .into_iter()
                .map(|e| e.origin_id.expect("origin")),
        );
    }
    assert_eq!(origins, 300);
    assert_eq!(union.len(), 300, "each shard result once");
    assert_eq!(union.into_iter().collect::<HashSet<_>>(), recorded);
    assert_eq!(server.requests().len(), 300);
}

#[test]
fn unsafe_methods_are_skipped_without_allow_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let out = run(
        &[
            "synth",
            "--out",
            s(&tape),
            "--count",
            "200",
            "--mean-gap-us",
            "10",
            "--seed",
            "3",
        ],
        T,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded = read_tape(&tape);
    let unsafe_n = recorded
        .iter()
        .filter(|e| !matches!(e.method.as_str(), "GET" | "HEAD" | "OPTIONS"))
        .count() as u64;
    assert!(unsafe_n > 0, "synth should include writes");

    // Dry run: counts, nothing sent.
    let server = TestServer::start(|_| Reply::json("{}"));
    let target = format!("t={}", server.url());
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--target",
            &target,
            "--dry-run",
            "--json",
        ],
        T,
    );
    let v = json(&out);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["selection"]["read"], 200);
    assert_eq!(v["selection"]["skipped_writes"], unsafe_n);
    assert_eq!(v["selection"]["selected"], 200 - unsafe_n);
    let by_route: u64 = v["selection"]["skipped_writes_by_route"]
        .as_object()
        .expect("by route")
        .values()
        .map(|n| n.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(by_route, unsafe_n);
    let out = run(&["replay", "--tape", s(&tape), "--dry-run"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("skipped writes by route") && text.contains("GET /api/users/{id}"),
        "{text}"
    );
    assert!(server.requests().is_empty(), "a dry run sent requests");

    // Real run: only safe methods arrive.
    let out_dir = dir.path().join("run");
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
            "--max",
            "--json",
        ],
        T,
    );
    let v = json(&out);
    assert_eq!(v["origins"], 200 - unsafe_n);
    assert_eq!(v["selection"]["skipped_writes"], unsafe_n);
    let got = server.requests();
    assert_eq!(got.len() as u64, 200 - unsafe_n);
    assert!(
        got.iter().all(|r| r.method == "GET"),
        "an unsafe method was replayed"
    );

    // Filters: method, route glob and limit.
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--dry-run",
            "--json",
            "--allow-writes",
            "--route",
            "/api/users/*",
            "--limit",
            "5",
        ],
        T,
    );
    let v = json(&out);
    assert_eq!(v["selection"]["selected"], 5);
    let routes = v["selection"]["routes"].as_object().expect("routes");
    assert!(
        routes.keys().all(|r| r.contains("/api/users/")),
        "{routes:?}"
    );

    // Time range and method filters, and deterministic sampling.
    let mut times: Vec<i64> = recorded.iter().map(|e| e.started_at_us).collect();
    times.sort_unstable();
    let (from, to) = (times[50].to_string(), times[150].to_string());
    let gets = recorded[..]
        .iter()
        .filter(|e| e.method == "GET" && (times[50]..times[150]).contains(&e.started_at_us))
        .count();
    let v = json(&run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--dry-run",
            "--json",
            "--from",
            &from,
            "--to",
            &to,
            "--method",
            "get",
        ],
        T,
    ));
    assert_eq!(v["selection"]["selected"], gets as u64, "{v:#}");
    let sampled = |_: ()| {
        json(&run(
            &[
                "replay",
                "--tape",
                s(&tape),
                "--dry-run",
                "--json",
                "--allow-writes",
                "--sample",
                "0.5",
            ],
            T,
        ))["selection"]["selected"]
            .as_u64()
            .expect("selected")
    };
    let (a, b) = (sampled(()), sampled(()));
    assert_eq!(a, b, "sampling is deterministic");
    assert!((60..140).contains(&a), "about half of 200: {a}");
}

#[test]
fn a_down_target_yields_error_exchanges_and_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    let recorded: Vec<_> = (0..5).map(|i| get(&format!("/x/{i}"), t0 + i)).collect();
    write_tape(&tape, &recorded);
    let up = TestServer::start(|_| Reply::json("{}"));
    let down = format!("down=http://127.0.0.1:{}", free_port());
    let up_t = format!("up={}", up.url());
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &down,
            "--target",
            &up_t,
            "--timeout",
            "5s",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("connect-refused 5"), "{text}");
    let results = read_tape(&out_dir);
    assert_eq!(results.len(), 10);
    for r in &results {
        match r.target.as_deref() {
            Some("down") => {
                assert_eq!(
                    r.error_kind,
                    Some(ErrorKind::ConnectRefused),
                    "{:?}",
                    r.error
                );
                assert_eq!(r.status, None);
            }
            Some("up") => assert_eq!(r.status, Some(200)),
            other => panic!("unexpected target {other:?}"),
        }
    }
    assert_eq!(up.requests().len(), 5);
}

#[test]
fn a_slow_target_shows_its_delay_in_latency_from_the_scheduled_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    let recorded: Vec<_> = (0..6).map(|i| get(&format!("/slow/{i}"), t0 + i)).collect();
    write_tape(&tape, &recorded);
    let slow = TestServer::start(|_| {
        let mut r = Reply::json("{}");
        r.delay = Duration::from_millis(100);
        r
    });
    let target = format!("slow={}", slow.url());
    // 50 requests/s but only one in flight: later requests leave late, and that wait must
    // count as latency (no coordinated omission).
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
            "--rate",
            "50",
            "--concurrency",
            "1",
            "--json",
        ],
        T,
    );
    let v = json(&out);
    assert!(
        v["targets"][0]["latency_us"]["p50"].as_u64().expect("p50") >= 100_000,
        "{v:#}"
    );
    let results = read_tape(&out_dir);
    assert_eq!(results.len(), 6);
    let mut max_late = 0;
    for r in &results {
        let late = r.sent_at_us.expect("sent") - r.scheduled_at_us.expect("sched");
        let total = r.total_us.expect("total");
        assert!(total >= 100_000, "the server's delay shows: {total}");
        assert!(
            total >= late + 90_000,
            "latency counts from the schedule: {total} vs late {late}"
        );
        max_late = max_late.max(late);
    }
    assert!(
        max_late >= 100_000,
        "sends queued behind the slow target: {max_late}"
    );
    assert!(v["pacing"]["lateness_us"]["max"].as_u64().expect("max") >= 100_000);
}

#[test]
fn speed_2_halves_recorded_gaps_and_keeps_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    let recorded: Vec<_> = (0..21i64)
        .map(|i| get(&format!("/p/{i}"), t0 + i * 10_000))
        .collect();
    write_tape(&tape, &recorded);
    let server = TestServer::start(|_| Reply::json("{}"));
    let target = format!("t={}", server.url());
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
            "--speed",
            "2",
            "--json",
        ],
        T,
    );
    let v = json(&out);
    assert_eq!(v["origins"], 21);

    let results = read_tape(&out_dir);
    let by_origin: HashMap<_, _> = results
        .iter()
        .map(|r| (r.origin_id.expect("origin"), r))
        .collect();
    let sched: Vec<i64> = recorded
        .iter()
        .map(|e| by_origin[&e.id].scheduled_at_us.expect("sched"))
        .collect();
    assert!(
        sched.windows(2).all(|w| w[1] > w[0]),
        "order kept: {sched:?}"
    );
    let span = sched[20] - sched[0];
    assert!(
        (95_000..=105_000).contains(&span),
        "200 ms recorded at 2x ≈ 100 ms: {span}"
    );

    // The order of sends is not asserted: when a loaded machine stalls the senders, the
    // requests due meanwhile leave as a burst from several senders, in any order (measured:
    // 3.3 ms apart under load). That none leaves early is checked below; arrival order loosely.
    let sent: Vec<i64> = recorded
        .iter()
        .map(|e| by_origin[&e.id].sent_at_us.expect("sent"))
        .collect();
    let got = server.requests();
    assert_eq!(got.len(), 21);
    let index = |r: &crate::util::Received| -> usize {
        r.uri.trim_start_matches("/p/").parse().expect("index")
    };
    let inversions = got
        .windows(2)
        .filter(|w| index(&w[1]) < index(&w[0]))
        .count();
    assert!(
        inversions <= 5,
        "arrival order mostly kept: {:?}",
        got.iter().map(index).collect::<Vec<_>>()
    );
    // The gaps were kept: no request left before its scheduled time, so the last one left at
    // least the scheduled span (≈ 100 ms) after the first was due. (How late sends and arrivals
    // are depends on the machine's load; issue 17: an upper bound on the arrival window flaked
    // under load, so none is asserted.)
    for (s, t) in sched.iter().zip(&sent) {
        assert!(*t >= s - 1_000, "sent before its schedule: {t} < {s}");
    }
    assert!(sent[20] - sched[0] >= 95_000, "{sent:?} vs {sched:?}");
}

#[test]
fn refuses_a_target_on_the_recorded_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let server = TestServer::start(|_| Reply::json("{}"));
    let mut ex = get("/a", now_us() - 1_000_000);
    ex.authority = server.addr.to_string();
    write_tape(&tape, &[ex]);
    let target = format!("prod={}", server.url());
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--allow-same-host"),
        "{}",
        stderr(&out)
    );
    assert!(server.requests().is_empty());
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
            "--allow-same-host",
        ],
        T,
    );
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
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape2),
            "--out",
            s(&dir.path().join("run2")),
            "--target",
            &target,
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 1, "nothing more was sent");
}

#[test]
fn h2c_targets_and_timeouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    let recorded: Vec<_> = (0..4).map(|i| get(&format!("/h2/{i}"), t0 + i)).collect();
    write_tape(&tape, &recorded);
    let fast = TestServer::start(|_| Reply::json(r#"{"h2":true}"#));
    let stuck = TestServer::start(|_| {
        let mut r = Reply::json("{}");
        r.delay = Duration::from_secs(20);
        r
    });
    let h2 = format!("fast=h2c://{}", fast.addr);
    let slow = format!("stuck={}", stuck.url());
    let started = Instant::now();
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &h2,
            "--target",
            &slow,
            "--timeout",
            "300ms",
            "--json",
        ],
        T,
    );
    let v = json(&out);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout bounds the run"
    );
    assert_eq!(v["targets"][0]["protocol"], "h2c");
    assert_eq!(v["targets"][0]["responses"], 4);
    assert_eq!(v["targets"][1]["errors_by_kind"]["timeout"], 4);
    let got = fast.requests();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|r| r.version == "HTTP/2.0"),
        "{:?}",
        got[0].version
    );
    for r in read_tape(&out_dir) {
        match r.target.as_deref() {
            Some("fast") => {
                assert_eq!(r.http_version, "HTTP/2");
                assert_eq!(&r.resp_body[..], br#"{"h2":true}"#);
            }
            _ => {
                assert_eq!(r.error_kind, Some(ErrorKind::Timeout));
                let total = r.ttfb_us.or(r.total_us);
                assert!(total.is_none(), "no response, no latency: {total:?}");
            }
        }
    }
}

#[test]
fn sigterm_stops_cleanly_with_every_sent_request_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 60_000_000;
    let recorded: Vec<_> = (0..50i64)
        .map(|i| get(&format!("/t/{i}"), t0 + i * 100_000))
        .collect();
    write_tape(&tape, &recorded);
    let server = TestServer::start(|_| Reply::json("{}"));
    let target = format!("t={}", server.url());
    let mut p = crate::util::Proc::start(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
            "--json",
        ],
        dir.path(),
    );
    assert!(
        crate::util::wait_until(Duration::from_secs(20), || server.requests().len() >= 3),
        "replay never started sending"
    );
    p.signal("TERM");
    let status = p
        .wait_timeout(Duration::from_secs(20))
        .expect("replay stops after SIGTERM");
    assert!(status.success(), "exit {status:?}");
    let out = std::fs::read_to_string(dir.path().join("tapedeck.stdout")).expect("stdout");
    let v: serde_json::Value = serde_json::from_str(&out).expect("summary JSON");
    assert_eq!(v["interrupted"], true);
    let origins = v["origins"].as_u64().expect("origins");
    assert!((3..50).contains(&origins), "{origins}");
    assert_eq!(read_tape(&out_dir).len() as u64, origins);
    assert_eq!(server.requests().len() as u64, origins);
}

/// `openssl s_server` on a run-time port, killed by PID on drop.
struct OpensslServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tls_server(dir: &Path) -> OpensslServer {
    let port = free_port();
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-alpn", "http/1.1", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "leaf.pem", "-key", "leaf.key"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let server = OpensslServer { child, port };
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        crate::util::wait_for_port(addr, Duration::from_secs(10)),
        "s_server did not listen"
    );
    server
}

#[test]
fn https_targets_verify_certificates_and_classify_tls_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let recorded: Vec<_> = (0..3).map(|i| get(&format!("/tls/{i}"), t0 + i)).collect();
    write_tape(&tape, &recorded);
    let server = start_tls_server(dir.path());
    let target = format!("secure=https://127.0.0.1:{}", server.port);
    let ca = dir.path().join("ca.pem");
    let replay = |out: &str, extra: &[&str]| {
        let out_dir = dir.path().join(out);
        let mut args = vec![
            "replay",
            "--tape",
            s(&tape),
            "--target",
            &target,
            "--max",
            "--concurrency",
            "1",
            "--timeout",
            "10s",
            "--json",
            "--out",
        ];
        args.push(s(&out_dir));
        args.extend(extra);
        let v = json(&run(&args, T));
        (v, read_tape(&out_dir))
    };

    // Trusted through --ca-cert.
    let (v, results) = replay("trusted", &["--ca-cert", s(&ca)]);
    assert_eq!(v["targets"][0]["protocol"], "https");
    assert_eq!(v["targets"][0]["status_classes"]["2xx"], 3, "{v:#}");
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r.scheme, "https");
        assert_eq!(r.status, Some(200), "{:?}", r.error);
        assert!(!r.resp_body.is_empty());
    }

    // Unknown CA: every exchange is a TLS error; the run still completes.
    let (v, results) = replay("untrusted", &[]);
    assert_eq!(v["targets"][0]["errors_by_kind"]["tls"], 3, "{v:#}");
    assert!(results.iter().all(|r| r.error_kind == Some(ErrorKind::Tls)));

    // --insecure accepts it.
    let (v, _) = replay("insecure", &["--insecure"]);
    assert_eq!(v["targets"][0]["status_classes"]["2xx"], 3, "{v:#}");
}

#[test]
fn https_targets_negotiate_http2_by_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let recorded: Vec<_> = (0..4).map(|i| get(&format!("/alpn/{i}"), t0 + i)).collect();
    write_tape(&tape, &recorded);
    // rustls + hyper, HTTP/1.1 and HTTP/2 offered by ALPN.
    let server = TestServer::start_tls(&TlsFiles::leaf(dir.path()), |_| {
        Reply::json("{\"tls\":true}")
    });
    let target = format!("secure=https://127.0.0.1:{}", server.addr.port());
    let out_dir = dir.path().join("run");
    let ca = dir.path().join("ca.pem");
    let v = json(&run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--target",
            &target,
            "--ca-cert",
            s(&ca),
            "--out",
            s(&out_dir),
            "--json",
        ],
        T,
    ));
    assert_eq!(v["targets"][0]["status_classes"]["2xx"], 4, "{v:#}");
    let versions: Vec<String> = server.requests().into_iter().map(|r| r.version).collect();
    assert_eq!(versions, ["HTTP/2.0"; 4], "ALPN picked h2");
    for r in read_tape(&out_dir) {
        assert_eq!(r.http_version, "HTTP/2");
        assert_eq!(r.scheme, "https");
        assert_eq!(&r.resp_body[..], b"{\"tls\":true}");
    }
}

/// Closed loop runs on long-lived tasks and hands results to the writer in batches: every
/// origin is still sent exactly once per target, every result is written (full batches, the
/// timed flush and the final partial batch), and an origin's results stay adjacent.
#[test]
fn max_mode_writes_every_result_once_and_adjacent_per_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    // Not a multiple of the writer's batch size, so a partial batch is left at the end.
    let n = 1_001usize;
    let recorded: Vec<_> = (0..n as i64)
        .map(|i| get(&format!("/m/{i}"), t0 + i * 100))
        .collect();
    write_tape(&tape, &recorded);
    let a = TestServer::start(|_| Reply::json("{\"a\":1}"));
    let b = TestServer::start(|_| Reply::json("{\"b\":2}"));
    let (ta, tb) = (format!("a={}", a.url()), format!("b={}", b.url()));
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &ta,
            "--target",
            &tb,
            "--max",
            "--concurrency",
            "16",
            "--json",
        ],
        T,
    );
    let v = json(&out);
    assert_eq!(v["origins"], n as u64);
    assert_eq!(v["results_written"], 2 * n as u64);
    assert_eq!(v["results_lost"], 0);
    assert_eq!(v["interrupted"], false);
    assert_eq!(a.requests().len(), n);
    assert_eq!(b.requests().len(), n);

    let results = read_tape(&out_dir);
    assert_eq!(results.len(), 2 * n);
    let ids: HashSet<_> = recorded.iter().map(|e| e.id).collect();
    let mut seen = HashSet::new();
    for pair in results.chunks(2) {
        let o = pair[0].origin_id.expect("origin id");
        assert_eq!(
            pair[1].origin_id,
            Some(o),
            "results of one origin are adjacent"
        );
        assert!(ids.contains(&o), "a result for an unknown origin");
        assert!(seen.insert(o), "origin replayed twice");
        let labels: Vec<_> = pair.iter().map(|e| e.target.as_deref()).collect();
        assert_eq!(labels, [Some("a"), Some("b")]);
        assert!(pair.iter().all(|r| r.status == Some(200)));
        assert_eq!(&pair[0].resp_body[..], b"{\"a\":1}");
        assert_eq!(&pair[1].resp_body[..], b"{\"b\":2}");
    }
    assert_eq!(seen.len(), n);
}

/// Issue 14: each closed-loop sender owns its HTTP/1.1 connection for the whole run (opened before
/// the clock starts), and HTTP/2 requests are streams multiplexed over exactly `--connections`
/// connections.
#[test]
fn closed_loop_senders_own_their_connections_and_h2_multiplexes_over_a_few() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let n = 400usize;
    let recorded: Vec<_> = (0..n as i64)
        .map(|i| get(&format!("/c/{i}"), t0 + i * 10))
        .collect();
    write_tape(&tape, &recorded);
    let h1 = TestServer::start(|_| Reply::json("{}"));
    let h2 = TestServer::start(|_| Reply::json("{}"));
    let (t1, t2) = (
        format!("one={}", h1.url()),
        format!("two=h2c://{}", h2.addr),
    );
    let out_dir = dir.path().join("run");
    let v = json(&run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &t1,
            "--target",
            &t2,
            "--max",
            "--concurrency",
            "8",
            "--threads",
            "2",
            "--connections",
            "3",
            "--json",
        ],
        T,
    ));
    assert_eq!(v["results_written"], 2 * n as u64, "{v:#}");
    assert_eq!(v["targets"][0]["errors"], 0, "{v:#}");
    assert_eq!(v["targets"][1]["errors"], 0, "{v:#}");
    assert_eq!(h1.requests().len(), n);
    assert_eq!(
        h1.connection_count(),
        8,
        "one HTTP/1.1 connection per sender, kept for the whole run"
    );
    let got = h2.requests();
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|r| r.version == "HTTP/2.0"));
    // 3 connections spread over 2 threads: 2 per thread (rounded up).
    assert_eq!(
        h2.connection_count(),
        4,
        "HTTP/2 streams multiplexed over the threads' connections"
    );
}

/// A target that closes every connection after its response (`Connection: close`) costs a new
/// connection per request, never an error: a request that finds its connection closed is sent
/// on another one, in closed and open loop.
#[test]
fn connection_close_targets_are_reconnected_without_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let n = 200usize;
    let recorded: Vec<_> = (0..n as i64)
        .map(|i| get(&format!("/close/{i}"), t0 + i * 10))
        .collect();
    write_tape(&tape, &recorded);
    let server = TestServer::start(|_| {
        let mut r = Reply::json("{}");
        r.headers.push(("connection".into(), "close".into()));
        r
    });
    let target = format!("t={}", server.url());
    for (i, pacing) in [
        &["--max", "--concurrency", "4"][..],
        &["--rate", "1000", "--concurrency", "16"][..],
    ]
    .iter()
    .enumerate()
    {
        let out_dir = dir.path().join(format!("run-{i}"));
        let mut args = vec![
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
            "--json",
        ];
        args.extend_from_slice(pacing);
        let v = json(&run(&args, T));
        assert_eq!(v["targets"][0]["errors"], 0, "{pacing:?}: {v:#}");
        assert_eq!(v["targets"][0]["status_classes"]["2xx"], n as u64);
    }
    assert_eq!(server.requests().len(), 2 * n);
    assert!(
        server.connection_count() >= 2 * n,
        "every request had its own connection: {}",
        server.connection_count()
    );
}

/// `--pace poisson` is the Poisson mode (the same as `--rate N --poisson`), and the result tape
/// says so.
#[test]
fn pace_poisson_is_a_mode_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let recorded: Vec<_> = (0..50).map(|i| get(&format!("/p/{i}"), t0 + i)).collect();
    write_tape(&tape, &recorded);
    let server = TestServer::start(|_| Reply::json("{}"));
    let target = format!("t={}", server.url());
    for (i, pacing) in [
        &["--pace", "poisson", "--rate", "2000"][..],
        &["--rate", "2000", "--poisson"][..],
    ]
    .iter()
    .enumerate()
    {
        let out_dir = dir.path().join(format!("run-{i}"));
        let mut args = vec![
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &target,
            "--json",
        ];
        args.extend_from_slice(pacing);
        let v = json(&run(&args, T));
        assert_eq!(v["pacing"]["mode"], "poisson", "{v:#}");
        assert_eq!(v["pacing"]["target_rate"], 2000.0);
        let md = Tape::open(&[&out_dir])
            .expect("open results")
            .metadata()
            .expect("metadata");
        assert_eq!(
            md.get("tapedeck.run.pace").map(String::as_str),
            Some("rate 2000/s poisson")
        );
    }
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&dir.path().join("bad")),
            "--target",
            &target,
            "--pace",
            "recorded",
            "--rate",
            "5",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--rate applies to --pace rate or poisson"),
        "{}",
        stderr(&out)
    );
}

/// Issue 16's hooks: an [`Observer`](tapedeck_replay::Observer) sees every origin's results (all
/// targets, in target order) before they are written, and can stop the run; what was in flight
/// still finishes and is written (and observed).
#[test]
fn an_observer_sees_every_group_and_can_stop_the_run() {
    use std::ops::ControlFlow;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Seen {
        groups: Vec<Vec<(Option<String>, Option<u16>)>>,
        finished: bool,
    }
    struct Watch(Arc<Mutex<Seen>>, usize);
    impl tapedeck_replay::Observer for Watch {
        fn group(&mut self, results: &[Exchange]) -> ControlFlow<()> {
            let mut seen = self.0.lock().expect("lock");
            seen.groups.push(
                results
                    .iter()
                    .map(|r| (r.target.clone(), r.status))
                    .collect(),
            );
            if seen.groups.len() >= self.1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn finish(&mut self) {
            self.0.lock().expect("lock").finished = true;
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let n = 2_000usize;
    let recorded: Vec<_> = (0..n as i64)
        .map(|i| get(&format!("/o/{i}"), t0 + i * 100))
        .collect();
    write_tape(&tape, &recorded);
    // Slow enough that the run cannot finish before the observer has seen 20 groups.
    let slow = |_: &crate::util::Received| {
        let mut r = Reply::json("{}");
        r.delay = Duration::from_millis(5);
        r
    };
    let (a, b) = (TestServer::start(slow), TestServer::start(slow));
    let out_dir = dir.path().join("run");
    let config = tapedeck_replay::ReplayOptions {
        tape: vec![tape.clone()],
        out: Some(out_dir.clone()),
        targets: vec![format!("a={}", a.url()), format!("b={}", b.url())],
        pace: "max".into(),
        concurrency: Some(4),
        ..Default::default()
    }
    .validate()
    .expect("valid options");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let summary = tapedeck_replay::Replay::new(&config)
        .observer(Watch(seen.clone(), 20))
        .run_blocking()
        .expect("replay");
    let seen = seen.lock().expect("lock");
    assert!(summary.interrupted, "the observer stopped the run");
    assert!(seen.finished, "finish() was called");
    let written = summary.results_written as usize;
    assert!(
        (40..2 * n).contains(&written),
        "stopped early, in-flight requests still written: {written}"
    );
    assert_eq!(
        seen.groups.len() * 2,
        written,
        "every written group observed"
    );
    for g in &seen.groups {
        let targets: Vec<_> = g.iter().map(|(t, _)| t.as_deref()).collect();
        assert_eq!(targets, [Some("a"), Some("b")], "one group, target order");
        assert!(g.iter().all(|(_, status)| *status == Some(200)));
    }
    assert_eq!(read_tape(&out_dir).len(), written);
}

/// Issue 17: `replay --out DIR` into a directory that already held results mixed two runs
/// (42 rows for 21 origins, no warning). An output that holds results is refused (exit 2,
/// naming `--append`) before anything is sent; `--append` adds to it on purpose.
#[test]
fn issue_17_replay_refuses_an_output_that_holds_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us();
    let recorded: Vec<Exchange> = (0..21)
        .map(|i| get(&format!("/api/items/{i}"), t0 + i * 1000))
        .collect();
    write_tape(&tape, &recorded);
    let target = TestServer::start(|_| Reply::json("{}"));
    let out = dir.path().join("run");
    // An empty directory is a fine place for a new run.
    std::fs::create_dir_all(&out).expect("mkdir");
    let replay = |extra: &[&str]| {
        let target_arg = format!("c={}", target.url());
        let mut args = vec![
            "replay",
            "--tape",
            s(&tape),
            "--target",
            &target_arg,
            "--max",
            "--quiet",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        run(&args, T)
    };
    let o = replay(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(read_tape(&out).len(), 21);
    assert_eq!(target.requests().len(), 21);

    let o = replay(&[]);
    assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--append") && err.contains(s(&out)) && err.contains("already holds"),
        "the error names the output and the flag: {err}"
    );
    assert_eq!(target.requests().len(), 21, "nothing was sent");
    assert_eq!(read_tape(&out).len(), 21, "the first run is untouched");

    let o = replay(&["--append"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(read_tape(&out).len(), 42, "--append adds on purpose");
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
    let target_arg = format!("c={}", target.url());
    let replay = |out: &str, extra: &[&str], env: &[(&str, &str)]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "replay",
            "--tape",
            s(&tape),
            "--target",
            &target_arg,
            "--max",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        run_env(&args, env, T)
    };

    // Without --strict-credentials: sent, with one warning before the first request, and counted.
    let o = replay("r1", &["--json"], &[]);
    let summary = json(&o);
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
    let summary = json(&o);
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
    let out = run(
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&out_dir),
            "--target",
            &format!("h1={}", h1.url()),
            "--target",
            &format!("h2=h2c://{}", h2.addr),
            "--json",
        ],
        T,
    );
    let v = json(&out);
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
    let results = read_tape(&out_dir);
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
