//! Faults: answers the mock spoils on purpose, for chaos experiments ("what if pricing is slow",
//! "what if auth answers 503").
//!
//! A fault is written as a flag, `ROUTE[,status=503][,delay=2s][,reset][,rate=0.5]`, or as a
//! `[[fault]]` table in a TOML file (same keys; unknown keys are errors):
//!
//! ```toml
//! [[fault]]
//! route = "POST /v1/charge*"   # a glob over the path, optionally after a method
//! status = 503                 # answer this instead of the recorded answer
//! delay = "2s"                 # wait this long first
//! reset = false                # reset the TCP connection instead of answering
//! rate = 0.5                   # fraction of matching requests (default 1)
//! ```
//!
//! Decisions are **seeded and keyed**, not drawn from a shared stream: the n-th request of a
//! trace that a rule matches gets the same decision in every run with the same seed, whatever
//! the concurrency (untraced requests: the n-th matching request overall). So a chaos run can
//! be repeated, and two runs can be compared request by request.
//!
//! Rules are tried in order; the first rule whose route matches *and* whose roll fires applies,
//! so a request gets at most one fault.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tapedeck_common::parse::parse_duration;

use crate::MockError;

/// One fault as written: a `--fault` flag or a `[[fault]]` table of a faults file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Which requests: a glob over the path (`/pricing/*`; `*` also matches `/`), optionally
    /// after a method and a space (`POST /v1/charge*`).
    pub route: String,
    /// Answer this status (100–599) instead of the recorded answer.
    #[serde(default)]
    pub status: Option<u16>,
    /// Wait this long before answering (or resetting), e.g. `2s`, `250ms`.
    #[serde(default)]
    pub delay: Option<String>,
    /// Reset the TCP connection instead of answering.
    #[serde(default)]
    pub reset: bool,
    /// The fraction of matching requests that get the fault, 0 < rate ≤ 1 (default 1).
    #[serde(default)]
    pub rate: Option<f64>,
}

/// A faults file: `[[fault]]` tables (see the module docs). Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsFile {
    /// The faults, tried in order.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultConfig>,
}

impl FaultsFile {
    /// Reads and parses a faults file.
    pub fn load(path: &Path) -> Result<FaultsFile, MockError> {
        let text = std::fs::read_to_string(path).map_err(|source| MockError::FaultsFile {
            path: path.to_owned(),
            source,
        })?;
        FaultsFile::parse(&text, path)
    }

    /// Parses the text of a faults file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FaultsFile, MockError> {
        toml::from_str(text).map_err(|e| MockError::FaultsToml {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }
}

/// Splits at commas outside `{…}` (glob alternatives such as `/a/{b,c}` keep their commas).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

impl FaultConfig {
    /// Parses the flag form `ROUTE[,status=503][,delay=2s][,reset][,rate=0.5]`. An unknown key
    /// is an error that names it.
    pub fn parse_flag(text: &str) -> Result<FaultConfig, MockError> {
        let err = |message: String| MockError::Fault {
            fault: text.to_owned(),
            message,
        };
        let mut parts = split_top_level(text).into_iter();
        let route = parts.next().unwrap_or_default().trim();
        if route.is_empty() || route.contains('=') {
            return Err(err(
                "must start with a route glob, e.g. '/pricing/*,status=503'".into(),
            ));
        }
        let mut f = FaultConfig {
            route: route.to_owned(),
            ..FaultConfig::default()
        };
        for part in parts {
            let part = part.trim();
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (part, None),
            };
            match (key, value) {
                ("status", Some(v)) => {
                    f.status = Some(
                        v.parse()
                            .map_err(|_| err(format!("status `{v}` is not a number")))?,
                    );
                }
                ("delay", Some(v)) => f.delay = Some(v.to_owned()),
                ("rate", Some(v)) => {
                    f.rate = Some(
                        v.parse()
                            .map_err(|_| err(format!("rate `{v}` is not a number")))?,
                    );
                }
                ("reset", None) | ("reset", Some("true")) => f.reset = true,
                ("reset", Some("false")) => f.reset = false,
                ("status" | "delay" | "rate", None) => {
                    return Err(err(format!("`{key}` needs a value: {key}=…")));
                }
                ("reset", Some(v)) => {
                    return Err(err(format!("`reset` takes no value (got `{v}`)")));
                }
                (other, _) => {
                    return Err(err(format!(
                        "unknown key `{other}` (known: status, delay, reset, rate)"
                    )));
                }
            }
        }
        Ok(f)
    }

