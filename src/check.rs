//! `tapedeck check`: the whole judgement in one command — replay a tape against the baseline, the
//! candidate and a noise target in one pass, diff the run, write the reports, and exit with the
//! verdict's code. Made for CI jobs and canary analysis (Argo Rollouts Job provider). The pipeline
//! is `tapedeck_check`; this module turns flags into its [`CheckSpec`] and prints. `serve` and
//! `demo` build their specs with [`Settings::apply`] and run the same pipeline.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use tapedeck_check::{CheckSpec, Dependency, Noise, ProgressStyle};
use tapedeck_diff::InconclusiveAs;

/// Replay a tape against baseline and candidate, judge the difference, exit 0 / 1 / 3.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck check --tape ./tapes/svc --baseline http://127.0.0.1:9000 --candidate http://127.0.0.1:9001 \\\n      \
--secondary http://127.0.0.1:9002 --report ./report\n  \
tapedeck check --tape ./tapes/svc --baseline http://v1.svc:80 --candidate http://v2.svc:80 \\\n      \
--slo 'GET /api/users: p95<300ms' --rate 200 --limit 5000 --report ./report\n  \
tapedeck check --tape ./tapes/svc --baseline http://127.0.0.1:9000 --candidate http://127.0.0.1:9001 \\\n      \
--mock pricing=./tapes/pricing@127.0.0.1:8081 --chaos pricing-down.toml --allow-writes\n\n\
Without --secondary the baseline is replayed twice in the same pass (targets `baseline` and\n\
`secondary`): the second copy is the noise floor of every verdict (--no-noise-target: none).\n\n\
Exit codes: 0 pass (also marginal unless --strict), 1 fail (roll back), 2 usage or input error,\n\
3 inconclusive (see --inconclusive-as).")]
pub(crate) struct Args {
    /// Recorded tape to replay: a directory or file (repeatable).
    #[arg(long, required = true, value_name = "PATH")]
    tape: Vec<PathBuf>,
    /// URL of the baseline (the version in production).
    #[arg(long, value_name = "URL")]
    baseline: String,
    /// URL of the candidate (the new version).
    #[arg(long, value_name = "URL")]
    candidate: String,
    /// URL of a second baseline instance: replayed in the same pass, it measures noise.
    /// Without it the baseline itself is replayed a second time, at the same instant, as the
    /// noise target (so every latency verdict has a noise floor); see --no-noise-target.
    #[arg(long, value_name = "URL", conflicts_with = "no_noise_target")]
    secondary: Option<String>,
    /// Directory (or object-store URL) for the reports (verdict.json, report.md, report.html,
    /// junit.xml, report.gha.md).
    #[arg(long, default_value = "./tapedeck-report", value_name = "DIR")]
    report: PathBuf,
    /// Where the replay results (a tape) go [default: REPORT/run]. Must not exist yet.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Version labels for titles, e.g. v1.8.3.
    #[arg(long, value_name = "LABEL")]
    baseline_version: Option<String>,
    /// Version label of the candidate.
    #[arg(long, value_name = "LABEL")]
    candidate_version: Option<String>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Print verdict.json on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    color: crate::output::ColorFlag,
    /// Also write a bug-ticket bundle here when the verdict is not a pass (see `tapedeck ticket`).
    #[arg(long, value_name = "DIR")]
    ticket: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// How a check runs and judges: every `check` flag but what to compare and where reports go.
/// `serve` takes these as its check flags (after `--`) and applies them to every run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Settings {
    /// Without --secondary, do not replay the baseline a second time as the noise target
    /// (latency and response differences are then judged without a measured noise floor).
    #[arg(long)]
    no_noise_target: bool,
    #[command(flatten)]
    pub(crate) judge: crate::flags::JudgeFlags,
    /// Exit code for an inconclusive verdict, for systems that only read 0 / non-0.
    #[arg(long, value_enum, value_name = "AS")]
    inconclusive_as: Option<InconclusiveArg>,

