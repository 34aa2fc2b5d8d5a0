//! The side-by-side benchmark harness (`benches/run.sh`, issue 7) runs to completion in smoke mode.
//!
//! It measures nothing here: a smoke run takes a few seconds per section on a loaded machine, with
//! the debug binary. What it proves is that the harness still drives today's CLI (flags, output
//! formats, admin metrics) and produces every table, so a full run on an idle machine does not fail
//! half-way. Needs `nginx`, `wrk`, `h2load`, `openssl` and `taskset` (`.ci/run` installs them).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The programs the harness drives besides tapedeck.
const NEEDS: [&str; 5] = ["nginx", "wrk", "h2load", "openssl", "taskset"];

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The trimmed cells of every markdown table row of `report`.
fn table_rows(report: &str) -> impl Iterator<Item = Vec<&str>> {
    report.lines().map(|l| {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect::<Vec<_>>()
    })
}

/// The cells of the markdown table row whose first cells are `key` (trimmed).
fn row<'a>(report: &'a str, key: &[&str]) -> Vec<&'a str> {
    table_rows(report)
        .find(|cells| cells.len() > key.len() && cells.iter().zip(key).all(|(c, k)| c == k))
        .unwrap_or_else(|| panic!("no row {key:?} in the report:\n{report}"))
}

/// Every table row whose first cells are `key` and whose next cell starts with `prefix` (the
/// tapedeck targets carry the engine after their kind: `record hyper`, `passthrough pingora`).
fn rows_of<'a>(report: &'a str, key: &[&str], prefix: &str) -> Vec<Vec<&'a str>> {
    table_rows(report)
        .filter(|cells| {
            cells.len() > key.len()
                && cells.iter().zip(key).all(|(c, k)| c == k)
                && cells[key.len()].starts_with(prefix)
        })
        .collect()
}

fn number(cell: &str) -> f64 {
    cell.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

#[test]
fn harness_smoke_run_produces_every_table() {
    let missing: Vec<_> = NEEDS.iter().filter(|p| !on_path(p)).collect();
    assert!(
        missing.is_empty(),
        "the benchmark harness needs {missing:?} (apt-get install nginx wrk nghttp2-client openssl util-linux; .ci/run does)"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Its own process group, so that a hung run is stopped with everything it started.
    let mut child = Command::new("bash")
        .arg(root.join("benches/run.sh"))
        .arg("--smoke")
        .env("TAPEDECK", env!("CARGO_BIN_EXE_tapedeck"))
        .env("SECTIONS", "proxy,growth,replay,mock")
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start benches/run.sh");
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("wait for run.sh").is_none() {
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!("benches/run.sh --smoke did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("collect run.sh output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "benches/run.sh --smoke failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let path = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("results: "))
        .unwrap_or_else(|| panic!("run.sh did not say where the results are:\n{stdout}"));
    let report = std::fs::read_to_string(path.trim()).expect("read the smoke results");
    let _ = std::fs::remove_file(path.trim());

    // Proxy section: every target answered and used CPU (the proxy's CPU per request is
    // measured), the recorder dropped nothing.
    for target in ["direct", "nginx", "record", "passthrough"] {
        let rows = rows_of(&report, &["/small", "16"], target);
        assert!(!rows.is_empty(), "no {target} row:\n{report}");
        for cells in rows {
            assert!(
                number(cells[3]) > 0.0,
                "{target} served no requests:\n{report}"
            );
            if target != "direct" {
                assert!(
                    number(cells[6]) > 0.0,
                    "{target}: no CPU per request:\n{report}"
                );
            }
            if target == "record" || target == "passthrough" {
                assert_eq!(number(cells[8]), 0.0, "{target} dropped records:\n{report}");
            }
        }
    }
    // Replay sections: each closed-loop pair (HTTP/1.1 against wrk, h2c and TLS h2 against h2load)
    // and the open-loop accuracy row.
    for (proto, reference) in [
        ("HTTP/1.1", "wrk"),
        ("h2c", "h2load"),
        ("h2 (TLS)", "h2load"),
    ] {
        for generator in [reference, "tapedeck replay --max"] {
            let cells = row(&report, &[proto, generator]);
            assert!(
                number(cells[2]) > 0.0 && number(cells[3]) > 0.0,
                "{proto} {generator}: no requests or no CPU time:\n{report}"
            );
        }
    }
    // Open loop: one row per tape (the run's achieved rate in the fourth cell).
    for tape in ["recorded", "synth"] {
        let open = row(&report, &[tape, "1,000", "1"]);
        assert!(
            number(open[3]) > 0.0,
            "open loop sent nothing ({tape}):\n{report}"
        );
    }
    // Growth section: the probe ran through the recorder with and without the connections
    // arriving, and every arriving connection was answered.
    let quiet = row(&report, &["this build", "0", "1"]);
    assert!(number(quiet[5]) > 0.0, "no probe latency:\n{report}");
    let growing = table_rows(&report)
        .find(|c| c.len() > 4 && c[0] == "this build" && c[1] != "0" && c[2] == "1")
        .unwrap_or_else(|| panic!("no growth row with connections:\n{report}"));
    assert_eq!(
        growing[1], growing[3],
        "not every arriving connection was answered:\n{report}"
    );
    // Mock section: every server answered (the harness refuses runs with misses).
    for server in ["mock, untraced", "mock, traced", "mock, traced, --out"] {
        assert!(
            number(row(&report, &[server])[1]) > 0.0,
            "{server} served nothing:\n{report}"
        );
    }
}
