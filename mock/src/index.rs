//! The in-memory index of a dependency tape: every recorded answer, grouped so that a live
//! request finds its answer with one hash lookup, and the cursors that serve sequences in order.
//!
//! ```text
//!  route id ("GET /prices/{id}")
//!    ├─ untraced scope: bucket { wildcard mask, hash → classes, all classes }
//!    └─ trace scope:    trace id → the classes of that trace (a handful)
//!  class = recorded requests of one scope with equal shapes, in recorded order, and a cursor
//! ```
//!
//! A *class* holds the recorded exchanges of one scope (the whole tape, or one trace) whose
//! requests have equal [`Shape`]s (wildcards included), ordered by `started_at`. Its cursor is an
//! atomic counter: the n-th live request that lands on the class gets the n-th recorded answer,
//! and once they are used up, the last one again (flagged as a repeat). No lock is taken on the
//! request path; concurrent requests of one trace and key each get their own answer.
//!
//! The index is immutable after [`Index::build`] apart from the cursors, and shared by every
//! worker thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use tapedeck_storage::route::template_path;
use tapedeck_storage::{Exchange, Header, ReadOptions, TRAILER_MARKER, Tape, flags};
use uuid::Uuid;

use crate::MockError;
use crate::shape::{Mask, Normalizer, Shape, Side, matches, similarity};
use crate::spec::UnknownTrace;

/// Headers that describe one connection's framing (hop by hop): never served from a recording
/// (the mock frames its own answer) nor forwarded by the pass-through.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// A recorded answer, ready to serve.
#[derive(Debug)]
pub(crate) struct Answer {
    /// `None`: the recording has no response (the dependency failed); served as a reset.
    pub(crate) status: Option<StatusCode>,
    pub(crate) headers: HeaderMap,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) body: Bytes,
    /// The stored body is not the whole body (cut at the capture cap, or not stored).
    pub(crate) incomplete: bool,
    /// The recorded time until the dependency had sent its whole answer.
    pub(crate) latency: Duration,
    /// The recorded error, for an answer without a response.
    pub(crate) error: Option<String>,
}

/// One recorded exchange.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) id: Uuid,
    pub(crate) answer: Answer,
    shape: Shape,
}

/// Cursors per class: lane 0 for callers without a lane, then up to `LANES - 1` named lanes.
pub(crate) const LANES: usize = 8;

/// The `tracestate` list member that names a caller's lane: `tapedeck=<lane>`.
pub const LANE_KEY: &str = "tapedeck";

/// The lane of a request: 1 + the position of the `tapedeck=<name>` member of its `tracestate`
/// headers in `lanes`; 0 without one, or for a name not in `lanes`. Each lane has its own
/// cursors, so the baseline and the candidate of one replay (which carry the same trace ids)
/// each get a trace's recorded answers in recorded order.
pub fn lane_of<'a>(tracestate: impl Iterator<Item = &'a [u8]>, lanes: &[String]) -> usize {
    for v in tracestate {
        let Ok(v) = std::str::from_utf8(v) else {
            continue;
        };
        for member in v.split(',') {
            if let Some((k, val)) = member.trim().split_once('=')
                && k == LANE_KEY
            {
                return lanes
                    .iter()
                    .take(LANES - 1)
                    .position(|l| l == val)
                    .map_or(0, |i| i + 1);
            }
        }
    }
    0
}

#[derive(Debug)]
struct Class {
    route: u32,
    key: u64,
    /// Recorded exchanges (indices into `Index::recorded`), in recorded order.
    members: Vec<u32>,
    /// The next answer, per lane (see [`lane_of`]).
    next: [AtomicUsize; LANES],
}

impl Class {
    fn shape<'a>(&self, index: &'a Index) -> &'a Shape {
        &index.recorded[self.members[0] as usize].shape
    }

    fn exhausted(&self, lane: usize) -> bool {
        self.next[lane].load(Ordering::Relaxed) >= self.members.len()
    }
}

#[derive(Debug, Default)]
struct Bucket {
    mask: Mask,
    classes: Vec<u32>,
    by_key: HashMap<u64, Vec<u32>>,
}

