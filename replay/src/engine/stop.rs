//! [`Stop`]: the cancellation handle of a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Asks a running replay to stop early: no new sends, in-flight requests finish, their results
/// are written and the summary says `interrupted`. Cloneable and reusable by anything that
/// decides a run is over: a signal ([`Stop::on_signals`]), an [`Observer`](crate::Observer)
/// that has seen enough, a caller's deadline. `Default` is "not stopped".
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// A fresh handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the stop (idempotent, from any thread).
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// Completes once a stop is requested (at once if it already was).
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Triggers this stop on the first SIGINT or SIGTERM; a second signal ends the process at
    /// once with exit code 130. Meant for command-line front ends; spawns one small thread.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let stop = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (mut int, mut term) = {
            let _guard = rt.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )
        };
        std::thread::Builder::new()
            .name("replay-signals".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    tracing::warn!(
                        "stopping: no new requests; waiting for those in flight (signal again to quit now)"
                    );
                    stop.stop();
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    std::process::exit(130);
                });
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stopped_completes_for_waiters_and_late_callers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let stop = Stop::new();
        assert!(!stop.is_stopped());
        let waiter = {
            let stop = stop.clone();
            rt.spawn(async move { stop.stopped().await })
        };
        let from_thread = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            from_thread.stop();
        });
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("the waiter is woken")
                .expect("task");
            // Already stopped: returns at once.
            tokio::time::timeout(Duration::from_secs(1), stop.stopped())
                .await
                .expect("no wait");
        });
        assert!(stop.is_stopped());
    }
}
