//! Unit tests of `lib.rs`.

use super::*;
use crate::markdown::redact_curl;
use serde_json::Value;

fn report_with(verdict: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("verdict.json"),
        serde_json::to_vec(verdict).expect("json"),
    )
    .expect("write verdict.json");
    dir
}

#[test]
fn an_inconclusive_report_without_a_run_makes_a_low_severity_ticket() {
    let report = report_with(&serde_json::json!({
        "schema_version": 1, "run_id": "r1", "verdict": "inconclusive", "rollback": false,
        "score": null, "exit_code": 3, "title": "Too little traffic to judge (v1 → v2)",
        "reasons": ["GET /a — too few samples"], "baseline": "baseline",
        "candidate": "candidate", "noise": null, "baseline_version": "v1",
        "candidate_version": "v2", "window_us": null, "counts": {"paired": 3},
        "routes": [{"route": "GET /a", "verdict": "inconclusive", "score": null,
                    "paired": 3, "checks": [], "paths": [], "errors": {}, "latency": {}}],
        "future_field": {"ignored": true}
    }));
    let out = report.path().join("ticket");
    let outcome = write_ticket(&TicketOptions::new(report.path(), &out)).expect("ticket");
    let TicketOutcome::Written(t) = outcome else {
        panic!("an inconclusive verdict is filed");
    };
    assert_eq!(t.severity, "low");
    assert!(t.labels.contains(&"tapedeck-inconclusive".to_owned()));
    assert_eq!(t.routes, vec!["GET /a".to_owned()]);
    assert_eq!(t.exchanges, 0);
    assert!(t.body.contains("no tape is bundled"), "{}", t.body);
    assert!(t.body.contains("**Verdict: INCONCLUSIVE**"));
    assert!(out.join("ticket.md").is_file() && out.join("ticket.json").is_file());
}

#[test]
fn a_verdict_alone_makes_a_ticket_without_the_run() {
    let opts = TicketOptions::new(Path::new("report"), Path::new("out"));
    let fail = serde_json::json!({
        "schema_version": 1, "verdict": "fail", "rollback": true, "exit_code": 1,
        "title": "GET /a p95 +900 % (v1 → v2)", "baseline_version": "v1",
        "candidate_version": "v2",
        "routes": [{"route": "GET /a", "verdict": "fail", "checks": [
            {"name": "latency", "classification": "high", "critical": true,
             "reason": "slower"}]}]
    });
    let t = ticket_for(fail.to_string().as_bytes(), &opts)
        .expect("parses")
        .expect("a fail is filed");
    assert_eq!(t.severity, "critical");
    assert_eq!(t.fingerprint.len(), 64);
    assert!(t.body.starts_with("# GET /a p95 +900 %"), "{}", t.body);
    let pass = serde_json::json!({"schema_version": 1, "verdict": "pass", "routes": []});
    assert!(
        ticket_for(pass.to_string().as_bytes(), &opts)
            .expect("parses")
            .is_none()
    );
    assert!(matches!(
        ticket_for(b"{\"schema_version\": 1", &opts),
        Err(TicketError::Verdict { .. })
    ));
    assert!(matches!(
        ticket_for(br#"{"schema_version": 2, "verdict": "fail"}"#, &opts),
        Err(TicketError::Schema { found: 2, .. })
    ));
}

#[test]
fn a_foreign_tape_dir_in_out_is_never_deleted() {
    let report = report_with(&serde_json::json!({
        "schema_version": 1, "run_id": "run", "verdict": "fail", "exit_code": 1,
        "routes": []
    }));
    std::fs::create_dir_all(report.path().join("run")).expect("run dir");
    let out = report.path().join("out");
    std::fs::create_dir_all(out.join("tape")).expect("foreign tape");
    std::fs::write(out.join("tape/precious"), b"x").expect("file");
    let e = write_ticket(&TicketOptions::new(report.path(), &out)).expect_err("refused");
    assert!(
        format!("{e:#}").contains("not part of a ticket bundle"),
        "{e:#}"
    );
    assert!(out.join("tape/precious").is_file());
}

#[test]
fn unreadable_reports_are_errors_that_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = write_ticket(&TicketOptions::new(dir.path(), &dir.path().join("t")))
        .expect_err("no verdict.json");
    assert!(format!("{e:#}").contains("verdict.json"), "{e:#}");
    let report = report_with(&serde_json::json!({"schema_version": 2, "verdict": "fail"}));
    let e = write_ticket(&TicketOptions::new(report.path(), &report.path().join("t")))
        .expect_err("future schema");
    assert!(format!("{e:#}").contains("schema_version 2"), "{e:#}");
}

#[test]
fn fingerprint_is_stable_and_depends_on_every_part() {
    let a = fingerprint("GET /a", "responses", "v1", "v2");
    assert_eq!(a.len(), 64);
    assert_eq!(a, fingerprint("GET /a", "responses", "v1", "v2"));
    assert_ne!(a, fingerprint("GET /a", "latency", "v1", "v2"));
    assert_ne!(a, fingerprint("GET /a", "responses", "v1", "v3"));
    assert_ne!(a, fingerprint("GET /b", "responses", "v1", "v2"));
}

#[test]
fn post_headers_expand_the_environment() {
    // PATH is set in any test environment.
    let path = std::env::var("PATH").unwrap_or_default();
    let (n, v) = parse_header("X-Where: a ${PATH} b").expect("valid");
    assert_eq!(n, "X-Where");
    assert_eq!(v, format!("a {path} b"));
    assert!(parse_header("no colon").is_err());
    assert!(parse_header("X: ${TAPEDECK_SURELY_UNSET_VAR_93}").is_err());
    assert!(parse_header("X: ${OPEN").is_err());
    assert!(parse_header("bad name: v").is_err());
}

#[test]
fn curl_headers_are_masked() {
    let c = "curl -sS -X GET 'http://x/a' -H 'x-tenant-secret: s3cr3t' -H 'accept: */*'";
    let r = redact_curl(c, &["X-Tenant-Secret".to_owned()]);
    assert!(!r.contains("s3cr3t"), "{r}");
    assert!(r.contains("-H 'x-tenant-secret: [REDACTED]'"), "{r}");
    assert!(r.contains("accept: */*"));
    let quoted = r"curl 'http://x/' -H 'x-k: it'\''s secret' -H 'a: b'";
    let r = redact_curl(quoted, &["x-k".to_owned()]);
    assert_eq!(r, "curl 'http://x/' -H 'x-k: [REDACTED]' -H 'a: b'");
}

#[test]
fn pass_and_lenient_marginal_want_no_ticket() {
    let v = |verdict: &str, exit_code: i64| Verdict {
        schema_version: 1,
        run_id: String::new(),
        verdict: verdict.into(),
        rollback: false,
        score: None,
        exit_code,
        title: String::new(),
        reasons: vec![],
        baseline: String::new(),
        candidate: String::new(),
        noise: None,
        baseline_version: String::new(),
        candidate_version: String::new(),
        window_us: None,
        counts: Value::Null,
        routes: vec![],
        route_keys: Default::default(),
    };
    assert!(!wants_ticket(&v("pass", 0)));
    assert!(!wants_ticket(&v("marginal", 0)));
    assert!(wants_ticket(&v("marginal", 1)));
    assert!(wants_ticket(&v("fail", 1)));
    assert!(wants_ticket(&v("inconclusive", 3)));
}
