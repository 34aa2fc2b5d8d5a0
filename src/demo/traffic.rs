//! Synthetic client traffic for the demo: a seeded mix of the sample API's routes, sent through
//! the recording proxy by a real HTTP client with a few requests in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TERMS: [&str; 6] = ["amber", "cedar", "ember", "fjord", "indigo", "kelp"];

/// The request paths (with query) the demo sends, in order.
pub(crate) fn plan(count: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| match rng.random_range(0..100) {
            0..=39 => format!("/api/users?page={}&per_page=10", rng.random_range(1..=5)),
            40..=64 => format!("/api/users/{}", rng.random_range(1..=200)),
            65..=84 => format!("/api/search?q={}", TERMS[rng.random_range(0..TERMS.len())]),
            _ => format!("/api/products/{}", rng.random_range(1..=1000)),
        })
        .collect()
}

/// Outcome of driving traffic.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
}

/// The W3C `traceparent` of the `i`-th demo request: one trace per request, as a service behind
/// an instrumented gateway sees it.
pub(crate) fn traceparent(seed: u64, i: usize) -> String {
    format!("00-{seed:016x}{:016x}-{:016x}-01", i + 1, i + 1)
}

/// Sends every path of `paths` as a GET to `base` (`http://127.0.0.1:PORT`), `in_flight` at a
/// time, each in its own trace (see [`traceparent`]).
pub(crate) async fn drive(
    base: &str,
    paths: Vec<String>,
    in_flight: usize,
    seed: u64,
) -> anyhow::Result<Sent> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight.max(1) {
        let (client, paths, next, ok, failed) = (
            client.clone(),
            paths.clone(),
            next.clone(),
            ok.clone(),
            failed.clone(),
        );
        let base = base.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(path) = paths.get(i) else { break };
                let uri: hyper::Uri = match format!("{base}{path}").parse() {
                    Ok(u) => u,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let req = hyper::Request::get(uri)
                    .header("accept", "application/json")
                    .header("traceparent", traceparent(seed, i))
                    .header("user-agent", "tapedeck-demo/1.0")
                    .body(Empty::<Bytes>::new());
                let good = match req {
                    Ok(req) => match client.request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            resp.into_body().collect().await.is_ok() && status.is_success()
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.context("traffic task")?;
    }
    Ok(Sent {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    })
}
