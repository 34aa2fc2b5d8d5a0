//! Unit tests of `object.rs`.

use super::*;

#[test]
fn urls_and_paths() {
    assert!(is_url("s3://b/p"));
    assert!(is_url("file:///tmp/x"));
    assert!(!is_url("./tapes/x"));
    assert!(!is_url("/abs/x"));
    assert!(!is_url("weird dir/://x"));
    assert!(matches!(
        Location::parse("tapes/a").expect("local"),
        Location::Local(p) if p == Path::new("tapes/a")
    ));
}

#[test]
fn bad_urls_name_the_url() {
    let e = Location::parse("ftp://b/p").expect_err("unknown scheme");
    assert!(e.to_string().contains("ftp://b/p"), "{e}");
    assert!(e.to_string().contains("unknown URL scheme"), "{e}");
    let e = Location::parse("s3:///only-prefix").expect_err("no bucket");
    assert!(e.to_string().contains("no bucket"), "{e}");
    let e = Location::parse("file://otherhost/x").expect_err("remote file host");
    assert!(e.to_string().contains("local absolute path"), "{e}");
    let e = Location::parse("https://user:pw@dav.example/t").expect_err("credentials");
    assert!(e.to_string().contains("credentials"), "{e}");
}

#[test]
fn webdav_urls_keep_their_path_as_the_prefix() {
    let r = Remote::parse("https://dav.example:8443/repo/tapes/svc/").expect("https url");
    assert_eq!(r.url(), "https://dav.example:8443/repo/tapes/svc");
    assert_eq!(
        r.child("runs/a").url(),
        "https://dav.example:8443/repo/tapes/svc/runs/a"
    );
    assert!(Remote::parse("http://127.0.0.1:9/t").is_ok());
}

#[test]
fn plain_http_endpoints_need_allow_http() {
    use object_store::aws::AmazonS3Builder;
    let b = || AmazonS3Builder::new().with_url("s3://b/p");
    let e = check_plain_http("s3://b/p", &b().with_endpoint("http://127.0.0.1:9000"))
        .expect_err("plain http without allow_http");
    assert!(e.to_string().contains("AWS_ALLOW_HTTP=true"), "{e}");
    assert!(e.to_string().contains("http://127.0.0.1:9000"), "{e}");
    let allowed = b()
        .with_endpoint("HTTP://127.0.0.1:9000")
        .with_allow_http(true);
    assert!(check_plain_http("s3://b/p", &allowed).is_ok());
    assert!(check_plain_http("s3://b/p", &b().with_endpoint("https://s3.example")).is_ok());
    assert!(check_plain_http("s3://b/p", &b()).is_ok());
}

#[test]
fn keys_and_urls() {
    let r = Remote::parse("file:///tmp/some-dir/tape/").expect("file url");
    assert_eq!(r.url(), "file:///tmp/some-dir/tape");
    let k = r.key("date=2026-11-29/hour=20/part-x.parquet");
    assert_eq!(
        r.object_url(&k),
        "file:///tmp/some-dir/tape/date=2026-11-29/hour=20/part-x.parquet"
    );
    assert_eq!(r.child("runs/a").url(), "file:///tmp/some-dir/tape/runs/a");
}

#[test]
fn output_dir_uploads_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tmp");
    let url = format!("file://{}/reports/r1", tmp.path().display());
    let out = OutputDir::new(Path::new(&url)).expect("stage");
    let staged = out.path().to_owned();
    std::fs::write(staged.join("verdict.json"), b"{}").expect("write");
    let urls = out.finish().expect("upload");
    assert_eq!(urls, vec![format!("{url}/verdict.json")]);
    assert!(!staged.exists());
    assert!(tmp.path().join("reports/r1/verdict.json").is_file());
    let local = OutputDir::new(&tmp.path().join("plain")).expect("local");
    assert_eq!(local.path(), tmp.path().join("plain"));
    assert!(local.finish().expect("noop").is_empty());
}

