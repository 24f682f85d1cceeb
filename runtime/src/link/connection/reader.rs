//! The reader task of one link: decodes frames as they arrive, routes responses to waiting
//! callers, hands requests and casts to the node's [`Dispatch`] with a [`Responder`] each,
//! answers pings and applies cancels. It pauses reading requests while the peer does not read
//! our replies, and closes the link when nothing has arrived for the silence period.
//!
//! It stops when the link's token is cancelled, the socket closes or fails, or the peer says
//! goodbye; then the link is marked closed and every pending call fails at once.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::{debug, warn};

use super::streams::{StreamPort, UPLOAD_WINDOW};
use super::{Connection, Shared};
use crate::link::flow::Ending;
use crate::link::frames::FrameDecoder;
use crate::link::transport::ReadHalf;
use crate::link::{LinkCtx, Request, Responder};
use crate::wire::{self, Header};

/// A live link's frames.
pub(super) type Frames = tokio_util::codec::FramedRead<ReadHalf, FrameDecoder>;

/// Why a link closed, as its `on_close` callback sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// This node closed it (shutdown, replaced by the tie-break).
    Locally,
    /// The peer closed the socket without a goodbye.
    ByPeer,
    /// The peer said goodbye; `leaving` when it is leaving the cluster. From version 4 on,
    /// `last` is the highest id of our requests it dispatched: the others never ran.
    Goodbye {
        reason: String,
        leaving: bool,
        last: Option<u64>,
    },
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
                ..
            } => write!(f, "the peer left: {reason}"),
            Closed::Goodbye {
                reason,
                leaving: false,
                ..
            } => write!(f, "the peer said goodbye: {reason}"),
            Closed::Silent(after) => write!(f, "nothing heard from the peer for {after:?}"),
            Closed::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Reads `frames` until the link closes, then closes it and runs `on_close`, even if the
/// reader panicked.
pub(super) async fn run(
    conn: Connection,
    frames: Frames,
    ctx: LinkCtx,
    silence: Duration,
    on_close: impl FnOnce(&Connection, &Closed) + Send + 'static,
) {
    let mut guard = CloseGuard {
        conn,
        why: Closed::Failed("the reader panicked".into()),
        on_close: Some(on_close),
    };
    let why = read_loop(&guard.conn.shared, frames, &ctx, silence).await;
    guard.because(why);
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
        // Calls the peer promised it never dispatched did not run: they fail as such (a
        // caller may send them elsewhere); the rest fail as `disconnected` below.
        if let Closed::Goodbye {
            last: Some(last),
            leaving,
            ..
        } = &self.why
        {
            super::goodbye::not_run_above(&self.conn.shared, *last, *leaving);
        }
        self.conn.shutdown();
        if let Some(on_close) = self.on_close.take() {
            on_close(&self.conn, &self.why);
        }
    }
}
/// How many frames the reader may take between two looks at the link's token.
const TOKEN_EVERY: u64 = 64;

