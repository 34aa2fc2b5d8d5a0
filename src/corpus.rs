//! `tapedeck corpus`: the regression corpus (`tapedeck_check::corpus`) — `add` takes the failing
//! requests of a ticket bundle, `list` shows what is in a corpus and where each entry came from.
//! `tapedeck check --corpus DIR` replays it before the tape.

use std::io::Write;
use std::path::PathBuf;

use tapedeck_check::corpus;

/// Keep the requests of escaped regressions, and replay them in every check.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tapedeck check ... --ticket ./ticket            # a failing check writes its ticket bundle\n  \
tapedeck corpus add --ticket ./ticket --corpus ./corpus\n  \
tapedeck corpus list --corpus ./corpus\n  \
tapedeck check ... --corpus ./corpus --early-stop\n\n\
Entries are deduplicated by route + request fingerprint (method, path, query, body). The corpus\n\
is a directory: corpus.json (the index) and tape/ (one request per entry).")]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add the failing requests of a ticket bundle (`tapedeck ticket`, `check --ticket`).
    Add {
        /// The ticket bundle directory (ticket.json and tape/).
        #[arg(long, value_name = "DIR")]
        ticket: PathBuf,
        /// The corpus directory (created if missing).
        #[arg(long, value_name = "DIR")]
        corpus: PathBuf,
    },
    /// Show the corpus: each entry's route, request and ticket.
    List {
        /// The corpus directory.
        #[arg(long, value_name = "DIR")]
        corpus: PathBuf,
        /// Print corpus.json's entries as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<u8> {
    let mut out = crate::output::stdout();
    match args.command {
        Command::Add { ticket, corpus } => {
            let added = corpus::add(&ticket, &corpus)?;
            writeln!(
                out,
                "corpus {}: {} request(s) added from ticket {}, {} duplicate(s) skipped, {} in all{}",
                corpus.display(),
                added.added,
                tapedeck_diff::corpus::short(&added.fingerprint),
                added.duplicates,
                added.total,
                if added.routes.is_empty() {
                    String::new()
                } else {
                    format!(
                        " · routes: {}",
                        added.routes.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
            )?;
        }
        Command::List { corpus, json } => {
            let index = corpus::list(&corpus)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &index.entries)?;
                writeln!(out)?;
            } else if index.entries.is_empty() {
                writeln!(out, "corpus {}: empty", corpus.display())?;
            } else {
                // Grouped by ticket, in the order they were added.
                let mut tickets: Vec<(&corpus::TicketSource, Vec<&corpus::Entry>)> = Vec::new();
                for e in &index.entries {
                    match tickets
                        .iter_mut()
                        .find(|(t, _)| t.fingerprint == e.ticket.fingerprint)
                    {
                        Some((_, list)) => list.push(e),
                        None => tickets.push((&e.ticket, vec![e])),
                    }
                }
                writeln!(
                    out,
                    "corpus {}: {} entr{} from {} ticket(s)",
                    corpus.display(),
                    index.entries.len(),
                    if index.entries.len() == 1 { "y" } else { "ies" },
                    tickets.len()
                )?;
                for (t, entries) in tickets {
                    writeln!(
                        out,
                        "\nticket {} \"{}\" ({}) from {}, added {}: {} entr{}",
                        tapedeck_diff::corpus::short(&t.fingerprint),
                        t.title,
                        if t.severity.is_empty() {
                            "?"
                        } else {
                            &t.severity
                        },
                        t.dir,
                        entries[0].added_at,
                        entries.len(),
                        if entries.len() == 1 { "y" } else { "ies" }
                    )?;
                    for e in entries {
                        let request = match &e.query {
                            Some(q) => format!("{} {}?{q}", e.method, e.path),
                            None => format!("{} {}", e.method, e.path),
                        };
                        writeln!(out, "  {}  {:<36} {request}", e.key, e.route)?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(crate::EXIT_OK)
}
