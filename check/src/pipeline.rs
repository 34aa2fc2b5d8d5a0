//! [`check`]: the pipeline itself.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tapedeck_diff::live::{EarlyStop, LiveJudge};
use tapedeck_diff::{DiffConfig, DiffOptions, DiffOutcome, Verdict};
use tapedeck_mock::{FaultRule, Mock, MockHandle, MockSpec, MockSummary};
use tapedeck_replay::{
    BarProgress, LogProgress, NoProgress, Observer, Replay, ReplayConfig, ReplayOptions,
    ReplaySummary,
};
use tapedeck_storage::Exchange;
use tapedeck_ticket::{TicketError, TicketOptions, TicketOutcome};

use crate::corpus::{self, Corpus};
use crate::{
    BASELINE, CANDIDATE, CHAOS, CheckError, CheckSpec, Dependency, Noise, ProgressStyle, SECONDARY,
};

/// What one check produced.
#[derive(Debug)]
pub struct Checked {
    /// The tape's replay; `None` when a known regression in the corpus ended the run first
    /// (`early_stop`).
    pub replay: Option<ReplaySummary>,
    /// The regression corpus's phase, with `corpus`.
    pub corpus: Option<CorpusPhase>,
    /// What each dependency mock did.
    pub mocks: Vec<MockSummary>,
    /// The chaos run: its replay summary and directory.
    pub chaos: Option<(ReplaySummary, PathBuf)>,
    /// The verdict (also written to the reports).
    pub outcome: DiffOutcome,
    /// The run tape the verdict's routes come from (the corpus phase's when it ended the run).
    pub run_dir: PathBuf,
    /// The ticket bundle, with `ticket` (a failure to write it does not change the verdict).
    pub ticket: Option<Result<TicketOutcome, TicketError>>,
}

/// The regression corpus's phase of a check.
#[derive(Debug)]
pub struct CorpusPhase {
    /// Its replay.
    pub replay: ReplaySummary,
    /// Its run tape.
    pub run_dir: PathBuf,
    /// Corpus entries replayed.
    pub entries: usize,
    /// The corpus phase's own verdict.
    pub verdict: Verdict,
}

/// The sequential judge of an `early_stop` run and when it decided.
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

/// The replay of `tapes` into `out` against every target of `spec`.
fn replay_options(spec: &CheckSpec, tapes: Vec<PathBuf>, out: &Path) -> ReplayOptions {
    let mut targets = vec![
        format!("{BASELINE}={}", spec.baseline),
        format!("{CANDIDATE}={}", spec.candidate),
    ];
    if let Some(s) = spec.noise_url() {
        targets.push(format!("{SECONDARY}={s}"));
    }
    ReplayOptions {
        tape: tapes,
        out: Some(out.to_path_buf()),
        targets,
        ..spec.replay.clone()
    }
}

/// The judge of the run in `run`.
fn diff_options(spec: &CheckSpec, run: &Path) -> DiffOptions {
    let j = &spec.judge;
    DiffOptions {
        dependencies: spec
            .dependencies
            .iter()
            .map(|m| tapedeck_diff::deps::DependencyInput {
                name: m.name.clone(),
                tape: vec![m.tape.clone()],
                calls: vec![mock_out(&spec.report, &m.name)],
            })
            .collect(),
        run: vec![run.to_path_buf()],
        baseline: BASELINE.into(),
        candidate: CANDIDATE.into(),
        noise: spec.noise_url().map(|_| SECONDARY.into()),
        rules: j.rules.clone(),
        slos: j.slos.clone(),
        strict: j.strict,
        inconclusive_as: j.inconclusive_as,
        baseline_version: j.baseline_version.clone(),
        candidate_version: j.candidate_version.clone(),
        early_stop: j.early_stop,
        early_stop_alpha: j.alpha,
        ..DiffOptions::new(run)
    }
}

/// Where mock `name` writes its calls: `REPORT/mocks/NAME`.
fn mock_out(report: &Path, name: &str) -> PathBuf {
    report.join("mocks").join(name)
}

/// Where mock `name` writes its calls during the corpus phase: `REPORT/corpus/mocks/NAME`.
fn corpus_mock_out(report: &Path, name: &str) -> PathBuf {
    report.join(corpus::PHASE).join("mocks").join(name)
}

/// Where mock `name` writes its calls during the chaos run: `REPORT/chaos/mocks/NAME`.
fn chaos_mock_out(report: &Path, name: &str) -> PathBuf {
    report.join("chaos").join("mocks").join(name)
}

