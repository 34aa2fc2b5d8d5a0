//! Damaged tapes (truncated, garbage, from a future schema version, a bad spool segment): an
//! error naming the file before anything is sent, unless `--skip-corrupt`.

use std::path::{Path, PathBuf};

use tapedeck_storage::{Exchange, now_us};

use super::{T, s};
use crate::util::{
    Diff, Replay, Reply, TestServer, files_under, get, read_tape, run, stderr, stdout, write_tape,
};

/// Writes a small sealed tape of `n` GETs into `dir`; returns its sealed Parquet files.
fn sealed_tape(dir: &Path, n: usize) -> Vec<PathBuf> {
    let t0 = now_us() - 60_000_000;
    let ex: Vec<Exchange> = (0..n)
        .map(|i| get(&format!("/c/{i}"), t0 + i as i64 * 1000))
        .collect();
    write_tape(dir, &ex);
    let mut out: Vec<PathBuf> = files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    out.sort();
    out
}

/// The ways a tape file can be damaged (each error must name the damaged file exactly once); each is applied to a copy of a good tape.
fn damage(kind: &str, tape: &Path) -> PathBuf {
    let files = sealed_tape(tape, 20);
    let good = files.first().expect("a sealed file").clone();
    let bytes = std::fs::read(&good).expect("read");
    let parent = good.parent().expect("parent").to_owned();
    match kind {
        "truncated" => {
            let bad = parent.join("zz-truncated.parquet");
            std::fs::write(&bad, &bytes[..bytes.len() / 2]).expect("write");
            bad
        }
        "garbage" => {
            let bad = parent.join("zz-garbage.parquet");
            let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8).collect();
            std::fs::write(&bad, junk).expect("write");
            bad
        }
        "future" => {
            // The same file with its schema version key bumped to a version from the future.
            let key = b"tapedeck.schema_version";
            let at = bytes
                .windows(key.len())
                .position(|w| w == key)
                .expect("schema version key");
            let mut b = bytes.clone();
            let digit = b[at..]
                .iter()
                .position(|c| c.is_ascii_digit())
                .expect("version digit")
                + at;
            b[digit] = b'9';
            let bad = parent.join("zz-future.parquet");
            std::fs::write(&bad, b).expect("write");
            bad
        }
        other => panic!("unknown damage {other}"),
    }
}

/// Asserts that `what` refused a damaged tape: exit 2, the damaged file `name` named exactly once.
#[track_caller]
fn assert_names_once(out: &std::process::Output, what: &str, name: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", stdout(out));
    assert!(
        stderr(out).matches(name).count() == 1,
        "{what}: {}",
        stderr(out)
    );
}

#[test]
fn corrupt_tapes_are_errors_naming_the_file_unless_skipped() {
    let up = TestServer::start(|_| Reply::json("{}"));
    let mut injected = 0;
    for kind in ["truncated", "garbage", "future"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let tape = dir.path().join("tape");
        let bad = damage(kind, &tape);
        injected += 1;
        let name = bad
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        // inspect
        let out = run(&["inspect", s(&tape)], T);
        assert_names_once(&out, &format!("inspect {kind}"), &name);
        let out = run(&["inspect", "--skip-corrupt", "--json", s(&tape)], T);
        assert_eq!(
            out.status.code(),
            Some(0),
            "inspect --skip-corrupt {kind}: {}",
            stderr(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["exchanges"], 20, "{kind}: {v}");
        // replay
        let run_dir = dir.path().join("run");
        let replay = Replay::new(&tape)
            .out(&run_dir)
            .target("baseline", &up.url())
            .target("candidate", &up.url())
            .args(["--pace", "max", "--json"]);
        let out = replay.run();
        assert_names_once(&out, &format!("replay {kind}"), &name);
        let _ = std::fs::remove_dir_all(&run_dir);
        let out = replay.arg("--skip-corrupt").run();
        assert_eq!(
            out.status.code(),
            Some(0),
            "replay --skip-corrupt {kind}: {}",
            stderr(&out)
        );
        assert_eq!(read_tape(&run_dir).len(), 40, "{kind}");
        // diff: the damaged file dropped into the run
        std::fs::copy(&bad, run_dir.join(&name)).expect("copy damaged file into the run");
        let out = Diff::of(&run_dir).run();
        assert_names_once(&out, &format!("diff {kind}"), &name);
        let out = Diff::of(&run_dir).arg("--skip-corrupt").run();
        assert!(
            matches!(out.status.code(), Some(0 | 1 | 3)),
            "diff --skip-corrupt {kind} ({:?}): {}{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
    }
    eprintln!("corrupt files injected: {injected} kinds x inspect/replay/diff");
}

/// Issue 8: a tape whose later file is damaged (a truncated sealed file, a garbage spool
/// segment) is refused before anything is sent: exit 2, the error names the file, and the target
/// sees no request (replay used to send the good file's requests first). With `--skip-corrupt`
/// the good file is replayed.
#[test]
fn replay_refuses_a_damaged_later_file_before_sending_anything() {
    for kind in ["truncated-parquet", "garbage-spool"] {
        let up = TestServer::start(|_| Reply::json("{}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let tape = dir.path().join("tape");
        let files = sealed_tape(&tape, 20);
        let good = files.first().expect("a sealed file").clone();
        let bad = match kind {
            "truncated-parquet" => {
                let bytes = std::fs::read(&good).expect("read");
                let bad = good.with_file_name("zz-later.parquet");
                std::fs::write(&bad, &bytes[..bytes.len() / 2]).expect("write");
                bad
            }
            _ => {
                let spool = tape.join("spool");
                std::fs::create_dir_all(&spool).expect("spool dir");
                let bad = spool.join("zz-later.arrows");
                std::fs::write(&bad, vec![0xab; 4096]).expect("write");
                bad
            }
        };
        let name = bad
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let run_dir = dir.path().join("run");
        let replay = Replay::new(&tape)
            .out(&run_dir)
            .target("candidate", &up.url())
            .args(["--pace", "max", "--json"]);
        let out = replay.run();
        assert_eq!(
            out.status.code(),
            Some(2),
            "replay {kind}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(name.as_str()),
            "replay {kind} does not name {name}: {}",
            stderr(&out)
        );
        assert_eq!(
            up.requests().len(),
            0,
            "replay {kind} sent requests before refusing the tape"
        );

        let _ = std::fs::remove_dir_all(&run_dir);
        let out = replay.arg("--skip-corrupt").run();
        assert_eq!(
            out.status.code(),
            Some(0),
            "replay --skip-corrupt {kind}: {}",
            stderr(&out)
        );
        let mut paths: Vec<String> = up.requests().into_iter().map(|r| r.uri).collect();
        paths.sort();
        let mut want: Vec<String> = (0..20).map(|i| format!("/c/{i}")).collect();
        want.sort();
        assert_eq!(paths, want, "{kind}");
        assert_eq!(read_tape(&run_dir).len(), 20, "{kind}");
    }
}
