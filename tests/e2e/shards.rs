//! Sharded replay: three `tapedeck replay --shard K/3` processes in parallel, judged together by
//! one `tapedeck diff --run s0 --run s1 --run s2`, give the same judgement as one replay of the
//! whole tape (on everything that does not depend on timing).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Received, Reply, TestServer, run, stderr, stdout, tapedeck};

const T: Duration = Duration::from_secs(180);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

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

fn replay_args<'a>(tape: &'a str, out: &'a str, base: &'a str, cand: &'a str) -> Vec<&'a str> {
    vec![
        "replay",
        "--tape",
        tape,
        "--out",
        out,
        "--target",
        base,
        "--target",
        cand,
        "--max",
        "--concurrency",
        "8",
        "--quiet",
    ]
}

fn diff(runs: &[&Path], report: &Path) -> Value {
    let mut args = vec!["diff"];
    for r in runs {
        args.extend(["--run", s(r)]);
    }
    args.extend(["--report", s(report)]);
    let out = run(&args, T);
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff should fail on the renamed field\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_slice(&std::fs::read(report.join("verdict.json")).expect("verdict.json"))
        .expect("verdict.json is JSON")
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
    let out = run(
        &["synth", "--out", s(&tape), "--count", "900", "--seed", "9"],
        T,
    );
    assert!(out.status.success(), "synth: {}", stderr(&out));

    let (base, cand) = (
        TestServer::start(handler(false)),
        TestServer::start(handler(true)),
    );
    let base_t = format!("baseline={}", base.url());
    let cand_t = format!("candidate={}", cand.url());

    // Three shard workers, in parallel, each killed by PID if it overruns.
    let shard_dirs: Vec<_> = (0..3).map(|k| dir.path().join(format!("s{k}"))).collect();
    let mut children = Vec::new();
    for (k, out_dir) in shard_dirs.iter().enumerate() {
        let shard = format!("{k}/3");
        let mut args = replay_args(s(&tape), s(out_dir), &base_t, &cand_t);
        args.extend(["--shard", &shard]);
        let child = tapedeck()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shard");
        children.push(child);
    }
    let deadline = Instant::now() + T;
    for (k, mut child) in children.into_iter().enumerate() {
        loop {
            if child.try_wait().expect("wait shard").is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("shard {k} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("shard output");
        assert!(
            out.status.success(),
            "shard {k}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    // The whole tape in one process.
    let single = dir.path().join("single");
    let out = run(&replay_args(s(&tape), s(&single), &base_t, &cand_t), T);
    assert!(
        out.status.success(),
        "single: {}{}",
        stdout(&out),
        stderr(&out)
    );

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
