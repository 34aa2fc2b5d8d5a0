//! The data planes: the I/O that moves requests and responses between clients and the upstream.
//! Each engine calls the [capture layer](crate::capture) for everything else.
//!
//! - [`hyper`] (default): one `current_thread` tokio runtime per worker thread, each with its
//!   own `SO_REUSEPORT` listener and accept loop; hyper 1.x connections on both sides; an
//!   upstream HTTP/1.1 connection owned by each client connection, one shared HTTP/2 upstream
//!   connection per worker.
//! - [`pingora`]: Cloudflare's pingora 0.9 `ProxyHttp`. Selected with `--engine pingora`.
//!
//! Both run every accepted client stream through [`head_deadline`]: the whole-request-head
//! deadline (slowloris: 408 and close) and, for hyper, the keep-alive idle timeout.

pub(crate) mod head_deadline;
pub(crate) mod hyper;
pub(crate) mod pingora;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Which data plane proxies the traffic (`engine` key, `--engine` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// hyper 1.x on per-thread tokio runtimes (the default).
    #[default]
    Hyper,
    /// pingora 0.9.
    Pingora,
}

impl Engine {
    /// Every engine, by its name in the configuration.
    pub const ALL: [(&'static str, Engine); 2] =
        [("hyper", Engine::Hyper), ("pingora", Engine::Pingora)];

    /// The engine called `name`.
    pub fn parse(name: &str) -> Option<Engine> {
        Engine::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, e)| *e)
    }

    /// The engine's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Hyper => "hyper",
            Engine::Pingora => "pingora",
        }
    }

    /// How many records a worker thread gathers before it pushes them to the writer's hand-off:
    /// the hyper engine owns its threads and flushes them on a tick; pingora's threads are not
    /// ours, so each record is pushed at once.
    pub(crate) fn handoff_batch(self) -> usize {
        match self {
            Engine::Hyper => 64,
            Engine::Pingora => 1,
        }
    }
}

/// Whether the proxy listeners are accepting: what `/readyz` answers. Ready once every listener
/// has its accept loop running, and no longer from the moment shutdown begins or any accept
/// loop ends.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    /// Accept loops running.
    accepting: AtomicUsize,
    /// Accept loops there should be.
    expected: AtomicUsize,
    /// An accept loop ended (it never comes back).
    lost: AtomicBool,
    /// Shutdown began.
    stopping: AtomicBool,
}

impl Readiness {
    /// Whether every listener is accepting and no shutdown has begun.
    pub(crate) fn ready(&self) -> bool {
        let expected = self.expected.load(Ordering::Acquire);
        expected > 0
            && self.accepting.load(Ordering::Acquire) == expected
            && !self.lost.load(Ordering::Acquire)
            && !self.stopping.load(Ordering::Acquire)
    }

    /// `n` accept loops are about to start.
    pub(crate) fn expect(&self, n: usize) {
        self.expected.store(n, Ordering::Release);
    }

    /// An accept loop is running; it stops counting when the guard drops.
    pub(crate) fn accepting(&self) -> AcceptGuard<'_> {
        self.accepting.fetch_add(1, Ordering::AcqRel);
        AcceptGuard(self)
    }

    /// Shutdown began: not ready any more.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether shutdown began.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// A running accept loop, for [`Readiness`].
#[derive(Debug)]
pub(crate) struct AcceptGuard<'a>(&'a Readiness);

impl Drop for AcceptGuard<'_> {
    fn drop(&mut self) {
        self.0.accepting.fetch_sub(1, Ordering::AcqRel);
        if !self.0.stopping.load(Ordering::Acquire) {
            self.0.lost.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_every_listener_accepts() {
        let r = Readiness::default();
        assert!(!r.ready(), "nothing bound yet");
        r.expect(2);
        let a = r.accepting();
        assert!(!r.ready(), "one of two listeners");
        let b = r.accepting();
        assert!(r.ready());
        drop(a);
        assert!(!r.ready(), "an accept loop died");
        let _a = r.accepting();
        assert!(!r.ready(), "a lost listener does not come back");
        let r = Readiness::default();
        r.expect(1);
        let g = r.accepting();
        assert!(r.ready());
        r.stopping();
        assert!(!r.ready(), "shutting down");
        drop(g);
        drop(b);
        assert_eq!(Engine::parse("Hyper"), Some(Engine::Hyper));
        assert_eq!(Engine::parse("pingora"), Some(Engine::Pingora));
        assert_eq!(Engine::parse("nginx"), None);
    }
}
