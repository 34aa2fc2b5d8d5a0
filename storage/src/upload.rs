//! The uploader of a writer whose tape lives in an object store.
//!
//! ```text
//!  spool thread ─► seal thread ─► local sealed file  date=…/hour=…/part-<id>.parquet
//!                                        │  (uploader thread polls the local tape directory)
//!                                        ▼
//!                     PUT <prefix>/date=…/hour=…/part-<id>.parquet, HEAD: size matches?
//!                                        │ yes                        │ no / error
//!                                        ▼                            ▼
//!                              delete the local file         keep it, count the failure,
//!                                                            retry after a capped backoff
//! ```
//!
//! Invariants:
//! - Recording never waits for the network: the uploader is its own thread and only reads files
//!   the sealer has finished (final names appear atomically; a sealed file whose segment is still
//!   in the spool may be re-sealed, so it waits).
//! - A local sealed file is deleted only after the store confirmed the object (`PUT` succeeded
//!   and `HEAD` reports the same size). A crash at any point leaves the file local or uploads it
//!   twice under the same key (idempotent): nothing is lost.
//! - Files left by an earlier writer in the same local directory are uploaded at open.
//! - On close the uploader tries for a bounded time; what it could not upload stays in the local
//!   directory (counted in [`WriterStats::upload_pending`](crate::WriterStats::upload_pending)
//!   and logged with the directory) and is uploaded by the next writer that opens it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::{Result, StorageError};
use crate::layout::{SEALED_EXT, SPOOL_DIR};
use crate::object::Remote;

/// Counters of an uploader, shared with the writer's stats.
#[derive(Debug, Default)]
pub(crate) struct UploadCounters {
    pub(crate) files: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// The destination URL, set when the writer uploads.
    pub(crate) url: OnceLock<String>,
}

/// How the uploader waits and retries.
#[derive(Debug, Clone)]
pub(crate) struct UploadSettings {
    /// Time between scans of the local directory when all is well.
    pub(crate) poll: Duration,
    /// First wait after a failed upload; doubles per failure up to `retry_max`.
    pub(crate) retry_min: Duration,
    /// Longest wait between retries.
    pub(crate) retry_max: Duration,
    /// How long `close` keeps trying to upload what is left.
    pub(crate) close_timeout: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(10),
            close_timeout: Duration::from_secs(30),
        }
    }
}

enum Cmd {
    Finish { done: SyncSender<usize> },
}

/// A running uploader thread.
#[derive(Debug)]
pub(crate) struct Uploader {
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
    url: String,
}

impl Uploader {
    pub(crate) fn start(
        dir: PathBuf,
        remote: Remote,
        settings: UploadSettings,
        counters: Arc<UploadCounters>,
    ) -> Result<Uploader> {
        let (tx, rx) = mpsc::channel();
        let url = remote.url().to_owned();
        let _ = counters.url.set(url.clone());
        let worker = Worker {
            dir: dir.clone(),
            remote,
            settings,
            counters,
        };
        let thread = std::thread::Builder::new()
            .name("tape-upload".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StorageError::io("spawn upload thread for", &dir, e))?;
        Ok(Uploader {
            tx,
            thread: Some(thread),
            dir,
            url,
        })
    }

    /// Uploads what is left (bounded by the close timeout) and stops. Returns how many sealed
    /// files stay local.
    pub(crate) fn finish(&mut self) -> usize {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let left = if self.tx.send(Cmd::Finish { done: done_tx }).is_ok() {
            done_rx.recv().unwrap_or(0)
        } else {
            0
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if left > 0 {
            warn!(
                files = left,
                dir = %self.dir.display(),
                url = %self.url,
                "sealed files could not be uploaded before close; they stay in the local directory and are uploaded when a writer opens it again"
            );
        }
        left
    }
}

struct Worker {
    dir: PathBuf,
    remote: Remote,
    settings: UploadSettings,
    counters: Arc<UploadCounters>,
}

impl Worker {
    fn run(self, rx: Receiver<Cmd>) {
        let mut backoff = self.settings.retry_min;
        let mut wait = Duration::ZERO;
        loop {
            match rx.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Cmd::Finish { done }) => {
                    let left = self.drain(backoff);
                    let _ = done.send(left);
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.pass(None) {
                backoff = self.settings.retry_min;
                wait = self.settings.poll;
            } else {
                wait = backoff;
                backoff = (backoff * 2).min(self.settings.retry_max);
            }
        }
    }

