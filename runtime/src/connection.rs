//! One link to a peer: a reader task, a writer task and the table of calls waiting for replies.
//!
//! The [`Connection`] handle is cheap to clone; callers use it to send requests and casts. The
//! reader routes responses to waiting callers and hands requests to [`crate::serve`]. The
//! writer owns the socket's write half and drains a queue of ready-made frames, coalescing
//! them into few writes. Both tasks stop when the connection's token is cancelled (node
//! shutdown, replacement by the tie-break) or the socket closes; every call still pending then
//! fails with `Disconnected` at once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::serve::{self, ServeCtx};
use crate::transport::{Reader, Socket};
use crate::wire::{self, Encoding, FrameBuf, Header, RemoteError};
use crate::{PeerInfo, RpcError};

/// How long a closing writer may keep flushing to a peer that does not read.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

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
    /// Frames for the writer. Unbounded by type, bounded in use: requests wait for their reply
    /// (so callers bound them), and replies are bounded by `max_in_flight` admitted requests.
    out: mpsc::UnboundedSender<Bytes>,
    /// Calls waiting for a response, by request id. Entries are removed by the response or by
    /// the caller's drop guard; the reader clears the table when the link closes.
    pending: DashMap<u64, oneshot::Sender<Reply>>,
    next_id: AtomicU64,
    /// Calls in flight both ways; the writer coalesces writes while it is above one.
    pub(crate) in_flight: AtomicUsize,
    /// Requests from the peer admitted and not yet answered.
    pub(crate) inbound: AtomicUsize,
    closed: AtomicBool,
    /// Cancelled to close the link; child of the node's token.
    token: CancellationToken,
}

impl Shared {
    /// Queues a finished frame for the writer; false once the link is closed.
    pub(crate) fn out_send(&self, frame: Bytes) -> bool {
        self.out.send(frame).is_ok()
    }
}

/// Handle to one live link; cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) shared: Arc<Shared>,
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
}

