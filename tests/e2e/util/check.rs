//! [`Check`]: a `tapedeck check` command line built from its parts, and its verdict.

use std::path::PathBuf;

use super::{Cli, cli_methods, report_methods};

/// `tapedeck check --tape TAPE --baseline URL --candidate URL`, with the flags a test needs.
///
/// ```ignore
/// let check = Check::new(&tape, &v1.url(), &v2.url()).rules(&rules).report(&report).quiet();
/// assert_exit(&check.run(), 1, "regression");
/// assert_eq!(check.verdict()["verdict"], "fail");
/// ```
#[derive(Debug, Clone)]
pub struct Check {
    cli: Cli,
    report: Option<PathBuf>,
}

impl Check {
    /// Checks `candidate` against `baseline` on the traffic of `tape`.
    pub fn new(tape: impl AsRef<std::ffi::OsStr>, baseline: &str, candidate: &str) -> Check {
        Check {
            cli: Cli::new("check")
                .flag("--tape", tape)
                .flag("--baseline", baseline)
                .flag("--candidate", candidate),
            report: None,
        }
    }

    /// `--secondary URL` (the noise target).
    pub fn secondary(self, url: &str) -> Self {
        self.flag("--secondary", url)
    }

    /// `--mock NAME=TAPE@ADDR`.
    pub fn mock(self, spec: &str) -> Self {
        self.flag("--mock", spec)
    }

    /// `--allow-writes`.
    pub fn allow_writes(self) -> Self {
        self.arg("--allow-writes")
    }

    /// `--quiet`.
    pub fn quiet(self) -> Self {
        self.arg("--quiet")
    }

    cli_methods!();
    report_methods!();
}
