//! The tape writer behind the proxy: an unwritable or full disk, a full queue (by records or
//! bytes) never touches traffic; every request is recorded or counted as dropped, and the exit
//! summary says the same as `/metrics`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;

use super::{STOP, client, metric, recorder, send, upstream_handler};
use crate::util::{Engine, Recorder, Reply, TestServer, curl, read_tape, rt, wait_until};

/// A directory nobody can write, even root: a read-only tmpfs when we may mount one, else a
/// chmod'ed directory (enough for a non-root user), else a path under a regular file.
struct Unwritable {
    path: PathBuf,
    mounted: bool,
}

impl Unwritable {
    fn new(base: &Path) -> Unwritable {
        let path = base.join("ro");
        std::fs::create_dir_all(&path).expect("mkdir");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if root {
            let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
            let p = path.to_str().expect("utf-8");
            if ok(Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", p])) {
                if ok(Command::new("mount").args(["-o", "remount,ro", p])) {
                    return Unwritable {
                        path,
                        mounted: true,
                    };
                }
                let _ = Command::new("umount").arg(p).status();
            }
            // Root ignores permissions: put the tape under a regular file instead.
            let file = base.join("not-a-dir");
            std::fs::write(&file, b"x").expect("file");
            return Unwritable {
                path: file.join("tape"),
                mounted: false,
            };
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        Unwritable {
            path,
            mounted: false,
        }
    }
}

impl Unwritable {
    /// Makes the place writable again (remount rw, remove the blocking file, chmod).
    fn heal(&mut self) {
        if self.mounted {
            let ok = Command::new("mount")
                .args(["-o", "remount,rw"])
                .arg(&self.path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "remount rw failed");
        } else if let Some(parent) = self.path.parent().filter(|p| p.is_file()) {
            std::fs::remove_file(parent).expect("remove blocking file");
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
        }
    }
}

fn read_only_tape_dir_keeps_traffic_flowing(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = Unwritable::new(dir.path());
    let rec = Recorder::builder(&up.url())
        .tape(&ro.path)
        .engine(engine)
        .start(dir.path());
    for i in 0..5 {
        let (status, body) = curl(&[&rec.url(&format!("/ro/{i}"))]);
        assert_eq!(status, 200);
        assert_eq!(body, format!("{{\"path\":\"/ro/{i}\"}}"));
    }
    let (_, metrics) = rec.admin_get("/metrics");
    assert!(metrics.contains("tapedeck_requests_total 5\n"), "{metrics}");
    assert!(
        metrics.contains("tapedeck_dropped_total{reason=\"unavailable\"} 5\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapedeck_writer_degraded 1\n"),
        "{metrics}"
    );
    let (code, health) = rec.admin_get("/healthz");
    assert_eq!(code, 200, "fail-open: liveness must not restart the proxy");
    let h: serde_json::Value = serde_json::from_str(&health).expect("json");
    assert_eq!(h["status"], "degraded", "{health}");
    assert!(
        h["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot open tape")),
        "{health}"
    );
    let (code, _) = rec.admin_get("/healthz?strict");
    assert_eq!(code, 503);

