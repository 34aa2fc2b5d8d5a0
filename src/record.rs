//! `tapedeck record`: the recording sidecar proxy. Flags become a `RawConfig` layered over the
//! `--config` file; `tapedeck-proxy` does the rest.

use std::path::PathBuf;

use anyhow::Context;
use tapedeck_common::RedactMode;
use tapedeck_proxy::{NumOrText, RawConfig, Recorder};

use crate::util::thousands;

/// Record the traffic to a service: a reverse proxy that forwards every request to the upstream
/// unchanged and writes each exchange to a tape, with secrets redacted.
///
/// Every flag is also a key of the `--config` TOML file (same name without the dashes; list
/// flags are arrays there); flags override the file. SIGTERM stops accepting, lets in-flight
/// exchanges finish, seals the tape and exits 0.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Every flag is also a key of the --config TOML file (flags win): the flag's name without \
the dashes, e.g. max-body = \"1MiB\"; repeatable flags take arrays \
(redact-json = [\"$.password\"], exclude-path = [\"/healthz\"]); --no-record is record = false, \
--no-h2c is h2c = false, --upstream-insecure is upstream-insecure = true. Unknown keys are errors.\n\n\
Examples:\n  \
  tapedeck record --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000 --tape ./tapes/svc\n  \
  tapedeck record --config tapedeck.toml --sample 0.1 --sample-key traceparent\n  \
  TAPEDECK_REDACT_KEY=$(cat key) tapedeck record ... --redact-mode hash --redact-json '$.password'"
)]
pub(crate) struct Args {
    /// TOML file with any of the keys below (unknown keys are rejected).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Upstream to forward to: http://host:port or https://host:port (with --forward: where
    /// origin-form requests go, optional).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Forward-proxy mode for plain-http dependencies: point an app's HTTP_PROXY here, and each
    /// absolute-form request (GET http://pricing:8080/quote) goes to the host it names and is
    /// recorded. CONNECT (https through the proxy) gets 501. hyper engine only.
    #[arg(long)]
    forward: bool,
    /// Tape directory to record into (created if missing).
    #[arg(long, value_name = "DIR")]
    tape: Option<PathBuf>,
    /// `source` label stored with each exchange [default: the upstream's host:port, or
    /// `forward` with --forward].
    #[arg(long)]
    source: Option<String>,
    /// Forward only, record nothing (pass-through; for comparisons). Conflicts with `--tape`
    /// (a config file's `tape` is overridden instead).
    #[arg(long, conflicts_with = "tape")]
    no_record: bool,
    /// Body capture cap per direction (bodies are always forwarded whole) [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    max_body: Option<String>,
    /// Proxy worker threads [default: number of CPUs].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// The data plane: hyper (per-thread runtimes, the default) or pingora [default: hyper].
    #[arg(long, value_name = "ENGINE")]
    engine: Option<String>,
    /// Admin listener for /metrics, /healthz, /readyz, or `off` [default: 127.0.0.1:9180].
    #[arg(long, value_name = "ADDR|off")]
    admin: Option<String>,
    /// Time SIGTERM waits for in-flight exchanges [default: 5s].
    #[arg(long, value_name = "DURATION")]
    grace_period: Option<String>,
    /// Tape spool flush interval: the most a crash can lose [default: 1s].
    #[arg(long, value_name = "DURATION")]
    flush_interval: Option<String>,
    /// Records the writer queue holds before it drops (and counts) [default: 16384].
    #[arg(long, value_name = "N")]
    queue_capacity: Option<usize>,
    /// Bytes of exchanges (bodies, headers, a fixed overhead each) waiting for the tape writer
    /// before it drops (and counts): bounds the recorder's memory [default: 16MiB].
    #[arg(long, value_name = "SIZE")]
    queue_bytes: Option<String>,
    /// Bytes of closed spool segments left to seal on idle CPU only; beyond it sealing runs at
    /// normal priority too; 0 seals at once [default: 1GiB].
    #[arg(long, value_name = "SIZE")]
    seal_backlog: Option<String>,
    /// Time a client has to send a whole request head (from accept for a connection's first
    /// request, else from its first byte; past it: 408 and close), and the longest pause while
    /// it sends a request body [default: 60s].
    #[arg(long, value_name = "DURATION")]
    header_timeout: Option<String>,
    /// Idle keep-alive client connections (no request in progress; HTTP/2: no open stream)
    /// are closed after this [default: 60s].
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Upstream connect timeout; past it the client gets 504 [default: 5s].
    #[arg(long, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// Longest upstream silence; past it the client gets 504 [default: 60s].
    #[arg(long, value_name = "DURATION")]
    upstream_timeout: Option<String>,
    /// Idle HTTP/1.1 upstream connections each worker keeps between requests, for the next
    /// request of any client to take instead of connecting; 0 keeps none [default: 1024].
    #[arg(long, value_name = "N")]
    upstream_keepalive: Option<usize>,
    /// Refuse HTTP/2 prior-knowledge (h2c) on the plaintext listener.
    #[arg(long)]
    no_h2c: bool,
    /// Terminate TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Trust only the CA certificates of this PEM bundle for an https:// upstream (instead of
    /// the system roots).
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// PEM certificate chain to present to an https:// upstream that asks for one (mutual TLS;
    /// needs --upstream-client-key).
    #[arg(long, value_name = "FILE")]
    upstream_client_cert: Option<PathBuf>,
    /// PEM private key for --upstream-client-cert.
    #[arg(long, value_name = "FILE")]
    upstream_client_key: Option<PathBuf>,
    /// Server name to send (SNI) to an https:// upstream and verify its certificate against
    /// [default: the upstream's host].
    #[arg(long, value_name = "NAME")]
    upstream_sni: Option<String>,
    /// Do not verify the certificate of an https:// upstream (tests only; logged as a warning).
    #[arg(long, alias = "insecure-upstream")]
    upstream_insecure: bool,
    /// Speak HTTP/2 prior knowledge (h2c) to a plaintext upstream (e.g. gRPC servers).
    #[arg(long)]
    upstream_h2c: bool,
    #[command(flatten)]
    redact: crate::flags::RedactArgs,
    /// Fraction of exchanges to record, 0.0–1.0 [default: 1.0].
    #[arg(long, value_name = "RATE")]
    sample: Option<f64>,
    /// Header whose value keys sampling (e.g. traceparent): one decision per trace.
    #[arg(long, value_name = "HEADER")]
    sample_key: Option<String>,
    /// Header the trace id of each exchange is read from [default: traceparent, the W3C trace
    /// id]; another name (e.g. x-request-id) stores that header's value as is.
    #[arg(long, value_name = "NAME")]
    trace_header: Option<String>,
    /// Record only this method (repeatable).
    #[arg(long = "include-method", value_name = "METHOD")]
    include_methods: Vec<String>,
    /// Never record this method (repeatable).
    #[arg(long = "exclude-method", value_name = "METHOD")]
    exclude_methods: Vec<String>,
    /// Record only paths matching this glob (repeatable), e.g. '/api/**'.
    #[arg(long = "include-path", value_name = "GLOB")]
    include_paths: Vec<String>,
    /// Never record paths matching this glob (repeatable), e.g. /healthz.
    #[arg(long = "exclude-path", value_name = "GLOB")]
    exclude_paths: Vec<String>,
}