#[test]
fn spool_dirs_differ_per_url() {
    let a = spool_dir_for("s3://b/x");
    let b = spool_dir_for("s3://b/y");
    assert_ne!(a, b);
    assert_eq!(a, spool_dir_for("s3://b/x"));
}

#[test]
fn upload_list_read_round_trip() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).expect("mkdir");
    std::fs::write(src.join("a/b/one.txt"), b"hello").expect("write");
    std::fs::write(src.join("two.txt"), b"hi").expect("write");
    let url = format!("file://{}/dst/pre", dir.path().display());
    let r = Remote::parse(&url).expect("parse");
    let urls = r.upload_dir(&src).expect("upload");
    assert_eq!(
        urls,
        vec![format!("{url}/a/b/one.txt"), format!("{url}/two.txt")]
    );
    let listed = r.list().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(r.read(&r.key("a/b/one.txt")).expect("read"), "hello");
    assert_eq!(r.head(&r.key("nope")).expect("head"), None);
}

use crate::synth::{SynthConfig, generate};
use crate::{Filter, ReadOptions, Tape, TapeWriter, WhenFull};

const HOUR_US: i64 = 3_600_000_000;

fn write_remote(url: &str, spool: &Path, n: u64) -> crate::WriterStats {
    let w = TapeWriter::builder(url)
        .spool_dir(spool)
        .when_full(WhenFull::Block)
        .open()
        .expect("open remote writer");
    assert_eq!(w.remote_url(), Some(url));
    let cfg = SynthConfig {
        count: n,
        mean_gap_us: 3 * HOUR_US / n as i64,
        ..SynthConfig::default()
    };
    for ex in generate(&cfg) {
        w.append(ex).expect("append");
    }
    w.close().expect("close")
}

fn local_parquet(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn remote_tape_round_trip_with_pruning_and_projection() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spool = tmp.path().join("spool-here");
    let url = format!("file://{}/bucket/tapes/svc", tmp.path().display());
    let stats = write_remote(&url, &spool, 3000);
    assert_eq!(stats.written, 3000);
    assert!(stats.files_uploaded >= 3, "{stats:?}");
    assert_eq!(stats.upload_pending, 0);
    assert_eq!(stats.files_uploaded, stats.files_sealed);
    assert_eq!(stats.bytes_uploaded, stats.bytes_sealed);
    assert_eq!(
        local_parquet(&spool),
        0,
        "uploaded files are deleted locally"
    );
    let left: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| n == "spool" || n == ".lock"),
        "empty partition dirs are removed at close: {left:?}"
    );

    let tape = Tape::open(&[url.as_str()]).expect("open remote tape");
    assert!(
        tape.files()
            .iter()
            .all(|f| f.path.to_string_lossy().starts_with(&url))
    );
    assert!(tape.files().iter().any(|f| {
        f.path
            .to_string_lossy()
            .contains("/date=2026-01-01/hour=01/")
    }));
    let all: Vec<_> = tape
        .exchanges(Filter::default())
        .collect::<crate::Result<_>>()
        .expect("read all");
    assert_eq!(all.len(), 3000);
    assert_eq!(
        tape.metadata()
            .expect("md")
            .get("tapedeck.schema_version")
            .map(String::as_str),
        Some(crate::SCHEMA_VERSION.to_string().as_str())
    );

    // One hour: the other partitions are pruned by their keys, as local directories are.
    let start = SynthConfig::default().start_us;
    let filter = Filter {
        from_us: Some(start + HOUR_US),
        to_us: Some(start + 2 * HOUR_US),
        ..Filter::default()
    };
    let expected = all.iter().filter(|e| filter.matches(e)).count();
    let mut scan = tape.scan(ReadOptions {
        columns: Some(vec!["id".into(), "path".into()]),
        filter,
        ..ReadOptions::default()
    });
    let mut rows = 0;
    for b in scan.by_ref() {
        let b = b.expect("batch");
        assert!(b.num_columns() <= 3, "projection: {:?}", b.schema());
        rows += b.num_rows();
    }
    assert_eq!(rows, expected);
    assert!(expected > 0);
    assert!(scan.report().files_pruned >= 2, "{:?}", scan.report());
}

