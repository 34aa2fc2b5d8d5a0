//! The regression corpus: requests that once exposed a regression, kept so that the same
//! regression can never come back unnoticed (issue 16).
//!
//! A corpus is a directory:
//! - `corpus.json` — the index (`schema_version` 1): one [`Entry`] per request, with the route it
//!   failed on and the ticket it came from;
//! - `tape/` — a tape holding each entry's request as one exchange (id = [`Entry::exchange_id`]);
//!   every `corpus add` appends one file to it.
//!
//! [`add`] takes the failing exchanges of a ticket bundle (what `tapedeck ticket` and
//! `check --ticket` write: `ticket.json` and `tape/`), one request per bundled origin,
//! deduplicated by route + request fingerprint (method, path, query, body). `check --corpus`
//! replays the corpus before the tape: each entry is sent several times (so every route reaches
//! the judge's minimum sample; [`Corpus::expand`]), that phase is judged on its own, and a corpus
//! route that fails again is a known regression that reappeared
//! (`tapedeck_diff::corpus::CorpusReport`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tapedeck_diff::DiffOutcome;
use tapedeck_diff::corpus::{CorpusHit, CorpusReport, TicketRef};
use tapedeck_diff::route::RouteKeyer;
use tapedeck_storage::{Exchange, Filter, StorageError, Tape, TapeWriter, WhenFull};
use uuid::Uuid;

/// The index file in a corpus directory.
pub const INDEX: &str = "corpus.json";
/// The tape directory in a corpus directory.
pub const TAPE: &str = "tape";
/// `REPORT/corpus`: where a check keeps its corpus phase.
pub const PHASE: &str = "corpus";
/// `REPORT/corpus/source`: the expanded requests the corpus phase replays.
pub const SOURCE: &str = "source";
/// `REPORT/corpus/run`: the corpus phase's results.
pub const RUN: &str = "run";
/// The `source` of corpus exchanges.
pub const SOURCE_LABEL: &str = "tapedeck-corpus";

/// Version of `corpus.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a corpus could not be read or extended.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file or directory could not be read, written or created.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The corpus directory does not exist.
    #[error(
        "corpus {} does not exist: build one with `tapedeck corpus add --ticket DIR --corpus {}` (an empty directory is an empty corpus)",
        path.display(),
        path.display()
    )]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// `corpus.json` or `ticket.json` is not what it should be.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// `corpus.json` was written by a newer tapedeck.
    #[error("{}: schema_version {found} is not supported (this tapedeck reads {SCHEMA_VERSION})", path.display())]
    Schema {
        /// The index.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The directory given as a ticket bundle has no `ticket.json`.
    #[error("{} is not a ticket bundle (no ticket.json): give the directory `tapedeck ticket --out` or `check --ticket` wrote", path.display())]
    NotATicket {
        /// The directory.
        path: PathBuf,
    },
    /// The ticket bundle has no exchanges to take.
    #[error("ticket bundle {} has no failing exchanges (no tape/: the ticket was written without its run)", path.display())]
    NoExchanges {
        /// The bundle.
        path: PathBuf,
    },
    /// A tape could not be read or written.
    #[error("tape {}: {source}", path.display())]
    Tape {
        /// The tape.
        path: PathBuf,
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// A tape writer refused rows.
    #[error("tape {}: {lost} row(s) could not be written", path.display())]
    Lost {
        /// The tape.
        path: PathBuf,
        /// Rows lost.
        lost: u64,
    },
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketSource {
    /// The ticket's fingerprint.
    pub fingerprint: String,
    /// The ticket's title.
    pub title: String,
    /// The bundle directory, as given to `corpus add`.
    pub dir: String,
    /// The replay run the ticket was written from.
    pub run_id: String,
    /// The ticket's severity.
    pub severity: String,
}

/// One request of the corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The dedup key: the first 16 hex digits of `sha256(route \n request)`.
    pub key: String,
    /// The ticket's route this request failed on.
    pub route: String,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// The request fingerprint: `sha256(method \n path \n query \n body)` as hex.
    pub request: String,
    /// The id of the request's exchange in the corpus tape (a UUID).
    pub exchange_id: String,
    /// The ticket it came from.
    pub ticket: TicketSource,
    /// When it was added (RFC 3339).
    pub added_at: String,
}

/// `corpus.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The entries, in the order they were added.
    pub entries: Vec<Entry>,
}

/// `ticket.json`: only what the corpus needs (the file has more).
#[derive(Debug, Deserialize)]
struct TicketJson {
    fingerprint: String,
    title: String,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    severity: String,
}

