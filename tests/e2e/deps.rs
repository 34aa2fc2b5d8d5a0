//! Issue 15, dependencies on tape end to end: a service's outbound calls recorded with the trace
//! of the inbound request that caused them, then `tapedeck check --mock` replaying the inbound
//! tape against two builds of the service whose dependency is a mock of the recording (the real
//! dependency stopped), and the verdict's dependency section.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::{
    Check, Diff, Engine, Received, Recorder, Reply, TestServer, assert_exit, free_port, read_tape,
    stderr, stdout, verdict,
};

const ORDERS: usize = 40;

/// One HTTP/1.1 POST over a fresh connection (`Connection: close`); returns (status, body).
fn post(addr: SocketAddr, path: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The service under test: `POST /orders {"sku":k,"qty":q}` asks pricing for a quote
/// (`POST /quote {"sku":k}`), forwarding `traceparent`, `tracestate` and `x-request-id` as an
/// instrumented service does, and answers the total. Build `v2` asks twice, the second time with an extra
/// `currency` field: the planted dependency regression.
fn app(pricing: SocketAddr, v2: bool) -> TestServer {
    app_build(pricing, v2, false)
}

/// `cached`: when pricing fails, answer with a cached price (the graceful build) instead of 502.
fn app_build(pricing: SocketAddr, v2: bool, cached: bool) -> TestServer {
    TestServer::start(move |r: &Received| {
        let order: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let sku = order["sku"].as_u64().unwrap_or(0);
        let qty = order["qty"].as_u64().unwrap_or(0);
        let fwd: Vec<(String, String)> = ["traceparent", "tracestate", "x-request-id"]
            .iter()
            .filter_map(|h| Some(((*h).to_owned(), r.header(h)?)))
            .collect();
        let (status, quote) = post(pricing, "/quote", &fwd, &format!(r#"{{"sku":{sku}}}"#));
        if v2 {
            let _ = post(
                pricing,
                "/quote",
                &fwd,
                &format!(r#"{{"sku":{sku},"currency":"EUR"}}"#),
            );
        }
        let price = if status == 200 {
            serde_json::from_str::<serde_json::Value>(&quote).unwrap_or_default()["price"]
                .as_u64()
                .unwrap_or(0)
        } else if cached {
            100 + sku
        } else {
            return Reply::text(502, format!("pricing answered {status}"));
        };
        Reply::json(format!(
            r#"{{"sku":{sku},"qty":{qty},"total":{}}}"#,
            price * qty
        ))
    })
}

/// A pricing service: `POST /quote {"sku":k}` answers the price `100 + k`.
fn pricing() -> TestServer {
    TestServer::start(|r: &Received| {
        let q: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let sku = q["sku"].as_u64().unwrap_or(0);
        Reply::json(format!(r#"{{"sku":{sku},"price":{}}}"#, 100 + sku))
    })
}

/// Writes `DIR/rules.toml`: latency not judged (identical builds on a loaded machine), 10
/// samples a route.
fn rules(dir: &std::path::Path) -> std::path::PathBuf {
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[settings]\nweight_latency = 0.0\nmin_samples = 10\n",
    )
    .expect("rules");
    rules
}

/// `check` of the ingress tape in `dir` with the mocked dependency `mock`, writes allowed.
fn check(dir: &std::path::Path, baseline: &str, candidate: &str, mock: &str) -> Check {
    Check::new(dir.join("ingress"), baseline, candidate)
        .allow_writes()
        .mock(mock)
}

/// Records `ORDERS` orders of the service v1 (ingress tape `DIR/ingress`) and its calls to a
/// real pricing service (dependency tape `DIR/deps`), each order with its own trace; pricing is
/// stopped on return.
fn record_orders(dir: &std::path::Path) {
    record_orders_traced_by(dir, None);
}

/// [`record_orders`], with trace ids in `x-request-id` (`record --trace-header`) when `header`
/// is given, else in `traceparent`.
fn record_orders_traced_by(dir: &std::path::Path, header: Option<&str>) {
    let p = |name: &str| dir.join(name);
    let trace_args: Vec<&str> = header.map_or(Vec::new(), |h| vec!["--trace-header", h]);
    // Record: pricing behind a recorder (egress), the service v1 behind another (ingress).
    let pricing = pricing();
    let egress = Recorder::builder(&pricing.url())
        .tape(&p("deps"))
        .args(&["--source", "pricing"])
        .args(&trace_args)
        .engine(Engine::Hyper)
        .log_name("egress")
        .start(dir);
    let v1_recorded = app(([127, 0, 0, 1], egress.port).into(), false);
    let ingress = Recorder::builder(&v1_recorded.url())
        .tape(&p("ingress"))
        .args(&trace_args)
        .engine(Engine::Hyper)
        .log_name("ingress")
        .start(dir);
    let ingress_addr: SocketAddr = ([127, 0, 0, 1], ingress.port).into();
    for i in 0..ORDERS {
        let trace = match header {
            None => (
                "traceparent".to_owned(),
                format!("00-{:032x}-{:016x}-01", 0xfeed_0000 + i, i + 1),
            ),
            Some(h) => (h.to_owned(), format!("order-{i}")),
        };
        let (status, body) = post(
            ingress_addr,
            "/orders",
            &[trace],
            &format!(r#"{{"sku":{},"qty":{}}}"#, i % 7, 1 + i % 3),
        );
        assert_eq!(status, 200, "{body}");
    }
    let inbound = ingress.stop();
    let outbound = egress.stop();
    assert_eq!((inbound.len(), outbound.len()), (ORDERS, ORDERS));
    // Each dependency call is linked to the inbound request that caused it.
    let mut a: Vec<_> = inbound.iter().map(|e| e.trace_id.clone()).collect();
    let mut b: Vec<_> = outbound.iter().map(|e| e.trace_id.clone()).collect();
    a.sort();
    b.sort();
    assert!(a.iter().all(Option::is_some));
    assert_eq!(a, b);
    // The real dependency is gone from here on: only the mock answers.
    drop(pricing);
}

#[test]
fn issue_15_check_with_a_mocked_dependency_reports_the_new_calls_of_the_candidate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: &std::path::Path| path.to_str().expect("utf-8").to_owned();

    record_orders(dir.path());

    let mock_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let v1 = app(mock_addr, false);
    let v2 = app(mock_addr, true);
    let rules = rules(dir.path());
    let report = p("report");
    let mock = format!("pricing={}@{mock_addr}", s(&p("deps")));
    let check1 = check(dir.path(), &v1.url(), &v2.url(), &mock)
        .rules(&rules)
        .report(&report);
    let o = check1.run();
    let (out, err) = (stdout(&o), stderr(&o));
    // Same answers (the mock served each build its trace's recorded price), but more calls:
    // marginal, exit 0.
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "mock pricing on {mock_addr}: {} calls ({} hits, 0 misses, 0 faults)",
            4 * ORDERS,
            4 * ORDERS
        )),
        "{out}"
    );
    let verdict = check1.verdict();
    assert_eq!(verdict["verdict"], "marginal", "{:#}", verdict["reasons"]);
    let route = verdict["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "POST /orders"))
        .expect("route");
    assert_eq!(route["verdict"], "pass", "the answers did not change");
    let deps = &verdict["dependencies"];
    assert_eq!(deps["changes"], 1);
    let d = &deps["dependencies"][0];
    assert_eq!(d["name"], "pricing");
    assert_eq!(d["attribution"], "tracestate");
    assert_eq!(d["recorded_calls"], ORDERS);
    // baseline + secondary (the baseline replayed again as the noise target) + 2 × candidate.
    assert_eq!(d["calls"], 4 * ORDERS);
    assert_eq!(d["candidate_calls"], 2 * ORDERS);
    let r = &deps["routes"][0];
    assert_eq!(r["route"], "POST /orders");
    assert_eq!(r["traces"], ORDERS);
    let c = &r["calls"][0];
    assert_eq!(c["call"], "POST /quote");
    assert_eq!(c["status"], "more-calls");
    assert_eq!(
        (
            &c["recorded"],
            &c["made"],
            &c["new_calls"],
            &c["traces_with_new"],
            &c["missing_calls"]
        ),
        (
            &ORDERS.into(),
            &(2 * ORDERS).into(),
            &ORDERS.into(),
            &ORDERS.into(),
            &0.into()
        )
    );
    // The second call's body has a field the recorded request never had.
    assert_eq!(c["changed_requests"], ORDERS);
    assert_eq!(c["changed_paths"][0][0], "$.currency");
    assert_eq!(c["example"]["candidate"], "\"EUR\"");
    let reasons = verdict["reasons"].as_array().expect("reasons");
    assert!(
        reasons[0]
            .as_str()
            .is_some_and(|r| r.contains("dependency pricing")
                && r.contains("POST /quote made 80 × where the recording made it 40 ×")),
        "{reasons:#?}"
    );
    let md = std::fs::read_to_string(report.join("report.md")).expect("report.md");
    assert!(
        md.contains("## Dependencies") && md.contains("more-calls"),
        "{md}"
    );
    let html = std::fs::read_to_string(report.join("report.html")).expect("report.html");
    assert!(html.contains("<h2>Dependencies</h2>") && html.contains("more-calls"));
    assert!(out.contains("1 changed dependency call(s)"), "{out}");
    // Every call the mock got is on its calls tape, under the report directory.
    let calls = read_tape(&report.join("mocks/pricing"));
    assert_eq!(calls.len(), 4 * ORDERS);
    assert!(calls.iter().all(|e| e.target.as_deref() == Some("mock")));

    // `diff --dependency` builds the same section from the run and the mock's calls tape.
    let dep = format!(
        "pricing={},{}",
        s(&p("deps")),
        s(&report.join("mocks/pricing"))
    );
    let rejudged = Diff::of(&report.join("run"))
        .args(["--noise", "secondary"])
        .rules(&rules)
        .flag("--dependency", &dep)
        .report(&p("rejudged"));
    assert_exit(&rejudged.run(), 0, "diff --dependency");
    let again = rejudged.verdict();
    assert_eq!(again["verdict"], "marginal");
    assert_eq!(
        again["dependencies"]["routes"],
        verdict["dependencies"]["routes"]
    );
    let o = Diff::of(&report.join("run"))
        .args(["--dependency", "pricing"])
        .run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--dependency"), "{}", stderr(&o));

    // The good build: the same calls as recorded, nothing in the dependency section; --strict
    // makes the marginal build above fail, this one passes.
    let v1b = app(mock_addr, false);
    let report2 = p("report2");
    let check2 = check(dir.path(), &v1.url(), &v1b.url(), &mock)
        .rules(&rules)
        .report(&report2)
        .arg("--strict")
        .quiet();
    assert_exit(&check2.run(), 0, "the good build");
    let verdict = check2.verdict();
    assert_eq!(verdict["verdict"], "pass", "{:#}", verdict["reasons"]);
    assert_eq!(verdict["dependencies"]["changes"], 0);
    let c = &verdict["dependencies"]["routes"][0]["calls"][0];
    assert_eq!(
        (&c["status"], &c["made"]),
        (&"unchanged".into(), &ORDERS.into())
    );
    // Replayed through the mock, a deterministic build answers byte for byte what the recording
    // holds (issue 15's "done when"), for every order.
    let recorded: std::collections::HashMap<_, _> = read_tape(&p("ingress"))
        .into_iter()
        .map(|e| (e.id, e.resp_body))
        .collect();
    let answers: Vec<_> = read_tape(&report2.join("run"))
        .into_iter()
        .filter(|e| e.target.as_deref() == Some("candidate"))
        .collect();
    assert_eq!(answers.len(), ORDERS);
    for a in &answers {
        let origin = a.origin_id.expect("origin");
        assert_eq!(
            Some(&a.resp_body),
            recorded.get(&origin),
            "candidate answer to {origin} differs from the recording"
        );
    }

    // Bad --mock values are usage errors (exit 2) naming the flag.
    for bad in [
        "pricing",
        "pricing=deps",
        "=deps@127.0.0.1:1",
        "pricing=deps@nowhere",
    ] {
        let o = Check::new(p("ingress"), &v1.url(), &v1b.url())
            .mock(bad)
            .report(&p("bad"))
            .run();
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("--mock"), "{bad}: {}", stderr(&o));
    }
}

/// Issue 15, `check --chaos`: the candidate is replayed a second time while pricing answers 503;
/// a build that answers 502 when pricing is down is reported degraded (5xx introduced on every
/// order), one that falls back to a cached price graceful. The verdict itself is unchanged.
#[test]
fn issue_15_check_chaos_reports_per_fault_whether_the_candidate_degraded_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: &std::path::Path| path.to_str().expect("utf-8").to_owned();
    record_orders(dir.path());
    let faults = p("chaos.toml");
    std::fs::write(
        &faults,
        "[[fault]]\nroute = \"POST /quote\"\nstatus = 503\nrate = 1.0\n",
    )
    .expect("faults");
    let rules = rules(dir.path());
    let mock_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mock = format!("pricing={}@{mock_addr}", s(&p("deps")));
    let v1 = app(mock_addr, false);
    for (name, cached, outcome) in [("plain", false, "degraded"), ("cached", true, "graceful")] {
        let candidate = app_build(mock_addr, false, cached);
        let report = p(name);
        let o = check(dir.path(), &v1.url(), &candidate.url(), &mock)
            .flag("--chaos", &faults)
            .rules(&rules)
            .report(&report)
            .run();
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(o.status.code(), Some(0), "{name}: {out}\n{err}");
        let verdict = verdict(&report);
        assert_eq!(
            verdict["verdict"], "pass",
            "{name}: {:#}",
            verdict["reasons"]
        );
        let chaos = &verdict["chaos"];
        assert_eq!(chaos["requests"], ORDERS, "{name}");
        let f = &chaos["faults"][0];
        assert_eq!(f["outcome"], outcome, "{name}: {f:#}");
        assert_eq!(f["effect"], "status=503");
        assert_eq!(
            (&f["injected"], &f["requests"]),
            (&ORDERS.into(), &ORDERS.into()),
            "{name}"
        );
        if cached {
            assert_eq!(f["graceful"], ORDERS);
            assert_eq!(f["examples"].as_array().map(Vec::len), Some(0));
        } else {
            assert_eq!(f["server_errors"], ORDERS);
            assert_eq!(f["examples"][0]["route"], "POST /orders");
            assert!(
                f["examples"][0]["with_fault"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("502")),
                "{f:#}"
            );
            let reasons = verdict["reasons"].as_array().expect("reasons");
            assert!(
                reasons.iter().any(|r| r
                    .as_str()
                    .is_some_and(|r| r.starts_with("Chaos:") && r.contains("40 answered 5xx"))),
                "{reasons:#?}"
            );
        }
        assert!(
            out.contains("chaos: 40 requests replayed to the candidate with faults"),
            "{out}"
        );
        let md = std::fs::read_to_string(report.join("report.md")).expect("report.md");
        assert!(md.contains("## Chaos") && md.contains(outcome), "{md}");
        let html = std::fs::read_to_string(report.join("report.html")).expect("report.html");
        assert!(html.contains("<h2>Chaos"));
        // Every faulted call is on the chaos calls tape.
        let calls = read_tape(&report.join("chaos/mocks/pricing"));
        assert_eq!(calls.len(), ORDERS);
        assert!(
            calls
                .iter()
                .all(|c| c.has_flag(tapedeck_storage::flags::MOCK_FAULT))
        );
    }
    // --chaos without --mock is a usage error.
    let o = Check::new(p("ingress"), &v1.url(), &v1.url())
        .flag("--chaos", &faults)
        .run();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Issue 15: dependency tapes recorded with `--trace-header x-request-id` are served per trace
/// with `check --mock-trace-header x-request-id`. Without a W3C trace there is no `tracestate`
/// lane: the section says its calls are `untagged` (all counted as the candidate's), which is
/// right here because the baseline does not call the mock.
#[test]
fn issue_15_check_mocks_dependencies_traced_by_another_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: &std::path::Path| path.to_str().expect("utf-8").to_owned();
    record_orders_traced_by(dir.path(), Some("x-request-id"));
    let recorded = read_tape(&p("deps"));
    assert!(recorded.iter().all(|e| {
        e.trace_id
            .as_deref()
            .is_some_and(|t| t.starts_with("order-"))
    }));
    let mock_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    // The baseline answers from elsewhere (a pricing of its own); only the candidate calls the mock.
    let own_pricing = pricing();
    let v1 = app(own_pricing.addr, false);
    let v2 = app(mock_addr, true);
    let rules = rules(dir.path());
    let report = p("report");
    let mock = format!("pricing={}@{mock_addr}", s(&p("deps")));
    let check = check(dir.path(), &v1.url(), &v2.url(), &mock)
        .arg("--no-noise-target")
        .args(["--mock-trace-header", "X-Request-Id"])
        .rules(&rules)
        .report(&report)
        .quiet();
    assert_exit(&check.run(), 0, "traced by x-request-id");
    let verdict = check.verdict();
    let d = &verdict["dependencies"]["dependencies"][0];
    assert_eq!(
        (&d["attribution"], &d["candidate_calls"]),
        (&"untagged".into(), &(2 * ORDERS).into())
    );
    assert_eq!(
        d["untraced_calls"], 0,
        "every call was linked by x-request-id"
    );
    let c = &verdict["dependencies"]["routes"][0]["calls"][0];
    assert_eq!(
        (&c["status"], &c["made"], &c["recorded"], &c["misses"]),
        (
            &"more-calls".into(),
            &(2 * ORDERS).into(),
            &ORDERS.into(),
            &0.into()
        )
    );
    // Served per trace: no call borrowed another order's recorded price.
    let calls = read_tape(&report.join("mocks/pricing"));
    assert!(calls.iter().all(|c| {
        c.trace_id
            .as_deref()
            .is_some_and(|t| t.starts_with("order-"))
    }));
}