    /// Checks the fault and compiles its route. `label` names it in errors and in the `error`
    /// column of the exchanges it spoils.
    pub fn validate(&self, label: &str) -> Result<FaultRule, MockError> {
        let err = |message: String| MockError::Fault {
            fault: label.to_owned(),
            message,
        };
        let route = RouteGlob::parse(&self.route).map_err(|e| err(e.to_string()))?;
        let status = match self.status {
            None => None,
            Some(s) => Some(
                StatusCode::from_u16(s)
                    .ok()
                    .filter(|_| (100..=599).contains(&s))
                    .ok_or_else(|| err(format!("status {s} is not between 100 and 599")))?,
            ),
        };
        let delay = match &self.delay {
            None => None,
            Some(d) => Some(parse_duration(d).map_err(|e| err(format!("delay: {e}")))?),
        };
        let rate = self.rate.unwrap_or(1.0);
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(err(format!("rate {rate} is not in (0, 1]")));
        }
        if self.reset && status.is_some() {
            return Err(err("`reset` and `status` exclude each other".into()));
        }
        if !self.reset && status.is_none() && delay.is_none() {
            return Err(err("does nothing: give status=…, delay=… or reset".into()));
        }
        Ok(FaultRule {
            label: label.to_owned(),
            route,
            status,
            delay,
            reset: self.reset,
            rate,
        })
    }
}

/// Why a route pattern (`GLOB` or `METHOD GLOB`) was rejected. Every variant names the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteGlobError {
    /// The word before the glob is not an HTTP method.
    #[error("route `{route}`: `{method}` is not a method")]
    BadMethod {
        /// The route as written.
        route: String,
        /// The method word.
        method: String,
    },
    /// The pattern does not start with `/` or `*`, so it could never match a path.
    #[error("route `{pattern}` must be a path glob starting with `/` or `*`")]
    NotAPath {
        /// The glob part of the route.
        pattern: String,
    },
    /// The glob does not compile (an unclosed `{` or `[`, for example).
    #[error("route `{pattern}`: {source}")]
    BadGlob {
        /// The glob part of the route.
        pattern: String,
        /// What the glob compiler said.
        #[source]
        source: globset::Error,
    },
}

/// A route pattern: a glob over the path, optionally restricted to one method.
#[derive(Debug, Clone)]
pub struct RouteGlob {
    method: Option<Method>,
    glob: GlobMatcher,
    text: String,
}

impl RouteGlob {
    /// `GLOB` or `METHOD GLOB`; `*` matches across `/`.
    pub fn parse(text: &str) -> Result<RouteGlob, RouteGlobError> {
        let t = text.trim();
        let (method, pattern) = match t.split_once(char::is_whitespace) {
            Some((m, p)) => {
                let m = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    RouteGlobError::BadMethod {
                        route: t.to_owned(),
                        method: m.to_owned(),
                    }
                })?;
                (Some(m), p.trim())
            }
            None => (None, t),
        };
        if !pattern.starts_with('/') && !pattern.starts_with('*') {
            return Err(RouteGlobError::NotAPath {
                pattern: pattern.to_owned(),
            });
        }
        let glob = GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|source| RouteGlobError::BadGlob {
                pattern: pattern.to_owned(),
                source,
            })?
            .compile_matcher();
        Ok(RouteGlob {
            method,
            glob,
            text: t.to_owned(),
        })
    }

    /// Whether a request matches.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.glob.is_match(path)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A checked fault.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// How the fault was written (names it in errors, summaries and the output tape).
    pub label: String,
    /// Which requests.
    pub route: RouteGlob,
    /// The status answered instead of the recorded answer.
    pub status: Option<StatusCode>,
    /// The wait before answering (or resetting).
    pub delay: Option<Duration>,
    /// Reset the connection instead of answering.
    pub reset: bool,
    /// The fraction of matching requests that get the fault.
    pub rate: f64,
}

