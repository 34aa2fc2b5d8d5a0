//! `tapedeck check`: the whole judgement in one command — replay a tape against the baseline, the
//! candidate and a noise target in one pass, diff the run, write the reports, and exit with the
//! verdict's code. Made for CI jobs and canary analysis (Argo Rollouts Job provider). The noise
//! target is `--secondary` (a second baseline instance) or, without it, the baseline itself
//! replayed a second time at the same instant, so every latency verdict has a noise floor
//! (`--no-noise-target` opts out). `serve` and `demo` run through [`check`] and get the same.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use tapedeck_diff::live::{EarlyStop, LiveJudge};
use tapedeck_diff::{DiffOptions, DiffOutcome, InconclusiveAs};
use tapedeck_replay::{
    BarProgress, LogProgress, NoProgress, Observer, Replay, ReplayOptions, ReplaySummary,
};
use tapedeck_storage::Exchange;

/// The sequential judge of a `--early-stop` run and when it decided.
#[derive(Debug)]
struct Live {
    judge: LiveJudge,
    decided_at: Option<Instant>,
}

/// Feeds each finished origin group to the sequential judge; stops the replay once it decided.
struct LiveObserver(Arc<Mutex<Live>>);

impl Observer for LiveObserver {
    fn group(&mut self, results: &[Exchange]) -> ControlFlow<()> {
        let mut live = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !live.judge.observe(results) {
            return ControlFlow::Continue(());
        }
        if live.decided_at.is_none() {
            live.decided_at = Some(Instant::now());
            tracing::info!(
                origins = live.judge.origins(),
                "early stop: the sequential judge decided; stopping the replay"
            );
        }
        ControlFlow::Break(())
    }
}

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
    #[arg(long, value_name = "URL")]
    secondary: Option<String>,
    /// Without --secondary, do not replay the baseline a second time as the noise target
    /// (latency and response differences are then judged without a measured noise floor).
    #[arg(long, conflicts_with = "secondary")]
    no_noise_target: bool,
    /// Directory (or object-store URL) for the reports (verdict.json, report.md, report.html,
    /// junit.xml).
    #[arg(long, default_value = "./tapedeck-report", value_name = "DIR")]
    report: PathBuf,
    /// Where the replay results (a tape) go [default: REPORT/run]. Must not exist yet.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Rules file (TOML) for the judge.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Latency objective for the candidate, e.g. 'GET /api/users: p95<300ms' (repeatable).
    #[arg(long, value_name = "SLO")]
    slo: Vec<String>,
    /// Treat a marginal verdict as a failure.
    #[arg(long)]
    strict: bool,
    /// Exit code for an inconclusive verdict, for systems that only read 0 / non-0.
    #[arg(long, value_enum, value_name = "AS")]
    inconclusive_as: Option<InconclusiveArg>,
    /// Version labels for titles, e.g. v1.8.3.
    #[arg(long, value_name = "LABEL")]
    baseline_version: Option<String>,
    /// Version label of the candidate.
    #[arg(long, value_name = "LABEL")]
    candidate_version: Option<String>,

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
    /// Set a header on every request: 'Name: value' (${VAR} reads the environment).
    #[arg(long = "set-header", value_name = "HEADER")]
    set_headers: Vec<String>,
    /// Remove a header from every request.
    #[arg(long = "drop-header", value_name = "NAME")]
    drop_headers: Vec<String>,
    /// Refuse to start when requests would carry redacted-credential placeholders that no
    /// --set-header or --drop-header replaces (see `tapedeck replay --help`).
    #[arg(long)]
    strict_credentials: bool,
    /// Only these methods.
    #[arg(long = "method", value_name = "METHOD")]
    methods: Vec<String>,
    /// Only paths matching this glob.
    #[arg(long = "route", value_name = "GLOB")]
    routes: Vec<String>,
    /// Replay at most N recorded exchanges.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Replay this fraction of the tape.
    #[arg(long, value_name = "F")]
    sample: Option<f64>,
    /// Also replay unsafe methods (POST, PUT, PATCH, DELETE).
    #[arg(long)]
    allow_writes: bool,
    /// Allow a target that is the host the tape was recorded from.
    #[arg(long)]
    allow_same_host: bool,
    /// Read on past damaged tape files.
    #[arg(long)]
    skip_corrupt: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Print verdict.json on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    color: crate::output::ColorFlag,
    /// Judge while replaying and stop as soon as the verdict is decided: on a fail as soon as
    /// any anytime-valid test crosses, on a pass once every route with enough traffic is shown
    /// without regression (rules file: `[early_stop] enabled = true`). See docs/verdict.md.
    #[arg(long)]
    early_stop: bool,
    /// With --early-stop: the bound on the probability that a run without regression fails,
    /// however often the judge looks [default: 0.01, or `early_stop.alpha` in the rules].
    #[arg(long, value_name = "P")]
    alpha: Option<f64>,
    /// Also write a bug-ticket bundle here when the verdict is not a pass (see `tapedeck ticket`).
    #[arg(long, value_name = "DIR")]
    ticket: Option<PathBuf>,
    /// Serve a recorded dependency during the run: NAME=TAPE@ADDR starts a mock of the
    /// dependency tape TAPE on ADDR (the address the services under test call NAME at), writes
    /// every call it gets to REPORT/mocks/NAME, and adds the dependency section to the verdict
    /// (repeatable). Each replay target has its own lane of answers (tracestate).
    #[arg(long = "mock", value_name = "NAME=TAPE@ADDR")]
    mocks: Vec<String>,
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
}

