//! Helpers for end-to-end tests: the real `tapedeck` binary, real HTTP servers on loopback ports
//! picked at run time, and bounded waits. Every process started here is killed by PID on drop.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};

/// A `Command` for the `tapedeck` binary under test.
pub fn tapedeck() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapedeck"));
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

/// Runs `tapedeck` with `args` to completion (bounded by `timeout`), capturing its output.
pub fn run(args: &[&str], timeout: Duration) -> Output {
    run_command(tapedeck().args(args), timeout)
}

/// Runs `cmd` to completion (bounded by `timeout`: past it the process is killed by PID and the
/// test fails, showing what it printed), capturing its output.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain both pipes while waiting, so a chatty command cannot block on a full pipe.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let text = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
                    String::from_utf8_lossy(
                        &h.map(|h| h.join().unwrap_or_default()).unwrap_or_default(),
                    )
                    .into_owned()
                };
                panic!(
                    "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    text(out),
                    text(err)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().expect("output reader"))
            .unwrap_or_default()
    };
    Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// stdout of a finished command, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Polls `f` every 20 ms until it is true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    wait_until(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// A child process that is killed (by PID) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// Starts `tapedeck` with `args`, stdout and stderr captured to files in `log_dir`.
    pub fn start(args: &[&str], log_dir: &Path) -> Proc {
        let out = std::fs::File::create(log_dir.join("tapedeck.stdout")).expect("stdout log");
        let err = std::fs::File::create(log_dir.join("tapedeck.stderr")).expect("stderr log");
        let child = tapedeck()
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn tapedeck");
        Proc { child }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with the `kill` program.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit (bounded); `None` if it is still running after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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

/// Runs the `openssl` program in `dir` (Debian package `openssl`; `.ci/run` installs it).
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl program (Debian package `openssl`) is needed for the TLS test");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A test CA (`ca.pem`, `ca.key`) and a leaf certificate for 127.0.0.1 signed by it
/// (`leaf.pem`, `leaf.key`), in `dir`.
pub fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tapedeck test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// Every exchange of the tape at `dir`, sorted by start time.
pub fn read_tape(dir: &Path) -> Vec<tapedeck_storage::Exchange> {
    let tape = tapedeck_storage::Tape::open(&[dir]).expect("open tape");
    let mut v: Vec<tapedeck_storage::Exchange> = tape
        .exchanges(tapedeck_storage::Filter::default())
        .collect::<Result<_, _>>()
        .expect("read tape");
    v.sort_by_key(|e| e.started_at_us);
    v
}

/// Runs curl with `args` (and a 30 s limit); returns (HTTP status, body). Status 0 when no
/// response arrived.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("/usr/bin/curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A small multi-threaded tokio runtime for a test's clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
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

/// A certificate `<stem>.pem` / `<stem>.key` signed by the CA of [`make_certs`] (which must
/// have run in `dir`), with common name `cn` and subjectAltName `san` (e.g. `DNS:api.internal`
/// or `IP:127.0.0.1`). Usable by servers and as a client certificate.
pub fn make_signed_cert(dir: &Path, stem: &str, cn: &str, san: &str) {
    let (key, csr, ext, pem) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.ext"),
        format!("{stem}.pem"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// The data plane a recorder runs (`--engine`). Record tests run on both: see
/// [`on_both_engines!`](crate::on_both_engines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// hyper, the default.
    Hyper,
    /// pingora, kept while it passes the same suite.
    Pingora,
}

impl Engine {
    /// The `--engine` value.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Hyper => "hyper",
            Engine::Pingora => "pingora",
        }
    }
}

/// Where a [`Recorder`]'s admin listener goes.
#[derive(Debug, Clone)]
enum AdminAt {
    /// A free loopback port picked at start.
    Free,
    /// `--admin off`.
    Off,
    /// Whatever the config file or the default says (no `--admin` flag).
    Unset,
}

