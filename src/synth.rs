//! `tapedeck synth`: write a synthetic tape (for trying tapedeck, tests and benchmarks).

use std::path::PathBuf;

use anyhow::Context;
use tapedeck_storage::synth::{SynthConfig, generate};
use tapedeck_storage::{TapeWriter, WhenFull};

use crate::util::thousands;

/// Write a tape of synthetic JSON API traffic.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tape directory to write (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of exchanges.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    count: u64,
    /// Random seed; the same seed writes the same exchanges.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Mean gap between exchanges in microseconds (Poisson arrivals).
    #[arg(long, default_value_t = 1000, value_name = "US")]
    mean_gap_us: i64,
    /// Start time of the first exchange, µs since the Unix epoch (default 2026-01-01T00:00:00Z).
    #[arg(long, value_name = "US")]
    start_us: Option<i64>,
    /// `source` label of the exchanges.
    #[arg(long, default_value = "synthetic")]
    source: String,
    #[command(flatten)]
    redact: crate::flags::RedactArgs,
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let redactor = args.redact.redactor()?;
    let mut cfg = SynthConfig {
        count: args.count,
        seed: args.seed,
        mean_gap_us: args.mean_gap_us.max(0),
        source: args.source,
        ..SynthConfig::default()
    };
    if let Some(s) = args.start_us {
        cfg.start_us = s;
    }
    let writer = TapeWriter::builder(&args.out)
        .when_full(WhenFull::Block)
        .open()
        .with_context(|| format!("opening tape {}", args.out.display()))?;
    for mut ex in generate(&cfg) {
        crate::flags::redact(&redactor, &mut ex);
        writer.append(ex).context("writing exchange")?;
    }
    let stats = writer.close().context("closing tape")?;
    crate::output::note!(
        "wrote {} exchanges to {} ({} sealed files)",
        thousands(stats.written),
        args.out.display(),
        stats.files_sealed
    );
    Ok(crate::EXIT_OK)
}
