//! WebDAV tape locations (`http://`, `https://`; issue 18): the objstore tests' pipeline against a
//! real WebDAV server (WsgiDAV) on loopback.

use std::path::Path;
use std::process::Command;

use super::{STOP, local_parquet, python_server, run_cmd, text, upstream};
use crate::util::{Proc, Replay, free_port, tapedeck};

/// A WebDAV server (WsgiDAV, `pip install wsgidav cheroot`) serving `root`, killed by PID on
/// drop.
struct WebDav {
    _proc: Proc,
    port: u16,
}

impl WebDav {
    fn start(root: &Path, logs: &Path) -> WebDav {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "wsgidav.server.server_cli",
            "--host",
            "127.0.0.1",
            "--port",
        ])
        .arg(port.to_string())
        .arg("--root")
        .arg(root)
        .args(["--auth", "anonymous", "--no-config", "-q"]);
        WebDav {
            _proc: python_server(cmd, port, "wsgidav", "pip install wsgidav cheroot", logs),
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

/// `http(s)://` locations are WebDAV (issue 18: a storage backend added by following
/// ARCHITECTURE.md's recipe): a tape written there, inspected, replayed into a run there and
/// judged into reports there, every file landing on the server's disk.
#[test]
fn tapes_runs_and_reports_on_a_webdav_server() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("dav");
    std::fs::create_dir(&root).expect("dav root");
    let dav = WebDav::start(&root, tmp.path());
    let spool = tmp.path().join("spool");
    let n = 120;
    let tape = dav.url("svc/tape");
    let td = |args: &[&str]| {
        let mut c = tapedeck();
        c.env("TAPEDECK_SPOOL_DIR", &spool).args(args);
        let out = run_cmd(c, STOP);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        out
    };
    td(&[
        "synth",
        "--out",
        &tape,
        "--count",
        &n.to_string(),
        "--seed",
        "9",
    ]);
    let sealed = local_parquet(&root.join("svc/tape"));
    assert!(!sealed.is_empty(), "no sealed file reached the server");
    assert!(
        local_parquet(&spool).is_empty(),
        "{:?}",
        local_parquet(&spool)
    );
    let out = td(&["inspect", "--json", &tape]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    assert_eq!(v["exchanges"], n, "{v}");

    let (base, cand) = (upstream(), upstream());
    let run = dav.url("svc/runs/r1");
    Replay::new(&tape)
        .out(Path::new(&run))
        .target("baseline", &base.url())
        .target("candidate", &cand.url())
        .max()
        .env("TAPEDECK_SPOOL_DIR", spool.to_str().expect("utf-8"))
        .timeout(STOP)
        .summary();
    // Writes are not replayed without --allow-writes: the tape's reads went to both targets.
    let sent = cand.requests().len();
    assert!(
        sent > n / 2 && sent == base.requests().len(),
        "{sent} of {n}"
    );
    assert!(!local_parquet(&root.join("svc/runs/r1")).is_empty());

    let report = dav.url("svc/reports/r1");
    let mut c = tapedeck();
    c.env("TAPEDECK_SPOOL_DIR", &spool)
        .args(["diff", "--run", &run, "--report", &report, "--json"]);
    let out = run_cmd(c, STOP);
    let verdict: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(verdict["counts"]["paired"], sent, "{verdict}");
    for name in ["verdict.json", "report.md", "report.html", "junit.xml"] {
        assert!(
            root.join("svc/reports/r1").join(name).is_file(),
            "{name} not on the server"
        );
    }
}
