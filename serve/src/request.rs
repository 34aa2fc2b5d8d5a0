//! Request bodies: `POST /v1/runs`'s [`RunRequest`] and Flagger's [`FlaggerPayload`], parsed by
//! pure functions ([`parse_run_request`], [`parse_flagger`]), and their resolution against the
//! server's [`Defaults`] into the [`RunSpec`] a run keeps in its `state.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::RequestError;

/// Largest request body accepted (a run request or a Flagger payload).
pub const MAX_BODY: usize = 64 * 1024;

/// What a run uses when its request does not say: `serve --tape/--baseline/--candidate/
/// --secondary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Tapes to replay.
    pub tape: Vec<PathBuf>,
    /// Baseline URL.
    pub baseline: Option<String>,
    /// Candidate URL.
    pub candidate: Option<String>,
    /// Second baseline URL (the noise target).
    pub secondary: Option<String>,
}

/// `POST /v1/runs`: optional overrides of the [`Defaults`] (every field optional, unknown fields
/// rejected). Flagger's `metadata` is turned into one ([`FlaggerPayload::run_request`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Run id (idempotency key); a new UUIDv7 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tape path(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tape: Option<Tapes>,
    /// Baseline URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// Candidate URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// Second baseline URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<String>,
    /// Version label of the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_version: Option<String>,
    /// Version label of the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,
}

/// `"tape"`: one path or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tapes {
    /// `"tape": "PATH"`.
    One(String),
    /// `"tape": ["PATH", …]`.
    Many(Vec<String>),
}

/// What a run was asked to do: the request resolved against the defaults, persisted in
/// `state.json` (`"spec"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Tapes to replay.
    pub tape: Vec<String>,
    /// Baseline URL.
    pub baseline: String,
    /// Candidate URL.
    pub candidate: String,
    /// Second baseline URL, if any.
    pub secondary: Option<String>,
    /// Version label of the baseline.
    pub baseline_version: Option<String>,
    /// Version label of the candidate.
    pub candidate_version: Option<String>,
    /// Written by earlier versions (the check flags in effect, as strings); read and ignored:
    /// every run applies the check settings `serve` was started with.
    #[serde(default, skip_serializing, rename = "extra")]
    _extra: Ignored,
}

/// A field read and dropped, whatever it holds; equal to every other.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}

/// Parses `POST /v1/runs`'s body: empty (or only whitespace) is a request with no overrides.
pub fn parse_run_request(body: &[u8]) -> Result<RunRequest, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RunRequest::default());
    }
    serde_json::from_slice(body).map_err(RequestError::RunRequest)
}

/// A run id is a directory name: `[A-Za-z0-9._-]`, 1–128 characters, not starting with a dot.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RunRequest {
    /// The run's id: the one sent (checked with [`valid_id`]), else a new UUIDv7.
    pub fn run_id(&self) -> Result<String, RequestError> {
        match &self.id {
            None => Ok(uuid::Uuid::now_v7().to_string()),
            Some(id) if valid_id(id) => Ok(id.clone()),
            Some(id) => Err(RequestError::BadId { id: id.clone() }),
        }
    }

    /// Resolves the overrides against the defaults. A run needs at least one tape, a baseline
    /// and a candidate.
    pub fn resolve(self, defaults: &Defaults) -> Result<RunSpec, RequestError> {
        let tape = match self.tape {
            Some(Tapes::One(t)) => vec![t],
            Some(Tapes::Many(t)) => t,
            None => defaults
                .tape
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        };
        if tape.is_empty() {
            return Err(RequestError::NoTape);
        }
        let baseline = self
            .baseline
            .or_else(|| defaults.baseline.clone())
            .ok_or(RequestError::NoBaseline)?;
        let candidate = self
            .candidate
            .or_else(|| defaults.candidate.clone())
            .ok_or(RequestError::NoCandidate)?;
        Ok(RunSpec {
            tape,
            baseline,
            candidate,
            secondary: self.secondary.or_else(|| defaults.secondary.clone()),
            baseline_version: self.baseline_version,
            candidate_version: self.candidate_version,
            _extra: Ignored,
        })
    }
}

impl RunSpec {
    /// A run of the defaults, with stand-ins for the tape and targets a request would still
    /// have to name: what the server checks its check template with at start-up.
    pub(crate) fn probe(defaults: &Defaults) -> RunSpec {
        RunSpec {
            tape: if defaults.tape.is_empty() {
                vec!["tape".to_owned()]
            } else {
                defaults
                    .tape
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect()
            },
            baseline: defaults
                .baseline
                .clone()
                .unwrap_or_else(|| "http://baseline.invalid".to_owned()),
            candidate: defaults
                .candidate
                .clone()
                .unwrap_or_else(|| "http://candidate.invalid".to_owned()),
            secondary: defaults.secondary.clone(),
            baseline_version: None,
            candidate_version: None,
            _extra: Ignored,
        }
    }
}

