//! The regression corpus (issue 16): a corpus built from one failing run's ticket makes the next
//! check of the same bad candidate fail within the corpus alone (with `--early-stop` the tape is
//! not replayed at all), names the ticket, and lets a good candidate pass. Real binary; the
//! demo's sample API runs as `tapedeck sample-api` processes on loopback ports picked by the OS,
//! stopped by PID.

use std::path::Path;

use serde_json::Value;

use crate::util::{Check, Cli, SampleApi, assert_exit, demo, stderr, stdout, synth, verdict};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `tapedeck corpus <args>`.
fn corpus(args: &[&str]) -> std::process::Output {
    Cli::new("corpus").args(args).run()
}

#[test]
fn a_corpus_from_one_failing_run_catches_the_same_regressions_and_passes_a_good_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo_dir = dir.path().join("demo");
    demo(
        &demo_dir,
        &["--candidate-build", "good", "--requests", "600"],
    );
    let tape = demo_dir.join("tape");
    let (v1, v1b, bad, good) = (
        SampleApi::start("v1", dir.path()),
        SampleApi::start("v1", dir.path()),
        SampleApi::start("v2-bad", dir.path()),
        SampleApi::start("v2-good", dir.path()),
    );
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[settings]\nmin_shift_ms = 50.0\n").expect("rules");
    // The corpus's requests come from replays to these very URLs; the same-host guard must judge
    // them by where the tape was recorded (the demo's recorder), not by those URLs, so the
    // checks below run without --allow-same-host — unless the OS happened to give a sample API
    // the port the demo's recorder had.
    let recorded = crate::util::read_tape(&tape)
        .first()
        .map(|e| e.authority.clone())
        .unwrap_or_default();
    let reused = [&v1.url, &v1b.url, &bad.url, &good.url]
        .iter()
        .any(|u| u.ends_with(&format!("//{recorded}")));
    let check = |candidate: &str, report: &Path, extra: &[&str]| {
        let c = Check::new(&tape, &v1.url, candidate)
            .secondary(&v1b.url)
            .rules(&rules)
            .report(report)
            .quiet()
            .args(extra);
        if reused {
            c.arg("--allow-same-host").run()
        } else {
            c.run()
        }
    };

    // 1. The escaped regression: a failing check writes its ticket bundle.
    let ticket = dir.path().join("ticket");
    let o = check(&bad.url, &dir.path().join("r1"), &["--ticket", s(&ticket)]);
    assert_exit(&o, 1, "the bad build");
    let ticket_json: Value =
        serde_json::from_str(&std::fs::read_to_string(ticket.join("ticket.json")).expect("ticket"))
            .expect("ticket.json");
    let fingerprint = ticket_json["fingerprint"].as_str().expect("fingerprint");

    // 2. Into the corpus, deduplicated; adding the same ticket again adds nothing.
    let corpus_dir = dir.path().join("corpus");
    let o = corpus(&["add", "--ticket", s(&ticket), "--corpus", s(&corpus_dir)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("request(s) added from ticket"), "{out}");
    let o = corpus(&["list", "--corpus", s(&corpus_dir), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let entries: Vec<Value> = serde_json::from_str(&stdout(&o)).expect("entries json");
    assert!(!entries.is_empty());
    assert!(
        entries
            .iter()
            .all(|e| e["ticket"]["fingerprint"] == fingerprint),
        "{entries:?}"
    );
    let mut keys: Vec<&str> = entries.iter().filter_map(|e| e["key"].as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), entries.len(), "entries are unique");
    let o = corpus(&["add", "--ticket", s(&ticket), "--corpus", s(&corpus_dir)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(" 0 request(s) added"), "{}", stdout(&o));
    let o = corpus(&["list", "--corpus", s(&corpus_dir)]);
    assert!(stdout(&o).contains(&fingerprint[..12]), "{}", stdout(&o));

    // 3. The same bad candidate, with --early-stop: it fails within the corpus alone — the tape
    //    is never replayed — and the verdict names the ticket.
    let r2 = dir.path().join("r2");
    let o = check(&bad.url, &r2, &["--corpus", s(&corpus_dir), "--early-stop"]);
    assert_exit(&o, 1, "the bad build, corpus only");
    assert!(!r2.join("run").exists(), "the tape was replayed");
    let v = verdict(&r2);
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["rollback"], true);
    assert_eq!(v["stopped_early"], true);
    let c = &v["corpus"];
    let requests = c["requests"].as_u64().expect("requests");
    assert_eq!(
        v["requests_sent"]["candidate"].as_u64(),
        Some(requests),
        "{v:#}"
    );
    let hits: Vec<&str> = c["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["route"].as_str())
        .collect();
    for route in [
        "GET /api/users?page&per_page",
        "GET /api/users/{id}",
        "GET /api/search?q",
    ] {
        assert!(hits.contains(&route), "{route} not a hit: {hits:?}");
    }
    assert!(
        c["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .all(|h| h["tickets"][0]["fingerprint"] == fingerprint),
        "{c:#}"
    );
    assert!(
        v["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("Known regression reappeared")),
        "{v:#}"
    );
    let md = std::fs::read_to_string(r2.join("report.md")).expect("report.md");
    assert!(md.contains("## Regression corpus"), "{md}");
    let junit = std::fs::read_to_string(r2.join("junit.xml")).expect("junit.xml");
    assert!(junit.contains("type=\"known-regression\""), "{junit}");

    // 4. Without --early-stop the tape is still replayed after the corpus; the run fails.
    let r3 = dir.path().join("r3");
    let o = check(&bad.url, &r3, &["--corpus", s(&corpus_dir)]);
    assert_exit(&o, 1, "the bad build, corpus then tape");
    assert!(r3.join("run").is_dir());
    assert!(
        !verdict(&r3)["corpus"]["hits"]
            .as_array()
            .expect("hits")
            .is_empty()
    );

    // 5. A good candidate passes the corpus and the tape.
    let r4 = dir.path().join("r4");
    let o = check(
        &good.url,
        &r4,
        &["--corpus", s(&corpus_dir), "--early-stop"],
    );
    assert_exit(&o, 0, "the good build");
    let v = verdict(&r4);
    assert_eq!(v["corpus"]["verdict"], "pass", "{v:#}");
    assert_eq!(v["corpus"]["hits"].as_array().map(Vec::len), Some(0));
    assert!(
        r4.join("run").is_dir(),
        "the tape is replayed after a clean corpus"
    );
}

#[test]
fn bad_corpus_input_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Not a ticket bundle.
    let o = corpus(&[
        "add",
        "--ticket",
        s(dir.path()),
        "--corpus",
        s(&dir.path().join("c")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a ticket bundle"), "{}", stderr(&o));
    // A corpus that does not exist: check says so, and sends nothing (the URLs are unroutable
    // on purpose: nothing listens there).
    let tape = dir.path().join("tape");
    synth(&tape, &["--count", "20"]);
    let o = Check::new(&tape, "http://127.0.0.1:9", "http://127.0.0.1:9")
        .report(&dir.path().join("r"))
        .flag("--corpus", dir.path().join("missing"))
        .quiet()
        .run();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!dir.path().join("r").join("run").exists());
    // A damaged index.
    let c = dir.path().join("broken");
    std::fs::create_dir_all(&c).expect("dir");
    std::fs::write(
        c.join("corpus.json"),
        "{\"schema_version\": 1, \"entries\": [",
    )
    .expect("write");
    let o = corpus(&["list", "--corpus", s(&c)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("corpus.json"), "{}", stderr(&o));
}
