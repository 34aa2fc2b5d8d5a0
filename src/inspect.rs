//! `tapedeck inspect`: what is on a tape.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use tapedeck_storage::{FileKind, ReadOptions, SkippedFile, Tape};

use crate::util::{human_bytes, rfc3339_us, thousands};

/// Summarize a tape.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tape directories or files (`.parquet`, spool `.arrows`).
    #[arg(required = true, value_name = "TAPE")]
    tapes: Vec<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// How many routes to list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// Read on past damaged files, listing them, instead of stopping at the first.
    #[arg(long)]
    skip_corrupt: bool,
}

/// The summary, as printed with `--json`.
#[derive(Debug, Default, Serialize)]
struct Summary {
    exchanges: u64,
    first_started_at: Option<String>,
    last_started_at: Option<String>,
    bytes_on_disk: u64,
    raw_bytes: u64,
    compression_ratio: Option<f64>,
    files: FilesSummary,
    top_routes: Vec<RouteCount>,
    status: BTreeMap<String, u64>,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    truncated_bodies: u64,
    sources: BTreeMap<String, u64>,
    targets: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
struct FilesSummary {
    sealed: usize,
    spool: usize,
    read: usize,
    skipped: Vec<SkippedFile>,
    partial_segments: Vec<SkippedFile>,
}

#[derive(Debug, Serialize)]
struct RouteCount {
    method: String,
    path: String,
    count: u64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let tape = Tape::open(&args.tapes).context("opening tape")?;
    let mut summary = Summary {
        bytes_on_disk: tape.bytes_on_disk(),
        ..Summary::default()
    };
    summary.files.sealed = tape
        .files()
        .iter()
        .filter(|f| f.kind == FileKind::Sealed)
        .count();
    summary.files.spool = tape
        .files()
        .iter()
        .filter(|f| f.kind == FileKind::Spool)
        .count();

    let mut routes: HashMap<(String, String), u64> = HashMap::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut iter = tape
        .scan(ReadOptions {
            skip_corrupt: args.skip_corrupt,
            ..ReadOptions::default()
        })
        .exchanges();
    for ex in iter.by_ref() {
        let ex = ex.context("reading tape")?;
        summary.exchanges += 1;
        summary.raw_bytes += ex.raw_size();
        first = first.min(ex.started_at_us);
        last = last.max(ex.started_at_us);
        *routes
            .entry((
                ex.method.to_string(),
                tapedeck_storage::route::template_path(&ex.path),
            ))
            .or_default() += 1;
        let class = match ex.status {
            Some(s) => format!("{}xx", s / 100),
            None => "none".to_owned(),
        };
        *summary.status.entry(class).or_default() += 1;
        if let Some(kind) = ex.error_kind {
            summary.errors += 1;
            *summary.errors_by_kind.entry(kind.to_string()).or_default() += 1;
        }
        if ex.req_body_truncated || ex.resp_body_truncated {
            summary.truncated_bodies += 1;
        }
        *summary.sources.entry(ex.source.to_string()).or_default() += 1;
        if let Some(t) = &ex.target {
            *summary.targets.entry(t.clone()).or_default() += 1;
        }
    }
    let report = iter.report();
    summary.files.read = report.files_read;
    summary.files.skipped = report.files_skipped.clone();
    summary.files.partial_segments = report.partial_segments.clone();
    if summary.exchanges > 0 {
        summary.first_started_at = Some(rfc3339_us(first));
        summary.last_started_at = Some(rfc3339_us(last));
    }
    if summary.bytes_on_disk > 0 && summary.raw_bytes > 0 {
        summary.compression_ratio = Some(summary.raw_bytes as f64 / summary.bytes_on_disk as f64);
    }
    let mut routes: Vec<RouteCount> = routes
        .into_iter()
        .map(|((method, path), count)| RouteCount {
            method,
            path,
            count,
        })
        .collect();
    routes.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.method, &a.path).cmp(&(&b.method, &b.path)))
    });
    routes.truncate(args.top);
    summary.top_routes = routes;

    let mut out = crate::output::stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &args, &summary)?;
    }
    Ok(crate::EXIT_OK)
}

fn print_text(out: &mut impl Write, args: &Args, s: &Summary) -> std::io::Result<()> {
    let names: Vec<String> = args.tapes.iter().map(|p| p.display().to_string()).collect();
    writeln!(out, "tape        {}", names.join(", "))?;
    writeln!(
        out,
        "files       {} read ({} sealed, {} spool), {} skipped",
        s.files.read,
        s.files.sealed,
        s.files.spool,
        s.files.skipped.len()
    )?;
    writeln!(out, "exchanges   {}", thousands(s.exchanges))?;
    if let (Some(a), Some(b)) = (&s.first_started_at, &s.last_started_at) {
        writeln!(out, "time        {a} .. {b}")?;
    }
    let ratio = s
        .compression_ratio
        .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.1}x"));
    writeln!(
        out,
        "size        {} on disk, {} raw, compression {ratio}",
        human_bytes(s.bytes_on_disk),
        human_bytes(s.raw_bytes)
    )?;
    let status: Vec<String> = s
        .status
        .iter()
        .map(|(k, v)| format!("{k} {}", thousands(*v)))
        .collect();
    writeln!(
        out,
        "status      {}",
        if status.is_empty() {
            "-".into()
        } else {
            status.join(" · ")
        }
    )?;
    let kinds: Vec<String> = s
        .errors_by_kind
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if kinds.is_empty() {
        writeln!(out, "errors      {}", thousands(s.errors))?;
    } else {
        writeln!(
            out,
            "errors      {} ({})",
            thousands(s.errors),
            kinds.join(", ")
        )?;
    }
    writeln!(
        out,
        "truncated   {} exchanges with a truncated body",
        thousands(s.truncated_bodies)
    )?;
    if !s.targets.is_empty() {
        let t: Vec<String> = s
            .targets
            .iter()
            .map(|(k, v)| format!("{k} {}", thousands(*v)))
            .collect();
        writeln!(out, "targets     {}", t.join(" · "))?;
    }
    if !s.top_routes.is_empty() {
        writeln!(out, "top routes")?;
        let width = s
            .top_routes
            .iter()
            .map(|r| r.method.len() + 1 + r.path.len())
            .max()
            .unwrap_or(0)
            .min(60);
        for r in &s.top_routes {
            let route = format!("{} {}", r.method, r.path);
            writeln!(out, "  {route:<width$}  {:>10}", thousands(r.count))?;
        }
    }
    for f in &s.files.skipped {
        writeln!(out, "skipped     {}: {}", f.path.display(), f.reason)?;
    }
    for f in &s.files.partial_segments {
        writeln!(out, "partial     {}: {}", f.path.display(), f.reason)?;
    }
    Ok(())
}
