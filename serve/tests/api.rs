//! The library over real HTTP on loopback (ports picked at run time): refusals, the run store
//! (state.json, restart, pruning) and start-up errors. Runs here have a tape that does not exist,
//! so every check ends in `error` at once without a target; verdicts over real targets are the
//! CLI's end-to-end tests (`tests/e2e/serve.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapedeck_serve::{Defaults, ServeError, ServeSpec, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "t0ken";

/// A running server and the sender that stops it.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops when its shutdown future resolves")
            .expect("the server task ends cleanly");
    }
}

fn spec(runs: &Path, with_defaults: bool) -> ServeSpec {
    let mut spec = ServeSpec::new("127.0.0.1:0".parse().expect("addr"), runs);
    spec.token = Some(TOKEN.into());
    if with_defaults {
        spec.defaults = Defaults {
            tape: vec![runs.join("no-such-tape")],
            baseline: Some("http://127.0.0.1:9".into()),
            candidate: Some("http://127.0.0.1:9".into()),
            secondary: None,
        };
    }
    spec
}

async fn serve(spec: ServeSpec) -> Running {
    let server = Server::start(spec).await.expect("server starts");
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status, headers and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("send head");
        // The server may answer (413) before reading all of a large body.
        let _ = s.write_all(body).await;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the server answers within 10 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Polls a run until it is no longer pending (bounded); returns its document.
async fn wait_done(addr: SocketAddr, id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let (code, _, body) = http(addr, "GET", &format!("/v1/runs/{id}"), Some(TOKEN), b"").await;
        assert_eq!(code, 200, "{body}");
        last = json(&body);
        if last["status"] != "pending" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} still pending after 20 s: {last:#}");
}

fn flagger(checksum: &str, metadata: Value) -> Vec<u8> {
    serde_json::json!({"name": "web", "namespace": "shop", "phase": "Progressing",
        "checksum": checksum, "metadata": metadata})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_answer_with_their_status_and_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(spec(&dir.path().join("runs"), false)).await;
    let addr = server.addr;

    let (code, head, body) = http(addr, "GET", "/v1/runs", None, b"").await;
    assert_eq!(code, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(
        http(addr, "GET", "/healthz", Some("wrong"), b"").await.0,
        401
    );
    let (code, _, body) = http(addr, "GET", "/healthz", Some(TOKEN), b"").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    // POST /v1/runs: JSON errors.
    let (code, _, body) = http(addr, "POST", "/v1/runs", Some(TOKEN), br#"{"bogus":1}"#).await;
    assert_eq!(code, 400);
    let msg = json(&body)["error"].as_str().expect("error").to_owned();
    assert!(
        msg.starts_with("bad run request: unknown field `bogus`"),
        "{msg}"
    );
    let (code, _, body) = http(addr, "POST", "/v1/runs", Some(TOKEN), br#"{"id":"../x"}"#).await;
    assert_eq!(code, 400);
    assert!(
        json(&body)["error"]
            .as_str()
            .expect("error")
            .starts_with("bad id: "),
        "{body}"
    );
    let (code, _, body) = http(addr, "POST", "/v1/runs", Some(TOKEN), b"").await;
    assert_eq!(code, 400);
    assert_eq!(
        json(&body)["error"],
        "no tape: start serve with --tape or send \"tape\""
    );
    let big = vec![b' '; tapedeck_serve::MAX_BODY + 1];
    let (code, _, body) = http(addr, "POST", "/v1/runs", Some(TOKEN), &big).await;
    assert_eq!(code, 413, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .expect("error")
            .starts_with("could not read the request body (at most 65536 bytes)"),
        "{body}"
    );

    // Flagger: one line of text, never 5xx.
    let (code, _, body) = http(addr, "POST", "/flagger/rollout", Some(TOKEN), b"{").await;
    assert_eq!(code, 400);
    assert!(body.starts_with("bad Flagger payload: "), "{body}");
    let no_checksum = br#"{"name":"web","namespace":"shop"}"#;
    let (code, _, body) = http(addr, "POST", "/flagger/rollout", Some(TOKEN), no_checksum).await;
    assert_eq!(code, 400);
    assert_eq!(
        body,
        "the Flagger payload has no checksum to key the run by\n"
    );
    let payload = flagger("c1", serde_json::json!({}));
    let (code, _, body) = http(addr, "POST", "/flagger/promote", Some(TOKEN), &payload).await;
    assert_eq!(code, 404);
    assert!(
        body.starts_with("unknown Flagger hook \"promote\""),
        "{body}"
    );
    let (code, _, body) = http(addr, "POST", "/flagger/rollout", Some(TOKEN), &payload).await;
    assert_eq!(code, 400, "no defaults and no metadata: nothing to run");
    assert!(body.starts_with("no tape: "), "{body}");
    let (code, _, body) = http(
        addr,
        "POST",
        "/flagger/confirm-promotion",
        Some(TOKEN),
        &payload,
    )
    .await;
    assert_eq!(code, 412);
    assert!(body.contains("no run for shop/web checksum c1"), "{body}");

    // Routing.
    assert_eq!(
        http(addr, "DELETE", "/v1/runs", Some(TOKEN), b"").await.0,
        405
    );
    assert_eq!(
        http(addr, "GET", "/flagger/rollout", Some(TOKEN), b"")
            .await
            .0,
        405
    );
    assert_eq!(http(addr, "GET", "/nope", Some(TOKEN), b"").await.0, 404);
    assert_eq!(
        http(addr, "GET", "/v1/runs/nope", Some(TOKEN), b"").await.0,
        404
    );
    assert_eq!(
        http(addr, "GET", "/v1/runs/nope/report.md", Some(TOKEN), b"")
            .await
            .0,
        404
    );
    let (code, _, body) = http(addr, "GET", "/v1/runs", Some(TOKEN), b"").await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["runs"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_kept_in_state_json_and_answer_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let server = serve(spec(&runs, true)).await;
    let addr = server.addr;

    let (code, _, body) = http(addr, "POST", "/v1/runs", Some(TOKEN), br#"{"id":"r1"}"#).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(json(&body)["status"], "pending");
    let done = wait_done(addr, "r1").await;
    assert_eq!(done["status"], "error", "{done:#}");
    assert_eq!(done["phase"], "error");
    let message = done["message"].as_str().expect("message").to_owned();
    assert!(message.contains("no-such-tape"), "{message}");
    // The id is an idempotency key: no new run, the same answer.
    let (code, _, body) = http(addr, "POST", "/v1/runs", Some(TOKEN), br#"{"id":"r1"}"#).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["message"], message.as_str());
    let state = json(&std::fs::read_to_string(runs.join("r1/state.json")).expect("state.json"));
    assert_eq!(state["status"], "error");
    assert_eq!(state["spec"]["baseline"], "http://127.0.0.1:9");
    assert!(!runs.join("r1/state.json.tmp").exists());

    // Flagger: the run keyed by the checksum errors; rollout refuses with 412 and one line.
    let payload = flagger("c-err", serde_json::json!({"candidate_version": "v2"}));
    let (code, _, body) = http(addr, "POST", "/flagger/pre-rollout", Some(TOKEN), &payload).await;
    assert_eq!(code, 200, "{body}");
    let done = wait_done(addr, "flagger-shop-web-c-err").await;
    assert_eq!(done["status"], "error", "{done:#}");
    assert_eq!(done["flagger"], "shop/web checksum c-err");
    let (code, _, body) = http(addr, "POST", "/flagger/rollout", Some(TOKEN), &payload).await;
    assert_eq!(code, 412);
    assert!(
        body.starts_with("tapedeck run flagger-shop-web-c-err: error: "),
        "{body}"
    );
    assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    for hook in ["confirm-promotion", "rollback"] {
        let path = format!("/flagger/{hook}");
        assert_eq!(
            http(addr, "POST", &path, Some(TOKEN), &payload).await.0,
            412,
            "{hook}"
        );
    }
    server.stop().await;

    // A new server on the same directory answers for both runs.
    let server = serve(spec(&runs, true)).await;
    let (code, _, body) = http(server.addr, "GET", "/v1/runs", Some(TOKEN), b"").await;
    assert_eq!(code, 200);
    let mut ids: Vec<String> = json(&body)["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["flagger-shop-web-c-err", "r1"]);
    let (code, _, body) = http(server.addr, "GET", "/v1/runs/r1/verdict", Some(TOKEN), b"").await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["message"], message.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_runs_start_again_and_old_runs_are_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(&runs).expect("runs");
    // A run a stop interrupted (state `running`, a half-written report), an unreadable state
    // and a state whose id is not its directory's name.
    let interrupted = serde_json::json!({
        "id": "cut", "status": "running", "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": "2026-01-01T00:00:01.000Z", "finished_at": null, "message": null,
        "title": null, "flagger": null,
        "spec": {"tape": [runs.join("gone").display().to_string()], "baseline": "http://127.0.0.1:9",
                 "candidate": "http://127.0.0.1:9", "secondary": null, "baseline_version": null,
                 "candidate_version": null, "extra": ["--rate", "5"]}
    });
    std::fs::create_dir_all(runs.join("cut/report/run")).expect("report");
    std::fs::write(runs.join("cut/report/run/stale"), "x").expect("stale");
    std::fs::write(runs.join("cut/state.json"), interrupted.to_string()).expect("state");
    std::fs::create_dir_all(runs.join("junk")).expect("junk");
    std::fs::write(runs.join("junk/state.json"), "{").expect("junk state");
    std::fs::create_dir_all(runs.join("other")).expect("other");
    std::fs::write(runs.join("other/state.json"), interrupted.to_string()).expect("other state");

    let mut spec = spec(&runs, true);
    spec.keep_runs = 1;
    let server = serve(spec).await;
    let addr = server.addr;
    let done = wait_done(addr, "cut").await;
    assert_eq!(done["status"], "error", "{done:#}");
    assert!(
        done["message"].as_str().is_some_and(|m| m.contains("gone")),
        "{done:#}"
    );
    assert!(
        !runs.join("cut/report/run/stale").exists(),
        "the stale report was cleared"
    );
    assert_eq!(
        http(addr, "GET", "/v1/runs/junk", Some(TOKEN), b"").await.0,
        404
    );
    assert_eq!(
        http(addr, "GET", "/v1/runs/other", Some(TOKEN), b"")
            .await
            .0,
        404
    );

    // keep_runs = 1: once a newer run finishes, `cut` is deleted, state and directory.
    let (code, _, _) = http(addr, "POST", "/v1/runs", Some(TOKEN), br#"{"id":"newer"}"#).await;
    assert_eq!(code, 202);
    assert_eq!(wait_done(addr, "newer").await["status"], "error");
    let mut pruned = false;
    for _ in 0..200 {
        if http(addr, "GET", "/v1/runs/cut", Some(TOKEN), b"").await.0 == 404
            && !runs.join("cut").exists()
        {
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pruned, "the older run was not pruned");
    assert!(runs.join("newer/state.json").is_file());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_runs_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("file");
    let e = Server::start(spec(&file.join("runs"), false))
        .await
        .expect_err("a runs directory under a file");
    assert!(
        matches!(&e, ServeError::RunsDir { doing: "creating", path, .. } if path == &file.join("runs")),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("creating {}", file.join("runs").display())
    );
    assert!(std::error::Error::source(&e).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("addr");
    let mut s = spec(&dir.path().join("runs"), false);
    s.listen = addr;
    let e = Server::start(s).await.expect_err("the address is taken");
    assert!(
        matches!(&e, ServeError::Bind { addr: a, .. } if *a == addr),
        "{e:?}"
    );
    assert_eq!(e.to_string(), format!("listening on {addr}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_clear_interrupted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(runs.join("cut")).expect("run dir");
    let state = serde_json::json!({
        "id": "cut", "status": "queued", "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": null, "finished_at": null, "message": null, "title": null, "flagger": null,
        "spec": {"tape": ["t"], "baseline": "b", "candidate": "c", "secondary": null,
                 "baseline_version": null, "candidate_version": null}
    });
    std::fs::write(runs.join("cut/state.json"), state.to_string()).expect("state");
    // `report` is a file: it cannot be cleared as a directory.
    std::fs::write(runs.join("cut/report"), "not a directory").expect("report file");
    let e = Server::start(spec(&runs, false))
        .await
        .expect_err("the interrupted run cannot be cleared");
    assert!(
        matches!(&e, ServeError::ClearInterrupted { path, .. } if path == &runs.join("cut/report")),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "clearing the interrupted run's {}",
            runs.join("cut/report").display()
        )
    );
}
