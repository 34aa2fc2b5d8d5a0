//! TLS on both sides: terminating client TLS, https upstreams with a private CA, SNI and
//! mutual TLS, and bad TLS files or values refused at start naming the flag and the file.

use std::process::Command;

use tapedeck_storage::ErrorKind;

use super::{STOP, logs, p, upstream_handler};
use crate::util::{
    Engine, Recorder, TLS_SNI_HEADER, TestServer, TlsFiles, curl, free_port, make_certs,
    make_signed_cert, run, stderr,
};

fn tls_termination_and_https_upstream(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => panic!("openssl could not make a test certificate: {other:?}"),
    }
    let up = TestServer::start(upstream_handler);
    let logs_a = dir.path().join("a");
    let logs_b = dir.path().join("b");
    std::fs::create_dir_all(&logs_a).expect("mkdir");
    std::fs::create_dir_all(&logs_b).expect("mkdir");
    // A terminates TLS in front of the plaintext upstream.
    let a = Recorder::builder(&up.url())
        .tape(&dir.path().join("tape-a"))
        .args(&[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ])
        .engine(engine)
        .start(&logs_a);
    let (status, body) = curl(&["-k", &format!("https://127.0.0.1:{}/secure", a.port)]);
    assert_eq!((status, body.as_str()), (200, "{\"path\":\"/secure\"}"));
    // B forwards plaintext clients to A over TLS.
    let b = Recorder::builder(&format!("https://localhost:{}", a.port))
        .tape(&dir.path().join("tape-b"))
        .args(&["--insecure-upstream"])
        .engine(engine)
        .start(&logs_b);
    let (status, body) = curl(&[&b.url("/via-b")]);
    assert_eq!((status, body.as_str()), (200, "{\"path\":\"/via-b\"}"));
    let tape_b = b.stop();
    let tape_a = a.stop();
    assert_eq!(tape_b.len(), 1);
    assert_eq!(tape_b[0].status, Some(200));
    assert_eq!(tape_b[0].scheme, "http");
    assert_eq!(tape_a.len(), 2);
    assert!(
        tape_a
            .iter()
            .all(|e| e.scheme == "https" && e.status == Some(200))
    );
    // B reached A over TLS and negotiated HTTP/2 by ALPN; curl spoke HTTP/1.1 to B.
    let via_b = tape_a.iter().find(|e| e.path == "/via-b").expect("via b");
    assert_eq!(via_b.http_version, "HTTP/2");
    assert_eq!(tape_b[0].http_version, "HTTP/1.1");
}

/// An https:// upstream whose certificate chains to a CA made at test time: without
/// `--upstream-ca` (system roots only) the client gets 502 and a `tls` error exchange is
/// recorded; with it, 200 and the exchange, and the upstream is reached over HTTP/2 by ALPN.
fn https_upstream_with_a_private_ca(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let up = TestServer::start_tls(&TlsFiles::leaf(dir.path()), upstream_handler);
    let ca = dir.path().join("ca.pem");

    let a = Recorder::builder(&up.https_url())
        .tape(&dir.path().join("tape-a"))
        .engine(engine)
        .start(&logs(dir.path(), "a"));
    let (status, _) = curl(&[&a.url("/untrusted")]);
    assert_eq!(status, 502);
    let tape = a.stop();
    assert_eq!(tape.len(), 1, "{tape:?}");
    assert_eq!(tape[0].path, "/untrusted");
    assert_eq!(tape[0].error_kind, Some(ErrorKind::Tls), "{:?}", tape[0]);
    assert_eq!(tape[0].status, None);
    assert!(up.requests().is_empty(), "no request got through");

    let b = Recorder::builder(&up.https_url())
        .tape(&dir.path().join("tape-b"))
        .args(&["--upstream-ca", p(&ca)])
        .engine(engine)
        .start(&logs(dir.path(), "b"));
    let (status, body) = curl(&[&b.url("/trusted?x=1")]);
    assert_eq!((status, body.as_str()), (200, "{\"path\":\"/trusted\"}"));
    let tape = b.stop();
    assert_eq!(tape.len(), 1, "{tape:?}");
    let ex = &tape[0];
    assert_eq!((ex.status, ex.error_kind), (Some(200), None));
    assert_eq!(
        (ex.path.as_str(), ex.query.as_deref()),
        ("/trusted", Some("x=1"))
    );
    assert_eq!(&ex.resp_body[..], b"{\"path\":\"/trusted\"}");
    let got = up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].version, "HTTP/2.0", "ALPN picked h2");
}

