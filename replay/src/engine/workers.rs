//! The sending threads. Closed loop: each worker thread runs its own single-threaded tokio
//! runtime, owns its connections to every target ([`Pool`]) and its [`ResultSink`]; a request,
//! its connection's I/O and its result never leave the worker that sent it, so the send path
//! takes no cross-thread wake-up and no contended lock. Open loop: one work-stealing runtime
//! with that many threads and one set of pools, so that an origin due now is sent by whichever
//! thread is free, not queued behind a thread the OS has preempted (lateness is what open loop
//! is judged by).

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::results::{ResultSink, ResultTx, flush_every_tick};
use crate::conn::{Endpoint, Pool};
use crate::error::ReplayError;

/// One sending thread.
#[derive(Debug)]
pub(super) struct Worker {
    /// Spawns tasks on this worker's runtime.
    pub(super) handle: Handle,
    /// One per target, in target order.
    pub(super) pools: Arc<[Arc<Pool>]>,
    pub(super) results: Arc<ResultSink>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    flusher: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

/// All sending threads of a run.
#[derive(Debug)]
pub(super) struct Workers(Vec<Worker>);

impl Workers {
    /// Starts `n` sending threads: `n` single-threaded workers, or (`shared`) one work-stealing
    /// worker with `n` threads. `h2_conns`: HTTP/2 connections per target in all (spread over
    /// the workers, at least one each); `spare`: idle HTTP/1.1 connections each worker keeps
    /// ready per target (open loop; 0 for closed loop).
    pub(super) fn start(
        n: usize,
        shared: bool,
        endpoints: &[Arc<Endpoint>],
        h2_conns: usize,
        spare: usize,
        results: &ResultTx,
    ) -> Result<Self, ReplayError> {
        let n = n.max(1);
        let runtimes = if shared { 1 } else { n };
        let h2_per_worker = h2_conns.div_ceil(runtimes).max(1);
        let mut workers = Vec::with_capacity(runtimes);
        for i in 0..runtimes {
            let rt = if shared {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n)
                    .thread_name("replay-send")
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .map_err(|source| ReplayError::Start {
                what: "a sender runtime",
                source,
            })?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("replay-send-{i}"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime ends the connection tasks: connections close.
                    drop(rt);
                })
                .map_err(|source| ReplayError::Start {
                    what: "a sender thread",
                    source,
                })?;
            let pools: Arc<[Arc<Pool>]> = endpoints
                .iter()
                .map(|ep| Arc::new(Pool::new(ep.clone(), h2_per_worker, spare)))
                .collect();
            let sink = Arc::new(ResultSink::new(results.clone(), endpoints.len()));
            let (flush_stop, flush_rx) = oneshot::channel();
            let flusher = handle.spawn(flush_every_tick(sink.clone(), flush_rx));
            workers.push(Worker {
                handle,
                pools,
                results: sink,
                stop: Some(stop),
                thread: Some(thread),
                flusher: Some((flush_stop, flusher)),
            });
        }
        Ok(Self(workers))
    }

    /// Worker `i` (modulo their number).
    pub(super) fn get(&self, i: usize) -> &Worker {
        &self.0[i % self.0.len()]
    }

    /// Opens connections before the clock starts: what ALPN picks for each `https://` target is
    /// learnt first (on one connection, kept), then every worker opens its HTTP/2 connections
    /// and `h1_idle` idle HTTP/1.1 connections per target.
    pub(super) async fn warm(&self, h1_idle: usize) {
        let first = &self.0[0];
        let probe = first.pools.clone();
        let _ = first
            .handle
            .spawn(async move {
                for pool in probe.iter() {
                    if pool.ep.target.protocol == crate::config::Protocol::Https
                        && let Ok(conn) = pool.checkout().await
                    {
                        pool.checkin(conn);
                    }
                }
            })
            .await;
        let warming: Vec<_> = self
            .0
            .iter()
            .map(|w| {
                let pools = w.pools.clone();
                w.handle.spawn(async move {
                    futures_util::future::join_all(pools.iter().map(|p| p.warm(h1_idle))).await;
                })
            })
            .collect();
        for w in warming {
            let _ = w.await;
        }
    }

    /// Starts each pool's keeper of spare connections (open loop).
    pub(super) fn keep_spares(&self) {
        for w in &self.0 {
            for pool in w.pools.iter() {
                w.handle.spawn(pool.clone().keep_spares());
            }
        }
    }

    /// After every origin has pushed its results: hands over the last partial batches, closes
    /// the sinks (the results thread then ends) and stops the threads (closing connections).
    pub(super) async fn finish(mut self) -> Result<(), ReplayError> {
        for w in &mut self.0 {
            if let Some((stop, task)) = w.flusher.take() {
                let _ = stop.send(());
                let _ = task.await;
            }
            w.results.close().await;
        }
        for w in &mut self.0 {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = w.thread.take() {
                super::join(t, "a sender thread").await?;
            }
        }
        Ok(())
    }
}

impl Drop for Workers {
    /// A run that failed half-way still stops its threads.
    fn drop(&mut self) {
        for w in &mut self.0 {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}
