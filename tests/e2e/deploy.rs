//! The examples under `deploy/` (issues 6 and 17): every file parses, every `tapedeck` command
//! line in them uses flags the real binary accepts, the Kubernetes containers run the image the
//! Dockerfile builds the way it is built to run (its user, a read-only root filesystem, every path
//! tapedeck writes on a volume), and the CI examples fail their job on a regression and publish
//! the reports. Needs `python3` with PyYAML (`pip install pyyaml`), which parses the YAML and
//! splits shell scripts into command lines (`shlex`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::container::Dockerfile;
use crate::util::{run, stderr};

/// Parses deploy/ and prints JSON: every container running the tapedeck image (with its pod's
/// security context), the CI files as data, and every `tapedeck` command line in their scripts.
const EXTRACT: &str = r#"
import json, pathlib, shlex, sys, yaml

OPS = {";", "&&", "||", "|", "&", "(", ")", ";;"}
REDIRECTS = {">", ">>", "<", ">&", "<&", ">|", "&>"}
KEYWORDS = {"if", "then", "elif", "else", "do", "while", "until", "!", "exec", "time"}

def commands(script):
    """The simple commands of a shell script, as argv lists (line continuations joined)."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        cmd, redirected = [], False
        for tok in list(lex) + [";"]:
            if tok in OPS:
                while cmd and cmd[0] in KEYWORDS:
                    cmd.pop(0)
                if cmd:
                    out.append(cmd)
                cmd, redirected = [], False
            elif tok in REDIRECTS:
                redirected = True
            elif not redirected:
                cmd.append(tok)
    return out

def tapedeck_argvs(script):
    return [c[1:] for c in commands(script) if c[0] == "tapedeck" or c[0].endswith("/tapedeck")]

root = pathlib.Path(sys.argv[1])
containers = []

def walk(node, file, pod):
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            pod = node
        if "image" in node and "tapedeck" in str(node["image"]):
            cmd, args = node.get("command") or [], [str(a) for a in node.get("args") or []]
            if cmd[:2] == ["/bin/sh", "-c"]:
                found = tapedeck_argvs(args[0].replace("$JOB_COMPLETION_INDEX", "0"))
                assert len(found) == 1, (file, args)
                argv = found[0]
            else:
                argv = args
            containers.append({
                "file": file,
                "image": node["image"],
                "argv": argv,
                "securityContext": node.get("securityContext") or {},
                "podSecurityContext": (pod or {}).get("securityContext") or {},
                "volumeMounts": node.get("volumeMounts") or [],
                "env": node.get("env") or [],
            })
        for v in node.values():
            walk(v, file, pod)
    elif isinstance(node, list):
        for v in node:
            walk(v, file, pod)

for p in sorted(root.rglob("*.yaml")):
    docs = list(yaml.safe_load_all(p.read_text()))
    assert docs and all(isinstance(d, dict) and "kind" in d for d in docs), p
    walk(docs, str(p), None)

ci = {}
for p in sorted((root / "ci").glob("*.yml")):
    doc = yaml.safe_load(p.read_text())
    runs = []
    if "jobs" in doc:  # GitHub Actions
        for job_name, job in doc["jobs"].items():
            for step in job.get("steps") or []:
                if "run" in step:
                    runs.append({"job": job_name, "step": step.get("name"), "script": step["run"]})
    else:  # GitLab CI: every job with a script
        for job_name, job in doc.items():
            if isinstance(job, dict) and "script" in job:
                for key in ("before_script", "script", "after_script"):
                    for line in job.get(key) or []:
                        runs.append({"job": job_name, "step": key, "script": line})
    for r in runs:
        r["argvs"] = tapedeck_argvs(r["script"])
    ci[p.name] = {"doc": json.loads(json.dumps(doc, default=str)), "runs": runs}

print(json.dumps({"containers": containers, "ci": ci}))
"#;

fn extract() -> Value {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(EXTRACT)
        .arg(&deploy)
        .output()
        .expect("python3 is needed to check deploy/");
    assert!(
        o.status.success(),
        "deploy/ did not parse (is PyYAML installed? pip install pyyaml):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("extractor output")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect()
}

/// `tapedeck ARGV --help` must succeed: clap rejects unknown flags and bad values before it
/// prints the help. For `serve`, flags after `--` are check's and are tried on `check`.
fn assert_flags_accepted(where_: &str, argv: &[String]) {
    let (own, check) = match argv.iter().position(|a| a == "--") {
        Some(i) => (argv[..i].to_vec(), Some(argv[i + 1..].to_vec())),
        None => (argv.to_vec(), None),
    };
    let mut with_help: Vec<&str> = own.iter().map(String::as_str).collect();
    with_help.push("--help");
    let o = run(&with_help, Duration::from_secs(30));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{where_}: {own:?}: {}",
        stderr(&o)
    );
    if let Some(check) = check {
        let mut argv = vec![
            "check",
            "--tape",
            "t",
            "--baseline",
            "b",
            "--candidate",
            "c",
        ];
        argv.extend(check.iter().map(String::as_str));
        argv.push("--help");
        let o = run(&argv, Duration::from_secs(30));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{where_}: {check:?}: {}",
            stderr(&o)
        );
    }
}

/// The values of `--name` in `argv` (`--name value` and `--name=value`).
fn flag_values(argv: &[String], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == name {
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        } else if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            out.push(v.to_owned());
        }
    }
    out
}

/// The image every example uses: the Dockerfile's image under the placeholder registry, tagged
/// with the crate's version.
fn expected_image() -> String {
    format!("ghcr.io/example/tapedeck:{}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn deploy_examples_parse_and_use_real_flags() {
    let out = extract();
    let containers = out["containers"].as_array().expect("containers");
    let files: BTreeSet<&str> = containers
        .iter()
        .filter_map(|c| c["file"].as_str())
        .collect();
    assert!(containers.len() >= 5, "{containers:?}");
    for needed in [
        "argo/analysis-template-job.yaml",
        "k8s/sidecar.yaml",
        "k8s/serve.yaml",
        "replay-job.yaml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(needed)),
            "no tapedeck container in {needed}"
        );
    }
    for c in containers {
        let argv = strings(&c["argv"]);
        assert_flags_accepted(c["file"].as_str().unwrap_or("?"), &argv);
    }
}

/// Every tapedeck container runs the image the Dockerfile builds as it is built to run: its
/// numeric user, non-root, a read-only root filesystem, no privilege escalation, no capabilities;
/// and every path tapedeck writes (or reads) is on a volume, writable where it writes. With an
/// object-store URL, tapedeck stages files under /tmp: /tmp must be a writable volume then.
#[test]
fn deploy_containers_match_the_image_and_run_read_only() {
    let image = Dockerfile::read();
    let (uid, gid) = image.user();
    let out = extract();
    for c in out["containers"].as_array().expect("containers") {
        let file = c["file"].as_str().unwrap_or("?");
        let argv = strings(&c["argv"]);
        assert_eq!(c["image"], expected_image(), "{file}");
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsUser"], uid, "{file}: runAsUser: {sc}");
        assert_eq!(sc["runAsGroup"], gid, "{file}: runAsGroup: {sc}");
        assert_eq!(sc["runAsNonRoot"], true, "{file}: {sc}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{file}: {sc}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{file}: {sc}");
        assert!(
            strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_owned()),
            "{file}: capabilities: {sc}"
        );
        let mounts: Vec<(String, bool)> = c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| {
                (
                    m["mountPath"].as_str().expect("mountPath").to_owned(),
                    m["readOnly"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        let mounted = |path: &str, writable: bool| {
            mounts.iter().any(|(mp, ro)| {
                (path == mp || path.starts_with(&format!("{}/", mp.trim_end_matches('/'))))
                    && !(writable && *ro)
            })
        };
        // serve's flags after `--` are check's: its reports go under --runs.
        let own = match argv.iter().position(|a| a == "--") {
            Some(i) => &argv[..i],
            None => &argv[..],
        };
        let sub = own.first().map(String::as_str).unwrap_or_default();
        let writes: &[&str] = match sub {
            "record" => &["--tape"],
            "serve" => &["--runs"],
            "check" => &["--report", "--ticket", "--out"],
            "replay" => &["--out"],
            "diff" => &["--report", "--write-rules"],
            other => panic!("{file}: no write paths known for `tapedeck {other}`"),
        };
        let mut remote = false;
        for flag in ["--tape", "--run", "--runs", "--report", "--ticket", "--out"] {
            let writable = writes.contains(&flag);
            for value in flag_values(own, flag) {
                if value.contains("://") {
                    remote = true;
                } else {
                    assert!(
                        value.starts_with('/'),
                        "{file}: {flag} {value}: use absolute paths on volumes"
                    );
                    assert!(
                        mounted(&value, writable),
                        "{file}: {flag} {value} is not on a{} volume: {mounts:?}",
                        if writable { " writable" } else { "" }
                    );
                }
            }
        }
        if remote {
            assert!(
                mounted("/tmp", true),
                "{file}: object-store URLs stage files under /tmp, which is read-only here: {mounts:?}"
            );
        }
        // record's tape and serve's runs are on persistent volumes: the pod gives them the image's
        // group, so the non-root user can write them.
        let pod = &c["podSecurityContext"];
        if sub == "record" || sub == "serve" {
            assert_eq!(pod["fsGroup"], gid, "{file}: pod fsGroup: {pod}");
        }
    }
}

/// `deploy/ci/`: a GitHub Actions workflow and a GitLab CI file that run `tapedeck check` against
/// a preview deploy with flags the binary accepts, fail the job on exit 1 (nothing turns a
/// non-zero exit into a pass), publish junit.xml as the CI system's test report and keep
/// report.md and report.html as artifacts, also when the check failed.
#[test]
fn ci_examples_run_check_publish_junit_and_fail_on_regression() {
    let image = Dockerfile::read();
    let out = extract();
    let ci = out["ci"].as_object().expect("ci");
    let names: BTreeSet<&str> = ci.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["github-actions.yml", "gitlab-ci.yml"]),
        "deploy/ci/"
    );
    for (name, file) in ci {
        let mut checks = 0;
        for r in file["runs"].as_array().expect("runs") {
            let script = r["script"].as_str().expect("script");
            for argv in r["argvs"].as_array().expect("argvs") {
                let argv = strings(argv);
                assert_flags_accepted(name, &argv);
                if argv.first().map(String::as_str) != Some("check") {
                    continue;
                }
                checks += 1;
                // Exit 1 must fail the job: no `|| true`, no `set +e` around the check.
                for soft in ["||", "set +e"] {
                    assert!(!script.contains(soft), "{name}: `{soft}` in {script}");
                }
                assert_eq!(
                    flag_values(&argv, "--inconclusive-as"),
                    ["fail"],
                    "{name}: an inconclusive check must not pass the job"
                );
                let report = flag_values(&argv, "--report");
                assert_eq!(report.len(), 1, "{name}: {argv:?}");
                let job = r["job"].as_str().expect("job");
                let doc = &file["doc"];
                if name.starts_with("github") {
                    check_github(&doc["jobs"][job], &report[0], &image);
                } else {
                    check_gitlab(&doc[job], &report[0]);
                }
            }
        }
        assert_eq!(checks, 1, "{name}: one `tapedeck check` expected");
    }
}

fn check_github(job: &Value, report: &str, image: &Dockerfile) {
    assert_ne!(job["continue-on-error"], true, "{job}");
    assert_eq!(job["env"]["TAPEDECK_IMAGE"], expected_image(), "{job}");
    let steps = job["steps"].as_array().expect("steps");
    for step in steps {
        assert_ne!(step["continue-on-error"], true, "{step}");
    }
    // The binary is copied out of the image from where the Dockerfile puts it.
    let install = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("docker cp"))
        .expect("a step copies tapedeck out of the image");
    assert!(
        install.contains(&format!(":{} ", image.binary())),
        "{install}"
    );
    let always = |s: &&Value| s["if"].as_str().is_some_and(|c| c.contains("always()"));
    let junit = format!("{report}/junit.xml");
    assert!(
        steps
            .iter()
            .filter(always)
            .any(|s| s["uses"].is_string() && s["with"].to_string().contains(&junit)),
        "no `if: always()` step publishes {junit}"
    );
    let upload = steps
        .iter()
        .filter(always)
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("an `if: always()` actions/upload-artifact step");
    let paths = upload["with"]["path"].as_str().expect("path");
    for f in ["report.md", "report.html"] {
        assert!(paths.contains(&format!("{report}/{f}")), "{paths}");
    }
}

fn check_gitlab(job: &Value, report: &str) {
    assert_eq!(job["image"]["name"], expected_image(), "{job}");
    assert_eq!(
        job["image"]["entrypoint"],
        serde_json::json!([""]),
        "the runner needs the image's shell: reset the entrypoint"
    );
    assert!(
        job["allow_failure"].is_null() || job["allow_failure"] == false,
        "{job}"
    );
    let artifacts = &job["artifacts"];
    assert_eq!(artifacts["when"], "always", "{artifacts}");
    assert_eq!(
        artifacts["reports"]["junit"],
        format!("{report}/junit.xml"),
        "{artifacts}"
    );
    let paths = strings(&artifacts["paths"]);
    for f in ["report.md", "report.html"] {
        assert!(paths.contains(&format!("{report}/{f}")), "{paths:?}");
    }
}
