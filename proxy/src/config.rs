//! Configuration: [`RawConfig`] is what a user wrote (a `tapedeck.toml` file and/or command-line
//! flags, every flag also a key), [`Settings`] is the checked runtime form made by
//! [`RawConfig::validate`].
//!
//! Keys are the flag names without the leading dashes (`max-body`, `upstream`, …). Unknown keys
//! are rejected with an error naming the key. Sizes accept a byte count or a string with a unit
//! (`"1MiB"`, `"512KiB"`, `"10MB"`); durations accept seconds or a string with a unit (`"5s"`,
//! `"500ms"`, `"2m"`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use tapedeck_common::parse::{parse_duration, parse_size};
use tapedeck_common::tls::{Identity, TlsError};
use tapedeck_common::trace::TraceSource;
use tapedeck_common::{RedactMode, RedactRules, RuleRedactor};

use crate::engine::Engine;
use crate::sample::{Sampler, SamplerBuilder};
use crate::upstream_tls::{UpstreamTls, UpstreamTlsKeys};

/// A size (`1048576`, `"1MiB"`) or a duration (`5`, `"5s"`) as written in the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum NumOrText {
    /// A plain number (bytes or seconds).
    Num(u64),
    /// A number with a unit.
    Text(String),
}

impl From<&str> for NumOrText {
    fn from(s: &str) -> Self {
        NumOrText::Text(s.to_owned())
    }
}

