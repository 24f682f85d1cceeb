//! The handle to one link, [`Connection`], and the state its tasks share: the outbox, the
//! table of calls waiting for replies, the peer's requests running here, and the counters.
//!
//! [`Connection::start`] spawns the link's tasks, which live under it: the reader
//! ([`reader`]), the writer ([`outbox`]) and the deadline sweeper ([`pending`]); how a link
//! ends and what its goodbye promises is [`goodbye`], the streams on it [`streams`]. Callers send requests and
//! casts through the handle, encoded straight into the outbox; a guard removes each call's
//! pending entry however it ends and tells the callee when the caller gave up. The tasks
//! stop when the link's token is cancelled (node shutdown, replacement by the tie-break), the
//! socket closes, or the peer stays silent too long; every pending call then fails at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) mod goodbye;
pub(crate) mod outbox;
pub(crate) mod pending;
pub(crate) mod reader;
mod shared;
pub(crate) mod streams;

pub(in crate::link) use shared::{CachePadded, Shared};

use super::frames::FrameDecoder;
use super::meter::{record_call, Side};
pub(crate) use super::running::Running;
use super::transport::Socket;
use super::LinkCtx;
use crate::error::RpcError;
use crate::wire::{self, Encoding, FrameError, Header, NodeId, RemoteError};
use outbox::Outbox;
use pending::Pending;
use reader::Closed;
use streams::Streams;

/// Who is at the other end of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's id for this run.
    pub id: NodeId,
    /// The peer's name.
    pub name: String,
    /// The address the peer listens on; `None` for a plain client.
    pub addr: Option<SocketAddr>,
    /// The socket address the link comes from.
    pub remote: SocketAddr,
    /// When the peer's current run started (ms since the Unix epoch); larger is newer.
    pub incarnation: u64,
    /// The protocol version the link speaks: the newest both sides speak.
    pub protocol: u16,
}

/// One request about to be sent.
struct Outgoing<'a> {
    method: &'a str,
    encoding: Encoding,
    timeout: Duration,
    retry: bool,
    signature: Option<u64>,
}

/// What a waiting caller receives: the result's encoding and bytes, or the callee's error.
pub(crate) type Reply = Result<(Encoding, Bytes), RemoteError>;

/// Handle to one live link; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    /// The link's state, for this layer only: other layers ask the methods below.
    pub(super) shared: Arc<Shared>,
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
    record_call(Side::Made, method, outcome, started);
}

impl Connection {
    /// Starts the reader and writer through the node's tracker. `first` (the handshake's
    /// last frame, on the accepting side) is queued before anyone else can send. `on_close`
    /// runs once the reader has stopped and every pending call has failed, even if the
    /// reader panicked.
    pub(crate) fn start(
        parts: Parts,
        first: Option<Bytes>,
        ctx: LinkCtx,
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
            streams: Streams::default(),
            running: Running::default(),
            next_id: CachePadded(AtomicU64::new(1)),
            in_flight: CachePadded(AtomicUsize::new(0)),
            activity: CachePadded(AtomicU64::new(0)),
            served: CachePadded(AtomicU64::new(0)),
            answered: CachePadded(AtomicU64::new(0)),
            idle_closed: AtomicBool::new(false),
            dispatched: AtomicU64::new(0),
            unread_above: AtomicU64::new(u64::MAX),
            peer_stays: AtomicBool::new(false),
            inbound: CachePadded(AtomicUsize::new(0)),
            limits: ctx.limits.clone(),
            write_error: OnceLock::new(),
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
        let budget = ctx.limits.frames.clone();
        let reader = reader.map_decoder(|codec| FrameDecoder::new(codec, budget));
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
        tasks.spawn(reader::run(
            conn.clone(),
            reader,
            ctx,
            parts.silence,
            on_close,
        ));
        conn
    }

    pub(crate) fn peer(&self) -> &PeerInfo {
        &self.shared.peer
    }

    /// Unique among this node's connections: tells two links to one peer apart.
    pub(crate) fn id(&self) -> u64 {
        self.shared.conn_id
    }

    /// Whether this node dialed the link (the tie-break between two links to one peer).
    pub(crate) fn dialed(&self) -> bool {
        self.shared.outbound
    }

    /// How many requests, casts and responses the reader has seen so far (the idle reaper
    /// compares it across sweeps), and whether a call is in flight either way now.
    pub(crate) fn activity(&self) -> (u64, bool) {
        let started = self.shared.activity.load(Ordering::Relaxed);
        (started, self.shared.in_flight.load(Ordering::Relaxed) > 0)
    }

