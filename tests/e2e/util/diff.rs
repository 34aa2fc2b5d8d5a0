//! [`Diff`]: a `tapedeck diff` command line built from its parts, and its verdict.

use std::path::{Path, PathBuf};

use super::{Cli, cli_methods, report_methods};

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

    cli_methods!();
    report_methods!();
}
