//! Scenario tests: synthetic runs written to real tapes with `TapeWriter` (result exchanges with
//! `origin_id` and `target` set, as `tapedeck replay` writes them), judged by the library.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tapedeck_diff::outcome::PathStatus;
use tapedeck_diff::{Classification, DiffOptions, RulesFile, Verdict};
use tapedeck_storage::{Exchange, Header, TapeWriter, WhenFull, now_us};
use uuid::Uuid;

const USERS: &str = "GET /api/users/{id}";
const ORDERS: &str = "GET /api/orders?page";
const SEARCH: &str = "GET /api/search?q";

/// What a target answers: (status, JSON body, latency µs).
type Answer = (u16, serde_json::Value, i64);

/// Writes a run: `per_route` requests on each of three routes, each answered by every target.
fn write_run(
    dir: &Path,
    per_route: usize,
    targets: &[&str],
    answer: &mut dyn FnMut(&str, usize, &str, &mut StdRng) -> Answer,
) {
    let writer = TapeWriter::builder(dir)
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(99);
    let t0 = now_us();
    let mut k = 0;
    for i in 0..per_route {
        for (route, path, query) in [
            (USERS, format!("/api/users/{}", 1000 + i), None),
            (
                ORDERS,
                "/api/orders".to_owned(),
                Some(format!("page={}", i % 5)),
            ),
            (SEARCH, "/api/search".to_owned(), Some(format!("q=term{i}"))),
        ] {
            k += 1;
            let origin = Exchange::new_id();
            let scheduled = t0 + k * 1000;
            for target in targets {
                let (status, body, latency) = answer(route, i, target, &mut rng);
                let body = Bytes::from(serde_json::to_vec(&body).unwrap());
                writer
                    .append(Exchange {
                        id: Exchange::new_id(),
                        source: "test".into(),
                        started_at_us: scheduled,
                        scheduled_at_us: Some(scheduled),
                        sent_at_us: Some(scheduled),
                        ttfb_us: Some(latency / 2),
                        duration_us: Some(latency),
                        total_us: Some(latency),
                        method: "GET".into(),
                        authority: "127.0.0.1:9000".into(),
                        path: path.as_str().into(),
                        query: query.clone(),
                        req_headers: vec![
                            Header::new("Accept", "application/json"),
                            Header::new("Authorization", "Bearer super-secret-token"),
                        ],
                        status: Some(status),
                        resp_headers: vec![
                            Header::new("Content-Type", "application/json"),
                            Header::new(
                                "Date",
                                format!("Sun, 29 Nov 2026 20:{:02}:00 GMT", i % 60),
                            ),
                            Header::new("X-Request-Id", Uuid::now_v7().to_string()),
                        ],
                        resp_body_size: body.len() as u64,
                        resp_body: body,
                        origin_id: Some(origin),
                        target: Some((*target).into()),
                        ..Exchange::default()
                    })
                    .unwrap();
            }
        }
    }
    writer.close().unwrap();
}

/// A realistic body for a route, with noise fields (request id, timestamp) that differ per call.
fn body(route: &str, i: usize, rng: &mut StdRng) -> serde_json::Value {
    let noise = json!({
        "request_id": Uuid::now_v7().to_string(),
        "generated_at": format!("2026-11-29T20:{:02}:{:02}.{:03}Z", rng.random_range(0..60), rng.random_range(0..60), rng.random_range(0..1000)),
    });
    match route {
        USERS => {
            json!({"id": 1000 + i, "name": format!("user {i}"), "email": format!("u{i}@example.com"), "meta": noise})
        }
        ORDERS => {
            json!({"page": i % 5, "orders": [{"id": i, "total": 12.5}, {"id": i + 1, "total": 7}], "meta": noise})
        }
        _ => {
            json!({"q": format!("term{i}"), "results": [{"id": 1, "score": 0.9}, {"id": 2, "score": 0.7}, {"id": 3, "score": 0.5}], "meta": noise})
        }
    }
}

fn latency(rng: &mut StdRng) -> i64 {
    rng.random_range(8_000..14_000)
}

