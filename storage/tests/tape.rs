//! Tape round trips through the real writer threads and files: spool → seal → read, crash
//! recovery, damaged files, filters, permissions. (Over 800 lines: one fixture set, one topic —
//! the tape as files on disk.)
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tapedeck_storage::synth::{SynthConfig, generate};
use tapedeck_storage::{
    BatchOutcome, ErrorKind, Exchange, FileKind, Filter, Header, ReadOptions, StorageError, Tape,
    TapeWriter, WhenFull,
};

fn read_all(path: &Path) -> Vec<Exchange> {
    Tape::open(&[path])
        .unwrap()
        .exchanges(Filter::default())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn write_all(dir: &Path, exchanges: &[Exchange]) {
    let w = TapeWriter::builder(dir)
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    for e in exchanges {
        w.append(e.clone()).unwrap();
    }
    let stats = w.close().unwrap();
    assert_eq!(stats.written, exchanges.len() as u64);
    assert_eq!(stats.dropped(), 0);
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn sealed_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

fn arb_header() -> impl Strategy<Value = Header> {
    (
        "[a-zA-Z][a-zA-Z0-9-]{0,20}",
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(n, v)| Header::new(n, Bytes::from(v)))
}

fn arb_body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(Bytes::from),
        (1usize..300_000).prop_map(|n| Bytes::from(vec![0x5a; n])),
    ]
}

prop_compose! {
    fn arb_exchange()(
        t in 0i64..4_000_000_000_000_000,
        method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PATCH")],
        path in "/[a-z0-9/._-]{0,40}",
        query in proptest::option::of("[a-z0-9=&%]{0,30}"),
        req_headers in proptest::collection::vec(arb_header(), 0..12),
        resp_headers in proptest::collection::vec(arb_header(), 0..12),
        req_body in arb_body(),
        resp_body in arb_body(),
        status in proptest::option::of(100u16..600),
        truncated in any::<bool>(),
        err in proptest::option::of(0usize..ErrorKind::ALL.len()),
        ttfb in proptest::option::of(0i64..10_000_000),
        replay in any::<bool>(),
        flags in any::<u32>(),
    ) -> Exchange {
        let mut req_headers = req_headers;
        // Repeated headers must keep their order.
        if let Some(h) = req_headers.first().cloned() {
            req_headers.push(h);
        }
        Exchange {
            id: Exchange::new_id(),
            source: "prop".into(),
            started_at_us: t,
            ttfb_us: ttfb,
            duration_us: ttfb.map(|x| x + 5),
            total_us: None,
            client_addr: Some("127.0.0.1:5555".into()),
            method: method.into(),
            scheme: "http".into(),
            authority: "svc.test:8080".into(),
            path: path.into(),
            query,
            http_version: "HTTP/1.1".into(),
            req_headers,
            req_body_size: req_body.len() as u64 + u64::from(truncated),
            req_body,
            req_body_truncated: truncated,
            status,
            resp_headers,
            resp_body_size: resp_body.len() as u64,
            resp_body,
            resp_body_truncated: false,
            error_kind: err.map(|i| ErrorKind::ALL[i]),
            error: err.map(|_| "boom".to_owned()),
            flags,
            origin_id: replay.then(Exchange::new_id),
            target: replay.then(|| "candidate".to_owned()),
            scheduled_at_us: replay.then_some(t),
            sent_at_us: replay.then_some(t + 3),
            trace_id: (flags % 2 == 1).then(|| format!("{:032x}", t)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_spool_then_sealed(exchanges in proptest::collection::vec(arb_exchange(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let w = TapeWriter::builder(dir.path()).when_full(WhenFull::Block).open().unwrap();
        for e in &exchanges {
            w.append(e.clone()).unwrap();
        }
        // Unsealed: readable from the spool while the writer is open.
        w.flush().unwrap();
        let from_spool = read_all(dir.path());
        prop_assert_eq!(&from_spool, &exchanges);
        // Sealed: the same rows from Parquet (rows are grouped by hour; compare as sets by id).
        w.close().unwrap();
        let tape = Tape::open(&[dir.path()]).unwrap();
        prop_assert!(tape.files().iter().all(|f| f.kind == FileKind::Sealed));
        let mut sealed = read_all(dir.path());
        let mut expected = exchanges.clone();
        sealed.sort_by_key(|e| e.id);
        expected.sort_by_key(|e| e.id);
        prop_assert_eq!(sealed, expected);
    }
}

#[test]
fn sealed_files_are_partitioned_by_hour_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600_000_000i64;
    let base = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    let exchanges: Vec<Exchange> = [base + 10, base + hour + 10, base + 2 * hour + 10, base + 20]
        .into_iter()
        .map(|t| Exchange {
            id: Exchange::new_id(),
            started_at_us: t,
            ..Exchange::default()
        })
        .collect();
    write_all(dir.path(), &exchanges);
    let mut rel: Vec<String> = sealed_files(dir.path())
        .iter()
        .map(|p| {
            let p = p.strip_prefix(dir.path()).unwrap();
            p.parent().unwrap().display().to_string()
        })
        .collect();
    rel.sort();
    assert_eq!(
        rel,
        vec![
            "date=2026-01-01/hour=00",
            "date=2026-01-01/hour=01",
            "date=2026-01-01/hour=02"
        ]
    );
    for f in files_under(dir.path()) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
    for d in ["date=2026-01-01", "date=2026-01-01/hour=00", "spool"] {
        let mode = std::fs::metadata(dir.path().join(d))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{d} has mode {mode:o}");
    }
    assert_eq!(read_all(dir.path()).len(), 4);
}

#[test]
fn a_second_writer_on_the_same_tape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _w = TapeWriter::builder(dir.path()).open().unwrap();
    let err = TapeWriter::builder(dir.path()).open().unwrap_err();
    assert!(matches!(err, StorageError::InUse { .. }), "{err}");
}

#[test]
fn drop_policy_counts_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path())
        .queue_capacity(4)
        .flush_interval(Duration::from_secs(5))
        .open()
        .unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 5000,
        ..SynthConfig::default()
    })
    .collect();
    let mut refused = 0u64;
    for e in ex {
        if w.append(e).is_err() {
            refused += 1;
        }
    }
    let stats = w.close().unwrap();
    assert_eq!(stats.appended + stats.dropped_queue_full, 5000);
    assert_eq!(stats.dropped_queue_full, refused);
    assert_eq!(stats.written, stats.appended);
    assert_eq!(read_all(dir.path()).len() as u64, stats.written);
}

