//! `tapedeck distill`: a small tape that keeps what a regression check needs (see
//! `tapedeck_diff::distill`): every route × status × content type × response shape × latency
//! band, at least `--per-group` exchanges each, at least `--per-route` per route, every error
//! exchange, in time order.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tapedeck_diff::distill::{DEFAULT_PER_ROUTE, DistillOptions, distill};
use tapedeck_diff::route::RouteKeys;
use tapedeck_storage::{Tape, TapeWriter, WhenFull};

use crate::util::thousands;

/// Write a small tape that keeps every kind of exchange of a large one.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
tapedeck distill --tape ./tapes/svc --out ./tapes/svc-ci --per-group 20\n\n\
Groups: route (method, path template, query parameter names) × status × content type × response\n\
shape (JSON key/type signature) × latency band (powers of 4 from 2 ms). Keeps the first K of each\n\
group, the first N of each route, and every error exchange (5xx, no response), in the tape's order. Object-storage URLs work\n\
for --tape and --out.")]
pub(crate) struct Args {
    /// The tape to distill: a directory, file or object-storage URL (repeatable).
    #[arg(long, required = true, value_name = "PATH")]
    tape: Vec<PathBuf>,
    /// The distilled tape to write (a new directory or URL prefix).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Exchanges kept per group.
    #[arg(long, default_value_t = 5, value_name = "K")]
    per_group: u64,
    /// Exchanges kept per route at least (default: twice the judge's `min_samples` of 20).
    #[arg(long, default_value_t = DEFAULT_PER_ROUTE, value_name = "N")]
    per_route: u64,
    /// Rules file of the judge: its route templates and `route_cardinality` key the routes.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Read on past damaged tape files.
    #[arg(long)]
    skip_corrupt: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    if args.per_group == 0 {
        anyhow::bail!("--per-group must be at least 1");
    }
    let route_keys = match &args.rules {
        Some(p) => {
            let rules = tapedeck_diff::RulesFile::load(p)?;
            RouteKeys {
                templates: rules.routes,
                cardinality: rules.settings.route_cardinality,
            }
        }
        None => RouteKeys::default(),
    };
    let tape = Tape::open(&args.tape)
        .with_context(|| format!("opening tape {}", args.tape[0].display()))?;
    let writer = TapeWriter::builder(&args.out)
        .new_tape_only(true)
        .when_full(WhenFull::Block)
        .metadata("tapedeck.distilled_from", joined(&args.tape))
        .metadata("tapedeck.distill.per_group", args.per_group.to_string())
        .metadata("tapedeck.distill.per_route", args.per_route.to_string())
        .open()
        .with_context(|| format!("opening the output tape {}", args.out.display()))?;
    let stats = distill(
        &tape,
        &writer,
        &DistillOptions {
            per_group: args.per_group,
            per_route: args.per_route,
            route_keys,
            skip_corrupt: args.skip_corrupt,
        },
    );
    // Close (seal, upload) even after an error, so nothing is left half-written.
    let closed = writer.close();
    let stats = stats.context("distilling")?;
    closed.with_context(|| format!("closing the output tape {}", args.out.display()))?;
    let mut out = crate::output::stdout();
    let pct = if stats.rows_in > 0 {
        100.0 * stats.rows_out as f64 / stats.rows_in as f64
    } else {
        0.0
    };
    writeln!(
        out,
        "distilled {} of {} exchanges ({pct:.1} %) into {}",
        thousands(stats.rows_out),
        thousands(stats.rows_in),
        args.out.display()
    )?;
    writeln!(
        out,
        "groups kept / found: {} / {} (route × status × content type × shape × latency band) on {} routes; \
         up to {} per group and at least {} per route ({} groups had fewer and are kept whole); \
         error exchanges kept: {}",
        thousands(stats.groups_kept),
        thousands(stats.groups_found),
        thousands(stats.routes),
        args.per_group,
        args.per_route,
        thousands(stats.groups_short),
        thousands(stats.errors_kept)
    )?;
    for s in &stats.files_skipped {
        crate::output::note!("tapedeck: skipped damaged file {s}");
    }
    Ok(crate::EXIT_OK)
}

fn joined(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}