fn judge(run: &Path, noise: bool, rules: RulesFile) -> tapedeck_diff::DiffOutcome {
    let mut o = DiffOptions::new(run);
    if noise {
        o.noise = Some("secondary".into());
    }
    o.baseline_version = Some("v1".into());
    o.candidate_version = Some("v2".into());
    let cfg = o.validate_with(rules).unwrap();
    let outcome = tapedeck_diff::run(&cfg).unwrap();
    // For looking at the reports by hand: TAPEDECK_KEEP_REPORTS=/tmp/x cargo test -p tapedeck-diff
    if let Some(keep) = std::env::var_os("TAPEDECK_KEEP_REPORTS") {
        let name = format!("{}-{}", outcome.verdict.as_str(), outcome.title.len());
        tapedeck_diff::report::write_reports(&outcome, &Path::new(&keep).join(name)).unwrap();
        println!("{}", tapedeck_diff::report::summary(&outcome, true));
    }
    outcome
}

fn check(o: &tapedeck_diff::DiffOutcome, route: &str, name: &str) -> Classification {
    o.route(route)
        .unwrap_or_else(|| {
            panic!(
                "route {route} in {:?}",
                o.routes.iter().map(|r| &r.route).collect::<Vec<_>>()
            )
        })
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap()
        .classification
}

const ALL: [&str; 3] = ["baseline", "secondary", "candidate"];

#[test]
fn scenario_1_identical_but_noise_with_secondary_passes_with_zero_findings() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 40, &ALL, &mut |route, i, _t, rng| {
        (200, body(route, i, rng), latency(rng))
    });
    let o = judge(dir.path(), true, RulesFile::default());
    assert_eq!(o.verdict, Verdict::Pass, "{:#?}", o.reasons);
    assert!(!o.rollback);
    assert_eq!(o.exit_code, 0);
    assert!(o.regressions().is_empty(), "{:?}", o.regressions());
    assert!(o.failed_checks().is_empty(), "{:?}", o.failed_checks());
    assert_eq!(o.counts.paired, 120);
    assert_eq!(o.counts.with_noise, 120);
    assert!(o.score.unwrap() >= 90.0);
    // The noise was seen and learned, not flagged.
    let users = o.route(USERS).unwrap();
    let rid = users
        .paths
        .iter()
        .find(|p| p.path == "$.meta.request_id")
        .unwrap();
    assert_eq!(rid.status, PathStatus::Noise);
    assert!(
        o.learned_rules
            .iter()
            .any(|r| r.path == "$.meta.generated_at")
    );
}

#[test]
fn scenario_1b_without_secondary_detectors_mark_noise_candidates_and_learned_rules_apply() {
    let dir = tempfile::tempdir().unwrap();
    write_run(
        dir.path(),
        40,
        &["baseline", "candidate"],
        &mut |route, i, _t, rng| (200, body(route, i, rng), latency(rng)),
    );
    let o = judge(dir.path(), false, RulesFile::default());
    assert_eq!(o.verdict, Verdict::Pass, "{:#?}", o.reasons);
    assert!(o.regressions().is_empty());
    let kinds: Vec<_> = o
        .noise_candidates
        .iter()
        .map(|n| (n.path.as_str(), n.volatile.as_str()))
        .collect();
    assert!(kinds.contains(&("$.meta.request_id", "uuid")), "{kinds:?}");
    assert!(
        kinds.contains(&("$.meta.generated_at", "timestamp")),
        "{kinds:?}"
    );

    // What --write-rules writes is accepted by --rules and silences exactly those paths.
    let text = tapedeck_diff::report::learned_rules_toml(&o);
    let rules = RulesFile::parse(&text, Path::new("learned.toml")).unwrap();
    assert_eq!(rules.ignore.len(), o.noise_candidates.len());
    let o2 = judge(dir.path(), false, rules);
    assert!(o2.noise_candidates.is_empty());
    assert_eq!(o2.counts.ignored_findings, 2 * 120);
    assert_eq!(o2.verdict, Verdict::Pass);
}

