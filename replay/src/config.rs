//! Settings: [`ReplayOptions`] is the raw form (flags or a config file, serde with unknown keys
//! rejected); [`ReplayOptions::validate`] turns it into the checked [`ReplayConfig`] the engine
//! runs. Nothing downstream of `validate` parses strings.

use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use serde::{Deserialize, Serialize};
use tapedeck_common::parse::{parse_duration, parse_time};

use crate::error::ReplayError;
use crate::pace::Pace;
use crate::select::Shard;

/// Raw replay settings, as flags or config keys. Every field has a default; call
/// [`validate`](Self::validate) to get a runnable [`ReplayConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayOptions {
    /// Tape paths to replay (directories, `.parquet` files or spool segments).
    pub tape: Vec<PathBuf>,
    /// Output tape directory for the results (required unless `dry_run`). It must hold no
    /// results yet (nor, for a URL, leftovers of an earlier run in its local spool directory),
    /// unless `append`.
    pub out: Option<PathBuf>,
    /// Add the results to an output tape that already holds some (on purpose: e.g. finishing
    /// an interrupted run, or uploading an earlier run's leftovers into the same URL).
    pub append: bool,
    /// Targets as `name=URL`; URL is `http://host:port[/prefix]` (HTTP/1.1),
    /// `h2c://host:port[/prefix]` (HTTP/2 with prior knowledge) or `https://host[:port][/prefix]`
    /// (TLS; HTTP/2 or HTTP/1.1 as ALPN decides).
    pub targets: Vec<String>,
    /// Send HTTP/2 (h2c prior knowledge) to every `http://` target, and offer only `h2` in
    /// ALPN to `https://` targets.
    pub http2: bool,
    /// `https://` targets: a PEM file of extra trusted CA certificates.
    pub ca_cert: Option<PathBuf>,
    /// `https://` targets: accept any certificate (test environments only).
    pub insecure: bool,
    /// Pacing mode: the name of one of [`crate::pace::MODES`] (`recorded`, `rate`, `poisson`,
    /// `max`).
    pub pace: String,
    /// `recorded` pacing: speed factor (2.0 = twice as fast).
    pub speed: f64,
    /// `recorded` pacing: longest idle gap kept, e.g. `1s` (none by default).
    pub max_gap: Option<String>,
    /// `rate` pacing: requests per second (origins, each sent to every target).
    pub rate: Option<f64>,
    /// The earlier spelling of `pace = "poisson"`: with `pace = "rate"`, exponential gaps.
    pub poisson: bool,
    /// `max` pacing: requests in flight. Open-loop modes: a safety cap on requests in flight
    /// (when reached, sends wait and the wait shows up as lateness). Default 64 for `max`,
    /// 4096 otherwise.
    pub concurrency: Option<usize>,
    /// Seed for Poisson arrivals.
    pub seed: u64,
    /// Worker threads that send (each runs its own single-threaded runtime and owns its
    /// connections); default: one per available core.
    pub threads: Option<usize>,
    /// HTTP/2 targets (h2c, or `https://` when ALPN picks h2): connections per target, over
    /// which all requests in flight are multiplexed as streams; default: one per worker
    /// thread. HTTP/1.1 targets use one connection per request in flight.
    pub connections: Option<usize>,
    /// Per-request timeout (whole exchange, from the actual send), e.g. `30s`.
    pub timeout: String,
    /// Connect timeout, e.g. `5s`.
    pub connect_timeout: String,
    /// Response body bytes kept per result (the true size is always recorded), e.g. 1048576.
    pub max_body: usize,
    /// Headers to set, `Name: value`; `${VAR}` in the value reads an environment variable.
    /// Replaces every recorded header of that name.
    pub set_headers: Vec<String>,
    /// Header names to remove from every request.
    pub drop_headers: Vec<String>,
    /// Refuse to start (before anything is sent) when a selected request would carry a
    /// redaction placeholder (`[REDACTED]`, `hmac-sha256:…`) that neither `set_headers` nor
    /// `drop_headers` replaces. Without it, the replay warns once and counts them.
    pub strict_credentials: bool,
    /// Only these methods (case-insensitive); empty means all.
    pub methods: Vec<String>,
    /// Only paths matching one of these globs (e.g. `/api/users/*`); empty means all.
    pub routes: Vec<String>,
    /// Only exchanges recorded at or after this time (RFC 3339, or µs since the epoch).
    pub from: Option<String>,
    /// Only exchanges recorded before this time (RFC 3339, or µs since the epoch).
    pub to: Option<String>,
    /// Replay at most this many recorded exchanges.
    pub limit: Option<u64>,
    /// Replay this fraction (0 < f ≤ 1) of exchanges, chosen deterministically by id hash.
    pub sample: Option<f64>,
    /// `K/N`: replay only exchanges whose id hashes to shard K of N.
    pub shard: Option<String>,
    /// Replay unsafe methods (POST, PUT, PATCH, DELETE).
    pub allow_writes: bool,
    /// Allow a target whose authority equals the tape's recorded authority.
    pub allow_same_host: bool,
    /// Skip damaged tape files instead of stopping.
    pub skip_corrupt: bool,
    /// Count what would be sent and send nothing.
    pub dry_run: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            tape: Vec::new(),
            out: None,
            append: false,
            targets: Vec::new(),
            http2: false,
            ca_cert: None,
            insecure: false,
            pace: crate::pace::DEFAULT.to_owned(),
            speed: 1.0,
            max_gap: None,
            rate: None,
            poisson: false,
            concurrency: None,
            seed: 1,
            threads: None,
            connections: None,
            timeout: "30s".into(),
            connect_timeout: "5s".into(),
            max_body: 1 << 20,
            set_headers: Vec::new(),
            drop_headers: Vec::new(),
            strict_credentials: false,
            methods: Vec::new(),
            routes: Vec::new(),
            from: None,
            to: None,
            limit: None,
            sample: None,
            shard: None,
            allow_writes: false,
            allow_same_host: false,
            skip_corrupt: false,
            dry_run: false,
        }
    }
}

