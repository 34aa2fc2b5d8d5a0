//! The rules-file parser (`tapedeck diff --rules`) and its validation on arbitrary text.
//! Property: no panic; parse errors name the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tapedeck_diff::config::Slo;
use tapedeck_diff::route::RouteKeyer;
use tapedeck_diff::{DiffOptions, RulesFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz-rules.toml");
    let rules = match RulesFile::parse(text, path) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                e.to_string().contains("fuzz-rules.toml"),
                "error without file: {e}"
            );
            return;
        }
    };
    for s in &rules.slo {
        let _ = Slo::parse(s);
    }
    for ignore in &rules.ignore {
        let _ = ignore.matches("GET /api/users/{id}", "$.a[0].b");
    }
    let mut keyer = RouteKeyer::new(&rules.routes, 3);
    for p in ["/", "/api/users/17", "/a/b/c", "//x", ""] {
        let _ = keyer.key("GET", p, Some("a=1&b"));
    }
    let _ = DiffOptions::new("/nonexistent-fuzz-run").validate_with(rules);
});
