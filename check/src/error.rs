//! What stops a check before it has a verdict (the CLI exits 2 on each).

use std::net::SocketAddr;
use std::path::PathBuf;

use tapedeck_diff::DiffError;
use tapedeck_mock::MockError;
use tapedeck_replay::ReplayError;
use tapedeck_storage::StorageError;

use crate::corpus::CorpusError;

/// Why a check could not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// An output location holds an earlier run's data.
    #[error(
        "{} already exists: choose another {choose} (or remove it) so results of two runs are not mixed",
        path.display()
    )]
    Exists {
        /// The location.
        path: PathBuf,
        /// What to choose instead: `--out`, `--report`.
        choose: &'static str,
    },
    /// The replay settings cannot work.
    #[error("invalid replay settings{phase}")]
    ReplaySettings {
        /// Which replay: empty for the tape's, ` (--chaos)`, ` (--corpus)`.
        phase: &'static str,
        /// What is wrong.
        #[source]
        source: ReplayError,
    },
    /// The judge's settings cannot work.
    #[error("invalid judge settings")]
    JudgeSettings(#[source] DiffError),
    /// Two dependencies have one name.
    #[error("--mock `{0}` is given twice")]
    DuplicateDependency(String),
    /// The trace header of the mocks is not a header name.
    #[error("--mock-trace-header `{0}` is not a header name")]
    TraceHeader(String),
    /// `chaos` without dependencies to inject faults into.
    #[error("--chaos needs at least one --mock dependency to inject faults into")]
    ChaosWithoutDependencies,
    /// The faults file could not be read or is invalid.
    #[error("--chaos {}", path.display())]
    Chaos {
        /// The faults file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<MockError>,
    },
    /// A dependency mock could not start.
    #[error("starting mock `{name}` on {addr}")]
    MockStart {
        /// The dependency.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<MockError>,
    },
    /// A dependency mock could not stop cleanly (its calls tape).
    #[error("stopping mock `{name}`")]
    MockStop {
        /// The dependency.
        name: String,
        /// Why.
        #[source]
        source: Box<MockError>,
    },
    /// A replay failed.
    #[error("{phase} failed")]
    Replay {
        /// Which replay: `replay`, `replay with faults (--chaos)`, `replay of the corpus`.
        phase: &'static str,
        /// Why.
        #[source]
        source: ReplayError,
    },
    /// The judge failed.
    #[error("diff failed")]
    Diff(#[source] DiffError),
    /// The report location could not be prepared or uploaded.
    #[error("report location {}", path.display())]
    ReportLocation {
        /// The location.
        path: PathBuf,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The reports could not be written.
    #[error("writing reports to {}", path.display())]
    Reports {
        /// The report directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: DiffError,
    },
    /// The regression corpus could not be read or replayed.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
}
