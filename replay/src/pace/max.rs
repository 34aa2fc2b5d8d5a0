//! `--pace max` (`--max`): closed loop, as fast as the targets answer, with `--concurrency N`
//! origins in flight (default 64). An origin is due when a slot frees up.

use std::sync::Arc;

use super::{Drive, Mode, Pacer};
use crate::config::ReplayOptions;
use crate::error::ReplayError;

pub(super) const MODE: Mode = Mode {
    name: "max",
    help: "closed loop: as fast as possible with --concurrency N origins in flight",
    params: &[],
    build,
};

/// In flight when `--concurrency` is not given.
const DEFAULT_CONCURRENCY: usize = 64;

fn build(o: &ReplayOptions) -> Result<Arc<dyn Pacer>, ReplayError> {
    Ok(Arc::new(Max {
        concurrency: o.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1),
    }))
}

#[derive(Debug)]
struct Max {
    concurrency: usize,
}

impl Pacer for Max {
    fn name(&self) -> &'static str {
        MODE.name
    }
    fn describe(&self) -> String {
        format!("max concurrency={}", self.concurrency)
    }
    fn drive(&self) -> Drive {
        Drive::Closed {
            concurrency: self.concurrency,
        }
    }
    fn target_rate(&self, _planned: Option<f64>) -> Option<f64> {
        None
    }
}