/// Starts one mock per dependency, writing calls where `out` says, with `faults`.
fn start_mocks(
    deps: &[Dependency],
    out: impl Fn(&str) -> PathBuf,
    faults: &[FaultRule],
    trace_header: Option<&str>,
) -> Result<Vec<MockHandle>, CheckError> {
    let mut running = Vec::with_capacity(deps.len());
    for m in deps {
        let out = out(&m.name);
        if out.exists() {
            return Err(CheckError::Exists {
                path: out,
                choose: "--report",
            });
        }
        let mut spec = MockSpec::new(vec![m.tape.clone()], m.addr);
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
        spec.grace = Duration::from_secs(5);
        let handle = Mock::start(spec).map_err(|source| CheckError::MockStart {
            name: m.name.clone(),
            addr: m.addr,
            source: Box::new(source),
        })?;
        tracing::debug!(mock = %m.name, addr = %handle.addr(), tape = %m.tape.display(), faults = faults.len(), "dependency mock started");
        running.push(handle);
    }
    Ok(running)
}

/// Stops the mocks (closing their calls tapes) and returns what they did.
fn stop_mocks(running: Vec<MockHandle>) -> Result<Vec<MockSummary>, CheckError> {
    running
        .into_iter()
        .map(|m| {
            let name = m.name().to_owned();
            m.stop().map_err(|source| CheckError::MockStop {
                name,
                source: Box::new(source),
            })
        })
        .collect()
}

