//! The HTTP API: authentication, routing, bodies and answers (JSON on `/v1`, one line of text on
//! `/flagger`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::store::Store;
use crate::{MAX_BODY, RequestError, parse_run_request};

pub(crate) type Body = Full<Bytes>;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) store: Arc<Store>,
    /// Every request must carry `Authorization: Bearer TOKEN`.
    pub(crate) token: Option<String>,
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn text_response(status: StatusCode, line: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{line}\n"))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error_json(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

fn refused(e: &RequestError) -> Response<Body> {
    error_json(e.status(), &e.to_string())
}

/// Constant-time comparison of the presented token (the time depends only on the lengths).
fn authorized(token: &str, header: Option<&HeaderValue>) -> bool {
    let Some(presented) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (presented.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body, at most [`MAX_BODY`] bytes.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, RequestError> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|reason| RequestError::Body { reason })
}

pub(crate) async fn handle(
    api: Arc<Api>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Some(token) = &api.token
        && !authorized(token, req.headers().get(AUTHORIZATION))
    {
        tracing::debug!(%method, %path, "unauthorized request");
        let mut r = error_json(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    let resp = route(&api.store, method.clone(), &path, req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    Ok(resp)
}

async fn route(
    store: &Arc<Store>,
    method: Method,
    path: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["healthz"]) => text_response(StatusCode::OK, "ok"),
        (Method::POST, ["v1", "runs"]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return refused(&e),
            };
            start_run(store, &body)
        }
        (Method::GET, ["v1", "runs"]) => {
            json_response(StatusCode::OK, &json!({ "runs": store.list() }))
        }
        (Method::GET, ["v1", "runs", id]) | (Method::GET, ["v1", "runs", id, "verdict"]) => {
            match store.get(id) {
                Some(s) => json_response(StatusCode::OK, &store.document(&s)),
                None => error_json(StatusCode::NOT_FOUND, &format!("no run {id}")),
            }
        }
        (Method::GET, ["v1", "runs", id, file])
            if *file == "ticket.md" || tapedeck_diff::report::report(file).is_some() =>
        {
            let Some(state) = store.get(id) else {
                return error_json(StatusCode::NOT_FOUND, &format!("no run {id}"));
            };
            let (sub, content_type) = match tapedeck_diff::report::report(file) {
                Some(r) => ("report", r.content_type),
                None => ("ticket", "text/markdown; charset=utf-8"),
            };
            let path = store.run_dir(&state.id).join(sub).join(file);
            match tokio::fs::read(&path).await {
                Ok(text) => Response::builder()
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(text)))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                Err(_) => error_json(
                    StatusCode::NOT_FOUND,
                    &format!("run {id} has no {file} (yet)"),
                ),
            }
        }
        (Method::POST, ["flagger", hook]) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return refused(&e),
            };
            let (status, line) = crate::flagger::handle(store, hook, &body);
            text_response(status, &line)
        }
        (_, ["v1", ..]) | (_, ["flagger", ..]) | (_, ["healthz"]) => {
            error_json(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error_json(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// `POST /v1/runs`: `202` and the new run's document, `200` and the existing run's for a known
/// id (checked before the request is resolved, so polling needs no URLs).
fn start_run(store: &Arc<Store>, body: &[u8]) -> Response<Body> {
    let request = match parse_run_request(body) {
        Ok(r) => r,
        Err(e) => return refused(&e),
    };
    let id = match request.run_id() {
        Ok(id) => id,
        Err(e) => return refused(&e),
    };
    if let Some(existing) = store.get(&id) {
        return json_response(StatusCode::OK, &store.document(&existing));
    }
    let spec = match request.resolve(store.defaults()) {
        Ok(s) => s,
        Err(e) => return refused(&e),
    };
    let (state, new) = store.start(id, spec, None);
    let code = if new {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    json_response(code, &store.document(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_compare_exactly() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(authorized("abc", Some(&h("Bearer abc"))));
        assert!(authorized("abc", Some(&h("Bearer abc "))));
        assert!(!authorized("abc", Some(&h("Bearer abd"))));
        assert!(!authorized("abc", Some(&h("Bearer ab"))));
        assert!(!authorized("abc", Some(&h("Bearer abcd"))));
        assert!(!authorized("abc", Some(&h("Basic abc"))));
        assert!(!authorized("abc", Some(&h("bearer abc"))));
        assert!(!authorized("abc", None));
    }
}