/// What [`add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// New entries.
    pub added: usize,
    /// Requests already in the corpus (same route and request fingerprint).
    pub duplicates: usize,
    /// Entries in the corpus now.
    pub total: usize,
    /// The routes of the new entries.
    pub routes: BTreeSet<String>,
    /// The ticket's fingerprint.
    pub fingerprint: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `sha256(method \n path \n query \n body)` as hex: what makes two requests the same one.
pub fn request_fingerprint(ex: &Exchange) -> String {
    let mut h = Sha256::new();
    for part in [
        ex.method.as_bytes(),
        ex.path.as_bytes(),
        ex.query.as_deref().unwrap_or("").as_bytes(),
    ] {
        h.update(part);
        h.update(b"\n");
    }
    h.update(&ex.req_body);
    hex(&h.finalize())
}

fn entry_key(route: &str, request: &str) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update(b"\n");
    h.update(request.as_bytes());
    hex(&h.finalize())[..16].to_owned()
}

fn read_index(dir: &Path) -> Result<Index, CorpusError> {
    let path = dir.join(INDEX);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Index {
                schema_version: SCHEMA_VERSION,
                entries: Vec::new(),
            });
        }
        Err(source) => {
            return Err(CorpusError::Io {
                action: "reading",
                path,
                source,
            });
        }
    };
    let index: Index = serde_json::from_slice(&data).map_err(|source| CorpusError::Json {
        path: path.clone(),
        source,
    })?;
    if index.schema_version != SCHEMA_VERSION {
        return Err(CorpusError::Schema {
            path,
            found: index.schema_version,
        });
    }
    Ok(index)
}

/// Replaces `corpus.json` atomically (a temporary file renamed over it).
fn write_index(dir: &Path, index: &Index) -> Result<(), CorpusError> {
    let path = dir.join(INDEX);
    let tmp = dir.join(format!(".{INDEX}.tmp"));
    // Strings, numbers and UUIDs always serialize.
    let data = serde_json::to_vec_pretty(index).unwrap_or_default();
    std::fs::write(&tmp, data).map_err(|source| CorpusError::Io {
        action: "writing",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| CorpusError::Io {
        action: "replacing",
        path,
        source,
    })
}

/// Reads the index of the corpus in `dir` (a directory without `corpus.json` is empty).
pub fn list(dir: &Path) -> Result<Index, CorpusError> {
    if !dir.is_dir() {
        return Err(CorpusError::Missing {
            path: dir.to_owned(),
        });
    }
    read_index(dir)
}

/// Adds the failing requests of the ticket bundle in `ticket` to the corpus in `corpus`
/// (created if missing): one entry per bundled origin whose route + request fingerprint is not
/// in the corpus yet.
pub fn add(ticket: &Path, corpus: &Path) -> Result<Added, CorpusError> {
    let ticket_json = ticket.join("ticket.json");
    let data = match std::fs::read(&ticket_json) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CorpusError::NotATicket {
                path: ticket.to_owned(),
            });
        }
        Err(source) => {
            return Err(CorpusError::Io {
                action: "reading",
                path: ticket_json,
                source,
            });
        }
    };
    let t: TicketJson = serde_json::from_slice(&data).map_err(|source| CorpusError::Json {
        path: ticket_json.clone(),
        source,
    })?;
    let bundle_tape = ticket.join("tape");
    if !bundle_tape.is_dir() {
        return Err(CorpusError::NoExchanges {
            path: ticket.to_owned(),
        });
    }
    std::fs::create_dir_all(corpus).map_err(|source| CorpusError::Io {
        action: "creating",
        path: corpus.to_owned(),
        source,
    })?;
    let mut index = read_index(corpus)?;
    let mut known: std::collections::HashSet<String> =
        index.entries.iter().map(|e| e.key.clone()).collect();
    let source = TicketSource {
        fingerprint: t.fingerprint.clone(),
        title: t.title.clone(),
        dir: ticket.display().to_string(),
        run_id: t.run_id.clone(),
        severity: t.severity.clone(),
    };
    let tape_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CorpusError::Tape { path, source }
    };
    let tape = Tape::open(&[&bundle_tape]).map_err(tape_err(&bundle_tape))?;
    // Ids, UUIDs and hex segments are `{id}` whatever the cardinality: the same keys the judge
    // gives these requests on their own.
    let mut keyer = RouteKeyer::new(&[], 0);
    let mut seen_origins = std::collections::HashSet::new();
    let mut rows = Vec::new();
    let mut added = Added {
        added: 0,
        duplicates: 0,
        total: 0,
        routes: BTreeSet::new(),
        fingerprint: t.fingerprint.clone(),
    };
    let now = tapedeck_common::format::rfc3339_now();
    for ex in tape.exchanges(Filter::default()) {
        let ex = ex.map_err(tape_err(&bundle_tape))?;
        // One request per origin: every target got the same one.
        let origin = ex.origin_id.unwrap_or(ex.id);
        if !seen_origins.insert(origin) {
            continue;
        }
        let key = keyer.key(&ex.method, &ex.path, ex.query.as_deref());
        let route = t
            .routes
            .iter()
            .find(|r| tapedeck_diff::route::matches(r, &key))
            .cloned()
            .unwrap_or(key);
        let request = request_fingerprint(&ex);
        let entry_key = entry_key(&route, &request);
        if !known.insert(entry_key.clone()) {
            added.duplicates += 1;
            continue;
        }
        let id = Uuid::now_v7();
        index.entries.push(Entry {
            key: entry_key,
            route: route.clone(),
            method: ex.method.to_string(),
            path: ex.path.to_string(),
            query: ex.query.clone(),
            request,
            exchange_id: id.to_string(),
            ticket: source.clone(),
            added_at: now.clone(),
        });
        added.routes.insert(route);
        rows.push(Exchange {
            id,
            source: SOURCE_LABEL.into(),
            origin_id: None,
            target: None,
            scheduled_at_us: None,
            sent_at_us: None,
            ..ex
        });
    }
    added.added = rows.len();
    added.total = index.entries.len();
    if rows.is_empty() {
        tracing::info!(ticket = %ticket.display(), duplicates = added.duplicates, "nothing new for the corpus");
        return Ok(added);
    }
    let tape_dir = corpus.join(TAPE);
    let writer = TapeWriter::builder(&tape_dir)
        .when_full(WhenFull::Block)
        .metadata("tapedeck.corpus.ticket", t.fingerprint.clone())
        .open()
        .map_err(tape_err(&tape_dir))?;
    for row in rows {
        if writer.append(row).is_err() {
            return Err(CorpusError::Lost {
                path: tape_dir,
                lost: 1,
            });
        }
    }
    let stats = writer.close().map_err(tape_err(&tape_dir))?;
    if stats.dropped() > 0 {
        return Err(CorpusError::Lost {
            path: tape_dir,
            lost: stats.dropped(),
        });
    }
    // The rows are on disk before the index names them: an interrupted add leaves rows no entry
    // names (ignored), never an entry without its request.
    write_index(corpus, &index)?;
    tracing::info!(ticket = %ticket.display(), corpus = %corpus.display(), added = added.added, duplicates = added.duplicates, "corpus extended");
    Ok(added)
}

