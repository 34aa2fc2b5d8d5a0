//! Storage engine throughput on a realistic mix (synthetic JSON API traffic: ~15 request headers,
//! 9 response headers, bodies from ~200 B to ~16 KB), and tape size versus JSON lines.
//!
//! `cargo bench --bench storage` — figures go to `benches/RESULTS.md`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tapedeck_storage::synth::{SynthConfig, generate};
use tapedeck_storage::{Exchange, Filter, ReadOptions, Tape, TapeWriter, WhenFull, schema};

const N: u64 = 20_000;

fn exchanges() -> Vec<Exchange> {
    generate(&SynthConfig {
        count: N,
        ..SynthConfig::default()
    })
    .collect()
}

fn raw_bytes(ex: &[Exchange]) -> u64 {
    ex.iter().map(Exchange::raw_size).sum()
}

fn write_tape(dir: &Path, ex: &[Exchange]) {
    let w = TapeWriter::builder(dir)
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    for e in ex {
        w.append(e.clone()).unwrap();
    }
    w.close().unwrap();
}

/// A spool segment holding `ex`, made by a real writer and copied out before it is sealed.
fn make_segment(ex: &[Exchange], out: &Path) -> PathBuf {
    let src = tempfile::tempdir().unwrap();
    let w = TapeWriter::builder(src.path())
        .when_full(WhenFull::Block)
        .open()
        .unwrap();
    for e in ex {
        w.append(e.clone()).unwrap();
    }
    w.flush().unwrap();
    let seg = std::fs::read_dir(src.path().join("spool"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dest = out.join(seg.file_name().unwrap());
    std::fs::copy(&seg, &dest).unwrap();
    drop(w);
    dest
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        total += if p.is_dir() {
            dir_bytes(&p)
        } else {
            std::fs::metadata(&p).unwrap().len()
        };
    }
    total
}

/// The same exchanges as JSON lines, the way a simple recorder would write them (headers as
/// pairs, bodies as text), for the size comparison.
fn json_lines_bytes(ex: &[Exchange]) -> u64 {
    let mut total = 0u64;
    for e in ex {
        let h = |hs: &[tapedeck_storage::Header]| -> Vec<(String, String)> {
            hs.iter()
                .map(|h| (h.name.to_string(), h.value_lossy().into_owned()))
                .collect()
        };
        let v = serde_json::json!({
            "id": e.id.to_string(), "source": e.source, "started_at_us": e.started_at_us,
            "ttfb_us": e.ttfb_us, "duration_us": e.duration_us, "total_us": e.total_us,
            "client_addr": e.client_addr, "method": e.method, "scheme": e.scheme,
            "authority": e.authority, "path": e.path, "query": e.query,
            "http_version": e.http_version, "req_headers": h(&e.req_headers),
            "req_body": String::from_utf8_lossy(&e.req_body), "status": e.status,
            "resp_headers": h(&e.resp_headers), "resp_body": String::from_utf8_lossy(&e.resp_body),
        });
        total += serde_json::to_vec(&v).unwrap().len() as u64 + 1;
    }
    total
}

fn bench(c: &mut Criterion) {
    let ex = exchanges();
    let raw = raw_bytes(&ex);

    // Size on disk versus JSON lines (printed once; recorded in RESULTS.md).
    let dir = tempfile::tempdir().unwrap();
    write_tape(dir.path(), &ex);
    let tape_bytes = dir_bytes(dir.path());
    let json_bytes = json_lines_bytes(&ex);
    eprintln!(
        "size: {N} exchanges, raw {raw} B, JSON lines {json_bytes} B, tape {tape_bytes} B, tape/JSON = {:.3}",
        tape_bytes as f64 / json_bytes as f64
    );

    let mut g = c.benchmark_group("storage");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(raw));

    g.bench_function("encode_batches", |b| {
        b.iter(|| {
            for chunk in ex.chunks(4096) {
                std::hint::black_box(schema::encode(chunk));
            }
        })
    });

    g.bench_function("write_spool_and_seal", |b| {
        b.iter_batched(
            || (tempfile::tempdir().unwrap(), ex.clone()),
            |(d, ex)| {
                let w = TapeWriter::builder(d.path())
                    .when_full(WhenFull::Block)
                    .open()
                    .unwrap();
                for e in ex {
                    w.append(e).unwrap();
                }
                w.close().unwrap();
                d
            },
            BatchSize::PerIteration,
        )
    });

    let segdir = tempfile::tempdir().unwrap();
    let segment = make_segment(&ex, segdir.path());
    g.bench_function("seal_one_core", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                let copy = d.path().join(segment.file_name().unwrap());
                std::fs::create_dir_all(d.path()).unwrap();
                std::fs::copy(&segment, &copy).unwrap();
                (d, copy)
            },
            |(d, copy)| {
                tapedeck_storage::seal(d.path(), &copy).unwrap();
                d
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("read_exchanges", |b| {
        b.iter(|| {
            let tape = Tape::open(&[dir.path()]).unwrap();
            let n = tape.exchanges(Filter::default()).count();
            assert_eq!(n as u64, N);
        })
    });

    g.bench_function("read_batches", |b| {
        b.iter(|| {
            let tape = Tape::open(&[dir.path()]).unwrap();
            let rows: usize = tape
                .scan(ReadOptions::default())
                .map(|b| b.unwrap().num_rows())
                .sum();
            assert_eq!(rows as u64, N);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
