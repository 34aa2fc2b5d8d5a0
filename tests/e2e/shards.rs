//! Sharded replay: three `tapedeck replay --shard K/3` processes in parallel, judged together by
//! one `tapedeck diff --run s0 --run s1 --run s2`, give the same judgement as one replay of the
//! whole tape (on everything that does not depend on timing).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Diff, Received, Replay, Reply, TestServer, assert_exit, synth};

const T: Duration = Duration::from_secs(180);

/// Deterministic answers (they depend on the request only); the candidate renames `name` to
/// `full_name` on `GET /api/users/{id}` and fails with 500 on products whose id ends in 7.
fn handler(renamed: bool) -> impl Fn(&Received) -> Reply + Send + Sync + 'static {
    move |r: &Received| {
        if r.uri.starts_with("/api/users/") {
            let key = if renamed { "full_name" } else { "name" };
            Reply::json(format!(
                r#"{{"{key}":"x","uri":"{}","active":true}}"#,
                r.uri
            ))
        } else if renamed && r.uri.starts_with("/api/products/") && r.uri.ends_with('7') {
            Reply::text(500, "boom")
        } else if r.uri.starts_with("/api/products/") {
            Reply::json(format!(r#"{{"sku":"p","uri":"{}","price":12.5}}"#, r.uri))
        } else {
            Reply::json(format!(r#"{{"items":[1,2,3],"uri":"{}"}}"#, r.uri))
        }
    }
}

fn diff(runs: &[&Path], report: &Path) -> Value {
    let diff = runs[1..]
        .iter()
        .fold(Diff::of(runs[0]), |d, r| d.and(r))
        .report(report)
        .timeout(T);
    assert_exit(&diff.run(), 1, "diff should fail on the renamed field");
    diff.verdict()
}

/// What must not depend on timing: verdict, counts, per-route counts, response and error checks,
/// paths with their counts and rates, error counts.
fn timing_free(v: &Value) -> Value {
    let routes: BTreeMap<String, Value> = v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            let checks: BTreeMap<String, Value> = r["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .filter(|c| c["name"] == "responses" || c["name"] == "errors")
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_owned(),
                        c["classification"].clone(),
                    )
                })
                .collect();
            let paths: Vec<Value> = r["paths"]
                .as_array()
                .expect("paths")
                .iter()
                .map(|p| {
                    serde_json::json!([p["path"], p["kind"], p["raw_count"], p["raw_rate"], p["status"]])
                })
                .collect();
            (
                r["route"].as_str().unwrap().to_owned(),
                serde_json::json!({
                    "paired": r["paired"],
                    "baseline_count": r["baseline_count"],
                    "candidate_count": r["candidate_count"],
                    "checks": checks,
                    "paths": paths,
                    "errors": r["errors"],
                    "latency_samples": [r["latency"]["baseline"]["count"], r["latency"]["candidate"]["count"]],
                }),
            )
        })
        .collect();
    serde_json::json!({
        "verdict": v["verdict"],
        "rollback": v["rollback"],
        "exit_code": v["exit_code"],
        "counts": v["counts"],
        "routes": routes,
        "regressions": v["routes"].as_array().unwrap().iter().filter(|r| r["verdict"] == "fail" && r["checks"].as_array().unwrap().iter().any(|c| c["name"] == "responses" && c["classification"] == "high")).map(|r| r["route"].clone()).collect::<Vec<_>>(),
    })
}

#[test]
fn three_shards_judge_like_one_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    synth(&tape, &["--count", "900", "--seed", "9"]);

    let (base, cand) = (
        TestServer::start(handler(false)),
        TestServer::start(handler(true)),
    );
    let replay = Replay::new(&tape)
        .target("baseline", &base.url())
        .target("candidate", &cand.url())
        .max()
        .args(["--concurrency", "8", "--quiet"])
        .timeout(T);

    // Three shard workers, in parallel, each killed by PID if it overruns.
    let shard_dirs: Vec<_> = (0..3).map(|k| dir.path().join(format!("s{k}"))).collect();
    let mut shards = Vec::new();
    for (k, out_dir) in shard_dirs.iter().enumerate() {
        let logs = dir.path().join(format!("logs-s{k}"));
        std::fs::create_dir_all(&logs).expect("log dir");
        let shard = replay
            .clone()
            .out(out_dir)
            .flag("--shard", format!("{k}/3"));
        shards.push((shard.start(&logs), logs));
    }
    let deadline = Instant::now() + T;
    for (k, (mut shard, logs)) in shards.into_iter().enumerate() {
        let status = shard
            .wait_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| panic!("shard {k} did not finish in time"));
        let log = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
        assert!(
            status.success(),
            "shard {k}: {}{}",
            log("tapedeck.stdout"),
            log("tapedeck.stderr")
        );
    }

    // The whole tape in one process.
    let single = dir.path().join("single");
    assert_exit(&replay.out(&single).run(), 0, "single");

    let shard_refs: Vec<&Path> = shard_dirs.iter().map(|p| p.as_path()).collect();
    let merged = diff(&shard_refs, &dir.path().join("report-merged"));
    let whole = diff(&[&single], &dir.path().join("report-single"));

    // Each shard did a real, disjoint share of the work.
    let mut shard_paired = 0;
    for (k, d) in shard_dirs.iter().enumerate() {
        let v = diff(&[d.as_path()], &dir.path().join(format!("report-s{k}")));
        let paired = v["counts"]["paired"].as_u64().expect("paired");
        assert!(paired > 50, "shard {k} paired only {paired}");
        shard_paired += paired;
    }
    let paired = whole["counts"]["paired"].as_u64().expect("paired");
    assert!(paired > 500, "paired {paired}");
    assert_eq!(shard_paired, paired, "shards partition the tape");
    assert_eq!(merged["counts"]["duplicates"], 0);

    assert_eq!(merged["verdict"], "fail");
    let users = merged["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "GET /api/users/{id}")
        .expect("users route");
    assert!(
        users["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "$.name" && p["status"] == "regression"),
        "{users}"
    );
    let products = merged["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "GET /api/products/{id}")
        .expect("products route");
    assert!(
        products["errors"]["candidate"].as_u64().unwrap() > 0,
        "{products}"
    );
    assert_eq!(timing_free(&merged), timing_free(&whole));
    let html = std::fs::read_to_string(dir.path().join("report-merged/report.html"))
        .expect("diff writes report.html");
    assert!(html.contains("<header class=\"banner fail\""));
    assert!(html.contains("GET /api/users/{id}") && html.contains("<svg"));
}