/// Reads frames until the link closes; returns why.
async fn read_loop(
    shared: &Arc<Shared>,
    mut frames: Frames,
    ctx: &LinkCtx,
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
    let from_node = shared.peer.addr.is_some();
    // Waited on once for the whole loop: a fresh one per frame registers and unregisters
    // with the token each time.
    let cancelled = shared.token.cancelled();
    tokio::pin!(cancelled);
    loop {
        let paused = backlogged(shared, ctx);
        // In this order: a frame already buffered is taken without polling the token (a
        // lock) or the timer; the silence check matters only when no frame comes. So that
        // a peer whose frames never run dry cannot keep a closed link reading (and running
        // its casts), the link's own close flag is read before every frame and the token
        // (closed with the node, say) every `TOKEN_EVERY` frames.
        let closing = shared.closed.load(Ordering::Relaxed)
            || (frames_read.is_multiple_of(TOKEN_EVERY) && shared.token.is_cancelled());
        let payload = tokio::select! {
            biased;
            next = frames.next(), if !paused && !closing => match next {
                None => return Closed::ByPeer,
                Some(Err(e)) => return Closed::Failed(read_error(e, frames.decoder().max_frame_length())),
                Some(Ok(payload)) => payload,
            },
            _ = &mut cancelled => {
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
        };
        frames_read += 1;
        let payload = payload.freeze();
        let (header, body) = match wire::decode_frame(&payload) {
            Ok(decoded) => decoded,
            Err(e) => return Closed::Failed(format!("undecodable frame: {e}")),
        };
        let retry = matches!(header, Header::Retry { .. });
        if !matches!(
            header,
            Header::Ping
                | Header::Pong
                | Header::Goodbye { .. }
                | Header::GoodbyeAfter { .. }
                | Header::Cancel { .. }
        ) {
            shared.activity.fetch_add(1, Ordering::Relaxed);
        }
        match header {
            Header::Response { id, outcome } => {
                shared.answered.fetch_add(1, Ordering::Relaxed);
                shared.pending.complete(id, wire::reply_of(outcome, body));
                // A stream's reply ends it: an upload waiting for credit stops now.
                shared.streams.finish(id, false, Ending::Complete);
            }
            Header::Request {
                id,
                method,
                timeout_ms,
                encoding,
                signature,
                trace,
            }
            | Header::Retry {
                id,
                method,
                timeout_ms,
                encoding,
                signature,
                trace,
            } => {
                if !shared.may_dispatch(id) {
                    continue; // this node said goodbye; the peer knows it did not run
                }
                shared.served.fetch_add(1, Ordering::Relaxed);
                ctx.dispatch.dispatch(Request {
                    method: &method,
                    encoding,
                    timeout_ms,
                    retry,
                    from_node,
                    signature,
                    trace,
                    body,
                    responder: Responder::new(shared.clone(), Some(id), encoding),
                    stream: None,
                });
            }
            Header::StreamOpen {
                id,
                method,
                timeout_ms,
                encoding,
                signature,
                credit,
                trace,
            } => {
                if !shared.may_dispatch(id) {
                    continue;
                }
                shared.served.fetch_add(1, Ordering::Relaxed);
                let ends = shared.streams.serve(id, credit, UPLOAD_WINDOW);
                let port = StreamPort::new(shared.clone(), id, ends, encoding);
                ctx.dispatch.dispatch(Request {
                    method: &method,
                    encoding,
                    timeout_ms,
                    retry: false,
                    from_node,
                    signature,
                    trace,
                    body,
                    responder: Responder::new(shared.clone(), Some(id), encoding),
                    stream: Some(port),
                });
            }
            Header::StreamItem { id, from_caller } => {
                if shared.streams.item(id, from_caller, body).is_err() {
                    return Closed::Failed(
                        "the peer sent stream items beyond the credit it was given".into(),
                    );
                }
            }
            Header::StreamCredit { id, from_caller, n } => {
                shared.streams.credit(id, from_caller, n);
            }
            Header::StreamEnd { id } => shared.streams.end_upload(id),
            Header::Cast { method, encoding } => {
                ctx.dispatch.dispatch(Request {
                    method: &method,
                    encoding,
                    timeout_ms: None,
                    retry: false,
                    from_node,
                    signature: None,
                    trace: None,
                    body,
                    responder: Responder::new(shared.clone(), None, encoding),
                    stream: None,
                });
            }
            // Aborts the request's async handler if it is still running; sync handlers and
            // actor messages run to the end, and the caller discards their reply.
            Header::Cancel { id } => {
                shared.running.cancel(id);
                let why = Ending::Broken("the caller cancelled the stream".into());
                shared.streams.finish(id, true, why);
            }
            Header::Pong => {}
            Header::Ping => shared.send_control(&Header::Pong),
            Header::Goodbye { reason, leaving } => {
                return Closed::Goodbye {
                    reason: reason.into_owned(),
                    leaving,
                    last: None,
                }
            }
            Header::GoodbyeAfter {
                reason,
                leaving,
                last,
            } => {
                return Closed::Goodbye {
                    reason: reason.into_owned(),
                    leaving,
                    last: Some(last),
                }
            }
        }
    }
}

/// How long a link closed by this node keeps reading for the peer's own close.
const CLOSE_DRAIN: Duration = Duration::from_millis(200);

/// A `Goodbye` among the frames already received, if any (the others are dropped: the link
/// is closing).
fn buffered_goodbye(frames: &mut Frames) -> Option<Closed> {
    use futures_util::FutureExt;
    while let Some(Some(Ok(payload))) = frames.next().now_or_never() {
        let payload = payload.freeze();
        let goodbye = match wire::decode_frame(&payload) {
            Ok((Header::Goodbye { reason, leaving }, _)) => (reason, leaving, None),
            Ok((
                Header::GoodbyeAfter {
                    reason,
                    leaving,
                    last,
                },
                _,
            )) => (reason, leaving, Some(last)),
            _ => continue,
        };
        return Some(Closed::Goodbye {
            reason: goodbye.0.into_owned(),
            leaving: goodbye.1,
            last: goodbye.2,
        });
    }
    None
}

/// Past this much waiting for a peer that does not read, its requests are not read either.
const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// Whether to stop reading requests: replies to twice `max_in_flight` requests (the excess
/// answered `overloaded`), or 64 MiB of frames, wait for a peer that does not read them.
fn backlogged(shared: &Shared, ctx: &LinkCtx) -> bool {
    shared.inbound.load(Ordering::Relaxed) > 2 * ctx.limits.max_in_flight
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
