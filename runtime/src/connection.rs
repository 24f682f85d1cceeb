//! One link to a peer: a reader task, a writer task ([`crate::outbox`]), a deadline sweeper
//! ([`crate::pending`]) and the table of calls waiting for replies.
//!
//! The [`Connection`] handle is cheap to clone; callers use it to send requests and casts,
//! encoded straight into the outbox. The reader routes responses to waiting callers, hands
//! requests to [`crate::serve`], answers pings and applies cancels. The tasks stop when the connection's token is cancelled (node shutdown, replacement by the
//! tie-break), the socket closes, or the peer stays silent too long; every call still pending
//! then fails with `Disconnected` at once.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::AbortHandle;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::outbox::{self, Outbox};
use crate::pending::Pending;
use crate::serve::{self, FrameError, ServeCtx};
use crate::transport::{Reader, Socket};
use crate::wire::{self, Encoding, FrameBuf, Header, RemoteError};
use crate::{PeerInfo, RpcError};

/// What a waiting caller receives: the result's encoding and bytes, or the callee's error.
pub(crate) type Reply = Result<(Encoding, Bytes), RemoteError>;

/// State shared by a connection's handle, its reader and its writer.
pub(crate) struct Shared {
    /// Who is at the other end.
    pub(crate) peer: PeerInfo,
    /// Unique among this node's connections, so the registry can tell two links to one peer apart.
    pub(crate) conn_id: u64,
    /// True when this node dialed; the tie-break between two links to one peer uses it.
    pub(crate) outbound: bool,
    /// Largest frame sent on this link: the smaller of our limit and the peer's.
    pub(crate) max_frame: usize,
    /// Frames for the writer, encoded in place (see [`crate::outbox`]). Bounded in use:
    /// requests wait for their reply (so callers bound them), and replies by `max_in_flight`.
    pub(crate) outbox: Outbox,
    /// The peer's requests running as tasks here, so a `Cancel` can stop them.
    pub(crate) running: Running,
    /// Calls waiting for a response, by request id. Entries are removed by the response or by
    /// the caller's drop guard; the link clears the table when it closes.
    pending: Pending,
    // The counters callers and tasks on every worker touch get a cache line each, so they do
    // not slow each other (or the fields read on every call) down.
    next_id: CachePadded<AtomicU64>,
    /// Calls in flight both ways; the writer coalesces writes while it is above one.
    pub(crate) in_flight: CachePadded<AtomicUsize>,
    /// Requests from the peer admitted and not yet answered on the wire.
    pub(crate) inbound: CachePadded<AtomicUsize>,
    /// The same, summed over every link of the node (shared with `ServeCtx`).
    pub(crate) node_inbound: Arc<AtomicUsize>,
    closed: AtomicBool,
    /// Why the writer stopped, when it failed: the reader reports it as the link's end.
    pub(crate) write_error: OnceLock<String>,
    /// Record the calls made on this link (the node serves `/metrics`).
    metered: bool,
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
    fn send_control(&self, header: &Header<'_>) {
        let max = self.max_frame;
        let _ = self.outbox.push(false, |buf| {
            FrameBuf::new(buf, header)
                .map_err(drop)?
                .finish(max)
                .map_err(drop)
        });
    }

    /// `n` admitted requests are answered (or will never be): they stop counting.
    pub(crate) fn release_inbound(&self, n: usize) {
        if n > 0 {
            self.inbound.fetch_sub(n, Ordering::Relaxed);
            self.node_inbound.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Marks the link closed and stops its tasks.
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.token.cancel();
    }
}

/// Abort handles of the peer's requests running as tasks (async handlers), by request id.
#[derive(Default)]
pub(crate) struct Running {
    tasks: std::sync::Mutex<std::collections::HashMap<u64, AbortHandle>>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, id: u64, abort: AbortHandle) {
        self.lock().insert(id, abort);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Stops request `id` if it is still running.
    fn cancel(&self, id: u64) {
        if let Some(abort) = self.lock().remove(&id) {
            abort.abort();
        }
    }
}

/// A value alone on its cache line.
#[repr(align(64))]
pub(crate) struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Handle to one live link; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) shared: Arc<Shared>,
}