/// Everything `tapedeck record` can be told, as written (all optional). Field names are the
/// config keys and, with `--` in front, the flags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// Address the proxy listens on (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Where requests go: `http://host:port` or `https://host:port` (required, except with
    /// `forward`, where it only receives origin-form requests).
    pub upstream: Option<String>,
    /// Forward-proxy mode for plain-http dependencies (default false): a request with an
    /// absolute-form target (`GET http://pricing:8080/quote HTTP/1.1`, what a client sends to
    /// the proxy in its `HTTP_PROXY`) goes to that host; `CONNECT` (https through the proxy) is
    /// answered 501. hyper engine only.
    pub forward: Option<bool>,
    /// Tape directory to record into (required unless `record = false`).
    pub tape: Option<PathBuf>,
    /// `source` label stored with every exchange (default: the upstream authority).
    pub source: Option<String>,
    /// Record exchanges (default true); `false` makes a pure pass-through proxy.
    pub record: Option<bool>,
    /// Body capture cap per direction (default 1 MiB); longer bodies are forwarded whole and
    /// stored truncated. A compressed body is decoded for redaction up to 8 × this.
    pub max_body: Option<NumOrText>,
    /// Worker threads of the proxy (default: the number of CPUs).
    pub threads: Option<usize>,
    /// The data plane: `hyper` (default) or `pingora`.
    pub engine: Option<String>,
    /// Admin listener for `/metrics`, `/healthz`, `/readyz` (default `127.0.0.1:9180`; `off`).
    pub admin: Option<String>,
    /// How long `SIGTERM` waits for in-flight exchanges before stopping (default 5 s).
    pub grace_period: Option<NumOrText>,
    /// Spool flush interval of the tape writer (default 1 s): what a crash may lose.
    pub flush_interval: Option<NumOrText>,
    /// Records the writer queue holds before it drops (default 16384).
    pub queue_capacity: Option<usize>,
    /// Bytes of records (bodies, headers and a fixed overhead per record) that may wait for the
    /// tape writer, in the hand-off and the writer's queue together, before records are dropped
    /// and counted (default 16 MiB). With `queue-capacity`, what bounds the recorder's memory.
    pub queue_bytes: Option<NumOrText>,
    /// Bytes of closed spool segments that may wait to be sealed into Parquet while sealing
    /// runs only on otherwise idle CPU (default 1 GiB); beyond it sealing also runs at normal
    /// priority. `0` seals each segment at once, at normal priority.
    pub seal_backlog: Option<NumOrText>,
    /// Time a client has to send a whole request head (default 60 s): from accept for the first
    /// request of a connection, from the request's first byte for later ones. Past it the
    /// connection is closed, with a `408` if part of a head had arrived (slowloris). Also the
    /// longest pause between reads of a request body (pingora's per-read timeout).
    pub header_timeout: Option<NumOrText>,
    /// Time an idle keep-alive client connection is kept open (default 60 s): HTTP/1.1 from the
    /// end of a response to the first byte of the next request (whole seconds, at least 1);
    /// HTTP/2 while no stream is open.
    pub idle_timeout: Option<NumOrText>,
    /// Time to connect to the upstream (default 5 s); past it the client gets 504.
    pub connect_timeout: Option<NumOrText>,
    /// Time allowed between bytes read from the upstream (default 60 s); past it the client
    /// gets 504.
    pub upstream_timeout: Option<NumOrText>,
    /// Idle HTTP/1.1 upstream connections each worker thread keeps between requests, for the
    /// next request of any of its client connections to take instead of connecting (default
    /// 1024; `0` keeps none: a connection per request). Each is kept at most `idle-timeout`.
    /// The hyper engine's; an error with `engine = "pingora"`, which pools on its own.
    pub upstream_keepalive: Option<usize>,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plaintext listener (default true).
    pub h2c: Option<bool>,
    /// PEM certificate chain: terminate TLS on the listener (with `tls-key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls-cert`.
    pub tls_key: Option<PathBuf>,
    /// Verify the upstream's TLS certificate for `https://` upstreams (default true); the older
    /// spelling of `upstream-insecure` (`upstream-verify = false` is `upstream-insecure = true`).
    pub upstream_verify: Option<bool>,
    /// Speak HTTP/2 with prior knowledge (h2c) to a plaintext upstream, e.g. a gRPC server
    /// (default false: HTTP/1.1; `https://` upstreams negotiate h2 by ALPN).
    pub upstream_h2c: Option<bool>,
    /// PEM bundle of the CA certificates that an `https://` upstream's certificate must chain
    /// to, instead of the system roots.
    pub upstream_ca: Option<PathBuf>,
    /// PEM certificate chain presented to an `https://` upstream that asks for one (mutual TLS,
    /// with `upstream-client-key`).
    pub upstream_client_cert: Option<PathBuf>,
    /// PEM private key for `upstream-client-cert`.
    pub upstream_client_key: Option<PathBuf>,
    /// Server name sent (SNI) to an `https://` upstream and verified against its certificate
    /// (default: the upstream URL's host).
    pub upstream_sni: Option<String>,
    /// Do not verify an `https://` upstream's certificate (tests only; logged as a warning).
    pub upstream_insecure: Option<bool>,

    /// Extra header names to redact, on top of the default sensitive list.
    #[serde(alias = "redact-header")]
    pub redact_headers: Option<Vec<String>>,
    /// Path templates whose `{…}` segments are redacted: `/reset-password/{token}`,
    /// `/v1/orgs/*/keys/{key}/**` (`*` any one segment, `**` the rest, both kept).
    pub redact_path: Option<Vec<String>>,
    /// Query parameter names to redact (also applied to form-encoded bodies).
    pub redact_query: Option<Vec<String>>,
    /// JSON body paths to redact: `$.password`, `$.user.ssn`, `$..card_number`, `$.items[*].pan`.
    pub redact_json: Option<Vec<String>>,
    /// Regular expressions whose matches in bodies are redacted.
    pub redact_regex: Option<Vec<String>>,
    /// `mask` (fixed placeholder, default) or `hash` (keyed HMAC-SHA256 token).
    pub redact_mode: Option<RedactMode>,
    /// Environment variable holding the `hash` key (default `TAPEDECK_REDACT_KEY`).
    pub redact_key_env: Option<String>,
    /// File holding the `hash` key (instead of the environment variable).
    pub redact_key_file: Option<PathBuf>,

    /// Fraction of exchanges recorded, 0.0–1.0 (default 1.0).
    pub sample: Option<f64>,
    /// Header whose value keys the sampling decision (e.g. `traceparent`), so that all requests
    /// of one trace are recorded or skipped together.
    pub sample_key: Option<String>,
    /// Header the `trace_id` column is read from (default `traceparent`: the W3C trace id);
    /// another name (e.g. `x-request-id`) stores that header's value as is.
    pub trace_header: Option<String>,
    /// Record only these methods (default: all).
    #[serde(alias = "include-method")]
    pub include_methods: Option<Vec<String>>,
    /// Never record these methods.
    #[serde(alias = "exclude-method")]
    pub exclude_methods: Option<Vec<String>>,
    /// Record only paths matching one of these globs (default: all), e.g. `/api/**`.
    #[serde(alias = "include-path")]
    pub include_paths: Option<Vec<String>>,
    /// Never record paths matching one of these globs, e.g. `/healthz`.
    #[serde(alias = "exclude-path")]
    pub exclude_paths: Option<Vec<String>>,
}

