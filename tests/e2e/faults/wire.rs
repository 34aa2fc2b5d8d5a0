//! The misbehaving side of the wire: [`BadUpstream`], a raw TCP upstream that breaks HTTP on
//! purpose, and raw HTTP/1.1 client helpers that read what the proxy sends back, bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A raw TCP upstream that misbehaves on purpose, chosen by the request path:
/// `/reset` sends headers and half the body then closes, `/rst` does the same with a TCP RST,
/// `/garbage` answers with bytes that are not HTTP, `/stall` never answers, `/stall-body` sends
/// headers then stalls, `/bad-chunk` sends a chunked body with a chunk size that is not hex,
/// `/discard` reads and drops the request body, `/bogus-gzip`, `/bad-utf8` and
/// `/weird-encoding` answer odd bodies; anything else gets a proper `200`.
pub(super) struct BadUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BadUpstream {
    pub(super) fn start() -> BadUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || bad_upstream_conn(conn, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BadUpstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BadUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head; returns (path, head text, body bytes read past the head).
fn read_head(conn: &mut TcpStream) -> Option<(String, String, usize)> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut byte).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    Some((path, head, buf.len() - end))
}

fn content_length(head: &str) -> u64 {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn respond(conn: &mut TcpStream, headers: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\n{headers}content-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).is_ok() && conn.write_all(body).is_ok()
}

fn bad_upstream_conn(mut conn: TcpStream, stop: &AtomicBool) {
    // Keep-alive: serve requests on this connection until it closes.
    while let Some((path, head, already)) = read_head(&mut conn) {
        let path = path.split('?').next().unwrap_or("/").to_owned();
        match path.as_str() {
            "/reset" | "/rst" => {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n",
                );
                let _ = conn.write_all(&[b'x'; 400]);
                let _ = conn.flush();
                std::thread::sleep(Duration::from_millis(50));
                // `/rst` comes as a POST whose body is left unread: closing a socket with unread
                // data makes the kernel send a RST instead of a FIN.
                return;
            }
            "/bad-chunk" => {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-hex\r\n",
                );
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
            "/garbage" => {
                let _ = conn.write_all(b"\x00\x01\x02 this is not HTTP at all \xff\xfe\r\n\r\n");
                return;
            }
            "/stall" | "/stall-body" => {
                if path == "/stall-body" {
                    let _ =
                        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst-part");
                }
                let until = Instant::now() + Duration::from_secs(10);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            "/discard" => {
                // Reads and throws away the whole request body; answers with its size.
                let want = content_length(&head);
                let mut got = already as u64;
                let mut buf = vec![0u8; 1 << 16];
                while got < want {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n as u64,
                    }
                }
                if !respond(&mut conn, "", format!("ok {got}").as_bytes()) {
                    return;
                }
            }
            "/bogus-gzip" => {
                let h = "content-type: application/json\r\ncontent-encoding: gzip\r\n";
                if !respond(&mut conn, h, b"{\"this is\": \"not gzip\"}") {
                    return;
                }
            }
            "/bad-utf8" => {
                let h = "content-type: application/json; charset=utf-8\r\n";
                if !respond(&mut conn, h, b"{\"name\":\"\xff\xfe\xc3\x28\"}") {
                    return;
                }
            }
            "/weird-encoding" => {
                let h = "content-type: text/plain\r\ncontent-encoding: x-made-up\r\n";
                if !respond(&mut conn, h, b"\x00\x01binary\x80") {
                    return;
                }
            }
            _ => {
                if !respond(
                    &mut conn,
                    "content-type: text/plain\r\n",
                    format!("ok {path}").as_bytes(),
                ) {
                    return;
                }
            }
        }
    }
}

/// True when `buf` holds a whole response with a Content-Length body.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    if !head.to_ascii_lowercase().contains("content-length") {
        return false;
    }
    buf.len() as u64 >= (end + 4) as u64 + content_length(&head)
}

/// Sends one raw HTTP/1.1 request; returns what the proxy sent back: the first whole response,
/// or everything up to the close (bounded by `limit`).
pub(super) fn raw_exchange(port: u16, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = c.write_all(request);
    read_response(&mut c, limit)
}

pub(super) fn status_of(resp: &[u8]) -> u16 {
    String::from_utf8_lossy(resp)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The first status code in `resp`, or 0 when nothing (or not HTTP) came back.
pub(super) fn first_status(resp: &[u8]) -> u16 {
    if resp.starts_with(b"HTTP/") {
        status_of(resp)
    } else {
        0
    }
}

/// Reads from `c` until `enough` says so, the peer closes, or `limit` passes; returns what it
/// read and whether the peer closed (or the connection failed).
fn read_bounded(
    c: &mut TcpStream,
    limit: Duration,
    enough: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, bool) {
    c.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !enough(&out) {
        match c.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Reads from `c` until the peer closes (`Some(bytes received)`) or `limit` passes (`None`).
pub(super) fn read_until_closed(c: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let (out, closed) = read_bounded(c, limit, |_| false);
    closed.then_some(out)
}

/// Reads one whole response (or everything up to the close, bounded by `limit`) from `c`.
pub(super) fn read_response(c: &mut TcpStream, limit: Duration) -> Vec<u8> {
    read_bounded(c, limit, response_complete).0
}
