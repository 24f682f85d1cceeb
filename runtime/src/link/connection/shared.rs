//! The state a connection's handle, reader, writer and sweeper share (and the link layer's
//! responder reads): the outbox, the pending table, the requests running here, the
//! counters, and the token that closes the link.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::pending::Pending;
use super::streams::Streams;
use super::{PeerInfo, Running};
use crate::link::Limits;
use crate::wire::{self, Header};

/// State shared by a connection's handle, its reader and its writer.
pub(in crate::link) struct Shared {
    /// Who is at the other end.
    pub(crate) peer: PeerInfo,
    /// Unique among this node's connections, so the registry can tell two links to one peer apart.
    pub(crate) conn_id: u64,
    /// True when this node dialed; the tie-break between two links to one peer uses it.
    pub(crate) outbound: bool,
    /// Largest frame sent on this link: the smaller of our limit and the peer's.
    pub(crate) max_frame: usize,
    /// Frames for the writer, encoded in place (see [`super::outbox`]). Bounded in use:
    /// requests wait for their reply (so callers bound them), and replies by `max_in_flight`.
    pub(crate) outbox: Outbox,
    /// The peer's requests running as tasks here, so a `Cancel` can stop them.
    pub(crate) running: Running,
    /// Calls waiting for a response, by request id. Entries are removed by the response or by
    /// the caller's drop guard; the link clears the table when it closes.
    pub(super) pending: Pending,
    /// The streams on this link, both ways (see [`super::streams`]).
    pub(super) streams: Streams,
    // The counters callers and tasks on every worker touch get a cache line each, so they do
    // not slow each other (or the fields read on every call) down.
    pub(super) next_id: CachePadded<AtomicU64>,
    /// Calls in flight both ways; the writer coalesces writes while it is above one.
    pub(crate) in_flight: CachePadded<AtomicUsize>,
    /// Requests, casts and responses the reader has seen: how idle reaping tells use.
    /// Written by the reader only.
    pub(crate) activity: CachePadded<AtomicU64>,
    /// Requests (and stream opens) the peer sent, and replies to ours: calls each way, for
    /// the dashboard. Written by the reader only.
    pub(crate) served: CachePadded<AtomicU64>,
    pub(crate) answered: CachePadded<AtomicU64>,
    /// Set when this node closed the link for being idle (nothing was sent after that).
    pub(super) idle_closed: AtomicBool,
    /// The highest id of the peer's requests the reader dispatched; `NO_MORE` is set in
    /// it once this node says goodbye, after which nothing more is dispatched. What a
    /// version-4 goodbye tells the peer (`GoodbyeAfter`).
    pub(super) dispatched: AtomicU64,
    /// Set from the peer's version-4 goodbye: our requests with a higher id never ran.
    /// `u64::MAX` until then.
    pub(super) unread_above: AtomicU64,
    /// Set when the peer's version-4 goodbye said it is not leaving (it closed this link
    /// for being idle or replaced it with another): what did not run may go on a new link.
    pub(super) peer_stays: AtomicBool,
    /// Requests from the peer admitted and not yet answered on the wire.
    pub(crate) inbound: CachePadded<AtomicUsize>,
    /// The node's bounds; `limits.node_inbound` sums `inbound` over every link.
    pub(crate) limits: Arc<Limits>,
    pub(super) closed: AtomicBool,
    /// Why the writer stopped, when it failed: the reader reports it as the link's end.
    pub(crate) write_error: OnceLock<String>,
    /// Cancelled to close the link; child of the node's token.
    pub(crate) token: CancellationToken,
}

impl Shared {
    /// Tells the callee the caller stopped waiting for request `id` (dropped or expired).
    pub(crate) fn send_cancel(&self, id: u64) {
        self.send_control(&Header::Cancel { id });
    }

    /// Queues a frame without a body (cancel, pong, goodbye). Not queued if the writer has
    /// stopped: the link is closing, and these frames matter only on a live one.
    pub(super) fn send_control(&self, header: &Header<'_>) {
        let max = self.max_frame;
        let _ = self.outbox.push(false, |buf| {
            wire::append_header(buf, header, max)
                .then_some(())
                .ok_or(())
        });
    }

    /// `n` admitted requests are answered (or will never be): they stop counting.
    pub(crate) fn release_inbound(&self, n: usize) {
        if n > 0 {
            self.inbound.fetch_sub(n, Ordering::Relaxed);
            self.limits.node_inbound.fetch_sub(n, Ordering::Relaxed);
            if self.is_client() {
                self.limits.client_inbound.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// The peer is a plain client (it gave no address to dial), not a node.
    pub(crate) fn is_client(&self) -> bool {
        self.peer.addr.is_none()
    }

    /// The link has closed: nothing sent on it arrives any more.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Marks the link closed and stops its tasks.
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.token.cancel();
    }
}

/// A value alone on its cache line.
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub(super) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
