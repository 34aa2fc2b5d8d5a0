//! Open loop ([`Drive::Open`](crate::pace::Drive)): a dispatcher thread owns the schedule and
//! hands each origin to a worker thread when it is due, whether or not earlier ones were
//! answered.
//!
//! The dispatcher is a plain thread so that its sleeps have sub-millisecond precision (tokio's
//! timer wheel ticks in milliseconds) and a busy runtime cannot delay a due time: it sleeps with
//! 1 ns timer slack, then spins the last tenth of the gap. Each origin becomes one task on a
//! worker (round robin), which takes connections from the worker's pools: they were opened before
//! the clock started, and each pool's keeper opens more off the send path when the spares run
//! low, so a send does not wait for a handshake. Lateness (`sent_at - scheduled_at`) is measured
//! per result and reported in the summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};

use super::origin::replay_origin;
use super::reader::Item;
use super::workers::Workers;
use super::{Ctx, Dispatched, Stop};
use crate::conn::{Conn, Pool};
use crate::pace::Schedule;

/// Idle HTTP/1.1 connections per worker and target opened before the clock starts, and kept
/// ready while the run lasts (capped by the in-flight limit).
const SPARE_CONNS: usize = 32;

/// Spares to keep for a run with this in-flight cap.
pub(super) fn spares(max_in_flight: usize) -> usize {
    SPARE_CONNS.min(max_in_flight).max(1)
}

/// What the dispatcher needs of one worker.
struct Lane {
    handle: Handle,
    pools: Arc<[Arc<Pool>]>,
    results: Arc<super::results::ResultSink>,
}

pub(super) async fn run(
    rx: mpsc::Receiver<Vec<Item>>,
    ctx: &Arc<Ctx>,
    workers: &Workers,
    schedule: Box<dyn Schedule>,
    max_in_flight: usize,
    stop: &Stop,
) -> Result<Dispatched, crate::ReplayError> {
    workers.warm(spares(max_in_flight)).await;
    workers.keep_spares();
    let lanes: Vec<Lane> = (0..workers.len())
        .map(|i| {
            let w = workers.get(i);
            Lane {
                handle: w.handle.clone(),
                pools: w.pools.clone(),
                results: w.results.clone(),
            }
        })
        .collect();
    let dispatcher = std::thread::Builder::new()
        .name("replay-dispatch".into())
        .spawn({
            let (ctx, stop) = (ctx.clone(), stop.clone());
            move || dispatch(rx, ctx, lanes, schedule, max_in_flight, &stop)
        })
        .map_err(|source| crate::ReplayError::Start {
            what: "the dispatcher thread",
            source,
        })?;
    super::join(dispatcher, "the dispatcher thread").await
}

fn dispatch(
    mut rx: mpsc::Receiver<Vec<Item>>,
    ctx: Arc<Ctx>,
    lanes: Vec<Lane>,
    mut schedule: Box<dyn Schedule>,
    max_in_flight: usize,
    stop: &Stop,
) -> Dispatched {
    precise_timer_slack();
    // Waiting for a permit or for the last origins needs an executor on this (plain) thread:
    // block_on with any runtime's handle drives such futures here.
    let waiter = lanes[0].handle.clone();
    let sem = Arc::new(Semaphore::new(max_in_flight));
    let mut d = Dispatched::default();
    // The schedule starts when the first origin is ready (opening the tape takes a moment),
    // plus a short lead so that the first sends are not late by construction.
    let mut start: Option<Instant> = None;
    let mut prev_due: Option<Instant> = None;
    let mut next_lane = 0usize;
    'feed: while let Some(batch) = rx.blocking_recv() {
        for item in batch {
            if stop.is_stopped() {
                d.interrupted = true;
                break 'feed;
            }
            let start = *start.get_or_insert_with(|| Instant::now() + Duration::from_millis(2));
            let due = start + schedule.next(item.origin.started_at_us);
            let gap = due.saturating_duration_since(prev_due.unwrap_or(start));
            prev_due = Some(due);
            if !sleep_until_precise(due, spin_for(gap), stop) {
                d.interrupted = true;
                break 'feed;
            }
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match waiter.block_on(sem.clone().acquire_owned()) {
                    Ok(p) => p,
                    Err(_) => break 'feed, // semaphore closed: cannot happen, we own it
                },
            };
            d.sent(
                due,
                Instant::now(),
                &ctx.counters,
                lanes[0].pools.len() as u64,
            );
            let lane = &lanes[next_lane % lanes.len()];
            next_lane = next_lane.wrapping_add(1);
            let (ctx, pools, sink) = (ctx.clone(), lane.pools.clone(), lane.results.clone());
            lane.handle.spawn(async move {
                let mut slots: Vec<Option<Conn>> = (0..pools.len()).map(|_| None).collect();
                let group = replay_origin(item, due, &ctx.send, &pools, &mut slots).await;
                for (pool, slot) in pools.iter().zip(slots) {
                    if let Some(conn) = slot {
                        pool.checkin(conn);
                    }
                }
                ctx.counters.completed_group(&group);
                sink.push(group).await;
                drop(permit);
            });
        }
    }
    drop(rx);
    // Wait for every origin in flight.
    let _ = waiter.block_on(sem.acquire_many(u32::try_from(max_in_flight).unwrap_or(u32::MAX)));
    d
}

