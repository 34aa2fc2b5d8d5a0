//! Small helpers shared by the subcommands: logging set-up, time formatting.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines on stderr look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Crates whose debug/trace logs contain request or response headers.
const HEADER_DUMPING_CRATES: [&str; 7] = [
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_http",
    "hyper",
    "hyper_util",
    "h2",
];

/// Structured logs to stderr; `RUST_LOG` overrides the default level (`info` for tapedeck crates,
/// `warn` for the rest).
pub(crate) fn init_logging(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,tapedeck=info,tapedeck_proxy=info,tapedeck_replay=info,tapedeck_diff=info,tapedeck_storage=info"));
    // HTTP stacks that print whole header maps (cookies, tokens) at debug/trace level are capped
    // at info whatever RUST_LOG says: secrets never reach the logs (issue 8, security).
    for target in HEADER_DUMPING_CRATES {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub(crate) use tapedeck_common::format::{human_bytes, thousands};

/// Microseconds since the epoch as RFC 3339 UTC with millisecond precision.
pub(crate) fn rfc3339_us(us: i64) -> String {
    tapedeck_common::format::rfc3339(us, tapedeck_common::format::Precision::Millis)
}