impl Connection {
    /// Starts the reader and writer through the node's tracker. `first` (the handshake reply,
    /// on the accepting side) is queued before anyone else can send. `on_close` runs once the
    /// reader has stopped and every pending call has failed.
    pub(crate) fn start(
        parts: Parts,
        first: Option<Bytes>,
        ctx: ServeCtx,
        token: CancellationToken,
        on_close: impl FnOnce(&Connection) + Send + 'static,
    ) -> Connection {
        let (out, out_rx) = mpsc::unbounded_channel();
        if let Some(frame) = first {
            let _ = out.send(frame); // the receiver is alive: it is in scope
        }
        let shared = Arc::new(Shared {
            peer: parts.peer,
            conn_id: parts.conn_id,
            outbound: parts.outbound,
            max_frame: parts.max_frame,
            out,
            pending: DashMap::new(),
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            inbound: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            token,
        });
        let conn = Connection { shared };
        let tasks = ctx.tasks.clone();
        let Socket {
            mut reader, writer, ..
        } = parts.socket;
        reader
            .decoder_mut()
            .set_max_frame_length(parts.max_frame_in);
        tasks.spawn(write_loop(conn.shared.clone(), out_rx, writer));
        let reader_conn = conn.clone();
        tasks.spawn(async move {
            let result = read_loop(&reader_conn.shared, reader, &ctx).await;
            let peer = &reader_conn.shared.peer;
            match result {
                Ok(reason) => debug!(peer = %peer.name, %reason, "link closed"),
                Err(error) => warn!(peer = %peer.name, %error, "link closed"),
            }
            reader_conn.shutdown();
            on_close(&reader_conn);
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
    pub(crate) fn close(&self, reason: &str) {
        if let Ok(frame) = FrameBuf::new(&Header::Goodbye {
            reason: reason.into(),
        }) {
            if let Ok(bytes) = frame.finish(self.shared.max_frame) {
                let _ = self.shared.out.send(bytes); // writer gone: the link is closing anyway
            }
        }
        self.shutdown();
    }

    /// Marks the link closed, stops its tasks and fails every pending call.
    fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.token.cancel();
        // Dropping the senders wakes each waiting caller with `Disconnected`. A caller that
        // inserts after this sees `closed` and removes its own entry.
        self.shared.pending.clear();
    }

    /// Queues a finished frame for the writer.
    pub(crate) fn send_frame(&self, frame: Bytes) -> bool {
        self.shared.out_send(frame)
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
    ) -> Result<(Encoding, Bytes), RpcError> {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header = Header::Request {
            id,
            method: method.into(),
            timeout_ms: Some(timeout.as_millis().min(u64::MAX as u128) as u64),
            encoding,
        };
        let frame = self.encode(&header, encoding, args, method)?;
        let (tx, rx) = oneshot::channel();
        shared.pending.insert(id, tx);
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = PendingGuard { shared, id };
        if self.is_closed() || !self.send_frame(frame) {
            return Err(self.disconnected(method));
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(RpcError::Timeout {
                method: method.to_owned(),
                after: timeout,
            }),
            Ok(Err(_)) => Err(self.disconnected(method)),
            Ok(Ok(Err(remote))) => Err(RpcError::from_remote(method, remote, timeout)),
            Ok(Ok(Ok(reply))) => Ok(reply),
        }
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
        let frame = self.encode(&header, encoding, args, method)?;
        if self.is_closed() || !self.send_frame(frame) {
            return Err(self.disconnected(method));
        }
        Ok(())
    }

    fn encode<A: Serialize + ?Sized>(
        &self,
        header: &Header<'_>,
        encoding: Encoding,
        args: &A,
        method: &str,
    ) -> Result<Bytes, RpcError> {
        let bad_args = |e: wire::CodecError| RpcError::BadArguments {
            method: method.to_owned(),
            detail: format!("cannot encode: {e}"),
        };
        let mut frame = FrameBuf::new(header).map_err(bad_args)?;
        serve::encode_body(encoding, args, frame.body_mut()).map_err(bad_args)?;
        let max = self.shared.max_frame;
        frame
            .finish(max)
            .map_err(|size| RpcError::FrameTooLarge { size, max })
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
        self.shared.pending.remove(&self.id);
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads frames until the link closes; returns why it closed cleanly, or the error.
async fn read_loop(
    shared: &Arc<Shared>,
    mut frames: Reader,
    ctx: &ServeCtx,
) -> Result<String, String> {
    loop {
        let payload = tokio::select! {
            _ = shared.token.cancelled() => return Ok("closed by this node".to_owned()),
            next = frames.next() => match next {
                None => return Ok("peer closed the connection".to_owned()),
                Some(Err(e)) => return Err(read_error(e, shared.max_frame)),
                Some(Ok(payload)) => payload,
            },
        };
        let (header, body) =
            wire::decode_frame(payload).map_err(|e| format!("undecodable frame: {e}"))?;
        match header {
            Header::Response { id, outcome } => {
                if let Some((_, waiter)) = shared.pending.remove(&id) {
                    let _ = waiter.send(outcome.map(|enc| (enc, body))); // caller gave up
                }
            }
            Header::Request {
                id,
                method,
                timeout_ms,
                encoding,
            } => {
                serve::dispatch(shared, ctx, Some(id), &method, encoding, timeout_ms, body);
            }
            Header::Cast { method, encoding } => {
                serve::dispatch(shared, ctx, None, &method, encoding, None, body);
            }
            // Handlers are not interrupted yet: the reply of a cancelled call is discarded by
            // the caller, which has already removed its pending entry.
            Header::Cancel { .. } => {}
            Header::Goodbye { reason } => return Ok(format!("peer said goodbye: {reason}")),
        }
    }
}

fn read_error(e: std::io::Error, max_frame: usize) -> String {
    let oversized = e
        .get_ref()
        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>());
    if oversized {
        format!("peer sent a frame larger than the {max_frame}-byte limit")
    } else {
        format!("read failed: {e}")
    }
}

/// Writes queued frames. While other calls are in flight it yields once before flushing, so
/// frames queued by tasks that are about to run go out in the same write syscall.
async fn write_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    half: OwnedWriteHalf,
) {
    let mut out = BufWriter::with_capacity(64 << 10, half);
    let work = async {
        loop {
            let first = tokio::select! {
                biased;
                frame = rx.recv() => match frame { Some(f) => f, None => break },
                _ = shared.token.cancelled() => break,
            };
            out.write_all(&first).await?;
            let mut yielded = false;
            loop {
                while let Ok(frame) = rx.try_recv() {
                    out.write_all(&frame).await?;
                }
                if yielded || shared.in_flight.load(Ordering::Relaxed) <= 1 {
                    break;
                }
                yielded = true;
                tokio::task::yield_now().await;
            }
            out.flush().await?;
        }
        // Closing: what was queued before the close (a Goodbye, late replies) still goes out.
        while let Ok(frame) = rx.try_recv() {
            out.write_all(&frame).await?;
        }
        out.flush().await?;
        out.shutdown().await
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
    }
    shared.closed.store(true, Ordering::SeqCst);
    shared.token.cancel();
}
