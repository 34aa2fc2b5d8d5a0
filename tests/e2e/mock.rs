//! `tapedeck mock`: the real binary serving dependency tapes (written with the storage crate, or
//! recorded by the real `tapedeck record` in front of a real server) to real clients. (Just over
//! 800 lines: one subcommand, one mock-process fixture.)

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tapedeck_storage::{ErrorKind, Exchange, Header, TapeWriter, WhenFull, flags, now_us};

use crate::util::{
    Proc, Reply, TestServer, curl, free_port, read_tape, rt, run, stderr, wait_for_port,
};

const STARTUP: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(60);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A recorded dependency call.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    body: String,
    trace: Option<String>,
    status: u16,
    answer: String,
    duration_us: i64,
}

impl<'a> Call<'a> {
    fn get(path: &'a str, trace: Option<String>, answer: String) -> Call<'a> {
        Call {
            method: "GET",
            path,
            query: None,
            body: String::new(),
            trace,
            status: 200,
            answer,
            duration_us: 1_000,
        }
    }
}

/// Writes a dependency tape; calls start 1 ms apart in the given order. Returns their ids.
fn write_tape(dir: &Path, calls: &[Call<'_>]) -> Vec<uuid::Uuid> {
    let w = TapeWriter::builder(dir)
        .when_full(WhenFull::Block)
        .open()
        .expect("open tape");
    let t0 = now_us() - 600_000_000;
    let mut ids = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let id = Exchange::new_id();
        ids.push(id);
        let body = Bytes::from(c.body.clone());
        w.append(Exchange {
            id,
            source: "pricing".into(),
            started_at_us: t0 + i as i64 * 1_000,
            ttfb_us: Some(c.duration_us),
            duration_us: Some(c.duration_us),
            total_us: Some(c.duration_us),
            method: c.method.into(),
            authority: "pricing.internal".into(),
            path: c.path.into(),
            query: c.query.map(str::to_owned),
            req_headers: vec![
                Header::new("host", "pricing.internal"),
                Header::new("content-type", "application/json"),
            ],
            req_body_size: body.len() as u64,
            req_body: body,
            status: Some(c.status),
            resp_headers: vec![
                Header::new("content-type", "application/json"),
                Header::new("x-recorded", "yes"),
                Header::new("content-length", "12345"),
            ],
            resp_body_size: c.answer.len() as u64,
            resp_body: Bytes::from(c.answer.clone()),
            trace_id: c.trace.clone(),
            ..Exchange::default()
        })
        .expect("append");
    }
    w.close().expect("close tape");
    ids
}

/// A running `tapedeck mock`.
struct MockProc {
    proc: Proc,
    port: u16,
    logs: PathBuf,
}

impl MockProc {
    fn start(tape: &Path, logs: &Path, extra: &[&str]) -> MockProc {
        std::fs::create_dir_all(logs).expect("log dir");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "mock",
            "--tape",
            s(tape),
            "--listen",
            &listen,
            "--threads",
            "2",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start(&args, logs);
        let addr: SocketAddr = listen.parse().expect("addr");
        let m = MockProc {
            proc,
            port,
            logs: logs.to_owned(),
        };
        assert!(
            wait_for_port(addr, STARTUP),
            "mock did not start; stderr:\n{}",
            m.stderr()
        );
        m
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.join("tapedeck.stderr")).unwrap_or_default()
    }

    /// SIGTERM; the exit must be clean (0). Returns stdout (the summary).
    fn stop(mut self) -> String {
        self.proc.signal("TERM");
        let status = self
            .proc
            .wait_timeout(STOP)
            .expect("mock did not exit after SIGTERM");
        assert!(
            status.success(),
            "mock exited with {status}:\n{}",
            self.stderr()
        );
        std::fs::read_to_string(self.logs.join("tapedeck.stdout")).expect("stdout")
    }
}

type HyperClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn call(
    c: &HyperClient,
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Answer {
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(60), c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
        .await
        .expect("body timed out")
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

fn traceparent(trace: &str, span: u64) -> String {
    format!("00-{trace}-{span:016x}-01")
}

/// 64 concurrent callers, each its own trace, all asking the very same requests: each gets
/// only its own trace's answers, in recorded order (checked on every answer).
#[test]
fn concurrent_traces_get_their_own_answers_in_order() {
    const TRACES: usize = 64;
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("deps");
    let trace = |i: usize| format!("{:032x}", 0x000a_11ce_0000_u64 + i as u64);
    // Recorded as a busy service would: the traces' calls interleaved.
    let mut calls = Vec::new();
    for step in 0..4 {
        for i in 0..TRACES {
            let t = Some(trace(i));
            calls.push(match step {
                2 => Call {
                    method: "POST",
                    path: "/quote",
                    query: Some("cur=eur"),
                    body: format!(
                        r#"{{"sku":42,"qty":1,"ts":"2026-01-01T00:00:{:02}Z"}}"#,
                        i % 60
                    ),
                    trace: t,
                    status: 200,
                    answer: format!(r#"{{"trace":"{}","quote":{i}}}"#, trace(i)),
                    duration_us: 1_000,
                },
                n => {
                    let n = if n == 3 { 2 } else { n };
                    Call::get(
                        "/price/42",
                        t,
                        format!(r#"{{"trace":"{}","n":{n}}}"#, trace(i)),
                    )
                }
            });
        }
    }
    let ids = write_tape(&tape, &calls);
    let trace_of: HashMap<uuid::Uuid, String> = ids
        .iter()
        .zip(&calls)
        .map(|(id, c)| (*id, c.trace.clone().expect("traced")))
        .collect();
    let out = dir.path().join("out");
    let mock = MockProc::start(
        &tape,
        &dir.path().join("logs"),
        &["--out", s(&out), "--ignore", "$.ts", "--name", "pricing"],
    );

    let checked = rt().block_on(async {
        let c = Arc::new(client());
        let barrier = Arc::new(tokio::sync::Barrier::new(TRACES));
        let mut tasks = Vec::new();
        for i in 0..TRACES {
            let (c, barrier) = (c.clone(), barrier.clone());
            let (t, price, quote) = (trace(i), mock.url("/price/42"), mock.url("/quote?cur=eur"));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let h = |span: u64| vec![("traceparent", traceparent(&t, span))];
                let mut checked = 0;
                for (k, expect_n) in [0, 1].into_iter().enumerate() {
                    let a = call(&c, "GET", &price, &h(k as u64 + 1), "").await;
                    assert_eq!(a.status, 200);
                    assert_eq!(a.json()["trace"], t.as_str(), "another trace's answer");
                    assert_eq!(a.json()["n"], expect_n, "recorded order");
                    checked += 1;
                }
                // A different timestamp (ignored) in the body; keys in another order.
                let body = r#"{"ts":"2030-05-05T05:05:05Z","qty":1,"sku":42}"#;
                let a = call(&c, "POST", &quote, &h(3), body).await;
                assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
                assert_eq!(a.json()["trace"], t.as_str(), "another trace's answer");
                assert_eq!(a.json()["quote"], i);
                checked += 1;
                for span in [4, 5] {
                    // The third recorded answer, then (sequence used up) the same again.
                    let a = call(&c, "GET", &price, &h(span), "").await;
                    assert_eq!(a.json()["trace"], t.as_str(), "another trace's answer");
                    assert_eq!(a.json()["n"], 2);
                    assert_eq!(a.headers["x-recorded"], "yes");
                    checked += 1;
                }
                checked
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("caller task");
        }
        n
    });
    assert_eq!(checked, TRACES * 5);

    let summary = mock.stop();
    assert!(
        summary.contains(&format!("{} requests", TRACES * 5))
            && summary.contains(&format!("{} hit, 0 miss, 0 fault", TRACES * 5)),
        "{summary}"
    );
    let rows = read_tape(&out);
    assert_eq!(rows.len(), TRACES * 5, "every call on the output tape");
    let mut repeats = 0;
    for r in &rows {
        assert_eq!(r.target.as_deref(), Some("mock"));
        assert_eq!(r.source, "pricing");
        let t = r.trace_id.as_deref().expect("trace id kept");
        let origin = r.origin_id.expect("hit names the recorded exchange");
        assert_eq!(trace_of[&origin], t, "served from another trace");
        assert_eq!(
            r.flags & (flags::MOCK_MISS | flags::MOCK_FAULT | flags::MOCK_NEAREST),
            0
        );
        if r.has_flag(flags::MOCK_REPEAT) {
            repeats += 1;
        }
    }
    assert_eq!(repeats, TRACES, "one repeat per trace (the fifth call)");
}

/// The same GET answering differently over time, without trace ids: served in recorded order,
/// then the last again; recorded latency replayed when asked for.
#[test]
fn sequences_without_traces_follow_recorded_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("deps");
    let mut slow = Call::get("/slow", None, r#"{"slow":true}"#.into());
    slow.duration_us = 400_000;
    write_tape(
        &tape,
        &[
            Call::get("/config", None, r#"{"version":1}"#.into()),
            Call::get("/config", None, r#"{"version":2}"#.into()),
            slow,
            Call::get("/config", None, r#"{"version":3}"#.into()),
        ],
    );
    let mock = MockProc::start(&tape, &dir.path().join("logs"), &["--latency", "recorded"]);
    rt().block_on(async {
        let c = client();
        for expect in [1, 2, 3, 3, 3] {
            let a = call(&c, "GET", &mock.url("/config"), &[], "").await;
            assert_eq!(a.json()["version"], expect);
            assert_eq!(a.headers["content-length"], a.body.len().to_string());
        }
        // HTTP/2 with prior knowledge (h2c) is served too.
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let a = call(&h2, "GET", &mock.url("/config"), &[], "").await;
        assert_eq!(a.json()["version"], 3);
        let t = Instant::now();
        let a = call(&c, "GET", &mock.url("/slow"), &[], "").await;
        assert_eq!(a.status, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "recorded latency: {:?}",
            t.elapsed()
        );
    });
    let summary = mock.stop();
    assert!(summary.contains("7 hit"), "{summary}");
    assert!(summary.contains("3 repeated"), "{summary}");
}

/// Each miss policy: 502 with a JSON body naming what was asked (the default), 404, and
/// pass-through to a real server; a trace the tape does not know is a miss unless asked
/// otherwise.
#[test]
fn misses_follow_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("deps");
    let known = "0123456789abcdef0123456789abcdef";
    let stranger = "fedcba9876543210fedcba9876543210";
    write_tape(
        &tape,
        &[Call::get(
            "/known",
            Some(known.into()),
            r#"{"known":true}"#.into(),
        )],
    );
    let tp = |t: &str| vec![("traceparent", traceparent(t, 9))];

    // Default: 502, and the body says what was asked and why nothing matched.
    let out = dir.path().join("out502");
    let mock = MockProc::start(&tape, &dir.path().join("l502"), &["--out", s(&out)]);
    rt().block_on(async {
        let c = client();
        // The caller's credentials are served with, but never written to the output tape.
        let mut h = tp(known);
        h.push(("authorization", "Bearer MOCK-SECRET-TOKEN".to_owned()));
        let a = call(&c, "GET", &mock.url("/known"), &h, "").await;
        assert_eq!(
            (a.status, a.json()["known"].clone()),
            (200, Value::Bool(true))
        );
        let a = call(&c, "GET", &mock.url("/missing/7?a=1&b=2"), &tp(known), "").await;
        assert_eq!(a.status, 502);
        let j = a.json();
        assert_eq!(j["method"], "GET");
        assert_eq!(j["path"], "/missing/7");
        assert_eq!(j["query"], "a=1&b=2");
        assert_eq!(j["trace_id"], known);
        assert!(
            j["reason"]
                .as_str()
                .expect("reason")
                .contains("GET /missing/{id}"),
            "{j}"
        );
        // Another trace never gets trace `known`'s answer.
        let a = call(&c, "GET", &mock.url("/known"), &tp(stranger), "").await;
        assert_eq!(a.status, 502);
        assert!(
            a.json()["reason"]
                .as_str()
                .expect("reason")
                .contains("not on the tape")
        );
    });
    let summary = mock.stop();
    assert!(summary.contains("1 hit, 2 miss"), "{summary}");
    let rows = read_tape(&out);
    assert_eq!(rows.len(), 3);
    let auth = rows
        .iter()
        .find_map(|r| tapedeck_storage::find_header(&r.req_headers, "authorization"))
        .expect("the authorization header is kept, redacted");
    assert_eq!(auth.value_lossy(), "[REDACTED]");
    for r in &rows {
        assert!(
            !format!("{r:?}").contains("MOCK-SECRET-TOKEN"),
            "secret on the output tape"
        );
    }
    let misses: Vec<&Exchange> = rows
        .iter()
        .filter(|r| r.has_flag(flags::MOCK_MISS))
        .collect();
    assert_eq!(misses.len(), 2);
    for m in misses {
        assert_eq!(m.status, Some(502));
        assert!(m.origin_id.is_none());
        assert!(
            m.error
                .as_deref()
                .expect("why")
                .starts_with("no recorded answer"),
            "{:?}",
            m.error
        );
    }

    // 404, and unknown traces matched untraced when asked to.
    let mock = MockProc::start(
        &tape,
        &dir.path().join("l404"),
        &["--on-miss", "404", "--unknown-trace", "untraced"],
    );
    rt().block_on(async {
        let c = client();
        let a = call(&c, "POST", &mock.url("/missing"), &[], "{}").await;
        assert_eq!(a.status, 404);
        assert_eq!(a.json()["method"], "POST");
        let a = call(&c, "GET", &mock.url("/known"), &tp(stranger), "").await;
        assert_eq!(a.status, 200, "untraced fallback");
    });
    mock.stop();

    // Pass-through to a real server (under a path prefix).
    let real = TestServer::start(|r| Reply::json(format!(r#"{{"real":true,"uri":"{}"}}"#, r.uri)));
    let out = dir.path().join("outpass");
    let policy = format!("passthrough={}/base", real.url());
    let mock = MockProc::start(
        &tape,
        &dir.path().join("lpass"),
        &["--on-miss", &policy, "--out", s(&out)],
    );
    rt().block_on(async {
        let c = client();
        let a = call(&c, "GET", &mock.url("/missing?q=1"), &tp(known), "").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["real"], true);
        assert_eq!(a.json()["uri"], "/base/missing?q=1");
        let a = call(&c, "GET", &mock.url("/known"), &tp(known), "").await;
        assert_eq!(a.json()["known"], true, "hits are not passed through");
    });
    let summary = mock.stop();
    assert!(summary.contains("1 passed through"), "{summary}");
    let got = real.requests();
    assert_eq!(got.len(), 1, "only the miss reached the real server");
    assert_eq!(got[0].header("traceparent"), Some(traceparent(known, 9)));
    let rows = read_tape(&out);
    let pass = rows
        .iter()
        .find(|r| r.path == "/missing")
        .expect("pass-through call recorded");
    assert!(pass.has_flag(flags::MOCK_MISS));
    assert_eq!(pass.status, Some(200));
    assert!(
        pass.error
            .as_deref()
            .unwrap_or_default()
            .contains("passed through")
    );
}

/// Faults: a status at the configured rate (±5 % over 2,000 seeded calls), a delay, a real
/// TCP reset; counted on /metrics, in the summary and on the output tape.
#[test]
fn faults_are_injected_at_the_configured_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("deps");
    let paths: Vec<String> = (0..10).map(|i| format!("/a/{i}")).collect();
    let mut calls: Vec<Call<'_>> = paths
        .iter()
        .map(|p| Call::get(p, None, format!(r#"{{"path":"{p}"}}"#)))
        .collect();
    calls.push(Call::get("/slow", None, r#"{"slow":1}"#.into()));
    calls.push(Call::get("/boom", None, r#"{"boom":1}"#.into()));
    write_tape(&tape, &calls);
    let faults = dir.path().join("faults.toml");
    std::fs::write(&faults, "[[fault]]\nroute = \"GET /boom\"\nreset = true\n").expect("faults");
    let out = dir.path().join("out");
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let mock = MockProc::start(
        &tape,
        &dir.path().join("logs"),
        &[
            "--fault",
            "/a/*,status=503,rate=0.5",
            "--fault",
            "/slow,delay=300ms",
            "--faults",
            s(&faults),
            "--seed",
            "7",
            "--admin",
            &admin_addr,
            "--out",
            s(&out),
        ],
    );
    assert!(wait_for_port(admin_addr.parse().expect("addr"), STARTUP));
    const N: usize = 2_000;
    let (injected, delayed) = rt().block_on(async {
        let c = Arc::new(client());
        let mut tasks = Vec::new();
        for w in 0..8 {
            let c = c.clone();
            let urls: Vec<String> = (w..N)
                .step_by(8)
                .map(|i| mock.url(&paths[i % 10]))
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut faults = 0;
                for u in urls {
                    let a = call(&c, "GET", &u, &[], "").await;
                    match a.status {
                        503 => {
                            assert_eq!(a.json()["error"], "injected fault");
                            faults += 1;
                        }
                        200 => assert!(u.ends_with(a.json()["path"].as_str().expect("path"))),
                        s => panic!("unexpected status {s}"),
                    }
                }
                faults
            }));
        }
        let mut injected = 0;
        for t in tasks {
            injected += t.await.expect("task");
        }
        let t = Instant::now();
        let a = call(&c, "GET", &mock.url("/slow"), &[], "").await;
        assert_eq!((a.status, a.json()["slow"].clone()), (200, Value::from(1)));
        (injected, t.elapsed())
    });
    assert!(
        (950..=1_050).contains(&injected),
        "{injected} of {N} calls got the 50 % fault"
    );
    assert!(
        delayed >= Duration::from_millis(300),
        "delay fault: {delayed:?}"
    );

    // The reset fault resets the TCP connection (RST), not a polite close.
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{}", mock.port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    tcp.write_all(b"GET /boom HTTP/1.1\r\nHost: deps\r\n\r\n")
        .expect("send");
    let mut buf = [0u8; 256];
    let got = tcp.read(&mut buf);
    match got {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes: {:?}", &buf[..n]),
    }

    let (code, metrics) = curl(&[&format!("http://{admin_addr}/metrics")]);
    assert_eq!(code, 200);
    let faults_total = injected + 2;
    assert!(
        metrics.contains(&format!("result=\"fault\"}} {faults_total}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("result=\"hit\"}} {}", N - injected)),
        "{metrics}"
    );
    let summary = mock.stop();
    let th = |n: usize| tapedeck_common::format::thousands(n as u64);
    assert!(
        summary.contains(&format!("{} fault", th(faults_total))),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("rate 0.5): {} injected", th(injected))),
        "{summary}"
    );

    let rows = read_tape(&out);
    assert_eq!(rows.len(), N + 2, "every call, faults included");
    let flagged: Vec<&Exchange> = rows
        .iter()
        .filter(|r| r.has_flag(flags::MOCK_FAULT))
        .collect();
    assert_eq!(flagged.len(), faults_total);
    let reset = rows
        .iter()
        .find(|r| r.path == "/boom")
        .expect("reset call recorded");
    assert_eq!(reset.error_kind, Some(ErrorKind::Reset));
    assert_eq!(reset.status, None);
    assert!(reset.error.as_deref().unwrap_or_default().contains("reset"));
    let slow = rows
        .iter()
        .find(|r| r.path == "/slow")
        .expect("delayed call recorded");
    assert!(slow.origin_id.is_some() && slow.status == Some(200));
}

/// Record a dependency through `tapedeck record` (traceparent headers on every call), stop the
/// dependency, and the mock answers every call as the dependency did.
#[test]
fn mock_answers_while_the_real_dependency_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("pricing");
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = counter.clone();
    let dep = TestServer::start(move |r| {
        let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = String::from_utf8_lossy(&r.body).into_owned();
        Reply::json(format!(
            r#"{{"uri":"{}","call":{k},"tp":"{}","sent":{}}}"#,
            r.uri,
            r.header("traceparent").unwrap_or_default(),
            if body.is_empty() { "null".into() } else { body },
        ))
    });
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let logs = dir.path().join("rec");
    std::fs::create_dir_all(&logs).expect("logs");
    let mut rec = Proc::start(
        &[
            "record",
            "--listen",
            &listen,
            "--upstream",
            &dep.url(),
            "--tape",
            s(&tape),
            "--source",
            "pricing",
            "--grace-period",
            "1s",
        ],
        &logs,
    );
    assert!(wait_for_port(listen.parse().expect("addr"), STARTUP));
    let requests: Vec<(String, String, String, String)> = (0..20)
        .map(|i| {
            let trace = format!("{:032x}", 0xbeef_0000_u64 + i);
            let (method, path, body) = if i % 2 == 0 {
                ("GET", format!("/price/{}?cur=eur", 100 + i), String::new())
            } else {
                (
                    "POST",
                    "/quote".to_owned(),
                    format!(r#"{{"sku":{i},"qty":2}}"#),
                )
            };
            (trace, method.to_owned(), path, body)
        })
        .collect();
    let recorded: Vec<Answer> = rt().block_on(async {
        let c = client();
        let mut out = Vec::new();
        for (trace, method, path, body) in &requests {
            let h = vec![
                ("traceparent", traceparent(trace, 1)),
                ("content-type", "application/json".to_owned()),
            ];
            let url = format!("http://{listen}{path}");
            out.push(call(&c, method, &url, &h, body).await);
        }
        out
    });
    rec.signal("TERM");
    assert!(rec.wait_timeout(STOP).expect("recorder exits").success());
    drop(dep);
    assert!(
        TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", port).parse().expect("addr"),
            Duration::from_secs(1)
        )
        .is_err(),
        "the recorder is gone"
    );

    let mock = MockProc::start(&tape, &dir.path().join("logs"), &[]);
    rt().block_on(async {
        let c = client();
        for ((trace, method, path, body), want) in requests.iter().zip(&recorded) {
            let h = vec![
                ("traceparent", traceparent(trace, 2)),
                ("content-type", "application/json".to_owned()),
            ];
            let a = call(&c, method, &mock.url(path), &h, body).await;
            assert_eq!(a.status, want.status, "{method} {path}");
            assert_eq!(a.body, want.body, "{method} {path}: the recorded answer");
            assert_eq!(a.headers["content-type"], want.headers["content-type"]);
        }
    });
    let summary = mock.stop();
    assert!(summary.contains("20 hit, 0 miss"), "{summary}");
    assert!(
        summary.contains("mock pricing"),
        "named after the tape's source: {summary}"
    );
}

/// Bad input exits 2 and names what was wrong; nothing is served.
#[test]
fn bad_input_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("deps");
    write_tape(&tape, &[Call::get("/x", None, "{}".into())]);
    let t = s(&tape);
    let faults = dir.path().join("faults.toml");
    std::fs::write(&faults, "[[fault]]\nroute = \"/x\"\nstauts = 503\n").expect("write");
    let garbage = dir.path().join("garbage");
    let part = garbage.join("date=2026-01-01/hour=00");
    std::fs::create_dir_all(&part).expect("mkdir");
    std::fs::write(part.join("part-bad.parquet"), b"this is not parquet at all").expect("write");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let missing = dir.path().join("nope");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tape", t, "--fault", "/x,statsu=503"],
            "unknown key `statsu`",
        ),
        (vec!["--tape", t, "--fault", "/x"], "does nothing"),
        (vec!["--tape", t, "--faults", s(&faults)], "stauts"),
        (vec!["--tape", s(&garbage)], "part-bad.parquet"),
        (vec!["--tape", s(&missing)], "nope"),
        (vec!["--tape", t, "--listen", "localhost:80"], "--listen"),
        (vec!["--tape", t, "--listen", &taken_addr], "cannot listen"),
        (vec!["--tape", t, "--on-miss", "500"], "--on-miss"),
        (vec!["--tape", t, "--ignore", "timestamp"], "timestamp"),
        (vec!["--tape", t, "--out", t], "also a dependency tape"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["mock"];
        args.extend(extra.iter().copied());
        let out = run(&args, STOP);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    drop(taken);
}
