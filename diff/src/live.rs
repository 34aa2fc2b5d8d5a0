//! Judging a run while it is replayed (`tapedeck check --early-stop`): [`LiveJudge`] takes each
//! recorded request's results (baseline, candidate and noise target) as replay finishes them,
//! compares them the way the fixed judge does, and feeds the anytime-valid tests of
//! `sequential.rs`. Once they decide, the caller stops the replay; the fixed judge then
//! still judges what was replayed (for the reports), and [`apply`] combines both into the
//! verdict: **fail exactly when a sequential test crossed** (the false-fail probability is at
//! most `alpha`, however often the tests were looked at), otherwise the fixed judge's pass,
//! marginal or inconclusive (a fixed-sample fail that no sequential test confirmed becomes
//! inconclusive).

use std::collections::BTreeMap;

use tapedeck_storage::Exchange;

use crate::checks::SloName;
use crate::compare::{Comparator, Finding, FindingKind, StandardComparator};
use crate::config::DiffConfig;
use crate::detect;
use crate::engine::{is_error, latency_us};
use crate::fmt::{fmt_e, fmt_rate};
use crate::json::{self, JsonDiffKind};
use crate::outcome::{DiffOutcome, SeqCrossing, SequentialReport, Verdict};
use crate::route::RouteKeyer;
use crate::sequential::{Observation, SeqCheck, SeqDecision, SeqSlo, SequentialJudge};

/// Origins with a noise-target latency before the latency test starts (its floor needs them).
const NOISE_SCALE_SAMPLES: u64 = 30;
/// The noise target's deviation from the baseline that the latency floor is set to.
const NOISE_SCALE_QUANTILE: f64 = 0.99;

/// The sequential judge of a run being replayed, fed one origin group at a time.
#[derive(Debug)]
pub struct LiveJudge {
    baseline: String,
    candidate: String,
    noise: Option<String>,
    ignore: Vec<crate::config::IgnoreRule>,
    comparator: StandardComparator,
    keyer: RouteKeyer,
    judge: SequentialJudge,
    buf: Vec<Finding>,
    origins: u64,
    /// Whether the latency floor follows the noise target's scale (off only in tests, to
    /// measure what it buys).
    adaptive_floor: bool,
    /// |secondary − baseline| latencies (µs) of the origins so far: the noise target's scale.
    noise_gaps: hdrhistogram::Histogram<u64>,
    /// The decision, frozen when first made (with the origins taken by then).
    decided: Option<(SeqDecision, u64)>,
}

impl LiveJudge {
    /// A judge for runs configured by `cfg` (target labels, rules, SLOs, `cfg.sequential`).
    pub fn new(cfg: &DiffConfig) -> Self {
        let slos = cfg
            .slos
            .iter()
            .map(|slo| {
                (
                    slo.route.clone(),
                    SeqSlo {
                        name: SloName::of(slo),
                        quantile: slo.percentile.0,
                        max_us: slo.max_us,
                    },
                )
            })
            .collect();
        Self {
            baseline: cfg.options.baseline.clone(),
            candidate: cfg.options.candidate.clone(),
            noise: cfg.options.noise.clone(),
            ignore: cfg.ignore.clone(),
            comparator: StandardComparator::new(cfg.compared_headers.clone()),
            keyer: cfg.route_keys().keyer(),
            judge: SequentialJudge::new(cfg.sequential.clone(), slos),
            buf: Vec::new(),
            origins: 0,
            adaptive_floor: true,
            noise_gaps: hdrhistogram::Histogram::new(2)
                .unwrap_or_else(|_| crate::engine::unreachable_histogram()),
            decided: None,
        }
    }