/// Why a link closed, as its `on_close` callback sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// This node closed it (shutdown, replaced by the tie-break).
    Locally,
    /// The peer closed the socket without a goodbye.
    ByPeer,
    /// The peer said goodbye; `leaving` when it is leaving the cluster.
    Goodbye { reason: String, leaving: bool },
    /// Nothing arrived for this long.
    Silent(Duration),
    /// A read or decode failed.
    Failed(String),
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::Locally => f.write_str("closed by this node"),
            Closed::ByPeer => f.write_str("the peer closed the connection"),
            Closed::Goodbye {
                reason,
                leaving: true,
            } => write!(f, "the peer left: {reason}"),
            Closed::Goodbye {
                reason,
                leaving: false,
            } => write!(f, "the peer said goodbye: {reason}"),
            Closed::Silent(after) => write!(f, "nothing heard from the peer for {after:?}"),
            Closed::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Everything needed to start a connection's tasks once the handshake is done.
pub(crate) struct Parts {
    pub(crate) socket: Socket,
    pub(crate) peer: PeerInfo,
    pub(crate) conn_id: u64,
    pub(crate) outbound: bool,
    /// Largest frame sent: the smaller of ours and the peer's.
    pub(crate) max_frame: usize,
    /// Largest frame accepted: ours.
    pub(crate) max_frame_in: usize,
    /// Idle time after which the writer sends a `Ping`.
    pub(crate) heartbeat: Duration,
    /// Silence after which the link is considered dead.
    pub(crate) silence: Duration,
}

/// Records a call this node made, when metrics are on.
fn meter_made(method: &str, started: Instant, result: &Result<(Encoding, Bytes), RpcError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.kind().as_str(),
    };
    let method = metrics::SharedString::from(Arc::<str>::from(method));
    serve::record_call(serve::Side::Made, method, outcome, started);
}

impl Connection {
    /// Starts the reader and writer through the node's tracker. `first` (the handshake's
    /// last frame, on the accepting side) is queued before anyone else can send. `on_close`
    /// runs once the reader has stopped and every pending call has failed, even if the
    /// reader panicked.
    pub(crate) fn start(
        parts: Parts,
        first: Option<Bytes>,
        ctx: ServeCtx,
        token: CancellationToken,
        on_close: impl FnOnce(&Connection, &Closed) + Send + 'static,
    ) -> Connection {
        let outbox = Outbox::new();
        if let Some(frame) = first {
            let queued = outbox.push(false, |buf| {
                buf.extend_from_slice(&frame);
                Ok::<(), ()>(())
            });
            debug_assert_eq!(queued, Ok(true), "a new outbox is open");
        }
        let shared = Arc::new(Shared {
            peer: parts.peer,
            conn_id: parts.conn_id,
            outbound: parts.outbound,
            max_frame: parts.max_frame,
            outbox,
            pending: Pending::new(),
            running: Running::default(),
            next_id: CachePadded(AtomicU64::new(1)),
            in_flight: CachePadded(AtomicUsize::new(0)),
            inbound: CachePadded(AtomicUsize::new(0)),
            node_inbound: ctx.node_inbound.clone(),
            write_error: OnceLock::new(),
            metered: ctx.metered,
            closed: AtomicBool::new(false),
            token,
        });
        let conn = Connection { shared };
        let Socket {
            mut reader, writer, ..
        } = parts.socket;
        reader
            .decoder_mut()
            .set_max_frame_length(parts.max_frame_in);
        let tasks = ctx.tasks.clone();
        let sweeper = conn.shared.clone();
        tasks.spawn(async move {
            let link = &sweeper;
            link.pending
                .sweep(&link.token, |id| link.send_cancel(id))
                .await
        });
        tasks.spawn(outbox::write_loop(
            conn.shared.clone(),
            writer,
            parts.heartbeat,
        ));
        let mut guard = CloseGuard {
            conn: conn.clone(),
            why: Closed::Failed("the reader panicked".into()),
            on_close: Some(on_close),
        };
        tasks.spawn(async move {
            let why = read_loop(&guard.conn.shared, reader, &ctx, parts.silence).await;
            guard.because(why);
        });
        conn
    }

