//! `tapedeck replay` end to end: the real binary, real tapes, real HTTP servers on loopback.
//! One module per topic; tapes come from [`crate::util::write_tape`] and `synth`, command
//! lines from [`crate::util::Replay`].

mod pacing;
mod requests;
mod selection;
mod targets;
