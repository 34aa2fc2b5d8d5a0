//! Regression tests for inputs found by the `fuzz/` targets (issue 8). Each input is kept under
//! `tests/data/fuzz/` and named after the finding.

use std::path::Path;

use tapedeck_storage::{Filter, ReadOptions, Tape};

/// Reads every exchange of `bytes` written as a file named `name`; returns (read, errors).
fn read(bytes: &[u8], name: &str, skip_corrupt: bool) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write input");
    let tape = Tape::open(&[&path]).expect("open");
    let scan = tape.scan(ReadOptions {
        skip_corrupt,
        ..ReadOptions::default()
    });
    let (mut ok, mut errors) = (0, Vec::new());
    for ex in scan.exchanges() {
        match ex {
            Ok(_) => ok += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    (ok, errors)
}

/// fuzz `tape_reader`: a Parquet footer whose column chunk has a negative offset made the parquet
/// crate panic ("column start and length should not be negative") while reading row data.
#[test]
fn fuzz_negative_chunk_offset_is_corrupt_not_a_panic() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/negative-chunk-offset.parquet"),
    )
    .expect("fixture");
    let (ok, errors) = read(&bytes, "x.parquet", false);
    assert_eq!(ok, 0);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("x.parquet"),
        "error names the file: {}",
        errors[0]
    );
    assert!(errors[0].contains("outside the file"), "{}", errors[0]);
    let (ok, errors) = read(&bytes, "x.parquet", true);
    assert_eq!(
        (ok, errors.len()),
        (0, 0),
        "skip_corrupt skips it: {errors:?}"
    );
    let tape =
        Tape::open(&[Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/fuzz/negative-chunk-offset.parquet")])
        .expect("open");
    assert!(tape.exchanges(Filter::default()).any(|r| r.is_err()));
}

/// fuzz `tape_reader`: a dictionary-encoded data page without a dictionary page made the parquet
/// crate panic ("Decoder for dict should have been set") while reading row data.
#[test]
fn fuzz_dictionary_page_missing_is_corrupt_not_a_panic() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/fuzz/dictionary-page-missing.parquet"),
    )
    .expect("fixture");
    let (_, errors) = read(&bytes, "y.parquet", false);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("y.parquet"),
        "error names the file: {}",
        errors[0]
    );
    let (_, errors) = read(&bytes, "y.parquet", true);
    assert!(errors.is_empty(), "skip_corrupt skips it: {errors:?}");
}

/// fuzz `tape_reader`: damaged definition levels made arrow-buffer panic ("offset + len out of
/// bounds") inside the parquet reader; caught like the one above.
#[test]
fn fuzz_definition_levels_out_of_bounds_is_corrupt_not_a_panic() {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/fuzz/definition-levels-out-of-bounds.parquet"),
    )
    .expect("fixture");
    let (_, errors) = read(&bytes, "z.parquet", false);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("z.parquet"),
        "error names the file: {}",
        errors[0]
    );
    let (_, errors) = read(&bytes, "z.parquet", true);
    assert!(errors.is_empty(), "skip_corrupt skips it: {errors:?}");
}
