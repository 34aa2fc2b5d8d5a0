//! `tapedeck serve`: `tapedeck check` as a small HTTP service, for rollout controllers that ask
//! over HTTP instead of running a Job: the Argo Rollouts **Web** metric provider and **Flagger**
//! webhooks. The service is `tapedeck_serve` (its crate docs describe the API and the run
//! store); this module turns the flags into its `ServeSpec`: `--tape`, `--baseline`,
//! `--candidate` and `--secondary` are the defaults of a run's request, and `--rules`, `--slo`,
//! `--strict` and the `tapedeck check` flags after `--` are parsed once, at start-up, into
//! `check::Settings`, which build the template of every run's check (bad ones stop `serve`
//! there, not at the first run).
//!
//! With a token (`--token` or `TAPEDECK_SERVE_TOKEN`) every request must carry
//! `Authorization: Bearer <token>`, else `401`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tapedeck_serve::{Defaults, ServeSpec, Server};

use crate::check;

/// Serve check runs over HTTP: an Argo Rollouts Web provider and Flagger webhooks.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck serve --runs ./runs --tape ./tapes/svc \\\n      \
--baseline http://svc-stable:80 --candidate http://svc-canary:80\n  \
TAPEDECK_SERVE_TOKEN=s3cret tapedeck serve --listen 0.0.0.0:8480 --runs /data/runs \\\n      \
--tape /data/tape --baseline http://svc-stable --candidate http://svc-canary \\\n      \
-- --slo 'GET /api/users: p95<300ms' --limit 5000\n\n\
Endpoints:\n  \
POST /v1/runs                    start a run; JSON: id, tape, baseline, candidate, …\n  \
GET  /v1/runs/{id}/verdict       {\"status\": \"pending|pass|fail|inconclusive|error\", …}\n  \
GET  /v1/runs/{id}/report.md     the report (report.html, verdict.json, junit.xml too; ticket.md with --tickets)\n  \
POST /flagger/pre-rollout        start the run for the canary's checksum\n  \
POST /flagger/rollout            200 while pending/pass, 412 + reason otherwise\n  \
POST /flagger/confirm-promotion  200 only on a finished pass\n  \
POST /flagger/rollback           200 only on a finished fail\n\n\
Arguments after `--` are `tapedeck check` flags used for every run (e.g. --rate, --limit).\n\
Binds loopback unless told otherwise; anyone who can reach the port can start runs against any\n\
URL, so set a token before listening on other interfaces.")]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8480", value_name = "ADDR")]
    listen: SocketAddr,
    /// Directory for the runs' state and reports (created).
    #[arg(long, value_name = "DIR")]
    runs: PathBuf,
    /// Require `Authorization: Bearer TOKEN` on every request.
    #[arg(
        long,
        env = "TAPEDECK_SERVE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Checks running at once; more wait as pending.
    #[arg(long, default_value_t = 1, value_name = "N")]
    max_parallel: usize,
    /// Default tape to replay (repeatable).
    #[arg(long, value_name = "PATH")]
    tape: Vec<PathBuf>,
    /// Default baseline URL.
    #[arg(long, value_name = "URL")]
    baseline: Option<String>,
    /// Default candidate URL.
    #[arg(long, value_name = "URL")]
    candidate: Option<String>,
    /// Default second baseline URL (noise).
    #[arg(long, value_name = "URL")]
    secondary: Option<String>,
    /// The judge's rules for every run.
    #[command(flatten)]
    judge: crate::flags::JudgeFlags,
    /// Write a bug-ticket bundle to RUNS/{id}/ticket when a run does not pass.
    #[arg(long)]
    tickets: bool,
    /// Keep the newest N finished runs; older ones (state and reports) are deleted.
    #[arg(long, default_value_t = 500, value_name = "N")]
    keep_runs: usize,
    /// More `tapedeck check` flags for every run, after `--`.
    #[arg(last = true, value_name = "CHECK-FLAGS")]
    check_args: Vec<String>,
}

/// The check settings of every run, from `--rules`, `--slo`, `--strict` and the `tapedeck check`
/// flags after `--` (parsed once, at start-up).
fn check_settings(args: &Args) -> anyhow::Result<check::Settings> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        settings: check::Settings,
    }
    let mut argv = vec!["tapedeck serve --".to_owned()];
    argv.extend(args.check_args.iter().cloned());
    let mut settings = Wrap::try_parse_from(argv)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string().lines().next().unwrap_or("bad check flags")
            )
        })?
        .settings;
    settings.judge.merge(&args.judge)?;
    Ok(settings)
}

impl Args {
    /// The server these flags ask for; the check flags become the template of every run's check.
    fn spec(self, settings: &check::Settings) -> ServeSpec {
        let mut spec = ServeSpec::new(self.listen, self.runs);
        spec.token = self.token;
        spec.max_parallel = self.max_parallel;
        spec.keep_runs = self.keep_runs;
        spec.tickets = self.tickets;
        spec.defaults = Defaults {
            tape: self.tape,
            baseline: self.baseline,
            candidate: self.candidate,
            secondary: self.secondary,
        };
        settings.apply(&mut spec.check);
        spec
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    if args.token.as_deref().is_none_or(str::is_empty) && !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "listening beyond loopback without --token: anyone who reaches the port can start runs");
    }
    // Bad check flags are refused at start-up, not at the first run.
    let settings = check_settings(&args).context("check flags after --")?;
    let spec = args.spec(&settings);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server runtime")?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let server = Server::start(spec).await?;
        server
            .run(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            })
            .await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Blocking checks cannot be interrupted; do not wait for them.
    rt.shutdown_background();
    Ok(crate::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> Args {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: Args,
        }
        let mut full = vec!["tapedeck-serve"];
        full.extend(argv);
        Wrap::try_parse_from(full).expect("flags parse").args
    }

    #[test]
    fn flags_become_the_spec_and_the_check_template() {
        let a = args(&[
            "--runs",
            "/r",
            "--tape",
            "/t1",
            "--tape",
            "/t2",
            "--baseline",
            "http://b",
            "--candidate",
            "http://c",
            "--max-parallel",
            "3",
            "--keep-runs",
            "9",
            "--tickets",
            "--slo",
            "GET /: p95<300ms",
            "--strict",
            "--",
            "--limit",
            "50",
            "--no-noise-target",
        ]);
        let settings = check_settings(&a).expect("check flags");
        let spec = a.spec(&settings);
        assert_eq!(spec.runs, PathBuf::from("/r"));
        assert_eq!(spec.listen.to_string(), "127.0.0.1:8480");
        assert_eq!(
            (spec.max_parallel, spec.keep_runs, spec.tickets),
            (3, 9, true)
        );
        assert_eq!(
            spec.defaults.tape,
            [PathBuf::from("/t1"), PathBuf::from("/t2")]
        );
        assert_eq!(spec.defaults.secondary, None);
        assert_eq!(spec.check.replay.limit, Some(50));
        assert_eq!(spec.check.noise, tapedeck_check::Noise::Off);
        assert!(spec.check.judge.strict);
        assert_eq!(spec.check.judge.slos, ["GET /: p95<300ms"]);
    }

    #[test]
    fn bad_check_flags_are_refused_at_start_up() {
        let a = args(&["--runs", "/r", "--", "--no-such-flag"]);
        let e = check_settings(&a).expect_err("unknown flag");
        assert!(e.to_string().contains("--no-such-flag"), "{e}");
    }
}
