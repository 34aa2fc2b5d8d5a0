//! Which exchanges are recorded: method and path filters, then a sampling rate.
//!
//! The decision is made once per request, from its head, before any body is captured, so skipped
//! exchanges cost nothing but the decision. With a key header (e.g. `traceparent`), the decision
//! is a hash of the header's value, so every request carrying the same value (every request of
//! one trace) is recorded or skipped together, by every recorder instance. For `traceparent` the
//! trace id alone is hashed (the parent span id differs per hop).

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Why a request is not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Excluded by a method or path filter.
    Filtered,
    /// Not selected by the sampling rate.
    Sampled,
}

/// Builds a [`Sampler`].
#[derive(Debug, Clone, Default)]
pub struct SamplerBuilder {
    rate: Option<f64>,
    key: Option<String>,
    include_methods: Vec<String>,
    exclude_methods: Vec<String>,
    include_paths: Vec<Glob>,
    exclude_paths: Vec<Glob>,
}

impl SamplerBuilder {
    /// Records everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fraction of (filtered-in) requests to record, clamped to 0.0–1.0.
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = Some(rate.clamp(0.0, 1.0));
        self
    }

    /// Decide by hashing this header's value when the request has it (random otherwise).
    pub fn key_header(mut self, name: &str) -> Self {
        self.key = Some(name.trim().to_ascii_lowercase());
        self
    }

    /// Record only these methods (repeatable).
    pub fn include_method(mut self, m: &str) -> Self {
        self.include_methods.push(m.trim().to_ascii_uppercase());
        self
    }

    /// Never record this method.
    pub fn exclude_method(mut self, m: &str) -> Self {
        self.exclude_methods.push(m.trim().to_ascii_uppercase());
        self
    }

    /// Record only paths matching one of these globs (`*` stays within a segment, `**` crosses).
    pub fn include_path(mut self, glob: &str) -> Result<Self, globset::Error> {
        self.include_paths.push(glob_of(glob)?);
        Ok(self)
    }

    /// Never record paths matching this glob.
    pub fn exclude_path(mut self, glob: &str) -> Result<Self, globset::Error> {
        self.exclude_paths.push(glob_of(glob)?);
        Ok(self)
    }

    /// Builds the sampler.
    pub fn build(self) -> Result<Sampler, globset::Error> {
        let set = |globs: Vec<Glob>| -> Result<Option<GlobSet>, globset::Error> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(g);
            }
            b.build().map(Some)
        };
        Ok(Sampler {
            threshold: self.rate.map(|r| {
                if r >= 1.0 {
                    u64::MAX
                } else {
                    (r * u64::MAX as f64) as u64
                }
            }),
            key: self.key,
            include_methods: self.include_methods,
            exclude_methods: self.exclude_methods,
            include_paths: set(self.include_paths)?,
            exclude_paths: set(self.exclude_paths)?,
        })
    }
}

fn glob_of(g: &str) -> Result<Glob, globset::Error> {
    globset::GlobBuilder::new(g).literal_separator(true).build()
}

/// Decides per request whether it is recorded. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    /// `None` = record all; else record when hash <= threshold.
    threshold: Option<u64>,
    key: Option<String>,
    include_methods: Vec<String>,
    exclude_methods: Vec<String>,
    include_paths: Option<GlobSet>,
    exclude_paths: Option<GlobSet>,
}

impl Sampler {
    /// The key header's name, when decisions are keyed.
    pub fn key_header(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// `Ok(())` when the request is to be recorded. `key` is the key header's value, if any.
    pub fn decide(&self, method: &str, path: &str, key: Option<&[u8]>) -> Result<(), Skip> {
        if !self.include_methods.is_empty()
            && !self
                .include_methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method))
        {
            return Err(Skip::Filtered);
        }
        if self
            .exclude_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
        {
            return Err(Skip::Filtered);
        }
        if let Some(inc) = &self.include_paths
            && !inc.is_match(path)
        {
            return Err(Skip::Filtered);
        }
        if let Some(exc) = &self.exclude_paths
            && exc.is_match(path)
        {
            return Err(Skip::Filtered);
        }
        let Some(threshold) = self.threshold else {
            return Ok(());
        };
        if threshold == u64::MAX {
            return Ok(());
        }
        let h = match key {
            Some(v) if !v.is_empty() => {
                let v = if self.key.as_deref() == Some("traceparent") {
                    trace_id(v)
                } else {
                    v
                };
                fnv1a(v)
            }
            _ => rand::random::<u64>(),
        };
        if h < threshold {
            Ok(())
        } else {
            Err(Skip::Sampled)
        }
    }
}

/// The trace-id field of a W3C `traceparent` value (`00-<trace id>-<span id>-<flags>`).
fn trace_id(v: &[u8]) -> &[u8] {
    v.split(|&b| b == b'-').nth(1).unwrap_or(v)
}

/// FNV-1a, then a 64-bit finalizer so that similar keys spread over the whole range.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let s = SamplerBuilder::new()
            .include_method("get")
            .include_method("POST")
            .exclude_path("/healthz")
            .and_then(|b| b.include_path("/api/**"))
            .and_then(|b| b.build())
            .expect("build");
        assert_eq!(s.decide("GET", "/api/users/1", None), Ok(()));
        assert_eq!(s.decide("post", "/api/x", None), Ok(()));
        assert_eq!(s.decide("DELETE", "/api/x", None), Err(Skip::Filtered));
        assert_eq!(s.decide("GET", "/other", None), Err(Skip::Filtered));
        let s = SamplerBuilder::new()
            .exclude_path("/internal/*")
            .and_then(|b| b.build())
            .expect("build");
        assert_eq!(s.decide("GET", "/internal/x", None), Err(Skip::Filtered));
        assert_eq!(s.decide("GET", "/internal/x/y", None), Ok(()));
    }

    #[test]
    fn rate_is_roughly_honoured_and_keyed_decisions_are_stable() {
        let s = SamplerBuilder::new()
            .rate(0.1)
            .key_header("traceparent")
            .build()
            .expect("build");
        let kept = (0..10_000)
            .filter(|i| {
                let tp = format!("00-{i:032x}-00f067aa0ba902b7-01");
                s.decide("GET", "/", Some(tp.as_bytes())).is_ok()
            })
            .count();
        assert!((700..1300).contains(&kept), "kept {kept} of 10000 at 0.1");
        // Same trace id, other span id: same decision.
        for i in 0..200 {
            let a = format!("00-{i:032x}-00f067aa0ba902b7-01");
            let b = format!("00-{i:032x}-1111111111111111-01");
            assert_eq!(
                s.decide("GET", "/", Some(a.as_bytes())),
                s.decide("GET", "/x", Some(b.as_bytes()))
            );
        }
        let none = SamplerBuilder::new().rate(0.0).build().expect("build");
        assert_eq!(none.decide("GET", "/", None), Err(Skip::Sampled));
        let all = SamplerBuilder::new().rate(1.0).build().expect("build");
        assert_eq!(all.decide("GET", "/", Some(b"k")), Ok(()));
    }
}
