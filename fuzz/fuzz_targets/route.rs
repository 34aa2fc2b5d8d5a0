//! The route templater (`template_path`) and the route keyer (explicit templates, `{id}`
//! inference, high-cardinality `{param}` collapse and re-keying) on arbitrary text.
//!
//! Input lines: the first is an explicit template, the rest are `METHOD PATH[?QUERY]` requests.
//! Properties: no panic; templating is idempotent; keys start with the upper-cased method;
//! re-keying a key twice gives the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_diff::config::RouteTemplate;
use tapedeck_diff::route::{RouteKeyer, without_query};
use tapedeck_storage::route::template_path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let template = lines.next().unwrap_or_default();
    let templates = [RouteTemplate {
        method: None,
        template: template.to_owned(),
    }];
    let max_distinct = template.len() % 4;
    let mut keyer = RouteKeyer::new(&templates, max_distinct);
    let mut keys = Vec::new();
    for line in lines.take(256) {
        let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let t = template_path(path);
        assert_eq!(
            template_path(&t),
            t,
            "template_path is not idempotent on {path:?}"
        );
        let key = keyer.key(method, path, query);
        assert!(
            key.starts_with(&method.to_ascii_uppercase()),
            "key {key:?} for method {method:?}"
        );
        let _ = without_query(&key);
        let _ = keyer.template(method, path);
        keys.push(key);
    }
    for key in &keys {
        let once = keyer.rekey(key);
        let twice = keyer.rekey(&once);
        assert_eq!(once, twice, "rekey is not idempotent on {key:?}");
    }
});
