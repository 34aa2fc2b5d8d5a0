//! The judge: streams result rows, pairs them, compares each pair, aggregates per route and
//! decides. See the crate docs for the rules.
//!
//! [`Differ`] reads the run (and the baseline tape) here; the pairs are folded into per-route
//! accumulators (`accumulate.rs`); at the end each route is measured (`evidence.rs`), checked
//! by every route check ([`crate::checks`]) and scored, and the run is decided (`decide.rs`).

use std::path::Path;

use tapedeck_storage::{Exchange, ReadOptions, Tape};
use tracing::debug;

use crate::compare::{Comparator, StandardComparator};
use crate::config::DiffConfig;
use crate::error::DiffError;
use crate::outcome::{Counts, DiffOutcome};
use crate::pair::{Pairer, Role};

mod accumulate;
mod decide;
mod evidence;

use accumulate::Judge;
pub(crate) use accumulate::{is_error, latency_us, unreachable_histogram};
pub(crate) use evidence::estimable;

/// Runs a diff with a configurable [`Comparator`]. [`crate::run`] is `Differ::new(config).run()`.
#[derive(Debug)]
pub struct Differ {
    config: DiffConfig,
    comparator: Box<dyn Comparator>,
}

impl Differ {
    /// A differ with the standard comparator (status, compared headers, bodies).
    pub fn new(config: DiffConfig) -> Self {
        let comparator = Box::new(StandardComparator::new(config.compared_headers.clone()));
        Self { config, comparator }
    }

