//! Settings: [`MockOptions`] is the raw form (flags or a config file; serde, unknown keys
//! rejected); [`MockOptions::validate`] turns it into the checked [`MockSpec`] that
//! [`Mock::start`](crate::Mock::start) runs. Programs that start mocks in-process (`check
//! --mock`) build a [`MockSpec`] directly with [`MockSpec::new`] and its typed fields.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};
use tapedeck_common::JsonPath;
use tapedeck_common::parse::{parse_duration, parse_size};
use tapedeck_common::trace::TraceSource;

use crate::MockError;
use crate::fault::{FaultRule, rules_from};

/// What a request that matches no recorded exchange gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnMiss {
    /// This status (404 or 502 from the flag) with a JSON body naming the method, path, query,
    /// trace id and why nothing matched.
    Status(http::StatusCode),
    /// The request is forwarded to this `http://` base URL (the real dependency, or another
    /// mock), and its answer is served.
    Passthrough(Uri),
}

impl Default for OnMiss {
    fn default() -> Self {
        OnMiss::Status(http::StatusCode::BAD_GATEWAY)
    }
}

impl std::str::FromStr for OnMiss {
    type Err = MockError;

    /// `404`, `502` or `passthrough=http://host:port[/prefix]`.
    fn from_str(s: &str) -> Result<OnMiss, MockError> {
        let bad = |m: String| MockError::invalid("--on-miss", m);
        let s = s.trim();
        match s {
            "404" => return Ok(OnMiss::Status(http::StatusCode::NOT_FOUND)),
            "502" => return Ok(OnMiss::Status(http::StatusCode::BAD_GATEWAY)),
            _ => {}
        }
        let Some(url) = s.strip_prefix("passthrough=") else {
            return Err(bad(format!(
                "`{s}` is not one of 404, 502, passthrough=URL"
            )));
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(format!("`{url}` is not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(bad(format!(
                "`{url}`: pass-through needs an http://host:port URL (plain HTTP)"
            )));
        }
        if uri.query().is_some() {
            return Err(bad(format!("`{url}`: the URL must not have a query")));
        }
        Ok(OnMiss::Passthrough(uri))
    }
}

/// Whether recorded latency is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyMode {
    /// Answer at once.
    #[default]
    None,
    /// Wait the recorded time the dependency took (until its whole answer was sent) first.
    Recorded,
}

/// What a request whose trace id is not on the tape gets (when the tape has trace ids at all;
/// a tape without any is always matched untraced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownTrace {
    /// A miss: an answer recorded for another trace is never served (safe with concurrent
    /// replays).
    #[default]
    Miss,
    /// Matched as if it had no trace id: the closest answer on the whole tape.
    Untraced,
}

/// A field or parameter left out of request matching (noise such as timestamps and request
/// ids).
#[derive(Debug, Clone)]
pub enum IgnoreRule {
    /// A JSON body path, e.g. `$.timestamp`, `$..request_id`: the field matches any value and
    /// may be missing.
    Json(JsonPath),
    /// A query (or form body) parameter, written `?name`: left out on both sides.
    Param(String),
}

impl IgnoreRule {
    /// `$…` is a JSON path; `?name` a query or form parameter.
    pub fn parse(rule: &str) -> Result<IgnoreRule, MockError> {
        let r = rule.trim();
        if let Some(name) = r.strip_prefix('?') {
            if name.is_empty() {
                return Err(MockError::invalid(
                    "--ignore",
                    format!("`{rule}`: `?` must be followed by a parameter name"),
                ));
            }
            return Ok(IgnoreRule::Param(name.to_owned()));
        }
        JsonPath::parse(r)
            .map(IgnoreRule::Json)
            .map_err(|source| MockError::Ignore {
                rule: rule.to_owned(),
                source,
            })
    }
}

