//! Which recorded requests a replay sends: shards, safe methods only unless `--allow-writes`,
//! filters by method, route, time and limit, deterministic sampling.

use std::collections::HashSet;

use crate::util::{Replay, Reply, TestServer, read_in_order, stderr, stdout, synth};

#[test]
fn shards_cover_the_tape_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    synth(&tape, &["--count", "300", "--mean-gap-us", "20"]);
    let recorded: HashSet<_> = read_in_order(&tape).iter().map(|e| e.id).collect();
    assert_eq!(recorded.len(), 300);

    let server = TestServer::start(|_| Reply::json("{}"));
    let mut union = Vec::new();
    let mut origins = 0;
    for k in 0..3 {
        let replay = Replay::new(&tape)
            .out(&dir.path().join(format!("run-{k}")))
            .target("t", &server.url())
            .flag("--shard", format!("{k}/3"))
            .max()
            .args(["--concurrency", "8"])
            .allow_writes();
        let v = replay.summary();
        let n = v["origins"].as_u64().expect("origins");
        assert!(
            n > 50,
            "shard {k} has {n} of 300: the hash should spread ids"
        );
        assert_eq!(v["shard"]["index"], k);
        origins += n;
        union.extend(
            replay
                .results()
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
    synth(
        &tape,
        &["--count", "200", "--mean-gap-us", "10", "--seed", "3"],
    );
    let recorded = read_in_order(&tape);
    let unsafe_n = recorded
        .iter()
        .filter(|e| !matches!(e.method.as_str(), "GET" | "HEAD" | "OPTIONS"))
        .count() as u64;
    assert!(unsafe_n > 0, "synth should include writes");

    // Dry run: counts, nothing sent.
    let server = TestServer::start(|_| Reply::json("{}"));
    let dry_run = Replay::new(&tape).arg("--dry-run");
    let v = dry_run.clone().target("t", &server.url()).summary();
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
    let out = dry_run.run();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("skipped writes by route") && text.contains("GET /api/users/{id}"),
        "{text}"
    );
    assert!(server.requests().is_empty(), "a dry run sent requests");

    // Real run: only safe methods arrive.
    let v = Replay::new(&tape)
        .out(&dir.path().join("run"))
        .target("t", &server.url())
        .max()
        .summary();
    assert_eq!(v["origins"], 200 - unsafe_n);
    assert_eq!(v["selection"]["skipped_writes"], unsafe_n);
    let got = server.requests();
    assert_eq!(got.len() as u64, 200 - unsafe_n);
    assert!(
        got.iter().all(|r| r.method == "GET"),
        "an unsafe method was replayed"
    );

    // Filters: method, route glob and limit.
    let v = dry_run
        .clone()
        .allow_writes()
        .args(["--route", "/api/users/*", "--limit", "5"])
        .summary();
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
    let v = dry_run
        .clone()
        .flag("--from", &from)
        .flag("--to", &to)
        .args(["--method", "get"])
        .summary();
    assert_eq!(v["selection"]["selected"], gets as u64, "{v:#}");
    let sampled = |_: ()| {
        dry_run
            .clone()
            .allow_writes()
            .args(["--sample", "0.5"])
            .summary()["selection"]["selected"]
            .as_u64()
            .expect("selected")
    };
    let (a, b) = (sampled(()), sampled(()));
    assert_eq!(a, b, "sampling is deterministic");
    assert!((60..140).contains(&a), "about half of 200: {a}");
}
