//! Security (issue 8): with default settings no secret from the default sensitive header list
//! reaches any file that record, replay, diff and ticket write, nor their logs (at debug level);
//! tape files are 0600 and directories 0700; the admin listener binds loopback by default.
//! (`serve`'s bearer token and replay's --allow-writes / --allow-same-host refusals are tested in
//! serve.rs and replay.rs.)

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tapedeck_storage::{Filter, Tape};

use crate::util::{Engine, Recorder, Reply, TestServer, tapedeck, wait_for_port, wait_until};

const T: Duration = Duration::from_secs(120);

/// A value that must be found wherever the exchanges are written: proves the grep can see.
const MARKER: &str = "visible-marker-7f3a9c";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `tapedeck args` at debug log level; stdout/stderr go to `logs/<name>.{stdout,stderr}`.
fn run_logged(name: &str, args: &[&str], logs: &Path) -> Output {
    let mut child = tapedeck()
        .env("RUST_LOG", "debug")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapedeck");
    let deadline = Instant::now() + T;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    std::fs::write(logs.join(format!("{name}.stdout")), &out.stdout).expect("write log");
    std::fs::write(logs.join(format!("{name}.stderr")), &out.stderr).expect("write log");
    out
}

fn curl(args: &[&str]) -> u16 {
    let out = Command::new("/usr/bin/curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Everything a reader could get out of `dir`: the raw bytes of every file, plus (because sealed
/// Parquet pages are compressed) every exchange of the tapes in it, decoded and debug-printed.
fn haystack(dir: &Path) -> Vec<u8> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    assert!(!files.is_empty(), "{} holds no file", dir.display());
    let mut hay = Vec::new();
    for f in &files {
        hay.extend(std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
        hay.push(b'\n');
    }
    let tapes: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            f.extension()
                .is_some_and(|e| e == "parquet" || e == "arrows")
        })
        .collect();
    for t in tapes {
        let tape = Tape::open(&[t]).expect("open tape file");
        for ex in tape.exchanges(Filter::default()) {
            let ex = ex.expect("read exchange");
            hay.extend(format!("{ex:?}").as_bytes());
            for h in ex.req_headers.iter().chain(ex.resp_headers.iter()) {
                hay.extend(h.name.as_bytes());
                hay.extend(b": ");
                hay.extend(&h.value[..]);
                hay.push(b'\n');
            }
            hay.extend(&ex.req_body[..]);
            hay.extend(&ex.resp_body[..]);
        }
    }
    hay
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Tape files 0600, tape directories 0700 (the root directory included).
fn assert_private(dir: &Path) {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir), 0o700, "directory {} is not 0700", dir.display());
    let mut files = Vec::new();
    files_under(dir, &mut files);
    assert!(!files.is_empty(), "{} holds no file", dir.display());
    for f in &files {
        assert_eq!(mode(f), 0o600, "tape file {} is not 0600", f.display());
        let mut d = f.parent();
        while let Some(p) = d {
            assert_eq!(mode(p), 0o700, "directory {} is not 0700", p.display());
            if p == dir {
                break;
            }
            d = p.parent();
        }
    }
}

