//! `tapedeck mock`: flags → [`tapedeck_mock::MockOptions`] → a running mock until SIGTERM or
//! SIGINT; prints the address when serving and the summary at exit.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tapedeck_mock::{LatencyMode, MockOptions, UnknownTrace, render_text, run_until_signal};

/// Serve recorded dependency answers (per trace, in recorded order) with misses and faults.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck mock --tape ./tapes/pricing --listen 127.0.0.1:8081\n  \
tapedeck mock --tape ./tapes/pricing --listen 127.0.0.1:8081 --out ./runs/pricing-calls \\\n      \
--on-miss passthrough=http://pricing.internal:8080 --ignore '$.timestamp' --ignore '?cb'\n  \
tapedeck mock --tape ./tapes/auth --listen 127.0.0.1:8082 \\\n      \
--fault '/v1/token,status=503,rate=0.2' --fault 'POST /v1/verify*,delay=2s' --seed 7\n\n\
Requests carrying a trace id (traceparent, or --trace-header) get the answers recorded in that\n\
trace, in recorded order; others get the closest recorded answer. SIGTERM or SIGINT stops after\n\
the calls in flight, closes --out and prints a summary (exit 0). Bad input: exit 2.")]
pub(crate) struct Args {
    /// Dependency tape: a directory, a .parquet file, a spool segment or an object-store URL
    /// (repeatable).
    #[arg(long, value_name = "PATH", required = true)]
    tape: Vec<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
    /// Name of the mock: the source label of its output exchanges and metrics (default: the
    /// tape's source label).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Write every served and missed call to this tape (target label `mock`).
    #[arg(long, value_name = "RUN")]
    out: Option<PathBuf>,
    /// What a request matching nothing gets: 502 (JSON body naming what was asked), 404, or
    /// passthrough=http://HOST:PORT (forwarded to the real dependency).
    #[arg(long, value_name = "POLICY", default_value = "502")]
    on_miss: String,
    /// Replay the recorded latency of each answer, or answer at once.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = LatencyArg::None)]
    latency: LatencyArg,
    /// Header holding the trace id: traceparent (W3C) or a header whose value is the id, as
    /// given to `record --trace-header`.
    #[arg(long, value_name = "NAME")]
    trace_header: Option<String>,
    /// A request whose trace id is not on the tape: miss (never another trace's answer), or
    /// match it as if it had no trace id.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = UnknownTraceArg::Miss)]
    unknown_trace: UnknownTraceArg,
    /// A caller lane with answers of its own: requests whose `tracestate` holds
    /// `tapedeck=NAME` (replay adds it, naming the target) get each trace's answers in recorded
    /// order separately from other lanes. Repeatable, at most 7 (e.g. --lane baseline --lane
    /// candidate when both call this mock during one replay).
    #[arg(long, value_name = "NAME")]
    lane: Vec<String>,
    /// Leave a field out of request matching: a JSON path ('$.timestamp', '$..request_id') or
    /// a query/form parameter ('?cb'). Repeatable.
    #[arg(long, value_name = "RULE")]
    ignore: Vec<String>,
    /// Inject a fault: 'ROUTE-GLOB[,status=503][,delay=2s][,reset][,rate=0.5]'; ROUTE-GLOB is a
    /// path glob, optionally after a method ('POST /v1/charge*'). Repeatable.
    #[arg(long, value_name = "FAULT")]
    fault: Vec<String>,
    /// Faults from a TOML file of [[fault]] tables (keys route, status, delay, reset, rate).
    #[arg(long, value_name = "FILE.toml")]
    faults: Option<PathBuf>,
    /// Seed of the fault decisions (the same seed gives the same faults on the same calls).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Admin listener for /metrics and /healthz (off by default).
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Worker threads (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Largest request body read; larger requests get 413 (a miss).
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    max_request_body: String,
    /// How long a stop waits for calls in flight.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    grace: String,
    /// Skip damaged tape files instead of refusing to start.
    #[arg(long)]
    skip_corrupt: bool,
    /// Print the exit summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LatencyArg {
    /// Answer at once.
    None,
    /// Wait as long as the dependency took when it was recorded.
    Recorded,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum UnknownTraceArg {
    /// A miss.
    Miss,
    /// Matched without its trace id.
    Untraced,
}

impl Args {
    fn options(self) -> MockOptions {
        MockOptions {
            name: self.name,
            tape: self.tape,
            listen: self.listen,
            admin: self.admin,
            out: self.out,
            on_miss: self.on_miss,
            latency: match self.latency {
                LatencyArg::None => LatencyMode::None,
                LatencyArg::Recorded => LatencyMode::Recorded,
            },
            trace_header: self.trace_header,
            unknown_trace: match self.unknown_trace {
                UnknownTraceArg::Miss => UnknownTrace::Miss,
                UnknownTraceArg::Untraced => UnknownTrace::Untraced,
            },
            lane: self.lane,
            ignore: self.ignore,
            fault: self.fault,
            faults: self.faults,
            seed: self.seed,
            threads: self.threads,
            max_request_body: self.max_request_body,
            grace: self.grace,
            skip_corrupt: self.skip_corrupt,
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let json = args.json;
    let spec = args.options().validate()?;
    let summary = run_until_signal(spec, |mock| {
        // Scripts wait for this line; a closed stdout must not stop the mock.
        let mut out = crate::output::stdout();
        let _ = writeln!(
            out,
            "mock {} listening on http://{}",
            mock.name(),
            mock.addr()
        );
        if let Some(a) = mock.admin_addr() {
            let _ = writeln!(out, "admin on http://{a} (/metrics, /healthz)");
        }
        let _ = out.flush();
    })?;
    let mut out = crate::output::stdout();
    if json {
        serde_json::to_writer_pretty(&mut out, &summary).context("writing the summary")?;
        writeln!(out).context("writing the summary")?;
    } else {
        out.write_all(render_text(&summary).as_bytes())
            .context("writing the summary")?;
    }
    Ok(crate::EXIT_OK)
}