/// What loading a dependency tape found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Tape files read.
    pub files: usize,
    /// Damaged files skipped (`skip_corrupt`).
    pub skipped_files: Vec<String>,
    /// Recorded exchanges that can be served.
    pub exchanges: usize,
    /// Distinct method + route template pairs.
    pub routes: usize,
    /// Distinct trace ids.
    pub traces: usize,
    /// Recorded exchanges left out: protocol upgrades (only a handshake was recorded).
    pub skipped_upgrades: usize,
    /// Recorded exchanges without a response (the dependency failed): served as resets.
    pub without_response: usize,
    /// Recorded answers whose body is incomplete on the tape (cut or not stored): served as
    /// stored.
    pub incomplete_bodies: usize,
    /// Recorded response headers that are not valid HTTP and are not served.
    pub invalid_headers: usize,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    Hit {
        rec: &'a Recorded,
        /// No recorded request was equal: the closest one answered.
        nearest: bool,
        /// The class's answers were used up: its last one answered again.
        repeat: bool,
    },
    Miss {
        reason: String,
    },
}

/// A live request, as the index sees it.
#[derive(Debug)]
pub(crate) struct Live<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    /// `content-type` and `content-encoding` are all that is read.
    pub(crate) headers: &'a [Header],
    pub(crate) body: &'a Bytes,
}

/// The index of one or more dependency tapes.
#[derive(Debug)]
pub(crate) struct Index {
    recorded: Vec<Recorded>,
    classes: Vec<Class>,
    routes: HashMap<String, u32>,
    buckets: Vec<Bucket>,
    traces: HashMap<Box<str>, Vec<u32>>,
    normalizer: Normalizer,
    report: LoadReport,
    /// The `source` of the first recorded exchange.
    source: Option<String>,
}

fn route_key(method: &str, path: &str) -> String {
    let mut k = method.to_ascii_uppercase();
    k.push(' ');
    k.push_str(&template_path(path));
    k
}

fn answer_of(ex: &Exchange, report: &mut LoadReport) -> Answer {
    let mut headers = HeaderMap::new();
    let mut trailers: Option<HeaderMap> = None;
    let dropped = ex.resp_body.is_empty() && ex.resp_body_truncated && ex.resp_body_size > 0;
    for h in &ex.resp_headers {
        if h.name == TRAILER_MARKER {
            trailers = Some(HeaderMap::new());
            continue;
        }
        let lower = h.name.to_ascii_lowercase();
        if trailers.is_none()
            && (HOP_BY_HOP.contains(&lower.as_str())
                // Recomputed for the answer served.
                || lower == "content-length"
                // An empty body with a coding would not decode: a dropped body goes out plain.
                || (dropped && lower == "content-encoding"))
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) else {
            report.invalid_headers += 1;
            continue;
        };
        match &mut trailers {
            Some(t) => {
                t.append(name, value);
            }
            None => {
                headers.append(name, value);
            }
        }
    }
    let incomplete = ex.resp_body_truncated || (ex.resp_body.len() as u64) < ex.resp_body_size;
    let us = ex
        .duration_us
        .or(ex.total_us)
        .or(ex.ttfb_us)
        .unwrap_or(0)
        .max(0);
    let status = ex.status.and_then(|s| StatusCode::from_u16(s).ok());
    if status.is_none() {
        report.without_response += 1;
    } else if incomplete {
        report.incomplete_bodies += 1;
    }
    Answer {
        status,
        headers,
        trailers: trailers.filter(|t| !t.is_empty()),
        body: ex.resp_body.clone(),
        incomplete,
        latency: Duration::from_micros(us as u64),
        error: status.is_none().then(|| {
            let kind = ex.error_kind.map(|k| k.to_string()).unwrap_or_default();
            match &ex.error {
                Some(e) => format!("{kind}: {e}"),
                None => kind,
            }
        }),
    }
}