#[test]
fn scenario_2_renamed_field_fails_that_route_and_path_only() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 40, &ALL, &mut |route, i, t, rng| {
        let mut b = body(route, i, rng);
        if t == "candidate" && route == USERS {
            let name = b["name"].take();
            let obj = b.as_object_mut().unwrap();
            obj.remove("name");
            obj.insert("full_name".into(), name);
        }
        (200, b, latency(rng))
    });
    let o = judge(dir.path(), true, RulesFile::default());
    assert_eq!(o.verdict, Verdict::Fail, "{:#?}", o.reasons);
    assert!(o.rollback);
    assert_eq!(o.exit_code, 1);
    let mut regs = o.regressions();
    regs.sort();
    assert_eq!(regs, vec![(USERS, "$.full_name"), (USERS, "$.name")]);
    assert_eq!(check(&o, USERS, "responses"), Classification::High);
    for r in [ORDERS, SEARCH] {
        assert_eq!(o.route(r).unwrap().verdict, Verdict::Pass, "{r}");
    }
    let p = o
        .route(USERS)
        .unwrap()
        .paths
        .iter()
        .find(|p| p.path == "$.name")
        .unwrap();
    assert_eq!(p.kind, "missing");
    assert_eq!(p.raw_rate, 1.0);
    assert_eq!(p.noise_rate, Some(0.0));
    let ex = p.example.as_ref().unwrap();
    assert!(ex.curl.starts_with("curl "), "{}", ex.curl);
    assert!(!ex.curl.contains("super-secret-token"));
    assert!(
        o.title.contains(USERS) && o.title.contains("(v1 → v2)"),
        "{}",
        o.title
    );
}

#[test]
fn scenario_3_same_elements_in_another_order_is_an_order_finding() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 40, &ALL, &mut |route, i, t, rng| {
        let mut b = body(route, i, rng);
        if t == "candidate" && route == SEARCH {
            b["results"].as_array_mut().unwrap().reverse();
        }
        (200, b, latency(rng))
    });
    let o = judge(dir.path(), true, RulesFile::default());
    assert_eq!(o.verdict, Verdict::Fail);
    assert_eq!(o.regressions(), vec![(SEARCH, "$.results")]);
    let p = &o.route(SEARCH).unwrap().paths[0];
    assert_eq!(p.kind, "order-changed");
}

#[test]
fn scenario_4_one_route_ten_times_slower_fails_latency_on_that_route_only() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 120, &ALL, &mut |route, i, t, rng| {
        let mut l = latency(rng);
        if t == "candidate" && route == ORDERS {
            l *= 10;
        }
        (200, body(route, i, rng), l)
    });
    let o = judge(dir.path(), true, RulesFile::default());
    assert_eq!(o.verdict, Verdict::Fail, "{:#?}", o.reasons);
    assert_eq!(check(&o, ORDERS, "latency"), Classification::High);
    assert_eq!(check(&o, ORDERS, "responses"), Classification::Pass);
    for r in [USERS, SEARCH] {
        assert_eq!(check(&o, r, "latency"), Classification::Pass, "{r}");
        assert_eq!(o.route(r).unwrap().verdict, Verdict::Pass, "{r}");
    }
    assert_eq!(o.failed_checks(), vec![(ORDERS, "latency")]);
    let lat = &o.route(ORDERS).unwrap().latency;
    let r95 = lat.ratios.iter().find(|r| r.q == 0.95).unwrap();
    assert!(
        r95.ci_low > 5.0 && r95.ratio > 8.0 && r95.ratio < 12.0,
        "{r95:?}"
    );
    assert!(lat.hodges_lehmann.unwrap().ci_low > 50_000.0);
    // HDR percentiles (µs): baseline latencies are 8-14 ms, the candidate's 80-140 ms.
    assert_eq!(lat.baseline.count, 120);
    let (b50, c50) = (lat.baseline.p50.unwrap(), lat.candidate.p50.unwrap());
    assert!((8_000..14_100).contains(&b50), "{b50}");
    assert!((80_000..141_000).contains(&c50), "{c50}");
    assert!(lat.candidate.p95.unwrap() >= c50);
    assert!(o.title.starts_with("GET /api/orders?page p"), "{}", o.title);
    assert!(o.title.contains('%'), "{}", o.title);
    // Reproducible: same input, same numbers.
    let again = judge(dir.path(), true, RulesFile::default());
    assert_eq!(again.route(ORDERS).unwrap().latency.ratios, lat.ratios);
}