#[test]
fn damaged_object_names_its_url_and_can_be_skipped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let url = format!("file://{}/b/t", tmp.path().display());
    write_remote(&url, &tmp.path().join("s"), 500);
    let r = Remote::parse(&url).expect("parse");
    let bad_key = r.key("date=2026-01-01/hour=00/part-zzzz.parquet");
    let store = r.store().clone();
    let k = bad_key.clone();
    block_on(async move {
        store
            .put(&k, PutPayload::from_static(b"not parquet at all"))
            .await
    })
    .expect("rt")
    .expect("put");
    let tape = Tape::open(&[url.as_str()]).expect("open");
    let err = tape
        .exchanges(Filter::default())
        .find_map(|r| r.err())
        .expect("damaged object is an error");
    assert!(err.to_string().contains(&r.object_url(&bad_key)), "{err}");
    assert!(err.is_file_damage());
    let mut it = tape
        .scan(ReadOptions {
            skip_corrupt: true,
            ..ReadOptions::default()
        })
        .exchanges();
    let mut n = 0;
    for r in it.by_ref() {
        r.expect("damaged object skipped");
        n += 1;
    }
    assert_eq!(n, 500);
    assert_eq!(it.report().files_skipped.len(), 1);
}

#[test]
fn sealed_files_left_locally_are_uploaded_at_open() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A local tape stands for what an earlier writer sealed but did not upload.
    let local = tmp.path().join("spool");
    let w = TapeWriter::builder(&local)
        .when_full(WhenFull::Block)
        .open()
        .expect("open");
    for ex in generate(&SynthConfig {
        count: 200,
        ..SynthConfig::default()
    }) {
        w.append(ex).expect("append");
    }
    w.close().expect("close");
    let left = local_parquet(&local);
    assert!(left >= 1);
    let url = format!("file://{}/remote", tmp.path().display());
    let stats = write_remote(&url, &local, 100);
    assert_eq!(stats.upload_pending, 0);
    assert_eq!(
        stats.files_uploaded as usize,
        left + stats.files_sealed as usize
    );
    assert_eq!(local_parquet(&local), 0);
    let n = Tape::open(&[url.as_str()])
        .expect("open")
        .exchanges(Filter::default())
        .count();
    assert_eq!(n, 300);
}

#[test]
fn a_new_tape_refuses_existing_data_and_leftovers_but_not_an_empty_place() {
    let tmp = tempfile::tempdir().expect("tmp");
    let new_only = |loc: &Path, spool: &Path| {
        TapeWriter::builder(loc)
            .spool_dir(spool)
            .new_tape_only(true)
            .open()
    };
    // A local tape with data is refused; an empty (or new) directory is fine.
    let local = tmp.path().join("run");
    std::fs::create_dir_all(&local).expect("mkdir");
    new_only(&local, Path::new("/unused"))
        .expect("empty dir")
        .close()
        .expect("close");
    let w = TapeWriter::builder(&local).open().expect("open");
    w.append(generate(&SynthConfig::default()).next().expect("one"))
        .expect("append");
    w.close().expect("close");
    let e = new_only(&local, Path::new("/unused")).expect_err("holds a tape");
    assert!(matches!(e, StorageError::NotEmpty { .. }), "{e}");
    assert!(e.to_string().contains(".parquet"), "{e}");
    // A URL whose prefix holds objects is refused.
    let url = format!("file://{}/remote", tmp.path().display());
    write_remote(&url, &tmp.path().join("spool-a"), 10);
    let e = new_only(Path::new(&url), &tmp.path().join("spool-b")).expect_err("objects");
    assert!(e.to_string().contains("object(s)"), "{e}");
    // A fresh URL whose spool directory holds an earlier writer's leftovers is refused,
    // naming the directory, and nothing is uploaded.
    let spool = tmp.path().join("spool-c");
    std::fs::create_dir_all(spool.join("date=2026-01-01/hour=00")).expect("mkdir");
    std::fs::write(spool.join("date=2026-01-01/hour=00/part-x.parquet"), b"x").expect("file");
    let fresh = format!("file://{}/fresh", tmp.path().display());
    let e = new_only(Path::new(&fresh), &spool).expect_err("leftovers");
    assert!(e.to_string().contains(&spool.display().to_string()), "{e}");
    assert!(!tmp.path().join("fresh").exists());
}

