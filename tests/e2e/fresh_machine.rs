//! A fresh machine with only a Rust toolchain and a C compiler builds tapedeck (issue 17, item 1):
//! nothing in the dependency graph needs the `cmake` program. pingora-core turns on flate2's
//! `zlib-ng` feature, whose `libz-ng-sys` builds zlib-ng with cmake; the workspace patches that
//! crate with `patches/libz-ng-sys`, which forwards the same API to the pure-Rust zlib-rs.

use std::process::Command;

/// Every package of the workspace's build graph for this machine (normal and build dependencies),
/// one `name vX.Y.Z (source)` line each.
fn build_graph() -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--workspace",
            "--offline",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn zlib_comes_from_the_pure_rust_patch_not_zlib_ng() {
    let graph = build_graph();
    let names: Vec<&str> = graph
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The probe can fail: the graph is non-trivial and holds the crates we depend on.
    for expected in [
        "tapedeck",
        "pingora-core",
        "flate2",
        "libz-ng-sys",
        "libz-rs-sys",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from:\n{graph}"
        );
    }
    // (The `cmake` crate is still in the graph as a build dependency of aws-lc-sys, which
    // builds with `cc` on Linux and needs the cmake program only when told to or when
    // cross-compiling; CI's machine has no cmake, so its build proves this.)
    for banned in ["libz-sys", "cloudflare-zlib-sys"] {
        assert!(
            !names.contains(&banned),
            "{banned} is in the build graph: a fresh machine would need a C zlib"
        );
    }
    let zng = graph
        .lines()
        .find(|l| l.starts_with("libz-ng-sys "))
        .expect("libz-ng-sys line");
    assert!(
        zng.contains("patches/libz-ng-sys"),
        "libz-ng-sys must come from the workspace's patch, not crates.io: {zng}"
    );
}
