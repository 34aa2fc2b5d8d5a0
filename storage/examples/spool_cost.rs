//! A driver for measuring the tape writer's per-record cost with callgrind (issue 13).
//!
//! Appends N records shaped like the macro benchmark's exchanges to a fresh tape, then closes it
//! (which seals). Run it twice under callgrind with two record counts and divide the difference
//! of each thread's instructions by the difference of the counts:
//!
//! ```text
//! cargo build --release -p tapedeck-storage --example spool_cost
//! valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.%p \
//!     target/release/examples/spool_cost --records 2000 --body 278
//! ```
//!
//! Flags: `--records N` (default 10000), `--body BYTES` (response body size, default 278: the
//! macro benchmark's `/small`; 16384 is `/large`), `--batch K` (records per
//! `append_batch`, default 64; 1 uses `append`), `--dir DIR` (default: a temp dir, removed),
//! `--seal-backlog`, `--queue-bytes`, `--flush-bytes`, `--row-group-bytes` (bytes; the writer's
//! settings, default theirs).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use tapedeck_storage::{Exchange, Header, TapeWriter, WhenFull, now_us};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// What the recorder builds for `wrk` fetching a JSON document through it from nginx.
fn record(body: &Bytes, i: usize) -> Exchange {
    let start = now_us();
    Exchange {
        id: Exchange::new_id(),
        source: "127.0.0.1:8081".into(),
        started_at_us: start,
        ttfb_us: Some(180),
        duration_us: Some(210),
        total_us: Some(230),
        client_addr: Some(format!("127.0.0.1:{}", 40000 + i % 64).into()),
        method: "GET".into(),
        scheme: "http".into(),
        authority: "127.0.0.1:8080".into(),
        path: "/small".into(),
        query: None,
        http_version: "HTTP/1.1".into(),
        req_headers: vec![Header::new("host", Bytes::from_static(b"127.0.0.1:8080"))],
        req_body: Bytes::new(),
        req_body_size: 0,
        req_body_truncated: false,
        status: Some(200),
        resp_headers: vec![
            Header::new("server", Bytes::from_static(b"nginx/1.22.1")),
            Header::new("date", Bytes::from_static(b"Mon, 30 Nov 2026 10:00:00 GMT")),
            Header::new("content-type", Bytes::from_static(b"application/json")),
            Header::new("content-length", Bytes::from(body.len().to_string())),
            Header::new("connection", Bytes::from_static(b"keep-alive")),
        ],
        // Each record owns its body, as a recorded exchange does (a shared one would hide the
        // memory the queue holds).
        resp_body: Bytes::copy_from_slice(body),
        resp_body_size: body.len() as u64,
        ..Exchange::default()
    }
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let records = arg("--records", 10_000);
    let body_len = arg("--body", 278);
    let batch = arg("--batch", 64).max(1);
    let body = Bytes::from(
        "{\"lorem\":\"ipsum dolor sit amet\"}"
            .repeat(body_len / 32 + 1)
            .into_bytes()[..body_len]
            .to_vec(),
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::args()
        .position(|a| a == "--dir")
        .and_then(|i| std::env::args().nth(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("tape"));
    // Block: every record is written, so counts are exact whatever the machine's load.
    let mut b = TapeWriter::builder(&dir).when_full(WhenFull::Block);
    if std::env::args().any(|a| a == "--seal-backlog") {
        b = b.seal_backlog(arg("--seal-backlog", 1 << 30) as u64);
    }
    if std::env::args().any(|a| a == "--queue-bytes") {
        b = b.queue_bytes(arg("--queue-bytes", 64 << 20));
    }
    if std::env::args().any(|a| a == "--flush-bytes") {
        b = b.flush_bytes(arg("--flush-bytes", 1 << 20));
    }
    if std::env::args().any(|a| a == "--row-group-bytes") {
        b = b.row_group_bytes(arg("--row-group-bytes", 64 << 20));
    }
    let writer = b.open().expect("open tape");
    // One sender for the loop: records come back to it to be freed on this thread.
    let sender = writer.sender();
    let t0 = Instant::now();
    let mut i = 0;
    while i < records {
        let n = batch.min(records - i);
        let recs: Vec<Exchange> = (i..i + n).map(|k| record(&body, k)).collect();
        i += n;
        if batch == 1 {
            for r in recs {
                writer.append(r).expect("append");
            }
        } else {
            let sent = sender.append_batch(recs);
            assert_eq!(sent.accepted, n, "Block never drops");
        }
    }
    let appended = t0.elapsed();
    drop(sender);
    let peak_appending = peak_rss_mib();
    let stats = writer.close().expect("close");
    eprintln!(
        "records {records} body {body_len} batch {batch}: appended in {:.1} ms (peak RSS {peak_appending:.1} MiB), closed after {:.1} ms (peak RSS {:.1} MiB); written {} sealed files {} bytes spooled {} sealed {}",
        appended.as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64() * 1e3,
        peak_rss_mib(),
        stats.written,
        stats.files_sealed,
        stats.bytes_spooled,
        stats.bytes_sealed
    );
    assert_eq!(stats.written, records as u64);
}