#[test]
fn scenario_5_five_samples_per_side_is_inconclusive() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 5, &ALL, &mut |route, i, _t, rng| {
        (200, body(route, i, rng), latency(rng))
    });
    let o = judge(dir.path(), true, RulesFile::default());
    assert_eq!(o.verdict, Verdict::Inconclusive, "{:#?}", o.reasons);
    assert_eq!(o.exit_code, 3);
    assert!(!o.rollback);
    assert_eq!(check(&o, USERS, "latency"), Classification::Nodata);
    let mut opts = DiffOptions::new(dir.path());
    opts.noise = Some("secondary".into());
    opts.inconclusive_as = tapedeck_diff::InconclusiveAs::Fail;
    let o = tapedeck_diff::run(&opts.validate_with(RulesFile::default()).unwrap()).unwrap();
    assert_eq!(o.exit_code, 1);
}

#[test]
fn grown_5xx_rate_is_a_critical_failure() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 40, &ALL, &mut |route, i, t, rng| {
        let status = if t == "candidate" && route == USERS && i % 4 == 0 {
            503
        } else {
            200
        };
        (status, body(route, i, rng), latency(rng))
    });
    let o = judge(dir.path(), true, RulesFile::default());
    assert_eq!(o.verdict, Verdict::Fail);
    assert_eq!(check(&o, USERS, "errors"), Classification::High);
    assert_eq!(o.route(USERS).unwrap().errors.candidate, 10);
}

#[test]
fn slo_fails_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    write_run(
        dir.path(),
        60,
        &["baseline", "candidate"],
        &mut |route, i, _t, rng| (200, body(route, i, rng), latency(rng)),
    );
    let rules = RulesFile {
        slo: vec![
            "GET /api/users/{id}: p95<5ms".into(),
            "GET /api/search: p50<1s".into(),
        ],
        ..RulesFile::default()
    };
    let o = judge(dir.path(), false, rules);
    assert_eq!(o.verdict, Verdict::Fail);
    assert_eq!(check(&o, USERS, "slo p95<5ms"), Classification::High);
    assert_eq!(check(&o, SEARCH, "slo p50<1s"), Classification::Pass);
}

#[test]
fn baseline_tape_mode_compares_against_recorded_responses() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let run = dir.path().join("run");
    let rec = TapeWriter::builder(&tape)
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    let out = TapeWriter::builder(&run)
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    let t0 = now_us();
    for i in 0..50i64 {
        let id = Exchange::new_id();
        let mk = |name: &str| Exchange {
            started_at_us: t0 + i * 1000,
            total_us: Some(10_000),
            path: format!("/api/users/{i}").into(),
            status: Some(200),
            resp_headers: vec![Header::new("Content-Type", "application/json")],
            resp_body: Bytes::from(format!(r#"{{"id":{i},"{name}":"x"}}"#)),
            ..Exchange::default()
        };
        let mut r = mk("name");
        r.id = id;
        rec.append(r).unwrap();
        if i % 10 != 9 {
            // every tenth recorded exchange was not replayed
            let mut c = mk(if i < 25 { "name" } else { "title" });
            c.id = Exchange::new_id();
            c.origin_id = Some(id);
            c.target = Some("candidate".into());
            out.append(c).unwrap();
        }
    }
    rec.close().unwrap();
    out.close().unwrap();
    let mut o = DiffOptions::new(&run);
    o.baseline_tape = Some(vec![tape]);
    let o = tapedeck_diff::run(&o.validate_with(RulesFile::default()).unwrap()).unwrap();
    assert_eq!(o.counts.paired, 45);
    assert_eq!(o.counts.not_replayed, 5);
    assert_eq!(o.counts.baseline_only, 0);
    assert_eq!(o.baseline, "recorded");
    assert_eq!(o.verdict, Verdict::Fail);
    let mut regs = o.regressions();
    regs.sort();
    assert_eq!(regs, vec![(USERS, "$.name"), (USERS, "$.title")]);
}

#[test]
fn unknown_target_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_run(
        dir.path(),
        2,
        &["baseline", "canary"],
        &mut |route, i, _t, rng| (200, body(route, i, rng), 1000),
    );
    let cfg = DiffOptions::new(dir.path())
        .validate_with(RulesFile::default())
        .unwrap();
    let e = tapedeck_diff::run(&cfg).unwrap_err();
    assert!(
        e.to_string().contains("\"candidate\"") && e.to_string().contains("canary"),
        "{e}"
    );
}

