//! `tapedeck synth` + `tapedeck inspect` on real files.

use std::time::Duration;

use crate::util::{run, stderr, stdout};

const T: Duration = Duration::from_secs(60);

#[test]
fn inspect_counts_a_synthetic_tape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let tape_s = tape.to_str().expect("utf-8 path");
    let out = run(
        &["synth", "--out", tape_s, "--count", "2500", "--seed", "7"],
        T,
    );
    assert!(out.status.success(), "synth failed: {}", stderr(&out));

    let out = run(&["inspect", "--json", tape_s], T);
    assert!(out.status.success(), "inspect failed: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("inspect --json is JSON");
    assert_eq!(v["exchanges"], 2500);
    assert_eq!(v["files"]["sealed"], 1);
    assert!(v["compression_ratio"].as_f64().expect("ratio") > 2.0);
    let routes = v["top_routes"].as_array().expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r["method"] == "GET" && r["path"] == "/api/users/{id}")
    );
    let statuses: u64 = v["status"]
        .as_object()
        .expect("status")
        .values()
        .map(|c| c.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(statuses, 2500);

    let out = run(&["inspect", tape_s], T);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("exchanges   2,500"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn inspect_of_a_missing_path_is_a_usage_error() {
    let out = run(&["inspect", "/nonexistent/tapedeck/tape"], T);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/tapedeck/tape"),
        "{}",
        stderr(&out)
    );
}
