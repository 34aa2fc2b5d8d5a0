//! [`BodyCapture`]: a body kept up to a cap, as refcounted slices of the chunks being forwarded.

use bytes::{Bytes, BytesMut};

/// A body captured up to a cap, as clones of the chunks that passed through (refcount bumps, no
/// copy), with the true size and whether bytes beyond the cap were seen. The first chunk is kept
/// apart, so that the common body of one chunk costs no allocation.
#[derive(Debug, Default)]
pub(crate) struct BodyCapture {
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    captured: usize,
    size: u64,
    truncated: bool,
}

impl BodyCapture {
    /// Accounts for `chunk` and keeps (a refcounted slice of) it while under `cap` bytes.
    pub(crate) fn push(&mut self, chunk: &Bytes, cap: usize) {
        self.size += chunk.len() as u64;
        if chunk.is_empty() {
            return;
        }
        let room = cap.saturating_sub(self.captured);
        if room == 0 {
            self.truncated = true;
            return;
        }
        let take = room.min(chunk.len());
        let kept = if take < chunk.len() {
            self.truncated = true;
            chunk.slice(..take)
        } else {
            chunk.clone()
        };
        if self.first.is_none() {
            self.first = Some(kept);
        } else {
            self.rest.push(kept);
        }
        self.captured += take;
    }

    /// The true size seen so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Whether bytes beyond the cap were seen.
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// The captured bytes as one buffer (no copy for a single chunk).
    pub(crate) fn take(&mut self) -> Bytes {
        let Some(first) = self.first.take() else {
            return Bytes::new();
        };
        if self.rest.is_empty() {
            return first;
        }
        let mut b = BytesMut::with_capacity(self.captured);
        b.extend_from_slice(&first);
        for c in self.rest.drain(..) {
            b.extend_from_slice(&c);
        }
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_caps_and_counts() {
        let mut c = BodyCapture::default();
        c.push(&Bytes::from_static(b"hello "), 8);
        c.push(&Bytes::from_static(b"world"), 8);
        c.push(&Bytes::from_static(b"!!"), 8);
        assert_eq!(c.size(), 13);
        assert!(c.truncated());
        assert_eq!(c.take(), Bytes::from_static(b"hello wo"));

        let mut one = BodyCapture::default();
        let chunk = Bytes::from_static(b"abc");
        one.push(&chunk, 10);
        assert!(!one.truncated());
        let got = one.take();
        assert_eq!(got, chunk);
        // A single chunk is handed over without a copy.
        assert_eq!(got.as_ptr(), chunk.as_ptr());

        let mut empty = BodyCapture::default();
        empty.push(&Bytes::new(), 0);
        assert!(!empty.truncated());
        assert_eq!(empty.take(), Bytes::new());

        // Empty chunks around and between kept ones; several chunks joined in order; a chunk
        // cut at the cap; nothing kept once the cap is reached.
        let mut many = BodyCapture::default();
        for part in ["", "ab", "", "cd", "efgh", "ij"] {
            many.push(&Bytes::from(part), 7);
        }
        assert_eq!((many.size(), many.truncated()), (10, true));
        assert_eq!(many.take(), Bytes::from_static(b"abcdefg"));
        assert_eq!(many.take(), Bytes::new(), "taken once");

        let mut exact = BodyCapture::default();
        exact.push(&Bytes::from_static(b"abc"), 6);
        exact.push(&Bytes::from_static(b"def"), 6);
        assert!(!exact.truncated());
        exact.push(&Bytes::new(), 6);
        assert!(
            !exact.truncated(),
            "an empty chunk at the cap is not a truncation"
        );
        assert_eq!(exact.take(), Bytes::from_static(b"abcdef"));
    }
}