    /// Calls this node made on the link that were answered, and calls it served: (made,
    /// served), counted since the link opened.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
    pub(crate) fn calls(&self) -> (u64, u64) {
        let shared = &self.shared;
        (
            shared.answered.load(Ordering::Relaxed),
            shared.served.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Marks the link closed, stops its tasks and fails every pending call; the peer's
    /// requests still running here stop too (nobody is left to answer).
    pub(super) fn shutdown(&self) {
        self.shared.mark_closed();
        self.shared.running.cancel_all();
        // Dropping the senders wakes each waiting caller with `Disconnected`. A caller that
        // inserts after this sees `closed` and removes its own entry.
        self.shared.pending.clear();
        self.shared.streams.clear(&self.shared.peer.name);
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
        signature: Option<u64>,
    ) -> Result<(Encoding, Bytes), RpcError> {
        let call = Outgoing {
            method,
            encoding,
            timeout,
            retry,
            signature,
        };
        self.exchange(call, |buf, header, max| {
            wire::append_frame(buf, header, encoding, args, max)
        })
        .await
    }

    /// Sends a request whose arguments are already encoded in `encoding` (a call this node
    /// forwards) and waits for its reply, at most `timeout`. Cancel safe as [`Self::request`].
    pub(crate) async fn request_raw(
        &self,
        method: &str,
        encoding: Encoding,
        body: &[u8],
        timeout: Duration,
    ) -> Result<(Encoding, Bytes), RpcError> {
        let call = Outgoing {
            method,
            encoding,
            timeout,
            retry: false,
            signature: None,
        };
        self.exchange(call, |buf, header, max| {
            wire::append_frame_raw(buf, header, body, max)
        })
        .await
    }

    async fn exchange(
        &self,
        call: Outgoing<'_>,
        append: impl FnOnce(&mut BytesMut, &Header<'_>, usize) -> Result<(), FrameError>,
    ) -> Result<(Encoding, Bytes), RpcError> {
        let Outgoing {
            method,
            encoding,
            timeout,
            retry,
            signature,
        } = call;
        let shared = &self.shared;
        let now = Instant::now();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = Some(timeout.as_millis().min(u64::MAX as u128) as u64);
        let trace = super::trace::current_trace();
        let header = if retry {
            Header::Retry {
                id,
                method: method.into(),
                timeout_ms,
                encoding,
                signature,
                trace,
            }
        } else {
            Header::Request {
                id,
                method: method.into(),
                timeout_ms,
                encoding,
                signature,
                trace,
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
        let mut guard = PendingGuard {
            shared,
            id,
            waiting: true,
        };
        if self.is_closed() || !self.send(&header, method, append)? {
            return Err(self.disconnected(method));
        }
        // The link's sweeper answers `timeout` when the deadline passes.
        let answer = rx.await;
        // Whoever answered (the reader, the sweeper, a closing link) took the entry out.
        guard.waiting = false;
        let result = match answer {
            Err(_) => Err(shared.lost(method, id)),
            Ok(Err(remote)) => Err(RpcError::from_remote(method, remote, timeout)),
            Ok(Ok(reply)) => Ok(reply),
        };
        if shared.limits.metered {
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
        let append = |buf: &mut BytesMut, header: &Header<'_>, max| {
            wire::append_frame(buf, header, encoding, args, max)
        };
        if self.is_closed() || !self.send(&header, method, append)? {
            return Err(self.disconnected(method));
        }
        Ok(())
    }

    /// Encodes the frame straight into the outbox; false if the writer has stopped.
    fn send(
        &self,
        header: &Header<'_>,
        method: &str,
        append: impl FnOnce(&mut BytesMut, &Header<'_>, usize) -> Result<(), FrameError>,
    ) -> Result<bool, RpcError> {
        let max = self.shared.max_frame;
        self.shared
            .outbox
            .push(false, |buf| match append(buf, header, max) {
                Ok(()) => Ok(()),
                Err(FrameError::Encode(e)) => Err(RpcError::BadArguments {
                    method: method.to_owned(),
                    detail: format!("the arguments of `{method}` cannot be encoded: {e}"),
                }),
                Err(FrameError::TooLarge(size)) => Err(RpcError::FrameTooLarge {
                    message: format!("a request of {size} bytes exceeds the limit of {max} bytes"),
                }),
            })
    }

    pub(super) fn disconnected(&self, method: &str) -> RpcError {
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
    /// Cleared once the waiter got its answer: the entry is gone then, and taking the
    /// table's lock again to make sure would cost every call a third lock.
    waiting: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        // Still waiting: the caller dropped the call. Tell the callee to stop working on it.
        if self.waiting && self.shared.pending.remove(self.id) {
            self.shared.send_cancel(self.id);
        }
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
