//! Path templates (`redact-path`): secrets carried in URL path segments — password-reset and
//! invitation tokens, API keys, signed-URL signatures — redacted segment by segment.
//!
//! A template is a path whose segments are literals (must be equal), `*` (any one segment,
//! kept), `{name}` or `{}` (any one non-empty segment: the secret) and, as the last segment only,
//! `**` (whatever follows, kept). `/reset-password/{token}` turns `/reset-password/k7Gq…` into
//! `/reset-password/REDACTED` (or its `hash` token); `/v1/orgs/*/keys/{key}/**` keeps the org
//! and anything after the key. A trailing `/` on the request path is ignored when matching and
//! kept. Literal segments compare as written (no percent-decoding).

use super::RuleError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Any,
    Secret,
    Rest,
}

/// A parsed `redact-path` template. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PathTemplate {
    segs: Vec<Seg>,
}

impl PathTemplate {
    /// Parses a template; the error names it and says what is wrong.
    pub(super) fn parse(template: &str) -> Result<PathTemplate, RuleError> {
        let err = |m: &str| RuleError::PathTemplate {
            template: template.to_owned(),
            message: m.to_owned(),
        };
        let rest = template
            .trim()
            .strip_prefix('/')
            .ok_or_else(|| err("must start with `/`"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let seg = match *p {
                "" => return Err(err("has an empty segment")),
                "*" => Seg::Any,
                "**" if i + 1 == parts.len() => Seg::Rest,
                "**" => return Err(err("`**` may only be the last segment")),
                p if p.starts_with('{') && p.ends_with('}') => Seg::Secret,
                p if p.contains(['{', '}', '*']) => {
                    return Err(err(
                        "`{…}`, `*` and `**` must be whole segments, e.g. /reset/{token}",
                    ));
                }
                p => Seg::Literal(p.to_owned()),
            };
            segs.push(seg);
        }
        if !segs.contains(&Seg::Secret) {
            return Err(err("has no `{…}` segment to redact"));
        }
        Ok(PathTemplate { segs })
    }

    /// `path` with the secret segments replaced by `token(secret)`, when the template matches
    /// and a secret segment is non-empty; `None` otherwise.
    pub(super) fn redact(&self, path: &str, token: &dyn Fn(&[u8]) -> String) -> Option<String> {
        let rest = path.strip_prefix('/')?;
        let (rest, slash) = match rest.strip_suffix('/') {
            Some(r) => (r, "/"),
            None => (rest, ""),
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let tail = match self.segs.last() {
            Some(Seg::Rest) => self.segs.len() - 1,
            _ if parts.len() == self.segs.len() => self.segs.len(),
            _ => return None,
        };
        if parts.len() < tail {
            return None;
        }
        let mut out = String::with_capacity(path.len() + 16);
        let mut changed = false;
        for (i, part) in parts.iter().enumerate() {
            out.push('/');
            match self.segs.get(i) {
                Some(Seg::Literal(l)) if l != part => return None,
                Some(Seg::Secret) if !part.is_empty() => {
                    out.push_str(&token(part.as_bytes()));
                    changed = true;
                }
                _ => out.push_str(part),
            }
        }
        out.push_str(slash);
        changed.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask(_: &[u8]) -> String {
        "REDACTED".to_owned()
    }

    fn redact(template: &str, path: &str) -> Option<String> {
        PathTemplate::parse(template)
            .expect("template")
            .redact(path, &mask)
    }

    #[test]
    fn secret_segments_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redact("/reset-password/{token}", "/reset-password/k7Gq9z").as_deref(),
            Some("/reset-password/REDACTED")
        );
        assert_eq!(
            redact("/reset-password/{token}", "/reset-password/k7Gq9z/").as_deref(),
            Some("/reset-password/REDACTED/")
        );
        assert_eq!(
            redact(
                "/v1/orgs/*/keys/{}/**",
                "/v1/orgs/acme/keys/sk_live_1/rotate/now"
            )
            .as_deref(),
            Some("/v1/orgs/acme/keys/REDACTED/rotate/now")
        );
        assert_eq!(
            redact("/v1/orgs/*/keys/{}/**", "/v1/orgs/acme/keys/sk_live_1").as_deref(),
            Some("/v1/orgs/acme/keys/REDACTED")
        );
        assert_eq!(
            redact("/s/{a}/{b}", "/s/one/two").as_deref(),
            Some("/s/REDACTED/REDACTED")
        );
    }

    #[test]
    fn other_paths_are_left_alone() {
        for path in [
            "/reset-password",
            "/reset-password/",
            "/reset-password/a/b",
            "/reset/k7Gq9z",
            "reset-password/k7Gq9z",
            "",
            "/reset-password//",
        ] {
            assert_eq!(redact("/reset-password/{token}", path), None, "{path}");
        }
        assert_eq!(redact("/v1/orgs/*/keys/{}/**", "/v1/orgs/acme/keys"), None);
    }

    #[test]
    fn bad_templates_are_named_with_the_fix() {
        for (t, why) in [
            ("reset/{t}", "must start with `/`"),
            ("/reset/static", "no `{…}` segment"),
            ("/a//{t}", "empty segment"),
            ("/a/**/{t}", "`**` may only be the last"),
            ("/a/x{t}", "whole segments"),
            ("/a/*x/{t}", "whole segments"),
        ] {
            let e = PathTemplate::parse(t).expect_err(t).to_string();
            assert!(e.contains(t) && e.contains(why), "{t}: {e}");
        }
    }

    proptest! {
        /// Any path: no panic, and a matched secret segment never survives.
        #[test]
        fn a_secret_segment_never_survives(
            secret in "[^/]{1,40}",
            rest in "(/[^/]{0,12}){0,4}/?",
            other in ".{0,60}",
        ) {
            let t = PathTemplate::parse("/reset/{token}/**").expect("template");
            let path = format!("/reset/{secret}{rest}");
            let out = t.redact(&path, &mask).expect("matches");
            prop_assert_eq!(out.split('/').nth(2), Some("REDACTED"));
            prop_assert_eq!(out.len() + secret.len(), path.len() + "REDACTED".len());
            let _ = t.redact(&other, &mask);
        }
    }
}
