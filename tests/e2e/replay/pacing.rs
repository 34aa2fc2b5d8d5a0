//! Pacing and results: latency counted from the schedule, recorded gaps scaled, closed loop
//! with its own connections, Poisson pacing, the observer hook, a clean stop on SIGTERM; every
//! result written once, an origin's results adjacent.

use std::collections::HashMap;
use std::time::Duration;

use tapedeck_storage::{Exchange, Tape, now_us};

use super::per_origin;
use super::write_gets;
use crate::util::{Replay, Reply, TestServer, read_in_order, stderr, wait_until};

#[test]
fn a_slow_target_shows_its_delay_in_latency_from_the_scheduled_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    write_gets(&tape, "/slow", 6, t0, 1);
    let slow = TestServer::start(|_| {
        let mut r = Reply::json("{}");
        r.delay = Duration::from_millis(100);
        r
    });
    // 50 requests/s but only one in flight: later requests leave late, and that wait must
    // count as latency (no coordinated omission).
    let replay = Replay::new(&tape)
        .out(&out_dir)
        .target("slow", &slow.url())
        .args(["--rate", "50", "--concurrency", "1"]);
    let v = replay.summary();
    assert!(
        v["targets"][0]["latency_us"]["p50"].as_u64().expect("p50") >= 100_000,
        "{v:#}"
    );
    let results = replay.results();
    assert_eq!(results.len(), 6);
    let mut max_late = 0;
    for r in &results {
        let late = r.sent_at_us.expect("sent") - r.scheduled_at_us.expect("sched");
        let total = r.total_us.expect("total");
        assert!(total >= 100_000, "the server's delay shows: {total}");
        assert!(
            total >= late + 90_000,
            "latency counts from the schedule: {total} vs late {late}"
        );
        max_late = max_late.max(late);
    }
    assert!(
        max_late >= 100_000,
        "sends queued behind the slow target: {max_late}"
    );
    assert!(v["pacing"]["lateness_us"]["max"].as_u64().expect("max") >= 100_000);
}

#[test]
fn speed_2_halves_recorded_gaps_and_keeps_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    let recorded = write_gets(&tape, "/p", 21, t0, 10_000);
    let server = TestServer::start(|_| Reply::json("{}"));
    let replay = Replay::new(&tape)
        .out(&out_dir)
        .target("t", &server.url())
        .args(["--speed", "2"]);
    let v = replay.summary();
    assert_eq!(v["origins"], 21);

    let results = replay.results();
    let by_origin: HashMap<_, _> = results
        .iter()
        .map(|r| (r.origin_id.expect("origin"), r))
        .collect();
    let sched: Vec<i64> = recorded
        .iter()
        .map(|e| by_origin[&e.id].scheduled_at_us.expect("sched"))
        .collect();
    assert!(
        sched.windows(2).all(|w| w[1] > w[0]),
        "order kept: {sched:?}"
    );
    let span = sched[20] - sched[0];
    assert!(
        (95_000..=105_000).contains(&span),
        "200 ms recorded at 2x ≈ 100 ms: {span}"
    );

    // The order of sends is not asserted: when a loaded machine stalls the senders, the
    // requests due meanwhile leave as a burst from several senders, in any order (measured:
    // 3.3 ms apart under load). That none leaves early is checked below; arrival order loosely.
    let sent: Vec<i64> = recorded
        .iter()
        .map(|e| by_origin[&e.id].sent_at_us.expect("sent"))
        .collect();
    let got = server.requests();
    assert_eq!(got.len(), 21);
    let index = |r: &crate::util::Received| -> usize {
        r.uri.trim_start_matches("/p/").parse().expect("index")
    };
    let inversions = got
        .windows(2)
        .filter(|w| index(&w[1]) < index(&w[0]))
        .count();
    assert!(
        inversions <= 5,
        "arrival order mostly kept: {:?}",
        got.iter().map(index).collect::<Vec<_>>()
    );
    // The gaps were kept: no request left before its scheduled time, so the last one left at
    // least the scheduled span (≈ 100 ms) after the first was due. (How late sends and arrivals
    // are depends on the machine's load; issue 17: an upper bound on the arrival window flaked
    // under load, so none is asserted.)
    for (s, t) in sched.iter().zip(&sent) {
        assert!(*t >= s - 1_000, "sent before its schedule: {t} < {s}");
    }
    assert!(sent[20] - sched[0] >= 95_000, "{sent:?} vs {sched:?}");
}

