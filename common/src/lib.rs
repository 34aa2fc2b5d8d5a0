//! `tapedeck-common`: the building blocks every stage of tapedeck uses, one copy each.
//!
//! | module | what it owns | used by |
//! |---|---|---|
//! | [`coding`] | `Content-Encoding`: the one decoder (bounded) and encoder | proxy (redaction), diff, HAR export, ticket |
//! | [`redact`] | the [`Redactor`] trait, [`RuleRedactor`], and [`RedactRules`], the serde form of the rules shared by `record`'s flags and TOML, HAR import and tickets | proxy, CLI |
//! | [`tls`] | rustls set-up: reading and checking PEM files, root stores, client and server configurations | proxy, replay, ticket webhooks |
//! | [`parse`] | sizes (`1MiB`), durations (`250ms`), times (RFC 3339 or µs) | every flag and config key |
//! | [`format`](mod@format) | `1,234,567`, `1.5 KiB`, RFC 3339 | reports, summaries |
//! | [`timer`] | coarse timers (head, idle and upstream deadlines) served by one thread, without tokio's timer driver | proxy workers, `net::accept_until` |
//! | [`trace`] | trace ids from `traceparent` (or a chosen header), and new `traceparent` values | proxy (record), replay, mocks |
//! | [`tape_http`] | `http` types as tape fields: header lists (values copied once, into one buffer) and version strings | proxy (record), replay (results), mock (`--out`) |
//!
//! Invariants:
//! - A stored body always decodes with its stored `content-encoding` through [`coding::decode`]:
//!   the recorder re-encodes what it redacted with the same module the judge decodes with.
//! - Nothing here panics on outside data: damaged bodies, bad PEM files and malformed values are
//!   typed errors that say what was wrong and where.
//! - Every rustls configuration built here names its crypto provider (`ring`) explicitly, so a
//!   second provider linked in by another dependency cannot make set-up ambiguous.
#![forbid(unsafe_code)]

pub mod coding;
pub mod format;
pub mod har;
pub mod net;
pub mod parse;
pub mod redact;
pub mod stop;
pub mod tape_http;
pub mod timer;
pub mod tls;
pub mod trace;

pub use redact::{
    JsonPath, RedactMode, RedactRules, Redactor, RedactorBuilder, RuleError, RuleRedactor,
};
