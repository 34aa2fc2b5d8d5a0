//! `tapedeck check --early-stop` (issue 16): the sequential judge stops the replay as soon as the
//! verdict is decided. Real binary, real servers on loopback; every planted latency effect is
//! ≥ 50 ms and the judge's "much slower" floor is 50 ms, so a loaded machine cannot decide them.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::{Check, Reply, TestServer, stderr, stdout, synth};

/// The paginated route of a synth tape, as the judge keys it.
const PAGES: &str = "GET /api/users?page&per_page";

/// A JSON API echoing the request path; `slow_pages` adds 200 ms to the paginated route (a
/// ≥ 10× slowdown of a route answering in about a millisecond), `renamed` renames a field of
/// `GET /api/users/{id}`.
fn server(slow_pages: bool, renamed: bool) -> TestServer {
    TestServer::start(move |req| {
        let key = if renamed && req.uri.starts_with("/api/users/") {
            "okay"
        } else {
            "ok"
        };
        let mut reply =
            Reply::json(serde_json::json!({"path": req.uri.clone(), key: true}).to_string());
        if slow_pages && req.uri.starts_with("/api/users?") {
            reply.delay = Duration::from_millis(200);
        }
        reply
    })
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    tape: PathBuf,
    rules: PathBuf,
}

/// A synthetic tape of 1,200 exchanges (about 1,050 GETs) and rules whose latency floor is
/// 50 ms (shifts below it are scheduling noise on a loaded machine, never a regression).
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let tape = root.join("tape");
    synth(&tape, &["--count", "1200", "--seed", "16"]);
    let rules = root.join("rules.toml");
    std::fs::write(
        &rules,
        "# Planted effects are >= 50 ms; smaller shifts are machine noise.\n[settings]\nmin_shift_ms = 50.0\n",
    )
    .expect("rules");
    Setup {
        _dir: dir,
        root,
        tape,
        rules,
    }
}

impl Setup {
    /// Runs `check` against `baseline` and `candidate`; returns (exit code, verdict, stdout).
    fn check(
        &self,
        name: &str,
        baseline: &TestServer,
        candidate: &TestServer,
        extra: &[&str],
    ) -> (Option<i32>, serde_json::Value, String) {
        let check = Check::new(&self.tape, &baseline.url(), &candidate.url())
            .rules(&self.rules)
            .report(&self.root.join(name))
            .args(extra);
        let o = check.run();
        let out = stdout(&o);
        assert!(
            check.report_dir().join("verdict.json").is_file(),
            "{name}: no verdict\n{out}\n{}",
            stderr(&o)
        );
        (o.status.code(), check.verdict(), out)
    }
}

/// The seed's scenario: one route of the candidate is slowed by 200 ms. The run fails (roll
/// back) after at most 200 replayed requests of a 1,200-exchange tape.
#[test]
fn early_stop_fails_a_slowed_route_within_200_requests() {
    let s = setup();
    let baseline = server(false, false);
    let candidate = server(true, false);
    let (code, v, out) = s.check("slow", &baseline, &candidate, &["--early-stop"]);
    assert_eq!(code, Some(1), "{out}\n{v:#}");
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["rollback"], true);
    assert_eq!(v["stopped_early"], true, "{v:#}");
    let sent = v["requests_sent"]["candidate"]
        .as_u64()
        .expect("requests_sent");
    assert!(sent <= 200, "{sent} requests replayed before the verdict");
    // What the candidate actually received agrees with what the verdict says.
    assert_eq!(candidate.requests().len() as u64, sent);
    assert_eq!(v["requests_sent"]["baseline"], sent);
    assert_eq!(v["requests_sent"]["secondary"], sent);
    let seq = &v["sequential"];
    assert_eq!(seq["decision"], "fail", "{seq:#}");
    assert_eq!(seq["alpha"], 0.01);
    let first = &seq["crossed"][0];
    assert_eq!(first["route"], PAGES, "{seq:#}");
    assert_eq!(first["check"], "latency");
    let (e, threshold) = (
        first["e_value"].as_f64().expect("e"),
        first["threshold"].as_f64().expect("threshold"),
    );
    assert!(e >= threshold && threshold >= 100.0, "{first:#}");
    assert!(v["time_to_verdict_ms"].as_u64().is_some(), "{v:#}");
    assert!(
        v["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("Sequential test: latency on")),
        "{v:#}"
    );
    // The text output says it in one line; the reports mention it.
    assert!(
        out.lines()
            .any(|l| l.starts_with("early stop: stopped early after") && l.contains(PAGES)),
        "{out}"
    );
    let md = std::fs::read_to_string(s.root.join("slow/report.md")).expect("report.md");
    assert!(md.contains("early stop: stopped early"), "{md}");
    let html = std::fs::read_to_string(s.root.join("slow/report.html")).expect("report.html");
    assert!(html.contains("early stop: stopped early"));

    // Without --early-stop nothing changes: the whole tape is replayed and verdict.json has
    // none of the fields (a --limit keeps this part short).
    let (code, v, _) = s.check(
        "fixed",
        &baseline,
        &candidate,
        &["--quiet", "--limit", "300"],
    );
    assert_eq!(code, Some(1), "{v:#}");
    for key in [
        "stopped_early",
        "requests_sent",
        "time_to_verdict_ms",
        "sequential",
    ] {
        assert!(v.get(key).is_none(), "{key} without --early-stop");
    }
}