fn list(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

fn text(v: Option<String>) -> Option<NumOrText> {
    v.map(NumOrText::Text)
}

impl Args {
    fn into_raw(self) -> anyhow::Result<(Option<PathBuf>, RawConfig)> {
        let raw = RawConfig {
            listen: self.listen,
            upstream: self.upstream,
            forward: self.forward.then_some(true),
            tape: self.tape,
            source: self.source,
            record: self.no_record.then_some(false),
            max_body: text(self.max_body),
            threads: self.threads,
            engine: self.engine,
            admin: self.admin,
            grace_period: text(self.grace_period),
            flush_interval: text(self.flush_interval),
            queue_capacity: self.queue_capacity,
            queue_bytes: text(self.queue_bytes),
            seal_backlog: text(self.seal_backlog),
            header_timeout: text(self.header_timeout),
            idle_timeout: text(self.idle_timeout),
            connect_timeout: text(self.connect_timeout),
            upstream_timeout: text(self.upstream_timeout),
            upstream_keepalive: self.upstream_keepalive,
            h2c: self.no_h2c.then_some(false),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            upstream_verify: None,
            upstream_ca: self.upstream_ca,
            upstream_client_cert: self.upstream_client_cert,
            upstream_client_key: self.upstream_client_key,
            upstream_sni: self.upstream_sni,
            upstream_insecure: self.upstream_insecure.then_some(true),
            upstream_h2c: self.upstream_h2c.then_some(true),
            redact_headers: list(self.redact.redact_headers),
            redact_path: list(self.redact.redact_path),
            redact_query: list(self.redact.redact_query),
            redact_json: list(self.redact.redact_json),
            redact_regex: list(self.redact.redact_regex),
            redact_mode: self.redact.redact_mode.map(RedactMode::from),
            redact_key_env: self.redact.redact_key_env,
            redact_key_file: self.redact.redact_key_file,
            sample: self.sample,
            sample_key: self.sample_key,
            trace_header: self.trace_header,
            include_methods: list(self.include_methods),
            exclude_methods: list(self.exclude_methods),
            include_paths: list(self.include_paths),
            exclude_paths: list(self.exclude_paths),
        };
        Ok((self.config, raw))
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let (config, flags) = args.into_raw()?;
    let raw = match config {
        Some(path) => RawConfig::from_file(&path)?.merge(flags),
        None => flags,
    };
    let settings = raw.validate()?;
    let tape = settings.tape.clone();
    let summary = Recorder::new(settings)
        .run()
        .context("running the recorder")?;
    // Every number comes from the counters `/metrics` renders, every reason listed.
    let c = &summary.counts;
    let reasons = |it: &mut dyn Iterator<Item = (&'static str, u64)>| {
        it.map(|(reason, n)| format!("{reason} {}", thousands(n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let counted = format!(
        "dropped {} ({}); skipped {} ({})",
        thousands(c.dropped_total()),
        reasons(&mut c.dropped_by_reason()),
        thousands(c.skipped_total()),
        reasons(&mut c.skipped_by_reason()),
    );
    match tape {
        Some(dir) => crate::output::note!(
            "recorded {} of {} requests to {}: written {}; {counted}; sealed files {}",
            thousands(c.recorded),
            thousands(c.requests),
            dir.display(),
            thousands(c.written),
            summary.writer.as_ref().map_or(0, |w| w.files_sealed)
        ),
        None => crate::output::note!(
            "proxied {} requests (recording off); {counted}",
            thousands(c.requests)
        ),
    }
    Ok(crate::EXIT_OK)
}
