//! Listening sockets and the accept loop for servers with one current-thread runtime per worker
//! thread (the recorder's hyper data plane, the dependency mock).

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

/// A listener could not be bound (the address is taken, or not ours to bind). The recorder, the
/// mock and their tests read the message: it starts with `cannot listen on`.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    /// Which listener: `proxy`, `mock`, `admin`.
    pub what: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl BindError {
    /// A `map_err` for binding `what` on `addr`.
    pub fn on(what: &'static str, addr: SocketAddr) -> impl Fn(std::io::Error) -> BindError + Copy {
        move |source| BindError { what, addr, source }
    }
}

/// Pending connections each listener queues.
pub const BACKLOG: i32 = 1024;

/// `n` (at least one) non-blocking listeners on `addr` with `SO_REUSEPORT`: the kernel spreads
/// new connections over them, and each worker accepts on its own (no shared accept queue, no
/// thundering herd). With port 0 every listener takes the port the first one got.
pub fn reuseport_listeners(addr: SocketAddr, n: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(n.max(1));
    let mut at = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&at.into())?;
        s.listen(BACKLOG)?;
        let l: TcpListener = s.into();
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// A worker thread's runtime: current-thread, with I/O and timers.
pub fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// Accepts on `listener` until `stop` completes, handing each connection to `on_conn` (which
/// spawns its task). With `tick`, `on_tick` runs that often in between (a worker's batched
/// hand-offs); missed ticks are delayed, not bunched. `stop` is polled first, so a stop is never
/// starved by a stream of connections.
pub async fn accept_until(
    listener: &tokio::net::TcpListener,
    stop: impl Future<Output = ()>,
    tick: Option<Duration>,
    mut on_tick: impl FnMut(),
    mut on_conn: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    tokio::pin!(stop);
    // A disabled tick still needs a value for `select!`; its branch is never polled.
    let mut interval = tokio::time::interval(tick.unwrap_or(Duration::from_secs(3600)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => on_conn(tcp, peer),
                Err(e) => accept_failed(e).await,
            },
            _ = interval.tick(), if tick.is_some() => on_tick(),
        }
    }
}

/// An accept that failed: a connection that went away is routine; running out of file
/// descriptors waits a little (the loop would spin otherwise).
async fn accept_failed(e: std::io::Error) {
    match e.raw_os_error() {
        Some(23 | 24) => {
            // ENFILE, EMFILE
            warn!(error = %e, "cannot accept: out of file descriptors; retrying in 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        _ => debug!(error = %e, "accept failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port_and_refuses_a_taken_one() {
        let group = reuseport_listeners("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        assert_eq!(group.len(), 3);
        let port = group[0].local_addr().expect("addr").port();
        assert!(
            group
                .iter()
                .all(|l| l.local_addr().expect("addr").port() == port)
        );
        // A plain listener (no SO_REUSEPORT) on a port of its own blocks a group there.
        let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = plain.local_addr().expect("addr");
        assert!(reuseport_listeners(taken, 2).is_err());
    }

    #[test]
    fn the_accept_loop_hands_over_connections_ticks_and_stops() {
        use std::cell::Cell;
        let rt = worker_runtime().expect("runtime");
        let std = reuseport_listeners("127.0.0.1:0".parse().expect("addr"), 1)
            .expect("bind")
            .remove(0);
        let addr = std.local_addr().expect("addr");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(std).expect("listener");
            let (ticks, peers) = (Cell::new(0u32), Cell::new(0u32));
            let client = tokio::spawn(async move {
                let mut held = Vec::new();
                for _ in 0..3 {
                    held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
                }
                held
            });
            // Stops once every connection came through and the tick fired twice (bounded by
            // the timeout below).
            let stop = async {
                while peers.get() < 3 || ticks.get() < 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            let looped = tokio::time::timeout(
                Duration::from_secs(30),
                accept_until(
                    &listener,
                    stop,
                    Some(Duration::from_millis(1)),
                    || ticks.set(ticks.get() + 1),
                    |_tcp, _peer| peers.set(peers.get() + 1),
                ),
            )
            .await;
            assert!(looped.is_ok(), "the loop ends once stop completes");
            assert_eq!(peers.get(), 3);
            drop(client.await.expect("client"));
        });
    }
}
