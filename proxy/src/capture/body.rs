//! [`BodyCapture`]: a body kept up to a cap, as refcounted slices of the chunks being forwarded.

use bytes::{Bytes, BytesMut};

/// A body captured up to a cap, as clones of the chunks that passed through (refcount bumps, no
/// copy), with the true size and whether bytes beyond the cap were seen.
#[derive(Debug, Default)]
pub(crate) struct BodyCapture {
    chunks: Vec<Bytes>,
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
        if take < chunk.len() {
            self.truncated = true;
            self.chunks.push(chunk.slice(..take));
        } else {
            self.chunks.push(chunk.clone());
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
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut b = BytesMut::with_capacity(self.captured);
                for c in self.chunks.drain(..) {
                    b.extend_from_slice(&c);
                }
                b.freeze()
            }
        }
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
    }
}
