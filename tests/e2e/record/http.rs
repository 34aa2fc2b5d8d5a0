//! Proxying HTTP/1.1 and h2c: what the client gets and what the tape holds, for plain, chunked,
//! large and bodiless exchanges, a down or slow upstream, idle and stalled clients, and a stop
//! after a known number of requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use tapedeck_storage::{ErrorKind, Exchange};

use super::{STOP, client, header_text, recorder, send, upstream_handler};
use crate::util::{Engine, Recorder, Reply, TestServer, curl, free_port, rt, run, stderr};

fn records_get_post_chunked_and_h2c_exchanges(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine).start(dir.path());

    // curl: a GET with a query, and a POST with a body.
    let (status, body) = curl(&[&rec.url("/api/users/17?verbose=1"), "-H", "x-req: a"]);
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"path\":\"/api/users/17\"}")
    );
    let (status, body) = curl(&[
        &rec.url("/echo"),
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        "{\"name\":\"ada\"}",
    ]);
    assert_eq!((status, body.as_str()), (201, "{\"name\":\"ada\"}"));

    // hyper: three chunked responses on one keep-alive connection, then one h2c request.
    let rt = rt();
    rt.block_on(async {
        let c = client(false);
        for _ in 0..3 {
            let (status, version, body) = send(&c, "GET", &rec.url("/chunked"), Bytes::new()).await;
            assert_eq!(status, 200);
            assert_eq!(version, hyper::Version::HTTP_11);
            assert_eq!(body, Bytes::from_static(b"one,two,three"));
        }
        let h2 = client(true);
        let (status, version, body) = send(&h2, "GET", &rec.url("/h2"), Bytes::new()).await;
        assert_eq!((status, version), (200, hyper::Version::HTTP_2));
        assert_eq!(body, Bytes::from_static(b"{\"path\":\"/h2\"}"));
    });
    let (_, metrics) = rec.admin_get("/metrics");
    assert!(metrics.contains("tapedeck_requests_total 6\n"), "{metrics}");
    let (code, ready) = rec.admin_get("/readyz");
    assert_eq!(code, 200, "{ready}");

    let port = rec.port;
    let tape = rec.stop();
    assert_eq!(tape.len(), 6, "{tape:#?}");
    assert_eq!(up.requests().len(), 6);

    let get = &tape[0];
    assert_eq!(get.method, "GET");
    assert_eq!(get.path, "/api/users/17");
    assert_eq!(get.query.as_deref(), Some("verbose=1"));
    assert_eq!(get.http_version, "HTTP/1.1");
    assert_eq!(get.status, Some(200));
    assert_eq!(get.scheme, "http");
    assert_eq!(get.authority, format!("127.0.0.1:{port}"));
    assert_eq!(header_text(&get.req_headers, "x-req").as_deref(), Some("a"));
    assert_eq!(
        header_text(&get.resp_headers, "x-upstream").as_deref(),
        Some("yes")
    );
    assert_eq!(
        get.resp_body,
        Bytes::from_static(b"{\"path\":\"/api/users/17\"}")
    );
    assert_eq!(get.resp_body_size, get.resp_body.len() as u64);
    assert!(
        get.client_addr
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    assert!(get.error_kind.is_none() && get.flags == 0);
    for ex in &tape {
        let (t, d, total) = (
            ex.ttfb_us.expect("ttfb"),
            ex.duration_us.expect("duration"),
            ex.total_us.expect("total"),
        );
        assert!(
            0 <= t && t <= d && d <= total,
            "timings out of order: {t} {d} {total}"
        );
        assert!(ex.started_at_us > 0);
    }

    let post = &tape[1];
    assert_eq!((post.method.as_str(), post.status), ("POST", Some(201)));
    assert_eq!(post.req_body, Bytes::from_static(b"{\"name\":\"ada\"}"));
    assert_eq!(post.req_body_size, 14);
    assert_eq!(post.resp_body, post.req_body);

    for chunked in &tape[2..5] {
        assert_eq!(chunked.path, "/chunked");
        assert_eq!(chunked.resp_body, Bytes::from_static(b"one,two,three"));
        assert_eq!(chunked.resp_body_size, 13);
        assert!(!chunked.resp_body_truncated);
        // Captured from the upstream side: its framing header, not pingora's.
        assert_eq!(
            header_text(&chunked.resp_headers, "transfer-encoding").as_deref(),
            Some("chunked")
        );
    }
    let h2 = &tape[5];
    assert_eq!(
        (h2.path.as_str(), h2.http_version.as_str()),
        ("/h2", "HTTP/2")
    );
    assert_eq!(h2.resp_body, Bytes::from_static(b"{\"path\":\"/h2\"}"));
}

