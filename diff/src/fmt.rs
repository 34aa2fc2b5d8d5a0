//! Numbers and requests as the judge writes them in check reasons, titles and examples, and the
//! reports show them: `12.3 ms`, `+1,540 %`, `0.5 %`, `3.2e7`, a `curl` command. The judge and
//! the reports ([`crate::report`], `report_html`) share this one copy; generic number
//! and time formatting (`1,234`, RFC 3339) is [`tapedeck_common::format`]'s.

use std::fmt::Write as _;

use tapedeck_common::format::thousands;
use tapedeck_storage::{Exchange, SENSITIVE_HEADERS};

/// A relative change as a signed percentage: `15.4` → `+1,540 %`, `-0.25` → `-25 %`.
pub fn fmt_pct(change: f64) -> String {
    let pct = (change * 100.0).round();
    let sign = if pct < 0.0 { "-" } else { "+" };
    format!("{sign}{} %", thousands(pct.abs() as u64))
}

/// A rate (a fraction) as a percentage with the precision its size needs: `0 %`, `12 %`,
/// `2.5 %`, `0.030 %`.
pub fn fmt_rate(r: f64) -> String {
    let pct = r * 100.0;
    if pct == 0.0 || pct >= 10.0 {
        format!("{pct:.0} %")
    } else if pct >= 0.1 {
        format!("{pct:.1} %")
    } else {
        format!("{pct:.3} %")
    }
}

/// Microseconds for people: `850 µs`, `12.3 ms`, `1.50 s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        let ms = us as f64 / 1000.0;
        if ms < 100.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.0} ms")
        }
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// A latency shift in microseconds, signed, rounded to the µs: `+12.3 ms`, `-850 µs`.
pub fn fmt_signed_us(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", fmt_us((-v).round() as u64))
    } else {
        format!("+{}", fmt_us(v.round() as u64))
    }
}

/// An e-value for people: `3.2e7`, `412`.
pub fn fmt_e(v: f64) -> String {
    if !v.is_finite() {
        "∞".to_owned()
    } else if v >= 1e5 {
        format!("{v:.1e}")
    } else {
        format!("{v:.0}")
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The request of an exchange as a `curl` command. Sensitive headers (and values already
/// redacted on the tape) stay redacted; hop-by-hop headers are left out.
pub fn curl_command(ex: &Exchange) -> String {
    let scheme = if ex.scheme.is_empty() {
        "http"
    } else {
        &ex.scheme
    };
    let authority = if ex.authority.is_empty() {
        "localhost"
    } else {
        &ex.authority
    };
    let url = format!("{scheme}://{authority}{}", ex.path_and_query());
    let mut cmd = format!("curl -sS -X {} {}", ex.method, shell_quote(&url));
    for h in &ex.req_headers {
        let name = h.name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "host"
                | "content-length"
                | "connection"
                | "transfer-encoding"
                | "keep-alive"
                | "te"
                | "upgrade"
        ) || name.starts_with(':')
        {
            continue;
        }
        let value = if SENSITIVE_HEADERS.contains(&name.as_str()) {
            "REDACTED".into()
        } else {
            h.value_lossy()
        };
        let _ = write!(
            cmd,
            " -H {}",
            shell_quote(&format!("{}: {}", h.name, value))
        );
    }
    if !ex.req_body.is_empty() {
        match std::str::from_utf8(&ex.req_body) {
            Ok(text) if text.len() <= 4000 => {
                let _ = write!(cmd, " --data-binary {}", shell_quote(text));
            }
            _ => {
                let _ = write!(
                    cmd,
                    " --data-binary @body.bin  # {} bytes, not shown",
                    ex.req_body_size
                );
            }
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tapedeck_storage::Header;

    #[test]
    fn numbers() {
        assert_eq!(fmt_pct(15.4), "+1,540 %");
        assert_eq!(fmt_pct(-0.25), "-25 %");
        assert_eq!(fmt_us(850), "850 µs");
        assert_eq!(fmt_us(12_345), "12.3 ms");
        assert_eq!(fmt_us(1_500_000), "1.50 s");
        assert_eq!(fmt_signed_us(-12_345.4), "-12.3 ms");
        assert_eq!(fmt_signed_us(0.0), "+0 µs");
        assert_eq!(fmt_rate(0.0), "0 %");
        assert_eq!(fmt_rate(0.13), "13 %");
        assert_eq!(fmt_rate(0.025), "2.5 %");
        assert_eq!(fmt_rate(0.0003), "0.030 %");
        assert_eq!(fmt_e(f64::INFINITY), "∞");
        assert_eq!(fmt_e(412.4), "412");
        assert_eq!(fmt_e(3.2e7), "3.2e7");
    }

    #[test]
    fn curl_redacts_secrets() {
        let ex = Exchange {
            method: "POST".into(),
            authority: "127.0.0.1:9001".into(),
            path: "/api/login".into(),
            query: Some("next=/home".into()),
            req_headers: vec![
                Header::new("Authorization", "Bearer s3cr3t-token"),
                Header::new("Content-Type", "application/json"),
                Header::new("Cookie", "sid=abc123"),
                Header::new("Host", "x"),
            ],
            req_body: Bytes::from_static(b"{\"user\":\"o'neil\"}"),
            req_body_size: 17,
            ..Exchange::default()
        };
        let c = curl_command(&ex);
        assert!(!c.contains("s3cr3t") && !c.contains("abc123"), "{c}");
        assert!(c.contains("'Authorization: REDACTED'"), "{c}");
        assert!(c.contains("http://127.0.0.1:9001/api/login?next=/home"));
        assert!(c.contains(r"o'\''neil"), "{c}");
        assert!(!c.contains("Host:"));
    }
}
