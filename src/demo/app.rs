//! The demo's sample JSON API, in the builds the demo compares.
//!
//! - `v1`: the version in production.
//! - `v2-bad`: the classic Friday deploy, with three planted regressions:
//!   1. `GET /api/users?page=N` answers 120 ms slower for pages ≥ 2 (a pagination query that lost
//!      its index);
//!   2. `GET /api/users/{id}` renamed the field `email` to `email_address`;
//!   3. `GET /api/search?q=…` returns the same hits sorted the other way.
//! - `v2-good`: the same code as v1 but for its version string.
//! - planted (`tapedeck sample-api`, for benchmarks): v1 with effects of a chosen size — the
//!   paginated route's latency multiplied by a factor, and `email` renamed in a chosen share of
//!   the `GET /api/users/{id}` answers.
//!
//! `GET /api/products/{id}` asks the pricing service (`GET /prices/{id}`, [`super::pricing::start_pricing`]) for
//! the price, forwarding `traceparent` and `tracestate` as an instrumented service does. `v2-bad`
//! asks twice per product (a planted dependency regression: the answer is the same, the calls
//! are not). When pricing fails, v1 and v2-good answer with their cached price
//! (`"price_source": "cache"`), v2-bad answers 500.
//!
//! Every response carries noise that must not be flagged: a fresh `request_id` and `generated_at`
//! in the body, an `x-request-id` header, `date`, and `server` with the build's version.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Which build of the sample API to serve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Build {
    /// The version in production.
    V1,
    /// v2 with the three planted regressions.
    V2Bad,
    /// v2 without regressions.
    V2Good,
    /// v1 with effects of a chosen size (benchmarks of the judge).
    Planted(Planted),
}

/// Effects of a chosen size, for measuring what the judge detects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Planted {
    /// Every latency of `GET /api/users?page=N` is multiplied by this (1.2 = p95 +20 %).
    pub(crate) pages_latency_factor: f64,
    /// Added to `GET /api/users?page=N` for pages ≥ 2 (v2-bad's slowdown is 120 ms).
    pub(crate) pages_delay: Duration,
    /// Share of `GET /api/users/{id}` answers with `email` renamed to `email_address`.
    pub(crate) users_change_rate: f64,
}

impl Build {
    fn version(self) -> &'static str {
        match self {
            Build::V1 => "1.8.3",
            Build::V2Bad | Build::V2Good | Build::Planted(_) => "2.0.0",
        }
    }

    /// Whether this answer of `GET /api/users/{id}` carries the renamed field.
    fn renames_email(self) -> bool {
        match self {
            Build::V2Bad => true,
            Build::Planted(p) => {
                p.users_change_rate > 0.0 && rand::random::<f64>() < p.users_change_rate
            }
            Build::V1 | Build::V2Good => false,
        }
    }
}

/// Extra latency of the planted pagination regression.
pub(crate) const SLOW_PAGE_DELAY: Duration = Duration::from_millis(120);

const FIRST: [&str; 10] = [
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger", "Radia",
];
const LAST: [&str; 10] = [
    "Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen",
    "Dijkstra", "Perlman",
];
const PLANS: [&str; 3] = ["free", "team", "enterprise"];
const TITLES: [&str; 12] = [
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo",
    "juniper", "kelp", "lumen",
];

/// A stable pseudo-random number from a key (SplitMix64), so data is the same in every build.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn user(renamed: bool, id: u64) -> Value {
    let h = mix(id);
    let first = FIRST[(h % 10) as usize];
    let last = LAST[((h >> 8) % 10) as usize];
    let email = format!(
        "{}.{}{}@example.test",
        first.to_lowercase(),
        last.to_lowercase(),
        id
    );
    let mut u = json!({
        "id": id,
        "name": format!("{first} {last}"),
        "plan": PLANS[((h >> 16) % 3) as usize],
        "active": !(h >> 24).is_multiple_of(10),
    });
    let key = if renamed { "email_address" } else { "email" };
    u[key] = Value::String(email);
    u
}

