//! `tapedeck`: record production HTTP traffic, replay it against a new build, judge the difference.
//!
//! This binary only parses flags and wires the crates together; the work happens in
//! `tapedeck-storage`, `tapedeck-proxy`, `tapedeck-replay`, `tapedeck-diff`, `tapedeck-mock`,
//! `tapedeck-ticket`, `tapedeck-check` (the check pipeline) and `tapedeck-serve` (checks over
//! HTTP).
#![forbid(unsafe_code)]
// Output goes through `output` (a closed stdout is not an error): the print macros panic on EPIPE.
#![warn(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: replay and the recorder allocate a record's strings and
/// buffers on one thread and free them on another (the tape writer's), which defeats glibc's
/// per-thread caches (benches/RESULTS.md, issue 14). Version 2, without transparent huge pages:
/// it returns freed memory to the OS after 10 ms (version 3 waits 1 s, which kept 30–50 MiB more
/// in the recorder at 16 KB bodies; issue 13).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check;
mod corpus;
mod demo;
mod diff;
mod distill;
mod flags;
mod har;
mod inspect;
mod mock;
mod output;
mod record;
mod replay;
mod seal;
mod serve;
mod synth;
mod ticket;
mod util;

/// Exit code: success (and, for judgements, a pass).
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code: usage error, bad input, or a failure to run.
pub(crate) const EXIT_ERROR: u8 = 2;

/// Record production HTTP traffic, replay it against a new build, and judge the difference.
#[derive(Debug, Parser)]
#[command(name = "tapedeck", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok/pass, 1 regression (fail), 2 usage or input error, 3 inconclusive.\n\
Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=tapedeck=debug) for more."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = util::LogFormat::Text)]
    log_format: util::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a tape against baseline and candidate, judge the difference: exit 0 pass, 1 fail, 3 inconclusive.
    Check(Box<check::Args>),
    /// The regression corpus: add a ticket's failing requests, list them (`check --corpus` replays them).
    Corpus(corpus::Args),
    /// Run the whole loop (record → replay → diff) against a built-in sample service.
    Demo(demo::Args),
    /// Judge a replay run: response diffs beyond noise, latency regressions, error rates.
    Diff(diff::Args),
    /// Write a small tape keeping every route × status × shape × latency band, K each, and all errors.
    Distill(distill::Args),
    /// Export a tape (or part of it) as a HAR 1.2 file for browser DevTools and HAR viewers.
    ExportHar(har::ExportArgs),
    /// Import a HAR 1.2 file (browser DevTools, proxies) into a tape.
    ImportHar(har::ImportArgs),
    /// Summarize a tape: exchanges, time range, size and compression, routes, statuses, errors.
    Inspect(inspect::Args),
    /// Serve a dependency's recorded answers as a mock: per trace, in recorded order, with misses and faults.
    Mock(Box<mock::Args>),
    /// Record traffic to a service through a reverse proxy into a tape (redacted, fail-open).
    Record(Box<record::Args>),
    /// Replay a tape against one or more targets (paced, multi-target) and write the results as a tape.
    Replay(replay::Args),
    /// Serve the demo's sample API alone (benchmarks of the judge).
    #[command(hide = true)]
    SampleApi(demo::SampleApiArgs),
    /// Seal what a recorder left in a tape's spool (a crash, a kill) into Parquet, without starting one.
    Seal(seal::Args),
    /// Serve check runs over HTTP: an Argo Rollouts Web provider and Flagger webhooks.
    Serve(Box<serve::Args>),
    /// Write a tape of synthetic JSON API traffic (to try tapedeck, and for tests and benchmarks).
    Synth(synth::Args),
    /// Write a redacted bug-ticket bundle (ticket.md, ticket.json, the failing exchanges) from a report.
    Ticket(Box<ticket::Args>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    util::init_logging(cli.log_format);
    let result = match cli.command {
        Command::Check(args) => check::run(*args),
        Command::Corpus(args) => corpus::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Distill(args) => distill::run(args),
        Command::ExportHar(args) => har::run_export(args),
        Command::ImportHar(args) => har::run_import(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Mock(args) => mock::run(*args),
        Command::Record(args) => record::run(*args),
        Command::Replay(args) => replay::run(args),
        Command::SampleApi(args) => demo::run_sample_api(args),
        Command::Seal(args) => seal::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Synth(args) => synth::run(args),
        Command::Ticket(args) => ticket::run(*args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // A closed stdout never reaches here: `output::stdout` absorbs it, so every command
        // exits with its own code (issue 17).
        Err(e) => {
            output::note!("tapedeck: error: {}", error_text(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The error and its causes joined by `: ` (like `{:#}`), leaving out a cause whose text the
/// message already contains (many errors repeat their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}
