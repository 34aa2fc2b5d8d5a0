//! What the hyper data plane adds (issue 13): the `engine` setting, `/readyz` that follows the
//! listeners, headers forwarded unchanged, TLS session resumption. Tests that hold for both
//! engines run on both; the ones about behaviour only the hyper engine has say so.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;

use crate::util::{
    Engine, Recorder, Reply, TestServer, curl, free_port, make_certs, rt, run, stderr, wait_until,
};

const T: Duration = Duration::from_secs(60);

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// An unknown engine, as a flag or as a config key, is a usage error naming the key.
#[test]
fn unknown_engines_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let out = run(
        &[
            "record",
            "--upstream",
            "http://127.0.0.1:9",
            "--tape",
            p(&tape),
            "--admin",
            "off",
            "--engine",
            "nginx",
        ],
        T,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`engine`") && err.contains("nginx") && err.contains("hyper, pingora"),
        "{err}"
    );
    let conf = dir.path().join("bad.toml");
    for (value, words) in [
        ("\"envoy\"", &["`engine`", "envoy"][..]),
        ("3", &["engine", "string"][..]),
    ] {
        std::fs::write(
            &conf,
            format!(
                "upstream = \"http://127.0.0.1:9\"\ntape = \"{}\"\nengine = {value}\n",
                p(&tape)
            ),
        )
        .expect("write config");
        let out = run(&["record", "--config", p(&conf), "--admin", "off"], T);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        for w in words {
            assert!(err.contains(w), "{value}: stderr lacks {w:?}: {err}");
        }
    }
    assert!(!tape.exists(), "a refused configuration makes no tape");
}

/// `/readyz` answers 503 once shutdown begins, while an exchange in progress finishes (and the
/// admin listener keeps answering); the exchange is recorded and the exit is clean.
fn readyz_turns_off_when_shutdown_begins(engine: Engine) {
    let up = TestServer::start(|r| {
        let mut reply = Reply::json(format!("{{\"path\":\"{}\"}}", r.uri));
        if r.uri == "/slow" {
            reply.delay = Duration::from_secs(5);
        }
        reply
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rec = Recorder::builder(&up.url())
        .tape(&dir.path().join("tape"))
        .grace("20s")
        .engine(engine)
        .start(dir.path());
    assert!(
        wait_until(T, || rec.admin_get("/readyz").0 == 200),
        "never ready"
    );
    let url = rec.url("/slow");
    let slow = std::thread::spawn(move || curl(&[&url]));
    assert!(
        wait_until(T, || !up.requests().is_empty()),
        "the slow request never reached the upstream"
    );
    rec.proc.signal("TERM");
    let mut seen = (0, String::new());
    let off = wait_until(Duration::from_secs(20), || {
        seen = rec.admin_get("/readyz");
        seen.0 == 503
    });
    assert!(off, "/readyz stayed {seen:?} after SIGTERM");
    assert!(seen.1.contains("shutting down"), "{seen:?}");
    assert!(
        !slow.is_finished(),
        "the slow exchange ended before /readyz could be seen off: raise its delay"
    );
    let (status, body) = slow.join().expect("client");
    assert_eq!((status, body.as_str()), (200, "{\"path\":\"/slow\"}"));
    let exit = rec.proc.wait_timeout(T).expect("exit after SIGTERM");
    assert!(exit.success(), "{exit}");
    let tape = crate::util::read_tape(&dir.path().join("tape"));
    assert_eq!(tape.len(), 1);
    assert_eq!(
        (tape[0].path.as_str(), tape[0].status),
        ("/slow", Some(200))
    );
}

/// From the first moment the admin listener answers, `/readyz` says ready only when the proxy
/// listener accepts connections. (hyper engine: pingora binds inside its own `run`, after it
/// reports ready.)
#[test]
fn readyz_is_ready_only_once_the_listener_accepts() {
    let up = TestServer::start(|_| Reply::json("{}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let admin = free_port();
    let (listen, admin_addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin}"));
    let mut proc = crate::util::Proc::start(
        &[
            "record",
            "--listen",
            &listen,
            "--upstream",
            &up.url(),
            "--tape",
            p(&dir.path().join("tape")),
            "--admin",
            &admin_addr,
            "--threads",
            "2",
            "--grace-period",
            "1s",
        ],
        dir.path(),
    );
    let deadline = Instant::now() + T;
    let mut answers = 0;
    loop {
        assert!(Instant::now() < deadline, "the recorder never became ready");
        let Ok(mut c) = TcpStream::connect(&admin_addr) else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        c.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let _ = c.write_all(b"GET /readyz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp);
        answers += 1;
        if resp.starts_with(b"HTTP/1.1 200") {
            assert!(
                TcpStream::connect(&listen).is_ok(),
                "/readyz said ready while the proxy listener refused connections"
            );
            break;
        }
        assert!(
            resp.starts_with(b"HTTP/1.1 503"),
            "{}",
            String::from_utf8_lossy(&resp)
        );
    }
    eprintln!("readyz answered {answers} times before ready");
    proc.signal("TERM");
    assert!(proc.wait_timeout(T).expect("exit").success());
}

/// A raw upstream that answers every request with exactly these bytes, and keeps what it
/// received.
fn raw_upstream(response: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
            if s.read(&mut b).unwrap_or(0) == 0 {
                break;
            }
            head.push(b[0]);
        }
        let _ = s.write_all(response);
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(200));
        head
    });
    (format!("http://{addr}"), t)
}

/// The header names of an HTTP/1.1 head, lower-cased, in order.
fn header_names(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, _)| n.trim().to_ascii_lowercase())
        })
        .collect()
}