    // The disk comes back: the recorder notices by itself and records again.
    let mut ro = ro;
    ro.heal();
    let mut health = String::new();
    let healed = wait_until(Duration::from_secs(30), || {
        health = rec.admin_get("/healthz").1;
        health.contains("\"ok\"")
    });
    assert!(healed, "recording never resumed: {health}");
    for i in 0..2 {
        assert_eq!(curl(&[&rec.url(&format!("/back/{i}"))]).0, 200);
    }
    let tape_dir = ro.path.clone();
    let tape = rec.stop();
    assert_eq!(up.requests().len(), 7);
    let paths: Vec<&str> = tape.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/back/0", "/back/1"],
        "only what came after the disk healed"
    );
    assert!(tape_dir.join("spool").is_dir());
    drop(ro);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A small tmpfs mounted for one test; unmounted on drop.
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(path: &Path, size: &str) -> Option<TinyFs> {
        std::fs::create_dir_all(path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| TinyFs(path.to_owned()))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn full_disk_drops_and_counts_while_traffic_flows(engine: Engine) {
    if !is_root() {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(fs) = TinyFs::mount(&dir.path().join("small"), "2m") else {
        eprintln!("skipped: cannot mount tmpfs here");
        return;
    };
    // ~600 KB of poorly compressible bytes per response.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let body: Bytes = (0..600_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into();
    let reply = body.clone();
    let up = TestServer::start(move |_| Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        chunks: vec![reply.clone()],
        delay: Duration::ZERO,
    });
    let rec = Recorder::builder(&up.url())
        .tape(&fs.0.join("tape"))
        .args(&["--flush-interval", "100ms"])
        .engine(engine)
        .start(dir.path());
    rt().block_on(async {
        let c = client(false);
        for i in 0..12 {
            let (s, _, got) = send(&c, "GET", &rec.url(&format!("/fill/{i}")), Bytes::new()).await;
            assert_eq!(s, 200);
            assert!(got == body, "response {i} corrupted");
        }
    });
    let mut metrics = String::new();
    let dropped = wait_until(Duration::from_secs(20), || {
        metrics = rec.admin_get("/metrics").1;
        metric(&metrics, "tapedeck_dropped_total{reason=\"io\"}") > 0
    });
    assert!(dropped, "no io drops counted on a full disk:\n{metrics}");
    assert_eq!(metric(&metrics, "tapedeck_requests_total"), 12);
    // The writer retries with a fresh segment after a failure, and the sealer deletes abandoned
    // segments (with the partial batch a failed write left in them), so space comes back until
    // every record has been handled. Wait for that: every record written or dropped, and the
    // tape's files unchanged for a while (on a loaded machine the sealer runs late: the filler
    // used to be written before it freed space, and the next records fitted again).
    let tape_files = || {
        let mut files = Vec::new();
        let mut stack = vec![fs.0.join("tape")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                match e.metadata() {
                    Ok(m) if m.is_dir() => stack.push(p),
                    Ok(m) => files.push((p, m.len())),
                    Err(_) => {}
                }
            }
        }
        files.sort();
        files
    };
    let mut last = tape_files();
    let mut stable_since = std::time::Instant::now();
    let settled = wait_until(Duration::from_secs(60), || {
        metrics = rec.admin_get("/metrics").1;
        let handled = metric(&metrics, "tapedeck_tape_written_total")
            + metric(&metrics, "tapedeck_dropped_total{reason=\"io\"}")
            == 12;
        let now = tape_files();
        if now != last {
            last = now;
            stable_since = std::time::Instant::now();
        }
        handled && stable_since.elapsed() > Duration::from_secs(1)
    });
    assert!(settled, "the writer did not settle:\n{metrics}\n{last:?}");
    // Take the rest of the space so that it stays full, then check what the next records do.
    let filler = fs.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 << 10];
        for _ in 0..64 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
    }
    rt().block_on(async {
        let c = client(false);
        for i in 0..3 {
            let (s, _, got) = send(&c, "GET", &rec.url(&format!("/full/{i}")), Bytes::new()).await;
            assert_eq!(s, 200);
            assert!(got == body, "response {i} corrupted");
        }
    });
    let mut health = String::new();
    let degraded = wait_until(Duration::from_secs(20), || {
        health = rec.admin_get("/healthz").1;
        metrics = rec.admin_get("/metrics").1;
        health.contains("degraded") && metric(&metrics, "tapedeck_writer_degraded") == 1
    });
    assert!(degraded, "not degraded on a full disk: {health}\n{metrics}");
    let h: serde_json::Value = serde_json::from_str(&health).expect("json");
    assert_eq!(h["status"], "degraded", "{health}");
    assert!(
        h["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{health}"
    );
    // Still serving after the disk filled up.
    assert_eq!(curl(&[&rec.url("/after")]).0, 200);
    let _ = std::fs::remove_file(&filler);
    let mut rec = rec;
    rec.proc.signal("TERM");
    let status = rec.proc.wait_timeout(STOP).expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    drop(rec);
    drop(fs);
}

