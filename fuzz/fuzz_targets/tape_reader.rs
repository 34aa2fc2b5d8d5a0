//! The tape reader on arbitrary bytes: written as a sealed `.parquet` file and as a spool
//! `.arrows` segment, then opened, scanned (strict and `skip_corrupt`) and read as exchanges.
//! Property: no panic (errors are fine), bounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_storage::{ReadOptions, Tape};

fn read_all(path: &std::path::Path, skip_corrupt: bool) {
    let Ok(tape) = Tape::open(&[path]) else {
        return;
    };
    let _ = tape.metadata();
    let scan = tape.scan(ReadOptions {
        skip_corrupt,
        batch_size: 64,
        ..ReadOptions::default()
    });
    for ex in scan.exchanges().take(100_000) {
        match ex {
            Ok(ex) => {
                let _ = ex.path_and_query();
                let _ = ex.raw_size();
            }
            Err(_) if !skip_corrupt => break,
            Err(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    for name in [
        "00000000-0000-7000-8000-000000000000.parquet",
        "fuzz.arrows",
    ] {
        let path = dir.path().join(name);
        if std::fs::write(&path, data).is_err() {
            return;
        }
        read_all(&path, false);
        read_all(&path, true);
    }
    read_all(dir.path(), true);
});