/// Why a configuration was rejected. Each variant names the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error (it names the key and shows the line).
        #[source]
        source: TomlError,
    },
    /// Config text given without a file ([`RawConfig::from_toml`]) is not valid TOML or has an
    /// unknown key or a value of the wrong type.
    #[error("invalid config: {source}")]
    Toml {
        /// The parser's error (it names the key and shows the line).
        #[source]
        source: TomlError,
    },
    /// A required key is missing.
    #[error("`{key}` is required (flag --{key} or key `{key}` in the config file)")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A value is not acceptable.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Config text that does not parse into a [`RawConfig`]: a TOML syntax error, an unknown key, or
/// a value of the wrong type. Its text names the key, gives the line and column, and shows the
/// line (the parser's message, without its trailing newline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.to_string().trim_end())]
pub struct TomlError(Box<toml::de::Error>);

impl TomlError {
    /// The parser's message alone, e.g. ``unknown field `max-bodyy`, expected one of …``.
    pub fn message(&self) -> &str {
        self.0.message()
    }

    /// Where in the text the error is, in bytes, when the parser knows.
    pub fn span(&self) -> Option<std::ops::Range<usize>> {
        self.0.span()
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

fn parse_toml(text: &str) -> Result<RawConfig, TomlError> {
    toml::from_str(text).map_err(|e| TomlError(Box::new(e)))
}

/// An upstream as validated: where to connect, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// `true` for `https://`.
    pub tls: bool,
    /// Host name (for SNI and the tape's `source` default).
    pub host: String,
    /// `host:port` as written.
    pub authority: String,
    /// TLS options for an `https://` upstream (CA, client certificate, SNI, verification).
    pub tls_options: UpstreamTls,
}

/// TLS termination on the listener: the files as given and what they hold, read and checked by
/// [`RawConfig::validate`] (every certificate parses, the key is usable and belongs to the leaf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// The chain and key, checked to belong together.
    pub identity: Identity,
}

/// The checked settings the recorder runs with. Made by [`RawConfig::validate`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listener address.
    pub listen: SocketAddr,
    /// The upstream; `None` only in forward-proxy mode without one.
    pub upstream: Option<Upstream>,
    /// Forward-proxy mode: absolute-form requests go to the host they name.
    pub forward: bool,
    /// Tape directory; `None` when recording is off.
    pub tape: Option<PathBuf>,
    /// `source` label.
    pub source: String,
    /// Body capture cap per direction, in bytes.
    pub max_body: usize,
    /// Proxy worker threads.
    pub threads: usize,
    /// The data plane.
    pub engine: Engine,
    /// Admin listener, if enabled.
    pub admin: Option<SocketAddr>,
    /// Shutdown grace period.
    pub grace_period: Duration,
    /// Spool flush interval.
    pub flush_interval: Duration,
    /// Writer queue capacity, in records.
    pub queue_capacity: usize,
    /// Bound on the bytes of records waiting for the writer (hand-off and queue together).
    pub queue_bytes: usize,
    /// Bytes of closed spool segments left to low-priority sealing.
    pub seal_backlog: u64,
    /// Deadline of a whole request head; per-read timeout of a request body.
    pub header_timeout: Duration,
    /// Idle keep-alive timeout (HTTP/1.1 between requests, HTTP/2 with no open stream).
    pub idle_timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream read timeout.
    pub upstream_timeout: Duration,
    /// Idle HTTP/1.1 upstream connections kept per worker thread between requests.
    pub upstream_keepalive: usize,
    /// Accept h2c on the plaintext listener.
    pub h2c: bool,
    /// TLS termination, if configured.
    pub tls: Option<TlsFiles>,
    /// Verify upstream certificates.
    pub upstream_verify: bool,
    /// h2c to the upstream.
    pub upstream_h2c: bool,
    /// The redactor built from the `redact-*` keys.
    pub redactor: RuleRedactor,
    /// Sampling and capture filters.
    pub sampler: Sampler,
    /// Where the `trace_id` column comes from.
    pub trace: TraceSource,
}

