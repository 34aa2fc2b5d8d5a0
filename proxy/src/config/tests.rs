//! Unit tests of `config.rs`.

use super::*;

fn base() -> RawConfig {
    RawConfig {
        upstream: Some("http://127.0.0.1:3000".into()),
        tape: Some("/tmp/x".into()),
        ..RawConfig::default()
    }
}

/// The example in the README; keep them in sync.
const README_EXAMPLE: &str = r#"
listen = "0.0.0.0:8080"
upstream = "http://127.0.0.1:3000"
tape = "/var/lib/tapedeck/svc"
source = "users-api"
max-body = "1MiB"
threads = 2
engine = "hyper"
admin = "127.0.0.1:9180"
grace-period = "5s"
flush-interval = "1s"
header-timeout = "30s"
idle-timeout = "60s"
upstream-timeout = "30s"
redact-headers = ["x-session-id"]
redact-query = ["token", "api_key"]
redact-path = ["/reset-password/{token}"]
redact-json = ["$.password", "$..card_number"]
redact-regex = ['\b[0-9]{13,16}\b']
redact-mode = "mask"
sample = 0.25
sample-key = "traceparent"
exclude-paths = ["/healthz", "/metrics"]
exclude-methods = ["OPTIONS"]
"#;

#[test]
fn readme_example_is_valid() {
    let s = RawConfig::from_toml(README_EXAMPLE)
        .expect("parses")
        .validate()
        .expect("valid");
    assert_eq!(s.source, "users-api");
    assert_eq!(s.threads, 2);
    assert_eq!(s.header_timeout, Duration::from_secs(30));
}

#[test]
fn repeatable_flag_names_work_as_keys() {
    let r = RawConfig::from_toml(
        "exclude-path = [\"/a\"]\ninclude-method = [\"GET\"]\nredact-header = [\"x-s\"]\n",
    )
    .expect("aliases");
    assert_eq!(r.exclude_paths, Some(vec!["/a".to_owned()]));
    assert_eq!(r.include_methods, Some(vec!["GET".to_owned()]));
    assert_eq!(r.redact_headers, Some(vec!["x-s".to_owned()]));
}

#[test]
fn unknown_key_is_named() {
    let err = RawConfig::from_toml("upstream = \"http://127.0.0.1:1\"\nmax-bodyy = 3\n")
        .expect_err("unknown key");
    let ConfigError::Toml { source } = &err else {
        panic!("expected ConfigError::Toml, got {err:?}");
    };
    assert!(
        source.message().contains("unknown field `max-bodyy`"),
        "{source:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("invalid config: TOML parse error at line 2, column 1")
            && text.contains("max-bodyy = 3")
            && text.contains("unknown field `max-bodyy`")
            && !text.ends_with('\n'),
        "{text}"
    );
}

