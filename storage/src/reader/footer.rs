//! Opening a sealed file, local or in an object store, as far as its footer: the checks that make
//! a damaged or foreign file an error naming it before any row data is decoded.

use std::fs::File;
use std::path::Path;

use parquet::arrow::arrow_reader::{ArrowReaderBuilder, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::ParquetRecordBatchStream;

use super::prune::check_chunk_ranges;
use super::{RemoteFile, TapeFile};
use crate::error::{Result, StorageError};
use crate::object;
use crate::schema::{self, META_SCHEMA_VERSION};
use crate::spool::check_version;

/// Opens a sealed file and checks its footer: a readable Parquet footer, a schema version this
/// build reads, the tape schema, and every column chunk inside the file. Reads no row data.
pub(super) fn open_parquet_footer(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| StorageError::io("stat", path, e))?
        .len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| StorageError::corrupt(path, format!("not a readable Parquet file: {e}")))?;
    check_footer(path, &builder, file_len)?;
    Ok(builder)
}

/// The checks of [`open_parquet_footer`] on a footer already read (local or remote).
pub(super) fn check_footer<T>(
    path: &Path,
    builder: &ArrowReaderBuilder<T>,
    file_len: u64,
) -> Result<()> {
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let version = kv.and_then(|kv| {
        kv.iter()
            .find(|e| e.key == META_SCHEMA_VERSION)
            .and_then(|e| e.value.clone())
    });
    check_version(path, version.as_ref())?;
    schema::check_schema(builder.schema()).map_err(|e| StorageError::schema(path, e))?;
    check_chunk_ranges(builder.metadata().row_groups(), file_len)
        .map_err(|e| StorageError::corrupt(path, e))
}

pub(super) type RemoteBuilder =
    ArrowReaderBuilder<parquet::arrow::async_reader::AsyncReader<object::ObjectReader>>;
pub(super) type RemoteStream = ParquetRecordBatchStream<object::ObjectReader>;

/// Reads (ranged GETs: the footer only) and checks the footer of a sealed file in an object
/// store. Errors name the object's URL.
pub(super) fn open_remote_footer(r: &RemoteFile, file: &TapeFile) -> Result<RemoteBuilder> {
    let reader = object::ObjectReader::new(r.remote.store().clone(), r.key.clone(), file.bytes);
    let built = object::block_on(async move {
        parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader).await
    })
    .map_err(|e| StorageError::corrupt(&file.path, format!("reading the footer: {e}")))?;
    let builder = built.map_err(|e| match e {
        parquet::errors::ParquetError::External(source) => match source
            .downcast::<object_store::Error>()
        {
            Ok(os) => StorageError::Remote {
                op: "get",
                url: file.path.to_string_lossy().into_owned(),
                source: os,
            },
            Err(other) => {
                StorageError::corrupt(&file.path, format!("not a readable Parquet file: {other}"))
            }
        },
        e => StorageError::corrupt(&file.path, format!("not a readable Parquet file: {e}")),
    })?;
    check_footer(&file.path, &builder, file.bytes)?;
    Ok(builder)
}

pub(super) fn footer_kv(
    md: &parquet::file::metadata::ParquetMetaData,
) -> std::collections::BTreeMap<String, String> {
    md.file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|e| e.key != "ARROW:schema")
                .filter_map(|e| Some((e.key.clone(), e.value.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}
