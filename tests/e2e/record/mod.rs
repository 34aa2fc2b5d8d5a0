//! `tapedeck record`: the real binary as a proxy between real clients (curl, hyper) and a real
//! upstream (`TestServer`), then the tape read back with `tapedeck_storage::Tape`. One module
//! per topic; tests that hold for both data planes run on both (`on_both_engines!`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tapedeck_storage::find_header;

use crate::util::{Engine, Recorder, RecorderBuilder, Reply, files_under};

mod config;
mod http;
mod protocols;
mod redaction;
mod tls;
mod writer;

const STARTUP: Duration = Duration::from_secs(30);

const STOP: Duration = Duration::from_secs(60);

type HyperClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client(h2: bool) -> HyperClient {
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http()
}

/// Sends `req`, bounded; the response (its head: the body is the caller's to read).
async fn request(c: &HyperClient, req: hyper::Request<Full<Bytes>>) -> hyper::Response<Incoming> {
    tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed")
}

/// One request with a hyper client; returns (status, version, body).
async fn send(
    c: &HyperClient,
    method: &str,
    url: &str,
    body: Bytes,
) -> (u16, hyper::Version, Bytes) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .expect("request");
    let resp = request(c, req).await;
    let status = resp.status().as_u16();
    let version = resp.version();
    let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
        .await
        .expect("body timed out")
        .expect("body")
        .to_bytes();
    (status, version, body)
}

fn header_text(h: &[tapedeck_storage::Header], name: &str) -> Option<String> {
    find_header(h, name).map(|h| h.value_lossy().into_owned())
}

fn upstream_handler(r: &crate::util::Received) -> Reply {
    let path = r.uri.split('?').next().unwrap_or("/");
    match path {
        "/chunked" => Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            chunks: vec![
                Bytes::from_static(b"one,"),
                Bytes::from_static(b"two,"),
                Bytes::from_static(b"three"),
            ],
            delay: Duration::ZERO,
        },
        "/echo" => Reply {
            status: 201,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-upstream".into(), "yes".into()),
            ],
            chunks: vec![r.body.clone()],
            delay: Duration::ZERO,
        },
        _ => {
            let mut reply = Reply::json(format!("{{\"path\":\"{path}\"}}"));
            reply.headers.push(("x-upstream".into(), "yes".into()));
            reply
        }
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn logs(dir: &Path, name: &str) -> PathBuf {
    let l = dir.join(name);
    std::fs::create_dir_all(&l).expect("mkdir logs");
    l
}

/// Every file under `dir`, as raw bytes.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .filter_map(|p| Some((p.clone(), std::fs::read(&p).ok()?)))
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A `tapedeck record` in front of `upstream`, recording to `DIR/tape`, on `engine` (the
/// builder's defaults otherwise).
fn recorder(upstream: &str, dir: &Path, engine: Engine) -> RecorderBuilder {
    Recorder::builder(upstream)
        .tape(&dir.join("tape"))
        .engine(engine)
}