/// HTTP version spoken to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
    /// TLS; HTTP/2 or HTTP/1.1 as negotiated by ALPN.
    Https,
}

/// A checked target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Label written to the `target` column.
    pub name: String,
    /// The URL as given.
    pub url: String,
    /// Protocol.
    pub protocol: Protocol,
    /// `host:port` the requests go to (also the `Host` / `:authority` sent).
    pub authority: Authority,
    /// Path prefix prepended to every recorded path (empty for `/`).
    pub prefix: String,
}

/// A header to set on every request.
#[derive(Debug, Clone)]
pub(crate) struct SetHeader {
    pub(crate) name: HeaderName,
    pub(crate) value: HeaderValue,
    /// What is written to the result tape: the value as given before `${VAR}` expansion, so
    /// injected credentials never reach disk.
    pub(crate) stored: bytes::Bytes,
}

/// Header names removed from every request.
#[derive(Debug, Clone, Default)]
pub(crate) struct DropSet(Vec<HeaderName>);

impl DropSet {
    pub(crate) fn new(names: Vec<HeaderName>) -> Self {
        Self(names)
    }
    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|n| n == name)
    }
}

/// Which recorded exchanges are replayed.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub(crate) methods: Vec<String>,
    pub(crate) routes: Option<GlobSet>,
    pub(crate) from_us: Option<i64>,
    pub(crate) to_us: Option<i64>,
    pub(crate) limit: Option<u64>,
    pub(crate) sample: Option<f64>,
    pub(crate) shard: Option<Shard>,
    pub(crate) allow_writes: bool,
    pub(crate) allow_same_host: bool,
    /// Lower-case names of the headers `--set-header` or `--drop-header` replace: a redaction
    /// placeholder recorded there is never sent.
    pub(crate) replaced_headers: Vec<String>,
}

/// Checked, runnable replay settings. Built only by [`ReplayOptions::validate`].
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub(crate) tape: Vec<PathBuf>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) append: bool,
    pub(crate) targets: Vec<Target>,
    pub(crate) pace: Pace,
    pub(crate) max_in_flight: usize,
    pub(crate) threads: Option<usize>,
    pub(crate) connections: Option<usize>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) tls: Option<rustls::ClientConfig>,
    pub(crate) set_headers: Vec<SetHeader>,
    pub(crate) drop_headers: DropSet,
    pub(crate) select: Selection,
    pub(crate) skip_corrupt: bool,
    pub(crate) dry_run: bool,
    pub(crate) strict_credentials: bool,
    pub(crate) options: ReplayOptions,
}

