//! Synthetic traffic: a deterministic, realistic mix of JSON API exchanges, for trying tapedeck
//! without production traffic, for tests, and for the benchmarks.
//!
//! The mix: user lookups, paginated lists, search, product pages (bodies from ~200 B to ~16 KB),
//! order creation (POST with a JSON body), session deletes, health checks, and about 1 % server
//! errors; about 15 request headers and 9 response headers each, including per-request ids and
//! timestamps (the noise a differ must learn to ignore).

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::exchange::{Exchange, Header};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Number of exchanges.
    pub count: u64,
    /// Seed: the same seed gives the same tape (ids included).
    pub seed: u64,
    /// Start time of the first exchange (µs since the epoch).
    pub start_us: i64,
    /// Mean gap between exchanges (µs); gaps are exponentially distributed (Poisson arrivals).
    pub mean_gap_us: i64,
    /// `source` label.
    pub source: String,
    /// Host the client addressed.
    pub authority: String,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            count: 1000,
            seed: 42,
            // 2026-01-01T00:00:00Z
            start_us: 1_767_225_600_000_000,
            mean_gap_us: 1000,
            source: "synthetic".into(),
            authority: "api.example.test".into(),
        }
    }
}

/// Generates exchanges as configured, in start-time order.
pub fn generate(config: &SynthConfig) -> impl Iterator<Item = Exchange> + use<> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let cfg = config.clone();
    let mut t = cfg.start_us;
    (0..cfg.count).map(move |i| {
        let gap: f64 = -(1.0 - rng.random::<f64>()).ln() * cfg.mean_gap_us as f64;
        t += gap as i64;
        one(&mut rng, &cfg, i, t)
    })
}

const FIRST: [&str; 8] = [
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen",
];
const WORDS: [&str; 12] = [
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo",
    "juniper", "kelp", "lumen",
];

