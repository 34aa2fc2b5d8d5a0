//! [`Replay`]: a `tapedeck replay` command line built from its parts.

use std::path::{Path, PathBuf};

use tapedeck_storage::Exchange;

use super::{Cli, Proc, cli_methods, json_stdout, read_in_order};

/// `tapedeck replay --tape TAPE`, with targets, an output directory and the flags a test needs.
///
/// ```ignore
/// let v = Replay::new(&tape).out(&run).target("a", &a.url()).max().summary();
/// let results = Replay::new(&tape).out(&run).target("t", &url).args(["--rate", "50"]).run();
/// ```
#[derive(Debug, Clone)]
pub struct Replay {
    cli: Cli,
    out: Option<PathBuf>,
}

impl Replay {
    /// Replays the tape at `tape`.
    pub fn new(tape: impl AsRef<std::ffi::OsStr>) -> Replay {
        Replay {
            cli: Cli::new("replay").flag("--tape", tape),
            out: None,
        }
    }

    /// Writes the results to `dir` (`--out`).
    pub fn out(mut self, dir: &Path) -> Self {
        self.cli = self.cli.flag("--out", dir);
        self.out = Some(dir.to_owned());
        self
    }

    /// One more target, `--target NAME=URL`.
    pub fn target(mut self, name: &str, url: &str) -> Self {
        self.cli = self.cli.flag("--target", format!("{name}={url}"));
        self
    }

    /// Closed loop, as fast as the targets answer (`--max`).
    pub fn max(self) -> Self {
        self.arg("--max")
    }

    /// `--allow-writes`.
    pub fn allow_writes(self) -> Self {
        self.arg("--allow-writes")
    }

    cli_methods!();

    /// Runs it with `--json`; it must succeed. Returns the summary.
    #[track_caller]
    pub fn summary(&self) -> serde_json::Value {
        json_stdout(&self.clone().arg("--json").run())
    }

    /// Starts it in the background (logs in `log_dir`); killed by PID when dropped.
    pub fn start(&self, log_dir: &Path) -> Proc {
        self.cli.start(log_dir)
    }

    /// The results written to [`Replay::out`], in the order the tape holds them.
    pub fn results(&self) -> Vec<Exchange> {
        read_in_order(self.out.as_deref().expect("a replay with --out"))
    }
}
