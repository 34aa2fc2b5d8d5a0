//! Reading spool segments (Arrow IPC streams), including ones cut short by a crash.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_schema::SchemaRef;

use crate::error::{Result, StorageError};
use crate::schema::{self, META_SCHEMA_VERSION, MIN_SCHEMA_VERSION, SCHEMA_VERSION};

/// Reads the batches of one spool segment. A segment whose tail is a partial batch (the writer
/// crashed or its disk failed mid-write) yields every complete batch and then stops, keeping the
/// reason in [`SegmentReader::tail_error`].
#[derive(Debug)]
pub(crate) struct SegmentReader {
    path: PathBuf,
    inner: StreamReader<BufReader<File>>,
    tail_error: Option<String>,
    done: bool,
}

impl SegmentReader {
    /// Opens a segment. `Ok(None)` for an empty file (created, never written).
    pub(crate) fn open(path: &Path, projection: Option<&[&str]>) -> Result<Option<Self>> {
        let file = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("stat", path, e))?
            .len();
        if len == 0 {
            return Ok(None);
        }
        let probe = StreamReader::try_new(BufReader::new(file), None).map_err(|e| {
            StorageError::corrupt(path, format!("not an Arrow IPC stream segment: {e}"))
        })?;
        let file_schema = probe.schema();
        check_version(path, file_schema.metadata().get(META_SCHEMA_VERSION))?;
        schema::check_schema(&file_schema).map_err(|e| StorageError::corrupt(path, e))?;
        let inner = match projection {
            None => probe,
            Some(names) => {
                drop(probe);
                let idx: Vec<usize> = names
                    .iter()
                    .filter_map(|n| file_schema.index_of(n).ok())
                    .collect();
                let file = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
                StreamReader::try_new(BufReader::new(file), Some(idx))
                    .map_err(|e| StorageError::corrupt(path, e))?
            }
        };
        Ok(Some(Self {
            path: path.to_owned(),
            inner,
            tail_error: None,
            done: false,
        }))
    }

    /// Schema of the batches this reader yields (after projection).
    pub(crate) fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    /// The next complete batch; `None` at the end or at a partial tail.
    pub(crate) fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.done {
            return None;
        }
        match self.inner.next() {
            Some(Ok(b)) => Some(Ok(b)),
            Some(Err(e)) => {
                self.done = true;
                self.tail_error = Some(e.to_string());
                tracing::debug!(segment = %self.path.display(), error = %e, "spool segment ends in a partial batch");
                None
            }
            None => {
                self.done = true;
                None
            }
        }
    }

    /// Why reading stopped early, if it did.
    pub(crate) fn tail_error(&self) -> Option<&str> {
        self.tail_error.as_deref()
    }
}

/// Refuses files whose schema version is newer than this build's (or unreadable).
pub(crate) fn check_version(path: &Path, version: Option<&String>) -> Result<()> {
    let Some(v) = version else {
        return Err(StorageError::corrupt(
            path,
            format!("no `{META_SCHEMA_VERSION}` in the file metadata: not a tapedeck tape file"),
        ));
    };
    let found: u32 = v.trim().parse().map_err(|_| {
        StorageError::corrupt(
            path,
            format!("`{META_SCHEMA_VERSION}` is `{v}`, not a number"),
        )
    })?;
    if found < MIN_SCHEMA_VERSION {
        return Err(StorageError::corrupt(
            path,
            format!("`{META_SCHEMA_VERSION}` is {found}: no tapedeck wrote that version"),
        ));
    }
    if found > SCHEMA_VERSION {
        return Err(StorageError::FutureSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}