/// Builds a running `tapedeck record` for a test: the one fixture of every recorder test
/// (ports picked at run time, logs in a directory, killed by PID on drop).
///
/// ```ignore
/// let rec = Recorder::builder(&up.url()).tape(&dir).args(&["--max-body", "64KiB"]).engine(engine).start(logs);
/// ```
#[derive(Debug, Clone)]
pub struct RecorderBuilder {
    /// `None`: no `--upstream` flag (forward-proxy mode).
    upstream: Option<String>,
    tape: Option<std::path::PathBuf>,
    args: Vec<String>,
    engine: Engine,
    admin: AdminAt,
    grace: String,
    threads: Option<String>,
    env: Vec<(String, String)>,
    log_level: String,
    log_name: String,
}

/// A running `tapedeck record` (see [`RecorderBuilder`]).
#[derive(Debug)]
pub struct Recorder {
    pub proc: Proc,
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    /// The admin listener's port, when the builder picked one.
    pub admin: Option<u16>,
    /// The tape directory, when recording to a local one.
    pub tape: Option<std::path::PathBuf>,
    /// The engine it runs.
    pub engine: Engine,
}

impl Recorder {
    /// A recorder forwarding to `upstream` (a URL), with: no tape (set one with
    /// [`RecorderBuilder::tape`], or pass `--no-record`), the admin listener on a free port,
    /// `--grace-period 1s`, `--threads 2`, the hyper engine, `RUST_LOG=warn`.
    pub fn builder(upstream: &str) -> RecorderBuilder {
        RecorderBuilder {
            upstream: Some(upstream.to_owned()),
            tape: None,
            args: Vec::new(),
            engine: Engine::Hyper,
            admin: AdminAt::Free,
            grace: "1s".to_owned(),
            threads: Some("2".to_owned()),
            env: Vec::new(),
            log_level: "warn".to_owned(),
            log_name: "tapedeck".to_owned(),
        }
    }
}

impl RecorderBuilder {
    /// Records into this directory (`--tape`).
    pub fn tape(mut self, dir: &Path) -> Self {
        self.tape = Some(dir.to_owned());
        self
    }

    /// Records into this location as written (an object-store URL, `--tape`), with no local
    /// directory to read back.
    pub fn tape_url(mut self, url: &str) -> Self {
        self.args.extend(["--tape".to_owned(), url.to_owned()]);
        self
    }

    /// More flags, after the builder's own.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// A forward proxy (`--forward`) with no `--upstream`.
    pub fn forward_only() -> RecorderBuilder {
        let mut b = Recorder::builder("");
        b.upstream = None;
        b.args.push("--forward".into());
        b
    }

    /// Runs this engine.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// `--admin off`.
    pub fn admin_off(mut self) -> Self {
        self.admin = AdminAt::Off;
        self
    }

    /// No `--admin` flag (the config file's or the default address applies).
    pub fn admin_unset(mut self) -> Self {
        self.admin = AdminAt::Unset;
        self
    }

    /// `--grace-period`.
    pub fn grace(mut self, d: &str) -> Self {
        self.grace = d.to_owned();
        self
    }

    /// No `--threads` flag (the default: one per CPU).
    pub fn default_threads(mut self) -> Self {
        self.threads = None;
        self
    }

    /// An environment variable of the process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// `RUST_LOG` of the process (default `warn`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// Logs go to `<logs>/<name>.stdout` and `.stderr` (default name `tapedeck`).
    pub fn log_name(mut self, name: &str) -> Self {
        self.log_name = name.to_owned();
        self
    }