#[test]
fn failed_uploads_keep_files_local_retry_mid_run_and_lose_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A regular file where the destination's directory should be: every PUT fails.
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, b"x").expect("blocker");
    let url = format!("file://{}/tape", blocker.display());
    let spool = tmp.path().join("spool");
    let open = || {
        TapeWriter::builder(&url)
            .spool_dir(&spool)
            .when_full(WhenFull::Block)
            .flush_interval(Duration::from_millis(20))
            .segment_max_age(Duration::from_millis(100))
            .upload_retry_max(Duration::from_millis(200))
            .upload_close_timeout(Duration::from_millis(500))
            .open()
            .expect("open")
    };
    let mut batches = generate(&SynthConfig {
        count: 600,
        ..SynthConfig::default()
    });
    let w = open();
    let wait = |w: &TapeWriter, what: &str, f: &dyn Fn(&crate::WriterStats) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !f(&w.stats()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {:?}",
                w.stats()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Segments rotate while recording; their uploads fail and the files stay local.
    for ex in batches.by_ref().take(200) {
        w.append(ex).expect("append");
    }
    wait(&w, "a failed upload", &|s| {
        s.upload_failures >= 2 && s.upload_pending >= 1
    });
    assert_eq!(w.stats().files_uploaded, 0);
    assert!(local_parquet(&spool) >= 1);
    // Recording goes on meanwhile.
    for ex in batches.by_ref().take(200) {
        w.append(ex).expect("append while the store fails");
    }
    w.flush().expect("flush");
    // The store recovers mid-run: the retries upload everything and delete local copies.
    std::fs::remove_file(&blocker).expect("unblock");
    wait(&w, "uploads after recovery", &|s| {
        s.files_uploaded >= 1 && s.upload_pending == 0 && s.files_uploaded == s.files_sealed
    });
    // The store fails again at close: close reports what stays local, and where.
    let (dest, aside) = (blocker.join("tape"), blocker.join("tape-aside"));
    std::fs::rename(&dest, &aside).expect("move the uploaded objects aside");
    std::fs::write(&dest, b"x").expect("block again");
    for ex in batches.by_ref().take(200) {
        w.append(ex).expect("append");
    }
    let err = w.close().expect_err("uploads incomplete at close");
    match &err {
        StorageError::UploadIncomplete { dir, files, .. } => {
            assert_eq!(dir, &spool);
            assert!(*files >= 1);
            assert_eq!(local_parquet(&spool) as u64, *files);
        }
        other => panic!("unexpected {other}"),
    }
    // The next writer to the same URL and spool directory uploads the leftovers at open.
    std::fs::remove_file(&dest).expect("unblock");
    std::fs::rename(&aside, &dest).expect("objects back");
    let stats = open().close().expect("close");
    assert_eq!(stats.upload_pending, 0);
    assert_eq!(local_parquet(&spool), 0);
    let n = Tape::open(&[url.as_str()])
        .expect("open remote")
        .exchanges(Filter::default())
        .count();
    assert_eq!(n, 600, "no exchange lost");
}

#[test]
fn missing_remote_tape_is_no_tape() {
    let tmp = tempfile::tempdir().expect("tmp");
    let url = format!("file://{}/nothing-here", tmp.path().display());
    let e = Tape::open(&[url.as_str()]).expect_err("empty");
    assert!(matches!(e, StorageError::NoTape { .. }), "{e}");
}

#[test]
fn block_on_works_inside_a_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let v = rt.block_on(async { block_on(async { 7 }) });
    assert_eq!(v, Ok(7));
}
