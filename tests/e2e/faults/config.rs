//! Bad configuration and flags: exit 2 naming the key and what a good value looks like.

use tapedeck_storage::now_us;

use super::{STOP, s};
use crate::util::{free_port, get, run, stderr, write_tape};

/// Asserts a usage error: exit 2 and every one of `needles` in stderr.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let out = run(args, STOP);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn config_errors_exit_2_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tape = dir.path().join("tape");
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write config");
        p
    };
    let base = format!(
        "upstream = \"http://127.0.0.1:9\"\ntape = \"{}\"\nadmin = \"off\"\nlisten = \"127.0.0.1:{}\"\n",
        tape.display(),
        free_port()
    );
    // Unknown key: named, with the list of valid keys.
    let unknown = file("unknown.toml", &format!("{base}flush-intervall = \"1s\"\n"));
    assert_usage_error(
        &["record", "--config", s(&unknown)],
        &["flush-intervall", "flush-interval"],
    );
    // Bad values: named, with what a good value looks like.
    for (line, key, hint) in [
        ("max-body = \"lots\"", "max-body", "1MiB"),
        ("flush-interval = \"0s\"", "flush-interval", "positive"),
        ("sample = 3", "sample", "between 0.0 and 1.0"),
        ("threads = 0", "threads", "at least 1"),
        (
            "redact-path = [\"/static\"]",
            "redact-path",
            "no `{…}` segment",
        ),
        ("upstream-timeout = \"soon\"", "upstream-timeout", ""),
    ] {
        let text = base.replace("upstream = \"http://127.0.0.1:9\"\n", "");
        let text = format!("upstream = \"http://127.0.0.1:9\"\n{text}{line}\n");
        let f = file("bad.toml", &text);
        assert_usage_error(&["record", "--config", s(&f)], &[key, hint]);
    }
    // Bad flag values, conflicting flags: `record --tape TAPE --admin off` with `flags`.
    let record = |flags: &[&str], needles: &[&str]| {
        let mut args = vec!["record", "--tape", s(&tape), "--admin", "off"];
        args.extend_from_slice(flags);
        assert_usage_error(&args, needles);
    };
    record(&["--upstream", "ftp://127.0.0.1:9"], &["upstream"]);
    let up = ["--upstream", "http://127.0.0.1:9"];
    record(
        &[&up[..], &["--no-record"]].concat(),
        &["--no-record", "--tape"],
    );
    record(
        &[&up[..], &["--tls-cert", s(&unknown)]].concat(),
        &["tls-key"],
    );
    assert!(!tape.exists(), "a rejected config creates no tape");
    // diff --rules with an unknown key, and with a bad value.
    let run_dir = dir.path().join("run");
    write_tape(&run_dir, &[get("/x", now_us())]);
    let rules = file("rules.toml", "slo = []\nignored = [\"$.b\"]\n");
    assert_usage_error(
        &["diff", "--run", s(&run_dir), "--rules", s(&rules)],
        &["ignored", "rules.toml", "expected one of"],
    );
    let out = run(&["diff", "--run", s(&run_dir), "--rules", s(&rules)], STOP);
    assert_eq!(
        stderr(&out).matches("unknown field").count(),
        1,
        "the cause is printed once: {}",
        stderr(&out)
    );
    let rules = file("rules2.toml", "[settings]\nmin_samplez = 3\n");
    assert_usage_error(
        &["diff", "--run", s(&run_dir), "--rules", s(&rules)],
        &["min_samplez", "rules2.toml"],
    );
}
