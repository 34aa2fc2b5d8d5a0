//! [`Recorder`]: a running `tapedeck record` built the way a test needs it.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use super::{Proc, curl, free_port, read_tape, tapedeck, wait_until};

/// The data plane a recorder runs (`--engine`). Record tests run on both: see
/// [`on_both_engines!`](crate::on_both_engines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// hyper, the default.
    Hyper,
    /// pingora, kept while it passes the same suite.
    Pingora,
}

impl Engine {
    /// The `--engine` value.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Hyper => "hyper",
            Engine::Pingora => "pingora",
        }
    }
}

/// Where a [`Recorder`]'s admin listener goes.
#[derive(Debug, Clone)]
enum AdminAt {
    /// A free loopback port picked at start.
    Free,
    /// `--admin off`.
    Off,
    /// Whatever the config file or the default says (no `--admin` flag).
    Unset,
}

/// Builds a running `tapedeck record` for a test: the one fixture of every recorder test
/// (ports picked at run time, logs in a directory, killed by PID on drop).
///
/// ```ignore
/// let rec = Recorder::builder(&up.url()).tape(&dir).args(&["--max-body", "64KiB"]).engine(engine).start(logs);
/// ```
#[derive(Debug, Clone)]
pub struct RecorderBuilder {
    /// `None`: no `--upstream` flag (forward-proxy mode).
    upstream: Option<String>,
    tape: Option<std::path::PathBuf>,
    args: Vec<String>,
    engine: Engine,
    admin: AdminAt,
    grace: String,
    threads: Option<String>,
    env: Vec<(String, String)>,
    log_level: String,
    log_name: String,
}

/// A running `tapedeck record` (see [`RecorderBuilder`]).
#[derive(Debug)]
pub struct Recorder {
    pub proc: Proc,
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    /// The admin listener's port, when the builder picked one.
    pub admin: Option<u16>,
    /// The tape directory, when recording to a local one.
    pub tape: Option<std::path::PathBuf>,
    /// The engine it runs.
    pub engine: Engine,
}

impl Recorder {
    /// A recorder forwarding to `upstream` (a URL), with: no tape (set one with
    /// [`RecorderBuilder::tape`], or pass `--no-record`), the admin listener on a free port,
    /// `--grace-period 1s`, `--threads 2`, the hyper engine, `RUST_LOG=warn`.
    pub fn builder(upstream: &str) -> RecorderBuilder {
        RecorderBuilder {
            upstream: Some(upstream.to_owned()),
            tape: None,
            args: Vec::new(),
            engine: Engine::Hyper,
            admin: AdminAt::Free,
            grace: "1s".to_owned(),
            threads: Some("2".to_owned()),
            env: Vec::new(),
            log_level: "warn".to_owned(),
            log_name: "tapedeck".to_owned(),
        }
    }
}

impl RecorderBuilder {
    /// Records into this directory (`--tape`).
    pub fn tape(mut self, dir: &Path) -> Self {
        self.tape = Some(dir.to_owned());
        self
    }

    /// Records into this location as written (an object-store URL, `--tape`), with no local
    /// directory to read back.
    pub fn tape_url(mut self, url: &str) -> Self {
        self.args.extend(["--tape".to_owned(), url.to_owned()]);
        self
    }

    /// More flags, after the builder's own.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// A forward proxy (`--forward`) with no `--upstream`.
    pub fn forward_only() -> RecorderBuilder {
        let mut b = Recorder::builder("");
        b.upstream = None;
        b.args.push("--forward".into());
        b
    }

    /// Runs this engine.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// `--admin off`.
    pub fn admin_off(mut self) -> Self {
        self.admin = AdminAt::Off;
        self
    }

    /// No `--admin` flag (the config file's or the default address applies).
    pub fn admin_unset(mut self) -> Self {
        self.admin = AdminAt::Unset;
        self
    }

    /// `--grace-period`.
    pub fn grace(mut self, d: &str) -> Self {
        self.grace = d.to_owned();
        self
    }

