//! The regression corpus's part of a verdict (issue 16).
//!
//! `tapedeck check --corpus DIR` replays the corpus — requests taken from earlier failing runs'
//! ticket bundles — before the tape, judges that phase on its own with the same judge, and adds
//! the result here: a corpus route that fails again is a **known regression that reappeared**,
//! named with the ticket(s) its requests came from, and fails the run whatever the tape's phase
//! says. A corpus that passes (or has too little data to judge) informs and changes nothing.
//!
//! This module only holds the section and how it changes a verdict; reading and writing corpora
//! is the check pipeline's (`tapedeck_check::corpus`).

use serde::Serialize;

use crate::InconclusiveAs;
use crate::checks::CheckName;
use crate::outcome::{Classification, DiffOutcome, RouteReport, Verdict};

/// Where a corpus entry came from: the ticket bundle it was taken from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TicketRef {
    /// The ticket's fingerprint (`ticket.json`), which names the regression.
    pub fingerprint: String,
    /// The ticket's title.
    pub title: String,
    /// The ticket bundle's directory, as given to `corpus add`.
    pub dir: String,
}

/// One corpus route that failed again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusHit {
    /// The route key, as the corpus phase's judge keyed it.
    pub route: String,
    /// The checks that failed on it (`responses`, `errors`, `latency`, an SLO).
    pub checks: Vec<CheckName>,
    /// Corpus entries on the route.
    pub entries: u64,
    /// The tickets those entries came from (empty when no entry could be matched to the route,
    /// which the route key inference can cause; the hit still fails the run).
    pub tickets: Vec<TicketRef>,
}

/// `verdict.json` `corpus`: what replaying the regression corpus found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusReport {
    /// The corpus directory.
    pub dir: String,
    /// Entries in the corpus that were replayed.
    pub entries: u64,
    /// Requests the corpus phase sent to each target (every entry is sent several times so each
    /// route has the judge's minimum sample).
    pub requests: u64,
    /// Corpus requests not sent: unsafe methods (POST, PUT…) without `--allow-writes`.
    pub skipped_writes: u64,
    /// The corpus phase's own verdict (judged on the corpus requests alone).
    pub verdict: Verdict,
    /// Corpus routes that failed again: known regressions that reappeared.
    pub hits: Vec<CorpusHit>,
    /// The corpus phase's run (its results tape).
    pub run: String,
}

/// The failing routes of the corpus phase's outcome, each with the checks that failed.
pub fn failing_routes(
    corpus: &DiffOutcome,
) -> impl Iterator<Item = (&RouteReport, Vec<CheckName>)> {
    corpus
        .routes
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .map(|r| {
            let checks = r
                .checks
                .iter()
                .filter(|c| c.classification == Classification::High)
                .map(|c| c.name.clone())
                .collect();
            (r, checks)
        })
}

