//! The container image (issue 17): the `Dockerfile` at the repository root.
//!
//! `dockerfile_*` read the Dockerfile: its stages, its user, its entrypoint, and a Rust image new
//! enough for Cargo.lock. `image_runs_demo_and_record_read_only_as_non_root` builds the image's
//! runtime with podman around the binary under test (`--target prebuilt`, so CI does not compile
//! the workspace a second time) and runs it as deploy/ runs it: the image's user, a read-only
//! root filesystem (no tmpfs on /tmp either), every capability dropped, no privilege escalation;
//! `demo` with no network and only its working directory on a volume, `record` with the tape on a
//! volume and stopped by SIGTERM.
//!
//! What it does not prove: the `build` stage (compiling in the Rust image), and the real base
//! image. Docker Hub is out of reach for CI, so the test makes a stand-in for the Dockerfile's
//! `debian:<release>-slim` with mmdebstrap (Debian's minbase, the set the official image is made
//! of; kept under the target dir for a week) and passes it as RUNTIME_IMAGE. Making it, and the
//! runtime stage's `apt-get install ca-certificates`, download Debian packages: the only traffic
//! beyond loopback, and only to the Debian mirror.
//!
//! Needs root, podman, runc, mmdebstrap and strip (`.ci/run` installs them). To skip the image
//! test on purpose on a machine that cannot run containers, set TAPEDECK_SKIP_CONTAINER_TESTS=1;
//! without it a missing tool fails the test.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Reply, TestServer, curl, free_port, read_tape, run_command, wait_for_port};

const SKIP_ENV: &str = "TAPEDECK_SKIP_CONTAINER_TESTS";
const HINT: &str = "install podman, runc, mmdebstrap and binutils and run as root (.ci/run does), \
                    or set TAPEDECK_SKIP_CONTAINER_TESTS=1 to skip the image test on purpose";

/// One instruction of the Dockerfile: the keyword (upper case) and the rest of the line, with
/// continuation lines joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub keyword: String,
    pub rest: String,
}

/// A build stage: `FROM <from> AS <name>` and its instructions.
#[derive(Debug, Clone)]
pub struct Stage {
    pub from: String,
    pub name: String,
    pub body: Vec<Instruction>,
}

/// The repository's Dockerfile.
#[derive(Debug)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM`, with their defaults.
    pub args: Vec<(String, String)>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn read() -> Dockerfile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
        let text = std::fs::read_to_string(&path).expect("read Dockerfile");
        let mut instructions = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
                    instructions.push(Instruction {
                        keyword: keyword.to_ascii_uppercase(),
                        rest: rest.trim().to_owned(),
                    });
                    current.clear();
                }
            }
        }
        let mut args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for i in instructions {
            if i.keyword == "FROM" {
                let words: Vec<&str> = i.rest.split_whitespace().collect();
                let (from, name) = match words.as_slice() {
                    [from, as_, name] if as_.eq_ignore_ascii_case("as") => (*from, *name),
                    _ => panic!("every stage is named: FROM {}", i.rest),
                };
                stages.push(Stage {
                    from: from.to_owned(),
                    name: name.to_owned(),
                    body: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.body.push(i);
            } else if i.keyword == "ARG" {
                let (name, default) = i.rest.split_once('=').expect("global ARGs have defaults");
                args.push((name.to_owned(), default.to_owned()));
            }
        }
        Dockerfile { args, stages }
    }

    pub fn arg(&self, name: &str) -> &str {
        self.args
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_str())
            .unwrap_or_else(|| panic!("no ARG {name}"))
    }

    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no stage {name}"))
    }

    /// The image's numeric user and group (`USER uid:gid` of the runtime).
    pub fn user(&self) -> (u32, u32) {
        let user = self.runtime_setting("USER");
        let (uid, gid) = user.split_once(':').expect("USER uid:gid");
        (
            uid.parse().expect("numeric uid"),
            gid.parse().expect("numeric gid"),
        )
    }

    /// The binary the ENTRYPOINT runs.
    pub fn binary(&self) -> String {
        let entry: Vec<String> = serde_json::from_str(&self.runtime_setting("ENTRYPOINT"))
            .expect("exec-form ENTRYPOINT");
        assert_eq!(
            entry.len(),
            1,
            "the ENTRYPOINT is the binary alone: {entry:?}"
        );
        entry[0].clone()
    }

    pub fn workdir(&self) -> String {
        self.runtime_setting("WORKDIR")
    }

    /// A setting of the runtime (set in `runtime-base`, never changed by the final stages).
    fn runtime_setting(&self, keyword: &str) -> String {
        for name in ["prebuilt", "runtime"] {
            assert!(
                self.stage(name).body.iter().all(|i| i.keyword != keyword),
                "{keyword} is set in runtime-base only, not in {name}"
            );
        }
        let found: Vec<&Instruction> = self
            .stage("runtime-base")
            .body
            .iter()
            .filter(|i| i.keyword == keyword)
            .collect();
        assert_eq!(found.len(), 1, "one {keyword} in runtime-base");
        found[0].rest.clone()
    }
}

