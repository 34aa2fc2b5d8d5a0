//! End-to-end tests: they run the real `tapedeck` binary against real servers on loopback.
//! One test binary; one module per area.
#![allow(unreachable_pub, clippy::unwrap_used)]

/// Runs a test written as `fn name(engine: Engine)` once per engine: `name::hyper` and
/// `name::pingora` (filter with `cargo test --test e2e pingora`).
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn hyper() {
                super::$name($crate::util::Engine::Hyper)
            }

            #[test]
            fn pingora() {
                super::$name($crate::util::Engine::Pingora)
            }
        }
    )*};
}

mod util;

mod bench;
mod check;
mod closed_stdout;
mod container;
mod corpus;
mod deploy;
mod deps;
mod diff;
mod distill;
mod early_stop;
mod engine;
mod faults;
mod fresh_machine;
mod har;
mod inspect;
mod mock;
mod objstore;
mod record;
mod replay;
mod security;
mod serve;
mod shards;
mod ticket;
