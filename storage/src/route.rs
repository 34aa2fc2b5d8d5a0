//! Route keys: a path with its identifier segments replaced by `{id}`, so that
//! `/api/users/17` and `/api/users/42` count as one route.

/// Whether one path segment looks like an identifier rather than a fixed name: a number, a UUID,
/// a long hex string, a long token mixing letters and digits, or a segment the recorder
/// redacted (`redact-path`: `REDACTED` or a hash token).
pub fn is_id_segment(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    if seg == crate::REDACTED_URL_MASK || crate::is_redaction_placeholder(seg.as_bytes()) {
        return true;
    }
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    if digits == seg.len() {
        return true;
    }
    if uuid::Uuid::try_parse(seg).is_ok() {
        return true;
    }
    let hex = seg.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && seg.len() >= 8 && digits > 0 {
        return true;
    }
    let tokenish = seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    tokenish && seg.len() >= 16 && digits >= 2 && digits < seg.len()
}

/// The path with identifier segments replaced by `{id}`.
pub fn template_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    push_template_path(&mut out, path);
    out
}

/// Appends [`template_path`]`(path)` to `out` (no allocation when `out` has room: for keys
/// built once per exchange in a reused buffer).
pub fn push_template_path(out: &mut String, path: &str) {
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if is_id_segment(seg) { "{id}" } else { seg });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_ids() {
        assert_eq!(template_path("/api/users/17"), "/api/users/{id}");
        assert_eq!(
            template_path("/api/sessions/0195f0a4-1b2c-7d3e-8f40-123456789abc"),
            "/api/sessions/{id}"
        );
        assert_eq!(template_path("/blobs/deadbeef42"), "/blobs/{id}");
        assert_eq!(template_path("/api/v2/users"), "/api/v2/users");
        assert_eq!(template_path("/"), "/");
        assert_eq!(template_path("/static/app.js"), "/static/app.js");
        assert_eq!(template_path("/t/AbCdEf0123456789xy"), "/t/{id}");
        // Segments `redact-path` replaced.
        assert_eq!(template_path("/reset/REDACTED"), "/reset/{id}");
        assert_eq!(
            template_path("/reset/hmac-sha256:0123456789abcdef0123456789abcdef/x"),
            "/reset/{id}/x"
        );
        let mut key = String::from("GET ");
        push_template_path(&mut key, "/api/users/17");
        assert_eq!(key, "GET /api/users/{id}");
    }
}
