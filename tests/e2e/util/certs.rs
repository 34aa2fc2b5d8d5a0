//! Test certificates made with the `openssl` program at run time.

use std::path::Path;
use std::process::Stdio;

use super::stderr;

/// Runs the `openssl` program in `dir` (Debian package `openssl`; `.ci/run` installs it).
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl program (Debian package `openssl`) is needed for the TLS test");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A test CA (`ca.pem`, `ca.key`) and a leaf certificate for 127.0.0.1 signed by it
/// (`leaf.pem`, `leaf.key`), in `dir`.
pub fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tapedeck test CA",
    ]);
    openssl(dir, &ca);
    make_signed_cert(dir, "leaf", "127.0.0.1", "IP:127.0.0.1");
}

/// A certificate `<stem>.pem` / `<stem>.key` signed by the CA of [`make_certs`] (which must
/// have run in `dir`), with common name `cn` and subjectAltName `san` (e.g. `DNS:api.internal`
/// or `IP:127.0.0.1`). Usable by servers and as a client certificate.
pub fn make_signed_cert(dir: &Path, stem: &str, cn: &str, san: &str) {
    let (key, csr, ext, pem) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.ext"),
        format!("{stem}.pem"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}
