//! The demo's pricing service: the dependency the sample API's product route calls.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A product's price, as the pricing service and the apps' caches know it.
pub(crate) fn price_of(id: u64) -> u64 {
    super::app::mix(id ^ 0xfeed) % 100_000
}

/// The pricing service: `GET /prices/{id}` → `{"id", "price_cents", "currency"}`. Serves on
/// 127.0.0.1 (a port picked by the OS) until `shutdown` turns true.
pub(crate) async fn start_pricing(
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                            let id = req
                                .uri()
                                .path()
                                .strip_prefix("/prices/")
                                .and_then(|id| id.parse::<u64>().ok());
                            let (status, body) = match id {
                                Some(id) => (200, json!({"id": id, "price_cents": price_of(id), "currency": "EUR"})),
                                None => (404, json!({"error": "no such price"})),
                            };
                            let resp = Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())))
                                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                            Ok::<_, Infallible>(resp)
                        });
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
