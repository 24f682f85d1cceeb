//! The frames waiting to be written on one link, and the writer task that writes them.
//!
//! Callers and responders encode their frames straight into the outbox's buffer under a
//! short lock: no allocation and no queue node per frame, and nothing freed on another
//! thread. The writer swaps the whole buffer for its empty spare and writes it with one
//! syscall, so frames queued while it was busy go out together; while other calls are in
//! flight it first yields once, letting tasks about to queue a frame join the batch. An idle
//! link gets a `Ping` every heartbeat. The writer stops when the link's token is cancelled
//! (after a short grace to flush) or a write fails; then the outbox refuses new frames.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tracing::debug;

use super::Shared;
use crate::link::transport::WriteHalf;
use crate::wire::{self, Header};

/// How long a closing writer may keep flushing to a peer that does not read.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A batch buffer that grew past this (a large frame) is not kept for reuse.
const KEEP_CAPACITY: usize = 1 << 20;

/// See the module doc.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Signalled when a frame lands in an empty buffer (a permit is kept if the writer is
    /// busy, so no wake-up is lost).
    ready: Notify,
    /// Bytes waiting, for the reader's backpressure check (kept outside the lock).
    queued: AtomicUsize,
    /// Replies taken by the writer and not yet written (see [`write_batch`]).
    in_hand: AtomicUsize,
    /// Signalled after every write, for a reader that paused while the outbox was full.
    pub(crate) drained: Notify,
    /// Signalled (to all) when the writer takes the waiting bytes, for stream producers
    /// waiting for room (see [`Outbox::room_for_items`]).
    room: Notify,
}

/// Stream items wait while this many bytes are queued: an active stream shares the link
/// with the calls beside it instead of burying their replies under its window.
const ITEM_ROOM: usize = 1 << 20;

