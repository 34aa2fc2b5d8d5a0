//! Real HTTP servers on loopback ports picked at run time: [`TestServer`] (HTTP/1.1, h2c, TLS
//! with ALPN) records what it receives; [`SampleApi`] is the demo's API as a `tapedeck
//! sample-api` process.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};

use super::{Proc, free_port, wait_until};

/// A request as the test server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as on the request line.
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    /// The first value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// What the test server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// One chunk is sent with a Content-Length; several are streamed (chunked on HTTP/1.1).
    pub chunks: Vec<Bytes>,
    /// Waits this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// `200` with a JSON body.
    pub fn json(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![Bytes::from(body.into())],
            delay: Duration::ZERO,
        }
    }

    /// A status with a text body.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            chunks: vec![Bytes::from(body.into())],
            delay: Duration::ZERO,
        }
    }
}

type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// A real HTTP/1.1 + HTTP/2 (h2c) server on a loopback port picked at run time, on its own
/// thread and tokio runtime. It records every request it receives. Stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TestServer {
    /// Starts a server that answers every request with `handler`.
    pub fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> TestServer {
        TestServer::spawn(Arc::new(handler), None)
    }

    /// The server thread: accepts on a loopback port, optionally does a TLS handshake, and
    /// serves each connection with hyper (HTTP/1.1, h2c or ALPN h2) until dropped.
    fn spawn(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> TestServer {
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let rec = received.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted_count = connections.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("test server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            accepted_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let (tls, handler, rec) = (tls.clone(), handler.clone(), rec.clone());
                            tokio::spawn(async move {
                                match tls {
                                    None => serve_connection(tcp, None, handler, rec).await,
                                    Some(acceptor) => {
                                        let Ok(stream) = acceptor.accept(tcp).await else { return };
                                        let sni = stream.get_ref().1.server_name().unwrap_or_default().to_owned();
                                        serve_connection(stream, Some(sni), handler, rec).await;
                                    }
                                }
                            });
                        }
                    }
                }
            });
        });
        TestServer {
            addr,
            received,
            connections,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of the requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// How many connections the server has accepted.
    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one accepted connection; `sni` (TLS only) is added to each request as
/// [`TLS_SNI_HEADER`].
async fn serve_connection<S>(
    stream: S,
    sni: Option<String>,
    handler: Handler,
    rec: Arc<Mutex<Vec<Received>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(v) = sni
            .as_deref()
            .and_then(|s| hyper::header::HeaderValue::from_str(s).ok())
        {
            req.headers_mut().insert(TLS_SNI_HEADER, v);
        }
        serve_one(req, handler.clone(), rec.clone())
    });
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
}

async fn serve_one(
    req: Request<Incoming>,
    handler: Handler,
    rec: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let received = Received {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
        at,
    };
    let reply = handler(&received);
    rec.lock().expect("lock").push(received);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut b = Response::builder().status(reply.status);
    for (n, v) in &reply.headers {
        b = b.header(n, v);
    }
    let body: BoxBody<Bytes, Infallible> = if reply.chunks.len() == 1 {
        Full::new(reply.chunks[0].clone()).boxed()
    } else {
        Chunks {
            items: reply.chunks.into(),
        }
        .boxed()
    };
    Ok(b.body(body).expect("valid test response"))
}

/// A body that hands out its chunks one frame at a time (chunked transfer on HTTP/1.1).
struct Chunks {
    items: std::collections::VecDeque<Bytes>,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.items.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// TLS settings of [`TestServer::start_tls`]: PEM files, e.g. from [`make_certs`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain of the server.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
    /// Require a client certificate signed by this CA (mutual TLS).
    pub client_ca: Option<std::path::PathBuf>,
    /// ALPN protocols offered, most preferred first (`[b"h2", b"http/1.1"]`); empty: none.
    pub alpn: Vec<Vec<u8>>,
}

impl TlsFiles {
    /// `leaf.pem` / `leaf.key` of [`make_certs`] in `dir`, HTTP/2 and HTTP/1.1 by ALPN, no
    /// client certificate.
    pub fn leaf(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf.key"),
            client_ca: None,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// Header added to each [`Received`] of a [`TestServer::start_tls`] server: the server name
/// (SNI) the client sent in its TLS handshake, empty when it sent none.
pub const TLS_SNI_HEADER: &str = "x-test-tls-sni";

impl TestServer {
    /// Like [`TestServer::start`], behind rustls: HTTP/1.1, and HTTP/2 when negotiated by ALPN.
    /// Handshakes that fail (untrusted client, no client certificate) are dropped.
    pub fn start_tls(
        tls: &TlsFiles,
        handler: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
            .expect("server certificate file")
            .collect::<Result<_, _>>()
            .expect("server certificates");
        let key = PrivateKeyDer::from_pem_file(&tls.key).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match &tls.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).expect("client CA file") {
                    roots.add(c.expect("client CA")).expect("client CA usable");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .expect("server certificate and key");
        cfg.alpn_protocols = tls.alpn.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        TestServer::spawn(Arc::new(handler), Some(acceptor))
    }

    /// `https://127.0.0.1:PORT`
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// One `tapedeck sample-api` process (the demo's API, `--build v1 | v2-bad | v2-good`) and its
/// URL; stopped by PID when dropped.
pub struct SampleApi {
    proc: Proc,
    pub url: String,
}

impl SampleApi {
    pub fn start(build: &str, dir: &Path) -> SampleApi {
        let logs = dir.join(format!("api-{build}-{}", free_port()));
        std::fs::create_dir_all(&logs).expect("log dir");
        let proc = Proc::start(&["sample-api", "--build", build], &logs);
        let mut url = String::new();
        let up = wait_until(Duration::from_secs(20), || {
            url = std::fs::read_to_string(logs.join("tapedeck.stdout"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            url.starts_with("http://127.0.0.1:")
        });
        assert!(up, "sample-api {build} did not start");
        SampleApi { proc, url }
    }
}

impl Drop for SampleApi {
    fn drop(&mut self) {
        self.proc.signal("TERM");
        let _ = self.proc.wait_timeout(Duration::from_secs(10));
    }
}