    /// Takes one recorded request's results (one exchange per target, any order). Returns
    /// `true` once the tests have decided (fail or pass); later groups are not taken, so the
    /// report shows the tests as they were when they decided.
    pub fn observe(&mut self, results: &[Exchange]) -> bool {
        if self.decided.is_some() {
            return true;
        }
        let find = |label: &str| results.iter().find(|e| e.target.as_deref() == Some(label));
        let (Some(b), Some(c)) = (find(&self.baseline), find(&self.candidate)) else {
            return false;
        };
        let s = self.noise.as_deref().and_then(find);
        let route = self.keyer.key(&c.method, &c.path, c.query.as_deref());
        let noise_on = self.noise.is_some();

        self.buf.clear();
        self.comparator.compare(b, c, &mut self.buf);
        let mut cand: Vec<(String, bool)> = Vec::new();
        for f in &self.buf {
            let path = json::generalize(&f.path);
            if self.ignore.iter().any(|r| r.matches(&route, &path)) {
                continue;
            }
            // Without a noise target, values that look volatile (timestamps, UUIDs, tokens)
            // are left out, as the fixed judge does.
            let volatile = !noise_on
                && matches!(
                    f.kind,
                    FindingKind::Json(JsonDiffKind::ValueChanged) | FindingKind::Header
                )
                && detect::classify(&f.baseline, &f.candidate).is_some();
            match cand.iter_mut().find(|(p, _)| *p == path) {
                Some(entry) => entry.1 &= volatile,
                None => cand.push((path, volatile)),
            }
        }
        let cand: Vec<String> = cand
            .into_iter()
            .filter(|(_, volatile)| !volatile)
            .map(|(p, _)| p)
            .collect();
        let noise: Option<Vec<String>> = s.map(|s| {
            self.buf.clear();
            self.comparator.compare(b, s, &mut self.buf);
            let mut paths: Vec<String> = self
                .buf
                .iter()
                .map(|f| json::generalize(&f.path))
                .filter(|p| !self.ignore.iter().any(|r| r.matches(&route, p)))
                .collect();
            paths.sort();
            paths.dedup();
            paths
        });
        // A noise target that was asked for but did not answer this origin: no noise term.
        let noise = match (noise_on, noise) {
            (true, None) => Some(Vec::new()),
            (_, n) => n,
        };
        // The latency test's floor: at least the noise target's 99th percentile deviation from
        // the baseline on the origins before this one (a stall of one target process hits a
        // burst of consecutive requests; deviations the noise target also shows are not
        // evidence). With a noise target, latency is judged only once that scale is measured.
        let (b_us, c_us, s_us) = (latency_us(b), latency_us(c), s.and_then(latency_us));
        let measured = !self.adaptive_floor || self.noise_gaps.len() >= NOISE_SCALE_SAMPLES;
        let floor = (noise_on && measured && self.adaptive_floor)
            .then(|| self.noise_gaps.value_at_quantile(NOISE_SCALE_QUANTILE) as f64);
        let judge_latency = !noise_on || measured;
        if let (Some(bv), Some(sv)) = (b_us, s_us) {
            self.noise_gaps
                .saturating_record(bv.abs_diff(sv).clamp(1, 3_600_000_000));
        }
        self.judge.observe(
            &route,
            &Observation {
                candidate_paths: &cand,
                noise_paths: noise.as_deref(),
                baseline_us: b_us.filter(|_| judge_latency),
                candidate_us: c_us,
                secondary_us: s_us,
                slower_floor_us: floor,
                baseline_failed: is_error(b).is_some(),
                candidate_failed: is_error(c).is_some(),
            },
        );
        self.origins += 1;
        match self.judge.decision() {
            SeqDecision::Undecided => false,
            d => {
                self.decided = Some((d, self.origins));
                true
            }
        }
    }

    /// Whether the tests have decided.
    pub fn decided(&self) -> bool {
        self.decided.is_some()
    }

    /// Paired origins taken.
    pub fn origins(&self) -> u64 {
        self.origins
    }

    /// The tests' account for `verdict.json`.
    pub fn report(&self) -> SequentialReport {
        let (decision, origins) = match &self.decided {
            Some((d, n)) => (d.clone(), *n),
            None => (self.judge.decision(), self.origins),
        };
        let routes = self.judge.routes();
        let crossed = self
            .judge
            .crossings()
            .iter()
            .map(|c| SeqCrossing {
                route: c.route.clone(),
                check: c.check.name(),
                path: match &c.check {
                    SeqCheck::Responses { path } => Some(path.clone()),
                    _ => None,
                },
                e_value: c.e_value,
                threshold: c.threshold,
                origins: c.origins,
                rate: c.mean,
            })
            .collect();
        SequentialReport {
            alpha: self.judge.settings().alpha,
            decision: match decision {
                SeqDecision::Fail(_) => "fail",
                SeqDecision::Pass => "pass",
                SeqDecision::Undecided => "undecided",
            }
            .to_owned(),
            origins,
            tests: self.judge.tests(),
            routes: routes.len() as u64,
            routes_passed: routes.iter().filter(|r| self.judge.route_passed(r)).count() as u64,
            crossed,
        }
    }
}