impl RawConfig {
    /// Reads a TOML config file. Unknown keys are errors naming the key.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses TOML text; the error ([`ConfigError::Toml`]) names the offending key.
    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        parse_toml(text).map_err(|source| ConfigError::Toml { source })
    }

    /// Overlays `over` on `self`: every key set in `over` wins (flags over the file).
    pub fn merge(self, over: RawConfig) -> RawConfig {
        macro_rules! pick {
            ($($f:ident),* $(,)?) => {
                RawConfig { $($f: over.$f.or(self.$f)),* }
            };
        }
        pick!(
            listen,
            upstream,
            forward,
            tape,
            source,
            record,
            max_body,
            threads,
            engine,
            admin,
            grace_period,
            flush_interval,
            queue_capacity,
            queue_bytes,
            seal_backlog,
            header_timeout,
            idle_timeout,
            connect_timeout,
            upstream_timeout,
            upstream_keepalive,
            h2c,
            tls_cert,
            tls_key,
            upstream_verify,
            upstream_h2c,
            upstream_ca,
            upstream_client_cert,
            upstream_client_key,
            upstream_sni,
            upstream_insecure,
            redact_headers,
            redact_path,
            redact_query,
            redact_json,
            redact_regex,
            redact_mode,
            redact_key_env,
            redact_key_file,
            sample,
            sample_key,
            trace_header,
            include_methods,
            exclude_methods,
            include_paths,
            exclude_paths,
        )
    }

    /// Checks every value and builds the runtime [`Settings`].
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let listen = resolve_one("listen", self.listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let forward = self.forward.unwrap_or(false);
        let keys = UpstreamTlsKeys {
            ca: self.upstream_ca,
            client_cert: self.upstream_client_cert,
            client_key: self.upstream_client_key,
            sni: self.upstream_sni,
            insecure: self.upstream_insecure,
            verify: self.upstream_verify,
        };
        let upstream = match (self.upstream.as_deref(), forward) {
            (None, false) => return Err(ConfigError::Missing { key: "upstream" }),
            (None, true) => None,
            (Some(u), _) => {
                let mut upstream = parse_upstream(u)?;
                upstream.tls_options = keys.load(upstream.tls)?;
                Some(upstream)
            }
        };
        let upstream_verify = upstream.as_ref().is_none_or(|u| !u.tls_options.insecure);
        let record = self.record.unwrap_or(true);
        let tape = match (record, self.tape) {
            (true, None) => return Err(ConfigError::Missing { key: "tape" }),
            (true, Some(t)) => Some(t),
            (false, _) => None,
        };
        let max_body = size("max-body", self.max_body.as_ref(), 1 << 20)?;
        let threads = match self.threads {
            Some(0) => return Err(invalid("threads", "must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let engine = match self.engine.as_deref() {
            None => Engine::default(),
            Some(name) => Engine::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Engine::ALL.iter().map(|(n, _)| *n).collect();
                invalid(
                    "engine",
                    format!("unknown engine `{name}`: use one of {}", known.join(", ")),
                )
            })?,
        };
        let admin = match self.admin.as_deref() {
            Some("off") | Some("none") | Some("") => None,
            Some(a) => Some(resolve_one("admin", a)?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9180))),
        };
        let grace_period = duration("grace-period", self.grace_period.as_ref(), 5_000)?;
        let flush_interval = duration("flush-interval", self.flush_interval.as_ref(), 1_000)?;
        if flush_interval.is_zero() {
            return Err(invalid("flush-interval", "must be positive"));
        }
        let queue_capacity = match self.queue_capacity {
            Some(0) => return Err(invalid("queue-capacity", "must be at least 1")),
            Some(n) => n,
            None => 16_384,
        };
        let queue_bytes = size("queue-bytes", self.queue_bytes.as_ref(), 16 << 20)?;
        if queue_bytes == 0 {
            return Err(invalid("queue-bytes", "must be at least 1 byte"));
        }
        let seal_backlog = size("seal-backlog", self.seal_backlog.as_ref(), 1 << 30)? as u64;
        let positive = |key: &'static str, v: Option<&NumOrText>, default_ms: u64| {
            let d = duration(key, v, default_ms)?;
            if d.is_zero() {
                Err(invalid(key, "must be positive"))
            } else {
                Ok(d)
            }
        };
        let header_timeout = positive("header-timeout", self.header_timeout.as_ref(), 60_000)?;
        let idle_timeout = positive("idle-timeout", self.idle_timeout.as_ref(), 60_000)?;
        let connect_timeout = positive("connect-timeout", self.connect_timeout.as_ref(), 5_000)?;
        let upstream_timeout =
            positive("upstream-timeout", self.upstream_timeout.as_ref(), 60_000)?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = Identity::load(&cert, &key).map_err(|e| {
                    // Name the flag whose file is at fault.
                    let key = match e {
                        TlsError::NoKey { .. } | TlsError::Mismatch { .. } => "tls-key",
                        TlsError::Read { ref path, .. } if *path == key => "tls-key",
                        _ => "tls-cert",
                    };
                    invalid(key, e.to_string())
                })?;
                Some(TlsFiles {
                    cert,
                    key,
                    identity,
                })
            }
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Missing { key: "tls-key" }),
            (None, Some(_)) => return Err(ConfigError::Missing { key: "tls-cert" }),
        };

        // Compressed bodies are decoded for redaction up to 8 × the capture cap (see `redact`).
        let redactor = RedactRules {
            headers: self.redact_headers.unwrap_or_default(),
            path: self.redact_path.unwrap_or_default(),
            query: self.redact_query.unwrap_or_default(),
            json: self.redact_json.unwrap_or_default(),
            regex: self.redact_regex.unwrap_or_default(),
            mode: self.redact_mode.unwrap_or_default(),
            key_env: self.redact_key_env,
            key_file: self.redact_key_file,
        }
        .build(max_body.saturating_mul(8))
        .map_err(|e| invalid(e.key(), e.to_string()))?;

        let mut sb = SamplerBuilder::new();
        if let Some(rate) = self.sample {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid("sample", "must be between 0.0 and 1.0"));
            }
            sb = sb.rate(rate);
        }
        if let Some(k) = self.sample_key {
            sb = sb.key_header(&k);
        }
        for m in self.include_methods.unwrap_or_default() {
            sb = sb.include_method(&m);
        }
        for m in self.exclude_methods.unwrap_or_default() {
            sb = sb.exclude_method(&m);
        }
        for p in self.include_paths.unwrap_or_default() {
            sb = sb
                .include_path(&p)
                .map_err(|e| invalid("include-paths", e.to_string()))?;
        }
        for p in self.exclude_paths.unwrap_or_default() {
            sb = sb
                .exclude_path(&p)
                .map_err(|e| invalid("exclude-paths", e.to_string()))?;
        }
        let sampler = sb
            .build()
            .map_err(|e| invalid("include-paths", e.to_string()))?;
        let trace = match self.trace_header.as_deref() {
            None => TraceSource::Traceparent,
            Some(h) if http::HeaderName::from_bytes(h.trim().as_bytes()).is_err() => {
                return Err(invalid(
                    "trace-header",
                    format!("`{h}` is not a header name"),
                ));
            }
            Some(h) => TraceSource::from_header_name(h),
        };

        if forward && engine == Engine::Pingora {
            return Err(invalid(
                "forward",
                "the pingora engine has no forward-proxy mode: use --engine hyper (the default)",
            ));
        }
        if self.upstream_keepalive.is_some() && engine == Engine::Pingora {
            return Err(invalid(
                "upstream-keepalive",
                "the pingora engine pools upstream connections its own way: the key applies to \
                 --engine hyper (the default)",
            ));
        }
        Ok(Settings {
            listen,
            source: self.source.unwrap_or_else(|| {
                upstream
                    .as_ref()
                    .map_or_else(|| "forward".to_owned(), |u| u.authority.clone())
            }),
            upstream,
            forward,
            tape,
            max_body,
            threads,
            engine,
            admin,
            grace_period,
            flush_interval,
            queue_capacity,
            queue_bytes,
            seal_backlog,
            header_timeout,
            idle_timeout,
            connect_timeout,
            upstream_timeout,
            upstream_keepalive: self.upstream_keepalive.unwrap_or(1024),
            h2c: self.h2c.unwrap_or(true),
            tls,
            upstream_verify,
            upstream_h2c: self.upstream_h2c.unwrap_or(false),
            redactor,
            sampler,
            trace,
        })
    }
}

