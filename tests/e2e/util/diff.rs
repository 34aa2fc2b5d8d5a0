//! [`Diff`]: a `tapedeck diff` command line built from its parts, and its verdict.

use std::path::{Path, PathBuf};

use super::{Cli, cli_methods, verdict};

/// `tapedeck diff --run RUN`, with the flags a test needs.
///
/// ```ignore
/// let diff = Diff::of(&run).report(&report).noise("secondary");
/// assert_exit(&diff.run(), 1, "renamed field");
/// ```
#[derive(Debug, Clone)]
pub struct Diff {
    cli: Cli,
    report: Option<PathBuf>,
}

impl Diff {
    /// Judges the replay results in `run` (`--run`).
    pub fn of(run: &Path) -> Diff {
        Diff {
            cli: Cli::new("diff").flag("--run", run),
            report: None,
        }
    }

    /// One more run directory (`--run`), judged together with the others.
    pub fn and(self, run: &Path) -> Self {
        self.flag("--run", run)
    }

    /// Writes the report to `dir` (`--report`); [`Diff::verdict`] reads it.
    pub fn report(mut self, dir: &Path) -> Self {
        self.cli = self.cli.flag("--report", dir);
        self.report = Some(dir.to_owned());
        self
    }

    /// `--rules FILE`.
    pub fn rules(self, file: &Path) -> Self {
        self.flag("--rules", file)
    }

    cli_methods!();

    /// `verdict.json` of the report directory.
    #[track_caller]
    pub fn verdict(&self) -> serde_json::Value {
        verdict(self.report.as_deref().expect("a diff with --report"))
    }
}
