//! Object storage (issue 9): tapes, runs and reports at `s3://` URLs, against a real
//! S3-compatible server (moto, `pip install "moto[server]"`) started on a loopback port picked at
//! run time, with the real `tapedeck` binary recording through its real proxy.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod webdav;

use crate::util::{
    Engine, Proc, Recorder, Reply, TestServer, curl, free_port, synth, tapedeck, wait_for_port,
    wait_until,
};

const STARTUP: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(90);
const BUCKET: &str = "tapes";

/// A moto S3 server, killed by PID on drop.
struct Moto {
    _proc: Proc,
    port: u16,
}

impl Moto {
    fn start(logs: &Path) -> Moto {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        let moto = Moto {
            _proc: python_server(cmd, port, "moto", "pip install \"moto[server]\"", logs),
            port,
        };
        let (code, body) = curl(&["-X", "PUT", &format!("{}/{BUCKET}", moto.url())]);
        assert_eq!(code, 200, "create bucket: {body}");
        moto
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Keys and sizes of the objects under `prefix`, from a ListObjectsV2 request.
    fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let (code, xml) = curl(&[&format!(
            "{}/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}",
            self.url()
        )]);
        assert_eq!(code, 200, "list: {xml}");
        xml.split("<Contents>")
            .skip(1)
            .map(|c| {
                let field = |name: &str| {
                    c.split(&format!("<{name}>"))
                        .nth(1)
                        .and_then(|r| r.split(&format!("</{name}>")).next())
                        .unwrap_or_default()
                        .to_owned()
                };
                (field("Key"), field("Size").parse().unwrap_or(0))
            })
            .collect()
    }
}

/// A Python test server started by `cmd` on loopback `port`, logging to `logs/NAME.log`, killed
/// by PID on drop; waits (bounded) until it listens.
fn python_server(mut cmd: Command, port: u16, name: &str, install: &str, logs: &Path) -> Proc {
    let log_path = logs.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("server log");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name} ({install}): {e}"));
    let proc = Proc { child };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        wait_for_port(addr, STARTUP),
        "{name} did not start ({install}?):\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    proc
}

/// `tapedeck` with the S3 settings of a test (endpoint, fake credentials, spool root).
fn td(endpoint: &str, spool_root: &Path) -> Command {
    let mut c = tapedeck();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TAPEDECK_SPOOL_DIR", spool_root);
    c
}