impl FaultRule {
    /// What the fault does, e.g. `status=503 delay=2s`, for the `error` column.
    pub fn effect(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.delay {
            parts.push(format!("delay={}ms", d.as_millis()));
        }
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_u16()));
        }
        if self.reset {
            parts.push("reset".to_owned());
        }
        parts.join(" ")
    }
}

/// The faults flags and a faults file, as written.
pub fn rules_from(flags: &[String], file: Option<&Path>) -> Result<Vec<FaultRule>, MockError> {
    let mut rules = Vec::new();
    for f in flags {
        rules.push(FaultConfig::parse_flag(f)?.validate(f)?);
    }
    if let Some(path) = file {
        let parsed = FaultsFile::load(path)?;
        for (i, f) in parsed.faults.iter().enumerate() {
            let label = format!("{} fault #{} ({})", path.display(), i + 1, f.route);
            rules.push(f.validate(&label)?);
        }
    }
    Ok(rules)
}

const SHARDS: usize = 16;

/// Decides, per request, which fault (if any) applies. Shared by every worker.
#[derive(Debug)]
pub(crate) struct FaultPlan {
    rules: Vec<FaultRule>,
    seed: u64,
    /// Untraced requests matched so far, per rule.
    untraced: Vec<AtomicU64>,
    /// Traced requests matched so far, per (trace, rule), keyed by a 64-bit hash of both.
    traced: Vec<Mutex<HashMap<u64, u64>>>,
    /// Faults injected, per rule.
    injected: Vec<AtomicU64>,
}

impl FaultPlan {
    pub(crate) fn new(rules: Vec<FaultRule>, seed: u64) -> FaultPlan {
        FaultPlan {
            untraced: rules.iter().map(|_| AtomicU64::new(0)).collect(),
            injected: rules.iter().map(|_| AtomicU64::new(0)).collect(),
            traced: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            rules,
            seed,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    pub(crate) fn any_reset(&self) -> bool {
        self.rules.iter().any(|r| r.reset)
    }

    /// Faults injected so far, per rule (in rule order).
    pub(crate) fn injected(&self) -> Vec<u64> {
        self.injected
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// The fault for this request, if one fires: the index of its rule.
    pub(crate) fn decide(&self, method: &Method, path: &str, trace: Option<&str>) -> Option<usize> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.route.matches(method, path) {
                continue;
            }
            let rule_key = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let (scope, n) = match trace {
                None => (0, self.untraced[i].fetch_add(1, Ordering::Relaxed)),
                Some(t) => {
                    let scope = fnv1a(t.as_bytes());
                    let key = scope ^ rule_key;
                    let shard = (key as usize) % SHARDS;
                    let n = match self.traced[shard].lock() {
                        Ok(mut m) => {
                            let c = m.entry(key).or_insert(0);
                            let n = *c;
                            *c += 1;
                            n
                        }
                        Err(_) => 0,
                    };
                    (scope, n)
                }
            };
            if roll(self.seed, rule_key, scope, n) < rule.rate {
                self.injected[i].fetch_add(1, Ordering::Relaxed);
                return Some(i);
            }
        }
        None
    }
}

/// FNV-1a, 64 bits: a stable hash (the same in every run and build).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) that depends only on its inputs.
fn roll(seed: u64, rule: u64, scope: u64, n: u64) -> f64 {
    let x = mix(mix(mix(seed ^ rule) ^ scope) ^ n.wrapping_mul(0xd6e8_feb8_6659_fd93));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let f = FaultConfig::parse_flag("/pay/*,status=503,delay=2s,rate=0.5").expect("ok");
        assert_eq!(f.route, "/pay/*");
        assert_eq!(f.status, Some(503));
        assert_eq!(f.delay.as_deref(), Some("2s"));
        assert_eq!(f.rate, Some(0.5));
        let r = f.validate("x").expect("valid");
        assert_eq!(r.delay, Some(Duration::from_secs(2)));
        assert_eq!(r.effect(), "delay=2000ms status=503");

        let f = FaultConfig::parse_flag("POST /a/{b,c}/*,reset").expect("ok");
        assert_eq!(f.route, "POST /a/{b,c}/*");
        assert!(f.reset);
        let r = f.validate("y").expect("valid");
        assert!(r.route.matches(&Method::POST, "/a/c/1/2"));
        assert!(!r.route.matches(&Method::GET, "/a/c/1"));
        assert!(!r.route.matches(&Method::POST, "/a/d/1"));
    }

