//! Kinds of target: down, stuck (timeouts), h2c, closing every connection, https with a
//! private CA or none, HTTP/2 by ALPN.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tapedeck_storage::{ErrorKind, now_us};

use super::write_gets;
use crate::util::{
    Replay, Reply, TestServer, TlsFiles, free_port, make_certs, read_in_order, stderr, stdout,
    wait_for_port,
};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_down_target_yields_error_exchanges_and_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    write_gets(&tape, "/x", 5, t0, 1);
    let up = TestServer::start(|_| Reply::json("{}"));
    let out = Replay::new(&tape)
        .out(&out_dir)
        .target("down", &format!("http://127.0.0.1:{}", free_port()))
        .target("up", &up.url())
        .args(["--timeout", "5s"])
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("connect-refused 5"), "{text}");
    let results = read_in_order(&out_dir);
    assert_eq!(results.len(), 10);
    for r in &results {
        match r.target.as_deref() {
            Some("down") => {
                assert_eq!(
                    r.error_kind,
                    Some(ErrorKind::ConnectRefused),
                    "{:?}",
                    r.error
                );
                assert_eq!(r.status, None);
            }
            Some("up") => assert_eq!(r.status, Some(200)),
            other => panic!("unexpected target {other:?}"),
        }
    }
    assert_eq!(up.requests().len(), 5);
}

#[test]
fn h2c_targets_and_timeouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    write_gets(&tape, "/h2", 4, t0, 1);
    let fast = TestServer::start(|_| Reply::json(r#"{"h2":true}"#));
    let stuck = TestServer::start(|_| {
        let mut r = Reply::json("{}");
        r.delay = Duration::from_secs(20);
        r
    });
    let started = Instant::now();
    let v = Replay::new(&tape)
        .out(&out_dir)
        .target("fast", &format!("h2c://{}", fast.addr))
        .target("stuck", &stuck.url())
        .args(["--timeout", "300ms"])
        .summary();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout bounds the run"
    );
    assert_eq!(v["targets"][0]["protocol"], "h2c");
    assert_eq!(v["targets"][0]["responses"], 4);
    assert_eq!(v["targets"][1]["errors_by_kind"]["timeout"], 4);
    let got = fast.requests();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|r| r.version == "HTTP/2.0"),
        "{:?}",
        got[0].version
    );
    for r in read_in_order(&out_dir) {
        match r.target.as_deref() {
            Some("fast") => {
                assert_eq!(r.http_version, "HTTP/2");
                assert_eq!(&r.resp_body[..], br#"{"h2":true}"#);
            }
            _ => {
                assert_eq!(r.error_kind, Some(ErrorKind::Timeout));
                let total = r.ttfb_us.or(r.total_us);
                assert!(total.is_none(), "no response, no latency: {total:?}");
            }
        }
    }
}

/// A target that closes every connection after its response (`Connection: close`) costs a new
/// connection per request, never an error: a request that finds its connection closed is sent
/// on another one, in closed and open loop.
#[test]
fn connection_close_targets_are_reconnected_without_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let n = 200usize;
    write_gets(&tape, "/close", n as i64, t0, 10);
    let server = TestServer::start(|_| {
        let mut r = Reply::json("{}");
        r.headers.push(("connection".into(), "close".into()));
        r
    });
    let replay = Replay::new(&tape).target("t", &server.url());
    for (i, pacing) in [
        &["--max", "--concurrency", "4"][..],
        &["--rate", "1000", "--concurrency", "16"][..],
    ]
    .iter()
    .enumerate()
    {
        let out_dir = dir.path().join(format!("run-{i}"));
        let v = replay.clone().out(&out_dir).args(*pacing).summary();
        assert_eq!(v["targets"][0]["errors"], 0, "{pacing:?}: {v:#}");
        assert_eq!(v["targets"][0]["status_classes"]["2xx"], n as u64);
    }
    assert_eq!(server.requests().len(), 2 * n);
    assert!(
        server.connection_count() >= 2 * n,
        "every request had its own connection: {}",
        server.connection_count()
    );
}

/// `openssl s_server` on a run-time port, killed by PID on drop.
struct OpensslServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tls_server(dir: &Path) -> OpensslServer {
    let port = free_port();
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-alpn", "http/1.1", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "leaf.pem", "-key", "leaf.key"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let server = OpensslServer { child, port };
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        wait_for_port(addr, Duration::from_secs(10)),
        "s_server did not listen"
    );
    server
}

#[test]
fn https_targets_verify_certificates_and_classify_tls_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    write_gets(&tape, "/tls", 3, t0, 1);
    let server = start_tls_server(dir.path());
    let target = format!("https://127.0.0.1:{}", server.port);
    let ca = dir.path().join("ca.pem");
    let replay = |out: &str, extra: &[&str]| {
        let replay = Replay::new(&tape)
            .target("secure", &target)
            .max()
            .args(["--concurrency", "1", "--timeout", "10s"])
            .out(&dir.path().join(out))
            .args(extra);
        (replay.summary(), replay.results())
    };

    // Trusted through --ca-cert.
    let (v, results) = replay("trusted", &["--ca-cert", s(&ca)]);
    assert_eq!(v["targets"][0]["protocol"], "https");
    assert_eq!(v["targets"][0]["status_classes"]["2xx"], 3, "{v:#}");
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r.scheme, "https");
        assert_eq!(r.status, Some(200), "{:?}", r.error);
        assert!(!r.resp_body.is_empty());
    }

    // Unknown CA: every exchange is a TLS error; the run still completes.
    let (v, results) = replay("untrusted", &[]);
    assert_eq!(v["targets"][0]["errors_by_kind"]["tls"], 3, "{v:#}");
    assert!(results.iter().all(|r| r.error_kind == Some(ErrorKind::Tls)));

    // --insecure accepts it.
    let (v, _) = replay("insecure", &["--insecure"]);
    assert_eq!(v["targets"][0]["status_classes"]["2xx"], 3, "{v:#}");
}

#[test]
fn https_targets_negotiate_http2_by_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    write_gets(&tape, "/alpn", 4, t0, 1);
    // rustls + hyper, HTTP/1.1 and HTTP/2 offered by ALPN.
    let server = TestServer::start_tls(&TlsFiles::leaf(dir.path()), |_| {
        Reply::json("{\"tls\":true}")
    });
    let replay = Replay::new(&tape)
        .target(
            "secure",
            &format!("https://127.0.0.1:{}", server.addr.port()),
        )
        .flag("--ca-cert", dir.path().join("ca.pem"))
        .out(&dir.path().join("run"));
    let v = replay.summary();
    assert_eq!(v["targets"][0]["status_classes"]["2xx"], 4, "{v:#}");
    let versions: Vec<String> = server.requests().into_iter().map(|r| r.version).collect();
    assert_eq!(versions, ["HTTP/2.0"; 4], "ALPN picked h2");
    for r in replay.results() {
        assert_eq!(r.http_version, "HTTP/2");
        assert_eq!(r.scheme, "https");
        assert_eq!(&r.resp_body[..], b"{\"tls\":true}");
    }
}
