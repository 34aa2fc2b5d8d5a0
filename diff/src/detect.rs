//! Built-in noise detectors: values that differ on every call by design (timestamps, UUIDs,
//! random tokens). Used when no secondary (noise) target was replayed: a difference where both
//! sides look like the same kind of volatile value is a *noise candidate*, reported separately
//! and never a regression.

use std::sync::OnceLock;

use regex::Regex;

/// Why a pair of values looks volatile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Volatile {
    /// Both values are UUIDs.
    Uuid,
    /// Both values are timestamps (ISO 8601 / RFC 3339, HTTP dates, or epoch seconds/ms/µs).
    Timestamp,
    /// Both values are random-looking tokens of the same shape (hex, base64-ish).
    Token,
}

impl Volatile {
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Volatile::Uuid => "uuid",
            Volatile::Timestamp => "timestamp",
            Volatile::Token => "token",
        }
    }
}

fn iso_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$",
        )
        .unwrap_or_else(|_| unreachable_regex())
    })
}

fn http_date_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
            .unwrap_or_else(|_| unreachable_regex())
    })
}

/// The patterns above are constants checked by the unit tests; this never runs.
fn unreachable_regex() -> Regex {
    #[allow(clippy::unwrap_used)]
    Regex::new("$^").unwrap()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

fn is_timestamp(s: &str) -> bool {
    (s.len() >= 10 && s.len() <= 40 && (iso_re().is_match(s) || http_date_re().is_match(s)))
        || s.parse::<i64>().is_ok_and(is_epoch)
}

/// Plausible Unix times (2001..2100) in seconds, milliseconds or microseconds.
fn is_epoch(n: i64) -> bool {
    (1_000_000_000..4_102_444_800).contains(&n)
        || (1_000_000_000_000..4_102_444_800_000).contains(&n)
        || (1_000_000_000_000_000..4_102_444_800_000_000).contains(&n)
}

fn is_token(s: &str) -> bool {
    if s.len() < 16 || s.len() > 512 {
        return false;
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'=' | b'.'));
    if !ok {
        return false;
    }
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let letters = s.bytes().filter(u8::is_ascii_alphabetic).count();
    if digits == 0 || letters == 0 {
        return false;
    }
    // Shannon entropy per character: random tokens are well above 3 bits, words well below.
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy >= 3.0
}

/// Whether two different values are both volatile values of one kind. Inputs are compact JSON
/// excerpts or raw strings; JSON strings are unquoted first.
pub(crate) fn classify(baseline: &str, candidate: &str) -> Option<Volatile> {
    let a = unquote(baseline);
    let b = unquote(candidate);
    if is_uuid(a) && is_uuid(b) {
        Some(Volatile::Uuid)
    } else if is_timestamp(a) && is_timestamp(b) {
        Some(Volatile::Timestamp)
    } else if a.len() == b.len() && is_token(a) && is_token(b) {
        Some(Volatile::Token)
    } else {
        None
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_volatile_values() {
        assert_eq!(
            classify(
                "\"0195f0a4-1b2c-7d3e-8f40-123456789abc\"",
                "\"0195f0a4-1b2c-7d3e-8f40-223456789abd\""
            ),
            Some(Volatile::Uuid)
        );
        assert_eq!(
            classify(
                "\"2026-11-29T20:43:01.123Z\"",
                "\"2026-11-29T20:43:02.456Z\""
            ),
            Some(Volatile::Timestamp)
        );
        assert_eq!(
            classify(
                "Sun, 29 Nov 2026 20:43:01 GMT",
                "Sun, 29 Nov 2026 20:43:02 GMT"
            ),
            Some(Volatile::Timestamp)
        );
        assert_eq!(
            classify("1764448981", "1764448982"),
            Some(Volatile::Timestamp)
        );
        assert_eq!(
            classify("1764448981123", "1764448982999"),
            Some(Volatile::Timestamp)
        );
        assert_eq!(
            classify("\"a8f3Kq9ZxP2mL7vN\"", "\"Q4wE8rT1yU6iO0pZ\""),
            Some(Volatile::Token)
        );
    }

    #[test]
    fn ignores_ordinary_values() {
        assert_eq!(classify("\"alice\"", "\"bob\""), None);
        assert_eq!(classify("42", "43"), None);
        assert_eq!(classify("\"active\"", "\"inactive\""), None);
        assert_eq!(
            classify("\"aaaaaaaaaaaaaaaa1\"", "\"bbbbbbbbbbbbbbbb2\""),
            None
        );
        assert_eq!(
            classify("\"the-quick-brown-fox\"", "\"the-quick-brown-fix\""),
            None
        );
    }
}
