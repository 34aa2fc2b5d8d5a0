//! Reading tapes: discovery of files, projection, filters pushed down to partitions and row-group
//! statistics, and streaming in bounded memory.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderBuilder, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use serde::Serialize;

use crate::error::{Result, StorageError};
use crate::exchange::Exchange;
use crate::layout::{self, SEALED_EXT, SEGMENT_EXT, SPOOL_DIR};
use crate::object::{self, Remote};
use crate::schema::{self, col};
use crate::spool::SegmentReader;

mod footer;
mod prune;
use footer::{RemoteStream, footer_kv, open_parquet_footer, open_remote_footer};
use prune::{apply_filter, filter_columns, row_group_may_match};

/// Which exchanges to read. Every condition must hold. Conditions are pushed down: whole hour
/// partitions and Parquet row groups whose statistics rule them out are never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only exchanges that started at or after this time (µs since the epoch).
    pub from_us: Option<i64>,
    /// Only exchanges that started before this time (µs since the epoch).
    pub to_us: Option<i64>,
    /// Only these methods (exact, case-sensitive as recorded); empty means all.
    pub methods: Vec<String>,
    /// Only paths starting with this prefix.
    pub path_prefix: Option<String>,
}

impl Filter {
    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn time_overlaps(&self, lo: i64, hi_inclusive: i64) -> bool {
        self.from_us.is_none_or(|f| hi_inclusive >= f) && self.to_us.is_none_or(|t| lo < t)
    }

    /// Whether one exchange passes the filter.
    pub fn matches(&self, ex: &Exchange) -> bool {
        self.time_overlaps(ex.started_at_us, ex.started_at_us)
            && (self.methods.is_empty() || self.methods.iter().any(|m| *m == ex.method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| ex.path.starts_with(p))
    }
}

/// How to read a tape.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Columns to read (by name); `None` reads all. Columns the filter needs are read as well.
    pub columns: Option<Vec<String>>,
    /// Rows to select.
    pub filter: Filter,
    /// Rows per batch handed out (bounds memory together with the body capture cap).
    pub batch_size: usize,
    /// Skip damaged files (reporting them) instead of stopping at the first.
    pub skip_corrupt: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            columns: None,
            filter: Filter::default(),
            batch_size: 512,
            skip_corrupt: false,
        }
    }
}

/// The kind of a file in a tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A sealed zstd Parquet file.
    Sealed,
    /// An Arrow IPC stream spool segment (being written, or left by a crash).
    Spool,
}

/// One file of a tape.
#[derive(Debug, Clone, Serialize)]
pub struct TapeFile {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: FileKind,
    /// Its size on disk (or in the object store).
    pub bytes: u64,
    /// The store and key, for a file in an object store (its `path` is then its URL).
    #[serde(skip)]
    pub(crate) remote: Option<RemoteFile>,
}

/// Where a tape file in an object store is.
#[derive(Debug, Clone)]
pub(crate) struct RemoteFile {
    pub(crate) remote: Remote,
    pub(crate) key: object_store::path::Path,
}

/// A file that was not (fully) read, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// What a scan read, pruned and skipped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadReport {
    /// Files read (fully or in part).
    pub files_read: usize,
    /// Files whose partition or statistics ruled them out.
    pub files_pruned: usize,
    /// Parquet row groups read.
    pub row_groups_read: usize,
    /// Parquet row groups ruled out by their statistics.
    pub row_groups_pruned: usize,
    /// Rows handed out (after filtering).
    pub rows: u64,
    /// Damaged files skipped (`skip_corrupt`) or moved aside by a writer (`.corrupt`).
    pub files_skipped: Vec<SkippedFile>,
    /// Spool segments that end in a partial batch (a crash or a failed write): every complete
    /// batch before it was read.
    pub partial_segments: Vec<SkippedFile>,
}

/// A tape: the set of files found at one or more paths.
#[derive(Debug, Clone)]
pub struct Tape {
    files: Vec<TapeFile>,
    quarantined: Vec<PathBuf>,
}