/// One `--mock NAME=TAPE@ADDR`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MockArg {
    pub(crate) name: String,
    pub(crate) tape: PathBuf,
    pub(crate) addr: std::net::SocketAddr,
}

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
        Ok(MockArg {
            name: name.to_owned(),
            tape: PathBuf::from(tape),
            addr,
        })
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum InconclusiveArg {
    Pass,
    Fail,
}

/// Target labels in the run that `check` writes.
pub(crate) const BASELINE: &str = "baseline";
pub(crate) const CANDIDATE: &str = "candidate";
pub(crate) const SECONDARY: &str = "secondary";
/// The candidate's label in the `--chaos` run.
pub(crate) const CHAOS: &str = "chaos";

/// What one check produced.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) replay: ReplaySummary,
    /// What each `--mock` did.
    pub(crate) mocks: Vec<tapedeck_mock::MockSummary>,
    /// The `--chaos` run: its replay summary and directory.
    pub(crate) chaos: Option<(ReplaySummary, PathBuf)>,
    pub(crate) outcome: DiffOutcome,
    pub(crate) run_dir: PathBuf,
}

impl Args {
    /// Sets `--chaos` (the demo's chaos experiment).
    pub(crate) fn set_chaos(&mut self, faults: PathBuf) {
        self.chaos = Some(faults);
    }

    /// The noise target: `--secondary`, else the baseline replayed a second time (issue 17: a
    /// latency verdict always has a noise floor), unless `--no-noise-target`.
    fn noise_url(&self) -> Option<&str> {
        match &self.secondary {
            Some(s) => Some(s),
            None if self.no_noise_target => None,
            None => Some(&self.baseline),
        }
    }

    fn replay_options(&self, out: &Path) -> ReplayOptions {
        let mut targets = vec![
            format!("{BASELINE}={}", self.baseline),
            format!("{CANDIDATE}={}", self.candidate),
        ];
        if let Some(s) = self.noise_url() {
            targets.push(format!("{SECONDARY}={s}"));
        }
        let pace = match (&self.pace, self.rate) {
            (Some(name), _) => name.clone(),
            (None, Some(_)) => "rate".to_owned(),
            (None, None) => "max".to_owned(),
        };
        ReplayOptions {
            tape: self.tape.clone(),
            out: Some(out.to_path_buf()),
            targets,
            http2: self.http2,
            concurrency: self.concurrency.or((pace == "max").then_some(16)),
            pace,
            speed: self.speed,
            max_gap: self.max_gap.clone(),
            rate: self.rate,
            timeout: self.timeout.clone(),
            set_headers: self.set_headers.clone(),
            drop_headers: self.drop_headers.clone(),
            strict_credentials: self.strict_credentials,
            methods: self.methods.clone(),
            routes: self.routes.clone(),
            limit: self.limit,
            sample: self.sample,
            allow_writes: self.allow_writes,
            allow_same_host: self.allow_same_host,
            skip_corrupt: self.skip_corrupt,
            ..ReplayOptions::default()
        }
    }

    fn diff_options(&self, run: &Path, mocks: &[MockArg]) -> DiffOptions {
        DiffOptions {
            dependencies: mocks
                .iter()
                .map(|m| tapedeck_diff::deps::DependencyInput {
                    name: m.name.clone(),
                    tape: vec![m.tape.clone()],
                    calls: vec![mock_out(&self.report, &m.name)],
                })
                .collect(),
            run: vec![run.to_path_buf()],
            baseline: BASELINE.into(),
            candidate: CANDIDATE.into(),
            noise: self.noise_url().map(|_| SECONDARY.into()),
            rules: self.rules.clone(),
            slos: self.slo.clone(),
            strict: self.strict,
            inconclusive_as: match self.inconclusive_as {
                None => InconclusiveAs::Inconclusive,
                Some(InconclusiveArg::Pass) => InconclusiveAs::Pass,
                Some(InconclusiveArg::Fail) => InconclusiveAs::Fail,
            },
            baseline_version: self.baseline_version.clone(),
            candidate_version: self.candidate_version.clone(),
            early_stop: self.early_stop,
            early_stop_alpha: self.alpha,
            ..DiffOptions::new(run)
        }
    }
}