#[test]
fn batches_are_written_in_order_and_counted_like_single_appends() {
    let dir = tempfile::tempdir().unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 1000,
        ..SynthConfig::default()
    })
    .collect();
    let w = TapeWriter::builder(dir.path())
        .when_full(WhenFull::Block)
        .queue_capacity(2)
        .open()
        .unwrap();
    let sender = w.sender();
    sender.append(ex[0].clone()).unwrap();
    for chunk in ex[1..].chunks(64) {
        assert_eq!(sender.append_batch(chunk.to_vec()).accepted, chunk.len());
    }
    assert_eq!(sender.append_batch(Vec::new()), BatchOutcome::default());
    let stats = w.close().unwrap();
    assert_eq!((stats.appended, stats.written), (1000, 1000));
    assert_eq!(stats.dropped(), 0);
    let ids: Vec<_> = read_all(dir.path()).into_iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        ex.iter().map(|e| e.id).collect::<Vec<_>>(),
        "order kept"
    );
    // A batch offered after close is refused and counted, record by record.
    assert_eq!(
        sender.append_batch(ex[..10].to_vec()),
        BatchOutcome {
            dropped_closed: 10,
            ..BatchOutcome::default()
        }
    );
    assert_eq!(sender.stats().dropped_closed, 10);

    // The drop policy keeps what fits of a batch when the queue is full and counts every
    // record it drops; what it kept is on the tape.
    let dir = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(dir.path())
        .queue_capacity(1)
        .flush_interval(Duration::from_secs(5))
        .open()
        .unwrap();
    let (mut kept, mut refused) = (0u64, 0u64);
    for chunk in ex.chunks(50) {
        let out = w.sender().append_batch(chunk.to_vec());
        assert_eq!(out.accepted + out.dropped(), chunk.len());
        kept += out.accepted as u64;
        refused += out.dropped_full as u64;
    }
    assert!(
        refused > 0,
        "a one-record queue must refuse most of 50-record batches"
    );
    let stats = w.close().unwrap();
    assert_eq!((stats.appended, stats.dropped_queue_full), (kept, refused));
    assert_eq!(stats.appended + stats.dropped_queue_full, 1000);
    assert_eq!(read_all(dir.path()).len() as u64, stats.appended);
}