/// How a `--early-stop` replay went, for [`apply`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EarlyStop {
    /// The replay was stopped before the end of the selected traffic.
    pub stopped_early: bool,
    /// Requests sent per target label.
    pub requests_sent: BTreeMap<String, u64>,
    /// Milliseconds from the start of the replay to the verdict.
    pub time_to_verdict_ms: u64,
}

/// Makes `outcome` (the fixed judge's, on what was replayed) the verdict of a `--early-stop`
/// run: fail exactly when a sequential test crossed; otherwise the fixed judge's verdict, with a
/// fixed-sample fail (not confirmed by an anytime-valid test) turned into inconclusive. Records
/// the sequential report and the replay's facts, and recomputes `rollback` and `exit_code`.
pub fn apply(outcome: &mut DiffOutcome, cfg: &DiffConfig, seq: SequentialReport, run: EarlyStop) {
    let versions = format!("({} → {})", cfg.baseline_version, cfg.candidate_version);
    let alpha = seq.alpha;
    let line = match (seq.decision.as_str(), seq.crossed.first()) {
        ("fail", Some(c)) => {
            if outcome.verdict != Verdict::Fail {
                outcome.title = format!("{} {} regressed {versions}", c.route, what(c));
            }
            outcome.verdict = Verdict::Fail;
            format!(
                "Sequential test: {} on {} crossed its threshold after {} paired origins on the \
                 route (e-value {} ≥ {}, rate beyond noise {}): a regression at false-fail \
                 probability ≤ α = {alpha}{}.",
                what(c),
                c.route,
                c.origins,
                fmt_e(c.e_value),
                fmt_e(c.threshold),
                fmt_rate(c.rate.max(0.0)),
                stopped(&run, seq.origins),
            )
        }
        (decision, _) => {
            let head = if decision == "pass" {
                format!(
                    "Sequential tests: all {} route(s) with enough data shown without regression \
                     beyond the margins after {} paired origins (α = {alpha}){}.",
                    seq.routes_passed,
                    seq.origins,
                    stopped(&run, seq.origins)
                )
            } else {
                format!(
                    "Sequential tests (α = {alpha}) did not decide in {} paired origins: no \
                     regression shown.",
                    seq.origins
                )
            };
            if outcome.verdict == Verdict::Fail {
                outcome.verdict = Verdict::Inconclusive;
                format!(
                    "{head} The fixed-sample judge's findings below are not confirmed at α: \
                     inconclusive (replay more traffic, or judge without --early-stop)."
                )
            } else {
                head
            }
        }
    };
    outcome.reasons.insert(0, line);
    outcome.rollback = outcome.verdict == Verdict::Fail;
    outcome.exit_code = outcome
        .verdict
        .exit_code(cfg.options.strict, cfg.options.inconclusive_as);
    outcome.stopped_early = Some(run.stopped_early);
    outcome.requests_sent = Some(run.requests_sent);
    outcome.time_to_verdict_ms = Some(run.time_to_verdict_ms);
    outcome.sequential = Some(seq);
}

fn what(c: &SeqCrossing) -> String {
    match &c.path {
        Some(p) => format!("responses at {p}"),
        None => c.check.to_string(),
    }
}

