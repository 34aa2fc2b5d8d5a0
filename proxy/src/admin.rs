//! The admin listener: `/metrics` (Prometheus text), `/healthz` and `/readyz` (JSON).
//!
//! `/healthz` answers `200` with `{"status":"ok"}` or `{"status":"degraded","reason":…}` when
//! the tape cannot be written: a recorder whose disk fails keeps forwarding traffic (fail-open),
//! so a liveness probe must not restart it; alerting reads the `status` field or the
//! `tapedeck_writer_degraded` gauge. `/healthz?strict` answers `503` when degraded, for those
//! who want the status code to carry it. `/readyz` answers `200` once the proxy is serving.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use tapedeck_storage::Health;

use crate::metrics::Metrics;
use crate::proxy::{Sink, TapeSink};

/// The admin HTTP app.
#[derive(Debug)]
pub struct AdminApp {
    metrics: Arc<Metrics>,
    sink: Sink,
}

impl AdminApp {
    /// An admin app reporting `metrics` and the health of `sink`.
    pub fn new(metrics: Arc<Metrics>, sink: Sink) -> Self {
        AdminApp { metrics, sink }
    }

    fn tape(&self) -> Option<&TapeSink> {
        match &self.sink {
            Sink::Tape(s) => Some(s),
            Sink::Unavailable(p) => p.ready(),
            Sink::Off => None,
        }
    }

    fn health(&self) -> Health {
        match (&self.sink, self.tape()) {
            (_, Some(s)) => s.sender.health(),
            (Sink::Unavailable(p), None) => Health {
                degraded: true,
                reason: Some(p.reason()),
            },
            _ => Health {
                degraded: false,
                reason: None,
            },
        }
    }
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let uri = &session.req_header().uri;
        let strict = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "strict"));
        match uri.path() {
            "/metrics" => {
                let text = match (&self.sink, self.tape()) {
                    (_, Some(s)) => {
                        let (mut stats, health) = (s.sender.stats(), s.sender.health());
                        s.batcher.add_to(&mut stats);
                        self.metrics.render(Some((&stats, &health)))
                    }
                    (Sink::Unavailable(_), None) => self.metrics.render(None),
                    _ => {
                        let h = self.health();
                        self.metrics.render(Some((&Default::default(), &h)))
                    }
                };
                respond(200, "text/plain; version=0.0.4", text.into_bytes())
            }
            "/healthz" => {
                let h = self.health();
                let body = serde_json::json!({
                    "status": if h.degraded { "degraded" } else { "ok" },
                    "reason": h.reason,
                });
                let code = if h.degraded && strict { 503 } else { 200 };
                respond(code, "application/json", body.to_string().into_bytes())
            }
            "/readyz" => respond(200, "application/json", br#"{"status":"ready"}"#.to_vec()),
            _ => respond(
                404,
                "text/plain",
                b"not found: try /metrics, /healthz, /readyz\n".to_vec(),
            ),
        }
    }
}