#[test]
fn filters_select_rows_and_prune_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<Exchange> = generate(&SynthConfig {
        count: 3000,
        mean_gap_us: 2000,
        ..SynthConfig::default()
    })
    .collect();
    let w = TapeWriter::builder(dir.path())
        .when_full(WhenFull::Block)
        .row_group_rows(500)
        .open()
        .unwrap();
    for e in &all {
        w.append(e.clone()).unwrap();
    }
    w.close().unwrap();

    let from = all[1000].started_at_us;
    let to = all[1500].started_at_us;
    let filter = Filter {
        from_us: Some(from),
        to_us: Some(to),
        methods: vec!["GET".into()],
        path_prefix: Some("/api/users".into()),
    };
    let expected: Vec<&Exchange> = all.iter().filter(|e| filter.matches(e)).collect();
    assert!(!expected.is_empty());
    let tape = Tape::open(&[dir.path()]).unwrap();
    let mut it = tape
        .scan(ReadOptions {
            filter: filter.clone(),
            columns: Some(vec!["id".into()]),
            ..ReadOptions::default()
        })
        .exchanges();
    let got: Vec<Exchange> = it.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got.iter().zip(&expected).all(|(g, e)| g.id == e.id));
    // Projection: the body was not read.
    assert!(got.iter().all(|g| g.resp_body.is_empty()));
    assert!(it.report().row_groups_pruned >= 3, "{:?}", it.report());
}

fn first_sealed(dir: &Path) -> PathBuf {
    sealed_files(dir).into_iter().next().unwrap()
}

#[test]
fn damaged_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 300,
        ..SynthConfig::default()
    })
    .collect();
    write_all(&dir.path().join("good"), &ex);
    let good = first_sealed(&dir.path().join("good"));
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(
        &garbage,
        b"this is not a parquet file at all, just some words",
    )
    .unwrap();
    let garbage_spool = dir.path().join("garbage.arrows");
    std::fs::write(&garbage_spool, vec![0xab; 4096]).unwrap();

    for bad in [&truncated, &garbage, &garbage_spool] {
        let tape = Tape::open(&[bad.as_path()]).unwrap();
        let err = tape
            .exchanges(Filter::default())
            .find_map(Result::err)
            .unwrap_or_else(|| panic!("{} read without error", bad.display()));
        assert!(err.is_file_damage(), "{err}");
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
    }

    // --skip-corrupt reads the good file and lists the bad ones.
    let tape = Tape::open(&[good.as_path(), &truncated, &garbage, &garbage_spool]).unwrap();
    let mut it = tape
        .scan(ReadOptions {
            skip_corrupt: true,
            ..ReadOptions::default()
        })
        .exchanges();
    let n = it.by_ref().collect::<Result<Vec<_>, _>>().unwrap().len();
    assert_eq!(n, 300);
    assert_eq!(it.report().files_skipped.len(), 3, "{:?}", it.report());
}

