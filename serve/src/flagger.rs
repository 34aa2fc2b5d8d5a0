//! The Flagger protocol: which hook starts a run, and how a run's status becomes the hook's HTTP
//! status. Answers are one line of text and never `5xx` (Flagger retries those and drops the
//! body).

use std::sync::Arc;

use hyper::StatusCode;

use crate::RequestError;
use crate::request::parse_flagger;
use crate::store::{RunState, Status, Store};

/// Flagger's webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// Starts the run of the canary revision.
    PreRollout,
    /// `200` while the run is pending or passed, `412` otherwise; starts a run not started yet.
    Rollout,
    /// `200` only on a finished pass.
    ConfirmPromotion,
    /// `200` only on a finished fail.
    Rollback,
}

impl std::str::FromStr for Hook {
    type Err = RequestError;

    fn from_str(s: &str) -> Result<Hook, RequestError> {
        Ok(match s {
            "pre-rollout" => Hook::PreRollout,
            "rollout" => Hook::Rollout,
            "confirm-promotion" => Hook::ConfirmPromotion,
            "rollback" => Hook::Rollback,
            other => return Err(RequestError::UnknownHook(other.to_owned())),
        })
    }
}

/// One line for Flagger's events: `tapedeck run ID: STATUS[: title, message or why it waits]`,
/// at most 300 characters.
fn reason(s: &RunState) -> String {
    let what = s
        .title
        .clone()
        .or_else(|| s.message.clone())
        .or_else(|| (s.status == Status::Queued).then(|| "waiting for a free slot".to_owned()));
    let line = match what {
        Some(w) => format!("tapedeck run {}: {}: {w}", s.id, s.status.public()),
        None => format!("tapedeck run {}: {}", s.id, s.status.public()),
    };
    let first = line.lines().next().unwrap_or_default();
    first.chars().take(300).collect()
}

/// The HTTP status of `hook` for a run in `status`.
fn answer(hook: Hook, status: Status) -> StatusCode {
    let ok = match hook {
        Hook::PreRollout => true,
        Hook::Rollout => matches!(status, Status::Queued | Status::Running | Status::Pass),
        Hook::ConfirmPromotion => status == Status::Pass,
        Hook::Rollback => status == Status::Fail,
    };
    if ok {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    }
}

/// Answers `POST /flagger/{hook}` with `body`: the status and one line of text.
pub(crate) fn handle(store: &Arc<Store>, hook: &str, body: &[u8]) -> (StatusCode, String) {
    let payload = match parse_flagger(body) {
        Ok(p) => p,
        Err(e) => return (e.status(), e.to_string()),
    };
    let id = payload.run_id();
    let canary = payload.canary();
    tracing::info!(hook, canary = %canary, phase = %payload.phase, run = %id, "flagger webhook");
    let hook: Hook = match hook.parse() {
        Ok(h) => h,
        Err(e) => return (e.status(), e.to_string()),
    };
    let state = match hook {
        Hook::PreRollout | Hook::Rollout => match store.get(&id) {
            Some(s) => s,
            None => match payload.run_request().resolve(store.defaults()) {
                Ok(spec) => store.start(id, spec, Some(canary)).0,
                Err(e) => return (e.status(), e.to_string()),
            },
        },
        Hook::ConfirmPromotion | Hook::Rollback => match store.get(&id) {
            Some(s) => s,
            None => {
                return (
                    StatusCode::PRECONDITION_FAILED,
                    format!("tapedeck: no run for {canary} (is the pre-rollout webhook set?)"),
                );
            }
        },
    };
    (answer(hook, state.status), reason(&state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Defaults, RunRequest};

    #[test]
    fn hooks_map_run_status_to_http_and_never_5xx() {
        let all = [
            Status::Queued,
            Status::Running,
            Status::Pass,
            Status::Fail,
            Status::Inconclusive,
            Status::Error,
        ];
        for status in all {
            let code = |h| answer(h, status).as_u16();
            assert_eq!(code(Hook::PreRollout), 200, "{status:?}");
            let rollout = if status.done() && status != Status::Pass {
                412
            } else {
                200
            };
            assert_eq!(code(Hook::Rollout), rollout, "{status:?}");
            let promote = if status == Status::Pass { 200 } else { 412 };
            assert_eq!(code(Hook::ConfirmPromotion), promote, "{status:?}");
            let rollback = if status == Status::Fail { 200 } else { 412 };
            assert_eq!(code(Hook::Rollback), rollback, "{status:?}");
        }
    }

    #[test]
    fn error_unknown_hook() {
        let e = "promote".parse::<Hook>().expect_err("not a hook");
        assert!(
            matches!(&e, RequestError::UnknownHook(h) if h == "promote"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "unknown Flagger hook \"promote\": use pre-rollout, rollout, confirm-promotion or rollback"
        );
        assert_eq!(e.status(), 404);
        assert_eq!(
            "confirm-promotion".parse::<Hook>().ok(),
            Some(Hook::ConfirmPromotion)
        );
    }

    #[test]
    fn the_reason_is_one_short_line() {
        let spec = RunRequest {
            tape: Some(crate::request::Tapes::One("t".into())),
            baseline: Some("b".into()),
            candidate: Some("c".into()),
            ..RunRequest::default()
        }
        .resolve(&Defaults::default())
        .expect("resolves");
        let mut s = RunState {
            id: "r".into(),
            status: Status::Queued,
            created_at: String::new(),
            started_at: None,
            finished_at: None,
            message: None,
            title: None,
            flagger: None,
            spec,
        };
        assert_eq!(
            reason(&s),
            "tapedeck run r: pending: waiting for a free slot"
        );
        s.status = Status::Running;
        assert_eq!(reason(&s), "tapedeck run r: pending");
        s.status = Status::Error;
        s.message = Some(format!("replay failed: {}\nsecond line", "x".repeat(400)));
        let line = reason(&s);
        assert!(
            line.starts_with("tapedeck run r: error: replay failed: xxx"),
            "{line}"
        );
        assert_eq!(line.chars().count(), 300);
        assert!(!line.contains('\n'));
    }
}
