//! Beyond request and response: WebSocket upgrades, gRPC with trailers over h2c, trace ids of
//! every exchange, and the forward-proxy mode for plain-http dependencies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use tapedeck_storage::{ErrorKind, flags};

use super::{STARTUP, client, header_text, request, upstream_handler};
use crate::util::{
    Engine, Recorder, RecorderBuilder, Reply, TestServer, curl, free_port, rt, run, stderr,
};

fn websocket_upgrade_is_passed_through_and_only_the_handshake_recorded(engine: Engine) {
    // A raw upstream: answers the upgrade with 101, then echoes bytes.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let _ = s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
              sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::builder(&format!("http://{up_addr}"))
        .tape(&dir.path().join("tape"))
        .engine(engine)
        .start(dir.path());
    let mut c = TcpStream::connect(("127.0.0.1", rec.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).ok();
    c.write_all(
        b"GET /ws HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
    )
    .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        assert_eq!(c.read(&mut b).expect("read head"), 1, "closed early");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    c.write_all(b"ping-frame-bytes").expect("write frame");
    let mut echo = [0u8; 16];
    c.read_exact(&mut echo).expect("echo through the proxy");
    assert_eq!(&echo, b"ping-frame-bytes");
    drop(c);
    let _ = upstream.join();
    // The exchange is logged when the tunnel closes.
    let tape = rec.stop();
    assert_eq!(tape.len(), 1, "{tape:#?}");
    let ex = &tape[0];
    assert_eq!(ex.status, Some(101));
    assert!(ex.has_flag(flags::UPGRADE));
    assert_eq!(ex.path, "/ws");
    assert!(
        ex.resp_body.is_empty() && ex.req_body.is_empty(),
        "frames must not be recorded"
    );
}

/// A body of prepared frames (data then trailers).
struct Frames(std::collections::VecDeque<hyper::body::Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// A minimal gRPC-shaped h2c server: echoes the request message and ends with trailers.
struct GrpcServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    fn start() -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        acc = l.accept() => {
                            let Ok((s, _)) = acc else { continue };
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                                    let msg = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                                    let mut trailers = hyper::HeaderMap::new();
                                    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                                    trailers.insert("grpc-message", hyper::header::HeaderValue::from_static("ok"));
                                    let frames = Frames(
                                        vec![hyper::body::Frame::data(msg), hyper::body::Frame::trailers(trailers)].into(),
                                    );
                                    let resp = hyper::Response::builder()
                                        .header("content-type", "application/grpc")
                                        .body(frames)
                                        .expect("response");
                                    Ok::<_, std::convert::Infallible>(resp)
                                });
                                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        GrpcServer {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn grpc_over_h2c_keeps_body_and_trailers(engine: Engine) {
    let up = GrpcServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::builder(&format!("http://{}", up.addr))
        .tape(&dir.path().join("tape"))
        .args(&["--upstream-h2c"])
        .engine(engine)
        .start(dir.path());
    // A length-prefixed gRPC message: flag 0, length 5, payload.
    let msg = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    rt().block_on(async {
        let c = client(true);
        let req = hyper::Request::builder()
            .method("POST")
            .uri(rec.url("/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(msg.clone()))
            .expect("request");
        let resp = request(&c, req).await;
        assert_eq!(resp.status(), 200);
        let collected = resp.into_body().collect().await.expect("body");
        let trailers = collected
            .trailers()
            .cloned()
            .expect("trailers reach the client");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(collected.to_bytes(), msg);
    });
    let tape = rec.stop();
    assert_eq!(tape.len(), 1);
    let ex = &tape[0];
    assert!(ex.has_flag(flags::GRPC), "{ex:?}");
    assert_eq!(ex.http_version, "HTTP/2");
    assert_eq!(ex.req_body, msg);
    assert_eq!(ex.resp_body, msg);
    let names: Vec<&str> = ex.resp_headers.iter().map(|h| h.name.as_str()).collect();
    let marker = names
        .iter()
        .position(|n| *n == tapedeck_storage::TRAILER_MARKER)
        .expect("trailer marker");
    assert!(names[marker + 1..].contains(&"grpc-status"), "{names:?}");
    assert!(!names[..marker].contains(&"grpc-status"), "{names:?}");
}

/// Issue 15: every exchange stores the trace id of its W3C `traceparent` (HTTP/1.1 and h2c), none
/// when the header is missing or invalid; with `--trace-header` the named header's value instead.
fn issue_15_every_exchange_stores_its_trace_id(engine: Engine) {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("traceparent: 00-{TRACE}-00f067aa0ba902b7-01");
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::builder(&up.url())
        .tape(&dir.path().join("w3c"))
        .engine(engine)
        .log_name("w3c")
        .start(dir.path());
    let h2_tp = format!("traceparent: 00-{}-00f067aa0ba902b7-01", "a".repeat(32));
    for (path, args) in [
        ("/w3c", vec!["-H", tp.as_str()]),
        (
            "/h2c",
            vec!["--http2-prior-knowledge", "-H", h2_tp.as_str()],
        ),
        (
            "/invalid",
            vec![
                "-H",
                "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ],
        ),
        ("/none", vec!["-H", "x-request-id: req-1"]),
    ] {
        let url = rec.url(path);
        let mut a: Vec<&str> = args.clone();
        a.push(&url);
        assert_eq!(curl(&a).0, 200, "{path}");
    }
    let tape = rec.stop();
    let by_path: std::collections::BTreeMap<&str, Option<&str>> = tape
        .iter()
        .map(|e| (e.path.as_str(), e.trace_id.as_deref()))
        .collect();
    let aaa = "a".repeat(32);
    assert_eq!(
        by_path,
        [
            ("/w3c", Some(TRACE)),
            ("/h2c", Some(aaa.as_str())),
            ("/invalid", None),
            ("/none", None),
        ]
        .into_iter()
        .collect()
    );
    let h2 = tape
        .iter()
        .find(|e| e.path == "/h2c")
        .expect("h2c exchange");
    assert_eq!(h2.http_version, "HTTP/2");

    let rec = Recorder::builder(&up.url())
        .tape(&dir.path().join("header"))
        .args(&["--trace-header", "X-Request-Id"])
        .engine(engine)
        .log_name("header")
        .start(dir.path());
    let url = rec.url("/by-header");
    assert_eq!(
        curl(&["-H", "x-request-id: req-42", "-H", &tp, &url]).0,
        200
    );
    assert_eq!(curl(&["-H", &tp, &rec.url("/traceparent-only")]).0, 200);
    let tape = rec.stop();
    let ids: Vec<(&str, Option<&str>)> = tape
        .iter()
        .map(|e| (e.path.as_str(), e.trace_id.as_deref()))
        .collect();
    assert_eq!(
        ids,
        [("/by-header", Some("req-42")), ("/traceparent-only", None)]
    );

    // A name that is not a header name is refused, naming the key.
    let out = run(
        &[
            "record",
            "--upstream",
            &up.url(),
            "--no-record",
            "--trace-header",
            "bad header",
        ],
        STARTUP,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("trace-header"), "{}", stderr(&out));
}

/// The status line's code of a raw HTTP/1.1 exchange over a fresh connection.
fn raw_status(port: u16, request: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 15: `record --forward` is a forward proxy for plain-http dependencies: a client that
/// uses it as its proxy (`curl -x`, `HTTP_PROXY`) reaches each host it names, and every exchange
/// is recorded with that host's authority, its trace id, and the proxy's credentials redacted
/// (and never sent on). CONNECT, origin-form requests without an upstream, the proxy itself as
/// a target and a dead target get clear statuses; the pingora engine refuses the mode.
#[test]
fn issue_15_forward_proxy_records_plain_http_dependencies() {
    let a = TestServer::start(|_| Reply::json(r#"{"from":"a"}"#));
    let b = TestServer::start(|r| Reply::json(format!(r#"{{"from":"b","got":{}}}"#, r.body.len())));
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = RecorderBuilder::forward_only()
        .tape(&dir.path().join("tape"))
        .start(dir.path());
    let proxy = rec.url("");
    let tp = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a_url = format!("{}/prices/7?cur=eur", a.url());
    let (status, body) = curl(&[
        "-x",
        &proxy,
        "-U",
        "proxyuser:PROXYSECRET",
        "-H",
        tp,
        &a_url,
    ]);
    assert_eq!((status, body.as_str()), (200, r#"{"from":"a"}"#));
    // The proxy's credentials were for the proxy.
    assert_eq!(a.requests()[0].header("proxy-authorization"), None);
    assert_eq!(
        a.requests()[0].uri,
        "/prices/7?cur=eur",
        "origin-form to the target"
    );
    // HTTP_PROXY, the way an app is pointed at it.
    let out = Command::new("/usr/bin/curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-d",
            "{\"qty\":2}",
            &format!("{}/quote", b.url()),
        ])
        .env("http_proxy", &proxy)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"from":"b","got":9}"#,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What a forward proxy cannot do.
    let port = rec.port;
    assert_eq!(
        raw_status(
            port,
            &format!("CONNECT {0} HTTP/1.1\r\nhost: {0}\r\n\r\n", a.addr)
        ),
        501
    );
    assert_eq!(curl(&[&rec.url("/origin-form")]).0, 400);
    assert_eq!(curl(&["-x", &proxy, &rec.url("/loop")]).0, 508);
    let dead = format!("http://127.0.0.1:{}/down", free_port());
    assert_eq!(curl(&["-x", &proxy, &dead]).0, 502);
    let tape = rec.stop();
    let find = |path: &str| {
        tape.iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} not recorded: {tape:#?}"))
    };
    let ex = find("/prices/7");
    assert_eq!(ex.authority, a.addr.to_string());
    assert_eq!(ex.query.as_deref(), Some("cur=eur"));
    assert_eq!(ex.source, "forward");
    assert_eq!(ex.status, Some(200));
    assert_eq!(
        ex.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let auth = header_text(&ex.req_headers, "proxy-authorization").expect("kept, redacted");
    assert!(
        !auth.contains("PROXYSECRET") && !auth.contains("cHJveHl1c2Vy"),
        "{auth}"
    );
    let q = find("/quote");
    assert_eq!(
        (q.method.as_str(), q.authority.to_string(), &q.req_body[..]),
        ("POST", b.addr.to_string(), &b"{\"qty\":2}"[..])
    );
    assert_eq!(&q.resp_body[..], br#"{"from":"b","got":9}"#);
    let down = find("/down");
    assert_eq!(down.error_kind, Some(ErrorKind::ConnectRefused));
    assert_eq!(
        tape.len(),
        6,
        "CONNECT, origin-form and loop are recorded as errors too"
    );

    // With an upstream, origin-form requests go there and absolute ones to their host.
    let fallback = Recorder::builder(&b.url())
        .tape(&dir.path().join("fallback"))
        .args(&["--forward"])
        .log_name("fallback")
        .start(dir.path());
    assert_eq!(
        curl(&[&fallback.url("/direct")]).1,
        r#"{"from":"b","got":0}"#
    );
    assert_eq!(
        curl(&["-x", &fallback.url(""), &a.url()]).1,
        r#"{"from":"a"}"#
    );
    let tape = fallback.stop();
    assert_eq!(tape.len(), 2);

    // pingora has no forward-proxy mode: a clear start-up error.
    let out = run(
        &["record", "--forward", "--no-record", "--engine", "pingora"],
        STARTUP,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("forward") && stderr(&out).contains("pingora"),
        "{}",
        stderr(&out)
    );
}

on_both_engines!(
    websocket_upgrade_is_passed_through_and_only_the_handshake_recorded,
    grpc_over_h2c_keeps_body_and_trailers,
    issue_15_every_exchange_stores_its_trace_id,
);