/// Raw mock settings, as flags or config keys. Every field has a default; call
/// [`validate`](Self::validate) to get a runnable [`MockSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct MockOptions {
    /// Name of the mock: the `source` of its output exchanges and a label in metrics (default:
    /// the `source` of the tape's first exchange, else `mock`).
    pub name: Option<String>,
    /// Dependency tapes (directories, files or object-store URLs).
    pub tape: Vec<PathBuf>,
    /// Address to listen on, e.g. `127.0.0.1:8081` (port 0 picks one).
    pub listen: String,
    /// Address of the admin listener (`/metrics`, `/healthz`); off when unset.
    pub admin: Option<String>,
    /// Output tape: every served and missed call, as exchanges with target `mock`.
    pub out: Option<PathBuf>,
    /// `502` (default), `404` or `passthrough=http://host:port`.
    pub on_miss: String,
    /// `none` (default) or `recorded`.
    pub latency: LatencyMode,
    /// Header the trace id is read from: `traceparent` (default, the W3C trace id) or another
    /// name whose value is the id (e.g. `x-request-id`), as given to `record --trace-header`.
    pub trace_header: Option<String>,
    /// What a request with a trace id the tape does not know gets.
    pub unknown_trace: UnknownTrace,
    /// Named lanes: a caller whose `tracestate` holds `tapedeck=<lane>` gets its own cursors
    /// (`tapedeck replay` adds the member, naming the target; at most 7).
    pub lane: Vec<String>,
    /// Fields left out of matching: JSON paths (`$.ts`, `$..request_id`) or `?param`.
    pub ignore: Vec<String>,
    /// Faults in flag form: `ROUTE[,status=503][,delay=2s][,reset][,rate=0.5]`.
    pub fault: Vec<String>,
    /// A TOML file of `[[fault]]` tables.
    pub faults: Option<PathBuf>,
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Worker threads (default: the number of CPUs).
    pub threads: Option<usize>,
    /// Largest request body read, e.g. `16MiB` (larger requests get 413 and count as misses).
    pub max_request_body: String,
    /// How long a stop waits for requests in flight, e.g. `10s`.
    pub grace: String,
    /// Skip damaged tape files instead of refusing to start.
    pub skip_corrupt: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            name: None,
            tape: Vec::new(),
            listen: "127.0.0.1:0".into(),
            admin: None,
            out: None,
            on_miss: "502".into(),
            latency: LatencyMode::None,
            trace_header: None,
            unknown_trace: UnknownTrace::Miss,
            lane: Vec::new(),
            ignore: Vec::new(),
            fault: Vec::new(),
            faults: None,
            seed: 1,
            threads: None,
            max_request_body: "16MiB".into(),
            grace: "10s".into(),
            skip_corrupt: false,
        }
    }
}

fn addr(setting: &'static str, s: &str) -> Result<SocketAddr, MockError> {
    s.trim().parse().map_err(|_| {
        MockError::invalid(
            setting,
            format!("`{s}` is not an address (IP:PORT, e.g. 127.0.0.1:8081)"),
        )
    })
}