#[test]
fn a_file_from_a_future_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 10,
        ..SynthConfig::default()
    })
    .collect();
    let batch = tapedeck_storage::schema::encode(&ex);
    let path = dir.path().join("future.parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "tapedeck.schema_version".to_owned(),
            "99".to_owned(),
        )]))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let err = Tape::open(&[&path])
        .unwrap()
        .exchanges(Filter::default())
        .find_map(Result::err)
        .unwrap();
    assert!(
        matches!(err, StorageError::FutureSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade tapedeck"));
}

#[test]
fn a_truncated_spool_segment_reads_up_to_its_last_complete_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 400,
        ..SynthConfig::default()
    })
    .collect();
    let w = TapeWriter::builder(dir.path())
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    for e in &ex[..200] {
        w.append(e.clone()).unwrap();
    }
    w.flush().unwrap();
    for e in &ex[200..] {
        w.append(e.clone()).unwrap();
    }
    w.flush().unwrap();
    let seg = Tape::open(&[dir.path()]).unwrap().files()[0].path.clone();
    let copy = dir.path().join("copy.arrows");
    let bytes = std::fs::read(&seg).unwrap();
    // Cut into the second batch.
    std::fs::write(&copy, &bytes[..bytes.len() - 1000]).unwrap();
    drop(w);
    let tape = Tape::open(&[&copy]).unwrap();
    let mut it = tape.scan(ReadOptions::default()).exchanges();
    let got: Vec<Exchange> = it.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(got, ex[..200].to_vec());
    assert_eq!(it.report().partial_segments.len(), 1);
}

/// The child half of the crash test: appends synthetic exchanges forever, flushing every 50
/// rows and printing how many rows are safely in the spool. The parent kills it with SIGKILL.
#[test]
#[ignore = "run by crash_recovery_loses_at_most_the_last_flush as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("TAPEDECK_CRASH_DIR") else {
        return;
    };
    let w = TapeWriter::builder(&dir)
        .when_full(WhenFull::Block)
        .flush_interval(Duration::from_millis(100))
        .open()
        .unwrap();
    let mut n = 0u64;
    for e in generate(&SynthConfig {
        count: 1_000_000,
        ..SynthConfig::default()
    }) {
        w.append(e).unwrap();
        n += 1;
        if n.is_multiple_of(50) {
            w.flush().unwrap();
            println!("flushed {n}");
        }
        if n >= 200_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn crash_recovery_loses_at_most_the_last_flush() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TAPEDECK_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut flushed = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("flushed ") {
            flushed = n.trim().parse().unwrap();
        }
        if flushed >= 3000 || std::time::Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL by PID: no chance to flush or seal.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    let _ = child.wait();
    assert!(
        flushed >= 3000,
        "child reported only {flushed} flushed rows"
    );

    // Reopening recovers and seals the spool.
    let w = TapeWriter::builder(dir.path()).open().unwrap();
    let stats = w.close().unwrap();
    assert!(stats.recovered_segments >= 1);
    let tape = Tape::open(&[dir.path()]).unwrap();
    assert!(tape.files().iter().all(|f| f.kind == FileKind::Sealed));
    let got = read_all(dir.path());
    assert!(
        got.len() as u64 >= flushed,
        "lost flushed rows: {} < {flushed}",
        got.len()
    );
    // What was recovered is exactly a prefix of what the child wrote, without duplicates.
    let expected: Vec<Exchange> = generate(&SynthConfig {
        count: got.len() as u64,
        ..SynthConfig::default()
    })
    .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|e| e.id);
    let mut exp_sorted = expected;
    exp_sorted.sort_by_key(|e| e.id);
    assert!(
        got_sorted == exp_sorted,
        "recovered rows are not a prefix of the written sequence"
    );
}