/// The authority and scheme the tape at `tapes` was recorded from (its first exchange), if it
/// can be read; the corpus phase's requests pretend to come from the same recording.
pub fn recorded_authority(tapes: &[PathBuf]) -> Option<(String, String)> {
    let tape = Tape::open(tapes).ok()?;
    let opts = tapedeck_storage::ReadOptions {
        columns: Some(vec![
            tapedeck_storage::schema::col::AUTHORITY.into(),
            tapedeck_storage::schema::col::SCHEME.into(),
        ]),
        batch_size: 1,
        ..tapedeck_storage::ReadOptions::default()
    };
    let ex = tape.scan(opts).exchanges().next()?.ok()?;
    (!ex.authority.is_empty()).then(|| (ex.authority.into_string(), ex.scheme.into_string()))
}

/// A corpus opened for replay: its entries and their requests.
#[derive(Debug)]
pub struct Corpus {
    dir: PathBuf,
    entries: Vec<Entry>,
    requests: Vec<Exchange>,
}

impl Corpus {
    /// Opens the corpus in `dir`: its index and the request of every entry.
    pub fn open(dir: &Path) -> Result<Corpus, CorpusError> {
        let index = list(dir)?;
        let mut by_id: HashMap<Uuid, usize> = index
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Uuid::parse_str(&e.exchange_id).ok().map(|id| (id, i)))
            .collect();
        let mut requests: Vec<Option<Exchange>> = vec![None; index.entries.len()];
        let tape_dir = dir.join(TAPE);
        if !index.entries.is_empty() {
            let tape = Tape::open(&[&tape_dir]).map_err(|source| CorpusError::Tape {
                path: tape_dir.clone(),
                source,
            })?;
            for ex in tape.exchanges(Filter::default()) {
                let ex = ex.map_err(|source| CorpusError::Tape {
                    path: tape_dir.clone(),
                    source,
                })?;
                if let Some(i) = by_id.remove(&ex.id) {
                    requests[i] = Some(ex);
                }
            }
        }
        let mut entries = Vec::with_capacity(index.entries.len());
        let mut kept = Vec::with_capacity(index.entries.len());
        for (entry, request) in index.entries.into_iter().zip(requests) {
            match request {
                Some(r) => {
                    entries.push(entry);
                    kept.push(r);
                }
                None => {
                    tracing::warn!(corpus = %dir.display(), entry = %entry.key, id = %entry.exchange_id, "a corpus entry has no request in the corpus tape; skipped");
                }
            }
        }
        Ok(Corpus {
            dir: dir.to_owned(),
            entries,
            requests: kept,
        })
    }

    /// The corpus directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entries that have their request.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Writes the requests the corpus phase replays to a new tape in `dest`: every entry sent
    /// `ceil(min_samples / entries on its route)` times (at least once), in rounds, so each
    /// route reaches the judge's minimum sample; each copy gets its own id. Returns the number of
    /// requests written.
    ///
    /// The requests are written as recorded from `recorded_as` (authority and scheme: the tape
    /// being checked, [`recorded_authority`]), so replay's same-host guard protects the corpus
    /// phase exactly as it protects the tape's; the bundle's rows carry the authority of the
    /// targets of the run they came from, which says nothing about where traffic was recorded.
    pub fn expand(
        &self,
        dest: &Path,
        min_samples: usize,
        recorded_as: Option<&(String, String)>,
    ) -> Result<u64, CorpusError> {
        let mut per_route: HashMap<&str, usize> = HashMap::new();
        for e in &self.entries {
            *per_route.entry(e.route.as_str()).or_default() += 1;
        }
        let repeats: Vec<usize> = self
            .entries
            .iter()
            .map(|e| min_samples.max(1).div_ceil(per_route[e.route.as_str()]))
            .collect();
        let rounds = repeats.iter().copied().max().unwrap_or(0);
        let writer = TapeWriter::builder(dest)
            .when_full(WhenFull::Block)
            .new_tape_only(true)
            .metadata("tapedeck.corpus", self.dir.display().to_string())
            .open()
            .map_err(|source| CorpusError::Tape {
                path: dest.to_owned(),
                source,
            })?;
        let start = self
            .requests
            .iter()
            .map(|r| r.started_at_us)
            .min()
            .unwrap_or(0);
        let mut n: i64 = 0;
        for round in 0..rounds {
            for (i, request) in self.requests.iter().enumerate() {
                if repeats[i] <= round {
                    continue;
                }
                let mut copy = Exchange {
                    id: Uuid::now_v7(),
                    started_at_us: start + n * 1000,
                    ..request.clone()
                };
                match recorded_as {
                    Some((authority, scheme)) => {
                        copy.authority = authority.as_str().into();
                        copy.scheme = scheme.as_str().into();
                    }
                    None => copy.authority.clear(),
                }
                n += 1;
                if writer.append(copy).is_err() {
                    return Err(CorpusError::Lost {
                        path: dest.to_owned(),
                        lost: 1,
                    });
                }
            }
        }
        let stats = writer.close().map_err(|source| CorpusError::Tape {
            path: dest.to_owned(),
            source,
        })?;
        if stats.dropped() > 0 {
            return Err(CorpusError::Lost {
                path: dest.to_owned(),
                lost: stats.dropped(),
            });
        }
        Ok(n as u64)
    }

    /// The corpus section of the verdict from the corpus phase's `outcome`: each failing route
    /// with the entries (and tickets) that belong to it.
    pub fn report(
        &self,
        replayed: &tapedeck_replay::ReplaySummary,
        outcome: &DiffOutcome,
        run: &Path,
    ) -> CorpusReport {
        // Key each entry as the corpus phase's judge keyed its requests.
        let mut keyer = outcome.route_keys.keyer();
        let keys: Vec<String> = self
            .entries
            .iter()
            .map(|e| keyer.key(&e.method, &e.path, e.query.as_deref()))
            .collect();
        let hits = tapedeck_diff::corpus::failing_routes(outcome)
            .map(|(route, checks)| {
                let on_route: Vec<&Entry> = self
                    .entries
                    .iter()
                    .zip(&keys)
                    .filter(|(_, k)| {
                        **k == route.route || tapedeck_diff::route::matches(&route.route, k)
                    })
                    .map(|(e, _)| e)
                    .collect();
                let tickets: BTreeSet<TicketRef> = on_route
                    .iter()
                    .map(|e| TicketRef {
                        fingerprint: e.ticket.fingerprint.clone(),
                        title: e.ticket.title.clone(),
                        dir: e.ticket.dir.clone(),
                    })
                    .collect();
                CorpusHit {
                    route: route.route.clone(),
                    checks,
                    entries: on_route.len() as u64,
                    tickets: tickets.into_iter().collect(),
                }
            })
            .collect();
        CorpusReport {
            dir: self.dir.display().to_string(),
            entries: self.entries.len() as u64,
            requests: replayed.origins,
            skipped_writes: replayed.selection.skipped_writes,
            verdict: outcome.verdict,
            hits,
            run: run.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, path: &str, body: &str) -> Exchange {
        Exchange {
            method: method.into(),
            path: path.into(),
            req_body: body.as_bytes().to_vec().into(),
            ..Exchange::default()
        }
    }

    #[test]
    fn the_request_fingerprint_sees_method_path_query_and_body() {
        let a = row("GET", "/a", "");
        assert_eq!(request_fingerprint(&a), request_fingerprint(&a.clone()));
        assert_ne!(
            request_fingerprint(&a),
            request_fingerprint(&row("POST", "/a", ""))
        );
        assert_ne!(
            request_fingerprint(&a),
            request_fingerprint(&row("GET", "/a", "x"))
        );
        let mut q = a.clone();
        q.query = Some("page=2".into());
        assert_ne!(request_fingerprint(&a), request_fingerprint(&q));
        // Not the headers or the time: the same request sent later is the same entry.
        let mut later = a.clone();
        later.started_at_us = 99;
        later.id = Uuid::now_v7();
        assert_eq!(request_fingerprint(&a), request_fingerprint(&later));
    }

    #[test]
    fn a_missing_corpus_and_a_missing_ticket_say_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = list(&missing).expect_err("missing");
        assert!(matches!(err, CorpusError::Missing { .. }));
        assert!(err.to_string().contains("tapedeck corpus add"), "{err}");
        let err = add(dir.path(), &dir.path().join("c")).expect_err("not a ticket");
        assert!(matches!(err, CorpusError::NotATicket { .. }), "{err}");
        // An empty directory is an empty corpus.
        assert!(list(dir.path()).expect("empty").entries.is_empty());
    }

    #[test]
    fn expanded_requests_carry_the_checked_tapes_recorded_authority() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut req = row("GET", "/a", "");
        req.authority = "127.0.0.1:9000".into(); // a replay target of the ticket's run
        req.scheme = "http".into();
        let corpus = Corpus {
            dir: dir.path().join("c"),
            entries: vec![Entry {
                key: "k".into(),
                route: "GET /a".into(),
                method: "GET".into(),
                path: "/a".into(),
                query: None,
                request: request_fingerprint(&req),
                exchange_id: Uuid::now_v7().to_string(),
                ticket: TicketSource {
                    fingerprint: "f".into(),
                    title: "t".into(),
                    dir: "d".into(),
                    run_id: "r".into(),
                    severity: "high".into(),
                },
                added_at: "now".into(),
            }],
            requests: vec![req],
        };
        let recorded = ("shop.example:443".to_owned(), "https".to_owned());
        let out = dir.path().join("src");
        assert_eq!(corpus.expand(&out, 3, Some(&recorded)).expect("expand"), 3);
        let tape = Tape::open(&[&out]).expect("open");
        let rows: Vec<Exchange> = tape
            .exchanges(Filter::default())
            .map(|e| e.expect("row"))
            .collect();
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter()
                .all(|r| r.authority == "shop.example:443" && r.scheme == "https")
        );
        let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 3, "each copy has its own id");
        // Unknown recording: no authority, so no same-host match either way.
        let out = dir.path().join("src2");
        corpus.expand(&out, 1, None).expect("expand");
        let row = Tape::open(&[&out])
            .expect("open")
            .exchanges(Filter::default())
            .next()
            .expect("a row")
            .expect("row");
        assert!(row.authority.is_empty());
    }

    #[test]
    fn a_newer_index_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(INDEX),
            r#"{"schema_version": 9, "entries": []}"#,
        )
        .expect("write");
        let err = list(dir.path()).expect_err("newer");
        assert!(matches!(err, CorpusError::Schema { found: 9, .. }), "{err}");
    }
}
