//! The writer's hand-off (issue 13): batches, the byte bound, the order of records, and the
//! low-priority seal thread — through the real writer threads and files.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tapedeck_storage::{BatchOutcome, Exchange, Filter, Tape, TapeWriter, WhenFull};

/// All in one hour partition, so a tape of one segment reads back in append order.
const T0: i64 = 1_767_225_600_000_000;

fn rec(i: usize, body: usize) -> Exchange {
    Exchange {
        id: Exchange::new_id(),
        started_at_us: T0 + i as i64,
        path: format!("/r/{i}").into(),
        status: Some(200),
        resp_body: Bytes::from(vec![b'x'; body]),
        resp_body_size: body as u64,
        ..Exchange::default()
    }
}

fn paths(dir: &Path) -> Vec<String> {
    Tape::open(&[dir])
        .unwrap()
        .exchanges(Filter::default())
        .map(|e| e.unwrap().path.into_string())
        .collect()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn batches_keep_their_order_and_a_record_over_the_byte_bound_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path())
        // Room for every small record even if the spool thread takes none before the end.
        .queue_bytes(1 << 20)
        .open()
        .unwrap();
    let sender = w.sender();
    let mut expected = Vec::new();
    let mut dropped = 0;
    for b in 0..20 {
        let mut batch: Vec<Exchange> = (0..10).map(|k| rec(b * 10 + k, 100)).collect();
        if b % 5 == 2 {
            // 2 MiB of body: more than the whole 1 MiB bound, so it can never fit.
            batch[3] = rec(b * 10 + 3, 2 << 20);
            dropped += 1;
        }
        expected.extend(
            batch
                .iter()
                .filter(|e| e.resp_body.len() < 1000)
                .map(|e| e.path.clone()),
        );
        let want = BatchOutcome {
            accepted: batch.iter().filter(|e| e.resp_body.len() < 1000).count(),
            dropped_full: batch.len() - batch.iter().filter(|e| e.resp_body.len() < 1000).count(),
            dropped_closed: 0,
        };
        assert_eq!(sender.append_batch(batch), want);
    }
    assert_eq!(sender.append_batch(Vec::new()), BatchOutcome::default());
    let stats = w.close().unwrap();
    assert_eq!(stats.dropped_queue_full, dropped);
    assert_eq!(stats.appended, 200 - dropped);
    assert_eq!(stats.written, 200 - dropped);
    assert_eq!((stats.queue_depth, stats.queue_bytes), (0, 0));
    assert_eq!(paths(dir.path()), expected);
}

#[test]
fn the_byte_bound_counts_record_sizes() {
    // A bound that holds exactly two of these records: a batch of three keeps two (unless the
    // spool thread already released the first ones, which only makes room).
    let one = rec(0, 1000).mem_size();
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path())
        .queue_bytes(2 * one + one / 2)
        .open()
        .unwrap();
    let out = w.append_batch((0..3).map(|i| rec(i, 1000)).collect());
    assert_eq!(out.accepted + out.dropped_full, 3);
    assert!(out.accepted >= 2, "{out:?}");
    // Whatever was accepted is written; whatever was not is counted.
    let stats = w.close().unwrap();
    assert_eq!(stats.written as usize, out.accepted);
    assert_eq!(stats.dropped_queue_full as usize, out.dropped_full);
}

#[test]
fn block_writes_a_record_larger_than_the_bound_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path())
        .when_full(WhenFull::Block)
        .queue_bytes(16 << 10)
        .queue_capacity(4)
        .open()
        .unwrap();
    let sender = w.sender();
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let s = sender.clone();
            std::thread::spawn(move || {
                for b in 0..10 {
                    let batch = (0..5)
                        .map(|k| rec(t * 1000 + b * 5 + k, if k == 2 { 40 << 10 } else { 500 }))
                        .collect();
                    assert_eq!(s.append_batch(batch).accepted, 5);
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let stats = w.close().unwrap();
    assert_eq!((stats.written, stats.dropped()), (150, 0));
    // Each producer's records stay in its order.
    let got = paths(dir.path());
    assert_eq!(got.len(), 150);
    for t in 0..3 {
        let mine: Vec<usize> = got
            .iter()
            .filter_map(|p| p.strip_prefix("/r/")?.parse().ok())
            .filter(|i| i / 1000 == t)
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "producer {t}: {mine:?}"
        );
    }
}

#[test]
fn a_sender_used_after_close_counts_its_records_as_closed() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path()).open().unwrap();
    let sender = w.sender();
    w.close().unwrap();
    let out = sender.append_batch(vec![rec(0, 10), rec(1, 10)]);
    assert_eq!(
        out,
        BatchOutcome {
            dropped_closed: 2,
            ..BatchOutcome::default()
        }
    );
    assert!(sender.append(rec(2, 10)).is_err());
    assert_eq!(sender.stats().dropped_closed, 3);
}

/// Nice value (field 19 of `/proc/self/task/<tid>/stat`) of each of this process's threads
/// with this name.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
        // Fields after the `(comm)` start at field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        if let Some(nice) = rest.split_whitespace().nth(16) {
            out.push(nice.parse().unwrap());
        }
    }
    out
}

#[test]
fn the_seal_threads_run_at_their_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path()).open().unwrap();
    // Other tests' writers run in this process too: every idle lane is at nice 19, every
    // normal lane at 0. A new thread takes its name (and the idle lane its nice value) a
    // moment after it starts, hence the wait.
    let lanes = || {
        (
            nice_of_threads("tape-seal-idle"),
            nice_of_threads("tape-seal"),
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (idle, normal) = lanes();
            !idle.is_empty()
                && idle.iter().all(|&x| x == 19)
                && !normal.is_empty()
                && normal.iter().all(|&x| x == 0)
        }),
        "{:?}",
        lanes()
    );
    w.append(rec(0, 10)).unwrap();
    let stats = w.close().unwrap();
    assert_eq!((stats.written, stats.files_sealed), (1, 1));
}

#[test]
fn over_the_backlog_bound_segments_are_sealed_while_the_writer_is_open() {
    let dir = tempfile::tempdir().unwrap();
    // Every flush closes a segment (1-byte segments), and any closed segment is over the 1-byte
    // backlog bound: the normal-priority lane seals them, however busy the machine is.
    let w = TapeWriter::builder(dir.path())
        .segment_max_bytes(1)
        .seal_backlog(1)
        .open()
        .unwrap();
    for i in 0..5 {
        w.append(rec(i, 100)).unwrap();
        w.flush().unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = w.stats();
            s.files_sealed >= 5 && s.seal_backlog_bytes == 0
        }),
        "{:?}",
        w.stats()
    );
    w.close().unwrap();
    assert_eq!(paths(dir.path()).len(), 5);
}

#[test]
fn seal_backlog_zero_seals_each_segment_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path())
        .seal_backlog(0)
        .segment_max_bytes(1)
        .open()
        .unwrap();
    for i in 0..3 {
        w.append(rec(i, 10)).unwrap();
        w.flush().unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(60), || w.stats().files_sealed >= 3),
        "{:?}",
        w.stats()
    );
    let stats = w.close().unwrap();
    assert_eq!((stats.written, stats.files_sealed), (3, 3));
}
