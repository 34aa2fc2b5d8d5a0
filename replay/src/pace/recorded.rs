//! `--pace recorded` (the default): the recorded inter-arrival times, divided by `--speed`, each
//! gap clamped to `--max-gap`.

use std::sync::Arc;
use std::time::Duration;

use super::{Drive, Mode, Pacer, Param, Schedule};
use crate::config::ReplayOptions;
use crate::error::ReplayError;
use tapedeck_common::parse::parse_duration;

pub(super) const MODE: Mode = Mode {
    name: "recorded",
    help: "recorded inter-arrival times (scaled by --speed, gaps clamped by --max-gap)",
    params: &[Param::Speed, Param::MaxGap],
    build,
};

fn build(o: &ReplayOptions) -> Result<Arc<dyn Pacer>, ReplayError> {
    if !(o.speed.is_finite() && o.speed > 0.0) {
        return Err(ReplayError::config(
            "speed",
            "must be a positive number, e.g. 2.0",
        ));
    }
    let max_gap = o
        .max_gap
        .as_deref()
        .map(|s| parse_duration(s).map_err(|e| ReplayError::config("max-gap", e.to_string())))
        .transpose()?;
    Ok(Arc::new(Recorded {
        speed: o.speed,
        max_gap,
    }))
}

#[derive(Debug)]
struct Recorded {
    speed: f64,
    max_gap: Option<Duration>,
}

impl Pacer for Recorded {
    fn name(&self) -> &'static str {
        MODE.name
    }
    fn describe(&self) -> String {
        match self.max_gap {
            Some(g) => format!("recorded speed={} max-gap={}ms", self.speed, g.as_millis()),
            None => format!("recorded speed={}", self.speed),
        }
    }
    fn drive(&self) -> Drive {
        Drive::Open(Box::new(RecordedSchedule {
            speed: self.speed,
            max_gap_us: self.max_gap.map(|g| g.as_micros() as f64),
            prev: None,
            offset_us: 0.0,
        }))
    }
    fn speed(&self) -> Option<f64> {
        Some(self.speed)
    }
}

#[derive(Debug)]
struct RecordedSchedule {
    speed: f64,
    max_gap_us: Option<f64>,
    /// The latest recorded time seen.
    prev: Option<i64>,
    offset_us: f64,
}

impl Schedule for RecordedSchedule {
    /// Each exchange is due at `max(previous, own)` recorded time: rows within a file are in
    /// completion order, so a start time slightly before its predecessor's is sent right after
    /// it (gap 0) instead of reordering the stream.
    fn next(&mut self, recorded_at_us: i64) -> Duration {
        if let Some(prev) = self.prev {
            let mut gap = (recorded_at_us - prev).max(0) as f64 / self.speed;
            if let Some(m) = self.max_gap_us {
                gap = gap.min(m);
            }
            self.offset_us += gap;
            self.prev = Some(prev.max(recorded_at_us));
        } else {
            self.prev = Some(recorded_at_us);
        }
        Duration::from_nanos((self.offset_us * 1000.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_clamps_and_never_goes_back() {
        let p = Recorded {
            speed: 2.0,
            max_gap: Some(Duration::from_millis(100)),
        };
        let Drive::Open(mut s) = p.drive() else {
            panic!("recorded pacing is open loop");
        };
        let offs: Vec<u128> = [0i64, 10_000, 8_000, 30_000, 10_030_000]
            .iter()
            .map(|t| s.next(1_000_000 + t).as_micros())
            .collect();
        // 0; +5 ms; out of order → same instant; +10 ms (from 10 ms, the max seen); clamped.
        assert_eq!(offs, [0, 5_000, 5_000, 15_000, 115_000]);
    }

    #[test]
    fn refuses_a_bad_speed() {
        let o = ReplayOptions {
            speed: 0.0,
            ..ReplayOptions::default()
        };
        assert!(build(&o).is_err());
    }
}