fn envelope(mut body: Value) -> Value {
    body["request_id"] = Value::String(uuid::Uuid::now_v7().to_string());
    body["generated_at"] =
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    body
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What the pricing service said about a product: its price, or `None` when it failed.
type Price = Option<u64>;

/// Handles one request: (status, body, extra delay). `price`: pricing's answer for a product
/// request.
fn route(
    build: Build,
    method: &str,
    path: &str,
    query: Option<&str>,
    price: Price,
) -> (u16, Value, Duration) {
    let base = Duration::from_micros(1500 + mix(path.len() as u64 + rand_u64()) % 3000);
    if method != "GET" {
        return (405, json!({"error": "method not allowed"}), base);
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["healthz"] => (200, json!({"status": "ok"}), Duration::ZERO),
        ["api", "users"] => {
            let page: u64 = query_param(query, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1);
            let per_page: u64 = 10;
            // The list serializer did not change in v2: only the detail route renamed `email`.
            let items: Vec<Value> = (0..per_page)
                .map(|i| user(false, (page - 1) * per_page + i + 1))
                .collect();
            let delay = match build {
                Build::V2Bad if page >= 2 => base + SLOW_PAGE_DELAY,
                Build::Planted(p) => {
                    let slowed = base.mul_f64(p.pages_latency_factor.clamp(0.0, 10_000.0));
                    if page >= 2 {
                        slowed + p.pages_delay
                    } else {
                        slowed
                    }
                }
                _ => base,
            };
            (
                200,
                json!({"page": page, "per_page": per_page, "total": 500, "items": items}),
                delay,
            )
        }
        ["api", "users", id] => match id.parse::<u64>() {
            Ok(id) if (1..=500).contains(&id) => (200, user(build.renames_email(), id), base),
            _ => (404, json!({"error": "no such user"}), base),
        },
        ["api", "search"] => {
            let q = query_param(query, "q").unwrap_or("");
            let qh = q
                .bytes()
                .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
            let mut hits: Vec<Value> = (0..8)
                .map(|i| {
                    let h = mix(qh ^ i);
                    json!({"id": h % 10_000, "title": format!("{q} {}", TITLES[(h % 12) as usize]), "score": 100 - i * 7})
                })
                .collect();
            if build == Build::V2Bad {
                hits.reverse();
            }
            (200, json!({"query": q, "hits": hits}), base)
        }
        ["api", "products", id] => match id.parse::<u64>() {
            Ok(id) => {
                let h = mix(id ^ 0xfeed);
                let (price_cents, source) = match price {
                    Some(p) => (p, "pricing"),
                    None if build == Build::V2Bad => {
                        return (500, json!({"error": "pricing unavailable"}), base);
                    }
                    None => (super::pricing::price_of(id), "cache"),
                };
                (
                    200,
                    json!({
                        "id": id,
                        "title": format!("{} {}", TITLES[(h % 12) as usize], TITLES[((h >> 8) % 12) as usize]),
                        "price_cents": price_cents,
                        "price_source": source,
                        "in_stock": !h.is_multiple_of(5),
                    }),
                    base,
                )
            }
            Err(_) => (404, json!({"error": "no such product"}), base),
        },
        _ => (404, json!({"error": "not found"}), base),
    }
}

fn rand_u64() -> u64 {
    rand::random()
}

/// The HTTP client the apps call pricing with.
type PricingClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// Asks pricing at `pricing` for product `id`, forwarding the trace headers of `req`.
async fn fetch_price(
    client: &PricingClient,
    pricing: SocketAddr,
    id: u64,
    req: &Request<hyper::body::Incoming>,
) -> Price {
    let mut out = Request::get(format!("http://{pricing}/prices/{id}"));
    for h in ["traceparent", "tracestate"] {
        if let Some(v) = req.headers().get(h) {
            out = out.header(h, v);
        }
    }
    let out = out.body(Empty::<Bytes>::new()).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(out))
        .await
        .ok()?
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice::<Value>(&body).ok()?["price_cents"].as_u64()
}

async fn handle(
    build: Build,
    pricing: SocketAddr,
    client: PricingClient,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let product = req
        .uri()
        .path()
        .strip_prefix("/api/products/")
        .and_then(|id| id.parse::<u64>().ok())
        .filter(|_| req.method() == hyper::Method::GET);
    let price = match product {
        None => None,
        Some(id) => {
            let price = fetch_price(&client, pricing, id, &req).await;
            if build == Build::V2Bad {
                // The planted dependency regression: a second, identical call per product.
                let _ = fetch_price(&client, pricing, id, &req).await;
            }
            price
        }
    };
    let (status, body, delay) = route(
        build,
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
        price,
    );
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let body = serde_json::to_vec(&envelope(body)).unwrap_or_default();
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("server", format!("demo-api/{}", build.version()))
        .header("x-request-id", uuid::Uuid::now_v7().to_string())
        .header("date", httpdate_now())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(resp)
}

fn httpdate_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// Serves `build` on 127.0.0.1 (a port picked by the OS), asking `pricing` for product prices,
/// until `shutdown` turns true.
pub(crate) async fn start(
    build: Build,
    pricing: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let client: PricingClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let client = client.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(build, pricing, client.clone(), req));
                        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_regressions_are_where_the_demo_says() {
        let (_, v1, d1) = route(Build::V1, "GET", "/api/users", Some("page=3"), None);
        let (_, bad, dbad) = route(Build::V2Bad, "GET", "/api/users", Some("page=3"), None);
        assert!(dbad >= d1.min(dbad) + SLOW_PAGE_DELAY - Duration::from_millis(5));
        assert_eq!(v1["items"].as_array().map(Vec::len), Some(10));
        assert_eq!(v1["items"], bad["items"]);
        let (_, _, dpage1) = route(Build::V2Bad, "GET", "/api/users", Some("page=1"), None);
        assert!(dpage1 < SLOW_PAGE_DELAY);

        let (_, u1, _) = route(Build::V1, "GET", "/api/users/7", None, None);
        let (_, ubad, _) = route(Build::V2Bad, "GET", "/api/users/7", None, None);
        assert!(ubad.get("email_address").is_some() && ubad.get("email").is_none());
        let (_, ugood, _) = route(Build::V2Good, "GET", "/api/users/7", None, None);
        assert_eq!(u1, ugood);

        let (_, s1, _) = route(Build::V1, "GET", "/api/search", Some("q=kelp"), None);
        let (_, s2, _) = route(Build::V2Bad, "GET", "/api/search", Some("q=kelp"), None);
        let mut rev = s1["hits"].as_array().cloned().unwrap_or_default();
        rev.reverse();
        assert_eq!(s2["hits"].as_array().cloned().unwrap_or_default(), rev);

        // Pricing down: v1 falls back to its cached price, v2-bad fails.
        let (st, p, _) = route(Build::V1, "GET", "/api/products/9", None, None);
        assert_eq!(
            (st, &p["price_source"], &p["price_cents"]),
            (
                200,
                &json!("cache"),
                &json!(super::super::pricing::price_of(9))
            )
        );
        let (st, p, _) = route(Build::V1, "GET", "/api/products/9", None, Some(5));
        assert_eq!(
            (st, &p["price_source"], &p["price_cents"]),
            (200, &json!("pricing"), &json!(5))
        );
        assert_eq!(
            route(Build::V2Bad, "GET", "/api/products/9", None, None).0,
            500
        );
    }
}