/// Flagger's webhook payload (fields it may add are ignored). A parsed payload always has a
/// checksum ([`parse_flagger`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FlaggerPayload {
    /// The canary's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Flagger's phase (logged).
    #[serde(default)]
    pub phase: String,
    /// The canary revision's checksum: the same checksum is the same run.
    #[serde(default)]
    pub checksum: String,
    /// The webhook's metadata: may override `tape`, `baseline`, `candidate`, `secondary`,
    /// `baseline_version`, `candidate_version` (other keys are ignored).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Parses a Flagger webhook's body; refuses a payload without a checksum.
pub fn parse_flagger(body: &[u8]) -> Result<FlaggerPayload, RequestError> {
    let payload: FlaggerPayload =
        serde_json::from_slice(body).map_err(RequestError::FlaggerPayload)?;
    if payload.checksum.is_empty() {
        return Err(RequestError::NoChecksum);
    }
    Ok(payload)
}

impl FlaggerPayload {
    /// The run id of this canary revision: `flagger-NAMESPACE-NAME-CHECKSUM`, every character
    /// outside `[A-Za-z0-9._-]` replaced by `-`, at most 128 characters (always a
    /// [`valid_id`]).
    pub fn run_id(&self) -> String {
        let raw = format!("flagger-{}-{}-{}", self.namespace, self.name, self.checksum);
        let mut id: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        id.truncate(128);
        id
    }

    /// `namespace/name checksum c`, for logs and answers.
    pub fn canary(&self) -> String {
        format!(
            "{}/{} checksum {}",
            self.namespace, self.name, self.checksum
        )
    }

    /// The run request the metadata asks for (no id: a Flagger run is keyed by [`Self::run_id`]).
    pub fn run_request(&self) -> RunRequest {
        let mut req = RunRequest::default();
        for (k, v) in &self.metadata {
            let v = Some(v.clone());
            match k.as_str() {
                "tape" => req.tape = v.map(Tapes::One),
                "baseline" => req.baseline = v,
                "candidate" => req.candidate = v,
                "secondary" => req.secondary = v,
                "baseline_version" => req.baseline_version = v,
                "candidate_version" => req.candidate_version = v,
                _ => {}
            }
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            tape: vec![PathBuf::from("/tapes/svc")],
            baseline: Some("http://127.0.0.1:9000".into()),
            candidate: Some("http://127.0.0.1:9001".into()),
            secondary: None,
        }
    }

