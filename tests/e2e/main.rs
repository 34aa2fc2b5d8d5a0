//! End-to-end tests: they run the real `tapedeck` binary against real servers on loopback.
//! One test binary; one module per area.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod util;

mod bench;
mod check;
mod closed_stdout;
mod container;
mod deploy;
mod diff;
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
