//! Sealing: compacting a closed spool segment into hour-partitioned zstd Parquet files.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{BooleanArray, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Result, StorageError};
use crate::layout;
use crate::schema::{META_SEGMENT, col};
use crate::spool::SegmentReader;

/// How sealed files are written.
#[derive(Debug, Clone)]
pub(crate) struct SealSettings {
    pub(crate) zstd_level: i32,
    pub(crate) row_group_rows: usize,
    pub(crate) row_group_bytes: usize,
}

impl Default for SealSettings {
    fn default() -> Self {
        Self {
            zstd_level: 3,
            row_group_rows: 65_536,
            row_group_bytes: 64 << 20,
        }
    }
}

/// What sealing one segment produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SealOutcome {
    /// Rows moved into sealed files.
    pub rows: u64,
    /// Sealed files written (one per hour the rows span).
    pub files: u64,
    /// Bytes of the sealed files.
    pub bytes: u64,
    /// The segment ended in a partial batch (crash or failed write); the complete batches before
    /// it were sealed.
    pub tail_error: Option<String>,
}

/// Seals one spool segment of the tape at `tape` into Parquet with the default settings, then
/// deletes it. This is what a writer does with each closed segment and with leftovers at start.
pub fn seal(tape: &Path, segment: &Path) -> Result<SealOutcome> {
    seal_segment(tape, segment, &SealSettings::default(), &BTreeMap::new())
}

/// Parquet writer properties for sealed files.
pub(crate) fn writer_properties(
    settings: &SealSettings,
    metadata: &BTreeMap<String, String>,
) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(settings.zstd_level)
        .map_err(|e| StorageError::InvalidConfig(format!("zstd level: {e}")))?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(settings.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(settings.row_group_bytes.max(1)))
        .set_created_by(format!("tapedeck {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(
            metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect(),
        ));
    // High-cardinality columns: a dictionary only costs time before Parquet falls back.
    for c in [
        col::ID,
        col::ORIGIN_ID,
        col::REQ_BODY,
        col::RESP_BODY,
        col::CLIENT_ADDR,
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    Ok(b.build())
}

struct HourFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
}

/// Seals `segment` into Parquet files under `tape`, then deletes it.
///
/// Idempotent: the output names are derived from the segment id, so a crash at any point leaves
/// either the segment (re-sealed next time, replacing partial output) or only complete files.
pub(crate) fn seal_segment(
    tape: &Path,
    segment: &Path,
    settings: &SealSettings,
    metadata: &BTreeMap<String, String>,
) -> Result<SealOutcome> {
    let seg_id = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| StorageError::corrupt(segment, "segment file name is not valid"))?
        .to_owned();
    let mut out = SealOutcome::default();
    let Some(mut reader) = SegmentReader::open(segment, None)? else {
        // Created but never written (crash right after creation): nothing to keep.
        remove_segment(segment)?;
        return Ok(out);
    };
    let mut meta = metadata.clone();
    // Keep what the original writer recorded (host, version, upstream) when recovering.
    for (k, v) in reader.schema().metadata() {
        meta.entry(k.clone()).or_insert_with(|| v.clone());
    }
    meta.insert(META_SEGMENT.into(), seg_id.clone());
    let props = writer_properties(settings, &meta)?;
    let schema = reader.schema();

    let mut files: HashMap<i64, HourFile> = HashMap::new();
    let result = (|| -> Result<()> {
        while let Some(batch) = reader.next_batch() {
            let batch = batch?;
            for (hour, part) in split_by_hour(&batch, segment)? {
                let f = match files.get_mut(&hour) {
                    Some(f) => f,
                    None => {
                        let dest = layout::sealed_path(tape, hour, &seg_id);
                        let f = open_hour_file(dest, schema.clone(), props.clone())?;
                        files.entry(hour).or_insert(f)
                    }
                };
                f.writer.write(&part).map_err(|e| parquet_err(&f.tmp, e))?;
                out.rows += part.num_rows() as u64;
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        for f in files.into_values() {
            let _ = fs::remove_file(&f.tmp);
        }
        return Err(e);
    }
    out.tail_error = reader.tail_error().map(str::to_owned);

    // Finish every file before publishing any, then publish, then drop the segment.
    let mut finished = Vec::new();
    for f in files.into_values() {
        let HourFile { tmp, dest, writer } = f;
        let closed = writer
            .into_inner()
            .map_err(|e| parquet_err(&tmp, e))
            .and_then(|w| {
                w.into_inner()
                    .map_err(|e| StorageError::io("write", &tmp, e.into_error()))
            })
            .and_then(|file| {
                file.sync_all()
                    .map_err(|e| StorageError::io("fsync", &tmp, e))
            });
        if let Err(e) = closed {
            let _ = fs::remove_file(&tmp);
            for (t, _) in &finished {
                let _ = fs::remove_file(t);
            }
            return Err(e);
        }
        finished.push((tmp, dest));
    }
    for (tmp, dest) in &finished {
        let len = fs::metadata(tmp).map(|m| m.len()).unwrap_or(0);
        fs::rename(tmp, dest).map_err(|e| StorageError::io("rename", dest, e))?;
        if let Some(parent) = dest.parent() {
            let _ = layout::sync_dir(parent);
        }
        out.bytes += len;
        out.files += 1;
    }
    remove_segment(segment)?;
    Ok(out)
}

fn remove_segment(segment: &Path) -> Result<()> {
    fs::remove_file(segment).map_err(|e| StorageError::io("remove", segment, e))?;
    if let Some(parent) = segment.parent() {
        let _ = layout::sync_dir(parent);
    }
    Ok(())
}

fn open_hour_file(
    dest: PathBuf,
    schema: arrow_schema::SchemaRef,
    props: WriterProperties,
) -> Result<HourFile> {
    let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    layout::create_private_dir(&dir).map_err(|e| StorageError::io("create", &dir, e))?;
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("part.parquet");
    let tmp = dir.join(format!(".{name}.tmp"));
    let file =
        layout::create_private_file(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
    let writer = ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema, Some(props))
        .map_err(|e| parquet_err(&tmp, e))?;
    Ok(HourFile { tmp, dest, writer })
}

fn parquet_err(path: &Path, e: parquet::errors::ParquetError) -> StorageError {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(io) => StorageError::io("write", path, *io),
                Err(other) => StorageError::corrupt(path, other),
            }
        }
        other => StorageError::corrupt(path, other),
    }
}

/// Splits a batch into one batch per hour of `started_at` (one slice, no copy, in the usual case
/// where all rows share an hour).
fn split_by_hour(batch: &RecordBatch, path: &Path) -> Result<Vec<(i64, RecordBatch)>> {
    let ts = batch
        .column_by_name(col::STARTED_AT)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| StorageError::corrupt(path, "started_at column missing or mistyped"))?;
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    let hours: Vec<i64> = ts.values().iter().map(|&t| layout::hour_of(t)).collect();
    let first = hours[0];
    if hours.iter().all(|&h| h == first) {
        return Ok(vec![(first, batch.clone())]);
    }
    let mut distinct: Vec<i64> = hours.clone();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
        .into_iter()
        .map(|h| {
            let mask = BooleanArray::from_iter(hours.iter().map(|&x| Some(x == h)));
            arrow_select::filter::filter_record_batch(batch, &mask)
                .map(|b| (h, b))
                .map_err(|e| StorageError::corrupt(path, e))
        })
        .collect()
}
