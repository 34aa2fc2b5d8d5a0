//! `tapedeck synth` + `tapedeck inspect` on real files.

use std::time::Duration;

use crate::util::{run, stderr, stdout};

const T: Duration = Duration::from_secs(60);

#[test]
fn inspect_counts_a_synthetic_tape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let tape_s = tape.to_str().expect("utf-8 path");
    crate::util::synth(&tape, &["--count", "2500", "--seed", "7"]);

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

/// Tapes are for people's tools too: DuckDB reads the sealed Parquet directly, with the hive
/// partitions as columns, and counts what we wrote.
#[test]
fn duckdb_reads_sealed_tapes() {
    use std::collections::BTreeMap;
    use tapedeck_storage::synth::{SynthConfig, generate};

    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let tape_s = tape.to_str().expect("utf-8 path");
    crate::util::synth(&tape, &["--count", "3000", "--seed", "11"]);

    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for ex in generate(&SynthConfig {
        count: 3000,
        seed: 11,
        ..SynthConfig::default()
    }) {
        *expected.entry(ex.method.into_string()).or_default() += 1;
    }
    let script = format!(
        "import duckdb, json\n\
         rows = duckdb.sql(\"SELECT method, count(*) AS n, min(hour) AS h FROM read_parquet('{tape_s}/**/*.parquet', hive_partitioning=true) GROUP BY method ORDER BY method\").fetchall()\n\
         print(json.dumps({{m: n for m, n, h in rows}}))\n"
    );
    let py = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs (CI installs duckdb with pip)");
    assert!(
        py.status.success(),
        "duckdb query failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let got: BTreeMap<String, u64> =
        serde_json::from_slice(&py.stdout).expect("the script prints JSON");
    assert_eq!(got, expected);
}
