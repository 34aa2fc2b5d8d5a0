//! Why the server cannot start ([`ServeError`]) and why the API refuses a request
//! ([`RequestError`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper::StatusCode;

use crate::MAX_BODY;

/// Why the server could not start (the CLI exits 2 on each).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The runs directory could not be created or listed.
    #[error("{doing} {}", path.display())]
    RunsDir {
        /// `creating` or `reading`.
        doing: &'static str,
        /// The runs directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reports of a run that a stop interrupted could not be cleared before it starts again.
    #[error("clearing the interrupted run's {}", path.display())]
    ClearInterrupted {
        /// The run's `report/` or `ticket/` directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The check settings every run would use are invalid (a bad timeout, a missing rules file,
    /// an unreadable corpus…): refused at start-up rather than failing every run.
    #[error("the check settings of every run: {0}")]
    Check(#[source] tapedeck_check::CheckError),
    /// The listen address could not be bound.
    #[error("listening on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why the API refuses a request. `Display` is the message the API answers with (in the JSON
/// `error` field on `/v1`, as the one line of text on `/flagger`), so a parser's error is part of
/// it rather than a separate source; [`RequestError::status`] is the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The body could not be read, or is larger than [`MAX_BODY`].
    #[error("could not read the request body (at most {MAX_BODY} bytes): {reason}")]
    Body {
        /// What the body reader said.
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `POST /v1/runs`: the body is not a run request (bad JSON, an unknown field, a wrong type).
    #[error("bad run request: {0}")]
    RunRequest(serde_json::Error),
    /// The run id is not a safe directory name ([`crate::valid_id`]).
    #[error("bad id: use 1-128 characters of [A-Za-z0-9._-], not starting with a dot")]
    BadId {
        /// The id sent.
        id: String,
    },
    /// Neither the request nor the server's defaults name a tape.
    #[error("no tape: start serve with --tape or send \"tape\"")]
    NoTape,
    /// Neither the request nor the server's defaults name a baseline.
    #[error("no baseline URL: start serve with --baseline or send \"baseline\"")]
    NoBaseline,
    /// Neither the request nor the server's defaults name a candidate.
    #[error("no candidate URL: start serve with --candidate or send \"candidate\"")]
    NoCandidate,
    /// A Flagger webhook's body is not Flagger's payload.
    #[error("bad Flagger payload: {0}")]
    FlaggerPayload(serde_json::Error),
    /// A Flagger payload without the checksum that keys its run.
    #[error("the Flagger payload has no checksum to key the run by")]
    NoChecksum,
    /// `POST /flagger/{hook}` with a hook that is not one of Flagger's.
    #[error("unknown Flagger hook {0:?}: use pre-rollout, rollout, confirm-promotion or rollback")]
    UnknownHook(String),
}

impl RequestError {
    /// The HTTP status the API answers with: `413` for an unreadable or oversized body, `404` for
    /// an unknown hook, `400` for the rest.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Body { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnknownHook(_) => StatusCode::NOT_FOUND,
            RequestError::RunRequest(_)
            | RequestError::BadId { .. }
            | RequestError::NoTape
            | RequestError::NoBaseline
            | RequestError::NoCandidate
            | RequestError::FlaggerPayload(_)
            | RequestError::NoChecksum => StatusCode::BAD_REQUEST,
        }
    }
}