impl Index {
    /// Reads every exchange of the tapes (each verified first) and builds the index.
    pub(crate) fn load(
        tapes: &[PathBuf],
        skip_corrupt: bool,
        normalizer: Normalizer,
    ) -> Result<Index, MockError> {
        let mut all = Vec::new();
        let mut files = 0;
        let mut skipped_files = Vec::new();
        for path in tapes {
            let err = |source| MockError::Tape {
                path: path.clone(),
                source,
            };
            let tape = Tape::open(std::slice::from_ref(path)).map_err(err)?;
            let options = ReadOptions {
                skip_corrupt,
                ..ReadOptions::default()
            };
            for s in tape.verify(&options).map_err(err)? {
                skipped_files.push(format!("{}: {}", s.path.display(), s.reason));
            }
            files += tape.files().len();
            let mut scan = tape.scan(options).exchanges();
            for ex in scan.by_ref() {
                all.push(ex.map_err(err)?);
            }
            for s in &scan.report().files_skipped {
                let line = format!("{}: {}", s.path.display(), s.reason);
                if !skipped_files.contains(&line) {
                    skipped_files.push(line);
                }
            }
        }
        let mut index = Index::build(all, normalizer);
        index.report.files = files;
        index.report.skipped_files = skipped_files;
        Ok(index)
    }

