//! Coarse timers that need no timer driver: the deadlines of a server's worker threads.
//!
//! tokio's timer driver reads the clock and turns its wheel on every park of a runtime
//! (≈ 1.4k instructions a park, callgrind), and moving a `Sleep` to a new deadline re-files it
//! in the wheel; a proxy worker parks once or twice per request on a quiet connection and moves
//! a deadline on every request. The deadlines of a server's connections are coarse (head,
//! idle, upstream silence, body gaps: hundreds of milliseconds to minutes), so here they cost
//! two atomic stores instead:
//!
//! - One process-wide thread, `tapedeck-timer`, wakes every [`RESOLUTION`], publishes the time,
//!   and wakes every timer whose deadline has passed.
//! - A [`Timer`] is a slot the thread scans: its deadline (an atomic) and its task's waker.
//!   Arming or moving it is a store; it is registered with the thread once, at its first wait,
//!   and reused for every later deadline; dropping it unregisters it.
//!
//! A timer fires after its deadline, never before, and at most [`RESOLUTION`] plus the timer
//! thread's scheduling delay after it. Deadlines are [`std::time::Instant`]s, so callers read
//! the clock only when they compute one. Works on any thread, inside or outside a runtime, with
//! or without tokio's time driver. [`Sleep`], [`timeout`] and [`Interval`] are the usual shapes
//! on top.
//!
//! Cost: each tick reads every registered timer once (two atomic loads): the timer thread took
//! 0.7 % of a core with 20,000 armed timers (10,000 connections with two each) and 4.7 % with
//! 100,000 (measured once by hand, release build, 3 s of its CPU time from `/proc`).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

/// How often the timer thread looks at the deadlines: the most a timer fires late by (plus
/// scheduling delay).
pub const RESOLUTION: Duration = Duration::from_millis(5);

/// A slot's deadline when it has none.
const UNARMED: u64 = u64::MAX;

/// What the timer thread and the timers share.
struct Wheel {
    /// The origin of every deadline in a slot (nanoseconds since it).
    base: Instant,
    /// The time of the thread's last tick, nanoseconds since `base`.
    now: AtomicU64,
    /// Timers registered since the thread's last tick.
    incoming: Mutex<Vec<Arc<Slot>>>,
}

/// One timer as the thread sees it.
struct Slot {
    /// The deadline, nanoseconds since `base`, or [`UNARMED`].
    at: AtomicU64,
    waker: AtomicWaker,
}

impl Wheel {
    fn ticks(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(UNARMED - 1)
    }

    fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            at: AtomicU64::new(UNARMED),
            waker: AtomicWaker::new(),
        });
        self.incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(slot.clone());
        slot
    }

    /// The timer thread's loop: publish the time, wake what is due, forget dropped timers.
    fn run(&self) {
        let mut slots: Vec<Arc<Slot>> = Vec::new();
        loop {
            std::thread::sleep(RESOLUTION);
            let now = self.ticks(Instant::now());
            // Published before the deadlines are read: a timer armed after this store is
            // either seen below or sees this time itself (`Timer::poll_until`).
            self.now.store(now, Ordering::SeqCst);
            slots.append(&mut self.incoming.lock().unwrap_or_else(PoisonError::into_inner));
            slots.retain(|s| {
                if Arc::strong_count(s) == 1 {
                    // The timer was dropped.
                    return false;
                }
                let at = s.at.load(Ordering::SeqCst);
                if at <= now
                    && s.at
                        .compare_exchange(at, UNARMED, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                {
                    s.waker.wake();
                }
                true
            });
        }
    }
}

/// The wheel, its thread started on first use (see [`start`]).
fn wheel() -> &'static Wheel {
    static WHEEL: OnceLock<Wheel> = OnceLock::new();
    let w = WHEEL.get_or_init(|| Wheel {
        base: Instant::now(),
        now: AtomicU64::new(0),
        incoming: Mutex::new(Vec::new()),
    });
    if THREAD.get().is_none() {
        spawn_thread(w);
    }
    w
}

