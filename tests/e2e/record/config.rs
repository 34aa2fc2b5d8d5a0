//! Settings: the config file and its errors, sampling per trace and filters, a taken port.

use std::net::TcpListener;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{STARTUP, STOP, client, recorder, send, upstream_handler};
use crate::util::{
    Engine, Proc, TestServer, curl, free_port, read_tape, rt, run, stderr, wait_for_port,
};

fn config_file_keys_and_errors(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "upstream = \"http://127.0.0.1:1\"\nmax-bodyy = 5\n").expect("write");
    let out = run(&["record", "--config", bad.to_str().expect("utf-8")], STOP);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("max-bodyy"), "{}", stderr(&out));

    let out = run(
        &["record", "--upstream", "127.0.0.1:1", "--tape", "x"],
        STOP,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("upstream"), "{}", stderr(&out));

    // A good file; the --admin flag overrides the file's `admin` key.
    let up = TestServer::start(upstream_handler);
    let port = free_port();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"{}\"\ntape = \"{}\"\n\
             admin = \"127.0.0.1:1\"\ngrace-period = \"1s\"\nexclude-paths = [\"/skip/**\"]\n\
             engine = \"{}\"\n",
            up.url(),
            dir.path().join("tape").display(),
            engine.name()
        ),
    )
    .expect("write");
    let admin = free_port();
    let admin_s = format!("127.0.0.1:{admin}");
    let mut p = Proc::start(
        &[
            "record",
            "--config",
            good.to_str().expect("utf-8"),
            "--admin",
            &admin_s,
        ],
        dir.path(),
    );
    assert!(wait_for_port(([127, 0, 0, 1], port).into(), STARTUP));
    assert!(wait_for_port(([127, 0, 0, 1], admin).into(), STARTUP));
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/skip/me")]).0, 200);
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/keep")]).0, 200);
    let (_, metrics) = curl(&[&format!("http://{admin_s}/metrics")]);
    assert!(
        metrics.contains("tapedeck_skipped_total{reason=\"filter\"} 1\n"),
        "{metrics}"
    );
    p.signal("TERM");
    assert!(p.wait_timeout(STOP).expect("exit").success());
    let tape = read_tape(&dir.path().join("tape"));
    assert_eq!(tape.len(), 1);
    assert_eq!(tape[0].path, "/keep");
}

fn sampling_is_decided_per_trace_and_filters_apply(engine: Engine) {
    let up = TestServer::start(upstream_handler);
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = recorder(&up.url(), dir.path(), engine)
        .args(&[
            "--sample",
            "0.5",
            "--sample-key",
            "traceparent",
            "--exclude-method",
            "DELETE",
        ])
        .start(dir.path());
    rt().block_on(async {
        let c = client(false);
        for trace in 0..20u32 {
            for span in 0..3u32 {
                let req = hyper::Request::builder()
                    .uri(rec.url(&format!("/t/{trace}/{span}")))
                    .header("traceparent", format!("00-{trace:032x}-{span:016x}-01"))
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let resp = c.request(req).await.expect("request");
                assert_eq!(resp.status(), 200);
                let _ = resp.into_body().collect().await;
            }
        }
        for _ in 0..2 {
            let (s, _, _) = send(&c, "DELETE", &rec.url("/gone"), Bytes::new()).await;
            assert_eq!(s, 200);
        }
    });
    let (_, metrics) = rec.admin_get("/metrics");
    assert!(
        metrics.contains("tapedeck_skipped_total{reason=\"filter\"} 2\n"),
        "{metrics}"
    );
    let tape = rec.stop();
    assert!(tape.iter().all(|e| e.method != "DELETE"));
    let n = tape.len();
    assert!(n > 0 && n < 60, "0.5 sampling kept {n} of 60");
    assert_eq!(n % 3, 0, "whole traces are kept or skipped");
    let mut per_trace = std::collections::BTreeMap::<String, usize>::new();
    for e in &tape {
        let trace = e.path.split('/').nth(2).unwrap_or_default().to_owned();
        *per_trace.entry(trace).or_default() += 1;
    }
    assert!(per_trace.values().all(|&c| c == 3), "{per_trace:?}");
    assert!(
        metrics.contains(&format!(
            "tapedeck_skipped_total{{reason=\"sample\"}} {}\n",
            60 - n
        )),
        "{metrics}"
    );
}

/// Both engines refuse a taken port at start-up (pingora on its own would retry it for seconds).
fn a_taken_port_is_a_clear_startup_error(engine: Engine) {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        &[
            "record",
            "--listen",
            &addr,
            "--upstream",
            "http://127.0.0.1:9",
            "--tape",
            dir.path().join("t").to_str().expect("utf-8"),
            "--admin",
            "off",
            "--engine",
            engine.name(),
        ],
        STOP,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot listen on") && stderr(&out).contains(&addr),
        "{}",
        stderr(&out)
    );
}

on_both_engines!(
    a_taken_port_is_a_clear_startup_error,
    config_file_keys_and_errors,
    sampling_is_decided_per_trace_and_filters_apply,
);
