//! Issue 17, item 2: a closed stdout never changes a command's exit code or prints an error.
//! `tapedeck inspect --json TAPE | head -c 10` used to exit 2 in about half the runs ("Broken
//! pipe"), `diff --json | head` 1 or 2 at random, and `demo | head` panicked (exit 101).
//!
//! Each command that prints runs with its stdout piped into `head -c 1` (20 times: whether a
//! write meets the closed pipe depends on when `head` exits), and once with a stdout whose
//! reader is already gone (every write fails: the worst case, deterministic). Its exit code must
//! equal the code of the same command with a stdout that is read, its stderr must carry no
//! error, and the files it writes (reports, tapes) must still be written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Reply, TestServer, tapedeck};

/// How long one run may take (the demo is the slowest).
const RUN: Duration = Duration::from_secs(120);
/// Runs through `head -c 1` per command.
const HEAD_RUNS: usize = 20;

/// Waits for a child (bounded); kills it and fails the test after `timeout`.
fn wait(child: &mut Child, what: &str, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How stdout is connected for one run.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Read to the end (into a file): the reference exit code.
    Whole,
    /// Piped into `head -c 1`, which exits after the first byte.
    Head,
    /// A pipe whose read end is closed before the command starts.
    Gone,
}

/// Runs `tapedeck args` with stdout connected as `reader`; returns its exit code and stderr.
fn run_with(args: &[String], reader: Reader, scratch: &Path) -> (Option<i32>, String) {
    let err_path = scratch.join("stderr.txt");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut cmd = tapedeck();
    cmd.args(args).stderr(err);
    let what = format!("tapedeck {args:?} ({reader:?})");
    let code = match reader {
        Reader::Whole => {
            let out = std::fs::File::create(scratch.join("stdout.txt")).expect("stdout file");
            let mut child = cmd.stdout(out).spawn().expect("spawn tapedeck");
            wait(&mut child, &what, RUN)
        }
        Reader::Gone => {
            let (read_end, write_end) = std::io::pipe().expect("pipe");
            drop(read_end);
            let mut child = cmd.stdout(write_end).spawn().expect("spawn tapedeck");
            drop(cmd);
            wait(&mut child, &what, RUN)
        }
        Reader::Head => {
            let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn tapedeck");
            drop(cmd);
            let pipe = child.stdout.take().expect("piped stdout");
            let mut head = Command::new("head")
                .args(["-c", "1"])
                .stdin(pipe)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn head");
            let code = wait(&mut child, &what, RUN);
            wait(&mut head, "head -c 1", RUN);
            code
        }
    };
    (code, std::fs::read_to_string(&err_path).unwrap_or_default())
}

/// A command under test. `{dir}` in its arguments is a fresh directory per run (for outputs
/// that must not exist yet); `wrote` is a file under it the command must still have written.
struct Case {
    name: &'static str,
    args: Vec<String>,
    wrote: Option<&'static str>,
    expected: i32,
    head_runs: usize,
}

fn p(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_owned()
}

/// Runs a case: once read whole (its code must be the expected one), `head_runs` times through
/// `head -c 1`, and once into a closed pipe. Every run exits with that code, prints no error,
/// and writes its files.
fn check_case(case: &Case, scratch: &Path) {
    let mut runs = vec![Reader::Whole, Reader::Gone];
    runs.extend(std::iter::repeat_n(Reader::Head, case.head_runs));
    for (i, reader) in runs.into_iter().enumerate() {
        let dir = scratch.join(format!("{}-{i}", case.name));
        std::fs::create_dir_all(&dir).expect("run dir");
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| a.replace("{dir}", &p(&dir)))
            .collect();
        let (code, err) = run_with(&args, reader, &dir);
        assert_eq!(
            code,
            Some(case.expected),
            "{} run {i} ({reader:?}): exit code changed; stderr:\n{err}",
            case.name
        );
        for bad in ["Broken pipe", "error", "panicked"] {
            assert!(
                !err.contains(bad),
                "{} run {i} ({reader:?}): stderr mentions {bad:?}:\n{err}",
                case.name
            );
        }
        if let Some(file) = case.wrote {
            assert!(
                dir.join(file).exists(),
                "{} run {i} ({reader:?}): {file} was not written",
                case.name
            );
        }
    }
}

