//! Trace ids: which inbound request a dependency call belongs to.
//!
//! The recorder stores a trace id with every exchange (tape column `trace_id`): by default the
//! trace id of the W3C `traceparent` header (<https://www.w3.org/TR/trace-context/>), or, with
//! `--trace-header NAME`, that header's value (e.g. `x-request-id`). Replay sends each recorded
//! request with its recorded trace id in a fresh `traceparent` (new span id), so an instrumented
//! service forwards it to its dependencies, and the dependency mocks answer each trace with its
//! own recorded answers.

/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";

/// The longest `--trace-header` value kept as a trace id; longer values are not trace ids.
pub const MAX_TRACE_ID_LEN: usize = 128;

/// Where trace ids come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TraceSource {
    /// The trace id of a valid W3C `traceparent` header.
    #[default]
    Traceparent,
    /// The value of this header (lower-case name), as is.
    Header(String),
}

impl TraceSource {
    /// `traceparent` (or empty) is the W3C header; any other name is taken as is.
    pub fn from_header_name(name: &str) -> TraceSource {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || name == TRACEPARENT {
            TraceSource::Traceparent
        } else {
            TraceSource::Header(name)
        }
    }

    /// The header the trace id is read from.
    pub fn header_name(&self) -> &str {
        match self {
            TraceSource::Traceparent => TRACEPARENT,
            TraceSource::Header(h) => h,
        }
    }

    /// The trace id in a value of [`header_name`](TraceSource::header_name), if it holds one.
    pub fn trace_id(&self, value: &[u8]) -> Option<String> {
        match self {
            TraceSource::Traceparent => trace_id_of_traceparent(value).map(str::to_owned),
            TraceSource::Header(_) => {
                let v = std::str::from_utf8(value).ok()?.trim();
                let ok = !v.is_empty()
                    && v.len() <= MAX_TRACE_ID_LEN
                    && v.bytes().all(|b| b.is_ascii_graphic());
                ok.then(|| v.to_owned())
            }
        }
    }
}

fn is_lower_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// The 32-hex-digit trace id of a W3C `traceparent` value (`00-<trace-id>-<parent-id>-<flags>`),
/// or `None` when the value is not a valid one (all-zero ids are invalid; versions other than
/// `00` are read by their first four fields, as the spec asks).
pub fn trace_id_of_traceparent(value: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let mut parts = v.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest_ok = match version {
        "00" => parts.next().is_none(),
        "ff" => false,
        _ => true,
    };
    let ok = rest_ok
        && version.len() == 2
        && is_lower_hex(version.as_bytes())
        && trace.len() == 32
        && is_lower_hex(trace.as_bytes())
        && trace.bytes().any(|b| b != b'0')
        && parent.len() == 16
        && is_lower_hex(parent.as_bytes())
        && parent.bytes().any(|b| b != b'0')
        && flags.len() == 2
        && is_lower_hex(flags.as_bytes());
    ok.then_some(trace)
}

/// A `traceparent` value carrying `trace_id` with a new span (parent) id, sampled. `None` when
/// `trace_id` is not 32 lower-case hex digits (a `--trace-header` value that is not a W3C trace
/// id cannot be sent as one).
pub fn traceparent(trace_id: &str, span_id: u64) -> Option<String> {
    let ok = trace_id.len() == 32
        && is_lower_hex(trace_id.as_bytes())
        && trace_id.bytes().any(|b| b != b'0');
    // A zero span id is invalid: 0 becomes 1.
    ok.then(|| format!("00-{trace_id}-{:016x}-01", span_id.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_values() {
        assert_eq!(
            trace_id_of_traceparent(TP.as_bytes()),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_of_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A future version may append fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(trace_id_of_traceparent(future.as_bytes()).is_some());
        assert_eq!(trace_id_of_traceparent(b"\xff\xfe"), None);
    }

    #[test]
    fn new_spans_keep_the_trace() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let v = traceparent(t, 0xabc).expect("valid");
        assert_eq!(v, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01");
        assert_eq!(trace_id_of_traceparent(v.as_bytes()), Some(t));
        assert!(
            traceparent(t, 0)
                .expect("valid")
                .ends_with("0000000000000001-01")
        );
        assert_eq!(traceparent("req-42", 1), None);
    }

    #[test]
    fn sources() {
        assert_eq!(
            TraceSource::from_header_name("Traceparent"),
            TraceSource::Traceparent
        );
        let h = TraceSource::from_header_name("X-Request-Id");
        assert_eq!(h.header_name(), "x-request-id");
        assert_eq!(h.trace_id(b" req-42 ").as_deref(), Some("req-42"));
        assert_eq!(h.trace_id(b""), None);
        assert_eq!(h.trace_id(b"has space"), None);
        assert_eq!(h.trace_id(&[b'a'; 200]), None);
        assert_eq!(
            TraceSource::Traceparent.trace_id(TP.as_bytes()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
