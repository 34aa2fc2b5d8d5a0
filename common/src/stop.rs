//! [`Stopper`]: tells every connection of a server to finish gracefully.
//!
//! A shutdown must reach connections that sit idle in a read. A `tokio::sync::watch` would do,
//! but every poll of a waiting `changed()` takes the watch's lock, shared by every connection.
//! Instead a `Stopper` keeps each connection's waker (registered once, at its first poll: a
//! task's waker stays the same) and a flag: a poll costs one load, and [`Stopper::stop`] wakes
//! every registered connection once. A connection registers, then checks [`Stopper::stopping`],
//! so a stop that comes between the two is never missed. The recorder's hyper data plane and the
//! dependency mock both drive their connections with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;

/// Tells connections to finish gracefully.
#[derive(Debug, Default)]
pub struct Stopper {
    stopping: AtomicBool,
    next: AtomicU64,
    wakers: Mutex<HashMap<u64, Waker>>,
}

impl Stopper {
    /// Whether a graceful stop was asked for.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Asks every connection to finish: the ones registered are woken (once).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let wakers: Vec<Waker> = match self.wakers.lock() {
            Ok(mut w) => w.drain().map(|(_, w)| w).collect(),
            Err(_) => Vec::new(),
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Registers a connection's waker; the key unregisters it when the connection ends.
    pub fn register(&self, waker: &Waker) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.wakers.lock() {
            w.insert(key, waker.clone());
        }
        key
    }

    /// Forgets a connection's waker.
    pub fn unregister(&self, key: u64) {
        if let Ok(mut w) = self.wakers.lock() {
            w.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn stop_wakes_each_registered_connection_once() {
        let s = Stopper::default();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let ka = s.register(&Waker::from(a.clone()));
        let kb = s.register(&Waker::from(b.clone()));
        assert_ne!(ka, kb);
        s.unregister(kb);
        assert!(!s.stopping());
        s.stop();
        assert!(s.stopping());
        s.stop();
        assert_eq!(a.0.load(Ordering::Relaxed), 1, "woken once");
        assert_eq!(b.0.load(Ordering::Relaxed), 0, "unregistered");
    }
}
