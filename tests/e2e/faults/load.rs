//! The recorder under load, stopped gracefully (nothing answered is lost) and killed (at most
//! the last flush intervals are lost; the spool is recovered on restart).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tapedeck_storage::now_us;

use super::{STOP, T, inspect_json, recorder, s};
use crate::util::{
    Engine, Recorder, Reply, TestServer, assert_exit, curl, read_tape, rt, run, stderr, wait_until,
};

/// One request that completed with a 2xx and a whole body, as the client saw it.
#[derive(Debug, Clone)]
struct Done {
    path: String,
    /// `now_us()` right after the body was read.
    at_us: i64,
}

/// Load from `tasks` hyper client tasks, each sending up to `per_task` GETs to
/// `{base}/load/{task}/{i}` until `stop` is set or a request fails twice in a row after
/// `stop` (the proxy is gone). Returns every request that completed with a 2xx.
fn drive_load(
    base: String,
    tasks: usize,
    per_task: usize,
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
) -> (Vec<Done>, usize) {
    rt().block_on(async move {
        let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(tasks)
            .build_http();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (c, base, stop, completed) =
                (c.clone(), base.clone(), stop.clone(), completed.clone());
            handles.push(tokio::spawn(async move {
                let mut done = Vec::new();
                let mut sent = 0usize;
                let deadline = Instant::now() + Duration::from_secs(60);
                for i in 0..per_task {
                    if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let path = format!("/load/{t}/{i}");
                    let req = hyper::Request::builder()
                        .uri(format!("{base}{path}"))
                        .header("x-fault-id", &path)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    sent += 1;
                    let res = tokio::time::timeout(Duration::from_secs(30), async {
                        let resp = c.request(req).await.ok()?;
                        let status = resp.status();
                        let body = resp.into_body().collect().await.ok()?.to_bytes();
                        Some((status, body))
                    })
                    .await;
                    match res {
                        Ok(Some((status, body)))
                            if status.is_success() && body.as_ref() == path.as_bytes() =>
                        {
                            completed.fetch_add(1, Ordering::Relaxed);
                            done.push(Done {
                                path,
                                at_us: now_us(),
                            });
                        }
                        // A failure after the proxy was told to stop ends this task.
                        _ => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                (done, sent)
            }));
        }
        let mut all = Vec::new();
        let mut sent = 0;
        for h in handles {
            let (d, n) = h.await.expect("load task");
            all.extend(d);
            sent += n;
        }
        (all, sent)
    })
}

/// An upstream that answers every request with its own path as the body.
fn echo_path_upstream() -> TestServer {
    TestServer::start(|r| {
        let mut reply = Reply::text(200, r.uri.clone());
        reply.headers.push(("x-upstream".into(), "yes".into()));
        reply
    })
}

/// The load of [`drive_load`] against `rec` on a thread, once 4,000 requests have completed
/// (bounded); set the returned flag to stop it.
fn start_load(
    rec: &Recorder,
    tasks: usize,
    per_task: usize,
) -> (std::thread::JoinHandle<(Vec<Done>, usize)>, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (base, stop, completed) = (rec.url(""), stop.clone(), completed.clone());
        std::thread::spawn(move || drive_load(base, tasks, per_task, stop, completed))
    };
    assert!(
        wait_until(Duration::from_secs(60), || completed
            .load(Ordering::Relaxed)
            >= 4000),
        "load never got going"
    );
    (load, stop)
}

fn graceful_stop_under_load_keeps_every_answered_exchange(engine: Engine) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 2500;
    let up = echo_path_upstream();
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let mut rec = recorder(&up.url(), dir.path(), engine).start(dir.path());
    let (load, stop) = start_load(&rec, TASKS, PER_TASK);
    // SIGTERM while the clients are still sending.
    rec.proc.signal("TERM");
    let status = rec.proc.wait_timeout(STOP).expect("exit after SIGTERM");
    stop.store(true, Ordering::Relaxed);
    let (done, sent) = load.join().expect("load thread");
    assert!(status.success(), "recorder exited with {status}");
    assert!(
        done.len() < TASKS * PER_TASK,
        "the stop came after the load ended; raise PER_TASK"
    );
    let tape_rows = read_tape(&tape);
    let on_tape: HashSet<&str> = tape_rows
        .iter()
        .filter(|e| e.status == Some(200))
        .map(|e| e.path.as_str())
        .collect();
    let lost: Vec<&Done> = done
        .iter()
        .filter(|d| !on_tape.contains(d.path.as_str()))
        .collect();
    eprintln!(
        "graceful stop: sent {sent}, completed {}, tape rows {}, lost {}",
        done.len(),
        tape_rows.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "answered but not recorded: {lost:?}");
    let mut paths: Vec<&str> = tape_rows.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    let n = paths.len();
    paths.dedup();
    assert_eq!(paths.len(), n, "no exchange recorded twice");
    let v = inspect_json(&tape);
    assert_eq!(v["files"]["spool"], 0, "the tape is sealed: {v}");
}