/// Where mock `name` writes its calls: `REPORT/mocks/NAME`.
fn mock_out(report: &Path, name: &str) -> PathBuf {
    report.join("mocks").join(name)
}

/// Where mock `name` writes its calls during the `--chaos` run: `REPORT/chaos/mocks/NAME`.
fn chaos_mock_out(report: &Path, name: &str) -> PathBuf {
    report.join("chaos").join("mocks").join(name)
}

/// Starts one mock per `--mock`, writing calls where `out` says, with `faults`.
fn start_mocks(
    mocks: &[MockArg],
    out: impl Fn(&str) -> PathBuf,
    faults: &[tapedeck_mock::FaultRule],
    trace_header: Option<&str>,
) -> anyhow::Result<Vec<tapedeck_mock::MockHandle>> {
    let mut running = Vec::with_capacity(mocks.len());
    for m in mocks {
        let out = out(&m.name);
        if out.exists() {
            anyhow::bail!(
                "{} already exists: choose another --report (or remove it) so calls of two runs are not mixed",
                out.display()
            );
        }
        let mut spec = tapedeck_mock::MockSpec::new(vec![m.tape.clone()], m.addr);
        spec.name = Some(m.name.clone());
        spec.out = Some(out);
        spec.lanes = vec![
            BASELINE.into(),
            CANDIDATE.into(),
            SECONDARY.into(),
            CHAOS.into(),
        ];
        spec.faults = faults.to_vec();
        if let Some(h) = trace_header {
            spec.trace = tapedeck_common::trace::TraceSource::from_header_name(h);
        }
        spec.grace = std::time::Duration::from_secs(5);
        let handle = tapedeck_mock::Mock::start(spec)
            .with_context(|| format!("starting mock `{}` on {}", m.name, m.addr))?;
        tracing::debug!(mock = %m.name, addr = %handle.addr(), tape = %m.tape.display(), faults = faults.len(), "dependency mock started");
        running.push(handle);
    }
    Ok(running)
}

/// Stops the mocks (closing their calls tapes) and returns what they did.
fn stop_mocks(
    running: Vec<tapedeck_mock::MockHandle>,
) -> anyhow::Result<Vec<tapedeck_mock::MockSummary>> {
    let mut out = Vec::with_capacity(running.len());
    for m in running {
        let name = m.name().to_owned();
        out.push(
            m.stop()
                .with_context(|| format!("stopping mock `{name}`"))?,
        );
    }
    Ok(out)
}