/// An identical candidate never fails with --early-stop: it passes or, when the tape ends before
/// every route is decided and the fixed judge is unsure, is inconclusive.
#[test]
fn early_stop_never_fails_an_identical_candidate() {
    let s = setup();
    let baseline = server(false, false);
    let candidate = server(false, false);
    let (code, v, out) = s.check("same", &baseline, &candidate, &["--early-stop", "--quiet"]);
    assert!(matches!(code, Some(0) | Some(3)), "{out}\n{v:#}");
    assert_ne!(v["verdict"], "fail");
    assert_eq!(v["rollback"], false);
    assert_ne!(v["sequential"]["decision"], "fail", "{v:#}");
    assert!(v["stopped_early"].is_boolean(), "{v:#}");
    assert_eq!(
        v["sequential"]["crossed"].as_array().map(Vec::len),
        Some(0),
        "{v:#}"
    );
    // Every route with enough data either was shown without regression or the tape ended.
    if v["stopped_early"] == false {
        assert!(
            v["requests_sent"]["candidate"].as_u64() > Some(1000),
            "{v:#}"
        );
    }
}

/// A response change in one route is caught, and by the responses test at the changed path.
#[test]
fn early_stop_catches_a_changed_response() {
    let s = setup();
    let baseline = server(false, false);
    let candidate = server(false, true);
    let (code, v, out) = s.check(
        "renamed",
        &baseline,
        &candidate,
        &["--early-stop", "--alpha", "0.001"],
    );
    assert_eq!(code, Some(1), "{out}\n{v:#}");
    assert_eq!(v["stopped_early"], true);
    let seq = &v["sequential"];
    assert_eq!(seq["alpha"], 0.001);
    let first = &seq["crossed"][0];
    assert_eq!(first["route"], "GET /api/users/{id}", "{seq:#}");
    assert_eq!(first["check"], "responses");
    let path = first["path"].as_str().expect("path");
    assert!(path == "$.ok" || path == "$.okay", "{path}");
    let sent = v["requests_sent"]["candidate"].as_u64().expect("sent");
    assert!(sent < 300, "{sent}");
    // The fixed judge, on what was replayed, names the same path for the report.
    let regressions: Vec<String> = v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| r["route"] == "GET /api/users/{id}")
        .flat_map(|r| r["paths"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["status"] == "regression")
        .filter_map(|p| p["path"].as_str().map(str::to_owned))
        .collect();
    assert!(regressions.iter().any(|p| p == path), "{regressions:?}");
}

/// Bad values of --alpha are refused before anything is sent.
#[test]
fn early_stop_refuses_a_bad_alpha() {
    let s = setup();
    let baseline = server(false, false);
    let b = baseline.url();
    let o = Check::new(&s.tape, &b, &b)
        .args(["--early-stop", "--alpha", "1.5"])
        .report(&s.root.join("bad-alpha"))
        .run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("alpha"), "{}", stderr(&o));
    assert!(baseline.requests().is_empty());
}