fn uuid_from(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn user_json(rng: &mut StdRng, id: u64) -> String {
    let f = FIRST[rng.random_range(0..FIRST.len())];
    let l = LAST[rng.random_range(0..LAST.len())];
    format!(
        r#"{{"id":{id},"name":"{f} {l}","email":"{}.{}@example.test","role":"{}","active":{},"created_at":"2025-0{}-1{}T08:00:00Z","score":{}}}"#,
        f.to_lowercase(),
        l.to_lowercase(),
        ["admin", "member", "viewer"][rng.random_range(0..3)],
        rng.random_bool(0.9),
        rng.random_range(1..10),
        rng.random_range(0..10),
        rng.random_range(0..1000)
    )
}

fn product_json(rng: &mut StdRng, id: u64) -> String {
    let n = rng.random_range(1..40);
    let desc: Vec<&str> = (0..n * 8)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    let reviews: Vec<String> = (0..rng.random_range(0..n))
        .map(|k| {
            format!(
                r#"{{"id":{},"stars":{},"text":"{}"}}"#,
                k,
                rng.random_range(1..6),
                WORDS[rng.random_range(0..WORDS.len())]
            )
        })
        .collect();
    format!(
        r#"{{"id":{id},"sku":"SKU-{:06}","title":"{} {}","price_cents":{},"currency":"EUR","in_stock":{},"description":"{}","reviews":[{}]}}"#,
        rng.random_range(0..1_000_000),
        WORDS[rng.random_range(0..WORDS.len())],
        WORDS[rng.random_range(0..WORDS.len())],
        rng.random_range(100..100_000),
        rng.random_bool(0.8),
        desc.join(" "),
        reviews.join(",")
    )
}

fn one(rng: &mut StdRng, cfg: &SynthConfig, i: u64, t: i64) -> Exchange {
    let rid = uuid_from(rng);
    let roll: u32 = rng.random_range(0..100);
    let (method, path, query, req_body, status, resp_body): (
        &str,
        String,
        Option<String>,
        String,
        u16,
        String,
    ) = match roll {
        0..=34 => {
            let id = rng.random_range(1..5000);
            (
                "GET",
                format!("/api/users/{id}"),
                None,
                String::new(),
                200,
                user_json(rng, id),
            )
        }
        35..=54 => {
            let page = rng.random_range(1..6);
            let users: Vec<String> = (0..rng.random_range(5..25))
                .map(|k| user_json(rng, page * 100 + k))
                .collect();
            (
                "GET",
                "/api/users".into(),
                Some(format!("page={page}&per_page=20")),
                String::new(),
                200,
                format!(
                    r#"{{"page":{page},"total":2000,"items":[{}]}}"#,
                    users.join(",")
                ),
            )
        }
        55..=69 => {
            let q = WORDS[rng.random_range(0..WORDS.len())];
            let hits: Vec<String> = (0..rng.random_range(1..10))
                .map(|k| {
                    format!(
                        r#"{{"id":{k},"title":"{q} {}","rank":{k}}}"#,
                        WORDS[rng.random_range(0..WORDS.len())]
                    )
                })
                .collect();
            (
                "GET",
                "/api/search".into(),
                Some(format!("q={q}")),
                String::new(),
                200,
                format!(r#"{{"query":"{q}","hits":[{}]}}"#, hits.join(",")),
            )
        }
        70..=84 => {
            let id = rng.random_range(1..20_000);
            (
                "GET",
                format!("/api/products/{id}"),
                None,
                String::new(),
                200,
                product_json(rng, id),
            )
        }
        85..=91 => {
            let body = format!(
                r#"{{"customer_id":{},"items":[{{"sku":"SKU-{:06}","qty":{}}}],"note":"{}"}}"#,
                rng.random_range(1..5000),
                rng.random_range(0..1_000_000),
                rng.random_range(1..5),
                WORDS[rng.random_range(0..WORDS.len())]
            );
            let oid = uuid_from(rng);
            (
                "POST",
                "/api/orders".into(),
                None,
                body,
                201,
                format!(r#"{{"order_id":"{oid}","status":"accepted"}}"#),
            )
        }
        92..=94 => {
            let sid = uuid_from(rng);
            (
                "DELETE",
                format!("/api/sessions/{sid}"),
                None,
                String::new(),
                204,
                String::new(),
            )
        }
        95..=98 => (
            "GET",
            "/healthz".into(),
            None,
            String::new(),
            200,
            r#"{"status":"ok"}"#.into(),
        ),
        _ => (
            "GET",
            format!("/api/users/{}", rng.random_range(1..5000)),
            None,
            String::new(),
            500,
            r#"{"error":"internal","message":"upstream database timeout"}"#.into(),
        ),
    };
    let mut req_headers = vec![
        Header::new("host", cfg.authority.clone()),
        Header::new("user-agent", "tapedeck-synth/1.0 (+https://example.test)"),
        Header::new("accept", "application/json"),
        Header::new("accept-encoding", "gzip, br"),
        Header::new("accept-language", "en-US,en;q=0.9"),
        Header::new("x-request-id", rid.to_string()),
        Header::new(
            "traceparent",
            format!(
                "00-{}-{:016x}-01",
                uuid_from(rng).simple(),
                rng.random::<u64>()
            ),
        ),
        Header::new("authorization", "Bearer [redacted]"),
        Header::new(
            "x-forwarded-for",
            format!(
                "10.0.{}.{}",
                rng.random_range(0..255),
                rng.random_range(1..255)
            ),
        ),
        Header::new("x-forwarded-proto", "https"),
        Header::new(
            "x-client-version",
            format!("web/{}.{}", rng.random_range(1..4), rng.random_range(0..20)),
        ),
        Header::new("cache-control", "no-cache"),
        Header::new("connection", "keep-alive"),
    ];
    if !req_body.is_empty() {
        req_headers.push(Header::new("content-type", "application/json"));
        req_headers.push(Header::new("content-length", req_body.len().to_string()));
    }
    let ttfb = rng.random_range(800..20_000);
    let duration = ttfb + rng.random_range(50..2_000);
    let resp_headers = vec![
        Header::new("content-type", "application/json; charset=utf-8"),
        Header::new("content-length", resp_body.len().to_string()),
        Header::new("date", iso(t)),
        Header::new("server", "demo-api/1.4.2"),
        Header::new("cache-control", "private, max-age=0"),
        Header::new("x-request-id", rid.to_string()),
        Header::new("etag", format!("W/\"{:x}\"", rng.random::<u64>())),
        Header::new("vary", "Accept-Encoding"),
        Header::new("x-response-time", format!("{}ms", duration / 1000)),
    ];
    let id_bytes: [u8; 16] = rng.random();
    Exchange {
        // A v7 layout (time-ordered) built from the seed, so the same seed gives the same ids.
        id: uuid::Builder::from_unix_timestamp_millis(
            (t / 1000).max(0) as u64,
            &id_bytes[..10].try_into().unwrap_or([0; 10]),
        )
        .into_uuid(),
        source: cfg.source.as_str().into(),
        started_at_us: t,
        ttfb_us: Some(ttfb),
        duration_us: Some(duration),
        total_us: Some(duration + 40),
        client_addr: Some(format!("127.0.0.1:{}", 40000 + (i % 20000)).into()),
        method: method.into(),
        scheme: "http".into(),
        authority: cfg.authority.as_str().into(),
        path: path.into(),
        query,
        http_version: "HTTP/1.1".into(),
        req_headers,
        req_body_size: req_body.len() as u64,
        req_body: Bytes::from(req_body),
        req_body_truncated: false,
        status: Some(status),
        resp_headers,
        resp_body_size: resp_body.len() as u64,
        resp_body: Bytes::from(resp_body),
        resp_body_truncated: false,
        ..Exchange::blank()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_ordered() {
        let cfg = SynthConfig {
            count: 200,
            ..SynthConfig::default()
        };
        let a: Vec<Exchange> = generate(&cfg).collect();
        let b: Vec<Exchange> = generate(&cfg).collect();
        assert_eq!(a, b);
        assert!(
            a.windows(2)
                .all(|w| w[0].started_at_us <= w[1].started_at_us)
        );
        assert!(
            a.iter()
                .any(|e| e.method == "POST" && !e.req_body.is_empty())
        );
        assert!(a.iter().any(|e| e.status == Some(500)));
        let ids: std::collections::HashSet<_> = a.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), a.len());
    }
}
