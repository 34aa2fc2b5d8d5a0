//! `tapedeck ticket` (and `tapedeck check --ticket DIR`): flags around the ticket bundle of
//! [`tapedeck_ticket`] (what a bundle holds and how it is made is documented there).

use std::io::Write as _;
use std::path::PathBuf;

use tapedeck_ticket::{
    PostSettings, TicketOptions, TicketOutcome, describe, parse_header, post_ticket, write_ticket,
};

/// Write a redacted bug-ticket bundle (ticket.md, ticket.json, the failing exchanges) from a report.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck ticket --report ./report --out ./ticket\n  \
tapedeck ticket --report ./report --out ./ticket --redact-json '$..email' \\\n      \
--post https://tracker.example/hooks/tapedeck \\\n      \
--post-header 'Authorization: Bearer ${TRACKER_TOKEN}'\n  \
tapedeck check --tape ./tapes/svc --baseline URL --candidate URL \\\n      \
--report ./report --ticket ./ticket\n\n\
A passing verdict (pass, or marginal without --strict) makes no ticket: the command says so and\n\
exits 0. Exit codes: 0 written (and delivered), 2 bad input or a failed --post.")]
pub(crate) struct Args {
    /// Report directory written by `tapedeck check` or `tapedeck diff --report`.
    #[arg(long, value_name = "DIR")]
    report: PathBuf,
    /// Where the bundle goes (created; existing ticket files are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The replay run (a tape) the report judged [default: REPORT/run].
    #[arg(long, value_name = "DIR")]
    run: Option<PathBuf>,
    /// POST ticket.json to this webhook (http:// or https://) and report its answer.
    #[arg(long, value_name = "URL")]
    post: Option<String>,
    /// Timeout of the --post request.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    post_timeout: String,
    /// Header for the --post request, e.g. 'Authorization: Bearer ${TRACKER_TOKEN}' (${VAR} reads
    /// the environment; repeatable).
    #[arg(long = "post-header", value_name = "HEADER")]
    post_headers: Vec<String>,
    /// Trust the CA certificates in this PEM file (instead of the system's) for an https:// --post.
    #[arg(long, value_name = "FILE")]
    post_ca_cert: Option<PathBuf>,
    /// Bundle at most this many failing origins per route (each with all its targets' rows).
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_per_route: usize,
    /// What to mask in the bundled exchanges, curl commands and excerpts, on top of what the
    /// tape's recorder already redacted.
    #[command(flatten)]
    redact: crate::flags::RedactArgs,
    /// Extra label for ticket.json (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let timeout = tapedeck_common::parse::parse_duration(&args.post_timeout)
        .map_err(|e| anyhow::anyhow!("--post-timeout {}: {e}", args.post_timeout))?;
    // Check the delivery settings before any work, so a typo does not cost a bundle.
    let post = match &args.post {
        Some(url) => Some(PostSettings {
            url: url.clone(),
            headers: args
                .post_headers
                .iter()
                .map(|h| parse_header(h))
                .collect::<Result<_, _>>()?,
            timeout,
            ca_cert: args.post_ca_cert.clone(),
        }),
        None => None,
    };
    let opts = TicketOptions {
        report: args.report.clone(),
        out: args.out.clone(),
        run: args.run.clone(),
        max_per_route: args.max_per_route.max(1),
        redact: args.redact.rules(),
        labels: args.labels.clone(),
    };
    let outcome = write_ticket(&opts)?;
    let mut out = crate::output::stdout();
    writeln!(out, "{}", describe(&outcome, &args.out))?;
    if let (TicketOutcome::Written(t), Some(post)) = (&outcome, &post) {
        let status = post_ticket(post, t)?;
        writeln!(out, "posted ticket.json to {}: HTTP {status}", post.url)?;
    }
    Ok(crate::EXIT_OK)
}