fn large_bodies_are_forwarded_whole_and_stored_truncated(engine: Engine) {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let big: Bytes = (0..TEN_MB)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let reply_body = big.clone();
    let up = TestServer::start(move |_| Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        chunks: reply_body
            .chunks(256 * 1024)
            .map(Bytes::copy_from_slice)
            .collect(),
        delay: Duration::ZERO,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        .args(&["--max-body", "64KiB"])
        .start(dir.path());
    let upload: Bytes = big.slice(..3 * 1024 * 1024);
    rt().block_on(async {
        let c = client(false);
        let (status, _, body) = send(&c, "POST", &rec.url("/blob"), upload.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), TEN_MB, "client must receive the whole body");
        assert!(body == big, "body corrupted in transit");
    });
    // curl sends `Expect: 100-continue` for a body this large.
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &big[..2 * 1024 * 1024]).expect("write");
    let (status, _) = curl(&[
        &rec.url("/curl-upload"),
        "-o",
        "/dev/null",
        "--data-binary",
        &format!("@{}", file.display()),
    ]);
    assert_eq!(status, 200);
    let (_, metrics) = rec.admin_get("/metrics");
    assert!(
        metrics.contains("tapedeck_truncated_total 2\n"),
        "{metrics}"
    );
    let tape = rec.stop();
    let got = up.requests();
    assert_eq!(
        got[0].body.len(),
        upload.len(),
        "upstream got the whole upload"
    );
    assert_eq!(
        got[1].body.len(),
        2 * 1024 * 1024,
        "upstream got the whole curl upload"
    );
    assert_eq!(tape.len(), 2);
    let curl_ex = &tape[1];
    assert_eq!(curl_ex.req_body_size, 2 * 1024 * 1024);
    assert!(
        curl_ex.req_body_truncated && curl_ex.error_kind.is_none(),
        "{:?}",
        curl_ex.error
    );
    let ex = &tape[0];
    assert_eq!(ex.resp_body_size, TEN_MB as u64);
    assert!(ex.resp_body_truncated);
    assert_eq!(ex.resp_body, big.slice(..64 * 1024));
    assert_eq!(ex.req_body_size, upload.len() as u64);
    assert!(ex.req_body_truncated);
    assert_eq!(ex.req_body, upload.slice(..64 * 1024));
}

fn upstream_down_gives_502_and_an_error_exchange(engine: Engine) {
    let dead = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Recorder::builder(&format!("http://127.0.0.1:{dead}"))
        .tape(&dir.path().join("tape"))
        .engine(engine)
        .start(dir.path());
    let (status, _) = curl(&[&rec.url("/down")]);
    assert_eq!(status, 502);
    // The proxy stays up and answers the next request the same way.
    let (status, _) = curl(&[&rec.url("/down-again")]);
    assert_eq!(status, 502);
    let (_, metrics) = rec.admin_get("/metrics");
    assert!(
        metrics.contains("tapedeck_upstream_errors_total{kind=\"connect-refused\"} 2\n"),
        "{metrics}"
    );
    let tape = rec.stop();
    assert_eq!(tape.len(), 2);
    for ex in &tape {
        assert_eq!(ex.error_kind, Some(ErrorKind::ConnectRefused), "{ex:?}");
        assert_eq!(ex.status, None);
        assert!(
            ex.error.as_deref().is_some_and(|e| e.contains("502")),
            "{ex:?}"
        );
    }
}

fn slow_handler(r: &crate::util::Received) -> Reply {
    let mut reply = upstream_handler(r);
    if r.uri.starts_with("/slow") {
        reply.delay = Duration::from_secs(10);
    }
    reply
}