/// Issue 8: `Tape::verify` finds a damaged later file before anything is streamed, names it,
/// honours `skip_corrupt`, reads no row data, and leaves out partitions the filter rules out.
#[test]
fn verify_finds_damaged_files_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 50,
        ..SynthConfig::default()
    })
    .collect();
    write_all(&dir.path().join("good"), &ex);
    let good = first_sealed(&dir.path().join("good"));
    assert!(
        Tape::open(&[good.as_path()])
            .unwrap()
            .verify(&ReadOptions::default())
            .unwrap()
            .is_empty()
    );
    let bytes = std::fs::read(&good).unwrap();
    // Damage inside the row data only (footer intact): verify does not read it, the scan does.
    let mut pages = bytes.clone();
    for b in &mut pages[8..bytes.len() / 3] {
        *b = 0x5a;
    }
    let paged = dir.path().join("paged.parquet");
    std::fs::write(&paged, &pages).unwrap();
    assert!(
        Tape::open(&[&paged])
            .unwrap()
            .verify(&ReadOptions::default())
            .unwrap()
            .is_empty()
    );

    let truncated = dir.path().join("zz-truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage_spool = dir.path().join("garbage.arrows");
    std::fs::write(&garbage_spool, vec![0xab; 4096]).unwrap();
    let empty_spool = dir.path().join("empty.arrows");
    std::fs::write(&empty_spool, b"").unwrap();

    let tape = Tape::open(&[good.as_path(), &truncated]).unwrap();
    let err = tape.verify(&ReadOptions::default()).unwrap_err();
    assert!(err.is_file_damage(), "{err}");
    assert_eq!(err.path(), Some(truncated.as_path()), "{err}");
    assert!(err.to_string().contains("zz-truncated.parquet"), "{err}");

    let tape = Tape::open(&[good.as_path(), &truncated, &garbage_spool, &empty_spool]).unwrap();
    let skipped = tape
        .verify(&ReadOptions {
            skip_corrupt: true,
            ..ReadOptions::default()
        })
        .unwrap();
    let mut paths: Vec<&Path> = skipped.iter().map(|s| s.path.as_path()).collect();
    paths.sort();
    assert_eq!(paths, vec![garbage_spool.as_path(), truncated.as_path()]);
    assert!(skipped.iter().all(|s| !s.reason.is_empty()));

    // A file that cannot be opened is an error even with skip_corrupt (not damage).
    let tape = Tape::open(&[good.as_path()]).unwrap();
    std::fs::remove_file(&good).unwrap();
    let err = tape
        .verify(&ReadOptions {
            skip_corrupt: true,
            ..ReadOptions::default()
        })
        .unwrap_err();
    assert!(!err.is_file_damage(), "{err}");
}

/// `verify` checks what the scan would open: a damaged sealed file in an hour partition that the
/// time filter rules out is never opened by the scan, so it is not an error either.
#[test]
fn verify_leaves_out_partitions_the_filter_rules_out() {
    let dir = tempfile::tempdir().unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 20,
        ..SynthConfig::default()
    })
    .collect();
    write_all(dir.path(), &ex);
    let good = first_sealed(dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let bad = good.with_file_name("zz-damaged.parquet");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let tape = Tape::open(&[dir.path()]).unwrap();
    assert!(tape.verify(&ReadOptions::default()).is_err());
    let after_everything = ReadOptions {
        filter: Filter {
            from_us: Some(i64::MAX - 1),
            ..Filter::default()
        },
        ..ReadOptions::default()
    };
    assert!(tape.verify(&after_everything).unwrap().is_empty());
    assert_eq!(tape.scan(after_everything).count(), 0);
}