    pub(crate) fn peer(&self) -> &PeerInfo {
        &self.shared.peer
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Resolves when the link has closed.
    pub(crate) async fn closed(&self) {
        self.shared.token.cancelled().await
    }

    /// Sends `Goodbye` and closes the link; pending calls fail with `Disconnected`.
    pub(crate) fn close(&self, reason: &str, leaving: bool) {
        let goodbye = Header::Goodbye {
            reason: reason.into(),
            leaving,
        };
        self.shared.send_control(&goodbye);
        self.shutdown();
    }

    /// Marks the link closed, stops its tasks and fails every pending call.
    fn shutdown(&self) {
        self.shared.mark_closed();
        // Dropping the senders wakes each waiting caller with `Disconnected`. A caller that
        // inserts after this sees `closed` and removes its own entry.
        self.shared.pending.clear();
    }

    /// Sends a request and waits for its reply, at most `timeout`.
    ///
    /// # Cancel safety
    /// Dropping the future removes the pending entry; a late reply is then discarded.
    pub(crate) async fn request<A: Serialize + ?Sized>(
        &self,
        method: &str,
        encoding: Encoding,
        args: &A,
        timeout: Duration,
        retry: bool,
    ) -> Result<(Encoding, Bytes), RpcError> {
        let shared = &self.shared;
        let now = Instant::now();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = Some(timeout.as_millis().min(u64::MAX as u128) as u64);
        let header = if retry {
            Header::Retry {
                id,
                method: method.into(),
                timeout_ms,
                encoding,
            }
        } else {
            Header::Request {
                id,
                method: method.into(),
                timeout_ms,
                encoding,
            }
        };
        // Registered before the frame can leave: the reply may come back at once.
        let (tx, rx) = oneshot::channel();
        // A timeout too large to add ("wait forever") becomes a deadline a century away.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        shared.pending.insert(id, tx, deadline);
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = PendingGuard { shared, id };
        if self.is_closed() || !self.send(&header, encoding, args, method)? {
            return Err(self.disconnected(method));
        }
        // The link's sweeper answers `timeout` when the deadline passes.
        let result = match rx.await {
            Err(_) => Err(self.disconnected(method)),
            Ok(Err(remote)) => Err(RpcError::from_remote(method, remote, timeout)),
            Ok(Ok(reply)) => Ok(reply),
        };
        if shared.metered {
            meter_made(method, now, &result);
        }
        result
    }

    /// Sends a one-way message.
    pub(crate) fn cast<A: Serialize + ?Sized>(
        &self,
        method: &str,
        encoding: Encoding,
        args: &A,
    ) -> Result<(), RpcError> {
        let header = Header::Cast {
            method: method.into(),
            encoding,
        };
        if self.is_closed() || !self.send(&header, encoding, args, method)? {
            return Err(self.disconnected(method));
        }
        Ok(())
    }

    /// Encodes the frame straight into the outbox; false if the writer has stopped.
    fn send<A: Serialize + ?Sized>(
        &self,
        header: &Header<'_>,
        encoding: Encoding,
        args: &A,
        method: &str,
    ) -> Result<bool, RpcError> {
        let max = self.shared.max_frame;
        self.shared.outbox.push(false, |buf| {
            match serve::append_frame(buf, header, encoding, args, max) {
                Ok(()) => Ok(()),
                Err(FrameError::Encode(e)) => Err(RpcError::BadArguments {
                    method: method.to_owned(),
                    detail: format!("cannot encode: {e}"),
                }),
                Err(FrameError::TooLarge(size)) => Err(RpcError::FrameTooLarge {
                    message: format!("a request of {size} bytes exceeds the limit of {max} bytes"),
                }),
            }
        })
    }

    fn disconnected(&self, method: &str) -> RpcError {
        RpcError::Disconnected {
            peer: self.shared.peer.name.clone(),
            method: method.to_owned(),
        }
    }
}

/// Removes a call's pending entry however the call ends (reply, timeout, drop).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        // Still waiting: the caller dropped the call. Tell the callee to stop working on it.
        if self.shared.pending.remove(self.id) {
            self.shared.send_cancel(self.id);
        }
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes the link and runs `on_close` when the reader task ends, however it ends.
struct CloseGuard<F: FnOnce(&Connection, &Closed)> {
    conn: Connection,
    why: Closed,
    on_close: Option<F>,
}

impl<F: FnOnce(&Connection, &Closed)> CloseGuard<F> {
    fn because(&mut self, why: Closed) {
        self.why = why;
    }
}

impl<F: FnOnce(&Connection, &Closed)> Drop for CloseGuard<F> {
    fn drop(&mut self) {
        let peer = &self.conn.shared.peer;
        match &self.why {
            Closed::Failed(_) | Closed::Silent(_) => {
                warn!(peer = %peer.name, reason = %self.why, "link closed")
            }
            _ => debug!(peer = %peer.name, reason = %self.why, "link closed"),
        }
        self.conn.shutdown();
        if let Some(on_close) = self.on_close.take() {
            on_close(&self.conn, &self.why);
        }
    }
}

/// Reads frames until the link closes; returns why.
async fn read_loop(
    shared: &Arc<Shared>,
    mut frames: Reader,
    ctx: &ServeCtx,
    silence: Duration,
) -> Closed {
    // Progress is any byte read (a large frame may take long to arrive), checked four times
    // per silence period: a link is closed between `silence` and 1.25 × `silence` after the
    // last byte.
    let mut tick = tokio::time::interval(silence / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut frames_read = 0u64;
    let mut seen = (0u64, 0usize);
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let paused = backlogged(shared, ctx);
        let payload = tokio::select! {
            _ = shared.token.cancelled() => {
                // The peer may have said goodbye and closed, and our writer then failed on the
                // closed socket before we read the goodbye: it is in the buffer, and it says
                // more (leaving or not) than the write error does.
                if let Some(goodbye) = buffered_goodbye(&mut frames) {
                    return goodbye;
                }
                if let Some(error) = shared.write_error.get() {
                    return Closed::Failed(format!("write failed: {error}"));
                }
                // Closed by us, after a goodbye: read (and drop) until the peer closes too, a
                // short while at most. Closing a socket with unread bytes in it sends a reset,
                // which can destroy our goodbye before the peer reads it.
                let drain = async { while let Some(Ok(_)) = frames.next().await {} };
                let _ = tokio::time::timeout(CLOSE_DRAIN, drain).await;
                return Closed::Locally;
            }
            // Paused: the peer is not reading our replies. Wait for the writer (or for the
            // silence check to close the link).
            _ = shared.outbox.drained.notified(), if paused => continue,
            _ = tick.tick() => {
                let now = (frames_read, frames.read_buffer().len());
                if now != seen {
                    seen = now;
                    last_progress = tokio::time::Instant::now();
                } else if last_progress.elapsed() >= silence {
                    return Closed::Silent(silence);
                }
                continue;
            }
            next = frames.next(), if !paused => match next {
                None => return Closed::ByPeer,
                Some(Err(e)) => return Closed::Failed(read_error(e, frames.decoder().max_frame_length())),
                Some(Ok(payload)) => payload,
            },
        };
        frames_read += 1;
        let payload = payload.freeze();
        let (header, body) = match wire::decode_frame(&payload) {
            Ok(decoded) => decoded,
            Err(e) => return Closed::Failed(format!("undecodable frame: {e}")),
        };
        let retry = matches!(header, Header::Retry { .. });
        match header {
            Header::Response { id, outcome } => {
                shared.pending.complete(id, outcome.map(|enc| (enc, body)));
            }
            Header::Request {
                id,
                method,
                timeout_ms,
                encoding,
            }
            | Header::Retry {
                id,
                method,
                timeout_ms,
                encoding,
            } => {
                let call = serve::Call {
                    id: Some(id),
                    method: &method,
                    encoding,
                    timeout_ms,
                    retry,
                };
                serve::dispatch(shared, ctx, call, body);
            }
            Header::Cast { method, encoding } => {
                let call = serve::Call {
                    id: None,
                    method: &method,
                    encoding,
                    timeout_ms: None,
                    retry: false,
                };
                serve::dispatch(shared, ctx, call, body);
            }
            // Aborts the request's async handler if it is still running; sync handlers and
            // actor messages run to the end, and the caller discards their reply.
            Header::Cancel { id } => shared.running.cancel(id),
            Header::Pong => {}
            Header::Ping => shared.send_control(&Header::Pong),
            Header::Goodbye { reason, leaving } => {
                return Closed::Goodbye {
                    reason: reason.into_owned(),
                    leaving,
                }
            }
        }
    }
}

/// How long a link closed by this node keeps reading for the peer's own close.
const CLOSE_DRAIN: Duration = Duration::from_millis(200);

/// A `Goodbye` among the frames already received, if any (the others are dropped: the link
/// is closing).
fn buffered_goodbye(frames: &mut Reader) -> Option<Closed> {
    use futures_util::FutureExt;
    while let Some(Some(Ok(payload))) = frames.next().now_or_never() {
        let payload = payload.freeze();
        if let Ok((Header::Goodbye { reason, leaving }, _)) = wire::decode_frame(&payload) {
            return Some(Closed::Goodbye {
                reason: reason.into_owned(),
                leaving,
            });
        }
    }
    None
}

/// Past this much waiting for a peer that does not read, its requests are not read either.
const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// Whether to stop reading requests: replies to twice `max_in_flight` requests (the excess
/// answered `overloaded`), or 64 MiB of frames, wait for a peer that does not read them.
fn backlogged(shared: &Shared, ctx: &ServeCtx) -> bool {
    shared.inbound.load(Ordering::Relaxed) > 2 * ctx.max_in_flight
        || shared.outbox.queued_bytes() > MAX_BACKLOG_BYTES
}

fn read_error(e: std::io::Error, max_frame: usize) -> String {
    let oversized = e
        .get_ref()
        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>());
    if oversized {
        format!("the peer sent a frame larger than the {max_frame}-byte limit")
    } else {
        format!("read failed: {e}")
    }
}
