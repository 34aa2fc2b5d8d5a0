//! `tapedeck sample-api` (hidden): the demo's API alone, for benchmarks of the judge.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};

use super::app;

/// Serve the demo's sample API alone, for benchmarks of the judge (`benches/early_stop.py`):
/// prints its URL on stdout, serves on a loopback port picked by the OS until SIGTERM or Ctrl-C.
#[derive(Debug, clap::Args)]
pub(crate) struct SampleApiArgs {
    /// Which build: v1, v2-bad, v2-good, or planted (v1 with the effects below).
    #[arg(long, value_enum, default_value_t = SampleBuild::V1)]
    build: SampleBuild,
    /// planted: multiply every latency of `GET /api/users?page=N` by this (1.2 = p95 +20 %).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pages_latency_factor: f64,
    /// planted: add this many milliseconds to `GET /api/users?page=N` for pages ≥ 2 (v2-bad: 120).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pages_delay_ms: u64,
    /// planted: rename `email` in this share of the `GET /api/users/{id}` answers.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    users_change_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SampleBuild {
    V1,
    V2Bad,
    V2Good,
    Planted,
}

pub(crate) fn run_sample_api(args: SampleApiArgs) -> anyhow::Result<u8> {
    let f = args.pages_latency_factor;
    if !(f.is_finite() && (0.0..=10_000.0).contains(&f)) {
        bail!("--pages-latency-factor {f}: must be a number in 0..=10000");
    }
    let r = args.users_change_rate;
    if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
        bail!("--users-change-rate {r}: must be a fraction in 0..=1");
    }
    let build = match args.build {
        SampleBuild::V1 => app::Build::V1,
        SampleBuild::V2Bad => app::Build::V2Bad,
        SampleBuild::V2Good => app::Build::V2Good,
        SampleBuild::Planted => app::Build::Planted(app::Planted {
            pages_latency_factor: f,
            pages_delay: Duration::from_millis(args.pages_delay_ms.min(600_000)),
            users_change_rate: r,
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The product route asks a pricing service: this process serves one of its own.
        let pricing = super::pricing::start_pricing(stop_rx.clone())
            .await
            .context("binding the pricing service")?;
        let addr = app::start(build, pricing, stop_rx)
            .await
            .context("binding the sample API")?;
        let mut out = crate::output::stdout();
        writeln!(out, "http://{addr}")?;
        out.flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(crate::EXIT_OK)
}
