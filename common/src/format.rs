//! Numbers and times for people: `1,234,567`, `1.5 KiB`, RFC 3339.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB` (binary units, one decimal; bytes as an integer).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How much of a second an RFC 3339 time shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// `2026-01-01T10:00:00Z`: reports and verdicts, where people read the time.
    Seconds,
    /// `2026-01-01T10:00:00.123Z`: HAR files and listings of single exchanges.
    Millis,
}

/// A time in µs since the epoch as RFC 3339 in UTC. A time outside chrono's range is written as
/// `<n>µs` rather than a wrong date.
pub fn rfc3339(us: i64, precision: Precision) -> String {
    let format = match precision {
        Precision::Seconds => chrono::SecondsFormat::Secs,
        Precision::Millis => chrono::SecondsFormat::Millis,
    };
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(format, true))
        .unwrap_or_else(|| format!("{us}µs"))
}

/// Now, as RFC 3339 with whole seconds.
pub fn rfc3339_now() -> String {
    rfc3339(tapedeck_storage::now_us(), Precision::Seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn times() {
        let us = 1_767_225_600_123_456;
        assert_eq!(rfc3339(us, Precision::Seconds), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(us, Precision::Millis), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339(-1, Precision::Seconds), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(i64::MAX, Precision::Seconds),
            format!("{}µs", i64::MAX)
        );
    }
}