    #[test]
    fn ids_are_safe_directory_names() {
        assert!(valid_id("run-1.a_b"));
        assert!(!valid_id(""));
        assert!(!valid_id(".."));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(129)));
        let p = FlaggerPayload {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            checksum: "6d8f/..x".into(),
            metadata: BTreeMap::new(),
        };
        let id = p.run_id();
        assert!(valid_id(&id), "{id}");
        assert_eq!(id, "flagger-test-podinfo-6d8f-..x");
        let long = FlaggerPayload {
            checksum: "é".repeat(200),
            ..p
        };
        let id = long.run_id();
        assert!(valid_id(&id) && id.len() == 128, "{id}");
    }

    #[test]
    fn an_empty_body_is_a_request_without_overrides() {
        assert_eq!(
            parse_run_request(b" \r\n").expect("empty"),
            RunRequest::default()
        );
        let spec = parse_run_request(b"")
            .expect("empty")
            .resolve(&defaults())
            .expect("resolves");
        assert_eq!(spec.tape, ["/tapes/svc"]);
        assert_eq!(spec.baseline, "http://127.0.0.1:9000");
        assert_eq!(spec.secondary, None);
    }

    #[test]
    fn a_request_overrides_the_defaults() {
        let req = parse_run_request(
            br#"{"id":"r1","tape":["a","b"],"candidate":"http://c","secondary":"http://s","candidate_version":"v2"}"#,
        )
        .expect("parses");
        assert_eq!(req.run_id().expect("valid"), "r1");
        let spec = req.resolve(&defaults()).expect("resolves");
        assert_eq!(spec.tape, ["a", "b"]);
        assert_eq!(spec.baseline, "http://127.0.0.1:9000");
        assert_eq!(spec.candidate, "http://c");
        assert_eq!(spec.secondary.as_deref(), Some("http://s"));
        assert_eq!(spec.candidate_version.as_deref(), Some("v2"));
        let one = parse_run_request(br#"{"tape":"t"}"#).expect("one tape");
        assert_eq!(one.tape, Some(Tapes::One("t".into())));
    }

    #[test]
    fn a_request_without_an_id_gets_a_new_one() {
        let a = RunRequest::default().run_id().expect("new id");
        let b = RunRequest::default().run_id().expect("new id");
        assert!(valid_id(&a) && a != b, "{a} {b}");
    }

    #[test]
    fn error_run_request_names_the_unknown_field() {
        let e = parse_run_request(br#"{"bogus":1}"#).expect_err("unknown field");
        assert!(matches!(e, RequestError::RunRequest(_)), "{e:?}");
        assert!(e.to_string().starts_with("bad run request: "), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
        assert_eq!(e.status(), 400);
        let e = parse_run_request(br#"{"tape": 3}"#).expect_err("wrong type");
        assert!(matches!(e, RequestError::RunRequest(_)), "{e:?}");
    }

    #[test]
    fn error_bad_id() {
        for id in ["../etc", ".hidden", "a b", ""] {
            let req = RunRequest {
                id: Some(id.into()),
                ..RunRequest::default()
            };
            let e = req.run_id().expect_err(id);
            assert!(
                matches!(&e, RequestError::BadId { id: sent } if sent == id),
                "{e:?}"
            );
            assert_eq!(
                e.to_string(),
                "bad id: use 1-128 characters of [A-Za-z0-9._-], not starting with a dot"
            );
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn error_no_tape_no_baseline_no_candidate() {
        let e = RunRequest::default()
            .resolve(&Defaults::default())
            .expect_err("nothing");
        assert!(matches!(e, RequestError::NoTape), "{e:?}");
        assert_eq!(
            e.to_string(),
            "no tape: start serve with --tape or send \"tape\""
        );
        let e = RunRequest {
            tape: Some(Tapes::Many(Vec::new())),
            ..RunRequest::default()
        }
        .resolve(&defaults())
        .expect_err("an empty list is no tape");
        assert!(matches!(e, RequestError::NoTape), "{e:?}");

        let only_tape = Defaults {
            tape: vec![PathBuf::from("t")],
            ..Defaults::default()
        };
        let e = RunRequest::default()
            .resolve(&only_tape)
            .expect_err("no baseline");
        assert!(matches!(e, RequestError::NoBaseline), "{e:?}");
        assert_eq!(
            e.to_string(),
            "no baseline URL: start serve with --baseline or send \"baseline\""
        );
        let e = RunRequest {
            baseline: Some("http://b".into()),
            ..RunRequest::default()
        }
        .resolve(&only_tape)
        .expect_err("no candidate");
        assert!(matches!(e, RequestError::NoCandidate), "{e:?}");
        assert_eq!(
            e.to_string(),
            "no candidate URL: start serve with --candidate or send \"candidate\""
        );
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn flagger_metadata_overrides_the_defaults() {
        let p = parse_flagger(
            br#"{"name":"web","namespace":"shop","phase":"Progressing","checksum":"c1",
                 "metadata":{"candidate":"http://canary","tape":"/t2","other":"x"},"new":1}"#,
        )
        .expect("parses; unknown fields are Flagger's to add");
        assert_eq!(p.run_id(), "flagger-shop-web-c1");
        assert_eq!(p.canary(), "shop/web checksum c1");
        let spec = p.run_request().resolve(&defaults()).expect("resolves");
        assert_eq!(spec.tape, ["/t2"]);
        assert_eq!(spec.candidate, "http://canary");
        assert_eq!(spec.baseline, "http://127.0.0.1:9000");
    }

    #[test]
    fn error_flagger_payload() {
        for body in [&b""[..], b"{}", br#"{"name":"web"}"#, b"[1]"] {
            let e = parse_flagger(body).expect_err("not a payload");
            assert!(matches!(e, RequestError::FlaggerPayload(_)), "{e:?}");
            assert!(e.to_string().starts_with("bad Flagger payload: "), "{e}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn error_no_checksum() {
        let e = parse_flagger(br#"{"name":"web","namespace":"shop"}"#).expect_err("no checksum");
        assert!(matches!(e, RequestError::NoChecksum), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the Flagger payload has no checksum to key the run by"
        );
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn state_json_of_earlier_versions_still_loads() {
        let spec: RunSpec = serde_json::from_str(
            r#"{"tape":["t"],"baseline":"b","candidate":"c","secondary":null,
                "baseline_version":null,"candidate_version":null,"extra":["--rate","5"]}"#,
        )
        .expect("old spec");
        let again: RunSpec =
            serde_json::from_slice(&serde_json::to_vec(&spec).expect("writes")).expect("reads");
        assert_eq!(again, spec);
        assert!(
            !serde_json::to_string(&spec)
                .expect("writes")
                .contains("extra")
        );
    }
}
