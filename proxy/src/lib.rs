//! `tapedeck-proxy`: the recording sidecar proxy behind `tapedeck record`.
//!
//! A [pingora](https://github.com/cloudflare/pingora) reverse proxy that forwards every request
//! to one upstream unchanged (bodies streamed both ways) and, *after* the response has gone out,
//! hands a record of the exchange to the tape writer of `tapedeck-storage`.
//!
//! ```text
//!  client ──► pingora worker ──► upstream
//!               │ hooks clone Bytes chunks (≤ max-body), note timings
//!               ▼ logging phase (response already sent)
//!             build Exchange → Redactor → Batcher::push (mutex'd Vec; full → drop+count)
//!                                               ▼ forwarder thread, every ≤ 50 ms
//!                                 TapeSender::append (Drop policy) → spool (Arrow IPC)
//!                                                                  → seal (Parquet)
//! ```
//!
//! Modules: [`config`] (flags/TOML → checked [`Settings`]), [`proxy`] (the pingora hooks),
//! [`sample`] (filters and sampling),
//! [`batch`] (the hand-off to the writer), [`head_deadline`] (the whole-request-head timeout
//! against slowloris clients), [`upstream_tls`] (CA, client certificate, SNI for
//! `https://` upstreams), [`metrics`] and [`admin`] (`/metrics`, `/healthz`,
//! `/readyz`), [`recorder`] (start, run until a signal, seal).
//!
//! Invariants:
//! - **Fail-open**: nothing the recorder does can fail or slow a request. A full queue or a
//!   failing disk drops the record and counts it by reason (`/metrics`), and `/healthz` reports
//!   `degraded` with the reason; a tape that cannot be opened at start still lets traffic flow.
//!   `/metrics` and the exit summary read the same [`Counts`], so they always agree.
//! - **No secret reaches disk**: the redactor (`tapedeck_common::Redactor`) runs before the record
//!   enters the writer queue.
//! - **Capture from the upstream side**: status, headers and body are what the upstream sent
//!   (before pingora rewrites `Date`, `Connection` or chunking); request fields are what the
//!   client sent.
//! - **Bounded memory**: at most `max-body` bytes per direction are retained per exchange, as
//!   refcounted slices of the forwarded chunks; true sizes and a truncated flag are recorded.
//! - **Nothing lost on SIGTERM**: pingora stops accepting, in-flight exchanges finish within the
//!   grace period, then [`Recorder::run`] drains the hand-off and closes the writer, which spools
//!   and seals everything. `SIGKILL` loses at most the writer's flush interval plus one hand-off
//!   tick (≤ 50 ms).
//! - **Slow clients are bounded**: a whole request head must arrive within `header-timeout`
//!   (from accept, or from the request's first byte on a reused connection), else `408` and
//!   close ([`head_deadline`]); a request body may not pause longer than `header-timeout`; an
//!   idle keep-alive connection is closed after `idle-timeout`. Each cut is counted in
//!   `tapedeck_client_timeouts_total{phase}`.
//! - **Accounting**: every proxied request is counted once as recorded, skipped (filter, sample,
//!   recording off) or dropped (queue full, I/O, tape unavailable) in `/metrics`.
//!
//! Entry points: [`RawConfig`] (flags/TOML) → [`RawConfig::validate`] → [`Settings`] →
//! [`Recorder::run`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod batch;
pub mod config;
pub mod head_deadline;
pub mod metrics;
pub mod proxy;
pub mod recorder;
pub mod sample;
pub mod upstream_tls;

pub use config::{ConfigError, RawConfig, Settings};
pub use metrics::{Counts, Metrics};
pub use proxy::RecordingProxy;
pub use recorder::{RecordError, Recorder, RunSummary};
pub use sample::{Sampler, SamplerBuilder};
pub use upstream_tls::UpstreamTls;
