//! `tapedeck check` and `tapedeck demo`: the whole loop, real binary, real servers on loopback.

use std::time::Duration;

use crate::util::{Engine, Reply, TestServer, run, stderr, stdout};

const T: Duration = Duration::from_secs(240);

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn demo_finds_exactly_the_planted_regressions(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let o = run(
        &[
            "demo",
            "--out",
            out.to_str().expect("utf-8"),
            "--requests",
            "600",
            "--engine",
            engine.name(),
        ],
        T,
    );
    assert!(
        o.status.success(),
        "demo failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("demo OK"), "{}", stdout(&o));

    let verdict = read_json(&out.join("report/verdict.json"));
    assert_eq!(verdict["verdict"], "fail");
    assert_eq!(verdict["rollback"], true);
    let failing: Vec<String> = verdict["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| r["verdict"] == "fail")
        .map(|r| r["route"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut failing_sorted = failing.clone();
    failing_sorted.sort();
    assert_eq!(
        failing_sorted,
        vec![
            "GET /api/search?q",
            "GET /api/users/{id}",
            "GET /api/users?page&per_page"
        ]
    );
    let md = std::fs::read_to_string(out.join("report/report.md")).expect("report.md");
    for needle in [
        "GET /api/search?q",
        "$.hits",
        "$.email",
        "GET /api/users?page&per_page",
        "curl ",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle}");
    }
    assert!(out.join("report/junit.xml").is_file());
}

fn demo_with_the_good_build_passes_with_no_findings(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let o = run(
        &[
            "demo",
            "--out",
            out.to_str().expect("utf-8"),
            "--requests",
            "600",
            "--candidate-build",
            "good",
            "--engine",
            engine.name(),
        ],
        T,
    );
    assert!(
        o.status.success(),
        "demo failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let verdict = read_json(&out.join("report/verdict.json"));
    assert_eq!(verdict["verdict"], "pass", "{verdict:#}");
    assert_eq!(verdict["rollback"], false);
    assert!(
        verdict["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .all(|r| r["verdict"] != "fail")
    );
}

fn json_server(variant: &'static str) -> TestServer {
    TestServer::start(move |req| {
        let mut body = serde_json::json!({"path": req.uri.clone(), "ok": true});
        if variant == "renamed" && req.uri.starts_with("/api/users/") {
            body = serde_json::json!({"path": req.uri.clone(), "okay": true});
        }
        Reply::json(body.to_string())
    })
}

#[test]
fn check_exits_1_on_a_regression_and_0_on_an_identical_candidate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let tape_s = tape.to_str().expect("utf-8");
    let o = run(
        &["synth", "--out", tape_s, "--count", "400", "--seed", "3"],
        T,
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let baseline = json_server("same");
    let same = json_server("same");
    let renamed = json_server("renamed");

    let report = dir.path().join("same");
    let o = run(
        &[
            "check",
            "--tape",
            tape_s,
            "--baseline",
            &baseline.url(),
            "--candidate",
            &same.url(),
            "--report",
            report.to_str().expect("utf-8"),
            "--quiet",
        ],
        T,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "identical candidate:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(read_json(&report.join("verdict.json"))["verdict"], "pass");
    // GETs only (no --allow-writes): every safe request reached both targets.
    let gets = baseline.requests().len();
    assert!(gets > 300, "baseline saw {gets} requests");
    assert_eq!(same.requests().len(), gets);
    assert!(baseline.requests().iter().all(|r| r.method == "GET"));

    let report = dir.path().join("renamed");
    let o = run(
        &[
            "check",
            "--tape",
            tape_s,
            "--baseline",
            &baseline.url(),
            "--candidate",
            &renamed.url(),
            "--report",
            report.to_str().expect("utf-8"),
            "--quiet",
        ],
        T,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "renamed field:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let v = read_json(&report.join("verdict.json"));
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["rollback"], true);
    let junit = std::fs::read_to_string(report.join("junit.xml")).expect("junit.xml");
    assert!(junit.contains("<failure"), "{junit}");
    assert!(junit.contains("GET /api/users/{id}"), "{junit}");
}

/// Regression: with both targets unreachable every exchange failed the same way on both sides and
/// the judge saw "no difference" — a rollout gate must never pass on that.
#[test]
fn check_is_inconclusive_when_the_baseline_does_not_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let tape_s = tape.to_str().expect("utf-8");
    let o = run(
        &["synth", "--out", tape_s, "--count", "300", "--seed", "5"],
        T,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let down = |_: ()| format!("http://127.0.0.1:{}", crate::util::free_port());
    let up = json_server("same");

    for (name, baseline, candidate) in [
        ("both-down", down(()), down(())),
        ("baseline-down", down(()), up.url()),
    ] {
        let report = dir.path().join(name);
        let o = run(
            &[
                "check",
                "--tape",
                tape_s,
                "--baseline",
                &baseline,
                "--candidate",
                &candidate,
                "--report",
                report.to_str().expect("utf-8"),
                "--quiet",
                "--timeout",
                "5s",
            ],
            T,
        );
        assert_eq!(
            o.status.code(),
            Some(3),
            "{name}:\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        let v = read_json(&report.join("verdict.json"));
        assert_eq!(v["verdict"], "inconclusive", "{name}");
        assert_eq!(v["rollback"], false, "{name}");
        let md = std::fs::read_to_string(report.join("report.md")).expect("report.md");
        assert!(
            md.contains("did not answer"),
            "{name}: report.md does not say why"
        );
    }
}

on_both_engines!(
    demo_finds_exactly_the_planted_regressions,
    demo_with_the_good_build_passes_with_no_findings,
);