    /// Pacing mode [default: max, or rate with --rate].
    #[arg(long, value_name = "MODE", value_parser = crate::replay::pace_modes())]
    pace: Option<String>,
    /// Recorded pacing: speed factor.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Recorded pacing: clamp idle gaps (e.g. 1s).
    #[arg(long, value_name = "DURATION")]
    max_gap: Option<String>,
    /// Open loop at N requests/s.
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Requests in flight for closed loop (default 16).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    timeout: String,
    /// Speak HTTP/2 (h2c prior knowledge) to http:// targets.
    #[arg(long)]
    http2: bool,
    #[command(flatten)]
    request: crate::flags::RequestFlags,
    #[command(flatten)]
    select: crate::flags::SelectFlags,
    /// Judge while replaying and stop as soon as the verdict is decided: on a fail as soon as
    /// any anytime-valid test crosses, on a pass once every route with enough traffic is shown
    /// without regression (rules file: `[early_stop] enabled = true`). See docs/verdict.md.
    #[arg(long)]
    early_stop: bool,
    /// With --early-stop: the bound on the probability that a run without regression fails,
    /// however often the judge looks [default: 0.01, or `early_stop.alpha` in the rules].
    #[arg(long, value_name = "P")]
    alpha: Option<f64>,
    /// Serve a recorded dependency during the run: NAME=TAPE@ADDR starts a mock of the
    /// dependency tape TAPE on ADDR (the address the services under test call NAME at), writes
    /// every call it gets to REPORT/mocks/NAME, and adds the dependency section to the verdict
    /// (repeatable). Each replay target has its own lane of answers (tracestate).
    #[arg(long = "mock", value_name = "NAME=TAPE@ADDR")]
    mocks: Vec<MockArg>,
    /// After the judged run, replay the tape to the candidate alone a second time while the
    /// --mock dependencies inject the faults of this file ([[fault]] tables: route, status,
    /// delay, reset, rate; as `tapedeck mock --faults`), and report per fault whether the
    /// candidate degraded gracefully compared with its own fault-free answers (5xx introduced,
    /// timeouts, latency beyond the injected delay). Informs; does not change the verdict.
    #[arg(long, value_name = "FAULTS.toml", requires = "mocks")]
    chaos: Option<PathBuf>,
    /// Header the --mock dependencies read trace ids from, as given to `record --trace-header`
    /// when the dependency tapes were recorded [default: traceparent]. With another header than
    /// traceparent, the baseline's and the candidate's calls share each trace's answers (lanes
    /// travel in tracestate, next to traceparent).
    #[arg(long, value_name = "NAME", requires = "mocks")]
    mock_trace_header: Option<String>,
    /// Regression corpus (`tapedeck corpus add`): its known regressions are replayed and
    /// judged before the tape, each entry sent until its route has the judge's minimum sample
    /// (never selected by --limit, --sample, --method or --route). A corpus route that fails
    /// again fails the run as "known regression reappeared", naming its ticket; with
    /// --early-stop that ends the run before the tape is replayed.
    #[arg(long, value_name = "DIR")]
    corpus: Option<PathBuf>,
}

/// One `--mock NAME=TAPE@ADDR`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MockArg(Dependency);

impl std::str::FromStr for MockArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<MockArg> {
        let bad = || {
            anyhow::anyhow!(
                "--mock `{s}`: expected NAME=TAPE@ADDR, e.g. pricing=./tapes/pricing@127.0.0.1:9101"
            )
        };
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let (tape, addr) = rest.rsplit_once('@').ok_or_else(bad)?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            anyhow::bail!("--mock `{s}`: NAME must be letters, digits, `-`, `_` or `.`");
        }
        if tape.is_empty() {
            return Err(bad());
        }
        let addr = addr.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "--mock `{s}`: `{addr}` is not an address (IP:PORT, e.g. 127.0.0.1:9101)"
            )
        })?;
        Ok(MockArg(Dependency {
            name: name.to_owned(),
            tape: PathBuf::from(tape),
            addr,
        }))
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum InconclusiveArg {
    Pass,
    Fail,
}