impl ReplayConfig {
    /// The targets, in the order given.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }
    /// The pacing.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }
    /// Output tape directory (`None` only for a dry run).
    pub fn out(&self) -> Option<&std::path::Path> {
        self.out.as_deref()
    }
    /// The input tape paths.
    pub fn tape(&self) -> &[PathBuf] {
        &self.tape
    }
    /// Whether this is a dry run.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }
    /// The raw options this was built from.
    pub fn options(&self) -> &ReplayOptions {
        &self.options
    }
}

impl ReplayOptions {
    /// The pacing mode's name, with the earlier `pace = "rate"` + `poisson = true` spelling
    /// read as `poisson`.
    pub fn pace_name(&self) -> &str {
        if self.poisson && self.pace == "rate" {
            "poisson"
        } else {
            &self.pace
        }
    }

    /// Checks every setting and builds the runnable configuration. Errors name the setting.
    pub fn validate(&self) -> Result<ReplayConfig, ReplayError> {
        use ReplayError as E;
        if self.tape.is_empty() {
            return Err(E::config("tape", "give at least one tape path"));
        }
        if self.out.is_none() && !self.dry_run {
            return Err(E::config(
                "out",
                "give an output tape directory for the results (or use --dry-run)",
            ));
        }
        if let Some(out) = &self.out {
            let same = |a: &std::path::Path, b: &std::path::Path| {
                a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
            };
            if self
                .tape
                .iter()
                .any(|t| same(t, out) || t.starts_with(out) || out.starts_with(t))
            {
                return Err(E::config(
                    "out",
                    "the output tape must be a different directory from (and not inside) the input tape",
                ));
            }
        }
        if self.targets.is_empty() && !self.dry_run {
            return Err(E::config(
                "target",
                "give at least one target as name=URL, e.g. candidate=http://127.0.0.1:9001",
            ));
        }
        let mut targets: Vec<Target> = Vec::new();
        for spec in &self.targets {
            let t = parse_target(spec, self.http2)?;
            if targets.iter().any(|o| o.name == t.name) {
                return Err(E::config(
                    "target",
                    format!(
                        "target name `{}` is given twice; labels must be unique",
                        t.name
                    ),
                ));
            }
            targets.push(t);
        }

        let concurrency = self.concurrency;
        if concurrency == Some(0) {
            return Err(E::config("concurrency", "must be at least 1"));
        }
        if self.poisson && !matches!(self.pace.as_str(), "rate" | "poisson") {
            return Err(E::config(
                "poisson",
                "--poisson only applies to --rate pacing",
            ));
        }
        let pace = Pace::from_options(self)?;
        // Open loop: a safety cap (sends wait when it is reached, and the wait is lateness).
        let max_in_flight = pace.closed_loop().unwrap_or(concurrency.unwrap_or(4096));
        if self.threads == Some(0) {
            return Err(E::config("threads", "must be at least 1"));
        }
        if self.connections == Some(0) {
            return Err(E::config("connections", "must be at least 1"));
        }

        let timeout =
            parse_duration(&self.timeout).map_err(|e| E::config("timeout", e.to_string()))?;
        let connect_timeout = parse_duration(&self.connect_timeout)
            .map_err(|e| E::config("connect-timeout", e.to_string()))?;
        if timeout.is_zero() || connect_timeout.is_zero() {
            return Err(E::config("timeout", "timeouts must be positive"));
        }

        let mut set_headers = Vec::new();
        for spec in &self.set_headers {
            set_headers.push(parse_set_header(spec)?);
        }
        let mut drop_headers = Vec::new();
        for name in &self.drop_headers {
            drop_headers.push(HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                E::config(
                    "drop-header",
                    format!("`{name}` is not a valid header name"),
                )
            })?);
        }

        let routes = if self.routes.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for r in &self.routes {
                b.add(Glob::new(r).map_err(|e| E::config("route", format!("`{r}`: {e}")))?);
            }
            Some(
                b.build()
                    .map_err(|e| E::config("route", format!("glob set: {e}")))?,
            )
        };
        let from_us = self
            .from
            .as_deref()
            .map(|s| parse_time(s).map_err(|e| E::config("from", e.to_string())))
            .transpose()?;
        let to_us = self
            .to
            .as_deref()
            .map(|s| parse_time(s).map_err(|e| E::config("to", e.to_string())))
            .transpose()?;
        if let (Some(f), Some(t)) = (from_us, to_us)
            && f >= t
        {
            return Err(E::config("to", "--to must be after --from"));
        }
        if let Some(s) = self.sample
            && !(s > 0.0 && s <= 1.0)
        {
            return Err(E::config(
                "sample",
                "must be a fraction in (0, 1], e.g. 0.1",
            ));
        }
        let shard = self
            .shard
            .as_deref()
            .map(|s| Shard::parse(s).map_err(|e| E::config("shard", e.to_string())))
            .transpose()?;
        let tls = if targets.iter().any(|t| t.protocol == Protocol::Https) {
            let settings = crate::tls::TlsSettings {
                ca_cert: self.ca_cert.clone(),
                insecure: self.insecure,
                h2_only: self.http2,
            };
            Some(
                crate::tls::client_config(&settings)
                    .map_err(|e| E::config("ca-cert", e.to_string()))?,
            )
        } else {
            None
        };
        if self.max_body == 0 {
            return Err(E::config("max-body", "must be at least 1 byte"));
        }

        let replaced_headers: Vec<String> = set_headers
            .iter()
            .map(|h: &SetHeader| h.name.as_str().to_owned())
            .chain(drop_headers.iter().map(|n| n.as_str().to_owned()))
            .collect();
        Ok(ReplayConfig {
            tape: self.tape.clone(),
            out: self.out.clone(),
            append: self.append,
            targets,
            pace,
            max_in_flight,
            threads: self.threads,
            connections: self.connections,
            timeout,
            connect_timeout,
            max_body: self.max_body,
            tls,
            set_headers,
            drop_headers: DropSet::new(drop_headers),
            select: Selection {
                methods: self
                    .methods
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                routes,
                from_us,
                to_us,
                limit: self.limit,
                sample: self.sample,
                shard,
                allow_writes: self.allow_writes,
                allow_same_host: self.allow_same_host,
                replaced_headers,
            },
            skip_corrupt: self.skip_corrupt,
            dry_run: self.dry_run,
            strict_credentials: self.strict_credentials,
            options: self.clone(),
        })
    }
}

