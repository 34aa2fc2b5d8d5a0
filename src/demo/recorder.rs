//! The demo's recorders: the real `tapedeck record` (this binary) as a child process, stopped
//! with SIGTERM so its tape is sealed, and killed if the demo fails first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

/// A running `tapedeck record` child process.
pub(super) struct Recorder {
    child: std::process::Child,
    guard: KillOnDrop,
    pub(super) addr: std::net::SocketAddr,
    tape: PathBuf,
    log: PathBuf,
}

impl Recorder {
    /// Starts `tapedeck record` in front of `upstream` into `tape` and waits until it listens.
    /// The port is picked here and bound by the child a moment later; if another process took
    /// it in between, the child says so and the demo tries another port (three times at most).
    pub(super) fn start(
        tape: &Path,
        upstream: std::net::SocketAddr,
        engine: &str,
        source: &str,
    ) -> anyhow::Result<Recorder> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(tape, upstream, engine, source)? {
                Ok(rec) => return Ok(rec),
                Err(taken) if attempt < 3 => {
                    tracing::debug!(
                        port = taken,
                        "the recorder's port was taken; trying another"
                    );
                }
                Err(taken) => {
                    bail!("tapedeck record could not listen: port {taken} was taken, three times")
                }
            }
        }
    }

    /// One start; `Ok(Err(port))` when the child could not listen on the port picked for it.
    fn start_once(
        tape: &Path,
        upstream: std::net::SocketAddr,
        engine: &str,
        source: &str,
    ) -> anyhow::Result<Result<Recorder, u16>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("picking a port for the recorder")?
            .port();
        let exe = std::env::current_exe().context("locating the tapedeck binary")?;
        let log_path = tape.with_extension("record.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(exe)
            .args([
                "record",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                &format!("http://{upstream}"),
                "--tape",
                &tape.display().to_string(),
                "--source",
                source,
                "--admin",
                "off",
                "--engine",
                engine,
                "--flush-interval",
                "200ms",
                // Nothing is in flight when the demo stops the recorder: don't wait the default 5 s.
                "--grace-period",
                "1s",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting tapedeck record")?;
        let guard = KillOnDrop(Some(child.id()));
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("tapedeck record did not start listening on {addr} within 20 s");
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("cannot listen on") {
                    return Ok(Err(port));
                }
                bail!(
                    "tapedeck record exited early ({status}); its log is {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Ok(Recorder {
            child,
            guard,
            addr,
            tape: tape.to_owned(),
            log: log_path,
        }))
    }

    /// SIGTERM, a clean exit (bounded); returns how many exchanges the tape holds.
    pub(super) fn stop(mut self) -> anyhow::Result<u64> {
        let pid = self.child.id();
        // A signal, not the `kill` program: the container image has no programs besides tapedeck.
        signal_pid(pid, Signal::SIGTERM)
            .with_context(|| format!("sending SIGTERM to the recorder (pid {pid})"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                bail!("tapedeck record did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.guard.0 = None;
        if !exit.success() {
            bail!(
                "tapedeck record exited with {exit}; its log is {}",
                self.log.display()
            );
        }
        let tape = tapedeck_storage::Tape::open(&[self.tape.as_path()])
            .with_context(|| format!("opening {}", self.tape.display()))?;
        let mut n = 0u64;
        for ex in tape.exchanges(tapedeck_storage::Filter::default()) {
            ex.with_context(|| format!("reading {}", self.tape.display()))?;
            n += 1;
        }
        Ok(n)
    }
}

/// Starts `tapedeck record` in front of `upstream`, drives traffic through it, stops it with
/// SIGTERM and returns how many requests succeeded.
pub(super) fn record(
    rt: &tokio::runtime::Runtime,
    tape: &Path,
    upstream: std::net::SocketAddr,
    requests: usize,
    seed: u64,
    engine: &str,
) -> anyhow::Result<u64> {
    let rec = Recorder::start(tape, upstream, engine, &upstream.to_string())?;
    let paths = super::traffic::plan(requests, seed);
    let sent = rt.block_on(super::traffic::drive(
        &format!("http://{}", rec.addr),
        paths,
        8,
        seed,
    ))?;
    if sent.failed > 0 {
        bail!(
            "{} of {requests} demo requests failed through the recorder",
            sent.failed
        );
    }
    rec.stop()?;
    Ok(sent.ok)
}

fn signal_pid(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::errno::Errno::ESRCH)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
}

struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = signal_pid(pid, Signal::SIGKILL);
        }
    }
}