impl MockOptions {
    /// Checks every setting and reads the faults file; nothing is started.
    pub fn validate(self) -> Result<MockSpec, MockError> {
        if self.tape.is_empty() {
            return Err(MockError::NoTape);
        }
        let listen = addr("--listen", &self.listen)?;
        let admin = self
            .admin
            .as_deref()
            .map(|a| addr("--admin", a))
            .transpose()?;
        let on_miss: OnMiss = self.on_miss.parse()?;
        let ignore = self
            .ignore
            .iter()
            .map(|r| IgnoreRule::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let faults = rules_from(&self.fault, self.faults.as_deref())?;
        let max_request_body = parse_size(&self.max_request_body)
            .map_err(|e| MockError::invalid("--max-request-body", e.to_string()))?;
        let grace = parse_duration(&self.grace)
            .map_err(|e| MockError::invalid("--grace", e.to_string()))?;
        if self.lane.len() > 7 {
            return Err(MockError::invalid("--lane", "at most 7 lanes"));
        }
        if self.threads == Some(0) {
            return Err(MockError::invalid("--threads", "must be at least 1"));
        }
        if let Some(name) = &self.name
            && name.trim().is_empty()
        {
            return Err(MockError::invalid("--name", "must not be empty"));
        }
        Ok(MockSpec {
            name: self.name,
            tapes: self.tape,
            listen,
            admin,
            out: self.out,
            on_miss,
            latency: self.latency,
            trace: self
                .trace_header
                .as_deref()
                .map(TraceSource::from_header_name)
                .unwrap_or_default(),
            unknown_trace: self.unknown_trace,
            lanes: self.lane,
            ignore,
            faults,
            seed: self.seed,
            threads: self.threads.unwrap_or_else(default_threads),
            max_request_body: usize::try_from(max_request_body).unwrap_or(usize::MAX),
            grace,
            skip_corrupt: self.skip_corrupt,
        })
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A checked mock: what [`Mock::start`](crate::Mock::start) runs.
#[derive(Debug, Clone)]
pub struct MockSpec {
    /// Name (output `source`, metrics label); `None`: the tape's first `source`, else `mock`.
    pub name: Option<String>,
    /// Dependency tapes.
    pub tapes: Vec<PathBuf>,
    /// Where to listen (port 0: any free port; [`MockHandle::addr`](crate::MockHandle::addr)
    /// says which).
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`).
    pub admin: Option<SocketAddr>,
    /// Output tape of every call.
    pub out: Option<PathBuf>,
    /// Miss policy.
    pub on_miss: OnMiss,
    /// Recorded latency or none.
    pub latency: LatencyMode,
    /// Where trace ids come from.
    pub trace: TraceSource,
    /// Unknown trace ids: miss or untraced matching.
    pub unknown_trace: UnknownTrace,
    /// Named lanes (`tracestate: tapedeck=<name>`), each with its own cursors; at most 7 are
    /// used (see the crate docs). Empty: one lane for every caller.
    pub lanes: Vec<String>,
    /// Fields left out of matching.
    pub ignore: Vec<IgnoreRule>,
    /// Faults, tried in order.
    pub faults: Vec<FaultRule>,
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Worker threads (each a single-threaded runtime with its own listener).
    pub threads: usize,
    /// Largest request body read.
    pub max_request_body: usize,
    /// How long a stop waits for requests in flight.
    pub grace: Duration,
    /// Skip damaged tape files.
    pub skip_corrupt: bool,
}

impl MockSpec {
    /// A mock of `tapes` on `listen` with the defaults: 502 on a miss, no latency, trace ids
    /// from `traceparent`, unknown traces miss, no faults, one worker thread.
    pub fn new(tapes: Vec<PathBuf>, listen: SocketAddr) -> MockSpec {
        MockSpec {
            name: None,
            tapes,
            listen,
            admin: None,
            out: None,
            on_miss: OnMiss::default(),
            latency: LatencyMode::None,
            trace: TraceSource::Traceparent,
            unknown_trace: UnknownTrace::Miss,
            lanes: Vec::new(),
            ignore: Vec::new(),
            faults: Vec::new(),
            seed: 1,
            threads: 1,
            max_request_body: 16 << 20,
            grace: Duration::from_secs(10),
            skip_corrupt: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_miss_values() {
        assert_eq!(
            "404".parse::<OnMiss>().expect("ok"),
            OnMiss::Status(http::StatusCode::NOT_FOUND)
        );
        assert_eq!(OnMiss::default(), "502".parse::<OnMiss>().expect("ok"));
        match "passthrough=http://127.0.0.1:9/api".parse::<OnMiss>() {
            Ok(OnMiss::Passthrough(u)) => assert_eq!(u.path(), "/api"),
            other => panic!("{other:?}"),
        }
        for bad in [
            "500",
            "passthrough=https://x",
            "passthrough=nope",
            "pass=http://x",
        ] {
            let e = bad.parse::<OnMiss>().expect_err(bad);
            assert!(e.to_string().contains("--on-miss"), "{e}");
        }
    }

    #[test]
    fn options_validate_and_name_bad_values() {
        let ok = MockOptions {
            tape: vec!["t".into()],
            ignore: vec!["$.ts".into(), "?cb".into()],
            fault: vec!["/a/*,status=503,rate=0.5".into()],
            trace_header: Some("X-Request-Id".into()),
            ..MockOptions::default()
        }
        .validate()
        .expect("valid");
        assert_eq!(ok.ignore.len(), 2);
        assert_eq!(ok.faults.len(), 1);
        assert_eq!(ok.trace, TraceSource::Header("x-request-id".into()));
        assert!(ok.threads >= 1);

        let bad = |f: fn(&mut MockOptions), needle: &str| {
            let mut o = MockOptions {
                tape: vec!["t".into()],
                ..MockOptions::default()
            };
            f(&mut o);
            let e = o.validate().expect_err(needle);
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        };
        bad(|o| o.tape.clear(), "--tape");
        bad(|o| o.listen = "localhost".into(), "--listen");
        bad(|o| o.admin = Some(":9".into()), "--admin");
        bad(|o| o.ignore = vec!["timestamp".into()], "timestamp");
        bad(|o| o.ignore = vec!["?".into()], "--ignore");
        bad(|o| o.fault = vec!["/a,sttaus=1".into()], "sttaus");
        bad(|o| o.threads = Some(0), "--threads");
        bad(|o| o.grace = "soon".into(), "--grace");
        bad(|o| o.max_request_body = "big".into(), "--max-request-body");
        bad(
            |o| o.faults = Some("/nonexistent/faults.toml".into()),
            "faults.toml",
        );
    }

    #[test]
    fn options_reject_unknown_keys() {
        let e =
            toml::from_str::<MockOptions>("tape = [\"t\"]\nlistne = \"x\"\n").expect_err("unknown");
        assert!(e.to_string().contains("listne"), "{e}");
    }
}