#[test]
fn a_bad_config_file_is_named_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("record.toml");
    std::fs::write(&path, "threads = \"many\"\n").expect("write");
    let err = RawConfig::from_file(&path).expect_err("wrong type");
    let ConfigError::Parse { path: p, source } = &err else {
        panic!("expected ConfigError::Parse, got {err:?}");
    };
    assert_eq!(p, &path);
    assert_eq!(source.span(), Some(10..16), "{source:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "invalid config file {}: TOML parse error at line 1, column 11",
            path.display()
        )) && text.contains("threads = \"many\"")
            && !text.ends_with('\n'),
        "{text}"
    );

    let missing = dir.path().join("missing.toml");
    let err = RawConfig::from_file(&missing).expect_err("no file");
    assert!(
        matches!(&err, ConfigError::Read { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

#[test]
fn file_keys_parse_and_flags_override() {
    let file = RawConfig::from_toml(
        "upstream = \"http://127.0.0.1:3000\"\ntape = \"/tmp/t\"\nmax-body = \"2MiB\"\n\
             threads = 3\nredact-json = [\"$.password\"]\nsample = 0.5\n",
    )
    .expect("parse");
    let flags = RawConfig {
        threads: Some(1),
        ..RawConfig::default()
    };
    let s = file.merge(flags).validate().expect("valid");
    assert_eq!(s.threads, 1);
    assert_eq!(s.max_body, 2 << 20);
    assert_eq!(
        s.upstream.as_ref().expect("upstream").addr,
        "127.0.0.1:3000".parse().expect("addr")
    );
    assert_eq!(s.source, "127.0.0.1:3000");
    assert_eq!(s.admin, Some("127.0.0.1:9180".parse().expect("addr")));
}

#[test]
fn defaults_and_errors() {
    let s = base().validate().expect("valid");
    assert_eq!(s.max_body, 1 << 20);
    assert_eq!(s.grace_period, Duration::from_secs(5));
    assert!(s.threads >= 1);
    let e = RawConfig::default().validate().expect_err("no upstream");
    assert!(e.to_string().contains("upstream"), "{e}");
    let e = RawConfig {
        upstream: Some("127.0.0.1:3000".into()),
        ..base()
    }
    .validate()
    .expect_err("no scheme");
    assert!(e.to_string().contains("http://"), "{e}");
    let e = RawConfig {
        sample: Some(1.5),
        ..base()
    }
    .validate()
    .expect_err("bad sample");
    assert!(e.to_string().contains("sample"), "{e}");
    let e = RawConfig {
        redact_mode: Some(RedactMode::Hash),
        redact_key_env: Some("TAPEDECK_TEST_SURELY_UNSET_VAR".into()),
        ..base()
    }
    .validate()
    .expect_err("no key");
    assert!(
        e.to_string().contains("TAPEDECK_TEST_SURELY_UNSET_VAR"),
        "{e}"
    );
    let off = RawConfig {
        admin: Some("off".into()),
        record: Some(false),
        tape: None,
        ..base()
    }
    .validate()
    .expect("valid");
    assert_eq!(off.admin, None);
    assert_eq!(off.tape, None);
}

#[test]
fn sizes_and_durations_name_the_key() {
    let e = RawConfig {
        max_body: Some("12 parsecs".into()),
        ..base()
    }
    .validate()
    .expect_err("bad size");
    assert!(e.to_string().contains("max-body"), "{e}");
    let e = RawConfig {
        header_timeout: Some("soon".into()),
        ..base()
    }
    .validate()
    .expect_err("bad duration");
    assert!(e.to_string().contains("header-timeout"), "{e}");
    let s = RawConfig {
        max_body: Some("2MiB".into()),
        idle_timeout: Some("500ms".into()),
        ..base()
    }
    .validate()
    .expect("valid");
    assert_eq!(s.max_body, 2 << 20);
    assert_eq!(s.idle_timeout, Duration::from_millis(500));
    assert_eq!((s.queue_bytes, s.seal_backlog), (16 << 20, 1 << 30));
    assert_eq!(s.upstream_keepalive, 1024);
    let s = RawConfig::from_toml(
            "upstream = \"http://127.0.0.1:1\"\ntape = \"t\"\nqueue-bytes = \"64KiB\"\nseal-backlog = 0\nupstream-keepalive = 0\n",
        )
        .expect("parses")
        .validate()
        .expect("valid");
    assert_eq!((s.queue_bytes, s.seal_backlog), (64 << 10, 0));
    assert_eq!(s.upstream_keepalive, 0);
    let e = RawConfig {
        upstream_keepalive: Some(8),
        engine: Some("pingora".into()),
        ..base()
    }
    .validate()
    .expect_err("pingora has its own pool");
    assert!(e.to_string().contains("upstream-keepalive"), "{e}");
    let e = RawConfig {
        queue_bytes: Some("0".into()),
        ..base()
    }
    .validate()
    .expect_err("zero bytes");
    assert!(e.to_string().contains("queue-bytes"), "{e}");
}

#[test]
fn engine_key() {
    assert_eq!(base().validate().expect("valid").engine, Engine::Hyper);
    let s = RawConfig {
        engine: Some("pingora".into()),
        ..base()
    }
    .validate()
    .expect("valid");
    assert_eq!(s.engine, Engine::Pingora);
    let e = RawConfig {
        engine: Some("nginx".into()),
        ..base()
    }
    .validate()
    .expect_err("unknown engine");
    let text = e.to_string();
    assert!(
        text.contains("`engine`") && text.contains("nginx") && text.contains("pingora"),
        "{text}"
    );
}

#[test]
fn upstream_forms() {
    let u = parse_upstream("https://localhost:8443/").expect("valid");
    assert!(u.tls);
    assert_eq!(u.host, "localhost");
    assert_eq!(u.authority, "localhost:8443");
    assert!(parse_upstream("http://127.0.0.1:1/api").is_err());
}