fn parse_target(spec: &str, http2: bool) -> Result<Target, ReplayError> {
    let bad = |r: String| ReplayError::config("target", r);
    let (name, url) = spec.split_once('=').ok_or_else(|| {
        bad(format!(
            "`{spec}`: expected name=URL, e.g. candidate=http://127.0.0.1:9001"
        ))
    })?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(format!(
            "`{name}`: a target name is letters, digits, `-`, `_` or `.`"
        )));
    }
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|e| bad(format!("`{url}` is not a URL: {e}")))?;
    let protocol = match uri.scheme_str() {
        Some("http") if http2 => Protocol::H2c,
        Some("http") => Protocol::Http1,
        Some("h2c") => Protocol::H2c,
        Some("https") => Protocol::Https,
        _ => {
            return Err(bad(format!(
                "`{url}`: the URL must start with http://, h2c:// or https://"
            )));
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| bad(format!("`{url}` has no host")))?;
    if uri.query().is_some() {
        return Err(bad(format!("`{url}`: a target URL takes no query")));
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(Target {
        name: name.to_owned(),
        url: url.trim().to_owned(),
        protocol,
        authority,
        prefix,
    })
}

fn parse_set_header(spec: &str) -> Result<SetHeader, ReplayError> {
    let bad = |r: String| ReplayError::config("set-header", r);
    let (name, value) = spec
        .split_once(':')
        .ok_or_else(|| bad(format!("`{spec}`: expected 'Name: value'")))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| bad(format!("`{}` is not a valid header name", name.trim())))?;
    let template = value.trim();
    let expanded = expand_env(template, |v| std::env::var(v).ok()).map_err(bad)?;
    let value = HeaderValue::from_str(&expanded)
        .map_err(|_| bad(format!("the value of `{name}` is not a valid header value")))?;
    Ok(SetHeader {
        name,
        value,
        stored: bytes::Bytes::copy_from_slice(template.as_bytes()),
    })
}

