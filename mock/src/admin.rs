//! The admin listener: `/metrics` (Prometheus text) and `/healthz`, on its own thread so that
//! a scrape never competes with the data plane's workers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tracing::{debug, error};

use crate::MockError;
use crate::server::Shared;
use crate::stats::render_metrics;

/// The running admin listener.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Admin {
    pub(crate) fn start(addr: SocketAddr, sh: Arc<Shared>) -> Result<Admin, MockError> {
        let bind = tapedeck_common::net::BindError::on("admin", addr);
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let (tx, mut rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("mock-admin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "cannot start the admin runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = rx.changed() => break,
                            accepted = listener.accept() => {
                                let Ok((tcp, _)) = accepted else { continue };
                                let sh = sh.clone();
                                tokio::spawn(async move {
                                    let svc = hyper::service::service_fn(move |req| {
                                        std::future::ready(answer(&sh, &req))
                                    });
                                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(tcp), svc)
                                        .await
                                    {
                                        debug!(error = %e, "admin connection ended");
                                    }
                                });
                            }
                        }
                    }
                });
            })
            .map_err(|source| MockError::Start {
                what: "the admin listener",
                source,
            })?;
        Ok(Admin {
            addr: local,
            stop: tx,
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(sh: &Shared, req: &Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => {
            let st = crate::stats::MockStats::sum(sh.counters.iter());
            let faults = crate::fault_counts(&sh.faults);
            let out = sh.out.as_ref().map(|o| o.sender.stats());
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                render_metrics(&sh.name, &st, &faults, out.as_ref()),
            )
        }
        "/healthz" => {
            let degraded = sh
                .out
                .as_ref()
                .map(|o| o.sender.health())
                .filter(|h| h.degraded);
            match degraded {
                None => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
                Some(h) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("output tape degraded: {}\n", h.reason.unwrap_or_default()),
                ),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    Ok(r)
}
