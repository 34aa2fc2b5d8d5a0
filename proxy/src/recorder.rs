//! [`Recorder`]: opens the tape, starts the admin listener and the chosen engine, and on
//! `SIGTERM`/`SIGINT` (once the engine has stopped) drains the hand-off and seals the tape before
//! returning.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tapedeck_common::Redactor;
use tapedeck_storage::{StorageError, TapeWriter, WhenFull, WriterStats};
use tracing::{error, info, warn};

use tapedeck_common::net::BindError;

use crate::admin::{AdminServer, AdminState};
use crate::capture::{
    Capture, CaptureParts, Handoff, PendingTape, Sink, TapeSink, queue_bytes_split,
};
use crate::config::Settings;
use crate::engine::{self, Engine, Readiness};
use crate::metrics::{Counts, Metrics};

/// Why the recorder could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A listener address is taken or not ours to bind.
    #[error(transparent)]
    Bind(#[from] tapedeck_common::net::BindError),
    /// Another recorder holds the tape directory.
    #[error("tape {dir} is in use by another writer")]
    TapeInUse {
        /// The tape directory.
        dir: PathBuf,
    },
    /// The tape location cannot be used (bad URL, object-store settings that can never work).
    #[error("cannot record to this tape: {source}")]
    Location {
        /// The tape as given.
        location: PathBuf,
        /// The storage error.
        #[source]
        source: StorageError,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load TLS certificate {cert} / key {key}: {message}")]
    Tls {
        /// Certificate path.
        cert: PathBuf,
        /// Key path.
        key: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A thread or runtime of the recorder could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What could not start.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Closing the tape failed (what was spooled stays recoverable).
    #[error("closing tape {dir}: {source}")]
    Close {
        /// The tape directory.
        dir: PathBuf,
        /// The storage error.
        #[source]
        source: StorageError,
    },
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The final counters of what became of each request: the same reading `/metrics` renders
    /// (every drop and skip reason included).
    pub counts: Counts,
    /// The tape writer's final counters (when a tape was open).
    pub writer: Option<WriterStats>,
}

/// The recording proxy, configured and ready to [`run`](Recorder::run).
#[derive(Debug)]
pub struct Recorder {
    settings: Settings,
    redactor: Option<Arc<dyn Redactor>>,
}

impl Recorder {
    /// A recorder with the built-in redactor from `settings`.
    pub fn new(settings: Settings) -> Self {
        Recorder {
            settings,
            redactor: None,
        }
    }

    /// Replaces the built-in redactor with a custom one.
    pub fn redactor(mut self, r: Arc<dyn Redactor>) -> Self {
        self.redactor = Some(r);
        self
    }

    /// Runs until `SIGTERM` (graceful: stop accepting, finish in-flight exchanges for the grace
    /// period) or `SIGINT` (fast), then flushes and seals the tape. Blocks the calling thread;
    /// the engines build their own runtimes, so call it from a plain thread, not from async code.
    pub fn run(self) -> Result<RunSummary, RecordError> {
        let s = self.settings;
        check_bind("proxy", s.listen)?;
        let batch = s.engine.handoff_batch();
        let writer_bytes = queue_bytes_split(s.queue_bytes, s.threads, batch).0;
        if s.tape.is_some() && writer_bytes < 2 * s.max_body {
            warn!(
                queue_bytes = s.queue_bytes,
                max_body = s.max_body,
                "queue-bytes leaves the writer's queue less than twice max-body: exchanges with large bodies will not fit and will be dropped"
            );
        }
        let admin_listener = match s.admin {
            Some(addr) => Some(TcpListener::bind(addr).map_err(BindError::on("admin", addr))?),
            None => None,
        };

        let metrics = Arc::new(Metrics::default());
        let mut opened: Option<Opened> = None;
        let mut retry: Option<Retry> = None;
        let sink = match &s.tape {
            None => Sink::Off,
            Some(dir) => match open_tape(&s, dir, batch, &metrics) {
                Ok(o) => {
                    let sink = Sink::Tape(o.sink.clone());
                    opened = Some(o);
                    sink
                }
                Err(OpenError::Fatal(e)) => return Err(e),
                Err(OpenError::Unavailable(why)) => {
                    // Fail open: traffic flows, records are dropped and counted, /healthz says
                    // why, and a background thread retries until the tape can be written.
                    error!(tape = %dir.display(), error = %why, "cannot open the tape; forwarding without recording until it can be");
                    let pending = Arc::new(PendingTape::new(why));
                    retry = Some(Retry::start(
                        s.clone(),
                        dir.clone(),
                        pending.clone(),
                        batch,
                        metrics.clone(),
                    ));
                    Sink::Unavailable(pending)
                }
            },
        };

        let redactor: Arc<dyn Redactor> = match self.redactor {
            Some(r) => r,
            None => Arc::new(s.redactor.clone()),
        };
        let capture = Arc::new(Capture::new(CaptureParts {
            source: s.source.clone(),
            tls_listener: s.tls.is_some(),
            max_body: s.max_body,
            sampler: s.sampler.clone(),
            redactor,
            metrics: metrics.clone(),
            sink: sink.clone(),
            trace: s.trace.clone(),
        }));
        let readiness = Arc::new(Readiness::default());
        let admin = match admin_listener {
            Some(l) => Some(
                AdminServer::start(
                    l,
                    Arc::new(AdminState {
                        metrics: metrics.clone(),
                        sink,
                        readiness: readiness.clone(),
                    }),
                )
                .map_err(|source| RecordError::Start {
                    what: "the admin listener",
                    source,
                })?,
            ),
            None => None,
        };
        info!(
            listen = %s.listen,
            upstream = s.upstream.as_ref().map_or("-", |u| u.authority.as_str()),
            forward = s.forward,
            tape = ?s.tape,
            admin = ?s.admin,
            threads = s.threads,
            engine = s.engine.name(),
            "recording proxy started"
        );
        // Grown once now rather than by doubling while connections arrive: each growth stalled
        // a worker, and every connection on it, for 5–10 ms.
        tapedeck_common::net::reserve_fd_table(tapedeck_common::net::SERVER_FD_TABLE);
        let served = match s.engine {
            Engine::Hyper => engine::hyper::run(&s, capture, readiness),
            Engine::Pingora => engine::pingora::run(&s, capture, readiness),
        };

        // Whatever happened, what was recorded is sealed.
        if let Some(r) = retry {
            opened = r.stop();
        }
        let mut writer = None;
        let mut closed = Ok(());
        if let Some(Opened { writer: w, .. }) = opened {
            let dir = w.dir().to_owned();
            match w.close() {
                Ok(stats) => {
                    info!(tape = %dir.display(), written = stats.written, files = stats.files_sealed, "tape sealed");
                    writer = Some(stats);
                }
                Err(source) => closed = Err(RecordError::Close { dir, source }),
            }
        }
        if let Some(a) = admin {
            a.stop();
        }
        served?;
        closed?;
        // The same reading of the same counters as `/metrics`, taken once nothing moves.
        let counts = metrics.counts(writer.as_ref());
        if counts.dropped_total() > 0 {
            warn!(
                dropped = counts.dropped_total(),
                "some exchanges were not recorded"
            );
        }
        Ok(RunSummary { counts, writer })
    }
}

/// How long a tape that could not be opened waits between attempts.
const TAPE_RETRY: Duration = Duration::from_secs(2);

/// An open tape: the writer and the sink the proxy uses.
#[derive(Debug)]
struct Opened {
    writer: TapeWriter,
    sink: TapeSink,
}

enum OpenError {
    /// Not worth retrying (another recorder owns the tape).
    Fatal(RecordError),
    /// The disk refuses for now.
    Unavailable(String),
}

fn open_tape(
    s: &Settings,
    dir: &Path,
    batch: usize,
    metrics: &Arc<Metrics>,
) -> Result<Opened, OpenError> {
    let (writer_bytes, batch_bytes) = queue_bytes_split(s.queue_bytes, s.threads, batch);
    let writer = TapeWriter::builder(dir)
        .when_full(WhenFull::Drop)
        .queue_capacity(s.queue_capacity)
        .queue_bytes(writer_bytes)
        .seal_backlog(s.seal_backlog)
        .flush_interval(s.flush_interval)
        .metadata(
            "tapedeck.recorder.upstream",
            s.upstream
                .as_ref()
                .map_or_else(|| "forward".to_owned(), |u| u.authority.clone()),
        )
        .metadata("tapedeck.recorder.source", s.source.clone())
        .open()
        .map_err(|e| match e {
            StorageError::InUse { dir } => OpenError::Fatal(RecordError::TapeInUse { dir }),
            // A location that cannot work (bad URL, plain HTTP not allowed…) never heals by
            // retrying: refuse to start rather than forward without recording forever.
            source @ StorageError::BadLocation { .. } => OpenError::Fatal(RecordError::Location {
                location: dir.to_owned(),
                source,
            }),
            e => OpenError::Unavailable(format!("cannot open tape: {e}")),
        })?;
    let sender = writer.sender();
    let handoff = Handoff::new(sender.clone(), batch, batch_bytes, metrics.clone());
    Ok(Opened {
        writer,
        sink: TapeSink { handoff, sender },
    })
}

/// The thread that retries opening a tape that failed at start.
struct Retry {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<Opened>>,
}

impl Retry {
    fn start(
        s: Settings,
        dir: PathBuf,
        pending: Arc<PendingTape>,
        batch: usize,
        metrics: Arc<Metrics>,
    ) -> Retry {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::park_timeout(TAPE_RETRY);
                if flag.load(Ordering::Acquire) {
                    break;
                }
                match open_tape(&s, &dir, batch, &metrics) {
                    Ok(o) => {
                        info!(tape = %dir.display(), "tape opened; recording");
                        pending.set_ready(o.sink.clone());
                        return Some(o);
                    }
                    Err(OpenError::Fatal(e)) => {
                        pending.set_reason(e.to_string());
                    }
                    Err(OpenError::Unavailable(why)) => pending.set_reason(why),
                }
            }
            None
        });
        Retry { stop, thread }
    }

    /// Stops retrying; returns the tape if it was opened meanwhile.
    fn stop(self) -> Option<Opened> {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        self.thread.join().ok().flatten()
    }
}

fn check_bind(what: &'static str, addr: SocketAddr) -> Result<(), RecordError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(BindError::on(what, addr))
        .map_err(RecordError::from)
}