impl Settings {
    /// Applies these settings to `spec`: pacing, request changes and selection, the judge,
    /// dependencies, chaos and the corpus. The noise target becomes `Off` with
    /// `--no-noise-target` unless the spec has a second baseline.
    pub(crate) fn apply(&self, spec: &mut CheckSpec) {
        if self.no_noise_target && spec.noise == Noise::Baseline {
            spec.noise = Noise::Off;
        }
        let pace = match (&self.pace, self.rate) {
            (Some(name), _) => name.clone(),
            (None, Some(_)) => "rate".to_owned(),
            (None, None) => "max".to_owned(),
        };
        let r = &mut spec.replay;
        r.http2 = self.http2;
        r.concurrency = self.concurrency.or((pace == "max").then_some(16));
        r.pace = pace;
        r.speed = self.speed;
        r.max_gap = self.max_gap.clone();
        r.rate = self.rate;
        r.timeout = self.timeout.clone();
        self.request.apply(r);
        self.select.apply(r);
        let j = &mut spec.judge;
        j.rules = self.judge.rules.clone();
        j.slos = self.judge.slo.clone();
        j.strict = self.judge.strict;
        j.inconclusive_as = match self.inconclusive_as {
            None => InconclusiveAs::Inconclusive,
            Some(InconclusiveArg::Pass) => InconclusiveAs::Pass,
            Some(InconclusiveArg::Fail) => InconclusiveAs::Fail,
        };
        j.early_stop = self.early_stop;
        j.alpha = self.alpha;
        spec.dependencies = self.mocks.iter().map(|m| m.0.clone()).collect();
        spec.dependency_trace_header = self.mock_trace_header.clone();
        spec.chaos = self.chaos.clone();
        spec.corpus = self.corpus.clone();
    }
}

impl Args {
    /// The check these flags ask for.
    pub(crate) fn spec(&self) -> CheckSpec {
        let mut spec = CheckSpec::new(
            self.tape.clone(),
            &self.baseline,
            &self.candidate,
            &self.report,
        );
        if let Some(s) = &self.secondary {
            spec.noise = Noise::Secondary(s.clone());
        }
        spec.out = self.out.clone();
        spec.judge.baseline_version = self.baseline_version.clone();
        spec.judge.candidate_version = self.candidate_version.clone();
        spec.ticket = self.ticket.clone();
        self.settings.apply(&mut spec);
        spec.progress = if self.quiet || self.json {
            ProgressStyle::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressStyle::Bar
        } else {
            ProgressStyle::Log
        };
        spec
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let checked = tapedeck_check::check(&args.spec())?;
    let mut out = crate::output::stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &checked.outcome)?;
        writeln!(out)?;
    } else {
        if !args.quiet {
            if let Some(c) = &checked.corpus {
                writeln!(
                    out,
                    "corpus: {} known regression request(s) replayed ({} per target), {} · run: {}",
                    c.entries,
                    c.replay.origins,
                    c.verdict.as_str(),
                    c.run_dir.display()
                )?;
            }
            if let Some(replay) = &checked.replay {
                write!(out, "{}", tapedeck_replay::render_text(replay))?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "the tape was not replayed: a known regression reappeared in the corpus (--early-stop)\n"
                )?;
            }
            for m in &checked.mocks {
                let s = &m.stats;
                writeln!(
                    out,
                    "mock {} on {}: {} calls ({} hits, {} misses, {} faults) · calls: {}",
                    m.name,
                    m.addr,
                    s.requests,
                    s.hits,
                    s.misses,
                    s.faults,
                    m.out
                        .as_ref()
                        .map_or_else(String::new, |o| o.path.display().to_string())
                )?;
            }
            if let Some((summary, dir)) = &checked.chaos {
                writeln!(
                    out,
                    "chaos: {} requests replayed to the candidate with faults · run: {}",
                    summary.origins,
                    dir.display()
                )?;
            }
            if !checked.mocks.is_empty() {
                writeln!(out)?;
            }
        }
        let color = args.color.color.enabled();
        write!(
            out,
            "{}",
            tapedeck_diff::report::summary(&checked.outcome, color)
        )?;
        writeln!(
            out,
            "reports in {}: {} · run: {}",
            args.report.display(),
            tapedeck_diff::report::report_files(),
            checked.run_dir.display()
        )?;
    }
    if let (Some(dir), Some(ticket)) = (&args.ticket, &checked.ticket) {
        match ticket {
            // Keep stdout pure JSON with --json.
            Ok(outcome) if args.json => {
                crate::output::note!("{}", tapedeck_ticket::describe(outcome, dir))
            }
            Ok(outcome) => writeln!(out, "{}", tapedeck_ticket::describe(outcome, dir))?,
            // The verdict decides the exit code; a ticket that could not be written does not
            // turn a fail or an inconclusive into something else.
            Err(e) => crate::output::note!(
                "tapedeck: error: writing the ticket to {}: {e:#}",
                dir.display()
            ),
        }
    }
    Ok(checked.outcome.exit_code)
}
