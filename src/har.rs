//! `tapedeck import-har` and `tapedeck export-har`: flags, files and tapes around the HAR
//! conversion in [`tapedeck_common::har`] (the mapping is documented there).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use tapedeck_common::har::{Creator, Har, Log, entry_to_exchange, exchange_to_entry};
use tapedeck_storage::{Filter, ReadOptions, Tape, TapeWriter, WhenFull};

use crate::util::thousands;
/// Import a HAR file (HAR 1.2, as browser DevTools export it) into a tape.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The HAR file.
    #[arg(value_name = "FILE.har")]
    file: PathBuf,
    /// Tape directory to write (created if missing).
    #[arg(long, value_name = "DIR")]
    tape: PathBuf,
    /// `source` label of the imported exchanges (entries exported by tapedeck keep theirs).
    #[arg(long, default_value = "har", value_name = "LABEL")]
    source: String,
    #[command(flatten)]
    redact: crate::flags::RedactArgs,
}

/// Reads and parses a HAR file.
fn read_har(path: &std::path::Path) -> anyhow::Result<Har> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    tapedeck_common::har::parse(&bytes)
        .with_context(|| format!("{} is not a valid HAR file", path.display()))
}

pub(crate) fn run_import(args: ImportArgs) -> anyhow::Result<u8> {
    let redactor = args.redact.redactor()?;
    let har = read_har(&args.file)?;
    // Convert everything first: a bad entry writes nothing.
    let mut exchanges = Vec::with_capacity(har.log.entries.len());
    for (i, e) in har.log.entries.into_iter().enumerate() {
        let mut ex = entry_to_exchange(e, &args.source).with_context(|| {
            format!(
                "{} is not a valid HAR file: log.entries[{i}]",
                args.file.display()
            )
        })?;
        // The same redaction as `record`: no secret from a HAR file reaches the tape.
        crate::flags::redact(&redactor, &mut ex);
        exchanges.push(ex);
    }
    let writer = TapeWriter::builder(&args.tape)
        .when_full(WhenFull::Block)
        .metadata("imported_from", args.file.display().to_string())
        .metadata("har_creator", har.log.creator.name)
        .open()
        .with_context(|| format!("opening tape {}", args.tape.display()))?;
    for ex in exchanges {
        writer.append(ex).context("writing exchange")?;
    }
    let stats = writer.close().context("closing tape")?;
    crate::output::note!(
        "imported {} exchanges from {} into {}",
        thousands(stats.written),
        args.file.display(),
        args.tape.display()
    );
    Ok(crate::EXIT_OK)
}

/// Export a tape (or a filtered part of it) as a HAR 1.2 file.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Tape directories or files.
    #[arg(required = true, value_name = "TAPE")]
    tapes: Vec<PathBuf>,
    /// The HAR file to write (`-` for stdout).
    #[arg(long, value_name = "FILE.har")]
    out: PathBuf,
    #[command(flatten)]
    filter: crate::flags::TapeFilterFlags,
    /// Export at most N exchanges (the earliest).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Skip damaged tape files instead of stopping.
    #[arg(long)]
    skip_corrupt: bool,
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    Ok(tapedeck_common::parse::parse_time(s)?)
}

pub(crate) fn run_export(args: ExportArgs) -> anyhow::Result<u8> {
    let routes = if args.filter.routes.is_empty() {
        None
    } else {
        let mut b = globset::GlobSetBuilder::new();
        for r in &args.filter.routes {
            b.add(globset::Glob::new(r).with_context(|| format!("--route `{r}`"))?);
        }
        Some(b.build().context("--route")?)
    };
    let filter = Filter {
        from_us: args.filter.from.as_deref().map(parse_time).transpose()?,
        to_us: args.filter.to.as_deref().map(parse_time).transpose()?,
        methods: args
            .filter
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect(),
        path_prefix: None,
    };
    let tape = Tape::open(&args.tapes).context("opening tape")?;
    let mut exchanges = Vec::new();
    for ex in tape
        .scan(ReadOptions {
            filter,
            skip_corrupt: args.skip_corrupt,
            ..ReadOptions::default()
        })
        .exchanges()
    {
        let ex = ex.context("reading tape")?;
        if routes.as_ref().is_some_and(|g| !g.is_match(&ex.path)) {
            continue;
        }
        exchanges.push(ex);
    }
    exchanges.sort_by_key(|e| (e.started_at_us, e.id));
    if let Some(n) = args.limit {
        exchanges.truncate(n);
    }
    let har = Har {
        log: Log {
            version: "1.2".to_owned(),
            creator: Creator {
                name: "tapedeck".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            entries: exchanges.iter().map(exchange_to_entry).collect(),
        },
    };
    let count = har.log.entries.len();
    let write = |w: &mut dyn Write| -> anyhow::Result<()> {
        let mut w = BufWriter::new(w);
        serde_json::to_writer_pretty(&mut w, &har)?;
        w.write_all(b"\n")?;
        w.flush()?;
        Ok(())
    };
    if args.out.as_os_str() == "-" {
        write(&mut crate::output::stdout())?;
    } else {
        let mut f = std::fs::File::create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        write(&mut f).with_context(|| format!("writing {}", args.out.display()))?;
    }
    crate::output::note!(
        "exported {} exchanges to {}",
        thousands(count as u64),
        args.out.display()
    );
    Ok(crate::EXIT_OK)
}
