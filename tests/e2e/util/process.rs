//! Processes: the `tapedeck` binary under test run to completion ([`run`], [`Cli`]) or in the
//! background ([`Proc`], killed by PID on drop), bounded waits, ports, curl.

use std::ffi::{OsStr, OsString};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `Command` for the `tapedeck` binary under test.
pub fn tapedeck() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapedeck"));
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

/// Runs `tapedeck` with `args` to completion (bounded by `timeout`), capturing its output.
pub fn run(args: &[&str], timeout: Duration) -> Output {
    run_command(tapedeck().args(args), timeout)
}

/// Runs `cmd` to completion (bounded by `timeout`: past it the process is killed by PID and the
/// test fails, showing what it printed), capturing its output.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain both pipes while waiting, so a chatty command cannot block on a full pipe.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let text = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
                    String::from_utf8_lossy(
                        &h.map(|h| h.join().unwrap_or_default()).unwrap_or_default(),
                    )
                    .into_owned()
                };
                panic!(
                    "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    text(out),
                    text(err)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().expect("output reader"))
            .unwrap_or_default()
    };
    Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// stdout of a finished command, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Polls `f` every 20 ms until it is true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    wait_until(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// A child process that is killed (by PID) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// Starts `tapedeck` with `args`, stdout and stderr captured to files in `log_dir`.
    pub fn start(args: &[&str], log_dir: &Path) -> Proc {
        let (sub, rest) = args.split_first().expect("a subcommand");
        Cli::new(sub).args(rest).start(log_dir)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with the `kill` program.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit (bounded); `None` if it is still running after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs curl with `args` (and a 30 s limit); returns (HTTP status, body). Status 0 when no
/// response arrived.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("/usr/bin/curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A small multi-threaded tokio runtime for a test's clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Asserts that `o` exited with `code`, showing `what`, stdout and stderr when it did not.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32, what: impl std::fmt::Display) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The JSON file at `path` (panics naming the file when it is missing or not JSON).
#[track_caller]
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `verdict.json` of the report directory `report`.
#[track_caller]
pub fn verdict(report: &Path) -> serde_json::Value {
    read_json(&report.join("verdict.json"))
}

/// stdout of a command that must have succeeded, as JSON (a `--json` summary).
#[track_caller]
pub fn json_stdout(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// How long a [`Cli`] may run by default.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// A `tapedeck` command line to run to completion: the subcommand, its arguments, environment
/// variables and a time bound ([`RUN_TIMEOUT`] unless set). [`Replay`](super::Replay),
/// [`Check`](super::Check) and [`Diff`](super::Diff) build on it; use it directly for the
/// other subcommands.
///
/// ```ignore
/// let o = Cli::new("ticket").flag("--report", &report).flag("--out", &out).env("TOKEN", "t").run();
/// ```
#[derive(Debug, Clone)]
pub struct Cli {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl Cli {
    /// `tapedeck <subcommand>`.
    pub fn new(subcommand: &str) -> Cli {
        Cli {
            args: vec![subcommand.into()],
            env: Vec::new(),
            timeout: RUN_TIMEOUT,
        }
    }

    /// One more argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// More arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// A flag and its value (`--out DIR`).
    pub fn flag(self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.arg(name).arg(value)
    }

    /// An environment variable of the process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// How long it may run (past it the process is killed by PID and the test fails).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `tapedeck` command, not started.
    pub fn command(&self) -> Command {
        let mut cmd = tapedeck();
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs it to completion (bounded), capturing its output.
    pub fn run(&self) -> Output {
        run_command(&mut self.command(), self.timeout)
    }

    /// Starts it in the background, stdout and stderr to `tapedeck.stdout` / `.stderr` in
    /// `log_dir`; killed by PID when the [`Proc`] is dropped.
    pub fn start(&self, log_dir: &Path) -> Proc {
        let out = std::fs::File::create(log_dir.join("tapedeck.stdout")).expect("stdout log");
        let err = std::fs::File::create(log_dir.join("tapedeck.stderr")).expect("stderr log");
        let child = self
            .command()
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn tapedeck");
        Proc { child }
    }
}

/// The chainable [`Cli`] methods (`arg`, `args`, `flag`, `env`, `timeout`) for a builder that
/// keeps its command line in a field `cli`.
macro_rules! cli_methods {
    () => {
        /// One more argument.
        pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
            self.cli = self.cli.arg(a);
            self
        }

        /// More arguments.
        pub fn args<S: AsRef<std::ffi::OsStr>>(
            mut self,
            args: impl IntoIterator<Item = S>,
        ) -> Self {
            self.cli = self.cli.args(args);
            self
        }

        /// A flag and its value.
        pub fn flag(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
            self.cli = self.cli.flag(name, value);
            self
        }

        /// An environment variable of the process.
        pub fn env(mut self, k: &str, v: &str) -> Self {
            self.cli = self.cli.env(k, v);
            self
        }

        /// How long it may run.
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.cli = self.cli.timeout(timeout);
            self
        }

        /// Runs it to completion (bounded), capturing its output.
        pub fn run(&self) -> std::process::Output {
            self.cli.run()
        }
    };
}
pub(crate) use cli_methods;

/// `report`, `rules`, `verdict` and `report_dir` for a builder of a command that writes a report
/// (`check`, `diff`), with fields `cli` and `report: Option<PathBuf>`.
macro_rules! report_methods {
    () => {
        /// Writes the report to `dir` (`--report`); `verdict` reads it.
        pub fn report(mut self, dir: &std::path::Path) -> Self {
            self.cli = self.cli.flag("--report", dir);
            self.report = Some(dir.to_owned());
            self
        }

        /// `--rules FILE`.
        pub fn rules(self, file: &std::path::Path) -> Self {
            self.flag("--rules", file)
        }

        /// The report directory.
        pub fn report_dir(&self) -> &std::path::Path {
            self.report.as_deref().expect("a command with --report")
        }

        /// `verdict.json` of the report directory.
        #[track_caller]
        pub fn verdict(&self) -> serde_json::Value {
            $crate::util::verdict(self.report_dir())
        }
    };
}
pub(crate) use report_methods;