/// Splits `registry/name:tag` into the tag's version and Debian release:
/// `rust:1.95-slim-bookworm` → ("1.95", "bookworm"), `debian:bookworm-slim` → ("", "bookworm").
fn image_tag(image: &str) -> (String, String) {
    let tag = image.rsplit_once(':').expect("image:tag").1;
    let mut version = String::new();
    let mut release = String::new();
    for part in tag.split('-') {
        if part.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            version = part.to_owned();
        } else if part != "slim" {
            release = part.to_owned();
        }
    }
    (version, release)
}

fn version(v: &str) -> (u64, u64) {
    let mut it = v
        .split('.')
        .map(|p| p.parse::<u64>().expect("numeric version"));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn dockerfile_builds_in_stages_and_runs_as_a_non_root_user() {
    let d = Dockerfile::read();
    let names: Vec<&str> = d.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["build", "runtime-base", "prebuilt", "runtime"]);
    assert_eq!(d.stage("build").from, "${RUST_IMAGE}");
    assert_eq!(d.stage("runtime-base").from, "${RUNTIME_IMAGE}");
    let binary = d.binary();
    // Both final stages are the runtime plus the binary: compiled (the default target, last) or
    // taken from the build context.
    for (stage, copy) in [
        ("runtime", format!("--from=build /out/tapedeck {binary}")),
        ("prebuilt", format!("tapedeck {binary}")),
    ] {
        let s = d.stage(stage);
        assert_eq!(s.from, "runtime-base", "{stage}");
        let body: Vec<(&str, &str)> = s
            .body
            .iter()
            .map(|i| (i.keyword.as_str(), i.rest.as_str()))
            .collect();
        assert_eq!(body, [("COPY", copy.as_str())], "{stage}");
    }
    assert!(
        d.stage("build")
            .body
            .iter()
            .any(|i| i.keyword == "RUN" && i.rest.contains("cargo build --release --locked")),
        "the build stage compiles the locked release build"
    );
    // A numeric non-root user that the image creates, owning the working directory.
    let (uid, gid) = d.user();
    assert!(uid != 0 && gid != 0, "runs as root: {uid}:{gid}");
    let setup: String = d
        .stage("runtime-base")
        .body
        .iter()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.rest.clone())
        .collect();
    assert!(
        setup.contains(&format!("useradd --uid {uid} --gid {gid}")),
        "{setup}"
    );
    assert!(
        setup.contains(&format!("-o {uid} -g {gid} {}", d.workdir())),
        "the working directory belongs to the user: {setup}"
    );
    // The entrypoint is the binary itself (no wrapper script writing anywhere) and nothing after
    // USER runs as root at build time or declares an anonymous volume.
    assert_eq!(binary, "/usr/local/bin/tapedeck");
    let base = &d.stage("runtime-base").body;
    let user_at = base.iter().position(|i| i.keyword == "USER").expect("USER");
    assert!(
        base[user_at..]
            .iter()
            .all(|i| !matches!(i.keyword.as_str(), "RUN" | "VOLUME")),
        "no RUN or VOLUME after USER"
    );
}