impl Tape {
    /// Finds the tape files at `paths`: each a sealed `.parquet` file, a spool `.arrows` segment,
    /// or a directory searched recursively. Sealed files made from a segment that is still in
    /// the spool are left out (the segment is the truth; see the writer's invariants).
    ///
    /// A path may also be an object-store URL (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///abs/path`; see [`object`](crate::object)): the sealed `.parquet` objects under
    /// the prefix (or the one object the URL names) are part of the tape, read with the same
    /// pruning and projection as local files.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Tape> {
        let mut sealed = Vec::new();
        let mut spool = Vec::new();
        let mut quarantined = Vec::new();
        let mut remote_files = Vec::new();
        for p in paths {
            let p = p.as_ref();
            if object::path_is_url(p) {
                list_remote(p, &mut remote_files)?;
                continue;
            }
            let md = fs::metadata(p).map_err(|e| StorageError::io("open", p, e))?;
            if md.is_dir() {
                let before = sealed.len() + spool.len();
                walk(p, &mut sealed, &mut spool, &mut quarantined)?;
                let found_any = sealed.len() + spool.len() > before;
                if !found_any && !p.join(SPOOL_DIR).is_dir() {
                    return Err(StorageError::NoTape { path: p.to_owned() });
                }
            } else {
                match p.extension().and_then(|e| e.to_str()) {
                    Some(SEGMENT_EXT) => spool.push(p.to_owned()),
                    _ => sealed.push(p.to_owned()),
                }
            }
        }
        let live: HashSet<String> = spool
            .iter()
            .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
            .collect();
        sealed.retain(|p| layout::segment_of_sealed(p).is_none_or(|id| !live.contains(id)));
        sealed.sort();
        sealed.dedup();
        spool.sort();
        spool.dedup();
        let mut files = Vec::with_capacity(sealed.len() + spool.len() + remote_files.len());
        for path in sealed {
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            files.push(TapeFile {
                path,
                kind: FileKind::Sealed,
                bytes,
                remote: None,
            });
        }
        files.append(&mut remote_files);
        for path in spool {
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            files.push(TapeFile {
                path,
                kind: FileKind::Spool,
                bytes,
                remote: None,
            });
        }
        Ok(Tape { files, quarantined })
    }

    /// The files found, sealed first (by partition), then spool segments (oldest first).
    pub fn files(&self) -> &[TapeFile] {
        &self.files
    }

    /// Total bytes of the tape's files.
    pub fn bytes_on_disk(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Starts a streaming scan.
    pub fn scan(&self, options: ReadOptions) -> TapeScan {
        let mut report = ReadReport::default();
        for q in &self.quarantined {
            report.files_skipped.push(SkippedFile {
                path: q.clone(),
                reason: "spool segment moved aside by the writer as unreadable".into(),
            });
        }
        TapeScan {
            pending: self.files.iter().cloned().collect(),
            current: None,
            columns: options.columns.as_ref().map(|cols| {
                let mut c: Vec<String> = cols.clone();
                for needed in filter_columns(&options.filter) {
                    if !c.iter().any(|x| x == needed) {
                        c.push(needed.to_owned());
                    }
                }
                c
            }),
            options,
            report,
            failed: false,
        }
    }

    /// Streams every exchange (all columns) that passes `filter`.
    pub fn exchanges(&self, filter: Filter) -> ExchangeIter {
        self.scan(ReadOptions {
            filter,
            ..ReadOptions::default()
        })
        .exchanges()
    }

    /// Checks, before anything is streamed, every file a [`scan`](Tape::scan) with `options`
    /// would open (partitions outside the filter's time range are left out, as the scan leaves
    /// them): a sealed file's Parquet footer (readable, schema version, schema, column chunks
    /// inside the file) and a spool segment's stream header (schema version, schema). Reads no
    /// row data, so it costs one footer or header read per file, and damage inside data pages
    /// is still only found (and reported the same way) by the scan itself.
    ///
    /// Without `options.skip_corrupt` the first damaged file is the error (it names the file);
    /// with it, the damaged files are returned (the scan will skip them again and list them in
    /// its [`ReadReport`]). Errors that are not damage (a file that cannot be opened) are
    /// always errors.
    pub fn verify(&self, options: &ReadOptions) -> Result<Vec<SkippedFile>> {
        let mut damaged = Vec::new();
        for file in &self.files {
            if file.kind == FileKind::Sealed
                && let Some((lo, hi)) = layout::partition_range(&file.path)
                && !options.filter.time_overlaps(lo, hi - 1)
            {
                continue;
            }
            let checked = match (&file.remote, file.kind) {
                (Some(r), _) => open_remote_footer(r, file).map(drop),
                (None, FileKind::Sealed) => open_parquet_footer(&file.path).map(drop),
                (None, FileKind::Spool) => SegmentReader::open(&file.path, None).map(drop),
            };
            match checked {
                Ok(()) => {}
                Err(e) if options.skip_corrupt && e.is_file_damage() => {
                    tracing::warn!(error = %e, "damaged tape file will be skipped");
                    damaged.push(SkippedFile {
                        path: file.path.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(damaged)
    }

    /// Key-value metadata of the tape's first non-empty file (a sealed file's Parquet footer or
    /// a spool segment's schema): what its writer was given with
    /// [`TapeWriterBuilder::metadata`](crate::TapeWriterBuilder::metadata), plus
    /// `tapedeck.schema_version` and friends. Arrow's own `ARROW:schema` entry is left out.
    /// Empty when the tape has no readable file. Reads only a footer or a stream header.
    pub fn metadata(&self) -> Result<std::collections::BTreeMap<String, String>> {
        for f in &self.files {
            if let Some(r) = &f.remote {
                let builder = open_remote_footer(r, f)?;
                return Ok(footer_kv(builder.metadata()));
            }
            match f.kind {
                FileKind::Sealed => {
                    let file =
                        File::open(&f.path).map_err(|e| StorageError::io("open", &f.path, e))?;
                    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
                        StorageError::corrupt(&f.path, format!("not a readable Parquet file: {e}"))
                    })?;
                    let kv = builder.metadata().file_metadata().key_value_metadata();
                    return Ok(kv
                        .map(|kv| {
                            kv.iter()
                                .filter(|e| e.key != "ARROW:schema")
                                .filter_map(|e| Some((e.key.clone(), e.value.clone()?)))
                                .collect()
                        })
                        .unwrap_or_default());
                }
                FileKind::Spool => {
                    if let Some(r) = SegmentReader::open(&f.path, None)? {
                        return Ok(r
                            .schema()
                            .metadata()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect());
                    }
                }
            }
        }
        Ok(std::collections::BTreeMap::new())
    }
}

/// Lists the sealed `.parquet` objects at a URL (a prefix, or one object).
fn list_remote(p: &Path, out: &mut Vec<TapeFile>) -> Result<()> {
    let url = p.to_string_lossy();
    let remote = Remote::parse(&url)?;
    let before = out.len();
    let mut push = |key: object_store::path::Path, size: u64| {
        out.push(TapeFile {
            path: PathBuf::from(remote.object_url(&key)),
            kind: FileKind::Sealed,
            bytes: size,
            remote: Some(RemoteFile {
                remote: remote.clone(),
                key,
            }),
        });
    };
    if remote
        .prefix()
        .filename()
        .is_some_and(|f| f.ends_with(&format!(".{SEALED_EXT}")))
    {
        if let Some(size) = remote.head(remote.prefix())? {
            push(remote.prefix().clone(), size);
        }
    } else {
        for meta in remote.list()? {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(&format!(".{SEALED_EXT}")) {
                continue; // spool segments are never uploaded; temp files of uploads
            }
            push(meta.location, meta.size);
        }
    }
    if out.len() == before {
        return Err(StorageError::NoTape {
            path: PathBuf::from(remote.url()),
        });
    }
    Ok(())
}

fn walk(
    dir: &Path,
    sealed: &mut Vec<PathBuf>,
    spool: &mut Vec<PathBuf>,
    quarantined: &mut Vec<PathBuf>,
) -> Result<()> {
    let (sealed_ext, segment_ext) = (format!(".{SEALED_EXT}"), format!(".{SEGMENT_EXT}"));
    let quarantine_ext = format!("{segment_ext}.corrupt");
    crate::layout::walk_files(dir, &mut |_| true, &mut |path, name| {
        if name.ends_with(&sealed_ext) {
            sealed.push(path);
        } else if name.ends_with(&segment_ext) {
            spool.push(path);
        } else if name.ends_with(&quarantine_ext) {
            quarantined.push(path);
        }
    })
}

enum Source {
    Parquet(Box<ParquetRecordBatchReader>, PathBuf),
    /// A sealed file in an object store; the stream is moved to the runtime for each batch.
    Remote(Option<Box<RemoteStream>>, PathBuf),
    Spool(Box<SegmentReader>, PathBuf),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Parquet(_, p) | Source::Remote(_, p) | Source::Spool(_, p) => p,
        }
    }
}

/// A streaming scan over a tape's files, yielding filtered, projected `RecordBatch`es.
///
/// Memory is bounded by one batch per open file (one file open at a time), whatever the tape's
/// size. After an error that is not skipped, the scan ends.
pub struct TapeScan {
    pending: VecDeque<TapeFile>,
    current: Option<Source>,
    columns: Option<Vec<String>>,
    options: ReadOptions,
    report: ReadReport,
    failed: bool,
}

impl std::fmt::Debug for TapeScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeScan")
            .field("pending", &self.pending.len())
            .field("report", &self.report)
            .finish()
    }
}