/// Whether the timer thread runs (the error if it could not be started).
static THREAD: OnceLock<Result<(), String>> = OnceLock::new();

fn spawn_thread(w: &'static Wheel) -> &'static Result<(), String> {
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("tapedeck-timer".into())
            .spawn(move || w.run())
            .map(drop)
            .map_err(|e| {
                // Nothing would ever time out: say so loudly.
                tracing::error!(error = %e, "cannot start the timer thread: timeouts will not fire");
                e.to_string()
            })
    })
}

/// Starts the timer thread now: servers call it before they accept, so that a failure to start
/// it is an error at start rather than timeouts that never fire.
pub fn start() -> std::io::Result<()> {
    wheel();
    THREAD
        .get()
        .cloned()
        .unwrap_or(Ok(()))
        .map_err(|e| std::io::Error::other(format!("cannot start the timer thread: {e}")))
}

/// A reusable timer for a task that waits on one deadline at a time: made once, moved to each
/// new deadline. See the [module docs](self).
#[derive(Default)]
pub struct Timer {
    slot: Option<Arc<Slot>>,
    /// The last deadline polled for, in the wheel's ticks.
    at: Option<u64>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("registered", &self.slot.is_some())
            .field("at", &self.at)
            .finish()
    }
}

impl Timer {
    /// Ready once `deadline` has passed; otherwise `cx` is woken when it has (within
    /// [`RESOLUTION`]). Moving the deadline is polling with another one.
    pub fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let w = wheel();
        let at = w.ticks(deadline);
        self.at = Some(at);
        if at <= w.now() {
            self.disarm();
            return Poll::Ready(());
        }
        let slot = self.slot.get_or_insert_with(|| w.register());
        slot.waker.register(cx.waker());
        slot.at.store(at, Ordering::SeqCst);
        // The thread may have ticked past `at` between the check above and the store, without
        // seeing the store: then this load sees its tick.
        if at <= w.now() {
            slot.at.store(UNARMED, Ordering::SeqCst);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Whether the last deadline polled for has passed (as of the timer thread's last tick).
    pub fn is_elapsed(&self) -> bool {
        self.at.is_some_and(|at| at <= wheel().now())
    }

    /// No wake-up for the deadline armed last (the timer stays registered for the next).
    pub fn disarm(&mut self) {
        if let Some(slot) = &self.slot {
            slot.at.store(UNARMED, Ordering::SeqCst);
        }
    }

    /// No more waits: unregisters the timer.
    pub fn clear(&mut self) {
        self.disarm();
        self.slot = None;
        self.at = None;
    }
}

/// A future ready at a deadline.
#[derive(Debug)]
pub struct Sleep {
    timer: Timer,
    deadline: Instant,
}

/// Ready at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        timer: Timer::default(),
        deadline,
    }
}

/// Ready after `d`.
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

impl Sleep {
    /// Moves the deadline.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.timer.poll_until(cx, this.deadline)
    }
}

/// The error of a [`timeout`] that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// A future with a time limit: see [`timeout`].
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: Sleep,
    }
}

/// `fut`'s output, or [`Elapsed`] if it is not ready within `d`. `fut` is polled first, so an
/// output ready at the deadline wins.
pub fn timeout<F: IntoFuture>(d: Duration, fut: F) -> Timeout<F::IntoFuture> {
    Timeout {
        fut: fut.into_future(),
        sleep: sleep(d),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        ready!(Pin::new(this.sleep).poll(cx));
        Poll::Ready(Err(Elapsed))
    }
}

/// Ticks every `period`, the first one `period` after it is made; a tick that is late (the
/// task was busy) moves the next one to `period` after it (no burst of missed ticks).
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    next: Instant,
    timer: Timer,
}

impl Interval {
    /// Ticks every `period`, from `period` from now.
    pub fn new(period: Duration) -> Interval {
        Interval {
            period,
            next: Instant::now() + period,
            timer: Timer::default(),
        }
    }