/// Runs a command to completion (bounded), capturing its output.
fn run_cmd(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapedeck");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "tapedeck did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `tapedeck record` whose tape is an object-store URL, with the S3 settings of [`td`].
fn recorder(
    endpoint: &str,
    spool_root: &Path,
    upstream: &str,
    tape: &str,
    logs: &Path,
    engine: Engine,
) -> Recorder {
    let spool = spool_root.to_str().expect("utf-8 path");
    Recorder::builder(upstream)
        .tape_url(tape)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TAPEDECK_SPOOL_DIR", spool)
        .log_level("info")
        .log_name("record")
        .engine(engine)
        .start(logs)
}

/// A GET through the recorder; the status.
fn get(rec: &Recorder, path: &str) -> u16 {
    curl(&[&rec.url(path)]).0
}

fn upstream() -> TestServer {
    TestServer::start(|r| {
        let path = r.uri.split('?').next().unwrap_or("/");
        Reply::json(format!("{{\"path\":\"{path}\",\"ok\":true}}"))
    })
}

/// Parquet files (anywhere) under a local directory.
fn local_parquet(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    for _ in 0..10_000 {
        let Some(d) = stack.pop() else { break };
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

fn inspect_count(endpoint: &str, spool: &Path, url: &str) -> u64 {
    let mut c = td(endpoint, spool);
    c.args(["inspect", url, "--json"]);
    let out = run_cmd(c, STOP);
    assert!(out.status.success(), "inspect {url}: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    v["exchanges"].as_u64().expect("exchanges count")
}

fn record_replay_diff_through_s3(engine: Engine) {
    let tmp = tempfile::tempdir().expect("tmp");
    let moto = Moto::start(tmp.path());
    let endpoint = moto.url();
    let spool = tmp.path().join("spool");
    let up = upstream();
    // The replay targets listen before the recorder starts: a target started after the
    // recorder stopped could be handed the recorder's port, and replay refuses a target that is
    // the host the tape was recorded from.
    let base = upstream();
    let cand = upstream();
    let tape = format!("s3://{BUCKET}/svc/tape");

    let rec = recorder(&endpoint, &spool, &up.url(), &tape, tmp.path(), engine);
    let paths = ["/api/users/1", "/api/users/2", "/api/items?q=a", "/healthz"];
    let n = 40;
    for i in 0..n {
        assert_eq!(get(&rec, paths[i % paths.len()]), 200);
    }
    let mut proc = rec.proc;
    proc.signal("TERM");
    let status = proc
        .wait_timeout(STOP)
        .expect("recorder exits after SIGTERM");
    assert!(
        status.success(),
        "recorder: {status}\n{}",
        std::fs::read_to_string(tmp.path().join("record.stderr")).unwrap_or_default()
    );

    // Sealed Parquet objects are in the bucket, under hour partitions; nothing stays local.
    let objects = moto.list("svc/tape/");
    assert!(!objects.is_empty(), "no objects uploaded");
    for (key, size) in &objects {
        assert!(
            key.contains("/date=") && key.contains("/hour=") && key.ends_with(".parquet"),
            "{key}"
        );
        assert!(*size > 0);
    }
    assert!(
        local_parquet(&spool).is_empty(),
        "{:?}",
        local_parquet(&spool)
    );
    assert_eq!(inspect_count(&endpoint, &spool, &tape), n as u64);

    // Replay from s3:// into an s3:// run, against two targets that answer alike.
    let run_url = format!("s3://{BUCKET}/svc/runs/r1");
    let mut c = td(&endpoint, &spool);
    c.args([
        "replay",
        "--tape",
        &tape,
        "--target",
        &format!("baseline={}", base.url()),
        "--target",
        &format!("candidate={}", cand.url()),
        "--max",
        "--out",
        &run_url,
    ]);
    let out = run_cmd(c, STOP);
    assert!(out.status.success(), "replay: {}", text(&out));
    assert_eq!(base.requests().len(), n);
    assert_eq!(cand.requests().len(), n);
    assert!(!moto.list("svc/runs/r1/").is_empty());
    assert_eq!(inspect_count(&endpoint, &spool, &run_url), 2 * n as u64);

    // Diff reads the run from s3:// and writes its reports to s3://.
    let report_url = format!("s3://{BUCKET}/svc/reports/r1");
    // Identical targets with no noise target: latency is not judged (weight 0), so a loaded
    // machine cannot turn scheduling noise into a verdict (issue 17).
    let rules = tmp.path().join("no-latency.toml");
    std::fs::write(&rules, "[settings]\nweight_latency = 0.0\n").expect("rules");
    let mut c = td(&endpoint, &spool);
    c.args([
        "diff",
        "--run",
        &run_url,
        "--report",
        &report_url,
        "--rules",
        rules.to_str().expect("utf-8"),
        "--json",
    ]);
    let out = run_cmd(c, STOP);
    let verdict: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    // Identical targets: never a failure (too few samples may make it inconclusive, exit 3).
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 3, "diff: {}", text(&out));
    assert!(verdict["verdict"].is_string(), "{verdict}");
    assert_ne!(verdict["verdict"], "fail", "{verdict}");
    assert_eq!(verdict["rollback"], false, "{verdict}");
    assert_eq!(verdict["counts"]["paired"], n as u64, "{verdict}");
    let reports: Vec<String> = moto
        .list("svc/reports/r1/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for name in ["verdict.json", "report.md", "report.html", "junit.xml"] {
        assert!(
            reports
                .iter()
                .any(|k| k == &format!("svc/reports/r1/{name}")),
            "{name} missing: {reports:?}"
        );
    }

    // Sharded, as deploy/replay-job.yaml does it: two workers each write their shard's run to
    // its own prefix; one diff reads both runs as one and pairs every exchange.
    for k in 0..2 {
        let mut c = td(&endpoint, &spool);
        c.args([
            "replay",
            "--tape",
            &tape,
            "--shard",
            &format!("{k}/2"),
            "--target",
            &format!("baseline={}", base.url()),
            "--target",
            &format!("candidate={}", cand.url()),
            "--max",
            "--out",
            &format!("s3://{BUCKET}/svc/runs/r2/shard-{k}"),
        ]);
        let out = run_cmd(c, STOP);
        assert!(out.status.success(), "replay shard {k}: {}", text(&out));
    }
    let mut c = td(&endpoint, &spool);
    c.args(["diff", "--json", "--rules", rules.to_str().expect("utf-8")]);
    for k in 0..2 {
        c.args(["--run", &format!("s3://{BUCKET}/svc/runs/r2/shard-{k}")]);
    }
    let out = run_cmd(c, STOP);
    let merged: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(merged["counts"]["paired"], n as u64, "{merged}");
    assert_eq!(merged["verdict"], verdict["verdict"]);
}

/// A TCP forwarder the test can take down (new connections are cut at once, open ones are shut
/// down: the endpoint is unreachable) and bring back, on the same port. A restarted moto would
/// lose its in-memory buckets; this keeps moto's state. The listener stays bound for the
/// forwarder's whole life: binding the port again after an outage could find it taken by
/// another test's connection on a loaded machine.
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    fn start(target: u16) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forwarder");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("forwarder address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, down, conns) = (stop.clone(), down.clone(), conns.clone());
            std::thread::spawn(move || {
                // Bounded by `stop`, which `Drop` sets.
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        // Down: the connection is dropped as soon as it is accepted.
                        Ok(_) if down.load(Ordering::SeqCst) => {}
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                                continue;
                            };
                            let Ok(mut g) = conns.lock() else { continue };
                            // Checked under the lock `close` drains with: a connection accepted
                            // while the endpoint went down does not outlive the outage.
                            if down.load(Ordering::SeqCst) {
                                continue;
                            }
                            g.extend(
                                [client.try_clone(), server.try_clone()]
                                    .into_iter()
                                    .flatten(),
                            );
                            drop(g);
                            pipe(client.try_clone(), server.try_clone());
                            pipe(server.try_clone(), client.try_clone());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Forwarder {
            port,
            stop,
            down,
            conns,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Brings the endpoint back.
    fn open(&mut self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Cuts every open connection and every new one: the endpoint is unreachable.
    fn close(&mut self) {
        self.down.store(true, Ordering::SeqCst);
        if let Ok(mut g) = self.conns.lock() {
            for s in g.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.close();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn pipe(from: std::io::Result<TcpStream>, to: std::io::Result<TcpStream>) {
    let (Ok(mut from), Ok(mut to)) = (from, to) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        // Ends when either side closes or is shut down by `Forwarder::close`.
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn upload_outage_keeps_recording_and_loses_nothing(engine: Engine) {
    let tmp = tempfile::tempdir().expect("tmp");
    let moto = Moto::start(tmp.path());
    let mut fwd = Forwarder::start(moto.port);
    let spool = tmp.path().join("spool");
    let up = upstream();
    let tape = format!("s3://{BUCKET}/outage/tape");

    let rec = recorder(&fwd.url(), &spool, &up.url(), &tape, tmp.path(), engine);
    for i in 0..20 {
        assert_eq!(get(&rec, &format!("/before/{i}")), 200);
    }
    // The store goes away: recording goes on, unaffected.
    fwd.close();
    for i in 0..20 {
        assert_eq!(get(&rec, &format!("/during/{i}")), 200);
    }
    assert_eq!(rec.metric("tapedeck_dropped_total{reason=\"io\"}"), Some(0));

    // SIGTERM while the store is down: sealing happens, uploads fail and are retried.
    let mut proc = rec.proc;
    proc.signal("TERM");
    let stderr = || std::fs::read_to_string(tmp.path().join("record.stderr")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || stderr()
            .contains("upload failed")),
        "no failed upload while the endpoint was down:\n{}",
        stderr()
    );
    assert!(
        proc.wait_timeout(Duration::ZERO).is_none(),
        "gave up too early:\n{}",
        stderr()
    );
    let waiting = local_parquet(&spool);
    assert!(
        !waiting.is_empty(),
        "sealed files must stay local until uploaded"
    );
    assert!(moto.list("outage/tape/").is_empty());

    // The store comes back: the retries upload everything, then the local copies go.
    fwd.open();
    let status = proc.wait_timeout(STOP).expect("recorder exits");
    assert!(status.success(), "recorder: {status}\n{}", stderr());
    assert!(
        local_parquet(&spool).is_empty(),
        "{:?}",
        local_parquet(&spool)
    );
    let objects = moto.list("outage/tape/");
    assert_eq!(objects.len(), waiting.len(), "{objects:?}");
    assert_eq!(
        inspect_count(&moto.url(), &spool, &tape),
        40,
        "no exchange lost"
    );
}

on_both_engines!(
    record_replay_diff_through_s3,
    upload_outage_keeps_recording_and_loses_nothing,
);
/// Issue 17: an `s3://` location with a plain-HTTP endpoint and no `AWS_ALLOW_HTTP` used to
/// retry for ~30 s and end in "HTTP error: builder error". It fails at once, naming the fix.
#[test]
fn issue_17_http_endpoint_without_allow_http_fails_at_once_naming_the_fix() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Nothing listens there: the error must come before any request.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let spool = tmp.path().join("spool");
    let local = tmp.path().join("local-tape");
    synth(&local, &["--count", "20"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let runs: [&[&str]; 3] = [
        &["inspect", "s3://tapes/svc/tape"],
        &[
            "replay",
            "--tape",
            local.to_str().expect("utf-8"),
            "--target",
            "c=http://127.0.0.1:9",
            "--max",
            "--out",
            "s3://tapes/svc/runs/r1",
        ],
        &[
            "record",
            "--listen",
            &listen,
            "--upstream",
            "http://127.0.0.1:9",
            "--admin",
            "off",
            "--tape",
            "s3://tapes/svc/tape",
        ],
    ];
    for args in runs {
        let mut c = td(&endpoint, &spool);
        c.env_remove("AWS_ALLOW_HTTP").args(args);
        let started = Instant::now();
        let out = run_cmd(c, Duration::from_secs(20));
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("AWS_ALLOW_HTTP=true") && err.contains(&endpoint),
            "{args:?}: the error names the endpoint and the fix: {}",
            text(&out)
        );
        assert!(
            took < Duration::from_secs(10),
            "{args:?}: took {took:?}, expected an immediate error"
        );
    }
}

/// Issue 17: on object storage, a failed upload's leftover file was pushed into the next run at
/// the same URL (2,400 rows, `paired: 800` for a 400-request tape). A replay never starts into
/// a URL that holds results, nor while its local spool directory holds an earlier run's
/// leftovers (the error names the directory); `--append` uploads them on purpose.
#[test]
fn issue_17_replay_never_mixes_runs_in_object_storage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let moto = Moto::start(tmp.path());
    let endpoint = moto.url();
    let spool = tmp.path().join("spool");
    let tape = tmp.path().join("tape");
    synth(&tape, &["--count", "20"]);
    let target = upstream();
    let sent = || {
        target
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    };
    let replay = |out: &str, extra: &[&str]| {
        let mut c = td(&endpoint, &spool);
        c.args([
            "replay",
            "--tape",
            tape.to_str().expect("utf-8"),
            "--target",
            &format!("c={}", target.url()),
            "--max",
            "--quiet",
            "--out",
            out,
        ])
        .args(extra);
        run_cmd(c, STOP)
    };

    // A second run into the same URL is refused before anything is sent.
    let a = format!("s3://{BUCKET}/runs/a");
    let o = replay(&a, &[]);
    assert!(o.status.success(), "first run: {}", text(&o));
    let per_run = sent();
    assert!(per_run > 0);
    let objects = moto.list("runs/a/");
    let o = replay(&a, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("--append") && err.contains(&a), "{err}");
    assert_eq!(sent(), per_run, "nothing was sent");
    assert_eq!(moto.list("runs/a/"), objects, "the first run is untouched");

    // What an earlier run to URL b could not upload waits in b's local spool directory: here a
    // sealed file of another run, put where a failed upload leaves it (same relative path).
    let b = format!("s3://{BUCKET}/runs/b");
    let b_spool = spool.join(
        tapedeck_storage::object::spool_dir_for(&b)
            .file_name()
            .expect("spool dir name"),
    );
    let local_run = tmp.path().join("local-run");
    let o = replay(local_run.to_str().expect("utf-8"), &[]);
    assert!(o.status.success(), "local run: {}", text(&o));
    let per_run = sent() / 2;
    let sealed = local_parquet(&local_run);
    let first = sealed.first().expect("a sealed file");
    let leftover = b_spool.join(first.strip_prefix(&local_run).expect("under the run"));
    std::fs::create_dir_all(leftover.parent().expect("parent")).expect("mkdir");
    std::fs::copy(first, &leftover).expect("copy the leftover");
    let o = replay(&b, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains(b_spool.to_str().expect("utf-8")) && err.contains("--append"),
        "the error names the spool directory and the flag: {err}"
    );
    assert!(moto.list("runs/b/").is_empty(), "no leftover was uploaded");
    assert!(leftover.is_file(), "the leftover is kept");
    assert_eq!(sent(), 2 * per_run, "nothing was sent");

    // On purpose: --append uploads the leftover and adds the new run.
    let o = replay(&b, &["--append"]);
    assert!(o.status.success(), "append: {}", text(&o));
    assert!(!leftover.exists());
    let leftover_rows = crate::util::read_tape(first).len() as u64;
    assert_eq!(
        inspect_count(&endpoint, &spool, &b),
        leftover_rows + inspect_count(&endpoint, &spool, &a)
    );
}

/// Issue 16: `distill` reads a tape from `s3://` and writes the distilled tape to `s3://`.
#[test]
fn distill_reads_and_writes_object_storage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let moto = Moto::start(tmp.path());
    let endpoint = moto.url();
    let spool = tmp.path().join("spool");
    let tape = format!("s3://{BUCKET}/big/tape");
    let small = format!("s3://{BUCKET}/big/distilled");
    let mut c = td(&endpoint, &spool);
    c.args(["synth", "--out", &tape, "--count", "2000", "--seed", "16"]);
    let out = run_cmd(c, STOP);
    assert!(out.status.success(), "synth: {}", text(&out));
    let mut c = td(&endpoint, &spool);
    c.args([
        "distill",
        "--tape",
        &tape,
        "--out",
        &small,
        "--per-group",
        "3",
    ]);
    let out = run_cmd(c, STOP);
    assert!(out.status.success(), "distill: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("of 2,000 exchanges"), "{said}");
    let kept = inspect_count(&endpoint, &spool, &small);
    assert!(kept > 0 && kept < 2000, "kept {kept}");
    assert!(said.starts_with(&format!("distilled {kept} of")), "{said}");
    assert!(
        moto.list("big/distilled/")
            .iter()
            .any(|(k, _)| k.ends_with(".parquet")),
        "the distilled tape is in the bucket"
    );
}