/// The Rust image the `build` stage uses is at least as new as every crate in Cargo.lock needs
/// (and as the workspace's `rust-version`, which README states), and both base images are the
/// same Debian release, so the binary finds the glibc it was linked against.
#[test]
fn dockerfile_rust_image_builds_the_lockfile() {
    let d = Dockerfile::read();
    let (rust, build_release) = image_tag(d.arg("RUST_IMAGE"));
    let (_, runtime_release) = image_tag(d.arg("RUNTIME_IMAGE"));
    assert!(!build_release.is_empty(), "{}", d.arg("RUST_IMAGE"));
    assert_eq!(
        build_release, runtime_release,
        "build and runtime Debian releases"
    );
    // This platform's packages only: a build downloads no others (`android_system_properties`,
    // say), so `--offline` metadata of every platform fails on a fresh machine. The image is
    // built for Linux, like this machine.
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let o = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).expect("metadata json");
    let mut newest = ((0, 0), String::new());
    let mut workspace = None;
    for p in meta["packages"].as_array().expect("packages") {
        let Some(v) = p["rust_version"].as_str() else {
            continue;
        };
        if p["name"] == "tapedeck" {
            workspace = Some(version(v));
        }
        if version(v) > newest.0 {
            newest = (version(v), format!("{} {}", p["name"], p["version"]));
        }
    }
    assert!(newest.0 > (1, 0), "no rust_version found in cargo metadata");
    assert!(
        version(&rust) >= newest.0,
        "RUST_IMAGE {rust} is older than {} needs ({:?})",
        newest.1,
        newest.0
    );
    assert_eq!(
        workspace,
        Some(newest.0),
        "the workspace's rust-version (README's minimum) is what {} needs",
        newest.1
    );
}

/// Rootful podman with its own storage, run root and temp dir under a temporary directory, so
/// nothing is shared with other podman users of the machine; removed on drop.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// `None` (with a note) when the image tests are skipped on purpose; panics when a tool is
    /// missing otherwise.
    fn new() -> Option<Podman> {
        if std::env::var_os(SKIP_ENV).is_some_and(|v| !v.is_empty()) {
            eprintln!("container image test skipped on purpose: {SKIP_ENV} is set");
            return None;
        }
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        assert!(root, "the container image test runs rootful podman: {HINT}");
        for tool in ["podman", "runc", "mmdebstrap", "strip"] {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
            assert!(found, "`{tool}` not found: {HINT}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tmp")).expect("podman's temp dir");
        Some(Podman { dir })
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        // overlay where the kernel has it (ten times faster than vfs, which copies every layer);
        // runc, as crun refuses hosts with a hybrid cgroup v1/v2 hierarchy like CI's.
        let overlay = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| {
            f.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        });
        let mut c = Command::new("podman");
        // Build contexts and layer blobs are staged under $TMPDIR (default /var/tmp): keep them here.
        c.env("TMPDIR", d.join("tmp"))
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", if overlay { "overlay" } else { "vfs" }])
            .args(["--runtime", "runc", "--events-backend", "none"]);
        c
    }

    fn run(&self, args: &[&str], timeout: Duration) -> Output {
        run_command(self.cmd().args(args), timeout)
    }

    fn ok(&self, args: &[&str], timeout: Duration) -> Output {
        let o = self.run(args, timeout);
        assert!(
            o.status.success(),
            "podman {args:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `podman ARGS` with its output discarded, waited for a minute at most, then killed.
    /// Never panics: it runs from `drop`, possibly while a test panics.
    fn run_quietly(&self, args: &[&str]) {
        if let Ok(mut child) = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.run_quietly(&["rm", "--all", "--force"]);
    }
}

/// A detached container, force-removed on drop.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        self.podman.run_quietly(&["rm", "--force", &self.name]);
    }
}

