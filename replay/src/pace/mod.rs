//! Pacing modes: when each recorded exchange (an *origin*) is due.
//!
//! A mode is one file in this folder: a type implementing [`Pacer`] and a [`Mode`] entry (name,
//! help, constructor) listed once in [`MODES`]. The engine, the summary, the result tape's
//! metadata and the CLI's `--pace` values know pacing only through that list and the trait:
//!
//! - [`Pacer::drive`] says how the engine sends: an open-loop [`Schedule`] (each origin due at a
//!   computed offset from the start, started by a pacer with sub-millisecond timer sleeps, its
//!   lateness measured) or a closed loop of N slots (each origin due when a slot frees up).
//! - [`Pacer::describe`] is the `tapedeck.run.pace` metadata; [`Pacer::speed`] and
//!   [`Pacer::target_rate`] fill the summary's pacing section.
//!
//! Adding a mode: see "How to add a pacing mode" in `docs/ARCHITECTURE.md`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ReplayOptions;
use crate::error::ReplayError;

mod max;
mod poisson;
mod rate;
mod recorded;

/// Every pacing mode, in the order `--help` lists them. The first is the default.
pub const MODES: &[Mode] = &[recorded::MODE, rate::MODE, poisson::MODE, max::MODE];

/// Name of the default mode (recorded inter-arrival times).
pub const DEFAULT: &str = recorded::MODE.name;

/// A pacing mode as the registry lists it.
#[derive(Clone, Copy)]
pub struct Mode {
    /// The name given to `--pace` (and the `pace` config key), kebab-case.
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// Pacing options this mode reads (the others must be left unset).
    pub params: &'static [Param],
    /// Checks the options this mode reads and builds the pacer.
    pub build: fn(&ReplayOptions) -> Result<Arc<dyn Pacer>, ReplayError>,
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mode")
            .field("name", &self.name)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// A pacing option that only some modes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `rate` (`--rate N`).
    Rate,
    /// `speed` (`--speed X`).
    Speed,
    /// `max_gap` (`--max-gap D`).
    MaxGap,
    /// `seed` (`--seed N`).
    Seed,
}

impl Param {
    fn flag(self) -> &'static str {
        match self {
            Param::Rate => "rate",
            Param::Speed => "speed",
            Param::MaxGap => "max-gap",
            Param::Seed => "seed",
        }
    }

    /// Whether `o` sets this option to something other than its default.
    fn is_set(self, o: &ReplayOptions) -> bool {
        let d = ReplayOptions::default();
        match self {
            Param::Rate => o.rate.is_some(),
            Param::Speed => o.speed != d.speed,
            Param::MaxGap => o.max_gap.is_some(),
            Param::Seed => o.seed != d.seed,
        }
    }
}

/// The mode named `name`.
pub fn mode(name: &str) -> Option<&'static Mode> {
    MODES.iter().find(|m| m.name == name)
}

/// The names of every mode, for flag parsers.
pub fn names() -> impl Iterator<Item = &'static str> {
    MODES.iter().map(|m| m.name)
}

/// Decides when origins are due. Built once per configuration by its [`Mode`].
pub trait Pacer: fmt::Debug + Send + Sync {
    /// The mode's name (as in [`MODES`]); shown in the summary.
    fn name(&self) -> &'static str;
    /// One line for the result tape's `tapedeck.run.pace` metadata, e.g. `rate 500/s`.
    fn describe(&self) -> String;
    /// How the engine drives the sends of one run (called once per run).
    fn drive(&self) -> Drive;
    /// Summary: the speed factor, for modes that scale recorded time.
    fn speed(&self) -> Option<f64> {
        None
    }
    /// Summary: the intended origin rate. `planned` is the rate the schedule implied (origins
    /// over the span of their scheduled times); modes with a set rate return that instead.
    fn target_rate(&self, planned: Option<f64>) -> Option<f64> {
        planned
    }
}

