//! `tapedeck replay`: flags → [`tapedeck_replay::ReplayOptions`] → the engine; prints the summary.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use tapedeck_replay::{
    BarProgress, LogProgress, NoProgress, Replay, ReplayOptions, ReplaySummary, Stop, pace,
    render_text,
};

/// Replay a tape against one or more targets and write the results as a tape.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck replay --tape ./tapes/svc --target candidate=http://127.0.0.1:9001 --out ./runs/r1\n  \
tapedeck replay --tape ./tapes/svc --target baseline=http://127.0.0.1:9000 \\\n      \
--target candidate=http://127.0.0.1:9001 --speed 2 --max-gap 1s --out ./runs/r2\n  \
tapedeck replay --tape ./tapes/svc --target c=h2c://127.0.0.1:9001 --rate 500 --poisson --out ./runs/r3\n  \
tapedeck replay --tape ./tapes/svc --target c=http://127.0.0.1:9001 --max --concurrency 64 --out ./runs/r4\n  \
tapedeck replay --tape ./tapes/svc --dry-run --allow-writes\n\n\
Latencies are measured from the scheduled send time (free of coordinated omission).\n\
A target that fails (refused, reset, timeout) yields error results, never an abort: exit 0.")]
pub(crate) struct Args {
    /// Tape to replay: a directory, a .parquet file or a spool segment (repeatable).
    #[arg(long, value_name = "PATH", required = true)]
    tape: Vec<PathBuf>,
    /// Output tape directory (or object-store URL) for the results (required unless
    /// --dry-run). It must not hold results yet: two runs are never mixed unless --append.
    #[arg(long, value_name = "DIR", required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// Add the results to an --out that already holds some (e.g. finishing an interrupted run),
    /// uploading what an earlier run to the same URL left in the local spool directory.
    #[arg(long)]
    append: bool,
    /// Target as NAME=URL, e.g. candidate=http://127.0.0.1:9001 (HTTP/1.1),
    /// candidate=h2c://127.0.0.1:9001 (HTTP/2 prior knowledge) or candidate=https://host:8443 (TLS,
    /// HTTP/2 or HTTP/1.1 by ALPN). Repeatable: every request goes to every target at the same
    /// scheduled instant.
    #[arg(
        long = "target",
        value_name = "NAME=URL",
        required_unless_present = "dry_run"
    )]
    targets: Vec<String>,
    /// Speak HTTP/2 (h2c, prior knowledge) to every http:// target; offer only h2 to https://
    /// targets.
    #[arg(long)]
    http2: bool,
    /// https:// targets: PEM file of extra trusted CA certificates (system roots are trusted).
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// https:// targets: accept any certificate (test environments only).
    #[arg(long)]
    insecure: bool,

    /// Pacing mode [default: recorded, or rate with --rate, max with --max].
    #[arg(long, value_name = "MODE", value_parser = pace_modes())]
    pace: Option<String>,
    /// Recorded pacing: speed factor (2 = twice as fast).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    speed: f64,
    /// Recorded pacing: clamp idle gaps to this (e.g. 1s, 250ms).
    #[arg(long, value_name = "DURATION")]
    max_gap: Option<String>,
    /// Open loop at N requests/s (implies --pace rate).
    #[arg(long, value_name = "N", conflicts_with = "max")]
    rate: Option<f64>,
    /// With --rate: Poisson arrivals (exponential gaps) instead of constant gaps (= --pace
    /// poisson).
    #[arg(long)]
    poisson: bool,
    /// Closed loop, as fast as possible with --concurrency requests in flight (= --pace max).
    #[arg(long)]
    max: bool,
    /// Requests in flight: exact for --max (default 64); a safety cap for open loop (default 4096).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Seed for --poisson.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sending threads, each with its own connections [default: one per available core].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// HTTP/2 targets: connections per target, the requests in flight multiplexed over them
    /// [default: one per sending thread]. HTTP/1.1 uses one connection per request in flight.
    #[arg(long, value_name = "N")]
    connections: Option<usize>,

    /// Per-request timeout, from the actual send to the end of the response body.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    timeout: String,
    /// Connect timeout.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    connect_timeout: String,
    /// Response body bytes kept per result (the true size is always recorded).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_body: usize,

    #[command(flatten)]
    request: crate::flags::RequestFlags,
    #[command(flatten)]
    select: crate::flags::SelectFlags,
    /// Replay only shard K of N (by a stable hash of the exchange id): N workers split a tape.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Print what would be sent (counts per route and method, skipped writes); send nothing.
    #[arg(long)]
    dry_run: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `--pace` values: the replay crate's list of pacing modes, with their help lines.
pub(crate) fn pace_modes() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        pace::MODES
            .iter()
            .map(|m| clap::builder::PossibleValue::new(m.name).help(m.help)),
    )
}

impl Args {
    fn options(self) -> ReplayOptions {
        let pace = match (self.max, self.pace, self.rate) {
            (true, _, _) => "max".to_owned(),
            (false, Some(name), _) => name,
            (false, None, Some(_)) => "rate".to_owned(),
            (false, None, None) => pace::DEFAULT.to_owned(),
        };
        let mut options = ReplayOptions {
            tape: self.tape,
            out: self.out,
            append: self.append,
            targets: self.targets,
            http2: self.http2,
            ca_cert: self.ca_cert,
            insecure: self.insecure,
            pace,
            speed: self.speed,
            max_gap: self.max_gap,
            rate: self.rate,
            poisson: self.poisson,
            concurrency: self.concurrency,
            seed: self.seed,
            threads: self.threads,
            connections: self.connections,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            max_body: self.max_body,
            shard: self.shard,
            dry_run: self.dry_run,
            ..ReplayOptions::default()
        };
        self.request.apply(&mut options);
        self.select.apply(&mut options);
        options
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let (quiet, json) = (args.quiet, args.json);
    let config = args.options().validate()?;
    // SIGINT / SIGTERM: stop sending, finish what is in flight, write every result, summarize.
    let stop = Stop::new();
    stop.on_signals().context("installing signal handlers")?;
    let replay = Replay::new(&config).stop(stop);
    let summary: ReplaySummary = if quiet || config.dry_run() {
        replay.progress(NoProgress)
    } else if std::io::stderr().is_terminal() {
        replay.progress(BarProgress::new())
    } else {
        replay.progress(LogProgress::default())
    }
    .run_blocking()
    .context("replay failed")?;
    let mut out = crate::output::stdout();
    if json {
        serde_json::to_writer_pretty(&mut out, &summary).context("writing the summary")?;
        writeln!(out)?;
    } else {
        out.write_all(render_text(&summary).as_bytes())?;
    }
    out.flush()?;
    Ok(crate::EXIT_OK)
}
