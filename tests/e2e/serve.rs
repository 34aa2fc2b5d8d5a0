//! `tapedeck serve`: the Argo Rollouts Web provider and Flagger webhook contracts, real binary,
//! real baseline/candidate servers on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::util::{Proc, Reply, TestServer, free_port, synth, wait_for_port, wait_until};

const TOKEN: &str = "test-token-5521";

/// `POST /v1/runs` with `body` (an Argo Web provider start).
fn start_run(addr: SocketAddr, body: &str) -> (u16, String) {
    http(addr, "POST", "/v1/runs", Some(TOKEN), body)
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body. Bounded by timeouts.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to serve");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The status of a Flagger webhook call (`POST /flagger/{hook}`) with the token.
fn hook(addr: SocketAddr, hook: &str, payload: &str) -> u16 {
    http(
        addr,
        "POST",
        &format!("/flagger/{hook}"),
        Some(TOKEN),
        payload,
    )
    .0
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A JSON API; `renamed` renames a field on `/api/users/{id}`; the first `slow_first` requests
/// are answered after 3 s.
fn api(renamed: bool, slow_first: usize) -> TestServer {
    let seen = Arc::new(AtomicUsize::new(0));
    TestServer::start(move |req| {
        let field = if renamed && req.uri.starts_with("/api/users/") {
            "okay"
        } else {
            "ok"
        };
        let mut r =
            Reply::json(serde_json::json!({"path": req.uri.clone(), field: true}).to_string());
        if seen.fetch_add(1, Ordering::SeqCst) < slow_first {
            r.delay = Duration::from_secs(3);
        }
        r
    })
}

fn flagger(name: &str, checksum: &str, metadata: serde_json::Value) -> String {
    serde_json::json!({
        "name": name,
        "namespace": "shop",
        "phase": "Progressing",
        "checksum": checksum,
        "metadata": metadata,
    })
    .to_string()
}

/// Polls the run until its status is no longer `pending` (bounded); returns the document.
fn wait_done(addr: SocketAddr, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = wait_until(Duration::from_secs(180), || {
        let (code, body) = http(
            addr,
            "GET",
            &format!("/v1/runs/{id}/verdict"),
            Some(TOKEN),
            "",
        );
        assert_eq!(code, 200, "{body}");
        last = json(&body);
        last["status"] != "pending"
    });
    assert!(done, "run {id} still pending: {last:#}");
    last
}

fn start_serve(
    dir: &Path,
    runs: &Path,
    tape: &Path,
    baseline: &str,
    candidate: &str,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let logs = dir.join(format!("serve-{port}"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let listen = addr.to_string();
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--runs",
        s(runs),
        "--token",
        TOKEN,
        "--tape",
        s(tape),
        "--baseline",
        baseline,
        "--candidate",
        candidate,
        "--tickets",
    ];
    args.extend(extra);
    // The tests judge identical builds as a pass and a renamed field as a fail: responses and
    // errors only. Latency is not judged, as the machine may be loaded (issue 17).
    let rules = dir.join("no-latency.toml");
    std::fs::write(&rules, "[settings]\nweight_latency = 0.0\n").expect("rules");
    args.extend(["--", "--concurrency", "8", "--rules", s(&rules)]);
    let proc = Proc::start(&args, &logs);
    assert!(
        wait_for_port(addr, Duration::from_secs(30)),
        "serve did not listen: {}",
        std::fs::read_to_string(logs.join("tapedeck.stderr")).unwrap_or_default()
    );
    (proc, addr)
}

#[test]
fn serve_answers_the_argo_and_flagger_contracts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    synth(&tape, &["--count", "400", "--seed", "3"]);
    let baseline = api(false, 0);
    let same = api(false, 0);
    let renamed = api(true, 0);
    let slow = api(false, 16);
    let runs = dir.path().join("runs");
    let (mut serve, addr) =
        start_serve(dir.path(), &runs, &tape, &baseline.url(), &same.url(), &[]);

    // Bearer token: required on every endpoint.
    assert_eq!(http(addr, "GET", "/v1/runs", None, "").0, 401);
    assert_eq!(http(addr, "GET", "/v1/runs", Some("wrong"), "").0, 401);
    assert_eq!(
        http(
            addr,
            "POST",
            "/flagger/rollout",
            None,
            &flagger("web", "c1", serde_json::json!({}))
        )
        .0,
        401
    );
    assert_eq!(http(addr, "GET", "/v1/runs", Some(TOKEN), "").0, 200);

    // Argo Web provider: start a run, poll its verdict.
    let (code, body) = start_run(addr, r#"{"id":"argo-same"}"#);
    assert_eq!(code, 202, "{body}");
    assert_eq!(json(&body)["status"], "pending");
    let done = wait_done(addr, "argo-same");
    assert_eq!(done["status"], "pass", "{done:#}");
    assert_eq!(done["verdict"], "pass");
    // serve runs `check`: without a secondary the baseline is replayed again as the noise
    // target (issue 17), so its verdicts have a noise floor too.
    assert_eq!(done["noise"], "secondary", "{done:#}");
    assert_eq!(done["rollback"], false);
    assert!(done["routes"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(runs.join("argo-same/report/verdict.json").is_file());
    assert!(runs.join("argo-same/state.json").is_file());
    // The id is an idempotency key.
    let (code, body) = start_run(addr, r#"{"id":"argo-same"}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["status"], "pass");
    assert_eq!(
        http(addr, "GET", "/v1/runs/nope/verdict", Some(TOKEN), "").0,
        404
    );
    let (code, body) = start_run(addr, r#"{"bogus":1}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bogus"), "{body}");

    // A candidate that renames a field: fail, over both APIs.
    let meta = serde_json::json!({"candidate": renamed.url(), "candidate_version": "v2"});
    let (code, body) = http(
        addr,
        "POST",
        "/flagger/pre-rollout",
        Some(TOKEN),
        &flagger("web", "c-renamed", meta.clone()),
    );
    assert_eq!(code, 200, "{body}");
    // Same checksum, same run.
    let (code, _) = http(
        addr,
        "POST",
        "/flagger/pre-rollout",
        Some(TOKEN),
        &flagger("web", "c-renamed", meta.clone()),
    );
    assert_eq!(code, 200);
    let mut last = (0, String::new());
    assert!(
        wait_until(Duration::from_secs(180), || {
            last = http(
                addr,
                "POST",
                "/flagger/rollout",
                Some(TOKEN),
                &flagger("web", "c-renamed", meta.clone()),
            );
            assert!(last.0 == 200 || last.0 == 412, "rollout answered {last:?}");
            last.0 == 412
        }),
        "rollout never failed: {last:?}"
    );
    assert!(last.1.contains("fail"), "{last:?}");
    assert_eq!(
        last.1.trim().lines().count(),
        1,
        "one-line reason: {last:?}"
    );
    let id = "flagger-shop-web-c-renamed";
    let doc = json(
        &http(
            addr,
            "GET",
            &format!("/v1/runs/{id}/verdict"),
            Some(TOKEN),
            "",
        )
        .1,
    );
    assert_eq!(doc["status"], "fail", "{doc:#}");
    assert_eq!(doc["rollback"], true);
    assert_eq!(doc["candidate_version"], "v2");
    // --tickets: a failing run gets a bug-ticket bundle; a passing one does not.
    let ticket = doc["ticket"]
        .as_str()
        .expect("ticket path in the run document");
    let ticket: serde_json::Value = json(&std::fs::read_to_string(ticket).expect("ticket.json"));
    assert_eq!(ticket["verdict"], "fail");
    assert!(runs.join(id).join("ticket/tape").is_dir());
    assert!(!runs.join("argo-same/ticket").exists());
    let (code, md) = http(
        addr,
        "GET",
        &format!("/v1/runs/{id}/ticket.md"),
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200);
    assert!(md.contains("**Verdict: FAIL**"), "{md}");
    let (code, md) = http(addr, "GET", "/v1/runs/argo-same/report.md", Some(TOKEN), "");
    assert_eq!(code, 200);
    assert!(md.contains("PASS"), "{md}");
    let (code, html) = http(
        addr,
        "GET",
        "/v1/runs/argo-same/report.html",
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200);
    assert!(
        html.contains("<svg") && html.contains("PASS"),
        "report.html: {html:.200}"
    );
    // Every report file is served (the diff crate's REPORTS list), nothing else in the run.
    let (code, verdict) = http(
        addr,
        "GET",
        "/v1/runs/argo-same/verdict.json",
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200);
    let verdict: serde_json::Value = serde_json::from_str(&verdict).expect("verdict.json");
    assert_eq!(verdict["verdict"], "pass", "{verdict}");
    let (code, junit) = http(addr, "GET", "/v1/runs/argo-same/junit.xml", Some(TOKEN), "");
    assert_eq!(code, 200);
    assert!(junit.contains("<testsuite"), "{junit:.200}");
    let (code, _) = http(
        addr,
        "GET",
        "/v1/runs/argo-same/state.json",
        Some(TOKEN),
        "",
    );
    assert!(
        (400..500).contains(&code),
        "state.json is not a report: {code}"
    );
    assert_eq!(
        http(addr, "GET", "/v1/runs/argo-same/ticket.md", Some(TOKEN), "").0,
        404
    );
    let payload = flagger("web", "c-renamed", meta.clone());
    assert_eq!(hook(addr, "confirm-promotion", &payload), 412);
    assert_eq!(hook(addr, "rollback", &payload), 200);
    assert_eq!(
        renamed.requests().len(),
        same.requests().len(),
        "every request reached the candidate"
    );

    // A slow candidate: pending first (rollout 200, promotion and rollback refused), then judged.
    let meta = serde_json::json!({"candidate": slow.url()});
    let payload = flagger("api", "c-slow", meta);
    let (code, body) = http(addr, "POST", "/flagger/pre-rollout", Some(TOKEN), &payload);
    assert_eq!(code, 200, "{body}");
    let doc = json(
        &http(
            addr,
            "GET",
            "/v1/runs/flagger-shop-api-c-slow/verdict",
            Some(TOKEN),
            "",
        )
        .1,
    );
    assert_eq!(doc["status"], "pending", "{doc:#}");
    let (code, body) = http(addr, "POST", "/flagger/rollout", Some(TOKEN), &payload);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("pending"), "{body}");
    assert_eq!(hook(addr, "confirm-promotion", &payload), 412);
    assert_eq!(hook(addr, "rollback", &payload), 412);
    let done = wait_done(addr, "flagger-shop-api-c-slow");
    assert_ne!(done["status"], "error", "{done:#}");
    let expect_promote = if done["status"] == "pass" { 200 } else { 412 };
    assert_eq!(hook(addr, "confirm-promotion", &payload), expect_promote);

    // An identical candidate through Flagger: promotion confirmed, rollback refused.
    let payload = flagger("api", "c-same", serde_json::json!({}));
    assert_eq!(hook(addr, "pre-rollout", &payload), 200);
    let done = wait_done(addr, "flagger-shop-api-c-same");
    assert_eq!(done["status"], "pass", "{done:#}");
    assert_eq!(hook(addr, "rollout", &payload), 200);
    assert_eq!(hook(addr, "confirm-promotion", &payload), 200);
    assert_eq!(hook(addr, "rollback", &payload), 412);

    // A run that cannot run: status error with a message; rollout refuses with 412, not 5xx.
    let missing = dir.path().join("no-such-tape");
    let payload = flagger("api", "c-broken", serde_json::json!({"tape": s(&missing)}));
    assert_eq!(hook(addr, "pre-rollout", &payload), 200);
    let done = wait_done(addr, "flagger-shop-api-c-broken");
    assert_eq!(done["status"], "error", "{done:#}");
    assert!(
        done["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{done:#}"
    );
    let (code, body) = http(addr, "POST", "/flagger/rollout", Some(TOKEN), &payload);
    assert_eq!(code, 412, "{body}");
    assert!(body.contains("error"), "{body}");

    // A run interrupted by a stop starts again at the next start-up.
    let slow2 = api(false, 16);
    let body = serde_json::json!({"id": "interrupted", "candidate": slow2.url()}).to_string();
    let (code, _) = start_run(addr, &body);
    assert_eq!(code, 202);
    assert!(
        wait_until(Duration::from_secs(30), || !slow2.requests().is_empty()),
        "the run never reached the candidate"
    );

    // A restart answers for finished runs from RUNS/.
    serve.signal("TERM");
    assert!(
        serve.wait_timeout(Duration::from_secs(20)).is_some(),
        "serve did not stop on SIGTERM"
    );
    let state = json(&std::fs::read_to_string(runs.join("interrupted/state.json")).expect("state"));
    assert_eq!(state["status"], "running", "{state:#}");
    let (_serve2, addr2) = start_serve(dir.path(), &runs, &tape, &baseline.url(), &same.url(), &[]);
    let doc = json(&http(addr2, "GET", "/v1/runs/argo-same/verdict", Some(TOKEN), "").1);
    assert_eq!(doc["status"], "pass", "{doc:#}");
    let payload = flagger("web", "c-renamed", serde_json::json!({}));
    assert_eq!(
        http(addr2, "POST", "/flagger/rollback", Some(TOKEN), &payload).0,
        200
    );
    assert_eq!(
        http(addr2, "POST", "/flagger/rollout", Some(TOKEN), &payload).0,
        412
    );
    let done = wait_done(addr2, "interrupted");
    assert_eq!(done["status"], "pass", "{done:#}");
}

#[test]
fn serve_keeps_only_the_newest_finished_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    synth(&tape, &["--count", "60", "--seed", "4"]);
    let baseline = api(false, 0);
    let candidate = api(false, 0);
    let runs = dir.path().join("runs");
    let (_serve, addr) = start_serve(
        dir.path(),
        &runs,
        &tape,
        &baseline.url(),
        &candidate.url(),
        &["--keep-runs", "2"],
    );
    for id in ["r1", "r2", "r3"] {
        let body = serde_json::json!({ "id": id }).to_string();
        assert_eq!(start_run(addr, &body).0, 202);
        let done = wait_done(addr, id);
        assert_ne!(done["status"], "error", "{done:#}");
    }
    // r1 finished first: deleted once r3 finished (bounded wait: pruning follows the state
    // update, and the directory goes after the entry).
    assert!(
        wait_until(Duration::from_secs(30), || {
            http(addr, "GET", "/v1/runs/r1/verdict", Some(TOKEN), "").0 == 404
                && !runs.join("r1").exists()
        }),
        "r1 was not pruned"
    );
    for id in ["r2", "r3"] {
        assert_eq!(
            http(
                addr,
                "GET",
                &format!("/v1/runs/{id}/verdict"),
                Some(TOKEN),
                ""
            )
            .0,
            200
        );
        assert!(runs.join(id).join("state.json").is_file());
    }
}

/// Check flags every run would fail on stop `serve` at start-up (exit 2, naming the setting),
/// before it listens: a bad duration, a missing rules file, a missing corpus, an unknown flag.
#[test]
fn serve_refuses_bad_check_flags_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let missing = dir.path().join("missing.toml");
    for (flags, needle) in [
        (vec!["--timeout", "abc"], "timeout"),
        (vec!["--rules", s(&missing)], "missing.toml"),
        (vec!["--corpus", s(&missing)], "corpus"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ] {
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port}");
        let out = crate::util::Cli::new("serve")
            .flag("--runs", &runs)
            .flag("--listen", &listen)
            .arg("--")
            .args(&flags)
            .timeout(Duration::from_secs(60))
            .run();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
}
