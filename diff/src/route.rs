//! Route keys: method, path template and the names (not values) of query parameters, e.g.
//! `GET /api/users/{id}?fields&page`. Exchanges are grouped and judged per route.
//!
//! A path becomes a template in three ways, in order: an explicit template from the rules file;
//! identifier-looking segments (numbers, UUIDs, hex, long tokens) become `{id}`
//! ([`tapedeck_storage::route::template_path`]); and **high-cardinality** segments become
//! `{param}`: when more than `max_distinct` different literal values are seen at one position
//! under the same method, depth and templated prefix (slugs such as `/products/blue-shirt`).
//! Inference is streaming, so routes keyed before a position collapsed are merged afterwards with
//! [`RouteKeyer::rekey`]; at most `max_distinct` routes per position exist before that.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::{RouteTemplate, Settings};

/// Placeholder for a high-cardinality segment.
pub const PARAM: &str = "{param}";

/// How a judge turns requests into route keys: the rules' explicit templates and the
/// high-cardinality threshold (`settings.route_cardinality`). Written to `verdict.json`
/// (`route_keys`) so that whatever reads a report later (a ticket) keys the run's requests
/// exactly as the judge did, without the rules file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteKeys {
    /// Explicit path templates, tried first.
    pub templates: Vec<RouteTemplate>,
    /// Segments with more distinct values than this at one position become `{param}` (0: off).
    pub cardinality: usize,
}

impl Default for RouteKeys {
    /// No templates and the default threshold: how a judge without a rules file keys.
    fn default() -> Self {
        Self {
            templates: Vec::new(),
            cardinality: Settings::default().route_cardinality,
        }
    }
}

impl RouteKeys {
    /// A fresh keyer with these templates and this threshold.
    pub fn keyer(&self) -> RouteKeyer {
        RouteKeyer::new(&self.templates, self.cardinality)
    }
}

/// Turns a request into its route key.
#[derive(Debug, Clone, Default)]
pub struct RouteKeyer {
    templates: Vec<(Option<String>, Vec<String>, String)>,
    max_distinct: usize,
    /// Distinct literal values per position signature (capped at `max_distinct + 1`).
    seen: HashMap<String, HashSet<String>>,
    /// Position signatures whose segment is a parameter.
    collapsed: HashSet<String>,
}

fn is_placeholder(seg: &str) -> bool {
    seg.starts_with('{') && seg.ends_with('}')
}

impl RouteKeyer {
    /// A keyer that tries the explicit `templates` first, then infers (numeric ids, UUIDs, hex
    /// and long token segments become `{id}`; segments with more than `max_distinct` values at
    /// one position become `{param}`; `0` turns that off).
    pub fn new(templates: &[RouteTemplate], max_distinct: usize) -> Self {
        Self {
            templates: templates
                .iter()
                .map(|t| {
                    (
                        t.method.as_ref().map(|m| m.to_ascii_uppercase()),
                        t.template.split('/').map(str::to_owned).collect(),
                        t.template.clone(),
                    )
                })
                .collect(),
            max_distinct,
            seen: HashMap::new(),
            collapsed: HashSet::new(),
        }
    }

    fn explicit(&self, method: &str, path: &str) -> Option<String> {
        let segs: Vec<&str> = path.split('/').collect();
        self.templates.iter().find_map(|(m, pattern, template)| {
            if m.as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(method))
            {
                return None;
            }
            let hit = pattern.len() == segs.len()
                && pattern
                    .iter()
                    .zip(&segs)
                    .all(|(p, s)| (is_placeholder(p) && !s.is_empty()) || p == s);
            hit.then(|| template.clone())
        })
    }

    /// Applies the collapsed positions to a templated path (and, when `observe`, records the
    /// literal segments seen).
    fn infer(&mut self, method: &str, templated: &str, observe: bool) -> String {
        if self.max_distinct == 0 {
            return templated.to_owned();
        }
        let depth = templated.split('/').count();
        // The signature of position i: method, depth and the (inferred) prefix before it.
        let mut sig = format!("{method} {depth} ");
        let mut out = String::with_capacity(templated.len());
        for (i, seg) in templated.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            if i == 0 || seg.is_empty() || is_placeholder(seg) {
                out.push_str(seg);
                continue;
            }
            let key_len = sig.len();
            sig.push_str(&out);
            let collapsed = if self.collapsed.contains(sig.as_str()) {
                true
            } else if observe {
                match self.seen.get_mut(sig.as_str()) {
                    Some(set) => {
                        if !set.contains(seg) {
                            set.insert(seg.to_owned());
                        }
                        if set.len() > self.max_distinct {
                            self.seen.remove(sig.as_str());
                            self.collapsed.insert(sig.clone());
                            true
                        } else {
                            false
                        }
                    }
                    None => {
                        let mut set = HashSet::new();
                        set.insert(seg.to_owned());
                        self.seen.insert(sig.clone(), set);
                        false
                    }
                }
            } else {
                false
            };
            sig.truncate(key_len);
            out.push_str(if collapsed { PARAM } else { seg });
        }
        out
    }

    /// The path template of `path` (without method and query); records what it saw.
    pub fn template(&mut self, method: &str, path: &str) -> String {
        if let Some(t) = self.explicit(method, path) {
            return t;
        }
        let templated = tapedeck_storage::route::template_path(path);
        self.infer(&method.to_ascii_uppercase(), &templated, true)
    }

    /// The route key of a request; records what it saw.
    pub fn key(&mut self, method: &str, path: &str, query: Option<&str>) -> String {
        let mut key = format!(
            "{} {}",
            method.to_ascii_uppercase(),
            self.template(method, path)
        );
        if let Some(q) = query {
            let mut names: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').map_or(p, |(n, _)| n))
                .collect();
            names.sort_unstable();
            names.dedup();
            if !names.is_empty() {
                key.push('?');
                key.push_str(&names.join("&"));
            }
        }
        key
    }

    /// A key made earlier, with the positions that collapsed since applied.
    pub fn rekey(&mut self, key: &str) -> String {
        let (head, query) = match key.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (key, None),
        };
        let Some((method, path)) = head.split_once(' ') else {
            return key.to_owned();
        };
        if self.explicit(method, path).as_deref() == Some(path) {
            return key.to_owned();
        }
        let path = self.infer(method, path, false);
        match query {
            Some(q) => format!("{method} {path}?{q}"),
            None => format!("{method} {path}"),
        }
    }
}