fn crash_under_load_loses_at_most_the_last_flush_intervals(engine: Engine) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 2500;
    const FLUSH_US: i64 = 200_000;
    // Scheduling slack on a loaded 2-core debug build: the record reaches the writer thread
    // shortly after the client has its response.
    const SLACK_US: i64 = 2_000_000;
    let up = echo_path_upstream();
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let recorder = recorder(&up.url(), dir.path(), engine).args(&["--flush-interval", "200ms"]);
    let mut rec = recorder.clone().start(dir.path());
    let (load, stop) = start_load(&rec, TASKS, PER_TASK);
    let killed_at = now_us();
    rec.proc.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    rec.proc.wait_timeout(STOP).expect("killed");
    let (done, sent) = load.join().expect("load thread");
    let files_before = inspect_json(&tape);
    assert!(
        files_before["files"]["spool"].as_u64().unwrap_or(0) >= 1,
        "a killed recorder leaves its spool behind: {files_before}"
    );

    // A crash can also tear the last write: cut a few bytes off the newest spool segment.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(tape.join("spool"))
        .expect("spool dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "arrows"))
        .collect();
    segments.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    if let Some(last) = segments.last() {
        let len = std::fs::metadata(last).expect("segment").len();
        if len > 64 {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(last)
                .expect("open segment");
            f.set_len(len - 7).expect("truncate segment");
        }
    }
    // Restart on the same tape dir: the spool is recovered and sealed.
    let rec = recorder.start(dir.path());
    assert_eq!(curl(&[&rec.url("/after-restart")]).0, 200);
    let rows = rec.stop();
    let v = inspect_json(&tape);
    assert_eq!(v["files"]["spool"], 0, "recovered and sealed: {v}");
    assert!(rows.iter().any(|e| e.path == "/after-restart"));
    let on_tape: HashSet<&str> = rows.iter().map(|e| e.path.as_str()).collect();
    let missing: Vec<&Done> = done
        .iter()
        .filter(|d| !on_tape.contains(d.path.as_str()))
        .collect();
    let oldest_missing_age_us = missing
        .iter()
        .map(|d| killed_at - d.at_us)
        .max()
        .unwrap_or(0);
    eprintln!(
        "crash: sent {sent}, completed {}, recovered rows {}, missing {} (oldest {} ms before the kill)",
        done.len(),
        rows.len(),
        missing.len(),
        oldest_missing_age_us / 1000
    );
    assert!(
        // The unflushed batch plus the torn one cut above: two flush intervals.
        oldest_missing_age_us <= 2 * FLUSH_US + SLACK_US,
        "lost an exchange answered {} ms before the kill: {:?}",
        oldest_missing_age_us / 1000,
        missing.first()
    );
    let mut paths: Vec<&str> = rows.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    let n = paths.len();
    paths.dedup();
    assert_eq!(paths.len(), n, "no exchange recovered twice");
}

/// `tapedeck seal`: what a killed recorder left in its spool is sealed without starting a
/// recorder; a tape a recorder is writing to is refused (it seals its own spool).
#[test]
fn seal_command_seals_what_a_killed_recorder_left() {
    let up = echo_path_upstream();
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let mut rec = recorder(&up.url(), dir.path(), Engine::Hyper)
        .args(&["--flush-interval", "50ms"])
        .start(dir.path());
    for i in 0..20 {
        assert_eq!(curl(&[&rec.url(&format!("/left/{i}"))]).0, 200);
    }
    let busy = run(&["seal", s(&tape)], STOP);
    assert_exit(&busy, 2, "seal of a tape a recorder writes to");
    assert!(stderr(&busy).contains("in use"), "{}", stderr(&busy));
    // Every record reached the spool (flushed, not sealed), then the recorder dies.
    assert!(
        wait_until(T, || read_tape(&tape).len() == 20),
        "20 records in the spool"
    );
    rec.proc.signal("KILL");
    rec.proc.wait_timeout(STOP).expect("killed");
    assert!(inspect_json(&tape)["files"]["spool"].as_u64().unwrap_or(0) >= 1);

    let out = run(&["seal", s(&tape)], STOP);
    assert_exit(&out, 0, "seal of a killed recorder's tape");
    assert!(stderr(&out).contains("20 exchanges"), "{}", stderr(&out));
    let v = inspect_json(&tape);
    assert_eq!(v["files"]["spool"], 0, "sealed: {v}");
    let mut paths: Vec<String> = read_tape(&tape)
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    paths.sort_unstable();
    let mut want: Vec<String> = (0..20).map(|i| format!("/left/{i}")).collect();
    want.sort_unstable();
    assert_eq!(paths, want);

    let again = run(&["seal", s(&tape)], STOP);
    assert_exit(&again, 0, "seal with nothing left");
    assert!(
        stderr(&again).contains("nothing to seal"),
        "{}",
        stderr(&again)
    );
    let missing = dir.path().join("no-such-tape");
    let none = run(&["seal", s(&missing)], STOP);
    assert_exit(&none, 2, "seal of a missing tape");
    assert!(!missing.exists(), "nothing is created");
}

on_both_engines!(
    graceful_stop_under_load_keeps_every_answered_exchange,
    crash_under_load_loses_at_most_the_last_flush_intervals,
);