    /// The command line, without the binary.
    fn argv(&self, port: u16, admin: Option<u16>) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "record".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--engine".into(),
            self.engine.name().into(),
            "--grace-period".into(),
            self.grace.clone(),
        ];
        if let Some(u) = &self.upstream {
            a.extend(["--upstream".into(), u.clone()]);
        }
        if let Some(t) = &self.tape {
            a.extend(["--tape".into(), t.to_str().expect("utf-8 path").to_owned()]);
        }
        match (&self.admin, admin) {
            (AdminAt::Free, Some(p)) => a.extend(["--admin".into(), format!("127.0.0.1:{p}")]),
            (AdminAt::Off, _) => a.extend(["--admin".into(), "off".into()]),
            _ => {}
        }
        if let Some(t) = &self.threads {
            a.extend(["--threads".into(), t.clone()]);
        }
        a.extend(self.args.iter().cloned());
        a
    }

    /// Starts the recorder and waits (bounded) until its listeners accept connections.
    pub fn start(self, logs: &Path) -> Recorder {
        // A port picked by `free_port` is free only until someone else takes it: another test's
        // server, or the kernel for an outgoing connection. When the recorder cannot listen on
        // it, it exits at once: pick new ports and start again (bounded).
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_start(logs) {
                Ok(rec) => return rec,
                Err(stderr) if tries < 4 && stderr.contains("cannot listen on") => continue,
                Err(stderr) => panic!(
                    "recorder ({}) did not start; stderr:\n{stderr}",
                    self.engine.name()
                ),
            }
        }
    }

    /// One start on fresh ports: the running recorder once its ports accept and it is still
    /// the process that runs (a port that accepts could be someone else's), or its stderr.
    fn try_start(&self, logs: &Path) -> Result<Recorder, String> {
        let port = free_port();
        let admin = matches!(self.admin, AdminAt::Free).then(free_port);
        let argv = self.argv(port, admin);
        let out = std::fs::File::create(logs.join(format!("{}.stdout", self.log_name)))
            .expect("stdout log");
        let err_path = logs.join(format!("{}.stderr", self.log_name));
        let err = std::fs::File::create(&err_path).expect("stderr log");
        let mut cmd = tapedeck();
        cmd.env("RUST_LOG", &self.log_level);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(&argv)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn tapedeck record");
        let mut rec = Recorder {
            proc: Proc { child },
            port,
            admin,
            tape: self.tape.clone(),
            engine: self.engine,
        };
        let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();
        let exited = |rec: &mut Recorder| rec.proc.child.try_wait().ok().flatten().is_some();
        for p in std::iter::once(port).chain(admin) {
            let up = wait_until(Duration::from_secs(30), || {
                exited(&mut rec)
                    || TcpStream::connect_timeout(
                        &([127, 0, 0, 1], p).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
            });
            if !up || exited(&mut rec) {
                return Err(stderr());
            }
        }
        // Ready means every listener accepts (`/readyz`); without an admin listener of its own,
        // still running a moment later means it did not fail to bind.
        let ready = match admin {
            Some(a) => wait_until(Duration::from_secs(30), || {
                exited(&mut rec) || curl(&[&format!("http://127.0.0.1:{a}/readyz")]).0 == 200
            }),
            None => {
                std::thread::sleep(Duration::from_millis(100));
                true
            }
        };
        if !ready || exited(&mut rec) {
            return Err(stderr());
        }
        Ok(rec)
    }
}

impl Recorder {
    /// `http://127.0.0.1:PORT{path}` of the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self
            .admin
            .expect("this recorder has no admin listener of its own");
        format!("http://127.0.0.1:{admin}{path}")
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        curl(&[&self.admin_url(path)])
    }

    /// The value of one sample line (`name{labels}`) of `/metrics`.
    pub fn metric(&self, sample: &str) -> Option<u64> {
        let (status, text) = self.admin_get("/metrics");
        assert_eq!(status, 200, "{text}");
        text.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// SIGTERM, and a clean exit (bounded).
    pub fn terminate(&mut self) {
        self.proc.signal("TERM");
        let status = self
            .proc
            .wait_timeout(Duration::from_secs(60))
            .unwrap_or_else(|| {
                panic!(
                    "recorder ({}) did not exit after SIGTERM",
                    self.engine.name()
                )
            });
        assert!(
            status.success(),
            "recorder ({}) exited with {status}",
            self.engine.name()
        );
    }

    /// SIGTERM, a clean exit, and the tape's exchanges.
    pub fn stop(mut self) -> Vec<tapedeck_storage::Exchange> {
        self.terminate();
        read_tape(self.tape.as_deref().expect("a recorder with a local tape"))
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