    /// Replaces the comparator.
    pub fn comparator(mut self, comparator: Box<dyn Comparator>) -> Self {
        self.comparator = comparator;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &DiffConfig {
        &self.config
    }

    /// Reads the run (and the baseline tape, if any) and judges it.
    pub fn run(&self) -> Result<DiffOutcome, DiffError> {
        let opts = &self.config.options;
        let read = ReadOptions {
            skip_corrupt: opts.skip_corrupt,
            ..ReadOptions::default()
        };
        if let (Some(base), Some(cand)) = (&opts.baseline_tape, &opts.candidate_tape) {
            return self.run_canary(base, cand, &read);
        }
        let run_tape = Tape::open(&opts.run).map_err(|e| DiffError::Tape {
            what: "run",
            source: e,
        })?;
        // Issue 8: a damaged file is found before hours of reading, not at the end.
        run_tape.verify(&read).map_err(|e| DiffError::Tape {
            what: "run",
            source: e,
        })?;
        let mut run_rows = run_tape.scan(read.clone()).exchanges();
        let mut engine = Engine::new(&self.config, self.comparator.as_ref());
        let mut skipped = Vec::new();
        match &opts.baseline_tape {
            None => {
                for row in run_rows.by_ref() {
                    let ex = row.map_err(|e| DiffError::Tape {
                        what: "run",
                        source: e,
                    })?;
                    engine.push_result(ex);
                }
            }
            Some(paths) => {
                let tape = Tape::open(paths).map_err(|e| DiffError::Tape {
                    what: "baseline",
                    source: e,
                })?;
                tape.verify(&read).map_err(|e| DiffError::Tape {
                    what: "baseline",
                    source: e,
                })?;
                let mut recorded = tape.scan(read).exchanges();
                let mut last_recorded: Option<uuid::Uuid> = None;
                let mut recorded_done = false;
                for row in run_rows.by_ref() {
                    let ex = row.map_err(|e| DiffError::Tape {
                        what: "run",
                        source: e,
                    })?;
                    // Recorded ids are UUIDv7 (time-ordered) and replay keeps recorded order:
                    // read the recorded tape up to the origin this row answers.
                    if let Some(origin) = ex.origin_id {
                        while !recorded_done && last_recorded.is_none_or(|l| l < origin) {
                            match recorded.next() {
                                Some(r) => {
                                    let r = r.map_err(|e| DiffError::Tape {
                                        what: "baseline",
                                        source: e,
                                    })?;
                                    last_recorded = Some(r.id);
                                    engine.push_recorded(r);
                                }
                                None => recorded_done = true,
                            }
                        }
                    }
                    engine.push_result(ex);
                }
                for r in recorded {
                    let r = r.map_err(|e| DiffError::Tape {
                        what: "baseline",
                        source: e,
                    })?;
                    engine.push_recorded(r);
                }
            }
        }
        for s in &run_rows.report().files_skipped {
            skipped.push(format!("{}: {}", s.path.display(), s.reason));
        }
        let run_id = opts
            .run
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".to_owned());
        let mut outcome = engine.finish(run_id, skipped)?;
        if !opts.dependencies.is_empty() {
            let report = crate::deps::analyze(
                &opts.run,
                &opts.candidate,
                &opts.dependencies,
                &mut self.config.route_keys().keyer(),
                opts.skip_corrupt,
            )?;
            crate::deps::attach(&mut outcome, report, opts.strict, opts.inconclusive_as);
        }
        if let Some(chaos) = &opts.chaos {
            let report = crate::chaos::analyze(
                &opts.run,
                &opts.candidate,
                chaos,
                &mut self.config.route_keys().keyer(),
                opts.skip_corrupt,
            )?;
            outcome.reasons.extend(report.reasons());
            outcome.chaos = Some(report);
        }
        Ok(outcome)
    }

    /// Canary analysis of two tapes of live traffic (not paired).
    fn run_canary(
        &self,
        base: &[std::path::PathBuf],
        cand: &[std::path::PathBuf],
        read: &ReadOptions,
    ) -> Result<DiffOutcome, DiffError> {
        let mut engine = Engine::new(&self.config, self.comparator.as_ref());
        let mut skipped = Vec::new();
        for (paths, what, candidate) in [(base, "baseline", false), (cand, "candidate", true)] {
            let tape = Tape::open(paths).map_err(|e| DiffError::Tape { what, source: e })?;
            tape.verify(read)
                .map_err(|e| DiffError::Tape { what, source: e })?;
            let mut rows = tape.scan(read.clone()).exchanges();
            for row in rows.by_ref() {
                let ex = row.map_err(|e| DiffError::Tape { what, source: e })?;
                if candidate {
                    engine.counts.rows += 1;
                } else {
                    engine.counts.baseline_tape_rows += 1;
                }
                engine.judge.observe(&ex, candidate);
            }
            for s in &rows.report().files_skipped {
                skipped.push(format!("{}: {}", s.path.display(), s.reason));
            }
        }
        let run_id = cand
            .first()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "canary".to_owned());
        engine.finish(run_id, skipped)
    }

    /// Judges result rows given in memory (as replay writes them), without reading a tape.
    pub fn run_exchanges(
        &self,
        rows: impl IntoIterator<Item = Exchange>,
    ) -> Result<DiffOutcome, DiffError> {
        let mut engine = Engine::new(&self.config, self.comparator.as_ref());
        for ex in rows {
            engine.push_result(ex);
        }
        engine.finish("in-memory".to_owned(), Vec::new())
    }
}

/// Pairing state plus the judge it feeds.
struct Engine<'a> {
    pairer: Pairer,
    counts: Counts,
    judge: Judge<'a>,
}

impl<'a> Engine<'a> {
    fn new(cfg: &'a DiffConfig, comparator: &'a dyn Comparator) -> Self {
        let s = &cfg.settings;
        Self {
            pairer: Pairer::new(
                cfg.options.noise.is_some(),
                cfg.options.baseline_tape.is_some(),
                s.max_pending,
            ),
            counts: Counts::default(),
            judge: Judge::new(cfg, comparator),
        }
    }

    fn push_recorded(&mut self, ex: Exchange) {
        self.counts.baseline_tape_rows += 1;
        let id = ex.id;
        let judge = &mut self.judge;
        self.pairer
            .push(id, Role::Baseline, ex, &mut self.counts, &mut |g, c| {
                judge.process(g, c)
            });
    }

