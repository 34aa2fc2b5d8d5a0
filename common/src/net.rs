//! Listening sockets for servers with one accept loop per worker thread (the recorder's hyper
//! data plane, the dependency mock).

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

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
}
