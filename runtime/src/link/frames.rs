//! The frame decoder of a live link: tokio-util's length-delimited codec, which reserves a
//! frame's whole length as soon as its head arrives, plus the node's budget for frames in
//! progress ([`FrameBudget`]). Within one connection a frame is bounded by `max_frame`; the
//! budget bounds them across connections, so three hundred peers that each start a 16 MiB
//! frame and trickle it cannot hold gigabytes. A frame over [`COUNTED`] takes its length
//! from the budget when its head arrives and gives it back when it is whole (or the link
//! ends); a link whose frame does not fit is closed, saying why.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

/// Frames up to this size are not counted: the in-flight limits already bound how many a
/// link has, and counting every small frame would cost the hot path an atomic per frame.
pub(crate) const COUNTED: usize = 1 << 20;

/// Bytes of large frames in progress this node may hold across all its links.
pub(crate) struct FrameBudget {
    left: AtomicUsize,
    total: usize,
}

impl FrameBudget {
    pub(crate) fn new(total: usize) -> Self {
        FrameBudget {
            left: AtomicUsize::new(total),
            total,
        }
    }

    fn take(&self, n: usize) -> bool {
        (self.left)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.left.fetch_add(n, Ordering::AcqRel);
    }
}

/// A link's decoder: see the module doc.
pub(crate) struct FrameDecoder {
    inner: LengthDelimitedCodec,
    budget: Arc<FrameBudget>,
    /// The length of the frame in progress, once its head was read; `held` when it counts.
    current: Option<usize>,
    held: usize,
}

impl FrameDecoder {
    pub(crate) fn new(inner: LengthDelimitedCodec, budget: Arc<FrameBudget>) -> Self {
        FrameDecoder {
            inner,
            budget,
            current: None,
            held: 0,
        }
    }

    pub(crate) fn max_frame_length(&self) -> usize {
        self.inner.max_frame_length()
    }

    fn release(&mut self) {
        if self.held > 0 {
            self.budget.give(self.held);
            self.held = 0;
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        // The inner codec reads a head exactly when four bytes are there and no frame is in
        // progress: read it first, the same way, to learn the length before it reserves it.
        if self.current.is_none() && src.len() >= 4 {
            let n = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            self.current = Some(n);
            // Over `max_frame` the inner codec refuses it, reserving nothing.
            if n > COUNTED && n <= self.inner.max_frame_length() {
                if !self.budget.take(n) {
                    return Err(io::Error::other(format!(
                        "a {n}-byte frame would pass the node's budget of {} bytes for frames in progress (--frame-budget-mb)",
                        self.budget.total
                    )));
                }
                self.held = n;
            }
        }
        let frame = self.inner.decode(src)?;
        if frame.is_some() {
            self.current = None;
            self.release();
        }
        Ok(frame)
    }
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(budget: &Arc<FrameBudget>) -> FrameDecoder {
        let inner = LengthDelimitedCodec::builder()
            .max_frame_length(16 << 20)
            .new_codec();
        FrameDecoder::new(inner, budget.clone())
    }

    fn head(n: u32) -> BytesMut {
        BytesMut::from(&n.to_be_bytes()[..])
    }

    #[test]
    fn large_frames_in_progress_share_the_budget_and_give_it_back() {
        let budget = Arc::new(FrameBudget::new(5 << 20));
        let (mut a, mut b, mut c) = (decoder(&budget), decoder(&budget), decoder(&budget));
        let (mut at_a, mut at_b) = (head(2 << 20), head(2 << 20));
        assert!(a.decode(&mut at_a).unwrap().is_none());
        assert!(b.decode(&mut at_b).unwrap().is_none());
        // A third large frame does not fit; a small one is not counted.
        let error = c.decode(&mut head(2 << 20)).unwrap_err();
        assert!(error.to_string().contains("budget"), "{error}");
        let mut small = head(100);
        small.extend_from_slice(&[0; 100]);
        assert_eq!(
            decoder(&budget).decode(&mut small).unwrap().unwrap().len(),
            100
        );
        // A's frame completes: its share comes back.
        at_a.extend_from_slice(&vec![7; 2 << 20]);
        assert_eq!(a.decode(&mut at_a).unwrap().unwrap().len(), 2 << 20);
        let mut d = decoder(&budget);
        assert!(d.decode(&mut head(2 << 20)).unwrap().is_none());
        // B's link ends mid-frame: so does its share.
        drop(b);
        assert_eq!(
            budget.left.load(Ordering::SeqCst),
            3 << 20,
            "only d's frame holds"
        );
    }
}