#[test]
fn high_cardinality_slugs_are_one_route() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path())
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    let t0 = now_us();
    let letters = |mut i: usize| {
        let mut s = String::new();
        for _ in 0..3 {
            s.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
        }
        s
    };
    for i in 0..80usize {
        let origin = Exchange::new_id();
        for t in ["baseline", "candidate"] {
            w.append(Exchange {
                started_at_us: t0 + i as i64,
                total_us: Some(5_000),
                path: format!("/api/products/shirt-{}", letters(i)).into(),
                status: Some(200),
                resp_headers: vec![Header::new("Content-Type", "application/json")],
                resp_body: Bytes::from_static(b"{\"ok\":true}"),
                origin_id: Some(origin),
                target: Some(t.into()),
                ..Exchange::default()
            })
            .unwrap();
        }
    }
    w.close().unwrap();
    let o = judge(dir.path(), false, RulesFile::default());
    let names: Vec<&str> = o.routes.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(names, vec!["GET /api/products/{param}"]);
    assert_eq!(o.routes[0].paired, 80);
    assert_eq!(o.routes[0].latency.baseline.count, 80);
    assert_eq!(o.verdict, Verdict::Pass, "{:#?}", o.reasons);
}

#[test]
fn canary_analysis_of_two_unpaired_tapes_compares_latency_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (base, cand) = (dir.path().join("base"), dir.path().join("cand"));
    let mut rng = StdRng::seed_from_u64(5);
    for (tape, candidate, n) in [(&base, false, 150usize), (&cand, true, 90)] {
        let w = TapeWriter::builder(tape)
            .when_full(WhenFull::Block)
            .open()
            .unwrap();
        let t0 = now_us();
        for i in 0..n {
            for (path, slow) in [("/api/orders", true), ("/api/users/7", false)] {
                let mut l = latency(&mut rng);
                if candidate && slow {
                    l *= 10;
                }
                let status = if candidate && !slow && i % 3 == 0 {
                    500
                } else {
                    200
                };
                w.append(Exchange {
                    id: Exchange::new_id(),
                    started_at_us: t0 + i as i64 * 1000,
                    total_us: Some(l),
                    path: path.into(),
                    status: Some(status),
                    ..Exchange::default()
                })
                .unwrap();
            }
        }
        w.close().unwrap();
    }
    let o = DiffOptions {
        baseline_tape: Some(vec![base]),
        candidate_tape: Some(vec![cand]),
        ..DiffOptions::default()
    };
    let o = tapedeck_diff::run(&o.validate_with(RulesFile::default()).unwrap()).unwrap();
    assert_eq!(o.verdict, Verdict::Fail, "{:#?}", o.reasons);
    assert_eq!(o.counts.paired, 0);
    assert_eq!((o.counts.baseline_tape_rows, o.counts.rows), (300, 180));
    assert_eq!(
        check(&o, "GET /api/orders", "latency"),
        Classification::High
    );
    assert_eq!(check(&o, "GET /api/orders", "errors"), Classification::Pass);
    assert_eq!(check(&o, USERS, "errors"), Classification::High);
    assert_eq!(check(&o, USERS, "latency"), Classification::Pass);
    let users = o.route(USERS).unwrap();
    assert_eq!((users.baseline_count, users.candidate_count), (150, 90));
    assert!(users.checks.iter().all(|c| c.name != "responses"));
}