impl TapeScan {
    /// What has been read, pruned and skipped so far (complete once the scan has ended).
    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    /// Turns the scan into a stream of [`Exchange`]s.
    pub fn exchanges(self) -> ExchangeIter {
        ExchangeIter {
            scan: self,
            buffer: Vec::new().into_iter(),
        }
    }

    /// The file the last batch came from (`<batch>` once the scan has moved past it).
    fn current_path(&self) -> PathBuf {
        self.current
            .as_ref()
            .map_or_else(|| PathBuf::from("<batch>"), |s| s.path().to_owned())
    }

    fn open_next(&mut self) -> Option<Result<()>> {
        loop {
            let file = self.pending.pop_front()?;
            if file.kind == FileKind::Sealed
                && let Some((lo, hi)) = layout::partition_range(&file.path)
                && !self.options.filter.time_overlaps(lo, hi - 1)
            {
                self.report.files_pruned += 1;
                continue;
            }
            let opened = match (&file.remote, file.kind) {
                (Some(r), _) => self.open_remote_parquet(r, &file),
                (None, FileKind::Sealed) => self.open_parquet(&file.path),
                (None, FileKind::Spool) => self.open_spool(&file.path),
            };
            match opened {
                Ok(Some(src)) => {
                    self.report.files_read += 1;
                    self.current = Some(src);
                    return Some(Ok(()));
                }
                Ok(None) => {
                    self.report.files_pruned += 1;
                }
                Err(e) => match self.skip_or_fail(e) {
                    Ok(()) => {}
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }

    fn skip_or_fail(&mut self, e: StorageError) -> Result<()> {
        if self.options.skip_corrupt && e.is_file_damage() {
            tracing::warn!(error = %e, "skipping damaged tape file");
            self.report.files_skipped.push(SkippedFile {
                path: e.path().map(Path::to_path_buf).unwrap_or_default(),
                reason: e.to_string(),
            });
            Ok(())
        } else {
            Err(e)
        }
    }

    fn open_spool(&mut self, path: &Path) -> Result<Option<Source>> {
        let names: Option<Vec<&str>> = self
            .columns
            .as_ref()
            .map(|c| c.iter().map(String::as_str).collect());
        Ok(SegmentReader::open(path, names.as_deref())?
            .map(|r| Source::Spool(Box::new(r), path.to_owned())))
    }

    fn open_parquet(&mut self, path: &Path) -> Result<Option<Source>> {
        let Some(builder) = self.plan(open_parquet_footer(path)?) else {
            return Ok(None);
        };
        let reader = builder
            .build()
            .map_err(|e| StorageError::corrupt(path, e))?;
        Ok(Some(Source::Parquet(Box::new(reader), path.to_owned())))
    }

    fn open_remote_parquet(&mut self, r: &RemoteFile, file: &TapeFile) -> Result<Option<Source>> {
        let Some(builder) = self.plan(open_remote_footer(r, file)?) else {
            return Ok(None);
        };
        let stream = builder
            .build()
            .map_err(|e| StorageError::corrupt(&file.path, e))?;
        Ok(Some(Source::Remote(
            Some(Box::new(stream)),
            file.path.clone(),
        )))
    }

    /// Prunes row groups by their statistics and applies the projection; `None` when no row
    /// group can match.
    fn plan<T>(&mut self, builder: ArrowReaderBuilder<T>) -> Option<ArrowReaderBuilder<T>> {
        let leaf = |name: &str| {
            builder
                .parquet_schema()
                .columns()
                .iter()
                .position(|c| c.path().string() == name)
        };
        let f = &self.options.filter;
        let (ts_leaf, method_leaf, path_leaf) =
            (leaf(col::STARTED_AT), leaf(col::METHOD), leaf(col::PATH));
        let mut keep = Vec::new();
        for (i, rg) in builder.metadata().row_groups().iter().enumerate() {
            if row_group_may_match(rg, f, ts_leaf, method_leaf, path_leaf) {
                keep.push(i);
            } else {
                self.report.row_groups_pruned += 1;
            }
        }
        if keep.is_empty() {
            return None;
        }
        self.report.row_groups_read += keep.len();
        let mut builder = builder
            .with_row_groups(keep)
            .with_batch_size(self.options.batch_size.max(1));
        if let Some(cols) = &self.columns {
            let arrow_schema = builder.schema().clone();
            let roots: Vec<usize> = cols
                .iter()
                .filter_map(|c| arrow_schema.index_of(c).ok())
                .collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder = builder.with_projection(mask);
        }
        Some(builder)
    }

    fn next_raw(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if self.current.is_none() {
                match self.open_next()? {
                    Ok(()) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            let Some(src) = self.current.as_mut() else {
                continue;
            };
            let next = match src {
                Source::Parquet(r, path) => {
                    // The parquet crate panics on some damaged pages (a dictionary-encoded page
                    // without its dictionary page; found by fuzzing, issue 8): a damaged file is
                    // an error naming it, never a crash. The reader is dropped after it.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.next())) {
                        Ok(next) => next.map(|b| {
                            b.map_err(|e| {
                                StorageError::corrupt(
                                    path.as_path(),
                                    format!("reading row data: {e}"),
                                )
                            })
                        }),
                        Err(_) => Some(Err(StorageError::corrupt(
                            path.as_path(),
                            "reading row data: the Parquet decoder failed on damaged pages"
                                .to_owned(),
                        ))),
                    }
                }
                Source::Remote(slot, path) => match slot.take() {
                    None => None,
                    Some(mut stream) => {
                        let got = object::block_on(async move {
                            let next = futures_util::StreamExt::next(&mut stream).await;
                            (stream, next)
                        });
                        match got {
                            Ok((stream, next)) => {
                                *slot = Some(stream);
                                next.map(|b| b.map_err(|e| remote_read_error(path.as_path(), e)))
                            }
                            Err(e) => Some(Err(StorageError::corrupt(
                                path.as_path(),
                                format!("reading row data: {e}"),
                            ))),
                        }
                    }
                },
                Source::Spool(r, path) => {
                    let b = r.next_batch();
                    if b.is_none()
                        && let Some(tail) = r.tail_error()
                    {
                        self.report.partial_segments.push(SkippedFile {
                            path: path.clone(),
                            reason: format!("ends in a partial batch: {tail}"),
                        });
                    }
                    b
                }
            };
            match next {
                Some(Ok(b)) => return Some(Ok(b)),
                None => self.current = None,
                Some(Err(e)) => {
                    self.current = None;
                    if let Err(e) = self.skip_or_fail(e) {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

impl Iterator for TapeScan {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let batch = match self.next_raw()? {
                Ok(b) => b,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            let batch = match apply_filter(&batch, &self.options.filter) {
                Ok(b) => b,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(StorageError::corrupt(self.current_path(), e)));
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            self.report.rows += batch.num_rows() as u64;
            return Some(Ok(batch));
        }
    }
}

/// Streams [`Exchange`]s decoded from a [`TapeScan`].
#[derive(Debug)]
pub struct ExchangeIter {
    scan: TapeScan,
    /// The decoded rows of the current batch, handed out in place (not moved into a queue
    /// first: an `Exchange` is ≈ 450 bytes, and a batch 512 of them).
    buffer: std::vec::IntoIter<Exchange>,
}

impl ExchangeIter {
    /// What has been read so far (see [`TapeScan::report`]).
    pub fn report(&self) -> &ReadReport {
        self.scan.report()
    }
}

impl Iterator for ExchangeIter {
    type Item = Result<Exchange>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ex) = self.buffer.next() {
                return Some(Ok(ex));
            }
            match self.scan.next()? {
                Ok(batch) => match schema::decode(&batch) {
                    Ok(rows) => self.buffer = rows.into_iter(),
                    Err(e) => {
                        self.scan.failed = true;
                        return Some(Err(StorageError::schema(self.scan.current_path(), e)));
                    }
                },
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A failed remote read is damage when the data is bad, and a request error (not skipped as
/// damage) when the store failed.
fn remote_read_error(path: &Path, e: parquet::errors::ParquetError) -> StorageError {
    match e {
        parquet::errors::ParquetError::External(source) => {
            match source.downcast::<object_store::Error>() {
                Ok(os) => StorageError::Remote {
                    op: "get",
                    url: path.to_string_lossy().into_owned(),
                    source: os,
                },
                Err(other) => StorageError::corrupt(path, format!("reading row data: {other}")),
            }
        }
        e => StorageError::corrupt(path, format!("reading row data: {e}")),
    }
}
