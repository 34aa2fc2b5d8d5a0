//! [`Check`]: a `tapedeck check` command line built from its parts, and its verdict.

use std::path::{Path, PathBuf};

use super::{Cli, cli_methods, verdict};

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

    /// Writes the report to `dir` (`--report`); [`Check::verdict`] reads it.
    pub fn report(mut self, dir: &Path) -> Self {
        self.cli = self.cli.flag("--report", dir);
        self.report = Some(dir.to_owned());
        self
    }

    /// `--rules FILE`.
    pub fn rules(self, file: &Path) -> Self {
        self.flag("--rules", file)
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

    /// `verdict.json` of the report directory.
    #[track_caller]
    pub fn verdict(&self) -> serde_json::Value {
        verdict(self.report.as_deref().expect("a check with --report"))
    }

    /// The report directory.
    pub fn report_dir(&self) -> &Path {
        self.report.as_deref().expect("a check with --report")
    }
}
