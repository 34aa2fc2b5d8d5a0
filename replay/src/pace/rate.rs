//! `--pace rate --rate N`: open loop at a constant N origins per second.

use std::sync::Arc;
use std::time::Duration;

use super::{Drive, Mode, Pacer, Param, Schedule};
use crate::config::ReplayOptions;
use crate::error::ReplayError;

pub(super) const MODE: Mode = Mode {
    name: "rate",
    help: "open loop at a constant --rate N origins per second",
    params: &[Param::Rate],
    build,
};

/// Checks `--rate` (shared with the other fixed-rate modes).
pub(super) fn checked_rate(o: &ReplayOptions, mode: &str) -> Result<f64, ReplayError> {
    let per_sec = o.rate.ok_or_else(|| {
        ReplayError::config("rate", format!("--pace {mode} needs --rate N (per second)"))
    })?;
    if !(per_sec.is_finite() && per_sec > 0.0) {
        return Err(ReplayError::config(
            "rate",
            "must be a positive number of requests/s",
        ));
    }
    Ok(per_sec)
}

fn build(o: &ReplayOptions) -> Result<Arc<dyn Pacer>, ReplayError> {
    Ok(Arc::new(Rate {
        per_sec: checked_rate(o, MODE.name)?,
    }))
}

#[derive(Debug)]
struct Rate {
    per_sec: f64,
}

impl Pacer for Rate {
    fn name(&self) -> &'static str {
        MODE.name
    }
    fn describe(&self) -> String {
        format!("rate {}/s", self.per_sec)
    }
    fn drive(&self) -> Drive {
        Drive::Open(Box::new(Constant {
            gap_us: 1e6 / self.per_sec,
            n: 0,
        }))
    }
    fn target_rate(&self, _planned: Option<f64>) -> Option<f64> {
        Some(self.per_sec)
    }
}

#[derive(Debug)]
struct Constant {
    gap_us: f64,
    /// Origins scheduled so far.
    n: u64,
}

impl Schedule for Constant {
    fn next(&mut self, _recorded_at_us: i64) -> Duration {
        // Multiplied, not summed: no drift from rounding over millions of gaps.
        let off = self.n as f64 * self.gap_us;
        self.n += 1;
        Duration::from_nanos((off * 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_gaps() {
        let Drive::Open(mut s) = (Rate { per_sec: 1000.0 }).drive() else {
            panic!("open loop");
        };
        let offs: Vec<u128> = (0..4).map(|_| s.next(0).as_micros()).collect();
        assert_eq!(offs, [0, 1000, 2000, 3000]);
    }

    #[test]
    fn needs_a_positive_rate() {
        let mut o = ReplayOptions::default();
        assert!(build(&o).is_err());
        o.rate = Some(-1.0);
        assert!(build(&o).is_err());
        o.rate = Some(5.0);
        assert!(build(&o).is_ok());
    }
}
