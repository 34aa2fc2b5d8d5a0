//! The admin listener: `/metrics` (Prometheus text), `/healthz` and `/readyz` (JSON), served by a
//! small hyper HTTP/1.1 server on its own thread, whatever the engine (so it answers even when
//! the proxy's workers are saturated).
//!
//! `/healthz` answers `200` with `{"status":"ok"}` or `{"status":"degraded","reason":…}` when
//! the tape cannot be written: a recorder whose disk fails keeps forwarding traffic (fail-open),
//! so a liveness probe must not restart it; alerting reads the `status` field or the
//! `tapedeck_writer_degraded` gauge. `/healthz?strict` answers `503` when degraded, for those
//! who want the status code to carry it. `/readyz` answers `200` while every proxy listener is
//! accepting, and `503` before they are bound, once shutdown begins, or if an accept loop died.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tapedeck_storage::Health;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::capture::Sink;
use crate::engine::Readiness;
use crate::metrics::Metrics;

/// What the admin endpoints report.
#[derive(Debug)]
pub(crate) struct AdminState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) sink: Sink,
    pub(crate) readiness: Arc<Readiness>,
}

impl AdminState {
    fn health(&self) -> Health {
        match (&self.sink, self.sink.tape()) {
            (_, Some(s)) => s.health(),
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

    /// The answer to `GET path?query`: status, content type, body.
    pub(crate) fn respond(&self, path: &str, query: Option<&str>) -> (u16, &'static str, Vec<u8>) {
        let strict = query.is_some_and(|q| q.split('&').any(|p| p == "strict"));
        match path {
            "/metrics" => {
                let text = match (&self.sink, self.sink.tape()) {
                    (_, Some(s)) => self.metrics.render(Some((&s.stats(), &s.health()))),
                    (Sink::Unavailable(_), None) => self.metrics.render(None),
                    _ => {
                        let h = self.health();
                        self.metrics.render(Some((&Default::default(), &h)))
                    }
                };
                (200, "text/plain; version=0.0.4", text.into_bytes())
            }
            "/healthz" => {
                let h = self.health();
                let body = serde_json::json!({
                    "status": if h.degraded { "degraded" } else { "ok" },
                    "reason": h.reason,
                });
                let code = if h.degraded && strict { 503 } else { 200 };
                (code, "application/json", body.to_string().into_bytes())
            }
            "/readyz" => {
                if self.readiness.ready() {
                    (200, "application/json", br#"{"status":"ready"}"#.to_vec())
                } else {
                    let why = if self.readiness.is_stopping() {
                        "shutting down"
                    } else {
                        "not accepting"
                    };
                    let body = serde_json::json!({"status": "not ready", "reason": why});
                    (503, "application/json", body.to_string().into_bytes())
                }
            }
            _ => (
                404,
                "text/plain",
                b"not found: try /metrics, /healthz, /readyz\n".to_vec(),
            ),
        }
    }
}

/// The admin server's thread; [`AdminServer::stop`] ends it.
#[derive(Debug)]
pub(crate) struct AdminServer {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Serves `listener` (already bound) on a thread of its own.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        state: Arc<AdminState>,
    ) -> std::io::Result<AdminServer> {
        listener.set_nonblocking(true)?;
        let (stop, mut stopped) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("tapedeck-admin".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(error = %e, "admin listener failed");
                            return;
                        }
                    };
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => break,
                            accepted = listener.accept() => {
                                let Ok((tcp, _)) = accepted else { continue };
                                let state = state.clone();
                                tokio::spawn(async move {
                                    let svc = hyper::service::service_fn(move |req| {
                                        let r = answer(&state, &req);
                                        async move { Ok::<_, Infallible>(r) }
                                    });
                                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                        .await
                                    {
                                        debug!(error = %e, "admin connection");
                                    }
                                });
                            }
                        }
                    }
                });
            })?;
        Ok(AdminServer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting and ends the thread (open connections are dropped).
    pub(crate) fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = state.respond(req.uri().path(), req.uri().query());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}