/// `--ulimit` flags within this process's hard limits: rootful podman's defaults (1048576 open
/// files) exceed them where root lacks CAP_SYS_RESOURCE, as on CI's machine.
fn ulimits() -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = |label: &str| -> u64 {
        limits
            .lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l[label.len()..].split_whitespace().nth(1))
            .and_then(|h| h.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let files = hard("Max open files").min(4096);
    let procs = hard("Max processes").min(4096);
    vec![
        format!("--ulimit=nofile={files}:{files}"),
        format!("--ulimit=nproc={procs}:{procs}"),
    ]
}

/// A root filesystem tarball of Debian `release`'s minbase (what `debian:<release>-slim` is made
/// of), made with mmdebstrap and kept for a week under the target dir.
fn debian_minbase(release: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("container");
    std::fs::create_dir_all(&dir).expect("create cache dir");
    let tar = dir.join(format!("debian-{release}-minbase.tar"));
    let fresh = std::fs::metadata(&tar)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(7 * 24 * 3600));
    if !fresh {
        let partial = dir.join(format!(
            "debian-{release}-minbase.{}.tar",
            std::process::id()
        ));
        let o = run_command(
            Command::new("mmdebstrap")
                .args(["--variant=minbase", "--quiet", release])
                .arg(&partial),
            Duration::from_secs(1200),
        );
        assert!(
            o.status.success(),
            "mmdebstrap {release} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::rename(&partial, &tar).expect("keep the base tarball");
    }
    tar
}

fn chown_to(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .expect("chown a volume to the image's user");
}

