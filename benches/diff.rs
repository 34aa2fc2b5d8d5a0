//! Diff throughput on 2 KB JSON response pairs (issue 5): the comparator alone (decode, parse,
//! structural diff) and the whole judge (pairing, comparison against baseline and noise,
//! aggregation per route and path, latency statistics, verdict).
//!
//! `cargo bench --bench diff` — figures go to `benches/RESULTS.md`. Goal: ≥ 100k pairs/s on one
//! core.
#![allow(clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tapedeck_diff::compare::{Comparator, StandardComparator};
use tapedeck_diff::config::DEFAULT_COMPARED_HEADERS;
use tapedeck_diff::{DiffOptions, Differ, RulesFile};
use tapedeck_storage::{Exchange, Header};

/// A ~2 KB JSON body: a user with a list of orders, plus per-call noise (request id, time).
fn body(i: usize, noise: u64, renamed: bool) -> Bytes {
    let orders: Vec<String> = (0..24)
        .map(|k| {
            format!(
                r#"{{"id":{},"sku":"SKU-{:05}","qty":{},"price":{}.{:02},"status":"shipped"}}"#,
                i * 100 + k,
                (i * 7 + k) % 99_999,
                k % 4 + 1,
                k * 3 + 1,
                k * 7 % 100
            )
        })
        .collect();
    let name_key = if renamed { "full_name" } else { "name" };
    let s = format!(
        r#"{{"id":{i},"{name_key}":"User Number {i}","email":"user{i}@example.com","active":true,"tags":["a","b","c"],"address":{{"street":"{i} Main Street","city":"Springfield","zip":"{:05}"}},"orders":[{}],"meta":{{"request_id":"0195f0a4-1b2c-7d3e-8f40-{noise:012x}","generated_at":"2026-11-29T20:{:02}:{:02}.{:03}Z"}}}}"#,
        i % 100_000,
        orders.join(","),
        noise % 60,
        (noise / 60) % 60,
        noise % 1000
    );
    Bytes::from(s)
}

fn result(origin: uuid::Uuid, target: &str, i: usize, noise: u64, renamed: bool) -> Exchange {
    let b = body(i, noise, renamed);
    Exchange {
        id: Exchange::new_id(),
        method: "GET".into(),
        path: format!("/api/users/{i}").into(),
        status: Some(200),
        total_us: Some(10_000 + (noise % 997) as i64),
        resp_headers: vec![
            Header::new("Content-Type", "application/json"),
            Header::new("Date", "Sun, 29 Nov 2026 20:00:00 GMT"),
        ],
        resp_body_size: b.len() as u64,
        resp_body: b,
        origin_id: Some(origin),
        target: Some(target.into()),
        ..Exchange::default()
    }
}

fn bench(c: &mut Criterion) {
    let size = body(1, 1, false).len();
    assert!((1800..2600).contains(&size), "body is {size} bytes");

    let cmp = StandardComparator::new(
        DEFAULT_COMPARED_HEADERS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    );
    let pairs: Vec<(Exchange, Exchange)> = (0..1000)
        .map(|i| {
            let o = Exchange::new_id();
            (
                result(o, "baseline", i, i as u64 * 31, false),
                result(o, "candidate", i, i as u64 * 37 + 5, i % 10 == 0),
            )
        })
        .collect();
    let mut g = c.benchmark_group("diff");
    g.throughput(Throughput::Elements(pairs.len() as u64));
    g.bench_function("compare_2kb_json_pairs", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            let mut n = 0;
            for (x, y) in &pairs {
                out.clear();
                cmp.compare(x, y, &mut out);
                n += out.len();
            }
            n
        })
    });

    // The whole judge with a noise target: two comparisons per origin.
    let n = 2000;
    let rows: Vec<Exchange> = (0..n)
        .flat_map(|i| {
            let o = Exchange::new_id();
            [
                result(o, "baseline", i, i as u64 * 31, false),
                result(o, "secondary", i, i as u64 * 41 + 3, false),
                result(o, "candidate", i, i as u64 * 37 + 5, i % 10 == 0),
            ]
        })
        .collect();
    let mut opts = DiffOptions::new("/in-memory");
    opts.noise = Some("secondary".into());
    let differ = Differ::new(opts.validate_with(RulesFile::default()).unwrap());
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.bench_function("judge_2kb_json_origins_with_noise", |b| {
        b.iter_batched(
            || rows.clone(),
            |rows| differ.run_exchanges(rows).unwrap().verdict,
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