fn every_request_is_recorded_or_counted_as_dropped(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    // A one-record queue: under concurrent load some records must be dropped (never blocked).
    let rec = recorder(&up.url(), dir.path(), engine)
        .args(&["--queue-capacity", "1"])
        .start(dir.path());
    let ok = rt().block_on(async {
        let c = client(false);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let c = c.clone();
            let url = rec.url(&format!("/q/{t}/"));
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..25 {
                    let (s, _, _) = send(&c, "GET", &format!("{url}{i}"), Bytes::new()).await;
                    ok += usize::from(s == 200);
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
    assert_eq!(ok, 200, "a full queue never fails a request");
    // Once the queues are empty, every request is either written or counted as dropped.
    let mut m = String::new();
    let settled = wait_until(Duration::from_secs(20), || {
        m = rec.admin_get("/metrics").1;
        metric(&m, "tapedeck_tape_written_total")
            + metric(&m, "tapedeck_dropped_total{reason=\"queue_full\"}")
            == 200
    });
    assert!(settled, "requests unaccounted for:\n{m}");
    assert_eq!(metric(&m, "tapedeck_requests_total"), 200, "{m}");
    let written = metric(&m, "tapedeck_tape_written_total");
    let tape = rec.stop();
    assert_eq!(tape.len() as u64, written, "{m}");
}

/// Issue 13: `--queue-bytes` bounds the records waiting for the tape writer in bytes. An
/// exchange larger than the whole bound is dropped and counted; the small ones around it are all
/// recorded (they fit even if the writer took none before the end); the traffic is untouched.
fn issue13_queue_bytes_drops_and_counts_what_does_not_fit_and_loses_nothing_else(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        .args(&["--queue-bytes", "64KiB"])
        .start(dir.path());
    // Every third exchange echoes a 100 KiB body (200 KiB recorded): more than the whole bound.
    let big = "b".repeat(100 << 10);
    let (ok, mut small) = rt().block_on(async {
        let c = client(false);
        let (mut ok, mut small) = (0, Vec::new());
        for i in 0..30 {
            if i % 3 == 0 {
                let url = rec.url(&format!("/echo?i={i}"));
                let (s, _, got) = send(&c, "POST", &url, Bytes::from(big.clone())).await;
                ok += usize::from(s == 201 && got == big.as_bytes());
            } else {
                let (s, _, _) = send(&c, "GET", &rec.url(&format!("/s/{i}")), Bytes::new()).await;
                ok += usize::from(s == 200);
                small.push(format!("/s/{i}"));
            }
        }
        (ok, small)
    });
    assert_eq!(ok, 30, "a full queue never touches a request or its body");
    let mut m = String::new();
    let settled = wait_until(Duration::from_secs(20), || {
        m = rec.admin_get("/metrics").1;
        metric(&m, "tapedeck_tape_written_total") == 20
            && metric(&m, "tapedeck_writer_queue_bytes") == 0
    });
    assert!(
        settled,
        "the small exchanges were not all written:
{m}"
    );
    assert_eq!(metric(&m, "tapedeck_requests_total"), 30, "{m}");
    assert_eq!(
        metric(&m, "tapedeck_dropped_total{reason=\"queue_full\"}"),
        10,
        "{m}"
    );
    assert_eq!(metric(&m, "tapedeck_recorded_total"), 20, "{m}");
    let mut paths: Vec<String> = rec
        .stop()
        .into_iter()
        .map(|e| e.path.into_string())
        .collect();
    paths.sort();
    small.sort();
    assert_eq!(paths, small);
}

/// The first number after `label` in `text` (thousands separators allowed).
fn number_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Issue 17: `/metrics` said `dropped{queue_full}=475` while the exit summary printed
/// "recorded 63 of 538 requests (63 written, 0 dropped)": drops in the hand-off in front of the
/// writer (and drops while the tape was unavailable) were left out. The summary now equals the
/// metrics, every reason listed.
fn issue_17_the_exit_summary_equals_the_metrics(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        .args(&[
            "--queue-capacity",
            "1",
            "--flush-interval",
            "200ms",
            "--exclude-path",
            "/skip/*",
        ])
        .start(dir.path());
    // A burst on 8 connections against a one-record queue: many records are dropped.
    rt().block_on(async {
        let c = client(false);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let c = c.clone();
            let url = rec.url(&format!("/burst/{t}/"));
            tasks.push(tokio::spawn(async move {
                for i in 0..40 {
                    let (s, _, _) = send(&c, "GET", &format!("{url}{i}"), Bytes::new()).await;
                    assert_eq!(s, 200, "a full queue never fails a request");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        for i in 0..5 {
            let (s, _, _) = send(&c, "GET", &rec.url(&format!("/skip/{i}")), Bytes::new()).await;
            assert_eq!(s, 200);
        }
    });
    // Once nothing is waiting any more, the counters no longer move.
    let writer_reasons = ["queue_full", "io", "closed"];
    let drop_reasons = ["queue_full", "io", "closed", "unavailable"];
    let skip_reasons = ["filter", "sample", "off"];
    let mut m = String::new();
    let settled = wait_until(Duration::from_secs(30), || {
        m = rec.admin_get("/metrics").1;
        let accounted = metric(&m, "tapedeck_tape_written_total")
            + writer_reasons
                .iter()
                .map(|r| metric(&m, &format!("tapedeck_dropped_total{{reason=\"{r}\"}}")))
                .sum::<u64>();
        metric(&m, "tapedeck_requests_total") == 325
            && metric(&m, "tapedeck_writer_queue_depth") == 0
            && accounted + metric(&m, "tapedeck_skipped_total{reason=\"filter\"}") == 325
    });
    assert!(settled, "the counters did not settle:\n{m}");
    let dropped = |r: &str| metric(&m, &format!("tapedeck_dropped_total{{reason=\"{r}\"}}"));
    assert!(
        dropped("queue_full") > 0,
        "the test needs queue drops to mean anything:\n{m}"
    );

    let mut proc = rec.proc;
    proc.signal("TERM");
    let status = proc.wait_timeout(STOP).expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    let err = std::fs::read_to_string(dir.path().join("tapedeck.stderr")).expect("stderr");
    let line = err
        .lines()
        .find(|l| l.starts_with("recorded "))
        .unwrap_or_else(|| panic!("no exit summary in:\n{err}"));
    let said = |label: &str| {
        number_after(line, label).unwrap_or_else(|| panic!("no `{label}` in {line:?}"))
    };
    assert_eq!(
        said("recorded "),
        metric(&m, "tapedeck_recorded_total"),
        "{line}\n{m}"
    );
    assert_eq!(
        said(" of "),
        metric(&m, "tapedeck_requests_total"),
        "{line}"
    );
    assert_eq!(
        said("written "),
        metric(&m, "tapedeck_tape_written_total"),
        "{line}"
    );
    let total_dropped: u64 = drop_reasons.iter().map(|r| dropped(r)).sum();
    assert_eq!(said("dropped "), total_dropped, "{line}");
    for r in drop_reasons {
        assert_eq!(
            said(&format!("{r} ")),
            dropped(r),
            "dropped {r}: {line}\n{m}"
        );
    }
    for r in skip_reasons {
        let metric_value = metric(&m, &format!("tapedeck_skipped_total{{reason=\"{r}\"}}"));
        assert_eq!(said(&format!("{r} ")), metric_value, "skipped {r}: {line}");
    }
    assert_eq!(said("skipped "), 5, "{line}");
    let tape = read_tape(&dir.path().join("tape"));
    assert_eq!(tape.len() as u64, metric(&m, "tapedeck_tape_written_total"));
}

on_both_engines!(
    read_only_tape_dir_keeps_traffic_flowing,
    full_disk_drops_and_counts_while_traffic_flows,
    every_request_is_recorded_or_counted_as_dropped,
    issue13_queue_bytes_drops_and_counts_what_does_not_fit_and_loses_nothing_else,
    issue_17_the_exit_summary_equals_the_metrics,
);
