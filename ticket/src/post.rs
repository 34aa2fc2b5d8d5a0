//! `--post`: delivers `ticket.json` to a webhook over HTTP/1.1, plain or TLS (rustls, the system's
//! roots or a given CA file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{PostError, Ticket, truncate_chars};

/// Why one delivery attempt failed (wrapped into [`PostError::Post`] with the URL).
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Where and how `--post` delivers `ticket.json`.
#[derive(Debug, Clone)]
pub struct PostSettings {
    /// `http://` or `https://` URL of the webhook.
    pub url: String,
    /// Extra request headers (`${VAR}` already expanded).
    pub headers: Vec<(String, String)>,
    /// Bound on connecting, sending and reading the answer, each.
    pub timeout: Duration,
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_cert: Option<PathBuf>,
}

/// `Name: value` with `${VAR}` replaced from the environment (a missing variable is an error, so
/// a token never silently turns into an empty header).
pub fn parse_header(spec: &str) -> Result<(String, String), PostError> {
    let bad = |reason: String| PostError::Header {
        spec: spec.to_owned(),
        reason,
    };
    let (name, value) = spec
        .split_once(':')
        .ok_or_else(|| bad("expected 'Name: value'".to_owned()))?;
    let name = name.trim();
    if name.is_empty() || hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(bad(format!("{name:?} is not a header name")));
    }
    let mut out = String::new();
    let mut rest = value.trim();
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else {
            return Err(bad("unclosed ${".to_owned()));
        };
        let var = &rest[i + 2..i + j];
        let val = std::env::var(var)
            .map_err(|_| bad(format!("environment variable {var} is not set")))?;
        out.push_str(&val);
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    Ok((name.to_owned(), out))
}

fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, PostError> {
    use tapedeck_common::tls::{ClientTls, Trust};
    let trust = match ca {
        Some(path) => Trust::from_ca_file(path, false).map_err(PostError::CaCert)?,
        None => Trust::System,
    };
    let tls = ClientTls {
        trust,
        ..ClientTls::default()
    };
    tls.config().map_err(PostError::Tls)
}

/// One request over one connection, plain or TLS.
async fn send_once<S>(
    io: S,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "webhook connection ended with an error");
        }
    });
    Ok(sender.send_request(req).await?)
}

/// POSTs `ticket.json`; returns the status code on a 2xx, an error otherwise.
pub fn post_ticket(post: &PostSettings, ticket: &Ticket) -> Result<u16, PostError> {
    let url = post.url.as_str();
    let fail = |reason: String| PostError::Post {
        url: url.to_owned(),
        reason,
    };
    let uri: hyper::Uri = url.parse().map_err(|_| fail("not a URL".to_owned()))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(fail("use an http:// or https:// URL".to_owned())),
    };
    let host = uri
        .host()
        .ok_or_else(|| fail("no host".to_owned()))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let tls = if https {
        Some(tls_config(post.ca_cert.as_deref())?)
    } else {
        None
    };
    // A struct of strings and numbers always serializes.
    let body = serde_json::to_vec(ticket).unwrap_or_default();
    let mut builder = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("tapedeck/", env!("CARGO_PKG_VERSION")),
        );
    for (n, v) in &post.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let req = builder
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| fail(format!("building the request: {e}")))?;
    let timeout = post.timeout;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("starting the HTTP client: {e}")))?;
    rt.block_on(async move {
        use http_body_util::BodyExt;
        let deliver = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            match tls {
                None => send_once(tcp, req).await,
                Some(cfg) => {
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|_| Failure::from(format!("{host} is not a TLS server name")))?;
                    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
                        .connect(name, tcp)
                        .await?;
                    send_once(stream, req).await
                }
            }
        };
        let resp = tokio::time::timeout(timeout, deliver)
            .await
            .map_err(|_| fail(format!("no answer within {timeout:?}")))?
            .map_err(|e| fail(format!("could not deliver the ticket: {e}")))?;
        let status = resp.status();
        let text = tokio::time::timeout(timeout, resp.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if !status.is_success() {
            return Err(fail(format!(
                "the webhook answered {status}: {}",
                truncate_chars(text.trim(), 300)
            )));
        }
        Ok(status.as_u16())
    })
}