    /// Ready at the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        ready!(self.timer.poll_until(cx, self.next));
        let now = Instant::now();
        self.next += self.period;
        if self.next <= now {
            self.next = now + self.period;
        }
        Poll::Ready(())
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A runtime with no time driver at all: these timers must not need one.
    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    /// Generous: the test machines are loaded.
    const LATE: Duration = Duration::from_secs(5);

    #[test]
    fn sleep_fires_after_its_deadline_never_before() {
        rt().block_on(async {
            for ms in [1, 20, 60] {
                let d = Duration::from_millis(ms);
                let t0 = Instant::now();
                sleep(d).await;
                let took = t0.elapsed();
                assert!(took >= d, "{ms} ms sleep took {took:?}");
                assert!(took < d + LATE, "{ms} ms sleep took {took:?}");
            }
        });
    }

    #[test]
    fn a_past_deadline_is_ready_by_the_next_tick() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut t = Timer::default();
        let past = Instant::now() - Duration::from_millis(1);
        // The timer thread may not have ticked yet (a fresh wheel): wait for it, bounded.
        let t0 = Instant::now();
        while t.poll_until(&mut cx, past).is_pending() {
            assert!(t0.elapsed() < LATE, "a past deadline never became ready");
            std::thread::sleep(RESOLUTION);
        }
        assert!(t.is_elapsed());
    }

    #[test]
    fn moving_a_deadline_later_does_not_fire_at_the_old_one() {
        rt().block_on(async {
            let mut t = Timer::default();
            let t0 = Instant::now();
            let early = t0 + Duration::from_millis(30);
            let late = t0 + Duration::from_millis(150);
            // Armed at `early`, then moved to `late` before it passes.
            std::future::poll_fn(|cx| {
                assert!(t.poll_until(cx, early).is_pending());
                Poll::Ready(())
            })
            .await;
            std::future::poll_fn(|cx| t.poll_until(cx, late)).await;
            assert!(t0.elapsed() >= Duration::from_millis(150));
            assert!(t.is_elapsed());
        });
    }

    #[test]
    fn timeout_gives_the_output_or_elapsed() {
        rt().block_on(async {
            assert_eq!(timeout(Duration::from_secs(60), async { 7 }).await, Ok(7));
            let t0 = Instant::now();
            let never = std::future::pending::<()>();
            assert_eq!(
                timeout(Duration::from_millis(40), never).await,
                Err(Elapsed)
            );
            assert!(t0.elapsed() >= Duration::from_millis(40));
            assert!(t0.elapsed() < LATE);
        });
    }

    #[test]
    fn interval_ticks_at_its_period_without_bursts() {
        rt().block_on(async {
            let period = Duration::from_millis(20);
            let mut iv = Interval::new(period);
            let t0 = Instant::now();
            for _ in 0..5 {
                iv.tick().await;
            }
            assert!(t0.elapsed() >= period * 5, "{:?}", t0.elapsed());
            // Busy past several periods: one tick at once, then the next a whole period after
            // it, not the missed ones in a burst (checked on the schedule, not the clock, so a
            // loaded machine cannot make it flaky).
            std::thread::sleep(period * 4);
            let before = Instant::now();
            iv.tick().await;
            assert!(
                iv.next >= before + period,
                "next tick {:?} after the late one",
                iv.next.saturating_duration_since(before)
            );
        });
    }

    #[test]
    fn many_timers_on_many_threads_all_fire() {
        let fired = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let fired = fired.clone();
                std::thread::spawn(move || {
                    rt().block_on(async {
                        let mut tasks = Vec::new();
                        for i in 0..250u64 {
                            let fired = fired.clone();
                            tasks.push(tokio::spawn(async move {
                                sleep(Duration::from_millis(i % 50)).await;
                                fired.fetch_add(1, Ordering::Relaxed);
                            }));
                        }
                        for t in tasks {
                            t.await.expect("task");
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(fired.load(Ordering::Relaxed), 1000);
    }
}