/// Schema 1 files (written before `trace_id` existed, issue 15) are still read, Parquet and spool
/// segments alike: the missing column decodes as no trace; schema 2 files round-trip trace ids.
#[test]
fn schema_1_files_are_read_and_trace_ids_round_trip() {
    use arrow_array::RecordBatch;
    let dir = tempfile::tempdir().unwrap();
    let ex: Vec<Exchange> = generate(&SynthConfig {
        count: 25,
        ..SynthConfig::default()
    })
    .collect();
    // A schema 1 batch: today's columns without `trace_id`, version 1 in the metadata.
    let full = tapedeck_storage::schema::encode(&ex);
    let keep: Vec<usize> = (0..full.num_columns())
        .filter(|&i| full.schema().field(i).name() != "trace_id")
        .collect();
    assert_eq!(
        keep.len() + 1,
        full.num_columns(),
        "schema 2 has a trace_id column"
    );
    let v1 = full.project(&keep).unwrap();
    let meta =
        std::collections::HashMap::from([("tapedeck.schema_version".to_owned(), "1".to_owned())]);
    let v1 = RecordBatch::try_new(
        std::sync::Arc::new(v1.schema().as_ref().clone().with_metadata(meta.clone())),
        v1.columns().to_vec(),
    )
    .unwrap();

    let parquet_path = dir.path().join("v1.parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "tapedeck.schema_version".to_owned(),
            "1".to_owned(),
        )]))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet_path).unwrap(),
        v1.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&v1).unwrap();
    w.close().unwrap();

    let spool_path = dir.path().join("v1.arrows");
    let mut w = arrow_ipc::writer::StreamWriter::try_new(
        std::fs::File::create(&spool_path).unwrap(),
        &v1.schema(),
    )
    .unwrap();
    w.write(&v1).unwrap();
    w.finish().unwrap();

    for path in [&parquet_path, &spool_path] {
        let got: Vec<Exchange> = Tape::open(&[path])
            .unwrap()
            .exchanges(Filter::default())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got.len(), ex.len(), "{}", path.display());
        assert!(got.iter().all(|e| e.trace_id.is_none()));
        assert_eq!(got[3].path, ex[3].path);
        assert_eq!(got[3].resp_body, ex[3].resp_body);
    }

    // Schema 2: trace ids are written and read back.
    let traced: Vec<Exchange> = ex
        .iter()
        .enumerate()
        .map(|(i, e)| Exchange {
            trace_id: (i % 3 != 0).then(|| format!("{:032x}", i + 1)),
            ..e.clone()
        })
        .collect();
    let tape = dir.path().join("tape");
    write_all(&tape, &traced);
    let back = read_all(&tape);
    assert_eq!(
        back.iter().map(|e| e.trace_id.clone()).collect::<Vec<_>>(),
        traced
            .iter()
            .map(|e| e.trace_id.clone())
            .collect::<Vec<_>>()
    );
}

/// A Parquet file with the tape's metadata but a column of the wrong type: the error is
/// [`StorageError::Schema`], naming the file and the column, and counts as file damage.
#[test]
fn a_column_of_the_wrong_type_is_a_schema_error_naming_file_and_column() {
    use std::sync::Arc;

    use arrow_array::TimestampMicrosecondArray;
    use arrow_array::{ArrayRef, FixedSizeBinaryArray, Int64Array, StringArray};
    use tapedeck_storage::SchemaError;
    use tapedeck_storage::schema::{META_SCHEMA_VERSION, col};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong-type.parquet");
    let id: ArrayRef = Arc::new(FixedSizeBinaryArray::try_from_iter([[7u8; 16]].iter()).unwrap());
    let started: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1]).with_timezone("UTC"));
    let method: ArrayRef = Arc::new(Int64Array::from(vec![1]));
    let p: ArrayRef = Arc::new(StringArray::from(vec!["/a"]));
    let batch = tapedeck_storage::RecordBatch::try_from_iter([
        (col::ID, id),
        (col::STARTED_AT, started),
        (col::METHOD, method),
        (col::PATH, p),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
        META_SCHEMA_VERSION.to_owned(),
        "2".to_owned(),
    ));
    w.write(&batch).unwrap();
    w.close().unwrap();

    let err = Tape::open(&[path.as_path()])
        .unwrap()
        .exchanges(Filter::default())
        .find_map(Result::err)
        .expect("the file reads with an error");
    match &err {
        StorageError::Schema { path: p, source } => {
            assert_eq!(p, &path);
            assert!(
                matches!(source.as_ref(), SchemaError::WrongType { column, .. } if column == col::METHOD),
                "{source:?}"
            );
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    assert!(err.is_file_damage());
    assert_eq!(
        err.to_string(),
        format!(
            "{}: column `method` has type Int64, expected Utf8",
            path.display()
        )
    );
}
