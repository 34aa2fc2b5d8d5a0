//! `verdict.json`, schema version 1 (docs/verdict.md): only what a ticket needs. Fields a newer
//! tapedeck adds are ignored; another schema version is refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::TicketError;
use crate::markdown::ms;

#[derive(Debug, Deserialize)]
pub(crate) struct Verdict {
    pub(crate) schema_version: u32,
    #[serde(default)]
    pub(crate) run_id: String,
    pub(crate) verdict: String,
    #[serde(default)]
    pub(crate) rollback: bool,
    pub(crate) score: Option<f64>,
    #[serde(default)]
    pub(crate) exit_code: i64,
    #[serde(default)]
    pub(crate) title: String,
    #[serde(default)]
    pub(crate) reasons: Vec<String>,
    #[serde(default)]
    pub(crate) baseline: String,
    #[serde(default)]
    pub(crate) candidate: String,
    pub(crate) noise: Option<String>,
    #[serde(default)]
    pub(crate) baseline_version: String,
    #[serde(default)]
    pub(crate) candidate_version: String,
    pub(crate) window_us: Option<[i64; 2]>,
    #[serde(default)]
    pub(crate) counts: Value,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    /// How the judge keyed routes (absent in reports of older versions: the defaults).
    #[serde(default)]
    pub(crate) route_keys: tapedeck_diff::route::RouteKeys,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Route {
    pub(crate) route: String,
    pub(crate) verdict: String,
    pub(crate) score: Option<f64>,
    #[serde(default)]
    pub(crate) paired: u64,
    #[serde(default)]
    pub(crate) checks: Vec<Check>,
    #[serde(default)]
    pub(crate) paths: Vec<PathFinding>,
    #[serde(default)]
    pub(crate) errors: Value,
    #[serde(default)]
    pub(crate) latency: Value,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) classification: String,
    #[serde(default)]
    pub(crate) critical: bool,
    #[serde(default)]
    pub(crate) reason: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PathFinding {
    pub(crate) path: String,
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) raw_count: u64,
    #[serde(default)]
    pub(crate) raw_rate: f64,
    pub(crate) noise_rate: Option<f64>,
    pub(crate) status: String,
    pub(crate) example: Option<Example>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Example {
    pub(crate) origin_id: String,
    #[serde(default)]
    pub(crate) curl: String,
    #[serde(default)]
    pub(crate) baseline_value: String,
    #[serde(default)]
    pub(crate) candidate_value: String,
    #[serde(default)]
    pub(crate) baseline_response: String,
    #[serde(default)]
    pub(crate) candidate_response: String,
}

impl Route {
    pub(crate) fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.classification == "high")
    }
    pub(crate) fn regressions(&self) -> impl Iterator<Item = &PathFinding> {
        self.paths.iter().filter(|p| p.status == "regression")
    }
    /// The p95 of one side as text: the value, `~value` when it is only a low-n estimate
    /// (`low_n.p95`), `–` without samples.
    pub(crate) fn p95(&self, side: &str) -> String {
        let p = self.latency.get(side);
        match (
            p.and_then(|p| p.get("p95")?.as_f64()),
            p.and_then(|p| p.get("low_n")?.get("p95")?.as_f64()),
        ) {
            (Some(us), _) => ms(Some(us)),
            (None, Some(us)) => format!("{}{}", tapedeck_diff::report::LOW_N_MARK, ms(Some(us))),
            (None, None) => ms(None),
        }
    }
}

/// Whether a verdict calls for a ticket: `fail` and `inconclusive` do; `pass` never; `marginal`
/// only when it was judged strictly (a non-zero exit code).
pub(crate) fn wants_ticket(v: &Verdict) -> bool {
    match v.verdict.as_str() {
        "pass" => false,
        "marginal" => v.exit_code != 0,
        _ => true,
    }
}

/// Reads `REPORT/verdict.json`.
pub(crate) fn read_verdict(report: &Path) -> Result<Verdict, TicketError> {
    let path = report.join("verdict.json");
    let data = std::fs::read(&path).map_err(|source| TicketError::Io {
        action: "reading (is this a tapedeck report?)",
        path: path.clone(),
        source,
    })?;
    parse_verdict(&data, path)
}

/// Parses a `verdict.json` (schema 1) as a ticket reads it; `path` names it in errors.
pub(crate) fn parse_verdict(data: &[u8], path: PathBuf) -> Result<Verdict, TicketError> {
    let v: Verdict = serde_json::from_slice(data).map_err(|source| TicketError::Verdict {
        path: path.clone(),
        source,
    })?;
    if v.schema_version != 1 {
        return Err(TicketError::Schema {
            path,
            found: v.schema_version,
        });
    }
    Ok(v)
}
