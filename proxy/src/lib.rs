//! `tapedeck-proxy`: the recording sidecar proxy behind `tapedeck record`.
//!
//! A reverse proxy that forwards every request to one upstream unchanged (bodies streamed both
//! ways) and, *after* the response has gone out, hands a record of the exchange to the tape
//! writer of `tapedeck-storage`.
//!
//! ```text
//!  client ──► engine (I/O only: hyper by default, or pingora) ──► upstream
//!               │ capture layer: decide (filters, sampling), clone Bytes chunks (≤ max-body),
//!               │ note timings, copy headers once
//!               ▼ response sent (or failed)
//!             build Exchange → Redactor → per-thread batch (≤ 64 records, ≤ its byte share)
//!                                               ▼ full, or the worker's tick (≤ 50 ms)
//!                     TapeSender::append_batch (Drop policy; queue bounded in records and
//!                     bytes) → spool thread (Arrow IPC) → seal threads (Parquet, nice 19
//!                     below seal-backlog)
//! ```
//!
//! Modules: `config` (flags/TOML → checked [`Settings`]), `capture` (the engine-agnostic
//! capture layer: decision, body capture, record building, redaction, hand-off, accounting),
//! `engine::hyper` and `engine::pingora` (the data planes), `sample` (filters and sampling),
//! `upstream_tls` (CA, client certificate, SNI for `https://` upstreams), `metrics` and `admin`
//! (`/metrics`, `/healthz`, `/readyz`), `recorder` (start, run until a signal, seal).
//!
//! Invariants:
//! - **Fail-open**: nothing the recorder does can fail or slow a request. A full queue or a
//!   failing disk drops the record and counts it by reason (`/metrics`), and `/healthz` reports
//!   `degraded` with the reason; a tape that cannot be opened at start still lets traffic flow.
//! - **No secret reaches disk**: the redactor (`tapedeck_common::Redactor`) runs before the
//!   record enters the writer's hand-off.
//! - **Capture from the upstream side**: status, headers and body are what the upstream sent;
//!   request fields are what the client sent. Headers are forwarded unchanged in both directions
//!   except hop-by-hop ones; the proxy adds none to forwarded responses (no `date`, `server`,
//!   `connection`).
//! - **Bounded memory**: at most `max-body` bytes per direction are retained per exchange, as
//!   refcounted slices of the forwarded chunks; true sizes and a truncated flag are recorded;
//!   records waiting for the writer (each worker's batch and the writer's queue together) hold
//!   at most `queue-bytes` bytes, and the writer's queue at most `queue-capacity` records.
//! - **Nothing lost on SIGTERM**: the engine stops accepting, in-flight exchanges finish within
//!   the grace period, every worker hands its batch over, then [`Recorder::run`] closes the
//!   writer, which spools and seals everything. `SIGKILL` loses at most the writer's flush
//!   interval plus one worker tick (≤ 50 ms).
//! - **Slow clients are bounded**: a whole request head must arrive within `header-timeout`
//!   (from accept, or from the request's first byte on a reused connection), else `408` and
//!   close; a request body may not pause longer than `header-timeout`; an idle keep-alive
//!   connection is closed after `idle-timeout`. Each cut is counted in
//!   `tapedeck_client_timeouts_total{phase}`.
//! - **Accounting**: every proxied request has one [`Fate`], counted once: recorded (accepted by
//!   the writer's queue), skipped (filter, sample, recording off) or dropped (queue full or
//!   closed, counted per record by the writer; tape unavailable; the writer counts its own I/O
//!   drops). `/metrics` and the exit summary read the same [`Counts`].
//!
//! Entry points: [`RawConfig`] (flags/TOML) → [`RawConfig::validate`] → [`Settings`] →
//! [`Recorder::run`] → [`RunSummary`].
#![forbid(unsafe_code)]

mod admin;
mod capture;
mod config;
mod engine;
mod metrics;
mod recorder;
mod sample;
mod upstream_tls;

pub use capture::MAX_REQUEST_HEAD;
pub use config::{ConfigError, NumOrText, RawConfig, Settings, TlsFiles, TomlError, Upstream};
pub use engine::Engine;
pub use metrics::{Counts, DropReason, Fate, LATENCY_BUCKETS, Metrics, SkipReason};
pub use recorder::{RecordError, Recorder, RunSummary};
pub use sample::{Sampler, SamplerBuilder, Skip};
pub use tapedeck_common::Redactor;
pub use upstream_tls::{UpstreamTls, UpstreamTlsKeys};
