//! The tape side of a run: the reader thread that selects and prepares origins ahead of the
//! senders, the counting pass, and the same-host guard.

use tapedeck_storage::schema::col;
use tapedeck_storage::{ReadOptions, ReadReport, StorageError, Tape};
use tokio::sync::mpsc;

use crate::config::ReplayConfig;
use crate::error::ReplayError;
use crate::rewrite::{Prepared, prepare};
use crate::select::{SelectionStats, Selector, normalize_authority};

/// One prepared origin, boxed so that queues and task futures move a pointer, not the struct.
pub(super) type Item = Box<Prepared>;

/// Columns a replay reads from the recorded tape: what is sent, what selection looks at, and
/// what results copy (without the scheme and authority when the same-host guard is off).
/// Recorded responses (often most of a tape's bytes) are never decoded.
pub(super) const REQUEST_COLUMNS: [&str; 14] = [
    col::ID,
    col::SOURCE,
    col::STARTED_AT,
    col::METHOD,
    col::SCHEME,
    col::AUTHORITY,
    col::PATH,
    col::QUERY,
    col::REQ_HEADERS,
    col::REQ_BODY,
    col::REQ_BODY_SIZE,
    col::REQ_BODY_TRUNCATED,
    col::FLAGS,
    col::TRACE_ID,
];

/// Columns the counting pass (dry run, progress totals) reads.
pub(super) const COUNT_COLUMNS: [&str; 7] = [
    col::ID,
    col::STARTED_AT,
    col::METHOD,
    col::PATH,
    col::SCHEME,
    col::AUTHORITY,
    col::REQ_BODY_TRUNCATED,
];

/// Origins per message from the reader (fewer wake-ups).
const READ_BATCH: usize = 64;
/// Batches queued between the reader and the senders (× `READ_BATCH` origins).
pub(super) const READ_QUEUE: usize = 16;

/// What the reader thread returns when it is done.
pub(super) type ReadOutcome = (SelectionStats, ReadReport, Option<StorageError>);

/// Rows the tape reader decodes at once: in closed loop, large batches (the fewest per-batch
/// costs); in open loop, small ones. The reader shares the senders' core, and the kernel lets a
/// running thread finish its slice before a waking sender gets the core: decoding 512 rows ran
/// 1–3 ms in one go and made 85 % of the sends that were over 0.2 ms late on a quiet machine
/// (`perf sched timehist`, 10k/s; benches/RESULTS.md, issue 14).
const DECODE_ROWS_CLOSED: usize = 512;
const DECODE_ROWS_OPEN: usize = 64;
/// Rows between two `sched_yield`s of the reader in open loop.
const YIELD_ROWS_OPEN: usize = 8;
/// Batches queued for the senders from which the reader yields (a quarter of the queue).
const YIELD_AHEAD: usize = READ_QUEUE / 4;

/// The scan options of a run, with `columns` projected.
pub(super) fn read_options(config: &ReplayConfig, columns: &[&str]) -> ReadOptions {
    let batch_size = if config.pace.closed_loop().is_some() {
        DECODE_ROWS_CLOSED
    } else {
        DECODE_ROWS_OPEN
    };
    ReadOptions {
        columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
        filter: tapedeck_storage::Filter {
            from_us: config.select.from_us,
            to_us: config.select.to_us,
            ..tapedeck_storage::Filter::default()
        },
        batch_size,
        skip_corrupt: config.skip_corrupt,
    }
}

