//! `tapedeck seal`: seal the spool segments a recorder left in a tape, without starting one.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tapedeck_storage::TapeWriter;

use crate::util::{human_bytes, thousands};

/// Seal what a recorder left in a tape's spool (a crash, a kill) into Parquet now.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tape directory (or object-store URL: its local spool is sealed and the files uploaded).
    /// Refused while a recorder writes to it: a running recorder seals its own spool.
    #[arg(value_name = "TAPE")]
    tape: PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let done = TapeWriter::builder(&args.tape)
        .seal_leftovers()
        .with_context(|| format!("sealing the spool of {}", args.tape.display()))?;
    if done.segments == 0 {
        crate::output::note!("nothing to seal in {}", args.tape.display());
    } else {
        crate::output::note!(
            "sealed {} exchanges from {} spool segments of {} into {} files ({})",
            thousands(done.rows),
            thousands(done.segments),
            args.tape.display(),
            thousands(done.files),
            human_bytes(done.bytes),
        );
    }
    if done.left > 0 || done.failed > 0 {
        bail!(
            "{} segment(s) stay in the spool and {} attempt(s) failed (see the messages above; an unreadable segment is moved aside as .corrupt)",
            done.left,
            done.failed
        );
    }
    Ok(crate::EXIT_OK)
}
