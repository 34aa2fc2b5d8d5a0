//! Faults and bad input (issue 8): the real binary under load, killed, fed broken upstreams,
//! broken clients, broken tapes and broken configs. Everything on loopback, bounded in time and
//! count, every process killed by PID. One module per kind of fault.

use std::path::Path;
use std::time::Duration;

use crate::util::{Engine, Recorder, RecorderBuilder, run, stderr};

mod clients;
mod config;
mod load;
mod tapes;
mod upstream;
mod wire;

const STOP: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(120);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn inspect_json(tape: &Path) -> serde_json::Value {
    let out = run(&["inspect", "--json", s(tape)], STOP);
    assert!(out.status.success(), "inspect failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("inspect JSON")
}

/// A `tapedeck record` in front of `upstream` for a fault test: the tape in `DIR/tape`, no
/// admin listener, a 2 s grace period, on `engine`.
fn recorder(upstream: &str, dir: &Path, engine: Engine) -> RecorderBuilder {
    Recorder::builder(upstream)
        .tape(&dir.join("tape"))
        .admin_off()
        .grace("2s")
        .engine(engine)
}
