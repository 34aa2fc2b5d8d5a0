//! `--pace poisson --rate N` (or `--rate N --poisson`): open loop with exponential gaps of mean
//! 1/N seconds (a Poisson arrival process), seeded by `--seed` so a run can be repeated.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Drive, Mode, Pacer, Param, Schedule};
use crate::config::ReplayOptions;
use crate::error::ReplayError;

pub(super) const MODE: Mode = Mode {
    name: "poisson",
    help: "open loop, Poisson arrivals at a mean --rate N per second (seeded by --seed)",
    params: &[Param::Rate, Param::Seed],
    build,
};

fn build(o: &ReplayOptions) -> Result<Arc<dyn Pacer>, ReplayError> {
    Ok(Arc::new(Poisson {
        per_sec: super::rate::checked_rate(o, MODE.name)?,
        seed: o.seed,
    }))
}

#[derive(Debug)]
struct Poisson {
    per_sec: f64,
    seed: u64,
}

impl Pacer for Poisson {
    fn name(&self) -> &'static str {
        MODE.name
    }
    fn describe(&self) -> String {
        // The wording of the earlier `--rate N --poisson` flag pair, kept for tape readers.
        format!("rate {}/s poisson", self.per_sec)
    }
    fn drive(&self) -> Drive {
        Drive::Open(Box::new(Exponential {
            mean_us: 1e6 / self.per_sec,
            rng: StdRng::seed_from_u64(self.seed),
            offset_us: 0.0,
            first: true,
        }))
    }
    fn target_rate(&self, _planned: Option<f64>) -> Option<f64> {
        Some(self.per_sec)
    }
}

#[derive(Debug)]
struct Exponential {
    mean_us: f64,
    rng: StdRng,
    offset_us: f64,
    first: bool,
}

impl Schedule for Exponential {
    fn next(&mut self, _recorded_at_us: i64) -> Duration {
        if self.first {
            self.first = false;
        } else {
            self.offset_us += -(1.0 - self.rng.random::<f64>()).ln() * self.mean_us;
        }
        Duration::from_nanos((self.offset_us * 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_gap_matches_the_rate_and_the_seed_repeats() {
        let p = Poisson {
            per_sec: 1000.0,
            seed: 7,
        };
        let run = || {
            let Drive::Open(mut s) = p.drive() else {
                panic!("open loop");
            };
            (0..2001).map(|_| s.next(0)).last().expect("some")
        };
        let secs = run().as_secs_f64();
        assert!(
            (1.6..2.4).contains(&secs),
            "2000 Poisson gaps at 1k/s ≈ 2 s: {secs}"
        );
        assert_eq!(run(), run(), "same seed, same schedule");
    }
}
