//! [`Recorder`]: opens the tape, starts pingora with the recording proxy and the admin listener,
//! and on `SIGTERM`/`SIGINT` flushes and seals the tape before returning.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use tapedeck_storage::{StorageError, TapeWriter, WhenFull, WriterStats};
use tracing::{error, info, warn};

use crate::admin::AdminApp;
use crate::batch::{Batcher, Forwarder};
use crate::config::Settings;
use crate::head_deadline::{HeadDeadline, HeadLimits};
use crate::metrics::{Counts, Metrics};
use crate::proxy::{PendingTape, ProxyParts, RecordingProxy, Sink, TapeSink};
use tapedeck_common::Redactor;

/// Why the recorder could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A listener address is taken or not ours to bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `proxy` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
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
    /// The batching thread could not be started.
    #[error("cannot start the tape hand-off thread for {dir}: {source}")]
    Thread {
        /// The tape directory.
        dir: PathBuf,
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
    /// The tape writer's final counters, its hand-off included (when a tape was open).
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
    /// pingora builds its own runtimes, so call it from a plain thread, not from async code.
    pub fn run(self) -> Result<RunSummary, RecordError> {
        let s = self.settings;
        check_bind("proxy", s.listen)?;
        if let Some(a) = s.admin {
            check_bind("admin", a)?;
        }

        let mut opened: Option<Opened> = None;
        let mut retry: Option<Retry> = None;
        let sink = match &s.tape {
            None => Sink::Off,
            Some(dir) => match open_tape(&s, dir) {
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
                    retry = Some(Retry::start(s.clone(), dir.clone(), pending.clone()));
                    Sink::Unavailable(pending)
                }
            },
        };

        let metrics = Arc::new(Metrics::default());
        let redactor: Arc<dyn Redactor> = match self.redactor {
            Some(r) => r,
            None => Arc::new(s.redactor.clone()),
        };
        let proxy = RecordingProxy::new(ProxyParts {
            upstream: s.upstream.clone(),
            upstream_verify: s.upstream_verify,
            upstream_h2c: s.upstream_h2c,
            connect_timeout: s.connect_timeout,
            upstream_timeout: s.upstream_timeout,
            read_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            tls_listener: s.tls.is_some(),
            source: s.source.clone(),
            max_body: s.max_body,
            sink: sink.clone(),
            redactor,
            sampler: s.sampler.clone(),
            metrics: metrics.clone(),
        });

        let run_dir = std::env::temp_dir();
        let pid = std::process::id();
        let conf = ServerConf {
            threads: s.threads,
            grace_period_seconds: Some(s.grace_period.as_secs_f64().ceil() as u64),
            graceful_shutdown_timeout_seconds: Some(2),
            pid_file: run_dir
                .join(format!("tapedeck-record-{pid}.pid"))
                .to_string_lossy()
                .into_owned(),
            upgrade_sock: run_dir
                .join(format!("tapedeck-record-{pid}.sock"))
                .to_string_lossy()
                .into_owned(),
            max_retries: 2,
            work_stealing: std::env::var_os("TAPEDECK_WORK_STEALING").is_some(),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        let mut opts = HttpServerOptions::default();
        opts.h2c = s.h2c;
        opts.h2_idle_timeout = Some(s.idle_timeout);
        // pingora's HttpProxy, run behind the whole-request-head deadline (slowloris).
        let mut app = HttpProxy::new(proxy, server.configuration.clone());
        app.server_options = Some(opts);
        app.handle_init_modules();
        let app = HeadDeadline::new(
            app,
            HeadLimits {
                header_timeout: s.header_timeout,
                metrics: metrics.clone(),
            },
        );
        let mut svc = Service::new("tapedeck record".to_owned(), app);
        let listen = s.listen.to_string();
        match &s.tls {
            None => svc.add_tcp(&listen),
            Some(t) => {
                let tls_err = |message: String| RecordError::Tls {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    message,
                };
                let mut tls =
                    TlsSettings::intermediate(&t.cert.to_string_lossy(), &t.key.to_string_lossy())
                        .map_err(|e| tls_err(e.to_string()))?;
                tls.enable_h2();
                svc.add_tls_with_settings(&listen, None, tls);
            }
        }
        server.add_service(svc);
        if let Some(a) = s.admin {
            let mut admin = Service::new(
                "tapedeck admin".to_owned(),
                AdminApp::new(metrics.clone(), sink),
            );
            admin.threads = Some(1);
            admin.add_tcp(&a.to_string());
            server.add_service(admin);
        }
        info!(
            listen = %s.listen,
            upstream = %s.upstream.authority,
            tape = ?s.tape,
            admin = ?s.admin,
            threads = s.threads,
            "recording proxy started"
        );
        server.run(RunArgs::default());

        if let Some(r) = retry {
            opened = r.stop();
        }
        let mut writer = None;
        if let Some(Opened {
            writer: w,
            forwarder,
            sink,
        }) = opened
        {
            forwarder.finish();
            let dir = w.dir().to_owned();
            let mut stats = w.close().map_err(|source| RecordError::Close {
                dir: dir.clone(),
                source,
            })?;
            sink.batcher.add_to(&mut stats);
            info!(tape = %dir.display(), written = stats.written, files = stats.files_sealed, "tape sealed");
            writer = Some(stats);
        }
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

/// An open tape: the writer, the hand-off thread, and the sink the proxy uses.
#[derive(Debug)]
struct Opened {
    writer: TapeWriter,
    forwarder: Forwarder,
    sink: TapeSink,
}

enum OpenError {
    /// Not worth retrying (another recorder owns the tape).
    Fatal(RecordError),
    /// The disk refuses for now.
    Unavailable(String),
}

fn open_tape(s: &Settings, dir: &Path) -> Result<Opened, OpenError> {
    let writer = TapeWriter::builder(dir)
        .when_full(WhenFull::Drop)
        .queue_capacity(s.queue_capacity)
        .flush_interval(s.flush_interval)
        .metadata("tapedeck.recorder.upstream", s.upstream.authority.clone())
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
    let tick = (s.flush_interval / 10).clamp(Duration::from_millis(5), Duration::from_millis(50));
    let (batcher, forwarder) =
        Batcher::start(sender.clone(), s.queue_capacity, tick).map_err(|source| {
            OpenError::Fatal(RecordError::Thread {
                dir: dir.to_owned(),
                source,
            })
        })?;
    Ok(Opened {
        writer,
        forwarder,
        sink: TapeSink { batcher, sender },
    })
}

/// The thread that retries opening a tape that failed at start.
struct Retry {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<Opened>>,
}

impl Retry {
    fn start(s: Settings, dir: PathBuf, pending: Arc<PendingTape>) -> Retry {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::park_timeout(TAPE_RETRY);
                if flag.load(Ordering::Acquire) {
                    break;
                }
                match open_tape(&s, &dir) {
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
        .map_err(|source| RecordError::Bind { what, addr, source })
}
