//! Parsing the values people write in flags and config files: sizes, durations and times.

use std::time::Duration;

/// A value that does not parse; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    message: String,
}

impl ParseError {
    fn new(message: String) -> Self {
        ParseError { message }
    }
}

/// Splits `12.5ms` into `12.5` and `ms`.
fn number_and_unit(s: &str) -> (&str, &str) {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    (num, unit.trim())
}

/// Parses `1048576`, `1MiB`, `512 KiB`, `10MB`, `4k` into bytes (a plain number is bytes).
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    let s = s.trim();
    let (num, unit) = number_and_unit(s);
    let n: f64 = num.parse().map_err(|_| {
        ParseError::new(format!("`{s}` is not a size (e.g. 1048576, 1MiB, 512KiB)"))
    })?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(ParseError::new(format!(
                "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, kB, MB, GB)"
            )));
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(ParseError::new(format!("`{s}` is too large")));
    }
    Ok(bytes as u64)
}

/// Parses `250ms`, `1.5s`, `2m`, `1h`, `500us` into a duration (a plain number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let s = s.trim();
    let (num, unit) = number_and_unit(s);
    let n: f64 = num
        .parse()
        .map_err(|_| ParseError::new(format!("`{s}` is not a duration (e.g. 250ms, 5s, 2m)")))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => {
            return Err(ParseError::new(format!(
                "unknown duration unit `{u}` in `{s}` (use us, ms, s, m, h)"
            )));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| ParseError::new(format!("`{s}`: {e}")))
}

/// Parses an RFC 3339 time (`2026-01-01T10:00:00Z`) or an integer count of µs since the epoch
/// into µs since the epoch.
pub fn parse_time(s: &str) -> Result<i64, ParseError> {
    let s = s.trim();
    if let Ok(us) = s.parse::<i64>() {
        return Ok(us);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| {
            ParseError::new(format!(
                "`{s}` is neither RFC 3339 (2026-01-01T10:00:00Z) nor µs since the epoch: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4k"), Ok(4_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("1e400").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration(" 3 s "), Ok(Duration::from_secs(3)));
        for bad in ["fast", "3 parsecs", "", "-1s", "1e999s"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains('`'), "{e}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000000000"), Ok(1_700_000_000_000_000));
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z"),
            Ok(1_767_225_600_000_000)
        );
        assert_eq!(
            parse_time("2026-01-01T01:00:00.5+01:00"),
            Ok(1_767_225_600_500_000)
        );
        let e = parse_time("yesterday").expect_err("bad");
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }
}
