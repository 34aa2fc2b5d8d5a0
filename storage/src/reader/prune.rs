//! What a [`Filter`] rules out before rows are decoded (row groups by their statistics, columns
//! the filter needs) and the exact per-row filter after; and the footer check that keeps the
//! Parquet decoder away from damaged column chunks.

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, BooleanArray, RecordBatch};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;

use super::Filter;
use crate::schema::col;

pub(super) fn filter_columns(f: &Filter) -> Vec<&'static str> {
    let mut v = Vec::new();
    if f.from_us.is_some() || f.to_us.is_some() {
        v.push(col::STARTED_AT);
    }
    if !f.methods.is_empty() {
        v.push(col::METHOD);
    }
    if f.path_prefix.is_some() {
        v.push(col::PATH);
    }
    v
}

pub(super) fn i64_range(stats: Option<&Statistics>) -> Option<(i64, i64)> {
    match stats? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

pub(super) fn bytes_range(stats: Option<&Statistics>) -> Option<(&[u8], &[u8])> {
    match stats? {
        Statistics::ByteArray(s) => Some((s.min_opt()?.data(), s.max_opt()?.data())),
        _ => None,
    }
}

/// Checks that every column chunk of every row group lies inside the file. The parquet crate
/// panics on a negative offset or size when it reads such a chunk (found by fuzzing: issue 8,
/// `fuzz/` target `tape_reader`), so a damaged footer must be rejected here, as corrupt.
pub(super) fn check_chunk_ranges(
    row_groups: &[RowGroupMetaData],
    file_len: u64,
) -> std::result::Result<(), String> {
    for (g, rg) in row_groups.iter().enumerate() {
        for (c, col) in rg.columns().iter().enumerate() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or_else(|| col.data_page_offset());
            let len = col.compressed_size();
            let inside = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(s, l)| s.checked_add(l))
                .is_some_and(|end| end <= file_len);
            if !inside {
                return Err(format!(
                    "row group {g}, column {c}: chunk at offset {start} of {len} bytes is outside the file ({file_len} bytes)"
                ));
            }
        }
    }
    Ok(())
}

/// Whether a row group's statistics allow any row to pass the filter (`true` when unsure).
pub(super) fn row_group_may_match(
    rg: &RowGroupMetaData,
    f: &Filter,
    ts: Option<usize>,
    method: Option<usize>,
    path: Option<usize>,
) -> bool {
    let stats = |leaf: Option<usize>| {
        leaf.and_then(|i| rg.columns().get(i))
            .and_then(|c| c.statistics())
    };
    if let Some((lo, hi)) = i64_range(stats(ts))
        && !f.time_overlaps(lo, hi)
    {
        return false;
    }
    if !f.methods.is_empty()
        && let Some((lo, hi)) = bytes_range(stats(method))
        && !f
            .methods
            .iter()
            .any(|m| m.as_bytes() >= lo && m.as_bytes() <= hi)
    {
        return false;
    }
    if let Some(prefix) = f.path_prefix.as_deref().filter(|p| !p.is_empty())
        && let Some((lo, hi)) = bytes_range(stats(path))
    {
        let p = prefix.as_bytes();
        // Every string with prefix p sorts in [p, p-with-its-last-byte-incremented).
        if hi < p {
            return false;
        }
        if lo > p
            && !lo.starts_with(p)
            && let Some(upper) = prefix_upper_bound(p)
            && lo >= upper.as_slice()
        {
            return false;
        }
    }
    true
}

pub(super) fn prefix_upper_bound(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < u8::MAX {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

pub(super) fn apply_filter(
    batch: &RecordBatch,
    f: &Filter,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    if f.is_empty() {
        return Ok(batch.clone());
    }
    let n = batch.num_rows();
    let mut keep = vec![true; n];
    if (f.from_us.is_some() || f.to_us.is_some())
        && let Some(ts) = batch
            .column_by_name(col::STARTED_AT)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
    {
        for (i, k) in keep.iter_mut().enumerate() {
            *k &= ts.is_valid(i) && f.time_overlaps(ts.value(i), ts.value(i));
        }
    }
    if !f.methods.is_empty()
        && let Some(m) = batch
            .column_by_name(col::METHOD)
            .and_then(|c| c.as_string_opt::<i32>())
    {
        for (i, k) in keep.iter_mut().enumerate() {
            *k &= m.is_valid(i) && f.methods.iter().any(|x| x == m.value(i));
        }
    }
    if let Some(prefix) = &f.path_prefix
        && let Some(p) = batch
            .column_by_name(col::PATH)
            .and_then(|c| c.as_string_opt::<i32>())
    {
        for (i, k) in keep.iter_mut().enumerate() {
            *k &= p.is_valid(i) && p.value(i).starts_with(prefix.as_str());
        }
    }
    if keep.iter().all(|&k| k) {
        return Ok(batch.clone());
    }
    let mask = BooleanArray::from(keep);
    arrow_select::filter::filter_record_batch(batch, &mask)
}