/// Closed loop runs on long-lived tasks and hands results to the writer in batches: every
/// origin is still sent exactly once per target, every result is written (full batches, the
/// timed flush and the final partial batch), and an origin's results stay adjacent.
#[test]
fn max_mode_writes_every_result_once_and_adjacent_per_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 10_000_000;
    // Not a multiple of the writer's batch size, so a partial batch is left at the end.
    let n = 1_001usize;
    let recorded = write_gets(&tape, "/m", n as i64, t0, 100);
    let a = TestServer::start(|_| Reply::json("{\"a\":1}"));
    let b = TestServer::start(|_| Reply::json("{\"b\":2}"));
    let replay = Replay::new(&tape)
        .out(&out_dir)
        .target("a", &a.url())
        .target("b", &b.url())
        .max()
        .args(["--concurrency", "16"]);
    let v = replay.summary();
    assert_eq!(v["origins"], n as u64);
    assert_eq!(v["results_written"], 2 * n as u64);
    assert_eq!(v["results_lost"], 0);
    assert_eq!(v["interrupted"], false);
    assert_eq!(a.requests().len(), n);
    assert_eq!(b.requests().len(), n);

    let results = replay.results();
    assert_eq!(results.len(), 2 * n);
    let pairs = per_origin(&results, &recorded, &["a", "b"]);
    for pair in &pairs {
        assert!(pair.iter().all(|r| r.status == Some(200)));
        assert_eq!(&pair[0].resp_body[..], b"{\"a\":1}");
        assert_eq!(&pair[1].resp_body[..], b"{\"b\":2}");
    }
    assert_eq!(pairs.len(), n);
}

/// Issue 14: each closed-loop sender owns its HTTP/1.1 connection for the whole run (opened before
/// the clock starts), and HTTP/2 requests are streams multiplexed over exactly `--connections`
/// connections.
#[test]
fn closed_loop_senders_own_their_connections_and_h2_multiplexes_over_a_few() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let n = 400usize;
    write_gets(&tape, "/c", n as i64, t0, 10);
    let h1 = TestServer::start(|_| Reply::json("{}"));
    let h2 = TestServer::start(|_| Reply::json("{}"));
    let out_dir = dir.path().join("run");
    let v = Replay::new(&tape)
        .out(&out_dir)
        .target("one", &h1.url())
        .target("two", &format!("h2c://{}", h2.addr))
        .max()
        .args(["--concurrency", "8", "--threads", "2", "--connections", "3"])
        .summary();
    assert_eq!(v["results_written"], 2 * n as u64, "{v:#}");
    assert_eq!(v["targets"][0]["errors"], 0, "{v:#}");
    assert_eq!(v["targets"][1]["errors"], 0, "{v:#}");
    assert_eq!(h1.requests().len(), n);
    assert_eq!(
        h1.connection_count(),
        8,
        "one HTTP/1.1 connection per sender, kept for the whole run"
    );
    let got = h2.requests();
    assert_eq!(got.len(), n);
    assert!(got.iter().all(|r| r.version == "HTTP/2.0"));
    // 3 connections spread over 2 threads: 2 per thread (rounded up).
    assert_eq!(
        h2.connection_count(),
        4,
        "HTTP/2 streams multiplexed over the threads' connections"
    );
}

/// `--pace poisson` is the Poisson mode (the same as `--rate N --poisson`), and the result tape
/// says so.
#[test]
fn pace_poisson_is_a_mode_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    write_gets(&tape, "/p", 50, t0, 1);
    let server = TestServer::start(|_| Reply::json("{}"));
    let replay = Replay::new(&tape).target("t", &server.url());
    for (i, pacing) in [
        &["--pace", "poisson", "--rate", "2000"][..],
        &["--rate", "2000", "--poisson"][..],
    ]
    .iter()
    .enumerate()
    {
        let out_dir = dir.path().join(format!("run-{i}"));
        let v = replay.clone().out(&out_dir).args(*pacing).summary();
        assert_eq!(v["pacing"]["mode"], "poisson", "{v:#}");
        assert_eq!(v["pacing"]["target_rate"], 2000.0);
        let md = Tape::open(&[&out_dir])
            .expect("open results")
            .metadata()
            .expect("metadata");
        assert_eq!(
            md.get("tapedeck.run.pace").map(String::as_str),
            Some("rate 2000/s poisson")
        );
    }
    let out = replay
        .out(&dir.path().join("bad"))
        .args(["--pace", "recorded", "--rate", "5"])
        .run();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--rate applies to --pace rate or poisson"),
        "{}",
        stderr(&out)
    );
}