/// Adds the corpus phase's result to `outcome` (the tape's, or the corpus phase's own when the
/// tape was not replayed): with hits, the run fails and rolls back, and the first reasons name
/// each known regression with its ticket; without, one reason line says what the corpus showed.
pub fn apply(
    outcome: &mut DiffOutcome,
    report: CorpusReport,
    strict: bool,
    inconclusive_as: InconclusiveAs,
) {
    if report.hits.is_empty() {
        let line = match report.verdict {
            Verdict::Pass | Verdict::Marginal => format!(
                "Regression corpus: {} known regression request(s) replayed ({} per target): \
                 none reappeared.",
                report.entries, report.requests
            ),
            Verdict::Inconclusive => format!(
                "Regression corpus: {} known regression request(s) replayed ({} per target): \
                 too little data to judge them (see the corpus run {}).",
                report.entries, report.requests, report.run
            ),
            // A failing corpus always has hits; kept total for a hand-made outcome.
            Verdict::Fail => format!(
                "Regression corpus: {} request(s) replayed; the corpus phase failed.",
                report.entries
            ),
        };
        outcome.reasons.push(line);
    } else {
        let mut lines = Vec::with_capacity(report.hits.len());
        for h in &report.hits {
            let from = if h.tickets.is_empty() {
                "ticket unknown".to_owned()
            } else {
                h.tickets
                    .iter()
                    .map(|t| {
                        format!(
                            "ticket {} \"{}\" ({})",
                            short(&t.fingerprint),
                            t.title,
                            t.dir
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            lines.push(format!(
                "Known regression reappeared: {} failed {} again on the regression corpus \
                 ({} entr{}; from {from}).",
                h.route,
                if h.checks.is_empty() {
                    "its checks".to_owned()
                } else {
                    CheckName::join(&h.checks)
                },
                h.entries,
                if h.entries == 1 { "y" } else { "ies" },
            ));
        }
        let first = &report.hits[0];
        outcome.title = format!(
            "known regression reappeared: {} ({} → {})",
            first.route, outcome.baseline_version, outcome.candidate_version
        );
        outcome.verdict = Verdict::Fail;
        outcome.reasons.splice(0..0, lines);
    }
    if report.skipped_writes > 0 {
        outcome.reasons.push(format!(
            "Regression corpus: {} request(s) with unsafe methods were not replayed (give \
             --allow-writes to replay them).",
            report.skipped_writes
        ));
    }
    outcome.rollback = outcome.verdict == Verdict::Fail;
    outcome.exit_code = outcome.verdict.exit_code(strict, inconclusive_as);
    outcome.corpus = Some(report);
}

/// The first 12 characters of a fingerprint, as tickets are usually referred to.
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

/// One line for the summary and report headers (`None` without a corpus).
pub fn corpus_line(o: &DiffOutcome) -> Option<String> {
    let c = o.corpus.as_ref()?;
    Some(if c.hits.is_empty() {
        format!(
            "regression corpus: {} entr{}, {} request(s) per target, {}: no known regression reappeared",
            c.entries,
            if c.entries == 1 { "y" } else { "ies" },
            c.requests,
            c.verdict.as_str()
        )
    } else {
        format!(
            "regression corpus: {} known regression(s) reappeared ({}) — {} entr{}, {} request(s) per target",
            c.hits.len(),
            c.hits
                .iter()
                .map(|h| h.route.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            c.entries,
            if c.entries == 1 { "y" } else { "ies" },
            c.requests
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiffOptions, Differ, RulesFile};

    fn empty() -> DiffOutcome {
        let config = DiffOptions::new("/mem")
            .validate_with(RulesFile::default())
            .expect("valid");
        Differ::new(config)
            .run_exchanges(Vec::new())
            .expect("judged")
    }

    fn report(hits: Vec<CorpusHit>, verdict: Verdict) -> CorpusReport {
        CorpusReport {
            dir: "corpus".into(),
            entries: 3,
            requests: 60,
            skipped_writes: 0,
            verdict,
            hits,
            run: "report/corpus/run".into(),
        }
    }

    #[test]
    fn a_hit_fails_a_passing_run_and_names_the_ticket() {
        let mut o = empty();
        o.verdict = Verdict::Pass;
        let hit = CorpusHit {
            route: "GET /api/pages".into(),
            checks: vec![CheckName::Latency],
            entries: 2,
            tickets: vec![TicketRef {
                fingerprint: "0123456789abcdef0123".into(),
                title: "pages slow".into(),
                dir: "t1".into(),
            }],
        };
        apply(
            &mut o,
            report(vec![hit], Verdict::Fail),
            false,
            InconclusiveAs::Inconclusive,
        );
        assert_eq!(o.verdict, Verdict::Fail);
        assert!(o.rollback);
        assert_eq!(o.exit_code, 1);
        assert!(
            o.title
                .starts_with("known regression reappeared: GET /api/pages")
        );
        assert!(
            o.reasons[0].contains("ticket 0123456789ab \"pages slow\" (t1)"),
            "{:?}",
            o.reasons
        );
        assert!(
            corpus_line(&o)
                .expect("a corpus line")
                .contains("1 known regression(s) reappeared")
        );
    }

    #[test]
    fn a_clean_corpus_keeps_the_verdict_and_says_so() {
        let mut o = empty();
        o.verdict = Verdict::Inconclusive;
        o.exit_code = 3;
        apply(
            &mut o,
            report(Vec::new(), Verdict::Pass),
            false,
            InconclusiveAs::Inconclusive,
        );
        assert_eq!(o.verdict, Verdict::Inconclusive);
        assert_eq!(o.exit_code, 3);
        assert!(!o.rollback);
        assert!(
            o.reasons
                .last()
                .expect("a reason")
                .contains("none reappeared")
        );
    }
}
