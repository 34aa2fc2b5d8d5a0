//! The tape reader on arbitrary bytes: written as a sealed `.parquet` file and as a spool
//! `.arrows` segment, then opened, scanned (strict and `skip_corrupt`) and read as exchanges.
//! Properties: no panic (errors are fine), bounded work; `Tape::verify` (footers and headers
//! only) never rejects a file the scan reads, and the files it finds damaged the scan skips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_storage::{ReadOptions, Tape};

fn read_all(path: &std::path::Path, skip_corrupt: bool) {
    let Ok(tape) = Tape::open(&[path]) else {
        return;
    };
    let _ = tape.metadata();
    let options = ReadOptions {
        skip_corrupt,
        batch_size: 64,
        ..ReadOptions::default()
    };
    // `verify` checks footers and headers only: a file it rejects, the scan rejects too (it
    // may not flag damage in data pages, which the scan finds later).
    let verified = tape.verify(&options);
    let mut exchanges = tape.scan(options).exchanges();
    if skip_corrupt {
        if let Ok(damaged) = &verified {
            let read = exchanges.by_ref().take(100_000).count();
            if read == 100_000 {
                return; // the scan may not have reached every file
            }
            let skipped = &exchanges.report().files_skipped;
            for d in damaged {
                assert!(
                    skipped.iter().any(|s| s.path == d.path),
                    "verify found {} damaged, the scan did not skip it",
                    d.path.display()
                );
            }
            return;
        }
    } else if verified.is_err() {
        assert!(
            matches!(exchanges.next(), Some(Err(_))),
            "verify rejected a file the scan opens"
        );
        return;
    }
    for ex in exchanges.take(100_000) {
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