fn resolve_one(key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.to_socket_addrs()
        .map_err(|e| invalid(key, format!("`{s}` is not an address (host:port): {e}")))?
        .next()
        .ok_or_else(|| invalid(key, format!("`{s}` resolves to no address")))
}

fn parse_upstream(s: &str) -> Result<Upstream, ConfigError> {
    let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(invalid(
            "upstream",
            format!("`{s}` must start with http:// or https://"),
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid(
            "upstream",
            format!("`{s}` must be scheme://host[:port] without a path"),
        ));
    }
    let with_port = if authority.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
    }) {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let host = with_port
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        .unwrap_or_default();
    let addr = resolve_one("upstream", &with_port)?;
    Ok(Upstream {
        addr,
        tls,
        host,
        authority: authority.to_owned(),
        tls_options: UpstreamTls::default(),
    })
}

fn size(key: &'static str, v: Option<&NumOrText>, default: usize) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(NumOrText::Num(n)) => Ok(*n as usize),
        Some(NumOrText::Text(t)) => parse_size(t)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .map_err(|e| invalid(key, e.to_string())),
    }
}

fn duration(
    key: &'static str,
    v: Option<&NumOrText>,
    default_ms: u64,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(Duration::from_millis(default_ms)),
        Some(NumOrText::Num(n)) => Ok(Duration::from_secs(*n)),
        Some(NumOrText::Text(t)) => parse_duration(t).map_err(|e| invalid(key, e.to_string())),
    }
}

#[cfg(test)]
mod tests;