/// How a run's sends are driven.
#[derive(Debug)]
pub enum Drive {
    /// Open loop: each origin is due at the run's start plus [`Schedule::next`]; sends never
    /// wait for earlier responses (only for the in-flight cap).
    Open(Box<dyn Schedule>),
    /// Closed loop: `concurrency` origins in flight; each is due when a slot frees up.
    Closed {
        /// Origins in flight (≥ 1).
        concurrency: usize,
    },
}

/// The open-loop schedule of one run.
pub trait Schedule: fmt::Debug + Send {
    /// The offset from the run's start at which the next origin is due; `recorded_at_us` is when
    /// it was recorded (its `started_at_us`). Offsets never decrease.
    fn next(&mut self, recorded_at_us: i64) -> Duration;
}

/// Checked pacing: the [`Pacer`] of the mode the options named.
#[derive(Debug, Clone)]
pub struct Pace(Arc<dyn Pacer>);

impl Pace {
    /// Builds the pacing `options` ask for. Errors name the option and the fix.
    pub fn from_options(options: &ReplayOptions) -> Result<Pace, ReplayError> {
        let name = options.pace_name();
        let mode = mode(name).ok_or_else(|| {
            ReplayError::config(
                "pace",
                format!(
                    "unknown pacing mode `{name}`; use one of: {}",
                    names().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        for p in [Param::Rate, Param::Speed, Param::MaxGap, Param::Seed] {
            if p.is_set(options) && !mode.params.contains(&p) {
                let users: Vec<&str> = MODES
                    .iter()
                    .filter(|m| m.params.contains(&p))
                    .map(|m| m.name)
                    .collect();
                return Err(ReplayError::config(
                    p.flag(),
                    format!(
                        "--{} applies to --pace {} (not {name})",
                        p.flag(),
                        users.join(" or ")
                    ),
                ));
            }
        }
        (mode.build)(options).map(Pace)
    }

    /// The pacer.
    pub fn pacer(&self) -> &dyn Pacer {
        &*self.0
    }

    /// The mode's name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Closed-loop concurrency, or `None` for open-loop modes.
    pub fn closed_loop(&self) -> Option<usize> {
        match self.0.drive() {
            Drive::Closed { concurrency } => Some(concurrency),
            Drive::Open(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pace: &str) -> ReplayOptions {
        ReplayOptions {
            pace: pace.into(),
            ..ReplayOptions::default()
        }
    }

    #[test]
    fn every_mode_has_a_unique_kebab_name_and_help() {
        let mut seen = std::collections::HashSet::new();
        for m in MODES {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty());
        }
        assert_eq!(MODES[0].name, DEFAULT);
    }

    #[test]
    fn options_a_mode_does_not_read_are_refused() {
        let mut o = opts("recorded");
        o.rate = Some(10.0);
        let e = Pace::from_options(&o).expect_err("rate with recorded");
        assert!(e.to_string().contains("--pace rate or poisson"), "{e}");
        let mut o = opts("max");
        o.max_gap = Some("1s".into());
        assert!(Pace::from_options(&o).is_err());
        assert!(Pace::from_options(&opts("nope")).is_err());
    }

    #[test]
    fn modes_build_and_describe_themselves() {
        let mut o = opts("rate");
        o.rate = Some(500.0);
        let p = Pace::from_options(&o).expect("rate");
        assert_eq!(p.pacer().describe(), "rate 500/s");
        assert_eq!(p.pacer().target_rate(Some(1.0)), Some(500.0));
        assert_eq!(p.closed_loop(), None);
        let p = Pace::from_options(&opts("max")).expect("max");
        assert_eq!(p.closed_loop(), Some(64));
        assert_eq!(p.pacer().describe(), "max concurrency=64");
        let p = Pace::from_options(&opts("recorded")).expect("recorded");
        assert_eq!(p.pacer().describe(), "recorded speed=1");
        assert_eq!(p.pacer().speed(), Some(1.0));
    }
}