fn progress(replay: Replay<'_>, style: ProgressStyle) -> Replay<'_> {
    match style {
        ProgressStyle::Quiet => replay.progress(NoProgress),
        ProgressStyle::Bar => replay.progress(BarProgress::new()),
        ProgressStyle::Log => replay.progress(LogProgress::default()),
    }
}

fn must_not_exist(path: &Path, choose: &'static str) -> Result<(), CheckError> {
    if path.exists() {
        return Err(CheckError::Exists {
            path: path.to_owned(),
            choose,
        });
    }
    Ok(())
}

/// Everything checked before a single request is sent.
struct Prepared {
    run_dir: PathBuf,
    config: ReplayConfig,
    diff: DiffConfig,
    chaos_rules: Vec<FaultRule>,
    chaos_dir: PathBuf,
    corpus: Option<Corpus>,
}

/// What [`settings`] checked and built.
struct Settings {
    config: ReplayConfig,
    diff: DiffConfig,
    chaos_rules: Vec<FaultRule>,
    corpus: Option<Corpus>,
}

/// Checks everything in `spec` that does not depend on its run and report directories existing
/// or not — pacing, timeouts, request changes, targets, the judge's rules and SLOs, dependencies,
/// chaos faults, the trace header, the corpus — sending and writing nothing. `serve` checks its
/// template with it at start-up, so a bad flag stops it there rather than failing every run.
pub fn validate(spec: &CheckSpec) -> Result<(), CheckError> {
    settings(spec).map(drop)
}

fn settings(spec: &CheckSpec) -> Result<Settings, CheckError> {
    let config = replay_options(spec, spec.tapes.clone(), &spec.run_dir())
        .validate()
        .map_err(|source| CheckError::ReplaySettings { phase: "", source })?;
    let mut names = std::collections::HashSet::new();
    for m in &spec.dependencies {
        if !names.insert(&m.name) {
            return Err(CheckError::DuplicateDependency(m.name.clone()));
        }
    }
    let chaos_rules = match &spec.chaos {
        None => Vec::new(),
        Some(_) if spec.dependencies.is_empty() => {
            return Err(CheckError::ChaosWithoutDependencies);
        }
        Some(file) => tapedeck_mock::fault::rules_from(&[], Some(file)).map_err(|source| {
            CheckError::Chaos {
                path: file.clone(),
                source: Box::new(source),
            }
        })?,
    };
    if let Some(h) = &spec.dependency_trace_header
        && http::HeaderName::from_bytes(h.trim().as_bytes()).is_err()
    {
        return Err(CheckError::TraceHeader(h.clone()));
    }
    let diff = diff_options(spec, &spec.run_dir())
        .validate()
        .map_err(CheckError::JudgeSettings)?;
    let corpus = match &spec.corpus {
        None => None,
        Some(dir) => Some(Corpus::open(dir)?),
    };
    Ok(Settings {
        config,
        diff,
        chaos_rules,
        corpus,
    })
}

fn prepare(spec: &CheckSpec) -> Result<Prepared, CheckError> {
    let run_dir = spec.run_dir();
    must_not_exist(&run_dir, "--out")?;
    // The settings, the judge's included, are checked before anything is sent.
    let Settings {
        config,
        diff,
        chaos_rules,
        corpus,
    } = settings(spec)?;
    if spec.replay.allow_writes && spec.noise == Noise::Baseline {
        tracing::warn!(
            baseline = %spec.baseline,
            "the baseline is also the noise target: it receives each replayed write twice; give \
             --secondary URL or --no-noise-target to avoid that"
        );
    }
    let chaos_dir = spec.report.join("chaos").join("run");
    if spec.chaos.is_some() {
        must_not_exist(&chaos_dir, "--report")?;
    }
    let corpus = match corpus {
        None => None,
        Some(c) => {
            for sub in [corpus::SOURCE, corpus::RUN] {
                must_not_exist(&spec.report.join(corpus::PHASE).join(sub), "--report")?;
            }
            if c.entries().is_empty() {
                tracing::warn!(corpus = %c.dir().display(), "the regression corpus is empty: nothing to replay before the tape");
                None
            } else {
                Some(c)
            }
        }
    };
    Ok(Prepared {
        run_dir,
        config,
        diff,
        chaos_rules,
        chaos_dir,
        corpus,
    })
}

/// The corpus phase: replays every entry (repeated until each route has the judge's minimum
/// sample) against every target, then judges that run alone.
fn run_corpus(
    spec: &CheckSpec,
    corpus: &Corpus,
    diff: &DiffConfig,
) -> Result<(CorpusPhase, DiffOutcome), CheckError> {
    let phase_dir = spec.report.join(corpus::PHASE);
    let source = phase_dir.join(corpus::SOURCE);
    let run_dir = phase_dir.join(corpus::RUN);
    let recorded_as = corpus::recorded_authority(&spec.tapes);
    let requests = corpus.expand(&source, diff.settings.min_samples, recorded_as.as_ref())?;
    let mut opts = replay_options(spec, vec![source], &run_dir);
    // The corpus is always replayed whole, whatever selects from the tape.
    opts.methods.clear();
    opts.routes.clear();
    opts.from = None;
    opts.to = None;
    opts.limit = None;
    opts.sample = None;
    opts.shard = None;
    // Its requests were recorded at different times: never paced by their timestamps.
    if opts.pace == "recorded" {
        opts.pace = "max".to_owned();
        opts.concurrency = opts.concurrency.or(Some(16));
    }
    let config = opts
        .validate()
        .map_err(|source| CheckError::ReplaySettings {
            phase: " (--corpus)",
            source,
        })?;
    tracing::info!(corpus = %corpus.dir().display(), entries = corpus.entries().len(), requests, "replaying the regression corpus before the tape");
    let summary = progress(Replay::new(&config), spec.progress)
        .run_blocking()
        .map_err(|source| CheckError::Replay {
            phase: "replay of the corpus",
            source,
        })?;
    let mut opts = diff_options(spec, &run_dir);
    opts.dependencies.clear();
    opts.early_stop = false;
    let cfg = opts.validate().map_err(CheckError::JudgeSettings)?;
    let outcome = tapedeck_diff::run(&cfg).map_err(CheckError::Diff)?;
    let report = corpus.report(&summary, &outcome, &run_dir);
    if report.skipped_writes > 0 {
        tracing::warn!(
            skipped = report.skipped_writes,
            "corpus requests with unsafe methods were not replayed: give --allow-writes to replay them"
        );
    }
    let phase = CorpusPhase {
        replay: summary,
        run_dir: run_dir.clone(),
        entries: corpus.entries().len(),
        verdict: outcome.verdict,
    };
    let mut judged = outcome;
    judged.corpus = Some(report);
    Ok((phase, judged))
}

/// Replays and judges; writes the reports (and the ticket). Shared by `check`, `demo` and
/// `serve`.
pub fn check(spec: &CheckSpec) -> Result<Checked, CheckError> {
    let Prepared {
        run_dir,
        config,
        mut diff,
        chaos_rules,
        chaos_dir,
        corpus,
    } = prepare(spec)?;
    let trace_header = spec.dependency_trace_header.as_deref();
    let began = Instant::now();
    // The corpus phase has mocks of its own (calls in `REPORT/corpus/mocks/NAME`): its requests
    // carry the recorded traces of the tape's, and must not add calls to the tape's traces.
    let corpus_phase = match &corpus {
        Some(c) => {
            let running = start_mocks(
                &spec.dependencies,
                |n| corpus_mock_out(&spec.report, n),
                &[],
                trace_header,
            )?;
            let phase = run_corpus(spec, c, &diff);
            let stopped = stop_mocks(running);
            let phase = phase?;
            stopped?;
            Some(phase)
        }
        None => None,
    };
    let corpus_failed = corpus_phase
        .as_ref()
        .is_some_and(|(_, o)| o.corpus.as_ref().is_some_and(|c| !c.hits.is_empty()));
    // With early stop, a known regression that reappeared ends the run at once.
    let skip_tape = corpus_failed && diff.early_stop;
    if skip_tape {
        tracing::info!(
            "early stop: a known regression reappeared in the corpus; the tape is not replayed"
        );
    }

    let live = (diff.early_stop && !skip_tape).then(|| {
        Arc::new(Mutex::new(Live {
            judge: LiveJudge::new(&diff),
            decided_at: None,
        }))
    });
    let (replay, mocks) = if skip_tape {
        (None, Vec::new())
    } else {
        // Every mock runs for the whole replay of the tape; one that cannot start stops the
        // check (the ones already started stop when dropped).
        let running = start_mocks(
            &spec.dependencies,
            |n| mock_out(&spec.report, n),
            &[],
            trace_header,
        )?;
        let mut replay = Replay::new(&config);
        if let Some(live) = &live {
            replay = replay.observer(LiveObserver(live.clone()));
        }
        let summary = progress(replay, spec.progress)
            .run_blocking()
            .map_err(|source| CheckError::Replay {
                phase: "replay",
                source,
            })?;
        (Some(summary), stop_mocks(running)?)
    };

    // The candidate again, alone, with failing dependencies.
    let mut chaos = None;
    if let (Some(file), Some(_)) = (&spec.chaos, &replay) {
        let running = start_mocks(
            &spec.dependencies,
            |n| chaos_mock_out(&spec.report, n),
            &chaos_rules,
            trace_header,
        )?;
        let mut opts = replay_options(spec, spec.tapes.clone(), &chaos_dir);
        opts.targets = vec![format!("{CHAOS}={}", spec.candidate)];
        let config = opts
            .validate()
            .map_err(|source| CheckError::ReplaySettings {
                phase: " (--chaos)",
                source,
            })?;
        let summary = tapedeck_replay::run_blocking(&config, NoProgress).map_err(|source| {
            CheckError::Replay {
                phase: "replay with faults (--chaos)",
                source,
            }
        })?;
        stop_mocks(running)?;
        tracing::info!(faults = %file.display(), run = %chaos_dir.display(), "chaos run done");
        let mut opts = diff_options(spec, &run_dir);
        opts.chaos = Some(tapedeck_diff::chaos::ChaosInput {
            run: vec![chaos_dir.clone()],
            target: CHAOS.into(),
            calls: spec
                .dependencies
                .iter()
                .map(|m| chaos_mock_out(&spec.report, &m.name))
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
        diff = opts.validate().map_err(CheckError::JudgeSettings)?;
        chaos = Some((summary, chaos_dir.clone()));
    }

    let strict = spec.judge.strict;
    let inconclusive_as = spec.judge.inconclusive_as;
    let (mut outcome, verdict_run) = match (&replay, corpus_phase.as_ref()) {
        (None, Some((phase, corpus_outcome))) => {
            let mut o = corpus_outcome.clone();
            o.corpus = None;
            let sent = phase
                .replay
                .targets
                .iter()
                .map(|t| (t.name.clone(), t.requests))
                .collect();
            o.stopped_early = Some(true);
            o.requests_sent = Some(sent);
            o.time_to_verdict_ms = Some(began.elapsed().as_millis() as u64);
            (o, phase.run_dir.clone())
        }
        _ => (
            tapedeck_diff::run(&diff).map_err(CheckError::Diff)?,
            run_dir.clone(),
        ),
    };
    if let (Some(live), Some(replay)) = (live, &replay) {
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
    let mut corpus_out = None;
    if let Some((phase, mut corpus_outcome)) = corpus_phase {
        if let Some(report) = corpus_outcome.corpus.take() {
            tapedeck_diff::corpus::apply(&mut outcome, report, strict, inconclusive_as);
        }
        corpus_out = Some(phase);
    }

    let reports = tapedeck_storage::object::OutputDir::new(&spec.report).map_err(|source| {
        CheckError::ReportLocation {
            path: spec.report.clone(),
            source,
        }
    })?;
    tapedeck_diff::report::write_reports(&outcome, reports.path()).map_err(|source| {
        CheckError::Reports {
            path: spec.report.clone(),
            source,
        }
    })?;
    reports
        .finish()
        .map_err(|source| CheckError::ReportLocation {
            path: spec.report.clone(),
            source,
        })?;
    let ticket = spec.ticket.as_ref().map(|dir| {
        let mut opts = TicketOptions::new(&spec.report, dir);
        opts.run = Some(verdict_run.clone());
        tapedeck_ticket::write_ticket(&opts)
    });
    Ok(Checked {
        replay,
        corpus: corpus_out,
        mocks,
        chaos,
        outcome,
        run_dir: verdict_run,
        ticket,
    })
}