    /// Final passes on close (the sealer has stopped), until nothing is left or the close
    /// timeout has passed; then the partition directories left empty are removed (not while
    /// recording: the sealer may be about to write into one).
    fn drain(&self, backoff: Duration) -> usize {
        let left = self.drain_files(backoff);
        remove_empty_dirs(&self.dir, &self.dir);
        left
    }

    fn drain_files(&self, mut backoff: Duration) -> usize {
        let deadline = Instant::now() + self.settings.close_timeout;
        // Bounded by the deadline; the count bound is a second guard.
        for _ in 0..10_000 {
            if self.pass(Some(deadline)) {
                return 0;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(self.settings.retry_max);
        }
        let left = self.ready_files().map(|f| f.len()).unwrap_or(0);
        self.counters.pending.store(left as u64, Ordering::Relaxed);
        left
    }

    /// One scan and upload of every ready file. `true` when nothing is left to upload.
    fn pass(&self, deadline: Option<Instant>) -> bool {
        let files = match self.ready_files() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, dir = %self.dir.display(), "cannot list sealed files to upload");
                return false;
            }
        };
        let c = &self.counters;
        c.pending.store(files.len() as u64, Ordering::Relaxed);
        for (path, rel) in files {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            match self.remote.upload_file(&path, &rel) {
                Ok(bytes) => {
                    if let Err(e) = fs::remove_file(&path) {
                        warn!(error = %e, file = %path.display(), "uploaded, but cannot delete the local copy");
                        c.failures.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    c.files.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(bytes, Ordering::Relaxed);
                    c.pending.fetch_sub(1, Ordering::Relaxed);
                    if let Ok(mut g) = c.last_error.lock() {
                        *g = None;
                    }
                    debug!(file = %path.display(), bytes, url = %self.remote.url(), key = %rel, "uploaded sealed file");
                }
                Err(e) => {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, file = %path.display(), "upload failed; the file stays local and is retried");
                    if let Ok(mut g) = c.last_error.lock() {
                        *g = Some(e.to_string());
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Sealed files that are complete and final: `*.parquet` outside `spool/`, not temp files
    /// (`.`-prefixed), and not made from a segment still in the spool (which may be re-sealed).
    /// Returned with their slash-separated key relative to the tape directory, oldest first.
    fn ready_files(&self) -> Result<Vec<(PathBuf, String)>> {
        let live: std::collections::HashSet<String> =
            crate::writer::list_segments(&self.dir.join(SPOOL_DIR))
                .map_err(|e| StorageError::io("list", self.dir.join(SPOOL_DIR), e))?
                .iter()
                .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
                .collect();
        let mut out = Vec::new();
        walk(&self.dir, &mut out)?;
        out.retain(|(p, _)| {
            crate::layout::segment_of_sealed(p).is_none_or(|id| !live.contains(id))
        });
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }
}

fn walk(root: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    if !root.exists() {
        return Ok(()); // nothing sealed yet
    }
    let (spool, ext) = (root.join(SPOOL_DIR), format!(".{SEALED_EXT}"));
    crate::layout::walk_files(root, &mut |d| d != spool, &mut |path, name| {
        if !name.ends_with(&ext) {
            return;
        }
        if let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str) {
            let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
            out.push((path, rel));
        }
    })
}

/// Removes the empty directories under `dir` (post-order, best effort), never `root` itself nor
/// the spool directory.
fn remove_empty_dirs(root: &Path, dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && !(dir == root && entry.file_name() == SPOOL_DIR)
        {
            remove_empty_dirs(root, &path);
            let _ = fs::remove_dir(&path); // fails, as it should, when not empty
        }
    }
}

/// Logs once at start where a remote writer spools.
pub(crate) fn log_start(dir: &Path, url: &str) {
    info!(dir = %dir.display(), url, "tape goes to an object store; spooling and sealing locally, uploading sealed files");
}