/// Does route key `key` (as one request gives it) belong to the verdict's route `route`?
/// `{param}` segments in `route` (high-cardinality inference) match any segment; the query part
/// must be equal. Tickets and the regression corpus use it to find a verdict's route again.
pub fn matches(route: &str, key: &str) -> bool {
    let split = |s: &str| -> (String, Option<String>) {
        match s.split_once('?') {
            Some((h, q)) => (h.to_owned(), Some(q.to_owned())),
            None => (s.to_owned(), None),
        }
    };
    let (rh, rq) = split(route);
    let (kh, kq) = split(key);
    if rq != kq {
        return false;
    }
    let (Some((rm, rp)), Some((km, kp))) = (rh.split_once(' '), kh.split_once(' ')) else {
        return rh == kh;
    };
    if rm != km {
        return false;
    }
    let rs: Vec<&str> = rp.split('/').collect();
    let ks: Vec<&str> = kp.split('/').collect();
    rs.len() == ks.len() && rs.iter().zip(&ks).all(|(r, k)| r == k || *r == PARAM)
}

/// The route key without its query-parameter names (what SLOs are written against).
pub fn without_query(key: &str) -> &str {
    key.split_once('?').map_or(key, |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_params() {
        assert!(matches("GET /api/users/{id}", "GET /api/users/{id}"));
        assert!(matches("GET /p/{param}", "GET /p/blue-shirt"));
        assert!(!matches("GET /p/{param}", "GET /p/a/b"));
        assert!(matches(
            "GET /api/users?page&per_page",
            "GET /api/users?page&per_page"
        ));
        assert!(!matches("GET /api/users?page", "GET /api/users"));
        assert!(!matches("POST /a", "GET /a"));
    }

    #[test]
    fn keys_use_templates_and_query_names() {
        let mut k = RouteKeyer::new(
            &[RouteTemplate {
                method: Some("get".into()),
                template: "/api/items/{slug}".into(),
            }],
            50,
        );
        assert_eq!(
            k.key("GET", "/api/items/blue-shirt", None),
            "GET /api/items/{slug}"
        );
        assert_eq!(
            k.key("POST", "/api/items/blue-shirt", None),
            "POST /api/items/blue-shirt"
        );
        assert_eq!(
            k.key("get", "/api/users/17", Some("b=2&a=1&b=3")),
            "GET /api/users/{id}?a&b"
        );
        assert_eq!(k.key("GET", "/api/users", Some("")), "GET /api/users");
        assert_eq!(without_query("GET /x?a&b"), "GET /x");
    }

    #[test]
    fn high_cardinality_segments_become_params() {
        let mut k = RouteKeyer::new(&[], 3);
        let first = k.key("GET", "/shop/products/blue-shirt/reviews", Some("page=1"));
        assert_eq!(first, "GET /shop/products/blue-shirt/reviews?page");
        for slug in ["red-hat", "green-scarf"] {
            k.key("GET", &format!("/shop/products/{slug}/reviews"), None);
        }
        // The fourth distinct value collapses the position.
        assert_eq!(
            k.key("GET", "/shop/products/black-boots/reviews", None),
            "GET /shop/products/{param}/reviews"
        );
        assert_eq!(
            k.key("GET", "/shop/products/new-thing/reviews", None),
            "GET /shop/products/{param}/reviews"
        );
        assert_eq!(k.rekey(&first), "GET /shop/products/{param}/reviews?page");
        // Other positions and methods are unaffected.
        assert_eq!(k.key("GET", "/shop/cart", None), "GET /shop/cart");
        assert_eq!(
            k.key("POST", "/shop/products/blue-shirt/reviews", None),
            "POST /shop/products/blue-shirt/reviews"
        );
        // Off when 0.
        let mut off = RouteKeyer::new(&[], 0);
        for i in 0..10 {
            assert_eq!(
                off.key("GET", &format!("/p/slug-{i}x"), None),
                format!("GET /p/slug-{i}x")
            );
        }
    }
}