/// Replays and judges; writes the reports. Shared by `check` and `demo`.
pub(crate) fn check(args: &Args) -> anyhow::Result<Checked> {
    let run_dir = args.out.clone().unwrap_or_else(|| args.report.join("run"));
    if run_dir.exists() {
        anyhow::bail!(
            "{} already exists: choose another --out (or remove it) so results of two runs are not mixed",
            run_dir.display()
        );
    }
    let config = args
        .replay_options(&run_dir)
        .validate()
        .context("invalid replay settings")?;
    if args.allow_writes && args.secondary.is_none() && !args.no_noise_target {
        tracing::warn!(
            baseline = %args.baseline,
            "the baseline is also the noise target: it receives each replayed write twice; give \
             --secondary URL or --no-noise-target to avoid that"
        );
    }
    let mock_args: Vec<MockArg> = args
        .mocks
        .iter()
        .map(|m| m.parse())
        .collect::<anyhow::Result<_>>()?;
    let mut names = std::collections::HashSet::new();
    for m in &mock_args {
        anyhow::ensure!(names.insert(&m.name), "--mock `{}` is given twice", m.name);
    }
    let chaos_rules = match &args.chaos {
        None => Vec::new(),
        Some(file) => tapedeck_mock::fault::rules_from(&[], Some(file))
            .with_context(|| format!("--chaos {}", file.display()))?,
    };
    let chaos_dir = args.report.join("chaos").join("run");
    if args.chaos.is_some() && chaos_dir.exists() {
        anyhow::bail!(
            "{} already exists: choose another --report (or remove it)",
            chaos_dir.display()
        );
    }
    // Every mock runs for the whole replay; one that cannot start stops the check (the ones
    // already started stop when dropped).
    let trace_header = args.mock_trace_header.as_deref();
    if let Some(h) = trace_header {
        anyhow::ensure!(
            hyper::header::HeaderName::from_bytes(h.trim().as_bytes()).is_ok(),
            "--mock-trace-header `{h}` is not a header name"
        );
    }
    // The judge's settings are checked before anything is sent.
    let mut diff = args
        .diff_options(&run_dir, &mock_args)
        .validate()
        .context("invalid judge settings")?;
    let running = start_mocks(&mock_args, |n| mock_out(&args.report, n), &[], trace_header)?;
    let began = Instant::now();
    let live = diff.early_stop.then(|| {
        Arc::new(Mutex::new(Live {
            judge: LiveJudge::new(&diff),
            decided_at: None,
        }))
    });
    let mut replay = Replay::new(&config);
    if let Some(live) = &live {
        replay = replay.observer(LiveObserver(live.clone()));
    }
    let replay = if args.quiet || args.json {
        replay.progress(NoProgress)
    } else if std::io::stderr().is_terminal() {
        replay.progress(BarProgress::new())
    } else {
        replay.progress(LogProgress::default())
    }
    .run_blocking()
    .context("replay failed")?;
    let mocks = stop_mocks(running)?;

    // The candidate again, alone, with failing dependencies.
    let mut chaos = None;
    let mut chaos_input = None;
    if let Some(file) = &args.chaos {
        let running = start_mocks(
            &mock_args,
            |n| chaos_mock_out(&args.report, n),
            &chaos_rules,
            trace_header,
        )?;
        let mut opts = args.replay_options(&chaos_dir);
        opts.targets = vec![format!("{CHAOS}={}", args.candidate)];
        let config = opts
            .validate()
            .context("invalid replay settings (--chaos)")?;
        let summary = tapedeck_replay::run_blocking(&config, NoProgress)
            .context("replay with faults (--chaos) failed")?;
        stop_mocks(running)?;
        tracing::info!(faults = %file.display(), run = %chaos_dir.display(), "chaos run done");
        chaos_input = Some(tapedeck_diff::chaos::ChaosInput {
            run: vec![chaos_dir.clone()],
            target: CHAOS.into(),
            calls: mock_args
                .iter()
                .map(|m| chaos_mock_out(&args.report, &m.name))
                .collect(),
            faults: chaos_rules
                .iter()
                .map(|r| tapedeck_diff::chaos::ChaosFault {
                    label: r.label.clone(),
                    effect: r.effect(),
                    delay_us: r.delay.map_or(0, |d| d.as_micros() as i64),
                })
                .collect(),
        });
        chaos = Some((summary, chaos_dir.clone()));
    }

    if chaos_input.is_some() {
        let mut opts = args.diff_options(&run_dir, &mock_args);
        opts.chaos = chaos_input;
        diff = opts.validate().context("invalid judge settings")?;
    }
    let mut outcome = tapedeck_diff::run(&diff).context("diff failed")?;
    if let Some(live) = live {
        let live = live.lock().unwrap_or_else(|e| e.into_inner());
        let decided_at = live.decided_at.unwrap_or_else(Instant::now);
        tapedeck_diff::live::apply(
            &mut outcome,
            &diff,
            live.judge.report(),
            EarlyStop {
                stopped_early: replay.interrupted,
                requests_sent: replay
                    .targets
                    .iter()
                    .map(|t| (t.name.clone(), t.requests))
                    .collect(),
                time_to_verdict_ms: decided_at.duration_since(began).as_millis() as u64,
            },
        );
    }
    let reports =
        tapedeck_storage::object::OutputDir::new(&args.report).context("report location")?;
    tapedeck_diff::report::write_reports(&outcome, reports.path())
        .with_context(|| format!("writing reports to {}", args.report.display()))?;
    reports
        .finish()
        .with_context(|| format!("uploading the reports to {}", args.report.display()))?;
    Ok(Checked {
        replay,
        mocks,
        chaos,
        outcome,
        run_dir,
    })
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let checked = check(&args)?;
    let mut out = crate::output::stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &checked.outcome)?;
        writeln!(out)?;
    } else {
        if !args.quiet {
            write!(out, "{}", tapedeck_replay::render_text(&checked.replay))?;
            writeln!(out)?;
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
    if let Some(dir) = &args.ticket {
        let mut opts = tapedeck_ticket::TicketOptions::new(&args.report, dir);
        opts.run = Some(checked.run_dir.clone());
        match tapedeck_ticket::write_ticket(&opts) {
            // Keep stdout pure JSON with --json.
            Ok(outcome) if args.json => {
                crate::output::note!("{}", tapedeck_ticket::describe(&outcome, dir))
            }
            Ok(outcome) => writeln!(out, "{}", tapedeck_ticket::describe(&outcome, dir))?,
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
