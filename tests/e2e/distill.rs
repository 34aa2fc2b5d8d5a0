//! `tapedeck distill` (issue 16): a distilled demo tape, at most 10 % of the full one, still
//! catches every regression the demo planted. Real binary; the demo's sample API runs as
//! `tapedeck sample-api` processes on loopback ports picked by the OS, stopped by PID.

use std::time::Duration;

use crate::util::{SampleApi, run, stderr, stdout};

const T: Duration = Duration::from_secs(240);

#[test]
fn a_distilled_demo_tape_catches_the_planted_regressions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo");
    let o = run(
        &[
            "demo",
            "--candidate-build",
            "good",
            "--requests",
            "1500",
            "--out",
            demo.to_str().expect("utf-8"),
        ],
        T,
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let tape = demo.join("tape");
    let small = dir.path().join("small");
    let o = run(
        &[
            "distill",
            "--tape",
            tape.to_str().expect("utf-8"),
            "--out",
            small.to_str().expect("utf-8"),
        ],
        T,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // "distilled N of 1,500 exchanges (x %) into …" and the coverage line.
    let first = out.lines().next().unwrap_or_default();
    let kept: u64 = first
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(first.contains("of 1,500 exchanges"), "{out}");
    assert!(kept * 10 <= 1500, "kept {kept} of 1,500");
    assert!(out.contains("groups kept / found:"), "{out}");
    let rows = crate::util::read_tape(&small);
    assert_eq!(rows.len() as u64, kept);
    assert!(
        rows.windows(2)
            .all(|w| w[0].started_at_us <= w[1].started_at_us),
        "time order kept"
    );
    // Refuses to overwrite a tape.
    let again = run(
        &[
            "distill",
            "--tape",
            tape.to_str().expect("utf-8"),
            "--out",
            small.to_str().expect("utf-8"),
        ],
        T,
    );
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    // The distilled tape against the demo's bad build: all three planted regressions.
    let (v1, v1b, bad) = (
        SampleApi::start("v1", dir.path()),
        SampleApi::start("v1", dir.path()),
        SampleApi::start("v2-bad", dir.path()),
    );
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[settings]\nmin_shift_ms = 50.0\n").expect("rules");
    let report = dir.path().join("report");
    let o = run(
        &[
            "check",
            "--tape",
            small.to_str().expect("utf-8"),
            "--baseline",
            &v1.url,
            "--secondary",
            &v1b.url,
            "--candidate",
            &bad.url,
            "--rules",
            rules.to_str().expect("utf-8"),
            "--report",
            report.to_str().expect("utf-8"),
            "--allow-same-host",
            "--quiet",
        ],
        T,
    );
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.join("verdict.json")).expect("verdict"),
    )
    .expect("json");
    let failed: Vec<(String, Vec<String>)> = v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| r["verdict"] == "fail")
        .map(|r| {
            let checks = r["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .filter(|c| c["classification"] == "high")
                .map(|c| format!("{} {}", c["name"], c["reason"]))
                .collect();
            (r["route"].as_str().unwrap_or_default().to_owned(), checks)
        })
        .collect();
    for (route, what) in [
        ("GET /api/users?page&per_page", "latency"),
        ("GET /api/users/{id}", "$.email"),
        ("GET /api/search?q", "$.hits"),
    ] {
        let found = failed
            .iter()
            .any(|(r, checks)| r == route && checks.iter().any(|c| c.contains(what)));
        assert!(found, "{route} ({what}) not caught: {failed:?}");
    }
    assert_eq!(failed.len(), 3, "{failed:?}");
}
