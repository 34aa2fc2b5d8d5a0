//! `tapedeck diff`: flags → [`tapedeck_diff::DiffOptions`] → the judge; prints the summary,
//! writes the reports, exits with the verdict's code.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tapedeck_diff::{DiffOptions, InconclusiveAs};

/// Judge a replay run: response diffs beyond noise, latency regressions, error rates.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck diff --run ./runs/r1 --baseline baseline --candidate candidate --noise secondary --report ./report\n  \
tapedeck diff --run ./runs/r1 --baseline-tape ./tapes/svc --candidate candidate\n  \
tapedeck diff --baseline-tape ./tapes/stable --candidate-tape ./tapes/canary\n  \
tapedeck diff --run ./runs/r1 --noise secondary --write-rules learned.toml\n  \
tapedeck diff --run ./runs/r1 --rules learned.toml --slo 'GET /api/users: p95<300ms'\n\n\
Exit codes: 0 pass (also marginal unless --strict), 1 fail (regression: roll back),\n\
2 usage or input error, 3 inconclusive (too little data; see --inconclusive-as).")]
pub(crate) struct Args {
    /// The run to judge (output of `tapedeck replay`): a directory or file (repeatable, e.g. the
    /// shards of one run).
    #[arg(long, value_name = "PATH", required_unless_present = "candidate_tape")]
    run: Vec<PathBuf>,
    /// Target label of the baseline in the run.
    #[arg(long, default_value = "baseline", value_name = "LABEL")]
    baseline: String,
    /// Target label of the candidate in the run.
    #[arg(long, default_value = "candidate", value_name = "LABEL")]
    candidate: String,
    /// Target label of a second baseline instance replayed in the same pass: measures noise.
    #[arg(long, value_name = "LABEL")]
    noise: Option<String>,
    /// Compare the candidate against the responses recorded on this tape instead of a baseline
    /// target (repeatable).
    #[arg(long, value_name = "PATH")]
    baseline_tape: Vec<PathBuf>,
    /// Canary analysis: a tape of the candidate's live traffic, compared with --baseline-tape
    /// without pairing (latency distributions and error rates per route only).
    #[arg(
        long,
        value_name = "PATH",
        requires = "baseline_tape",
        conflicts_with = "run"
    )]
    candidate_tape: Vec<PathBuf>,
    /// Rules file (TOML): settings, compared headers, route templates, ignore rules, SLOs.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Latency objective for the candidate, e.g. 'GET /api/users: p95<300ms' (repeatable).
    #[arg(long, value_name = "SLO")]
    slo: Vec<String>,
    /// Write the reports (verdict.json, report.md, report.html, junit.xml, report.gha.md) into
    /// this directory (or object-store URL).
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Write the learned ignore rules (noise) to this file, for review and `--rules`.
    #[arg(long, value_name = "FILE")]
    write_rules: Option<PathBuf>,
    /// Treat a marginal verdict as a failure (exit 1).
    #[arg(long)]
    strict: bool,
    /// Exit code for an inconclusive verdict, for CI systems that only read 0 / non-0.
    #[arg(long, value_enum, value_name = "AS")]
    inconclusive_as: Option<InconclusiveArg>,
    /// Version label of the baseline for titles (default: the target label).
    #[arg(long, value_name = "LABEL")]
    baseline_version: Option<String>,
    /// Version label of the candidate for titles (default: the target label).
    #[arg(long, value_name = "LABEL")]
    candidate_version: Option<String>,
    /// Seed for the bootstrap (default: settings.seed); same seed, same numbers.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// A dependency mocked during the run, for the verdict's dependency section:
    /// 'NAME=TAPE,CALLS' — its recorded tape and the calls tape its mock wrote (`tapedeck mock
    /// --out`; run the mock with --lane for each replay target). Repeatable.
    #[arg(long = "dependency", value_name = "NAME=TAPE,CALLS")]
    dependencies: Vec<String>,
    /// Read on past damaged tape files (listing them) instead of stopping at the first.
    #[arg(long)]
    skip_corrupt: bool,
    /// Print verdict.json to stdout instead of the summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    color: crate::output::ColorFlag,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum InconclusiveArg {
    Pass,
    Fail,
}

impl Args {
    fn options(&self) -> anyhow::Result<DiffOptions> {
        let mut dependencies = Vec::new();
        for d in &self.dependencies {
            let parsed = d
                .split_once('=')
                .and_then(|(n, rest)| Some((n.trim(), rest.rsplit_once(',')?)))
                .filter(|(n, (t, c))| !n.is_empty() && !t.is_empty() && !c.is_empty());
            let Some((name, (tape, calls))) = parsed else {
                anyhow::bail!("--dependency `{d}`: expected NAME=TAPE,CALLS");
            };
            dependencies.push(tapedeck_diff::deps::DependencyInput {
                name: name.to_owned(),
                tape: vec![tape.into()],
                calls: vec![calls.into()],
            });
        }
        Ok(DiffOptions {
            dependencies,
            run: self.run.clone(),
            baseline: self.baseline.clone(),
            candidate: self.candidate.clone(),
            noise: self.noise.clone(),
            baseline_tape: (!self.baseline_tape.is_empty()).then(|| self.baseline_tape.clone()),
            candidate_tape: (!self.candidate_tape.is_empty()).then(|| self.candidate_tape.clone()),
            rules: self.rules.clone(),
            slos: self.slo.clone(),
            strict: self.strict,
            inconclusive_as: match self.inconclusive_as {
                None => InconclusiveAs::Inconclusive,
                Some(InconclusiveArg::Pass) => InconclusiveAs::Pass,
                Some(InconclusiveArg::Fail) => InconclusiveAs::Fail,
            },
            skip_corrupt: self.skip_corrupt,
            baseline_version: self.baseline_version.clone(),
            candidate_version: self.candidate_version.clone(),
            seed: self.seed,
            ..DiffOptions::default()
        })
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let config = args
        .options()?
        .validate()
        .context("invalid diff configuration")?;
    let outcome = tapedeck_diff::run(&config).context("diff failed")?;
    if let Some(dir) = &args.report {
        let out = tapedeck_storage::object::OutputDir::new(dir).context("report location")?;
        tapedeck_diff::report::write_reports(&outcome, out.path())?;
        out.finish()
            .with_context(|| format!("uploading the reports to {}", dir.display()))?;
    }
    if let Some(path) = &args.write_rules {
        tapedeck_diff::report::write_learned_rules(&outcome, path)?;
    }
    let mut out = crate::output::stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &outcome).context("writing verdict JSON")?;
        writeln!(out)?;
    } else {
        let color = args.color.color.enabled();
        write!(out, "{}", tapedeck_diff::report::summary(&outcome, color))?;
        if let Some(dir) = &args.report {
            writeln!(
                out,
                "\nreports in {}: {}",
                dir.display(),
                tapedeck_diff::report::report_files()
            )?;
        }
        if let Some(p) = &args.write_rules {
            writeln!(
                out,
                "learned rules ({}): {}",
                outcome.learned_rules.len(),
                p.display()
            )?;
        }
    }
    out.flush()?;
    Ok(outcome.exit_code)
}
