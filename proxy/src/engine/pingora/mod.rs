//! The pingora engine (`--engine pingora`): pingora 0.9's `ProxyHttp` ([`proxy`]) behind the
//! whole-request-head deadline ([`head_deadline`]), started from a plain thread with
//! `Server::new_with_opt_and_conf` and `run()` (never `run_forever`, which exits the process),
//! with per-instance pid and upgrade-socket paths, so that the recorder regains control after a
//! signal and seals the tape.

pub(crate) mod head_deadline;
pub(crate) mod proxy;

use std::sync::{Arc, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::TcpSocketOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::HttpPeer;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{
    RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch,
};
use pingora::services::listening::Service;
use pingora::utils::tls::{CertKey, WrappedX509, parse_x509};

use crate::capture::Capture;
use crate::config::Settings;
use crate::engine::Readiness;
use crate::engine::head_deadline::HeadLimits;
use crate::recorder::RecordError;
use crate::upstream_tls::UpstreamTls;
use head_deadline::HeadDeadline;
use proxy::{ProxyParts, RecordingProxy};
use tapedeck_common::net::PortHold;

/// Runs the proxy until a signal: `SIGTERM` (graceful: stop accepting, finish in-flight
/// exchanges for the grace period), `SIGINT` (fast). Blocks the calling thread; pingora builds
/// its own runtimes, so call it from a plain thread, not from async code.
pub(crate) fn run(
    s: &Settings,
    capture: Arc<Capture>,
    readiness: Arc<Readiness>,
) -> Result<(), RecordError> {
    let metrics = capture.metrics().clone();
    // Settings refuse forward-proxy mode (the only one without an upstream) for pingora.
    let Some(upstream) = s.upstream.clone() else {
        return Err(RecordError::Start {
            what: "the pingora engine",
            source: std::io::Error::other("it has no forward-proxy mode: use --engine hyper"),
        });
    };
    let proxy = RecordingProxy::new(ProxyParts {
        upstream,
        upstream_verify: s.upstream_verify,
        upstream_h2c: s.upstream_h2c,
        connect_timeout: s.connect_timeout,
        upstream_timeout: s.upstream_timeout,
        read_timeout: s.header_timeout,
        idle_timeout: s.idle_timeout,
        capture,
    });

    let run_dir = std::env::temp_dir();
    let pid = std::process::id();
    let conf = ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(2),
        pid_file: run_dir
            .join(format!("tapedeck-record-{pid}.pid"))
            .to_string_lossy()
            .into_owned(),
        upgrade_sock: run_dir
            .join(format!("tapedeck-record-{pid}.sock"))
            .to_string_lossy()
            .into_owned(),
        max_retries: 2,
        work_stealing: std::env::var_os("TAPEDECK_WORK_STEALING").is_some(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut opts = HttpServerOptions::default();
    opts.h2c = s.h2c;
    opts.h2_idle_timeout = Some(s.idle_timeout);
    // pingora's HttpProxy, run behind the whole-request-head deadline (slowloris).
    let mut app = HttpProxy::new(proxy, server.configuration.clone());
    app.server_options = Some(opts);
    app.handle_init_modules();
    let app = HeadDeadline::new(
        app,
        HeadLimits {
            header_timeout: s.header_timeout,
            // pingora ends idle keep-alive connections itself (`logging` sets its keep-alive
            // timeout to idle-timeout): a second timer here would race it.
            idle_timeout: None,
            metrics,
        },
    );
    let mut svc = Service::new("tapedeck record".to_owned(), app);
    // pingora binds inside `run`, retrying a taken port for a while instead of failing. Hold the
    // port first: a taken one is refused here with the usual `cannot listen on`, nobody takes
    // it meanwhile, and pingora's listener joins the hold with `SO_REUSEPORT`.
    let hold = PortHold::bind("proxy", s.listen)?;
    let listen = hold.addr().to_string();
    let mut sock = TcpSocketOptions::default();
    sock.so_reuseport = Some(true);
    match &s.tls {
        None => svc.add_tcp_with_settings(&listen, sock),
        Some(t) => {
            let tls_err = |message: String| RecordError::Tls {
                cert: t.cert.clone(),
                key: t.key.clone(),
                message,
            };
            let mut tls =
                TlsSettings::intermediate(&t.cert.to_string_lossy(), &t.key.to_string_lossy())
                    .map_err(|e| tls_err(e.to_string()))?;
            tls.enable_h2();
            svc.add_tls_with_settings(&listen, Some(sock), tls);
        }
    }
    server.add_service(svc);
    readiness.expect(1);
    let (ran, run_ended) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        // Ready once pingora's listener is up on the held port, until `run` returns (or a
        // signal arrives, see `NotReadyOnSignal`).
        let (hold, readiness) = (&hold, &readiness);
        scope.spawn(move || {
            if wait_listening(hold, &run_ended) {
                let _accepting = readiness.accepting();
                let _ = run_ended.recv();
            }
        });
        server.run(RunArgs {
            shutdown_signal: Box::new(NotReadyOnSignal(readiness.clone())),
        });
        drop(ran);
    });
    Ok(())
}

/// Waits until a listener is up on the held port (true), or `run` returned first (false).
fn wait_listening(hold: &PortHold, run_ended: &mpsc::Receiver<()>) -> bool {
    loop {
        if hold.listening() {
            return true;
        }
        match run_ended.recv_timeout(Duration::from_millis(5)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// pingora's own signal handling, which also turns `/readyz` off when a signal arrives.
struct NotReadyOnSignal(Arc<Readiness>);

#[async_trait]
impl ShutdownSignalWatch for NotReadyOnSignal {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        self.0.stopping();
        signal
    }
}

/// Sets the peer's server name, trust, client certificate and verification. Runs once, when the
/// proxy is built; per request the peer is cloned (`Arc`s).
pub(crate) fn apply_tls(tls: &UpstreamTls, peer: &mut HttpPeer) {
    if let Some(sni) = &tls.sni {
        peer.sni = sni.clone();
    }
    if let Some(ca) = &tls.ca {
        let certs: Vec<WrappedX509> = ca
            .iter()
            .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
            .collect();
        peer.options.ca = Some(Arc::from(certs));
    }
    if let Some(c) = &tls.client_cert {
        let chain = c.chain().iter().map(|der| der.to_vec()).collect();
        peer.client_cert_key = Some(Arc::new(CertKey::new(chain, c.key().secret_der().to_vec())));
    }
    peer.options.verify_cert = !tls.insecure;
    peer.options.verify_hostname = !tls.insecure;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream_tls::UpstreamTlsKeys;

    #[test]
    fn upstream_tls_reaches_the_peer() {
        let ok = UpstreamTlsKeys {
            sni: Some("api.internal".into()),
            ..Default::default()
        }
        .load(true)
        .expect("ok");
        let mut peer = HttpPeer::new("127.0.0.1:1", true, "127.0.0.1".into());
        apply_tls(&ok, &mut peer);
        assert_eq!(peer.sni, "api.internal");
        assert!(peer.options.verify_cert);
    }
}