/// Headers are forwarded unchanged both ways: the client gets exactly the upstream's response
/// headers (no `date`, `server` or `connection` added), the upstream exactly the client's
/// (nothing added; `Host` kept). hyper engine only: pingora replaces `Date` and may add
/// `Connection`.
#[test]
fn headers_are_forwarded_unchanged() {
    let (up, upstream) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nx-one: 1\r\ncontent-type: text/plain\r\nx-two: a, b\r\n\
          content-length: 2\r\n\r\nok",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::builder(&up)
        .tape(&dir.path().join("tape"))
        .start(dir.path());
    let mut c = TcpStream::connect(("127.0.0.1", rec.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
    c.write_all(b"GET /h?x=1 HTTP/1.1\r\nHost: svc.example\r\nx-req: r\r\naccept: */*\r\n\r\n")
        .expect("write");
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !resp.ends_with(b"\r\n\r\nok") {
        let n = c.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&resp));
        resp.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        header_names(&resp),
        ["x-one", "content-type", "x-two", "content-length"],
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let received = upstream.join().expect("upstream");
    let text = String::from_utf8_lossy(&received).into_owned();
    assert!(text.starts_with("GET /h?x=1 HTTP/1.1\r\n"), "{text}");
    assert_eq!(
        header_names(&received),
        ["host", "x-req", "accept"],
        "{text}"
    );
    assert!(text.contains("host: svc.example\r\n"), "{text}");
    drop(c);
    let tape = rec.stop();
    assert_eq!(tape.len(), 1);
    let names: Vec<&str> = tape[0]
        .resp_headers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["x-one", "content-type", "x-two", "content-length"]);
}

/// A gRPC answer made of trailers only (one HEADERS frame ending the stream) reaches an HTTP/2
/// client as it left the upstream: no `date` added. hyper engine only (pingora adds `date`).
#[test]
fn a_trailers_only_grpc_answer_gets_no_date() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    let server_rt = rt();
    server_rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(l).expect("listener");
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let resp = hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "5")
                        .header("grpc-message", "not found")
                        .body(http_body_util::Empty::<Bytes>::new())
                        .expect("response");
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .auto_date_header(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::builder(&format!("http://{addr}"))
        .tape(&dir.path().join("tape"))
        .args(&["--upstream-h2c"])
        .start(dir.path());
    let (names, status) = rt().block_on(async {
        let c = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        let req = hyper::Request::post(rec.url("/pkg.Svc/Get"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .expect("request");
        let resp = tokio::time::timeout(T, c.request(req))
            .await
            .expect("in time")
            .expect("response");
        let names: Vec<String> = resp.headers().keys().map(|k| k.to_string()).collect();
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        (names, status)
    });
    assert_eq!(status, 200);
    assert_eq!(names, ["content-type", "grpc-status", "grpc-message"]);
    let tape = rec.stop();
    assert_eq!(tape.len(), 1);
    assert!(
        tape[0]
            .resp_headers
            .iter()
            .any(|h| h.name == "grpc-status" && &h.value[..] == b"5"),
        "{:?}",
        tape[0].resp_headers
    );
    drop(server_rt);
}

/// A client that connects twice to the TLS listener resumes its session the second time (one
/// shared rustls `ServerConfig` with tickets and a session cache).
fn tls_sessions_resume(engine: Engine) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let up = TestServer::start(|_| Reply::json("{\"ok\":true}"));
    let rec = Recorder::builder(&up.url())
        .tape(&dir.path().join("tape"))
        .args(&[
            "--tls-cert",
            p(&dir.path().join("leaf.pem")),
            "--tls-key",
            p(&dir.path().join("leaf.key")),
        ])
        .engine(engine)
        .start(dir.path());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.path().join("ca.pem")).expect("ca file") {
        roots.add(c.expect("ca")).expect("usable ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let mut kinds = Vec::new();
    for i in 0..2 {
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
        let tcp = TcpStream::connect(("127.0.0.1", rec.port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(
            format!("GET /r/{i} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("request");
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp);
        assert!(
            resp.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&resp)
        );
        kinds.push(tls.conn.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
    let tape = rec.stop();
    assert_eq!(tape.len(), 2);
    assert!(tape.iter().all(|e| e.scheme == "https"));
}

on_both_engines!(readyz_turns_off_when_shutdown_begins, tls_sessions_resume);