/// Shortest and longest final stretch of a wait that the dispatcher spins instead of sleeping.
const SPIN_MIN: Duration = Duration::from_micros(10);
const SPIN_MAX: Duration = Duration::from_micros(100);

/// How long to spin before a send that follows the previous one after `gap`: a tenth of the
/// gap within [`SPIN_MIN`, `SPIN_MAX`], so spinning never takes more than about a tenth of a
/// core. At 1k/s that is the last 100 µs; at 10k/s only the last 10 µs: a dispatcher spinning
/// most of each 100 µs gap competes for its core with the worker that has to send what it
/// dispatched (on a busy or pinned core that cost milliseconds of lateness), and a thread
/// that mostly sleeps is scheduled promptly when it wakes.
fn spin_for(gap: Duration) -> Duration {
    (gap / 10).clamp(SPIN_MIN, SPIN_MAX)
}

/// Sleeps until `deadline` with sub-millisecond precision: OS sleep for all but the last
/// `spin`, then a bounded spin (see [`spin_for`] and [`precise_timer_slack`]).
/// Returns `false` if `stop` was triggered first (checked at least every 50 ms).
fn sleep_until_precise(deadline: Instant, spin: Duration, stop: &Stop) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if left > spin + SPIN_MIN {
            if stop.is_stopped() {
                return false;
            }
            std::thread::sleep((left - spin).min(Duration::from_millis(50)));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Asks Linux to wake the calling thread from its sleeps without the default 50 µs of timer
/// slack (writes `/proc/<tid>/timerslack_ns`; `/proc/thread-self` names the thread). Best
/// effort: elsewhere, or when not allowed, sleeps are just up to 50 µs less precise.
fn precise_timer_slack() {
    let set = || -> std::io::Result<()> {
        let link = std::fs::read_link("/proc/thread-self")?;
        let tid = link.file_name().ok_or(std::io::ErrorKind::NotFound)?;
        std::fs::write(
            std::path::Path::new("/proc")
                .join(tid)
                .join("timerslack_ns"),
            "1",
        )
    };
    if let Err(e) = set() {
        tracing::debug!(error = %e, "could not lower the dispatcher's timer slack");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn dispatcher_thread_gets_a_precise_timer_slack() {
        let got = std::thread::spawn(|| {
            precise_timer_slack();
            let link = std::fs::read_link("/proc/thread-self").expect("thread-self");
            let tid = link.file_name().expect("tid").to_owned();
            std::fs::read_to_string(
                std::path::Path::new("/proc")
                    .join(tid)
                    .join("timerslack_ns"),
            )
            .expect("read slack")
        })
        .join()
        .expect("thread");
        assert_eq!(got.trim(), "1");
        // Only that thread: the process keeps the default.
        let main = std::fs::read_to_string("/proc/self/timerslack_ns").expect("read");
        assert_ne!(main.trim(), "1");
    }

    #[test]
    fn precise_sleep_is_not_early() {
        let d = Instant::now() + Duration::from_millis(3);
        assert!(sleep_until_precise(d, SPIN_MAX, &Stop::new()));
        assert!(Instant::now() >= d);
        let stop = Stop::new();
        stop.stop();
        let far = Instant::now() + Duration::from_secs(60);
        assert!(
            !sleep_until_precise(far, SPIN_MIN, &stop),
            "a stop ends the wait"
        );
        assert_eq!(
            spin_for(Duration::from_millis(1)),
            Duration::from_micros(100)
        );
        assert_eq!(spin_for(Duration::from_micros(100)), SPIN_MIN);
        assert_eq!(spin_for(Duration::ZERO), SPIN_MIN);
        assert_eq!(spin_for(Duration::from_secs(1)), SPIN_MAX);
    }
}
