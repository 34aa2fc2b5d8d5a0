//! Open loop ([`Drive::Open`](crate::pace::Drive)): a pacer task owns the schedule and starts
//! each origin when it is due, whether or not earlier ones were answered.
//!
//! The pacer runs on the sending runtime itself and waits for each due time on a `timerfd`
//! ([`PreciseTimer`]): the kernel's high-resolution timer wakes the runtime's own `epoll_wait`, so
//! a due origin costs one wake-up of the thread that sends it — no dispatcher thread to hand it
//! over, no spinning (tokio's own timers tick in milliseconds). Origins already due when the
//! pacer gets to them (a burst, a busy moment) start at once, one task each, on the pacer's
//! thread. Each origin takes connections from its worker's pools: they were opened before the
//! clock started, and each pool's keeper opens more off the send path when the spares run low.
//! Lateness (`sent_at - scheduled_at`) is measured per result and reported in the summary; a busy
//! runtime shows there (the pacer is polled between other tasks).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::{Semaphore, mpsc};

use super::origin::replay_origin;
use super::reader::Item;
use super::workers::Workers;
use super::{Ctx, Dispatched, Stop};
use crate::conn::Pool;
use crate::pace::Schedule;
use crate::send::Slot;

/// Idle HTTP/1.1 connections per worker and target opened before the clock starts, and kept
/// ready while the run lasts (capped by the in-flight limit).
const SPARE_CONNS: usize = 32;

/// Longest single wait, so that a stop is noticed during long recorded gaps.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Spares to keep for a run with this in-flight cap.
pub(super) fn spares(max_in_flight: usize) -> usize {
    SPARE_CONNS.min(max_in_flight).max(1)
}

pub(super) async fn run(
    rx: mpsc::Receiver<Vec<Item>>,
    ctx: &Arc<Ctx>,
    workers: &Workers,
    schedule: Box<dyn Schedule>,
    max_in_flight: usize,
    stop: &Stop,
) -> Dispatched {
    workers.warm(spares(max_in_flight)).await;
    workers.keep_spares();
    let w = workers.get(0);
    let (pools, sink) = (w.pools.clone(), w.results.clone());
    let (ctx, stop) = (ctx.clone(), stop.clone());
    let pacer = w
        .handle
        .spawn(async move { pace(rx, ctx, pools, sink, schedule, max_in_flight, &stop).await });
    // The pacer never panics on outside data; if it did (a bug), no origin is counted.
    pacer.await.unwrap_or_default()
}

async fn pace(
    mut rx: mpsc::Receiver<Vec<Item>>,
    ctx: Arc<Ctx>,
    pools: Arc<[Arc<Pool>]>,
    sink: Arc<super::results::ResultSink>,
    mut schedule: Box<dyn Schedule>,
    max_in_flight: usize,
    stop: &Stop,
) -> Dispatched {
    let timer = PreciseTimer::new();
    let sem = Arc::new(Semaphore::new(max_in_flight));
    let mut d = Dispatched::default();
    // The schedule starts when the first origin is ready (opening the tape takes a moment),
    // plus a short lead so that the first sends are not late by construction.
    let mut start: Option<Instant> = None;
    'feed: while let Some(batch) = rx.recv().await {
        for item in batch {
            if stop.is_stopped() {
                d.interrupted = true;
                break 'feed;
            }
            let start = *start.get_or_insert_with(|| Instant::now() + Duration::from_millis(2));
            let due = start + schedule.next(item.origin.started_at_us);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                if stop.is_stopped() {
                    d.interrupted = true;
                    break 'feed;
                }
                timer.sleep_until(due.min(now + MAX_WAIT)).await;
            }
            // In flight at the cap: the wait shows as lateness.
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match sem.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break 'feed, // closed: cannot happen, we own it
                },
            };
            d.sent(due, Instant::now(), &ctx.counters, pools.len() as u64);
            let (ctx, pools, sink) = (ctx.clone(), pools.clone(), sink.clone());
            tokio::spawn(async move {
                let mut slots: Vec<Slot> = (0..pools.len()).map(|_| Slot::one_shot()).collect();
                let mut group = Vec::with_capacity(pools.len());
                std::pin::pin!(replay_origin(
                    item, due, &ctx.send, &pools, &mut slots, &mut group
                ))
                .await;
                for (pool, slot) in pools.iter().zip(slots) {
                    if let Some(conn) = slot.conn {
                        pool.checkin(conn);
                    }
                }
                ctx.counters.completed_group(&group);
                sink.push(&mut group).await;
                drop(permit);
            });
        }
    }
    drop(rx);
    // Wait for every origin in flight.
    let _ = sem
        .acquire_many(u32::try_from(max_in_flight).unwrap_or(u32::MAX))
        .await;
    d
}

/// Sleeps with the precision of the kernel's high-resolution timers: a `timerfd` registered
/// with the runtime's I/O driver. Falls back to tokio's millisecond timer where no timerfd can
/// be made.
struct PreciseTimer(Option<AsyncFd<OwnedFd>>);

impl PreciseTimer {
    fn new() -> Self {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .map_err(std::io::Error::from)
        // Deprecated in tokio 1.54 for lack of I/O safety in general (an `AsRawFd` whose fd is
        // replaced or closed while registered); its replacement is `unsafe`, which this crate
        // forbids. Sound here: the `OwnedFd` is moved in, owned by the `AsyncFd`, never
        // replaced, and closed only when the `AsyncFd` (and its registration) is dropped.
        .and_then(|fd| {
            #[allow(deprecated)]
            AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
        });
        match fd {
            Ok(fd) => Self(Some(fd)),
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd: open-loop sends are paced with millisecond precision");
                Self(None)
            }
        }
    }

    /// Returns at `deadline` or soon after, never before.
    async fn sleep_until(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let Some(fd) = &self.0 else {
            tokio::time::sleep(left).await;
            return tokio::time::sleep_until(deadline.into()).await;
        };
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let spec = Itimerspec {
            it_interval: Timespec::default(),
            it_value: Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            },
        };
        if timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &spec).is_err() {
            return tokio::time::sleep_until(deadline.into()).await;
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return tokio::time::sleep_until(deadline.into()).await;
            };
            // Reading takes the expiration count (8 bytes) and disarms readiness.
            let mut buf = [0u8; 8];
            match rustix::io::read(fd.get_ref(), &mut buf) {
                Ok(_) => return,
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(_) => return tokio::time::sleep_until(deadline.into()).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precise_sleep_is_never_early() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let timer = PreciseTimer::new();
            assert!(timer.0.is_some(), "a timerfd on Linux");
            for wait in [Duration::from_micros(300), Duration::from_millis(3)] {
                let deadline = Instant::now() + wait;
                timer.sleep_until(deadline).await;
                assert!(Instant::now() >= deadline);
            }
            // Past deadlines return at once; the timer is reusable.
            timer.sleep_until(Instant::now()).await;
            let deadline = Instant::now() + Duration::from_millis(1);
            timer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline);
        });
    }
}