/// Expands `${VAR}` from `lookup`; `$$` is a literal `$`. A missing variable is an error.
pub(crate) fn expand_env(
    s: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            let var = &r[..end];
            let v =
                lookup(var).ok_or_else(|| format!("environment variable `{var}` is not set"))?;
            out.push_str(&v);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ReplayOptions {
        ReplayOptions {
            tape: vec!["t".into()],
            out: Some("o".into()),
            targets: vec!["a=http://127.0.0.1:9000".into()],
            ..ReplayOptions::default()
        }
    }

    #[test]
    fn expands_env() {
        let look = |v: &str| (v == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(
            expand_env("Bearer ${TOKEN}", look).as_deref(),
            Ok("Bearer s3cret")
        );
        assert_eq!(expand_env("a$$b $x", look).as_deref(), Ok("a$b $x"));
        assert!(expand_env("${MISSING}", look).is_err());
        assert!(expand_env("${TOKEN", look).is_err());
    }

    #[test]
    fn validates_targets() {
        let c = opts().validate().expect("valid");
        assert_eq!(c.targets[0].authority.as_str(), "127.0.0.1:9000");
        assert_eq!(c.targets[0].protocol, Protocol::Http1);
        assert_eq!(c.targets[0].prefix, "");

        let mut o = opts();
        o.targets = vec!["x=h2c://127.0.0.1:1/base/".into()];
        let c = o.validate().expect("valid");
        assert_eq!(c.targets[0].protocol, Protocol::H2c);
        assert_eq!(c.targets[0].prefix, "/base");

        let mut o = opts();
        o.targets = vec!["s=https://127.0.0.1:8443".into()];
        let c = o.validate().expect("valid");
        assert_eq!(c.targets[0].protocol, Protocol::Https);
        assert!(c.tls.is_some());
        o.ca_cert = Some("/nonexistent/ca.pem".into());
        assert!(o.validate().is_err(), "missing CA file");

        for bad in ["nourl", "a=ftp://x", "a b=http://x:1", "a=http://x:1/?q=1"] {
            let mut o = opts();
            o.targets = vec![bad.into()];
            assert!(o.validate().is_err(), "{bad}");
        }
        let mut o = opts();
        o.targets.push("a=http://127.0.0.1:9001".into());
        assert!(o.validate().is_err(), "duplicate names");
    }

    #[test]
    fn validates_pacing_and_filters() {
        let mut o = opts();
        o.pace = "rate".into();
        assert!(o.validate().is_err(), "rate without --rate");
        o.rate = Some(100.0);
        let c = o.validate().expect("valid");
        assert_eq!(c.pace.name(), "rate");
        assert_eq!(c.pace.pacer().target_rate(None), Some(100.0));
        o.poisson = true;
        assert_eq!(o.validate().expect("valid").pace.name(), "poisson");
        let mut o = opts();
        o.poisson = true;
        assert!(o.validate().is_err(), "--poisson needs --rate");
        let mut o = opts();
        o.speed = 0.0;
        assert!(o.validate().is_err());
        let mut o = opts();
        o.sample = Some(1.5);
        assert!(o.validate().is_err());
        let mut o = opts();
        o.shard = Some("3/3".into());
        assert!(o.validate().is_err());
        let mut o = opts();
        o.from = Some("2026-01-01T00:00:00Z".into());
        o.to = Some("1767225600000000".into());
        assert!(o.validate().is_err(), "to must be after from");
        let mut o = opts();
        o.out = Some("t".into());
        assert!(o.validate().is_err(), "writing into the input tape");
        o.out = Some("t/run".into());
        assert!(o.validate().is_err(), "writing inside the input tape");
        let mut o = opts();
        o.out = None;
        assert!(o.validate().is_err());
        o.dry_run = true;
        assert!(o.validate().is_ok());
    }

    #[test]
    fn rejects_unknown_keys() {
        let e = serde_json::from_str::<ReplayOptions>(r#"{"tape":["x"],"sped":2}"#);
        assert!(e.is_err());
        let ok: ReplayOptions = serde_json::from_str(r#"{"tape":["x"],"speed":2}"#).expect("ok");
        assert_eq!(ok.speed, 2.0);
    }
}