#[test]
fn image_runs_demo_and_record_read_only_as_non_root() {
    let Some(podman) = Podman::new() else {
        return;
    };
    let d = Dockerfile::read();
    let (uid, gid) = d.user();
    let (_, release) = image_tag(d.arg("RUNTIME_IMAGE"));
    let base = format!("localhost/tapedeck-test/debian:{release}-slim");
    let image = format!(
        "localhost/tapedeck-test/tapedeck:{}",
        env!("CARGO_PKG_VERSION")
    );

    // The runtime stage around the binary under test (debug info stripped: the image stays small).
    let tar = debian_minbase(&release);
    podman.ok(
        &["import", tar.to_str().expect("utf-8 path"), &base],
        Duration::from_secs(300),
    );
    let ctx = podman.path("context");
    std::fs::create_dir(&ctx).expect("context dir");
    let o = run_command(
        Command::new("strip")
            .arg("-o")
            .arg(ctx.join("tapedeck"))
            .arg(env!("CARGO_BIN_EXE_tapedeck")),
        Duration::from_secs(120),
    );
    assert!(
        o.status.success(),
        "strip: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let runtime_image = format!("RUNTIME_IMAGE={base}");
    // Host network for the build only: its RUN fetches ca-certificates from the Debian mirror.
    podman.ok(
        &[
            "build",
            "--pull=never",
            "--network=host",
            "--target=prebuilt",
            "--build-arg",
            &runtime_image,
            "--file",
            dockerfile.to_str().expect("utf-8 path"),
            "--tag",
            &image,
            ctx.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(900),
    );
    let config = podman.ok(
        &["image", "inspect", "--format", "{{json .Config}}", &image],
        Duration::from_secs(60),
    );
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).expect("config json");
    assert_eq!(config["User"], format!("{uid}:{gid}"), "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!([d.binary()]),
        "{config}"
    );
    assert_eq!(config["WorkingDir"], d.workdir(), "{config}");

    // How README and deploy/ run it: read-only root (podman would add tmpfs mounts on /tmp, /run
    // and /var/tmp by itself; Docker and Kubernetes do not), nothing privileged.
    let mut locked_down = vec![
        "--read-only".to_owned(),
        "--read-only-tmpfs=false".to_owned(),
        "--cap-drop=all".to_owned(),
        "--security-opt=no-new-privileges".to_owned(),
    ];
    locked_down.extend(ulimits());
    let with = |head: &[&str], tail: &[&str]| -> Vec<String> {
        head.iter()
            .map(|s| (*s).to_owned())
            .chain(locked_down.iter().cloned())
            .chain(tail.iter().map(|s| (*s).to_owned()))
            .collect()
    };

    // The root filesystem really is read-only: without a volume the demo cannot write.
    let args = with(&["run", "--rm", "--network=none"], &[&image, "demo"]);
    let o = podman.run(&as_strs(&args), Duration::from_secs(300));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");

    // The demo, with only its working directory on a volume and no network at all.
    let work = podman.path("work");
    std::fs::create_dir(&work).expect("work dir");
    chown_to(&work, uid, gid);
    let volume = format!("{}:{}", work.display(), d.workdir());
    let args = with(
        &["run", "--rm", "--network=none", "--volume", &volume],
        &[&image, "demo"],
    );
    let o = podman.run(&as_strs(&args), Duration::from_secs(600));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "demo in the image failed ({}):\n{out}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("demo OK"), "{out}");
    for f in ["report.html", "report.md", "junit.xml", "verdict.json"] {
        let p = work.join("tapedeck-demo/report").join(f);
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{} owner", p.display());
    }

    // The record sidecar (deploy/k8s/sidecar.yaml's flags) with the tape on a volume, on the
    // host's loopback, stopped by SIGTERM like a pod.
    let upstream = TestServer::start(|r| Reply::json(format!(r#"{{"uri":"{}"}}"#, r.uri)));
    let tapes = podman.path("tapes");
    std::fs::create_dir(&tapes).expect("tapes dir");
    chown_to(&tapes, uid, gid);
    let (port, admin) = (free_port(), free_port());
    let name = format!("tapedeck-test-record-{}", std::process::id());
    let volume = format!("{}:/tapes", tapes.display());
    let listen = format!("--listen=127.0.0.1:{port}");
    let upstream_flag = format!("--upstream={}", upstream.url());
    let admin_flag = format!("--admin=127.0.0.1:{admin}");
    let args = with(
        &[
            "run",
            "--detach",
            "--name",
            &name,
            "--network=host",
            "--volume",
            &volume,
        ],
        &[
            &image,
            "record",
            &listen,
            &upstream_flag,
            "--tape=/tapes/shop/pod-0",
            &admin_flag,
            "--max-body=256KiB",
            "--grace-period=1s",
            "--log-format=json",
        ],
    );
    podman.ok(&as_strs(&args), Duration::from_secs(300));
    let container = Container {
        podman: &podman,
        name: name.clone(),
    };
    let logs = || {
        let o = podman.run(&["logs", &name], Duration::from_secs(60));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        wait_for_port(addr, Duration::from_secs(60)),
        "record did not listen:\n{}",
        logs()
    );
    const REQUESTS: usize = 20;
    for i in 0..REQUESTS {
        let (code, body) = curl(&[&format!("http://127.0.0.1:{port}/api/items/{i}")]);
        assert_eq!(code, 200, "{body}\n{}", logs());
        assert!(body.contains(&format!("/api/items/{i}")), "{body}");
    }
    let (code, body) = curl(&[&format!("http://127.0.0.1:{admin}/healthz")]);
    assert_eq!((code, body.contains("ok")), (200, true), "{body}");
    podman.ok(&["stop", "--time=30", &name], Duration::from_secs(90));
    let exit = podman.ok(
        &["inspect", "--format", "{{.State.ExitCode}}", &name],
        Duration::from_secs(60),
    );
    assert_eq!(
        String::from_utf8_lossy(&exit.stdout).trim(),
        "0",
        "record's exit code after SIGTERM:\n{}",
        logs()
    );
    drop(container);
    let tape = tapes.join("shop/pod-0");
    let exchanges = read_tape(&tape);
    assert_eq!(exchanges.len(), REQUESTS, "exchanges on the tape volume");
    let sealed: Vec<PathBuf> = walk(&tape)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(
        !sealed.is_empty(),
        "no sealed Parquet file under {}",
        tape.display()
    );
    for p in sealed {
        let m = std::fs::metadata(&p).expect("stat");
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{} owner", p.display());
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
