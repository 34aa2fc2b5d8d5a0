//! [`BodyCapture`]: a body kept up to a cap, as refcounted slices of the chunks being forwarded
//! (copies of the small ones).

use bytes::{Bytes, BytesMut};

/// Chunks of at most this many bytes are copied rather than kept as refcounted slices.
///
/// A chunk is a slice of the engine's read buffer (hyper's starts at 8 KiB), and a slice keeps the
/// whole buffer alive until the record is spooled on another thread. For a small body that pins
/// kilobytes per record in the queue, makes the worker allocate fresh pages for its next read
/// buffer, and sends the frees across threads: recording 300 B bodies with every chunk kept ran
/// 5–12 % slower under a CPU cap, with about twice the page faults a request and 6 MiB more RSS
/// (`benches/RESULTS.md`, "Small bodies are copied"). Large chunks are kept: copying every chunk
/// of 16 KB bodies ran 3 % slower, copying those of at most 4 KiB made no difference.
const COPY_AT_MOST: usize = 4096;

/// A body captured up to a cap, as clones of the chunks that passed through (refcount bumps, no
/// copy; chunks of at most [`COPY_AT_MOST`] bytes are copied), with the true size and whether
/// bytes beyond the cap were seen. The first chunk is kept apart, so that the common body of one
/// chunk costs one allocation at most.
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
        if take < chunk.len() {
            self.truncated = true;
        }
        let kept = if take <= COPY_AT_MOST {
            Bytes::copy_from_slice(&chunk[..take])
        } else if take < chunk.len() {
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

        // A single large chunk is handed over without a copy; a small one is copied, so that it
        // does not keep the buffer it was read into alive.
        let big = Bytes::from(vec![7u8; COPY_AT_MOST + 1]);
        let mut one = BodyCapture::default();
        one.push(&big, usize::MAX);
        assert!(!one.truncated());
        let got = one.take();
        assert_eq!(got, big);
        assert_eq!(got.as_ptr(), big.as_ptr());

        let read_buffer = Bytes::from(vec![1u8; 8192]);
        let small = read_buffer.slice(100..400);
        let mut one = BodyCapture::default();
        one.push(&small, usize::MAX);
        let got = one.take();
        assert_eq!(got, small);
        assert_ne!(got.as_ptr(), small.as_ptr(), "a small chunk is copied");

        // A large chunk cut at the cap keeps a slice when what is kept is large, a copy when small.
        let mut cut = BodyCapture::default();
        cut.push(&big, COPY_AT_MOST + 1);
        assert!(!cut.truncated());
        let mut cut = BodyCapture::default();
        cut.push(&big, 10);
        assert!(
            cut.truncated(),
            "a copied chunk cut at the cap is a truncation"
        );
        assert_eq!(cut.take(), Bytes::from(vec![7u8; 10]));
        let mut cut = BodyCapture::default();
        cut.push(&big, COPY_AT_MOST + 1);
        cut.push(&Bytes::from_static(b"x"), COPY_AT_MOST + 1);
        assert!(cut.truncated());
        assert_eq!(cut.take().as_ptr(), big.as_ptr());

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
