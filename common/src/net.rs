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

/// A port held for a listener that another library binds later (pingora binds inside its own
/// `run`): a socket bound with `SO_REUSEPORT` that never listens. Nobody else
/// can take the port while it is held (except a `SO_REUSEPORT` listener of the same user, which
/// is how the library's own listener joins it), it receives no connections, and so a listener
/// seen on the port afterwards is the library's, not a stranger's that took it first.
#[derive(Debug)]
pub struct PortHold {
    _socket: Socket,
    addr: SocketAddr,
}

impl PortHold {
    /// Binds `addr` (port 0: a free port) without listening.
    pub fn bind(what: &'static str, addr: SocketAddr) -> Result<PortHold, BindError> {
        let on = BindError::on(what, addr);
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(on)?;
        // Not `SO_REUSEADDR`: Linux lets two `SO_REUSEADDR` sockets share a port while neither
        // listens, so with it a stranger's listener could still take the port.
        s.set_reuse_port(true).map_err(on)?;
        s.bind(&addr.into()).map_err(on)?;
        let addr = s
            .local_addr()
            .map_err(on)?
            .as_socket()
            .ok_or_else(|| on(std::io::Error::other("not an IP socket")))?;
        Ok(PortHold { _socket: s, addr })
    }

    /// The held address, with the port the kernel chose for port 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a TCP listener is up on the held port (read from `/proc/net/tcp{,6}`; where that
    /// table does not exist, assumed up).
    pub fn listening(&self) -> bool {
        let tables = ["/proc/net/tcp", "/proc/net/tcp6"].map(std::fs::read_to_string);
        if tables.iter().all(Result::is_err) {
            return true;
        }
        tables
            .iter()
            .flatten()
            .any(|t| listens_on(t, self.addr.port()))
    }
}

/// Whether a `/proc/net/tcp`-format table has a socket in state LISTEN (`0A`) on local `port`.
fn listens_on(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace().skip(1);
        let local = cols.next().unwrap_or("");
        let state = cols.nth(1).unwrap_or("");
        state == "0A"
            && local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

/// A worker thread's runtime: current-thread, with I/O and tokio's timers.
pub fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// A worker thread's runtime without tokio's timer driver (its clock reads and wheel turns on
/// every park): for workers whose deadlines are all [`crate::timer`]s. Anything on it that
/// uses `tokio::time` panics.
pub fn io_worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    crate::timer::start()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
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
    let mut interval = crate::timer::Interval::new(tick.unwrap_or(Duration::from_secs(3600)));
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
            crate::timer::sleep(Duration::from_millis(100)).await;
        }
        _ => debug!(error = %e, "accept failed"),
    }
}

/// Descriptors a server's table holds from the start ([`reserve_fd_table`]): 16k (client and
/// upstream connections, tape files), ≈ 130 KiB of kernel memory; beyond it the kernel grows the
/// table as before.
pub const SERVER_FD_TABLE: usize = 16 * 1024;

/// Grows this process's file-descriptor table to hold `fds` descriptors now. The kernel grows
/// it on demand by doubling, and in a threaded process each growth waits for an RCU grace
/// period (`synchronize_rcu` in `expand_files`): 5–10 ms of the thread that opened the
/// descriptor — a worker accepting a connection, a sender opening one — while its other
/// connections wait. Servers and load generators call it once at start. Best effort, capped by
/// the soft `RLIMIT_NOFILE`; the table costs ≈ 8 bytes per descriptor.
pub fn reserve_fd_table(fds: usize) {
    use rustix::process::{Resource, getrlimit};
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let Ok(top) = i32::try_from((fds as u64).min(limit.saturating_sub(1))) else {
        return;
    };
    // A duplicate at the lowest free number ≥ `top` makes the table that large; both
    // descriptors are closed at once.
    if let Ok(f) = std::fs::File::open("/dev/null") {
        drop(rustix::io::fcntl_dupfd_cloexec(&f, top));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table size the kernel reports (`FDSize` in `/proc/self/status`).
    fn fd_table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("FDSize")
    }

    #[test]
    fn fd_table_is_grown_ahead() {
        use rustix::process::{Resource, getrlimit};
        let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        let want = 5000u64.min(limit - 1);
        reserve_fd_table(5000);
        let size = fd_table_size();
        assert!(size > want, "FDSize {size} ≤ {want}");
        // Beyond the limit: capped, no error.
        reserve_fd_table(usize::MAX);
    }

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
    fn a_held_port_is_refused_to_others_and_joined_by_a_reuseport_listener() {
        let hold = PortHold::bind("proxy", "127.0.0.1:0".parse().expect("addr")).expect("hold");
        let addr = hold.addr();
        assert_ne!(addr.port(), 0);
        assert!(!hold.listening(), "held, nobody listens yet");
        // A stranger's plain listener cannot take it, and nothing accepts connections there.
        assert!(TcpListener::bind(addr).is_err());
        assert!(std::net::TcpStream::connect(addr).is_err());
        // A reuseport listener (pingora's, in the recorder) joins it and is seen listening.
        let group = reuseport_listeners(addr, 1).expect("join the held port");
        assert!(hold.listening());
        drop(group);
        assert!(!hold.listening());
    }

    #[test]
    fn listens_on_reads_the_state_and_port_columns() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
            1: 0100007F:0050 0100007F:9C40 01 00000000:00000000\n";
        assert!(listens_on(table, 0x1F90));
        assert!(!listens_on(table, 0x0050), "established, not listening");
        assert!(!listens_on(table, 0x9C40), "a remote port");
        assert!(!listens_on("header only\n", 80));
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
