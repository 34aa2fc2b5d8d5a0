//! Where the files of a tape live, and how they are created (private: `0700` dirs, `0600` files).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Directory (inside a tape) holding unsealed Arrow IPC stream segments.
pub const SPOOL_DIR: &str = "spool";
/// File name extension of spool segments.
pub const SEGMENT_EXT: &str = "arrows";
/// File name extension of sealed files.
pub const SEALED_EXT: &str = "parquet";
/// Prefix of sealed file names; the segment id follows.
pub const SEALED_PREFIX: &str = "part-";

const HOUR_US: i64 = 3_600_000_000;

/// Creates a directory and its parents with mode `0700` (existing ones are left as they are).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Creates (truncating) a file with mode `0600`.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Flushes a directory's entries (after a rename into it) to stable storage.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Path of the spool segment with the given id.
/// Calls `file` with each entry below `dir` (recursively) that is not a directory, with its
/// name, skipping `.`-prefixed entries (the lock file, temp files of seals and uploads in
/// progress); `enter` says whether to walk into a sub-directory.
pub(crate) fn walk_files(
    dir: &Path,
    enter: &mut dyn FnMut(&Path) -> bool,
    file: &mut dyn FnMut(PathBuf, &str),
) -> crate::error::Result<()> {
    use crate::error::StorageError;
    let rd = fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let ft = entry
            .file_type()
            .map_err(|e| StorageError::io("stat", &path, e))?;
        if ft.is_dir() {
            if enter(&path) {
                walk_files(&path, enter, file)?;
            }
        } else {
            file(path, &name);
        }
    }
    Ok(())
}

pub fn segment_path(tape: &Path, segment_id: &str) -> PathBuf {
    tape.join(SPOOL_DIR)
        .join(format!("{segment_id}.{SEGMENT_EXT}"))
}

/// The hour (as microseconds since the epoch, floored) a timestamp falls in.
pub fn hour_of(ts_us: i64) -> i64 {
    ts_us.div_euclid(HOUR_US) * HOUR_US
}

/// Hive-style partition directory (relative to the tape) for an hour.
pub fn partition_dir(hour_us: i64) -> PathBuf {
    let t: DateTime<Utc> = DateTime::from_timestamp_micros(hour_us).unwrap_or_default();
    PathBuf::from(format!(
        "date={:04}-{:02}-{:02}",
        t.year(),
        t.month(),
        t.day()
    ))
    .join(format!("hour={:02}", t.hour()))
}

/// Path of the sealed file holding the rows of `segment_id` that started in `hour_us`.
pub fn sealed_path(tape: &Path, hour_us: i64, segment_id: &str) -> PathBuf {
    tape.join(partition_dir(hour_us))
        .join(format!("{SEALED_PREFIX}{segment_id}.{SEALED_EXT}"))
}

/// The segment id a sealed file was made from, from its name.
pub fn segment_of_sealed(path: &Path) -> Option<&str> {
    path.file_name()?
        .to_str()?
        .strip_prefix(SEALED_PREFIX)?
        .strip_suffix(&format!(".{SEALED_EXT}"))
}

/// The `[start, end)` time range (µs) of the hour partition a sealed file sits in, read from its
/// `date=…/hour=…` parent directories; `None` when the path is not partitioned that way.
pub fn partition_range(path: &Path) -> Option<(i64, i64)> {
    let hour_dir = path.parent()?;
    let hour: u32 = hour_dir
        .file_name()?
        .to_str()?
        .strip_prefix("hour=")?
        .parse()
        .ok()?;
    let date = hour_dir
        .parent()?
        .file_name()?
        .to_str()?
        .strip_prefix("date=")?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let start = day.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_micros();
    Some((start, start + HOUR_US))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_round_trip() {
        // 2026-11-29T20:30:00Z
        let ts = 1_795_984_200_000_000;
        let hour = hour_of(ts);
        let p = sealed_path(Path::new("/t"), hour, "abc");
        assert_eq!(p, Path::new("/t/date=2026-11-29/hour=20/part-abc.parquet"));
        assert_eq!(partition_range(&p), Some((hour, hour + HOUR_US)));
        assert_eq!(segment_of_sealed(&p), Some("abc"));
    }

    #[test]
    fn hour_of_negative_floors() {
        assert_eq!(hour_of(-1), -HOUR_US);
    }
}