fn no_default_sensitive_header_reaches_tapes_reports_tickets_or_logs(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let tape = dir.path().join("tape");
    let run_dir = dir.path().join("run");
    let report = dir.path().join("report");
    let ticket = dir.path().join("ticket");

    // Secrets: one per default sensitive header, in requests and responses, written with
    // varied header-name case, each value unique so a leak names its source.
    let req_secrets: Vec<(&str, String)> = [
        ("Authorization", "Bearer"),
        ("Proxy-Authorization", "Basic"),
        ("Cookie", "session="),
        ("X-API-Key", ""),
        ("x-auth-token", ""),
    ]
    .iter()
    .map(|(h, prefix)| {
        (
            *h,
            format!("{prefix}s3cret-req-{}-91d2", h.to_ascii_lowercase()),
        )
    })
    .collect();
    let resp_secret = |who: &str, h: &str| format!("s3cret-resp-{who}-{h}-44e1");
    let reply = |who: &'static str, status: u16| {
        move |_: &crate::util::Received| {
            let mut r = Reply::json(format!("{{\"who\":\"{who}\",\"m\":\"{MARKER}\"}}"));
            r.status = status;
            r.headers.push(("x-marker".into(), MARKER.into()));
            for h in ["Set-Cookie", "set-cookie", "X-Auth-Token", "Authorization"] {
                r.headers
                    .push((h.into(), resp_secret(who, &h.to_ascii_lowercase())));
            }
            r
        }
    };
    let upstream = TestServer::start(reply("upstream", 200));
    let baseline = TestServer::start(reply("baseline", 200));
    let candidate = TestServer::start(reply("candidate", 500));
    let mut secrets: Vec<String> = req_secrets.iter().map(|(_, v)| v.clone()).collect();
    for who in ["upstream", "baseline", "candidate"] {
        for h in ["set-cookie", "x-auth-token", "authorization"] {
            secrets.push(resp_secret(who, h));
        }
    }

    // 1. Record, at debug log level, with default settings.
    let rec = Recorder::builder(&upstream.url())
        .tape(&tape)
        .log_level("debug")
        .log_name("record")
        .default_threads()
        .engine(engine)
        .start(&logs);
    let port = rec.port;
    let mut headers: Vec<String> = req_secrets
        .iter()
        .map(|(h, v)| format!("{h}: {v}"))
        .collect();
    headers.push(format!("X-Marker: {MARKER}"));
    for i in 0..6 {
        let url = format!("http://127.0.0.1:{port}/api/{MARKER}/{i}");
        let mut args: Vec<&str> = Vec::new();
        for h in &headers {
            args.extend(["-H", h.as_str()]);
        }
        args.push(&url);
        assert_eq!(curl(&args), 200, "request {i} through the recorder");
    }
    assert_eq!(curl(&[&rec.admin_url("/metrics")]), 200, "admin /metrics");
    // The upstream did get the real secrets (redaction is for the tape, not the traffic).
    assert!(
        upstream
            .requests()
            .iter()
            .any(|r| r.header("authorization").as_deref() == Some(req_secrets[0].1.as_str())),
        "the upstream did not receive the Authorization header"
    );
    let mut rec = rec;
    rec.terminate();
    assert_private(&tape);

    // 2. Replay to two targets, 3. diff with reports, 4. ticket.
    let o = run_logged("inspect", &["inspect", s(&tape), "--json"], &logs);
    assert!(o.status.success(), "inspect failed");
    let o = run_logged(
        "replay",
        &[
            "replay",
            "--tape",
            s(&tape),
            "--out",
            s(&run_dir),
            "--target",
            &format!("baseline={}", baseline.url()),
            "--target",
            &format!("candidate={}", candidate.url()),
            "--max",
        ],
        &logs,
    );
    assert!(
        o.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        candidate.requests().len(),
        6,
        "the candidate got every request"
    );
    assert_private(&run_dir);
    let o = run_logged(
        "diff",
        &["diff", "--run", s(&run_dir), "--report", s(&report)],
        &logs,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "diff should fail on a 500 candidate: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run_logged(
        "ticket",
        &[
            "ticket",
            "--report",
            s(&report),
            "--run",
            s(&run_dir),
            "--out",
            s(&ticket),
        ],
        &logs,
    );
    assert!(
        o.status.success(),
        "ticket failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_private(&ticket.join("tape"));

    // The grep can see: the marker is in every place the exchanges are written.
    let places = [
        ("tape", haystack(&tape)),
        ("run", haystack(&run_dir)),
        ("report", haystack(&report)),
        ("ticket", haystack(&ticket)),
        ("logs", haystack(&logs)),
    ];
    for (name, hay) in &places[..4] {
        assert!(
            contains(hay, MARKER),
            "the marker is not found in the {name}"
        );
    }
    assert!(
        contains(&places[4].1, "DEBUG") || contains(&places[4].1, "debug"),
        "the logs were not written at debug level"
    );
    let mut leaks = Vec::new();
    for (name, hay) in &places {
        for secret in &secrets {
            if contains(hay, secret) {
                leaks.push(format!("{secret} in {name}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}

/// Parses the listening TCP sockets on `port` from /proc/net/tcp{,6}: (address hex, is v6).
fn listeners_on(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let Some((ip, p)) = local.split_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(p, 16).ok() == Some(port) {
                out.push(ip.to_owned());
            }
        }
    }
    out
}

fn the_admin_listener_binds_loopback_by_default(engine: Engine) {
    const DEFAULT_ADMIN: u16 = 9180;
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = TestServer::start(|_| Reply::json("{}"));
    // The default admin port is fixed: wait (bounded) until nobody else is using it.
    assert!(
        wait_until(T, || listeners_on(DEFAULT_ADMIN).is_empty()),
        "port {DEFAULT_ADMIN} stays busy: cannot check the default admin address"
    );
    let mut rec = Recorder::builder(&upstream.url())
        .tape(&dir.path().join("tape"))
        .admin_unset()
        .engine(engine)
        .start(dir.path());
    let admin: SocketAddr = ([127, 0, 0, 1], DEFAULT_ADMIN).into();
    assert!(
        wait_for_port(admin, T),
        "no default admin listener on {admin}: {}",
        std::fs::read_to_string(dir.path().join("tapedeck.stderr")).unwrap_or_default()
    );
    let listeners = listeners_on(DEFAULT_ADMIN);
    rec.terminate();
    assert!(!listeners.is_empty(), "no listener found in /proc/net/tcp");
    for ip in &listeners {
        // 127.0.0.1 in /proc/net/tcp is 0100007F; ::1 in tcp6 is ...0100000000.
        assert!(
            ip == "0100007F" || ip == "00000000000000000000000001000000",
            "the admin listener binds {ip}, not loopback"
        );
    }
}

/// Issue 17, item 6: every way into a tape redacts like `record`. A HAR file from DevTools carries
/// credentials in clear; `import-har` applies the default sensitive headers and the same
/// `--redact-*` flags, so no planted secret reaches any file it writes, and `export-har` can only
/// write back the placeholders. `synth` applies the same defaults.
#[test]
fn import_har_and_synth_redact_like_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (har, tape, logs) = (
        dir.path().join("in.har"),
        dir.path().join("tape"),
        dir.path().join("logs"),
    );
    std::fs::create_dir_all(&logs).expect("logs dir");
    let secrets = [
        "bearer-secret-a1",
        "cookie-secret-b2",
        "apikey-secret-c3",
        "setcookie-secret-d4",
        "query-secret-e5",
        "json-secret-f6",
        "path-secret-g7",
    ];
    let entry = serde_json::json!({
        "startedDateTime": "2026-03-01T10:00:00.125Z",
        "time": 12.5,
        "request": {
            "method": "POST",
            "url": format!(
                "http://127.0.0.1:8080/api/login/{}?token={}&page=2",
                secrets[6], secrets[4]
            ),
            "httpVersion": "HTTP/1.1",
            "headers": [
                { "name": "Authorization", "value": format!("Bearer {}", secrets[0]) },
                { "name": "Cookie", "value": format!("sid={}", secrets[1]) },
                { "name": "X-Api-Key", "value": secrets[2] },
                { "name": "X-Visible", "value": MARKER },
                { "name": "Content-Type", "value": "application/json" }
            ],
            "queryString": [
                { "name": "token", "value": secrets[4] },
                { "name": "page", "value": "2" }
            ],
            "postData": {
                "mimeType": "application/json",
                "text": format!(r#"{{"user":"ada","password":"{}"}}"#, secrets[5])
            },
            "cookies": [], "headersSize": -1, "bodySize": -1
        },
        "response": {
            "status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
            "headers": [
                { "name": "Content-Type", "value": "application/json" },
                { "name": "Set-Cookie", "value": format!("sid={}; HttpOnly", secrets[3]) }
            ],
            "content": { "size": 11, "mimeType": "application/json", "text": "{\"ok\":true}" },
            "cookies": [], "redirectURL": "", "headersSize": -1, "bodySize": 11
        },
        "cache": {},
        "timings": { "send": 0, "wait": 10, "receive": 2.5 }
    });
    let doc = serde_json::json!({
        "log": { "version": "1.2", "creator": { "name": "WebInspector", "version": "1" },
                 "entries": [entry] }
    });
    std::fs::write(&har, serde_json::to_vec(&doc).expect("json")).expect("write har");

    let out = run_logged(
        "import",
        &[
            "import-har",
            s(&har),
            "--tape",
            s(&tape),
            "--redact-query",
            "token",
            "--redact-json",
            "$.password",
            "--redact-path",
            "/api/login/{invite}",
        ],
        &logs,
    );
    assert_eq!(out.status.code(), Some(0), "import-har failed");
    let exported = dir.path().join("out.har");
    let out = run_logged(
        "export",
        &["export-har", s(&tape), "--out", s(&exported)],
        &logs,
    );
    assert_eq!(out.status.code(), Some(0), "export-har failed");

    let mut hay = haystack(&tape);
    hay.extend(std::fs::read(&exported).expect("exported har"));
    let mut log_files = Vec::new();
    files_under(&logs, &mut log_files);
    for f in log_files {
        hay.extend(std::fs::read(f).expect("log"));
    }
    assert!(
        contains(&hay, MARKER),
        "the grep must see the tape's contents"
    );
    for secret in secrets {
        assert!(!contains(&hay, secret), "{secret} reached a file or log");
    }
    assert!(
        contains(&hay, "[REDACTED]"),
        "placeholders are written instead"
    );

    // synth: its exchanges carry an Authorization header; the default list masks it.
    let synth = dir.path().join("synth");
    let out = run_logged(
        "synth",
        &["synth", "--out", s(&synth), "--count", "50"],
        &logs,
    );
    assert_eq!(out.status.code(), Some(0), "synth failed");
    let tape = Tape::open(&[&synth]).expect("open synth tape");
    let mut authorized = 0;
    for ex in tape.exchanges(Filter::default()) {
        let ex = ex.expect("exchange");
        for h in &ex.req_headers {
            if h.name.eq_ignore_ascii_case("authorization") {
                authorized += 1;
                assert_eq!(&h.value[..], b"[REDACTED]", "synth stores the placeholder");
            }
        }
    }
    assert!(
        authorized > 0,
        "synthetic traffic has Authorization headers to redact"
    );
}

on_both_engines!(
    no_default_sensitive_header_reaches_tapes_reports_tickets_or_logs,
    the_admin_listener_binds_loopback_by_default,
);