/// Issue 16's hooks: an [`Observer`](tapedeck_replay::Observer) sees every origin's results (all
/// targets, in target order) before they are written, and can stop the run; what was in flight
/// still finishes and is written (and observed).
#[test]
fn an_observer_sees_every_group_and_can_stop_the_run() {
    use std::ops::ControlFlow;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Seen {
        groups: Vec<Vec<(Option<String>, Option<u16>)>>,
        finished: bool,
    }
    struct Watch(Arc<Mutex<Seen>>, usize);
    impl tapedeck_replay::Observer for Watch {
        fn group(&mut self, results: &[Exchange]) -> ControlFlow<()> {
            let mut seen = self.0.lock().expect("lock");
            seen.groups.push(
                results
                    .iter()
                    .map(|r| (r.target.clone(), r.status))
                    .collect(),
            );
            if seen.groups.len() >= self.1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn finish(&mut self) {
            self.0.lock().expect("lock").finished = true;
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let t0 = now_us() - 10_000_000;
    let n = 2_000usize;
    write_gets(&tape, "/o", n as i64, t0, 100);
    // Slow enough that the run cannot finish before the observer has seen 20 groups.
    let slow = |_: &crate::util::Received| {
        let mut r = Reply::json("{}");
        r.delay = Duration::from_millis(5);
        r
    };
    let (a, b) = (TestServer::start(slow), TestServer::start(slow));
    let out_dir = dir.path().join("run");
    let config = tapedeck_replay::ReplayOptions {
        tape: vec![tape.clone()],
        out: Some(out_dir.clone()),
        targets: vec![format!("a={}", a.url()), format!("b={}", b.url())],
        pace: "max".into(),
        concurrency: Some(4),
        ..Default::default()
    }
    .validate()
    .expect("valid options");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let summary = tapedeck_replay::Replay::new(&config)
        .observer(Watch(seen.clone(), 20))
        .run_blocking()
        .expect("replay");
    let seen = seen.lock().expect("lock");
    assert!(summary.interrupted, "the observer stopped the run");
    assert!(seen.finished, "finish() was called");
    let written = summary.results_written as usize;
    assert!(
        (40..2 * n).contains(&written),
        "stopped early, in-flight requests still written: {written}"
    );
    assert_eq!(
        seen.groups.len() * 2,
        written,
        "every written group observed"
    );
    for g in &seen.groups {
        let targets: Vec<_> = g.iter().map(|(t, _)| t.as_deref()).collect();
        assert_eq!(targets, [Some("a"), Some("b")], "one group, target order");
        assert!(g.iter().all(|(_, status)| *status == Some(200)));
    }
    assert_eq!(read_in_order(&out_dir).len(), written);
}

#[test]
fn sigterm_stops_cleanly_with_every_sent_request_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tape, out_dir) = (dir.path().join("tape"), dir.path().join("run"));
    let t0 = now_us() - 60_000_000;
    write_gets(&tape, "/t", 50, t0, 100_000);
    let server = TestServer::start(|_| Reply::json("{}"));
    let mut p = Replay::new(&tape)
        .out(&out_dir)
        .target("t", &server.url())
        .arg("--json")
        .start(dir.path());
    assert!(
        wait_until(Duration::from_secs(20), || server.requests().len() >= 3),
        "replay never started sending"
    );
    p.signal("TERM");
    let status = p
        .wait_timeout(Duration::from_secs(20))
        .expect("replay stops after SIGTERM");
    assert!(status.success(), "exit {status:?}");
    let out = std::fs::read_to_string(dir.path().join("tapedeck.stdout")).expect("stdout");
    let v: serde_json::Value = serde_json::from_str(&out).expect("summary JSON");
    assert_eq!(v["interrupted"], true);
    let origins = v["origins"].as_u64().expect("origins");
    assert!((3..50).contains(&origins), "{origins}");
    assert_eq!(read_in_order(&out_dir).len() as u64, origins);
    assert_eq!(server.requests().len() as u64, origins);
}
