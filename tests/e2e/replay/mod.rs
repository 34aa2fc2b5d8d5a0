//! `tapedeck replay` end to end: the real binary, real tapes, real HTTP servers on loopback.
//! One module per topic; tapes come from [`crate::util::write_tape`] and `synth`, command
//! lines from [`crate::util::Replay`].

use std::collections::HashSet;

use std::path::Path;

use tapedeck_storage::Exchange;

use crate::util::{get, write_tape};

mod pacing;
mod requests;
mod selection;
mod targets;

/// Replay results as one group per origin, asserting what every replay promises: an origin's
/// results are adjacent and in `targets` order, each is for an origin of `recorded`, and no
/// origin is replayed twice.
fn per_origin<'a>(
    results: &'a [Exchange],
    recorded: &[Exchange],
    targets: &[&str],
) -> Vec<&'a [Exchange]> {
    let ids: HashSet<_> = recorded.iter().map(|e| e.id).collect();
    let want: Vec<Option<&str>> = targets.iter().copied().map(Some).collect();
    let mut seen = HashSet::new();
    results
        .chunks(targets.len())
        .inspect(|group| {
            let o = group[0].origin_id.expect("origin id");
            for r in &group[1..] {
                assert_eq!(r.origin_id, Some(o), "results of one origin are adjacent");
            }
            assert!(ids.contains(&o), "a result for an unknown origin");
            assert!(seen.insert(o), "origin replayed twice");
            let labels: Vec<_> = group.iter().map(|e| e.target.as_deref()).collect();
            assert_eq!(labels, want);
        })
        .collect()
}

/// Writes a tape at `tape` of `n` recorded `GET {prefix}/{i}`, the first at `t0`, `gap_us`
/// apart; returns them.
fn write_gets(tape: &Path, prefix: &str, n: i64, t0: i64, gap_us: i64) -> Vec<Exchange> {
    let recorded: Vec<Exchange> = (0..n)
        .map(|i| get(&format!("{prefix}/{i}"), t0 + i * gap_us))
        .collect();
    write_tape(tape, &recorded);
    recorded
}
