//! [`Timer`]: the one timer a connection or body waits on, made at its first wait and moved to
//! each new deadline afterwards (a timer is never allocated per request or per chunk).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A lazily made, reusable timer. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Ready once `deadline` has passed; otherwise `cx` is woken when it does.
    pub(crate) fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = match &mut self.0 {
            Some(s) => {
                if s.deadline() != deadline {
                    s.as_mut().reset(deadline);
                }
                s
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx)
    }

    /// Whether the timer exists and its deadline has passed.
    pub(crate) fn is_elapsed(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_elapsed())
    }

    /// No more waits: frees the timer.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}