/// `--upstream-sni` picks the name sent and verified; an upstream that requires a client
/// certificate refuses the proxy without `--upstream-client-cert` and accepts it with one.
fn https_upstream_sni_and_mutual_tls(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    make_signed_cert(dir.path(), "named", "api.internal", "DNS:api.internal");
    make_signed_cert(
        dir.path(),
        "client",
        "tapedeck client",
        "DNS:client.internal",
    );
    let d = dir.path();
    let up = TestServer::start_tls(
        &TlsFiles {
            cert: d.join("named.pem"),
            key: d.join("named.key"),
            client_ca: Some(d.join("ca.pem")),
            alpn: vec![b"http/1.1".to_vec()],
        },
        upstream_handler,
    );
    let (ca, cert, key) = (d.join("ca.pem"), d.join("client.pem"), d.join("client.key"));
    let start = |name: &str, extra: &[&str]| {
        let mut args = vec!["--upstream-ca", p(&ca)];
        args.extend_from_slice(extra);
        Recorder::builder(&up.https_url())
            .tape(&d.join(format!("tape-{name}")))
            .args(&args)
            .engine(engine)
            .start(&logs(d, name))
    };

    // The certificate is for api.internal, not 127.0.0.1: the name check fails without SNI.
    let r = start(
        "no-sni",
        &[
            "--upstream-client-cert",
            p(&cert),
            "--upstream-client-key",
            p(&key),
        ],
    );
    assert_eq!(curl(&[&r.url("/no-sni")]).0, 502);
    let tape = r.stop();
    assert_eq!(tape.len(), 1);
    assert_eq!(tape[0].error_kind, Some(ErrorKind::Tls), "{:?}", tape[0]);

    // The right name, but no client certificate: the upstream refuses the connection.
    let r = start("no-cert", &["--upstream-sni", "api.internal"]);
    assert_eq!(curl(&[&r.url("/no-cert")]).0, 502);
    let tape = r.stop();
    assert_eq!(tape.len(), 1);
    assert!(tape[0].error_kind.is_some(), "{:?}", tape[0]);
    assert_eq!(tape[0].status, None);
    assert!(up.requests().is_empty(), "{:?}", up.requests());

    // The right name and a client certificate signed by the CA the upstream trusts.
    let r = start(
        "mtls",
        &[
            "--upstream-sni",
            "api.internal",
            "--upstream-client-cert",
            p(&cert),
            "--upstream-client-key",
            p(&key),
        ],
    );
    let (status, body) = curl(&[&r.url("/mtls")]);
    assert_eq!((status, body.as_str()), (200, "{\"path\":\"/mtls\"}"));
    let tape = r.stop();
    assert_eq!(tape.len(), 1);
    assert_eq!((tape[0].status, tape[0].error_kind), (Some(200), None));
    let got = up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header(TLS_SNI_HEADER).as_deref(),
        Some("api.internal")
    );
}

/// Bad TLS files and values stop the recorder at start-up with exit code 2 and a message
/// naming the key.
#[test]
fn upstream_tls_config_errors_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    make_signed_cert(
        dir.path(),
        "client",
        "tapedeck client",
        "DNS:client.internal",
    );
    let d = dir.path();
    let tape = d.join("tape");
    let not_pem = d.join("leaf.ext");
    let (missing, ca) = (d.join("missing.pem"), d.join("ca.pem"));
    let (client, wrong_key) = (d.join("client.pem"), d.join("leaf.key"));
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--upstream-ca", p(&missing)],
            "upstream-ca",
            "missing.pem",
        ),
        (
            vec!["--upstream-ca", p(&not_pem)],
            "upstream-ca",
            "no PEM certificate",
        ),
        (
            vec!["--upstream-client-cert", p(&client)],
            "upstream-client-key",
            "required",
        ),
        (
            // A key that is not the certificate's.
            vec![
                "--upstream-client-cert",
                p(&client),
                "--upstream-client-key",
                p(&wrong_key),
            ],
            "upstream-client-key",
            "does not go with",
        ),
        (
            vec!["--upstream-sni", "not a name"],
            "upstream-sni",
            "server name",
        ),
        (
            vec!["--upstream-insecure", "--upstream-ca", p(&ca)],
            "upstream-insecure",
            "upstream-ca",
        ),
    ];
    for (extra, key, words) in cases {
        let mut args = vec![
            "record",
            "--upstream",
            "https://127.0.0.1:1",
            "--tape",
            p(&tape),
            "--admin",
            "off",
        ];
        args.extend_from_slice(&extra);
        let out = run(&args, STOP);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(key) && err.contains(words), "{extra:?}: {err}");
    }
    // TLS keys next to an http:// upstream would do nothing: refused.
    let out = run(
        &[
            "record",
            "--upstream",
            "http://127.0.0.1:1",
            "--tape",
            p(&tape),
            "--upstream-sni",
            "api.internal",
        ],
        STOP,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));
    assert!(!tape.exists(), "no tape is made by a refused configuration");
}

/// Issue 17, item 3: a bad listener certificate or key used to leave a dead proxy (pingora
/// panicked in its listener thread while the process and `/healthz` lived on). Every listener
/// file is read and checked at start: exit 2 naming the flag and the file, nothing listening.
#[test]
fn bad_listener_tls_files_are_refused_at_start_naming_the_flag_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    make_signed_cert(dir.path(), "other", "other", "DNS:other.internal");
    let d = dir.path();
    let (leaf, leaf_key, other_key) = (d.join("leaf.pem"), d.join("leaf.key"), d.join("other.key"));
    let (missing, junk) = (d.join("missing.pem"), d.join("junk.pem"));
    std::fs::write(&junk, "this is not PEM\n").expect("write junk");
    let cases: Vec<(&std::path::Path, &std::path::Path, &str, &str)> = vec![
        // A key that belongs to another certificate.
        (&leaf, &other_key, "tls-key", "other.key"),
        (&missing, &leaf_key, "tls-cert", "missing.pem"),
        (&leaf, &missing, "tls-key", "missing.pem"),
        (&junk, &leaf_key, "tls-cert", "junk.pem"),
        // The certificate given as the key.
        (&leaf, &leaf, "tls-key", "leaf.pem"),
    ];
    for (cert, key, flag, file) in cases {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let out = run(
            &[
                "record",
                "--listen",
                &listen,
                "--upstream",
                "http://127.0.0.1:1",
                "--no-record",
                "--admin",
                "off",
                "--tls-cert",
                p(cert),
                "--tls-key",
                p(key),
            ],
            STOP,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {file}: {err}");
        assert!(
            err.contains(flag) && err.contains(file),
            "the error names --{flag} and {file}: {err}"
        );
        assert!(
            std::net::TcpStream::connect(&listen).is_err(),
            "nothing listens after a refused start"
        );
    }
}

on_both_engines!(
    tls_termination_and_https_upstream,
    https_upstream_with_a_private_ca,
    https_upstream_sni_and_mutual_tls,
);