fn slow_upstream_gives_504_and_a_timeout_exchange(engine: Engine) {
    let up = TestServer::start(slow_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        // Far below the slow answer (10 s), far above any scheduling delay of a loaded machine.
        .args(&["--upstream-timeout", "2s"])
        .start(dir.path());
    let (status, _) = curl(&[&rec.url("/slow")]);
    assert_eq!(status, 504);
    let (status, _) = curl(&[&rec.url("/fast")]);
    assert_eq!(status, 200, "the proxy serves the next request normally");
    let tape = rec.stop();
    let slow: Vec<&Exchange> = tape.iter().filter(|e| e.path == "/slow").collect();
    assert!(!slow.is_empty());
    for ex in slow {
        assert_eq!(ex.error_kind, Some(ErrorKind::Timeout), "{ex:?}");
        assert_eq!(ex.status, None);
    }
    let fast = tape
        .iter()
        .find(|e| e.path == "/fast")
        .expect("fast recorded");
    assert_eq!(fast.status, Some(200));
}

/// Reads from `s` until EOF or error, bounded by `limit`; true when the peer closed.
fn closed_by_peer(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let deadline = std::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn idle_and_stalled_clients_are_cut_off(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        .args(&["--idle-timeout", "1s", "--header-timeout", "1s"])
        .start(dir.path());
    // An idle keep-alive connection after one request.
    let mut idle = TcpStream::connect(("127.0.0.1", rec.port)).expect("connect");
    idle.write_all(b"GET /idle HTTP/1.1\r\nhost: t\r\n\r\n")
        .expect("write");
    assert!(
        closed_by_peer(&mut idle, Duration::from_secs(20)),
        "idle keep-alive connection never closed"
    );
    // A client that announces a body and stalls half-way.
    let mut stalled = TcpStream::connect(("127.0.0.1", rec.port)).expect("connect");
    stalled
        .write_all(b"POST /stall HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nonly-ten-b")
        .expect("write");
    assert!(
        closed_by_peer(&mut stalled, Duration::from_secs(20)),
        "stalled upload never cut off"
    );
    // The proxy is healthy.
    assert_eq!(curl(&[&rec.url("/after")]).0, 200);
    let tape = rec.stop();
    assert!(
        tape.iter()
            .any(|e| e.path == "/idle" && e.status == Some(200))
    );
    assert!(
        tape.iter()
            .any(|e| e.path == "/after" && e.status == Some(200))
    );
    if let Some(st) = tape.iter().find(|e| e.path == "/stall") {
        assert!(st.error_kind.is_some(), "{st:?}");
        assert_eq!(st.req_body_size, 10);
    }
}

fn bodiless_responses_have_complete_timings(engine: Engine) {
    let up = TestServer::start(|r| {
        if r.uri == "/empty" {
            Reply {
                status: 204,
                headers: vec![],
                chunks: vec![Bytes::new()],
                delay: Duration::ZERO,
            }
        } else {
            Reply::json("{\"a\":1}")
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine).start(dir.path());
    assert_eq!(curl(&["-I", &rec.url("/head")]).0, 200);
    assert_eq!(curl(&[&rec.url("/empty")]).0, 204);
    let tape = rec.stop();
    assert_eq!(tape.len(), 2);
    for ex in &tape {
        assert!(
            ex.ttfb_us.is_some() && ex.duration_us.is_some() && ex.total_us.is_some(),
            "{ex:?}"
        );
        assert!(ex.resp_body.is_empty());
    }
    assert_eq!(tape[0].method, "HEAD");
    assert_eq!(tape[1].status, Some(204));
}

fn sigterm_after_n_requests_leaves_exactly_n_exchanges(engine: Engine) {
    const N: usize = 120;
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine).start(dir.path());
    let ok = rt().block_on(async {
        let c = client(false);
        let mut tasks = Vec::new();
        for t in 0..4 {
            let c = c.clone();
            let url = rec.url("/");
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..N / 4 {
                    let (s, _, _) = send(&c, "GET", &format!("{url}n/{t}/{i}"), Bytes::new()).await;
                    if s == 200 {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.expect("task");
        }
        ok
    });
    assert_eq!(ok, N);
    let tape = rec.stop();
    assert_eq!(tape.len(), N);
    let mut paths: Vec<&str> = tape.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), N, "every exchange recorded once");
    // The tape is sealed: no spool segment is left behind.
    let out = run(
        &[
            "inspect",
            "--json",
            dir.path().join("tape").to_str().expect("utf-8"),
        ],
        STOP,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["exchanges"], N as u64);
    assert_eq!(v["files"]["spool"], 0, "{v}");
}

/// Sends one request on a connection of its own that asks to be closed (`Connection: close`)
/// and reads the answer to the end; the status line.
fn on_own_connection(port: u16, path: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    c.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes())
        .expect("write");
    let mut answer = String::new();
    c.read_to_string(&mut answer)
        .expect("the proxy closes after the answer");
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Upstream connections are shared by client connections, one request at a time: clients that
/// open a connection per request, and keep-alive clients that all stay open. One worker thread
/// and one request at a time, so the upstream sees one connection.
fn clients_share_upstream_connections(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        .threads(1)
        .start(dir.path());
    const CLIENTS: usize = 12;
    for i in 0..CLIENTS {
        assert_eq!(
            on_own_connection(rec.port, &format!("/c/{i}")),
            "HTTP/1.1 200 OK"
        );
    }
    assert_eq!(
        up.connection_count(),
        1,
        "{CLIENTS} client connections, one after the other"
    );
    // Keep-alive clients, all open at once, one request each in turn.
    let mut open = Vec::new();
    for i in 0..CLIENTS {
        let mut c = TcpStream::connect(("127.0.0.1", rec.port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        c.write_all(format!("GET /k/{i} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
            .expect("write");
        assert_eq!(read_answer(&mut c), 200);
        open.push(c);
    }
    let tape = rec.stop();
    drop(open);
    assert_eq!(tape.len(), 2 * CLIENTS, "{tape:#?}");
    assert!(tape.iter().all(|e| e.status == Some(200)), "{tape:#?}");
    let opened = up.connection_count();
    match engine {
        Engine::Hyper => assert_eq!(
            opened, 1,
            "{CLIENTS} keep-alive clients, one request at a time"
        ),
        // pingora's pool is its own: it shares too, without promising one connection.
        Engine::Pingora => assert!(opened <= 2, "{opened} upstream connections"),
    }
}

/// Reads one HTTP/1.1 answer with a `content-length` body from a keep-alive connection; its
/// status.
fn read_answer(c: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert!(buf.len() < 64 * 1024, "answer head too long");
        c.read_exact(&mut byte).expect("answer head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).expect("answer body");
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"))
}

/// `upstream-keepalive` bounds the parked connections (0: none, every client connection opens
/// its own) and `idle-timeout` how long one is kept.
#[test]
fn parked_upstream_connections_follow_keepalive_and_idle_timeout() {
    // A hyper recorder with one worker thread and `args`, its upstream and its directory.
    let start = |args: &[&str]| {
        let up = TestServer::start(upstream_handler);
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = recorder(&up.url(), dir.path(), Engine::Hyper)
            .threads(1)
            .args(args)
            .start(dir.path());
        (up, dir, rec)
    };

    let (up, _dir, rec) = start(&["--upstream-keepalive", "0"]);
    for i in 0..3 {
        assert_eq!(
            on_own_connection(rec.port, &format!("/none/{i}")),
            "HTTP/1.1 200 OK"
        );
    }
    assert_eq!(rec.stop().len(), 3);
    assert_eq!(
        up.connection_count(),
        3,
        "upstream-keepalive 0 parks nothing"
    );

    // Two seconds: far more than the moment between two requests on a loaded machine.
    let (up, _dir, rec) = start(&["--idle-timeout", "2s"]);
    assert_eq!(on_own_connection(rec.port, "/first"), "HTTP/1.1 200 OK");
    assert_eq!(on_own_connection(rec.port, "/reused"), "HTTP/1.1 200 OK");
    assert_eq!(up.connection_count(), 1, "parked and taken");
    // Parked longer than idle-timeout: not taken.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(on_own_connection(rec.port, "/later"), "HTTP/1.1 200 OK");
    assert_eq!(rec.stop().len(), 3);
    assert_eq!(
        up.connection_count(),
        2,
        "a connection parked past idle-timeout is not reused"
    );
}

on_both_engines!(
    clients_share_upstream_connections,
    records_get_post_chunked_and_h2c_exchanges,
    large_bodies_are_forwarded_whole_and_stored_truncated,
    upstream_down_gives_502_and_an_error_exchange,
    slow_upstream_gives_504_and_a_timeout_exchange,
    idle_and_stalled_clients_are_cut_off,
    bodiless_responses_have_complete_timings,
    sigterm_after_n_requests_leaves_exactly_n_exchanges,
);