    fn push_result(&mut self, ex: Exchange) {
        self.counts.rows += 1;
        let target = ex.target.clone().unwrap_or_default();
        *self.counts.targets.entry(target.clone()).or_default() += 1;
        let opts = &self.judge.cfg.options;
        let role = if target == opts.candidate {
            Role::Candidate
        } else if opts.noise.as_deref() == Some(target.as_str()) {
            Role::Secondary
        } else if opts.baseline_tape.is_none() && target == opts.baseline {
            Role::Baseline
        } else {
            self.counts.rows_ignored += 1;
            return;
        };
        let Some(origin) = ex.origin_id else {
            self.counts.rows_ignored += 1;
            return;
        };
        let judge = &mut self.judge;
        self.pairer
            .push(origin, role, ex, &mut self.counts, &mut |g, c| {
                judge.process(g, c)
            });
    }
}

impl Engine<'_> {
    fn finish(
        mut self,
        run_id: String,
        skipped_files: Vec<String>,
    ) -> Result<DiffOutcome, DiffError> {
        let judge = &mut self.judge;
        self.pairer
            .finish(&mut self.counts, &mut |g, c| judge.process(g, c));
        self.judge.merge_inferred_routes();
        let cfg = self.judge.cfg;
        let opts = &cfg.options;
        // A target that was asked for but never seen is a usage error, not a verdict.
        let mut wanted = vec![opts.candidate.clone()];
        if opts.baseline_tape.is_none() {
            wanted.push(opts.baseline.clone());
        }
        wanted.extend(opts.noise.clone());
        if self.counts.rows > 0 && opts.candidate_tape.is_none() {
            for w in wanted {
                if !self.counts.targets.contains_key(&w) {
                    return Err(DiffError::NoSuchTarget {
                        target: w,
                        found: self
                            .counts
                            .targets
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
        debug!(
            rows = self.counts.rows,
            paired = self.counts.paired,
            routes = self.judge.routes.len(),
            "diff: pairing done"
        );
        Ok(decide::decide(self, run_id, skipped_files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::CheckName;
    use crate::compare::{Finding, FindingKind};
    use crate::config::{DiffOptions, IgnoreRule, RulesFile};
    use crate::outcome::{Classification, PathStatus, Verdict};
    use bytes::Bytes;
    use tapedeck_storage::Header;

    fn row(origin: u128, target: &str, path: &str, body: String) -> Exchange {
        Exchange {
            path: path.into(),
            status: Some(200),
            total_us: Some(10_000 + (origin % 7) as i64 * 100),
            resp_headers: vec![Header::new("content-type", "application/json")],
            resp_body: Bytes::from(body),
            origin_id: Some(uuid::Uuid::from_u128(origin)),
            target: Some(target.into()),
            ..Exchange::default()
        }
    }

    /// `n` origins on one route; the candidate differs at `$.v` in `raw` of them and the
    /// secondary in `noise` of them.
    fn rows(n: u128, raw: u128, noise: u128) -> Vec<Exchange> {
        (0..n)
            .flat_map(|i| {
                let v = |d: bool| format!(r#"{{"v":{}}}"#, if d { 2 } else { 1 });
                [
                    row(i, "baseline", "/a", v(false)),
                    row(i, "secondary", "/a", v(i < noise)),
                    row(i, "candidate", "/a", v(i < raw)),
                ]
            })
            .collect()
    }

    fn judge(rows: Vec<Exchange>, rules: RulesFile) -> DiffOutcome {
        let mut o = DiffOptions::new("/mem");
        o.noise = Some("secondary".into());
        Differ::new(o.validate_with(rules).expect("valid"))
            .run_exchanges(rows)
            .expect("judged")
    }

    fn status_of(o: &DiffOutcome) -> Option<PathStatus> {
        o.routes[0]
            .paths
            .iter()
            .find(|p| p.path == "$.v")
            .map(|p| p.status)
    }

    #[test]
    fn diffy_rule_raw_must_clearly_exceed_noise() {
        // raw 10 %, noise 9 %: (10-9)/10 = 10 % < 20 % relative → noise.
        let o = judge(rows(1000, 100, 90), RulesFile::default());
        assert_eq!(status_of(&o), Some(PathStatus::Noise));
        assert_eq!(o.verdict, Verdict::Pass);
        // raw 10 %, noise 5 %: relative 50 %, absolute 5 % → regression.
        let o = judge(rows(1000, 100, 50), RulesFile::default());
        assert_eq!(status_of(&o), Some(PathStatus::Regression));
        assert_eq!(o.verdict, Verdict::Fail);
        // raw 0.1 % (1 of 1000), no noise: above the 0.03 % absolute threshold → regression …
        let o = judge(rows(1000, 1, 0), RulesFile::default());
        assert_eq!(status_of(&o), Some(PathStatus::Regression));
        // … unless the threshold is raised.
        let mut rules = RulesFile::default();
        rules.settings.noise_absolute = 0.01;
        let o = judge(rows(1000, 1, 0), rules);
        assert_eq!(status_of(&o), Some(PathStatus::BelowThreshold));
        assert_eq!(o.verdict, Verdict::Pass);
    }

    #[test]
    fn ignore_rules_drop_findings() {
        let mut rules = RulesFile::default();
        rules.ignore.push(IgnoreRule {
            route: "GET /a".into(),
            path: "$.v".into(),
            why: None,
            noise_rate: None,
            raw_rate: None,
        });
        let o = judge(rows(100, 100, 0), rules);
        assert_eq!(o.verdict, Verdict::Pass);
        assert_eq!(o.counts.ignored_findings, 100);
        assert_eq!(status_of(&o), None);
    }

    #[test]
    fn latency_drift_seen_by_the_secondary_is_not_a_regression() {
        // Candidate and secondary are both 40 % slower than the baseline instance: the
        // environment, not the build.
        let mk = |with_secondary: bool| -> Vec<Exchange> {
            (0..200u128)
                .flat_map(|i| {
                    let jitter = (i * 7919 % 1000) as i64;
                    let mut out = vec![];
                    let mut b = row(i, "baseline", "/a", "{}".into());
                    b.total_us = Some(10_000 + jitter);
                    out.push(b);
                    let mut c = row(i, "candidate", "/a", "{}".into());
                    c.total_us = Some(14_000 + (i * 104_729 % 1000) as i64);
                    out.push(c);
                    if with_secondary {
                        let mut s = row(i, "secondary", "/a", "{}".into());
                        s.total_us = Some(14_000 + (i * 1_299_709 % 1000) as i64);
                        out.push(s);
                    }
                    out
                })
                .collect()
        };
        let latency = |o: &DiffOutcome| {
            o.routes[0]
                .checks
                .iter()
                .find(|c| c.name == CheckName::Latency)
                .map(|c| c.classification)
        };
        let alone = Differ::new(
            DiffOptions::new("/mem")
                .validate_with(RulesFile::default())
                .expect("valid"),
        )
        .run_exchanges(mk(false))
        .expect("judged");
        assert_eq!(latency(&alone), Some(Classification::High));
        let with_noise = judge(mk(true), RulesFile::default());
        assert_eq!(
            latency(&with_noise),
            Some(Classification::Pass),
            "{:#?}",
            with_noise.reasons
        );
        let drift = with_noise.routes[0]
            .latency
            .noise_shift
            .expect("noise shift");
        assert!(drift.shift > 3_000.0, "{drift:?}");
    }

    #[derive(Debug)]
    struct AlwaysDiffers;

    impl Comparator for AlwaysDiffers {
        fn compare(&self, _b: &Exchange, _c: &Exchange, out: &mut Vec<Finding>) {
            out.push(Finding {
                path: "custom".into(),
                kind: FindingKind::Binary,
                baseline: "a".into(),
                candidate: "b".into(),
            });
        }
    }

    #[test]
    fn a_custom_comparator_plugs_in() {
        let mut o = DiffOptions::new("/mem");
        o.noise = None;
        let d = Differ::new(o.validate_with(RulesFile::default()).expect("valid"))
            .comparator(Box::new(AlwaysDiffers));
        let rows: Vec<Exchange> = (0..30)
            .flat_map(|i| {
                [
                    row(i, "baseline", "/a", "{}".into()),
                    row(i, "candidate", "/a", "{}".into()),
                ]
            })
            .collect();
        let o = d.run_exchanges(rows).expect("judged");
        assert_eq!(o.regressions(), vec![("GET /a", "custom")]);
    }

    #[test]
    fn marginal_is_between_the_scores_and_strict_makes_it_fail() {
        // A latency regression (non-critical, weight 1) next to three passing checks (two with
        // SLOs) scores 75: marginal by default.
        let rows: Vec<Exchange> = (0..60u128)
            .flat_map(|i| {
                let mut c = row(i, "candidate", "/a", "{}".into());
                c.total_us = Some(50_000 + (i % 7) as i64 * 100);
                [row(i, "baseline", "/a", "{}".into()), c]
            })
            .collect();
        let rules = RulesFile {
            slo: vec!["GET /a: p50<1s".into()],
            ..RulesFile::default()
        };
        let o = DiffOptions::new("/mem")
            .validate_with(rules.clone())
            .expect("valid");
        let out = Differ::new(o).run_exchanges(rows.clone()).expect("judged");
        assert_eq!(out.verdict, Verdict::Marginal, "{:#?}", out.reasons);
        assert_eq!(out.score, Some(75.0));
        assert_eq!(out.exit_code, 0);
        let mut strict = DiffOptions::new("/mem");
        strict.strict = true;
        let out = Differ::new(strict.validate_with(rules).expect("valid"))
            .run_exchanges(rows)
            .expect("judged");
        assert_eq!(out.exit_code, 1);
    }
}

#[cfg(test)]
mod report_size_tests {
    use super::*;
    use crate::config::{DiffOptions, RulesFile};
    use crate::outcome::Verdict;
    use bytes::Bytes;
    use tapedeck_storage::Header;

    #[test]
    fn report_md_stays_under_the_limit_with_many_findings() {
        // 150 routes, each with 40 renamed fields and long values: far more than fits.
        let mut rows = Vec::new();
        let mut origin = 0u128;
        for r in 0..150 {
            for _ in 0..10 {
                origin += 1;
                for (t, prefix) in [("baseline", "a"), ("candidate", "b")] {
                    let fields: Vec<String> = (0..40)
                        .map(|k| format!(r#""{prefix}{k}":"{}""#, "x`|".repeat(100)))
                        .collect();
                    rows.push(Exchange {
                        path: format!("/r{r}/items").into(),
                        status: Some(200),
                        total_us: Some(1000),
                        resp_headers: vec![Header::new("content-type", "application/json")],
                        resp_body: Bytes::from(format!("{{{}}}", fields.join(","))),
                        origin_id: Some(uuid::Uuid::from_u128(origin)),
                        target: Some(t.into()),
                        ..Exchange::default()
                    });
                }
            }
        }
        let mut rules = RulesFile::default();
        rules.settings.route_cardinality = 0; // keep 150 routes
        let cfg = DiffOptions::new("/mem")
            .validate_with(rules)
            .expect("valid");
        let o = Differ::new(cfg).run_exchanges(rows).expect("judged");
        assert_eq!(o.verdict, Verdict::Fail);
        assert_eq!(o.routes.len(), 150);
        let md = crate::report::markdown(&o);
        assert!(
            md.chars().count() <= crate::report::MAX_REPORT_CHARS,
            "{}",
            md.len()
        );
        assert!(md.starts_with("# GET /r"));
        // Fences stay balanced even though values contain backticks.
        let junit = crate::report::junit(&o);
        // responses, errors, latency (nodata: 10 samples) per route.
        assert_eq!(junit.matches("<testcase ").count(), 150 * 3);
    }
}
