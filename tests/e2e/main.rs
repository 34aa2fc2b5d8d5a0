//! End-to-end tests: they run the real `tapedeck` binary against real servers on loopback.
//! One test binary; one module per area.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod util;

mod check;
mod diff;
mod inspect;
mod record;
mod replay;
mod serve;
mod ticket;