fn stopped(run: &EarlyStop, origins: u64) -> String {
    if run.stopped_early {
        let sent = run.requests_sent.values().max().copied().unwrap_or(origins);
        format!("; replay stopped early after {sent} requests per target")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiffOptions, RulesFile};
    use bytes::Bytes;
    use tapedeck_storage::Header;

    fn row(origin: u128, target: &str, path: &str, body: &str, us: i64) -> Exchange {
        Exchange {
            method: "GET".into(),
            path: path.into(),
            status: Some(200),
            resp_headers: vec![Header::new("Content-Type", "application/json")],
            resp_body: Bytes::from(body.to_owned()),
            resp_body_size: body.len() as u64,
            total_us: Some(us),
            origin_id: Some(uuid::Uuid::from_u128(origin)),
            target: Some(target.into()),
            ..Exchange::default()
        }
    }

    fn config() -> DiffConfig {
        let mut o = DiffOptions::new("/mem");
        o.noise = Some("secondary".into());
        o.early_stop = true;
        o.validate_with(RulesFile::default()).expect("valid")
    }

    /// Feeds `n` origins; the candidate renames a field on `/users/{id}`.
    fn feed(j: &mut LiveJudge, n: u128, renamed: bool) -> Option<u128> {
        for i in 0..n {
            let path = if i % 2 == 0 {
                format!("/users/{i}")
            } else {
                "/health".to_owned()
            };
            let body = r#"{"name":"a"}"#;
            let cand = if renamed && i % 2 == 0 {
                r#"{"full_name":"a"}"#
            } else {
                body
            };
            let group = [
                row(i, "baseline", &path, body, 3_000),
                row(i, "candidate", &path, cand, 3_100),
                row(i, "secondary", &path, body, 3_050),
            ];
            if j.observe(&group) {
                return Some(i + 1);
            }
        }
        None
    }

    #[test]
    fn a_renamed_field_is_decided_fail_and_the_verdict_follows() {
        let cfg = config();
        let mut j = LiveJudge::new(&cfg);
        let at = feed(&mut j, 1_000, true).expect("decided");
        assert!(at < 120, "took {at} origins");
        let r = j.report();
        assert_eq!(r.decision, "fail");
        assert_eq!(r.crossed[0].route, "GET /users/{id}");
        assert_eq!(r.crossed[0].check, "responses");
        assert!(r.crossed[0].e_value >= r.crossed[0].threshold);
        // Later groups are not taken: the report is frozen at the decision.
        let before = j.origins();
        feed(&mut j, 10, true);
        assert_eq!(j.origins(), before);

        // The fixed judge's outcome on the same rows, then the sequential verdict on top.
        let mut outcome = crate::Differ::new(cfg.clone())
            .run_exchanges(Vec::<Exchange>::new())
            .expect("judged");
        assert_ne!(outcome.verdict, Verdict::Fail);
        apply(&mut outcome, &cfg, r, EarlyStop::default());
        assert_eq!(outcome.verdict, Verdict::Fail);
        assert!(outcome.rollback);
        assert_eq!(outcome.exit_code, 1);
        assert!(outcome.reasons[0].starts_with("Sequential test: responses at $."));
        assert!(
            outcome.title.contains("GET /users/{id}"),
            "{}",
            outcome.title
        );
    }

    #[test]
    fn a_fixed_sample_fail_without_a_crossing_is_inconclusive() {
        let cfg = config();
        let mut j = LiveJudge::new(&cfg);
        assert_eq!(feed(&mut j, 4, true), None, "4 origins decide nothing");
        let mut outcome = crate::Differ::new(cfg.clone())
            .run_exchanges(Vec::<Exchange>::new())
            .expect("judged");
        outcome.verdict = Verdict::Fail;
        apply(
            &mut outcome,
            &cfg,
            j.report(),
            EarlyStop {
                stopped_early: false,
                requests_sent: [("candidate".to_owned(), 4)].into(),
                time_to_verdict_ms: 12,
            },
        );
        assert_eq!(outcome.verdict, Verdict::Inconclusive);
        assert!(!outcome.rollback);
        assert_eq!(outcome.exit_code, 3);
        assert!(
            outcome.reasons[0].contains("not confirmed"),
            "{:?}",
            outcome.reasons
        );
        assert_eq!(outcome.stopped_early, Some(false));
        assert_eq!(
            outcome.sequential.as_ref().map(|s| s.decision.as_str()),
            Some("undecided")
        );
        let line = crate::report::early_stop_line(&outcome).expect("line");
        assert!(
            line.starts_with("early stop: ran to the end (4 requests"),
            "{line}"
        );
    }

    /// A/A on an overloaded machine: now the candidate's process, now the secondary's is starved
    /// for an episode of consecutive requests. The latency floor measured from the noise target
    /// keeps such bursts from failing the run; a real 120 ms slowdown still fails fast.
    #[test]
    fn stall_bursts_of_one_target_do_not_fail_an_a_a_run() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let cfg = config();
        let run_with = |seed: u64, slowdown_us: i64, adaptive: bool| -> Option<u64> {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut j = LiveJudge::new(&cfg);
            j.adaptive_floor = adaptive;
            let (mut stall_c, mut stall_s) = (0u32, 0u32);
            for i in 0..400u128 {
                // Episodes of 60 requests in which one target's process is starved.
                if stall_c == 0 && stall_s == 0 && rng.random_bool(0.02) {
                    *(if rng.random_bool(0.5) {
                        &mut stall_c
                    } else {
                        &mut stall_s
                    }) = 60;
                }
                let jitter = |rng: &mut StdRng| 2_000 + rng.random_range(0..6_000);
                let starved = |rng: &mut StdRng, on: bool| {
                    if on { rng.random_range(0..40_000) } else { 0 }
                };
                let b = jitter(&mut rng);
                let mut c = jitter(&mut rng) + starved(&mut rng, stall_c > 0);
                let s = jitter(&mut rng) + starved(&mut rng, stall_s > 0);
                stall_c = stall_c.saturating_sub(1);
                stall_s = stall_s.saturating_sub(1);
                let path = ["/a", "/b"][(i % 2) as usize];
                if path == "/a" {
                    c += slowdown_us;
                }
                let body = r#"{"x":1}"#;
                let group = [
                    row(i, "baseline", path, body, b),
                    row(i, "candidate", path, body, c),
                    row(i, "secondary", path, body, s),
                ];
                if j.observe(&group) {
                    break;
                }
            }
            (j.report().decision == "fail").then_some(j.origins())
        };
        let run = |seed, slowdown| run_with(seed, slowdown, true);
        let fails = (0..100).filter(|&seed| run(seed, 0).is_some()).count();
        let fixed_floor = (0..100)
            .filter(|&seed| run_with(seed, 0, false).is_some())
            .count();
        assert!(
            fails <= 1,
            "{fails} of 100 A/A runs with stall bursts failed"
        );
        assert!(
            fixed_floor <= 1,
            "{fixed_floor} of 100 without the measured floor"
        );
        // The same episodes with the 2 ms floor of the fixed judge: most runs would fail.
        let mut cfg2 = cfg.clone();
        cfg2.sequential.slower_floor_us = 2_000.0;
        let mut fails_2ms = 0;
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut j = LiveJudge::new(&cfg2);
            let mut starved_c = 0u32;
            for i in 0..400u128 {
                if starved_c == 0 && rng.random_bool(0.01) {
                    starved_c = 60;
                }
                let b = 2_000 + rng.random_range(0..6_000);
                let extra = if starved_c > 0 {
                    rng.random_range(0..40_000)
                } else {
                    0
                };
                starved_c = starved_c.saturating_sub(1);
                let c = 2_000 + rng.random_range(0..6_000) + extra;
                let s = 2_000 + rng.random_range(0..6_000);
                let group = [
                    row(i, "baseline", "/a", "{}", b),
                    row(i, "candidate", "/a", "{}", c),
                    row(i, "secondary", "/a", "{}", s),
                ];
                if j.observe(&group) {
                    break;
                }
            }
            fails_2ms += usize::from(j.report().decision == "fail");
        }
        assert!(
            fails_2ms > 20,
            "{fails_2ms}: the scenario does starve the candidate"
        );
        let at = run(7, 120_000).expect("a 120 ms slowdown fails");
        assert!(at <= 120, "decided after {at} origins");
    }

    #[test]
    fn identical_answers_are_decided_pass() {
        let cfg = config();
        let mut j = LiveJudge::new(&cfg);
        let at = feed(&mut j, 2_000, false).expect("decided");
        assert_eq!(j.report().decision, "pass");
        assert_eq!(j.report().routes_passed, 2);
        assert!(at > 40, "{at}");
    }
}