/// The fixtures: a synthetic tape, a baseline and a candidate that answers every request
/// differently (a failing verdict, exit 1), a replay run of the two and its report.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    tape: PathBuf,
    run: PathBuf,
    report: PathBuf,
    base: TestServer,
    cand: TestServer,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_owned();
    let tape = root.join("tape");
    let ok = |o: &std::process::Output, what: &str| {
        assert!(
            o.status.code().is_some_and(|c| c == 0 || c == 1),
            "{what}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let o = crate::util::run(
        &["synth", "--out", &p(&tape), "--count", "60", "--seed", "17"],
        RUN,
    );
    ok(&o, "synth");
    let base = TestServer::start(|_| Reply::json("{\"v\":1,\"name\":\"a\"}"));
    let cand = TestServer::start(|_| Reply::json("{\"v\":2,\"name\":\"a\"}"));
    let run = root.join("run");
    let o = crate::util::run(
        &[
            "replay",
            "--tape",
            &p(&tape),
            "--target",
            &format!("baseline={}", base.url()),
            "--target",
            &format!("candidate={}", cand.url()),
            "--max",
            "--quiet",
            "--out",
            &p(&run),
        ],
        RUN,
    );
    ok(&o, "replay");
    let report = root.join("report");
    let o = crate::util::run(&["diff", "--run", &p(&run), "--report", &p(&report)], RUN);
    ok(&o, "diff");
    Fixture {
        _tmp: tmp,
        root,
        tape,
        run,
        report,
        base,
        cand,
    }
}

#[rustfmt::skip]
fn cases(f: &Fixture) -> Vec<Case> {
    let (tape, run, report) = (p(&f.tape), p(&f.run), p(&f.report));
    let (b, c) = (
        format!("baseline={}", f.base.url()),
        format!("candidate={}", f.cand.url()),
    );
    let case = |name, args: &[&str], wrote, expected, head_runs| Case {
        name,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        wrote,
        expected,
        head_runs,
    };
    let check = [
        "check",
        "--tape",
        &tape,
        "--baseline",
        &f.base.url(),
        "--candidate",
        &f.cand.url(),
        "--report",
        "{dir}/report",
        "--quiet",
    ];
    let (report_arg, verdict) = ("{dir}/report", Some("report/verdict.json"));
    vec![
        case("inspect", &["inspect", &tape], None, 0, HEAD_RUNS),
        case("inspect-json", &["inspect", "--json", &tape], None, 0, HEAD_RUNS),
        case("synth", &["synth", "--out", "{dir}/t", "--count", "30"], Some("t"), 0, HEAD_RUNS),
        case("diff", &["diff", "--run", &run, "--report", report_arg], verdict, 1, HEAD_RUNS),
        case("diff-json", &["diff", "--json", "--run", &run, "--report", report_arg], verdict, 1, HEAD_RUNS),
        case("check", &check, verdict, 1, HEAD_RUNS),
        case("replay", &["replay", "--tape", &tape, "--target", &b, "--target", &c, "--max", "--out", "{dir}/run"], Some("run"), 0, HEAD_RUNS),
        case("export-har", &["export-har", &tape, "--out", "-"], None, 0, HEAD_RUNS),
        case("ticket", &["ticket", "--report", &report, "--run", &run, "--out", "{dir}/ticket"], Some("ticket/ticket.json"), 0, HEAD_RUNS),
        // The demo records, replays and judges (seconds per run): fewer runs through `head`;
        // the closed-pipe run already makes every one of its writes fail.
        case("demo", &["demo", "--out", "{dir}/demo", "--requests", "200"], Some("demo/report/verdict.json"), 0, 3),
    ]
}

#[test]
fn issue_17_a_closed_stdout_never_changes_the_exit_code() {
    let f = fixture();
    let scratch = f.root.join("runs");
    for case in cases(&f) {
        check_case(&case, &scratch);
    }
}
