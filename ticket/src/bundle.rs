//! The bundled tape: the failing origins of the run chosen by route (the judge's own keying) and
//! every row of them, redacted, written to `OUT/tape`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use tapedeck_common::{Redactor, RuleRedactor};
use tapedeck_storage::{Filter, Tape, TapeWriter, WhenFull, flags};
use uuid::Uuid;

use crate::verdict::{Route, Verdict};
use crate::{TicketError, TicketOptions};

#[derive(Debug, Clone)]
pub(crate) struct Bundled {
    pub(crate) rows: u64,
    pub(crate) origins: u64,
    pub(crate) redacted: u64,
    /// The candidate's request of each bundled origin as a curl command, made from the
    /// redacted exchange.
    pub(crate) curls: HashMap<Uuid, String>,
    /// Per failing route, the candidate's worst exchange: its origin and its latency (`None`: it
    /// failed).
    pub(crate) worst: HashMap<String, (Uuid, Option<i64>)>,
}

/// Selects the failing origins from the run and writes all their rows, redacted, to `tape_dir`.
pub(crate) fn bundle_exchanges(
    redactor: &RuleRedactor,
    v: &Verdict,
    run: &Path,
    tape_dir: &Path,
    opts: &TicketOptions,
) -> Result<Bundled, TicketError> {
    // 1. Origins named as examples of regressions.
    let mut chosen: BTreeSet<Uuid> = BTreeSet::new();
    let failing: Vec<&Route> = v.routes.iter().filter(|r| r.verdict == "fail").collect();
    let mut per_route: HashMap<&str, usize> = HashMap::new();
    for r in &failing {
        for p in r.regressions() {
            if let Some(id) = p
                .example
                .as_ref()
                .and_then(|e| Uuid::parse_str(&e.origin_id).ok())
                && *per_route.get(r.route.as_str()).unwrap_or(&0) < opts.max_per_route
                && chosen.insert(id)
            {
                *per_route.entry(r.route.as_str()).or_default() += 1;
            }
        }
    }
    // 2. Per failing route, the candidate's failed and slowest exchanges (bounded memory: at most
    //    `max_per_route` kept per route).
    let tape = Tape::open(&[run]).map_err(|source| TicketError::Run {
        run: run.to_owned(),
        source,
    })?;
    let mut worst: HashMap<&str, Vec<(i64, Uuid)>> = HashMap::new();
    // The judge's own keying: the rules' templates and threshold, recorded in verdict.json.
    // It sees the candidate's rows in run order, as the judge did, so it infers the same
    // `{param}` positions (rows keyed before a position collapsed still match by
    // `tapedeck_diff::route::matches`).
    let mut keyer = v.route_keys.keyer();
    for ex in tape.exchanges(Filter::default()) {
        let ex = ex.map_err(|source| TicketError::Run {
            run: run.to_owned(),
            source,
        })?;
        if ex.target.as_deref() != Some(v.candidate.as_str()) {
            continue;
        }
        let Some(origin) = ex.origin_id else { continue };
        let key = keyer.key(&ex.method, &ex.path, ex.query.as_deref());
        let Some(route) = failing
            .iter()
            .find(|r| tapedeck_diff::route::matches(&r.route, &key))
        else {
            continue;
        };
        let failed = ex.error_kind.is_some() || ex.status.is_none_or(|s| s >= 500);
        // Failed exchanges rank above any latency.
        let rank = if failed {
            i64::MAX
        } else {
            ex.total_us.or(ex.duration_us).unwrap_or(0)
        };
        let list = worst.entry(route.route.as_str()).or_default();
        list.push((rank, origin));
        if list.len() > opts.max_per_route.saturating_mul(4).max(64) {
            list.sort_unstable_by(|a, b| b.cmp(a));
            list.truncate(opts.max_per_route);
        }
    }
    let mut worst_of_route: HashMap<String, (Uuid, Option<i64>)> = HashMap::new();
    for (route, mut list) in worst {
        list.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&(rank, id)) = list.first() {
            worst_of_route.insert(route.to_owned(), (id, (rank != i64::MAX).then_some(rank)));
        }
        let have = per_route.get(route).copied().unwrap_or(0);
        for (_, id) in list
            .into_iter()
            .take(opts.max_per_route.saturating_sub(have))
        {
            chosen.insert(id);
        }
    }

    // 3. Write every row of the chosen origins, redacted.
    let writer = TapeWriter::builder(tape_dir)
        .when_full(WhenFull::Block)
        .metadata("tapedeck.ticket.run", v.run_id.clone())
        .metadata("tapedeck.ticket.baseline", v.baseline.clone())
        .metadata("tapedeck.ticket.candidate", v.candidate.clone())
        .open()
        .map_err(|source| TicketError::Tape {
            tape: tape_dir.to_owned(),
            source,
        })?;
    let mut out = Bundled {
        rows: 0,
        origins: chosen.len() as u64,
        redacted: 0,
        curls: HashMap::new(),
        worst: worst_of_route,
    };
    let tape = Tape::open(&[run]).map_err(|source| TicketError::Run {
        run: run.to_owned(),
        source,
    })?;
    for ex in tape.exchanges(Filter::default()) {
        let mut ex = ex.map_err(|source| TicketError::Run {
            run: run.to_owned(),
            source,
        })?;
        if !ex.origin_id.is_some_and(|o| chosen.contains(&o)) {
            continue;
        }
        if redactor.redact(&mut ex) {
            ex.flags |= flags::REDACTED;
            out.redacted += 1;
        }
        if ex.target.as_deref() == Some(v.candidate.as_str())
            && let Some(origin) = ex.origin_id
        {
            out.curls
                .insert(origin, tapedeck_diff::fmt::curl_command(&ex));
        }
        if writer.append(ex).is_err() {
            return Err(TicketError::Lost {
                tape: tape_dir.to_owned(),
                lost: 1,
            });
        }
        out.rows += 1;
    }
    let stats = writer.close().map_err(|source| TicketError::Tape {
        tape: tape_dir.to_owned(),
        source,
    })?;
    if stats.dropped() > 0 {
        return Err(TicketError::Lost {
            tape: tape_dir.to_owned(),
            lost: stats.dropped(),
        });
    }
    Ok(out)
}