struct State {
    /// Whole frames, length prefixes included.
    buf: BytesMut,
    /// How many of those frames answer requests admitted by `serve`: those requests count
    /// against the in-flight limit until their reply is handed to the socket, so a peer that
    /// does not read cannot make replies pile up here past that limit.
    replies: usize,
    /// Set when the writer has stopped: frames are refused.
    closed: bool,
    /// Set when the link was closed for being idle: new frames are refused, what is
    /// queued (the goodbye) still goes out.
    sealed: bool,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        let state = State {
            buf: BytesMut::with_capacity(16 << 10),
            replies: 0,
            closed: false,
            sealed: false,
        };
        Outbox {
            state: Mutex::new(state),
            ready: Notify::new(),
            queued: AtomicUsize::new(0),
            in_hand: AtomicUsize::new(0),
            drained: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Frames are appended through `FrameBuf`, which removes a half-built frame even when
        // user code panics while encoding: the buffer is consistent after a poisoning panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one frame built by `encode` (which must leave the buffer as it found it when
    /// it fails: `FrameBuf` does). `Ok(false)` if the writer has stopped.
    pub(crate) fn push<E>(
        &self,
        reply: bool,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<bool, E> {
        let mut state = self.lock();
        if state.closed || state.sealed {
            return Ok(false);
        }
        let was_empty = state.buf.is_empty();
        encode(&mut state.buf)?;
        state.replies += usize::from(reply);
        self.queued.store(state.buf.len(), Ordering::Relaxed);
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(true)
    }

    /// If `idle()` holds, queues a last frame built by `last` and refuses every frame after
    /// it; true if it did. Checked under the outbox's lock: a call that counts itself in
    /// flight before queueing its request either is seen by `idle()`, or finds the outbox
    /// sealed and sends nothing.
    pub(crate) fn seal_if(
        &self,
        idle: impl FnOnce() -> bool,
        last: impl FnOnce(&mut BytesMut) -> bool,
    ) -> bool {
        let mut state = self.lock();
        if state.closed || state.sealed || !idle() {
            return false;
        }
        let was_empty = state.buf.is_empty();
        if !last(&mut state.buf) {
            return false;
        }
        state.sealed = true;
        self.queued.store(state.buf.len(), Ordering::Relaxed);
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Moves the waiting bytes into `batch` (empty) and returns how many replies they hold.
    fn take(&self, batch: &mut BytesMut) -> usize {
        let mut state = self.lock();
        std::mem::swap(&mut state.buf, batch);
        self.queued.store(0, Ordering::Relaxed);
        let replies = std::mem::take(&mut state.replies);
        drop(state);
        // Producers wait only after seeing more than `ITEM_ROOM` queued, and the queue only
        // grows until taken: a smaller batch has nobody to wake (and skips Notify's lock).
        if batch.len() > ITEM_ROOM {
            self.room.notify_waiters();
        }
        replies
    }

    /// Waits until few enough bytes are queued for a stream item to join them (or the
    /// writer stopped, which the push then reports).
    pub(crate) async fn room_for_items(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.queued_bytes() <= ITEM_ROOM || self.lock().closed {
                return;
            }
            room.await;
        }
    }

    /// Bytes waiting for the writer.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Refuses frames from now on; returns the replies that will never be written.
    fn close(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        state.buf.clear();
        let replies = std::mem::take(&mut state.replies);
        drop(state);
        self.room.notify_waiters();
        replies
    }
}

/// The writer task of one link; see the module doc.
pub(crate) async fn write_loop(shared: Arc<Shared>, mut half: WriteHalf, heartbeat: Duration) {
    let ping = wire::frame_bytes(&Header::Ping).ok();
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = BytesMut::with_capacity(16 << 10);
    let mut wrote = true;
    let outbox = &shared.outbox;
    let work = async {
        // One wait for the whole loop, not one registered and dropped per wake-up.
        let cancelled = shared.token.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                biased;
                // Cancellation first: the final drain below still writes what is queued.
                _ = &mut cancelled => break,
                _ = outbox.ready.notified() => {}
                _ = tick.tick() => {
                    if let Some(ping) = ping.as_ref().filter(|_| !wrote) {
                        half.write_all(ping).await?;
                    }
                    wrote = false;
                    continue;
                }
            }
            if shared.in_flight.load(Ordering::Relaxed) > 1 {
                tokio::task::yield_now().await;
            }
            write_batch(&shared, &mut half, &mut batch).await?;
            wrote = true;
        }
        // Closing: what was queued before the close (a goodbye, late replies) still goes out.
        write_batch(&shared, &mut half, &mut batch).await?;
        half.shutdown().await
    };
    // A peer that stops reading must not hold up our shutdown: once the link is cancelled the
    // writer gets a short grace to flush, then the socket is dropped.
    let give_up = async {
        shared.token.cancelled().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    let result = tokio::select! {
        result = work => result,
        _ = give_up => Ok(()),
    };
    if let Err(error) = result {
        debug!(peer = %shared.peer.name, %error, "write failed");
        // Set before the token is cancelled, so the reader reports the failure, not a close
        // by this node.
        let _ = shared.write_error.set(error.to_string()); // only the writer sets it
    }
    // Replies that will never be written (queued, or taken when the writer gave up) stop
    // counting; nothing else will release them.
    let unwritten = outbox.close() + outbox.in_hand.swap(0, Ordering::Relaxed);
    shared.release_inbound(unwritten);
    shared.mark_closed();
    outbox.drained.notify_one();
}

async fn write_batch(
    shared: &Shared,
    half: &mut WriteHalf,
    batch: &mut BytesMut,
) -> std::io::Result<()> {
    let replies = shared.outbox.take(batch);
    if batch.is_empty() {
        return Ok(());
    }
    // The requests these replies answer keep counting against the in-flight limit until the
    // bytes are written: a peer that does not read keeps its own requests from being served.
    shared.outbox.in_hand.store(replies, Ordering::Relaxed);
    let result = half.write_all(batch).await;
    shared.release_inbound(shared.outbox.in_hand.swap(0, Ordering::Relaxed));
    shared.outbox.drained.notify_one();
    batch.clear();
    if batch.capacity() > KEEP_CAPACITY {
        *batch = BytesMut::with_capacity(16 << 10);
    }
    result
}