    #[test]
    fn bad_faults_name_what_is_wrong() {
        let e = FaultConfig::parse_flag("/x,statsu=503").expect_err("unknown key");
        assert!(e.to_string().contains("unknown key `statsu`"), "{e}");
        let e = FaultConfig::parse_flag("status=503").expect_err("no route");
        assert!(e.to_string().contains("route glob"), "{e}");
        for (flag, needle) in [
            ("/x", "does nothing"),
            ("/x,status=99", "between 100 and 599"),
            ("/x,status=503,reset", "exclude"),
            ("/x,delay=soon", "delay"),
            ("/x,status=503,rate=0", "rate"),
            ("/x,status=503,rate=1.5", "rate"),
            ("x,status=503", "starting with `/`"),
        ] {
            let e = FaultConfig::parse_flag(flag)
                .and_then(|f| f.validate(flag))
                .expect_err(flag);
            assert!(e.to_string().contains(needle), "{flag}: {e}");
        }
    }

    #[test]
    fn route_glob_errors_name_the_route() {
        let err = RouteGlob::parse("G@T /a").expect_err("bad method");
        assert_eq!(
            err,
            RouteGlobError::BadMethod {
                route: "G@T /a".into(),
                method: "G@T".into()
            }
        );
        assert_eq!(err.to_string(), "route `G@T /a`: `G@T` is not a method");

        let err = RouteGlob::parse(" GET api/* ").expect_err("not a path");
        assert_eq!(
            err,
            RouteGlobError::NotAPath {
                pattern: "api/*".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "route `api/*` must be a path glob starting with `/` or `*`"
        );

        let err = RouteGlob::parse("/a/{b,c").expect_err("unclosed alternate");
        let RouteGlobError::BadGlob { pattern, source } = &err else {
            panic!("expected BadGlob, got {err:?}");
        };
        assert_eq!(pattern, "/a/{b,c");
        assert_eq!(err.to_string(), format!("route `/a/{{b,c`: {source}"));
        assert!(std::error::Error::source(&err).is_some());

        // Through a fault, the message is kept under the fault's label.
        let e = FaultConfig::parse_flag("G@T /a,status=503")
            .and_then(|f| f.validate("G@T /a,status=503"))
            .expect_err("bad method");
        assert_eq!(
            e.to_string(),
            "fault `G@T /a,status=503`: route `G@T /a`: `G@T` is not a method"
        );
    }

    #[test]
    fn files_reject_unknown_keys() {
        let ok = FaultsFile::parse(
            "[[fault]]\nroute = \"/a/*\"\nstatus = 503\nrate = 0.25\n[[fault]]\nroute = \"GET /b\"\nreset = true\n",
            Path::new("f.toml"),
        )
        .expect("valid");
        assert_eq!(ok.faults.len(), 2);
        assert!(ok.faults[1].reset);
        let e = FaultsFile::parse(
            "[[fault]]\nroute = \"/a\"\nstauts = 503\n",
            Path::new("f.toml"),
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("stauts"), "{e}");
        assert!(e.to_string().contains("f.toml"), "{e}");
    }

    #[test]
    fn rates_hold_and_decisions_repeat() {
        let rule = FaultConfig::parse_flag("/a/*,status=503,rate=0.3")
            .and_then(|f| f.validate("r"))
            .expect("valid");
        let count = |seed: u64, traced: bool| {
            let plan = FaultPlan::new(vec![rule.clone()], seed);
            (0..10_000)
                .map(|i| {
                    let t = format!("{i:032x}");
                    plan.decide(&Method::GET, "/a/1", traced.then_some(t.as_str()))
                        .is_some()
                })
                .collect::<Vec<bool>>()
        };
        for traced in [false, true] {
            let a = count(7, traced);
            let hits = a.iter().filter(|x| **x).count();
            assert!((2_700..=3_300).contains(&hits), "{hits} of 10000 at 0.3");
            assert_eq!(a, count(7, traced), "same seed, same decisions");
            assert_ne!(a, count(8, traced), "another seed, other decisions");
        }
        let plan = FaultPlan::new(vec![rule], 1);
        assert_eq!(plan.decide(&Method::GET, "/b", None), None);
    }
}