/// Starts the reader thread: scans the tape, selects, prepares each origin (headers rewritten,
/// path parsed) and queues them in batches. It ends at the end of the tape, at `--limit`, or
/// when the senders drop the queue (a stop).
pub(super) fn spawn_reader(
    config: &ReplayConfig,
    tape: Tape,
    selector: Selector,
    tx: mpsc::Sender<Vec<Item>>,
) -> Result<std::thread::JoinHandle<ReadOutcome>, ReplayError> {
    // The recorded scheme and authority are only looked at by the same-host guard.
    let columns: Vec<&str> = REQUEST_COLUMNS
        .into_iter()
        .filter(|c| !(config.select.allow_same_host && [col::SCHEME, col::AUTHORITY].contains(c)))
        .collect();
    let opts = read_options(config, &columns);
    // Open loop: let a waiting sender have the core every few rows (see DECODE_ROWS_OPEN).
    let yield_every = if config.pace.closed_loop().is_some() {
        usize::MAX
    } else {
        YIELD_ROWS_OPEN
    };
    let drop_set = config.drop_headers.clone();
    let set_headers = config.set_headers.clone();
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || {
            let mut sel = selector;
            let mut it = tape.scan(opts).exchanges();
            let mut err = None;
            let mut batch = Vec::with_capacity(READ_BATCH);
            let mut warned = false;
            while !sel.exhausted() {
                match it.next() {
                    None => break,
                    Some(Err(e)) => {
                        err = Some(e);
                        break;
                    }
                    Some(Ok(ex)) => {
                        if sel.decide(&ex).is_ok() {
                            batch.push(Box::new(prepare(ex, &drop_set, &set_headers)));
                            // Only while well ahead: a reader that the senders wait for (a
                            // loaded machine) keeps its full share of the core.
                            if batch.len() % yield_every == 0
                                && tx.max_capacity() - tx.capacity() >= YIELD_AHEAD
                            {
                                std::thread::yield_now();
                            }
                            if batch.len() == READ_BATCH {
                                warn_placeholders(&sel.stats, &mut warned);
                                let full =
                                    std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
                                if tx.blocking_send(full).is_err() {
                                    batch.clear();
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if !batch.is_empty() {
                warn_placeholders(&sel.stats, &mut warned);
                let _ = tx.blocking_send(batch);
            }
            (sel.stats, it.report().clone(), err)
        })
        .map_err(|source| ReplayError::Start {
            what: "the tape reader thread",
            source,
        })
}

/// Warns once, before the batch that carries them is handed on (so before they are sent), that
/// requests carry redaction placeholders: which headers, in how many of the requests read so far,
/// and the flags that fix it (issue 17).
fn warn_placeholders(stats: &SelectionStats, warned: &mut bool) {
    if *warned || stats.redacted_credentials.is_empty() {
        return;
    }
    *warned = true;
    tracing::warn!(
        headers = %crate::select::describe_placeholders(&stats.redacted_credentials),
        of_first = stats.selected,
        fix = %crate::select::set_header_fix(&stats.redacted_credentials),
        "requests carry the redaction placeholder the recorder wrote instead of a credential, \
         and the targets receive it as is; set real values with the fix shown (or --drop-header \
         NAME), or pass --strict-credentials to refuse such a replay"
    );
}

/// Counts what a run would select (dry run, progress totals), reading a few small columns.
pub(super) fn count_pass(tape: &Tape, opts: ReadOptions, mut sel: Selector) -> ReadOutcome {
    let mut it = tape.scan(opts).exchanges();
    let mut err = None;
    while !sel.exhausted() {
        match it.next() {
            None => break,
            Some(Err(e)) => {
                err = Some(e);
                break;
            }
            Some(Ok(ex)) => {
                let _ = sel.decide(&ex);
            }
        }
    }
    (sel.stats, it.report().clone(), err)
}

/// File metadata key under which `tapedeck record` stores the upstream it recorded.
const RECORDER_UPSTREAM: &str = "tapedeck.recorder.upstream";

/// Refuses (the outer `Ok`) a target whose authority equals the tape's recorded upstream (file
/// metadata) or the authority of its first exchange.
pub(super) fn check_same_host(
    tape: &Tape,
    config: &ReplayConfig,
    target_hosts: &[String],
) -> Result<(), Result<ReplayError, StorageError>> {
    let mut recorded: Vec<(String, String)> = Vec::new();
    let md = tape.metadata().map_err(Err)?;
    if let Some(up) = md.get(RECORDER_UPSTREAM) {
        let (scheme, authority) = match up.split_once("://") {
            Some((scheme, rest)) => (scheme, rest.split('/').next().unwrap_or(rest)),
            None => ("http", up.as_str()),
        };
        recorded.push((up.clone(), normalize_authority(authority, scheme)));
    }
    let opts = ReadOptions {
        columns: Some(vec![col::AUTHORITY.into(), col::SCHEME.into()]),
        batch_size: 1,
        skip_corrupt: config.skip_corrupt,
        ..ReadOptions::default()
    };
    match tape.scan(opts).exchanges().next() {
        None => {}
        Some(Err(e)) => return Err(Err(e)),
        Some(Ok(ex)) if !ex.authority.is_empty() => {
            let n = normalize_authority(&ex.authority, &ex.scheme);
            recorded.push((ex.authority.into_string(), n));
        }
        Some(Ok(_)) => {}
    }
    for (t, host) in config.targets.iter().zip(target_hosts) {
        if let Some((shown, _)) = recorded.iter().find(|(_, n)| n == host) {
            return Err(Ok(ReplayError::SameHost {
                target: t.name.clone(),
                authority: shown.clone(),
            }));
        }
    }
    Ok(())
}