    /// `--threads N`.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.to_string());
        self
    }

    /// No `--threads` flag (the default: one per CPU).
    pub fn default_threads(mut self) -> Self {
        self.threads = None;
        self
    }

    /// An environment variable of the process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// `RUST_LOG` of the process (default `warn`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// Logs go to `<logs>/<name>.stdout` and `.stderr` (default name `tapedeck`).
    pub fn log_name(mut self, name: &str) -> Self {
        self.log_name = name.to_owned();
        self
    }

    /// The command line, without the binary.
    fn argv(&self, port: u16, admin: Option<u16>) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "record".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--engine".into(),
            self.engine.name().into(),
            "--grace-period".into(),
            self.grace.clone(),
        ];
        if let Some(u) = &self.upstream {
            a.extend(["--upstream".into(), u.clone()]);
        }
        if let Some(t) = &self.tape {
            a.extend(["--tape".into(), t.to_str().expect("utf-8 path").to_owned()]);
        }
        match (&self.admin, admin) {
            (AdminAt::Free, Some(p)) => a.extend(["--admin".into(), format!("127.0.0.1:{p}")]),
            (AdminAt::Off, _) => a.extend(["--admin".into(), "off".into()]),
            _ => {}
        }
        if let Some(t) = &self.threads {
            a.extend(["--threads".into(), t.clone()]);
        }
        a.extend(self.args.iter().cloned());
        a
    }

    /// Starts the recorder and waits (bounded) until its listeners accept connections.
    pub fn start(self, logs: &Path) -> Recorder {
        // A port picked by `free_port` is free only until someone else takes it: another test's
        // server, or the kernel for an outgoing connection. When the recorder cannot listen on
        // it, it exits at once: pick new ports and start again (bounded).
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_start(logs) {
                Ok(rec) => return rec,
                Err(stderr) if tries < 4 && stderr.contains("cannot listen on") => continue,
                Err(stderr) => panic!(
                    "recorder ({}) did not start; stderr:\n{stderr}",
                    self.engine.name()
                ),
            }
        }
    }

    /// One start on fresh ports: the running recorder once its ports accept and it is still
    /// the process that runs (a port that accepts could be someone else's), or its stderr.
    fn try_start(&self, logs: &Path) -> Result<Recorder, String> {
        let port = free_port();
        let admin = matches!(self.admin, AdminAt::Free).then(free_port);
        let argv = self.argv(port, admin);
        let out = std::fs::File::create(logs.join(format!("{}.stdout", self.log_name)))
            .expect("stdout log");
        let err_path = logs.join(format!("{}.stderr", self.log_name));
        let err = std::fs::File::create(&err_path).expect("stderr log");
        let mut cmd = tapedeck();
        cmd.env("RUST_LOG", &self.log_level);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(&argv)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn tapedeck record");
        let mut rec = Recorder {
            proc: Proc { child },
            port,
            admin,
            tape: self.tape.clone(),
            engine: self.engine,
        };
        let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();
        let exited = |rec: &mut Recorder| rec.proc.child.try_wait().ok().flatten().is_some();
        for p in std::iter::once(port).chain(admin) {
            let up = wait_until(Duration::from_secs(30), || {
                exited(&mut rec)
                    || TcpStream::connect_timeout(
                        &([127, 0, 0, 1], p).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
            });
            if !up || exited(&mut rec) {
                return Err(stderr());
            }
        }
        // Ready means every listener accepts (`/readyz`); without an admin listener of its own,
        // still running a moment later means it did not fail to bind.
        let ready = match admin {
            Some(a) => wait_until(Duration::from_secs(30), || {
                exited(&mut rec) || curl(&[&format!("http://127.0.0.1:{a}/readyz")]).0 == 200
            }),
            None => {
                std::thread::sleep(Duration::from_millis(100));
                true
            }
        };
        if !ready || exited(&mut rec) {
            return Err(stderr());
        }
        Ok(rec)
    }
}

impl Recorder {
    /// `http://127.0.0.1:PORT{path}` of the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self
            .admin
            .expect("this recorder has no admin listener of its own");
        format!("http://127.0.0.1:{admin}{path}")
    }

    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        curl(&[&self.admin_url(path)])
    }

    /// The value of one sample line (`name{labels}`) of `/metrics`.
    pub fn metric(&self, sample: &str) -> Option<u64> {
        let (status, text) = self.admin_get("/metrics");
        assert_eq!(status, 200, "{text}");
        text.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// SIGTERM, and a clean exit (bounded).
    pub fn terminate(&mut self) {
        self.proc.signal("TERM");
        let status = self
            .proc
            .wait_timeout(Duration::from_secs(60))
            .unwrap_or_else(|| {
                panic!(
                    "recorder ({}) did not exit after SIGTERM",
                    self.engine.name()
                )
            });
        assert!(
            status.success(),
            "recorder ({}) exited with {status}",
            self.engine.name()
        );
    }

    /// SIGTERM, a clean exit, and the tape's exchanges.
    pub fn stop(mut self) -> Vec<tapedeck_storage::Exchange> {
        self.terminate();
        read_tape(self.tape.as_deref().expect("a recorder with a local tape"))
    }
}
