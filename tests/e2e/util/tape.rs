//! Tapes for tests: written with the storage crate, made by `tapedeck synth`, read back.

use std::path::{Path, PathBuf};

use tapedeck_storage::{Exchange, Filter, Header, Tape, TapeWriter, WhenFull};

use super::{Cli, assert_exit};

/// Every exchange of the tape at `dir`, sorted by start time.
pub fn read_tape(dir: &Path) -> Vec<Exchange> {
    let mut v = read_in_order(dir);
    v.sort_by_key(|e| e.started_at_us);
    v
}

/// Every exchange of the tape at `dir` in the order the tape holds them (a replay's results:
/// an origin's rows adjacent, target order).
pub fn read_in_order(dir: &Path) -> Vec<Exchange> {
    Tape::open(&[dir])
        .expect("open tape")
        .exchanges(Filter::default())
        .collect::<Result<_, _>>()
        .expect("read tape")
}

/// A recorded `GET path` to `prod.example.test` (with `Host` and `Accept: application/json`)
/// that started at `t_us` and was answered 200.
pub fn get(path: &str, t_us: i64) -> Exchange {
    Exchange {
        id: Exchange::new_id(),
        source: "e2e".into(),
        started_at_us: t_us,
        method: "GET".into(),
        authority: "prod.example.test".into(),
        path: path.into(),
        req_headers: vec![
            Header::new("Host", "prod.example.test"),
            Header::new("Accept", "application/json"),
        ],
        status: Some(200),
        ..Exchange::default()
    }
}

/// Writes `exchanges` as a sealed tape in `dir`.
pub fn write_tape(dir: &Path, exchanges: &[Exchange]) {
    let w = TapeWriter::builder(dir)
        .when_full(WhenFull::Block)
        .open()
        .expect("open tape");
    for ex in exchanges {
        w.append(ex.clone()).expect("append");
    }
    w.close().expect("close tape");
}

/// `tapedeck synth --out TAPE args…` (e.g. `["--count", "300", "--seed", "5"]`), which must
/// succeed.
#[track_caller]
pub fn synth(tape: &Path, args: &[&str]) {
    let o = Cli::new("synth").flag("--out", tape).args(args).run();
    assert_exit(&o, 0, "synth");
}

/// `tapedeck demo --out OUT args…`, which must succeed; returns its output.
#[track_caller]
pub fn demo(out: &Path, args: &[&str]) -> std::process::Output {
    let o = Cli::new("demo").flag("--out", out).args(args).run();
    assert_exit(&o, 0, "demo");
    o
}

/// Every file under `dir` (none when it does not exist), depth first.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
