//! The end-to-end test kit: the real `tapedeck` binary, real HTTP servers on loopback ports
//! picked at run time, bounded waits. Every process started here is killed by PID on drop.
//!
//! A test builds what it runs from parts, the way linkerd's integration kit builds
//! `proxy::new().inbound(srv).run()`:
//!
//! ```ignore
//! let up = TestServer::start(|_| Reply::json("{}"));
//! let rec = Recorder::builder(&up.url()).tape(&tape).engine(engine).start(logs);  // running
//! let v = Replay::new(&tape).out(&run).target("a", &a.url()).max().summary();      // --json
//! let check = Check::new(&tape, &v1.url(), &v2.url()).rules(&rules).report(&report);
//! assert_exit(&check.run(), 1, "the renamed field");
//! assert_eq!(check.verdict()["verdict"], "fail");
//! ```
//!
//! - [`process`]: [`run`], [`Cli`] (any subcommand), [`Proc`], [`wait_until`], [`free_port`],
//!   [`curl`], [`assert_exit`], [`read_json`], [`verdict`].
//! - [`server`]: [`TestServer`] (HTTP/1.1, h2c, TLS), [`Reply`], [`Received`], [`SampleApi`].
//! - [`certs`]: a test CA and certificates made with `openssl`.
//! - [`tape`]: tapes written, synthesized ([`synth`], [`demo`]) and read back.
//! - [`recorder`], [`replay`], [`check`], [`diff`]: the builders of the four pipelines.
#![allow(dead_code)]

pub mod certs;
pub mod check;
pub mod diff;
pub mod process;
pub mod recorder;
pub mod replay;
pub mod server;
pub mod tape;

pub use certs::{make_certs, make_signed_cert};
pub use check::Check;
pub use diff::Diff;
pub use process::{
    Cli, Proc, assert_exit, curl, free_port, json_stdout, read_json, rt, run, run_command, stderr,
    stdout, tapedeck, verdict, wait_for_port, wait_until,
};
pub(crate) use process::{cli_methods, report_methods};
pub use recorder::{Engine, Recorder, RecorderBuilder};
pub use replay::Replay;
pub use server::{Received, Reply, SampleApi, TLS_SNI_HEADER, TestServer, TlsFiles};
pub use tape::{demo, files_under, get, read_in_order, read_tape, synth, write_tape};