    /// Builds the index of `exchanges` (any order: they are put in recorded order).
    pub(crate) fn build(mut exchanges: Vec<Exchange>, normalizer: Normalizer) -> Index {
        exchanges.sort_by(|a, b| {
            a.started_at_us
                .cmp(&b.started_at_us)
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut report = LoadReport::default();
        let mut routes: HashMap<String, u32> = HashMap::new();
        let mut recorded = Vec::with_capacity(exchanges.len());
        let mut meta: Vec<(u32, Option<String>)> = Vec::with_capacity(exchanges.len());
        let source = exchanges.first().map(|e| e.source.to_string());
        for ex in exchanges {
            if ex.has_flag(flags::UPGRADE) {
                report.skipped_upgrades += 1;
                continue;
            }
            let key = route_key(&ex.method, &ex.path);
            let next = routes.len() as u32;
            let route = *routes.entry(key).or_insert(next);
            let shape = normalizer.shape(
                &ex.path,
                ex.query.as_deref(),
                &ex.req_headers,
                &ex.req_body,
                Side::Recorded {
                    truncated: ex.req_body_truncated,
                },
            );
            let answer = answer_of(&ex, &mut report);
            meta.push((route, ex.trace_id.clone()));
            recorded.push(Recorded {
                id: ex.id,
                answer,
                shape,
            });
        }
        let mut buckets: Vec<Bucket> = (0..routes.len()).map(|_| Bucket::default()).collect();
        for (r, (route, _)) in recorded.iter().zip(&meta) {
            buckets[*route as usize].mask.add(&r.shape);
        }
        let mut classes: Vec<Class> = Vec::new();
        let mut traces: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        // (scope: 0 = untraced, n = the n-th trace; route; key) → classes.
        let mut grouping: HashMap<(u32, u32, u64), Vec<u32>> = HashMap::new();
        let mut trace_ids: HashMap<String, u32> = HashMap::new();
        for (i, (route, trace)) in meta.iter().enumerate() {
            let key = recorded[i].shape.key(&buckets[*route as usize].mask);
            let mut scopes = vec![0u32];
            if let Some(t) = trace {
                let n = trace_ids.len() as u32 + 1;
                scopes.push(*trace_ids.entry(t.clone()).or_insert(n));
            }
            for scope in scopes {
                let group = grouping.entry((scope, *route, key)).or_default();
                let existing = group.iter().copied().find(|c| {
                    recorded[classes[*c as usize].members[0] as usize].shape == recorded[i].shape
                });
                match existing {
                    Some(c) => classes[c as usize].members.push(i as u32),
                    None => {
                        let id = classes.len() as u32;
                        classes.push(Class {
                            route: *route,
                            key,
                            members: vec![i as u32],
                            next: [const { AtomicUsize::new(0) }; LANES],
                        });
                        group.push(id);
                        if scope == 0 {
                            let b = &mut buckets[*route as usize];
                            b.classes.push(id);
                            b.by_key.entry(key).or_default().push(id);
                        } else if let Some(t) = trace {
                            traces.entry(t.as_str().into()).or_default().push(id);
                        }
                    }
                }
            }
        }
        report.exchanges = recorded.len();
        report.routes = routes.len();
        report.traces = traces.len();
        Index {
            recorded,
            classes,
            routes,
            buckets,
            traces,
            normalizer,
            report,
            source,
        }
    }

    /// The `source` label of the first recorded exchange.
    pub(crate) fn first_source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// What loading found.
    pub(crate) fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Whether any recorded exchange carries a trace id (else requests are never scoped).
    pub(crate) fn traced(&self) -> bool {
        !self.traces.is_empty()
    }

    /// Every sequence starts again at its first recorded answer.
    pub(crate) fn rewind(&self) {
        for c in &self.classes {
            for n in &c.next {
                n.store(0, Ordering::Relaxed);
            }
        }
    }

    /// The recorded answer for a live request (see the crate docs for the rules).
    pub(crate) fn lookup(
        &self,
        live: &Live<'_>,
        trace: Option<&str>,
        unknown: UnknownTrace,
        lane: usize,
    ) -> Lookup<'_> {
        let lane = lane.min(LANES - 1);
        let key = route_key(live.method, live.path);
        let Some(&route) = self.routes.get(&key) else {
            return Lookup::Miss {
                reason: format!("no recorded {key}"),
            };
        };
        let bucket = &self.buckets[route as usize];
        let shape =
            self.normalizer
                .shape(live.path, live.query, live.headers, live.body, Side::Live);
        let hash = shape.key(&bucket.mask);
        let scoped = match trace.filter(|_| self.traced()) {
            None => None,
            Some(t) => match self.traces.get(t) {
                Some(classes) => Some((t, classes)),
                None => match unknown {
                    UnknownTrace::Miss => {
                        return Lookup::Miss {
                            reason: format!("trace {t} is not on the tape"),
                        };
                    }
                    UnknownTrace::Untraced => None,
                },
            },
        };
        match scoped {
            Some((t, classes)) => {
                let in_route = || {
                    classes
                        .iter()
                        .copied()
                        .filter(|c| self.classes[*c as usize].route == route)
                };
                let exact = in_route().filter(|c| self.classes[*c as usize].key == hash);
                if let Some(hit) = self.serve_best(exact, &shape, false, lane) {
                    return hit;
                }
                match self.serve_best(in_route(), &shape, true, lane) {
                    Some(hit) => hit,
                    None => Lookup::Miss {
                        reason: format!("trace {t} made no recorded {key} call"),
                    },
                }
            }
            None => {
                let exact = bucket.by_key.get(&hash).into_iter().flatten().copied();
                if let Some(hit) = self.serve_best(exact, &shape, false, lane) {
                    return hit;
                }
                self.serve_best(bucket.classes.iter().copied(), &shape, true, lane)
                    .unwrap_or_else(|| Lookup::Miss {
                        reason: format!("no recorded {key}"),
                    })
            }
        }
    }

    /// Serves the best of `candidates`: with `nearest` false, the classes whose shape matches
    /// (unused answers first, then the fewest wildcards, then the earliest recorded); with
    /// `nearest` true, the class with the highest [`similarity`] (ties: the earliest).
    fn serve_best(
        &self,
        candidates: impl Iterator<Item = u32>,
        live: &Shape,
        nearest: bool,
        lane: usize,
    ) -> Option<Lookup<'_>> {
        let mut best: Option<(u32, (bool, f64, u32))> = None;
        for c in candidates {
            let class = &self.classes[c as usize];
            let rank = if nearest {
                // Higher similarity first: negate so that smaller ranks are better.
                (
                    false,
                    -similarity(class.shape(self), live),
                    class.members[0],
                )
            } else {
                let Some(uses) = matches(class.shape(self), live) else {
                    continue;
                };
                (class.exhausted(lane), f64::from(uses), class.members[0])
            };
            if best.as_ref().is_none_or(|(_, b)| rank < *b) {
                best = Some((c, rank));
            }
        }
        let (c, _) = best?;
        let class = &self.classes[c as usize];
        let i = class.next[lane].fetch_add(1, Ordering::Relaxed);
        let (member, repeat) = match class.members.get(i) {
            Some(m) => (*m, false),
            None => (*class.members.last()?, true),
        };
        Some(Lookup::Hit {
            rec: &self.recorded[member as usize],
            nearest,
            repeat,
        })
    }
}

#[cfg(test)]
mod tests;
