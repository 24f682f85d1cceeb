//! The road to self: a request this node dispatches to its own method table with no link —
//! a virtual actor it owns, its HTTP gateway's calls — answered through a channel. No frame
//! is encoded and no socket crossed: the arguments are encoded once (the handler decodes
//! them as it would a frame's body) and the answer comes back as its body bytes.
//!
//! An in-process caller that stands for outside clients (the gateway) calls through a
//! [`Lane`]: its requests count against the clients' share of the node and the per-link
//! bound, as a client link's would, and handlers see the lane as their caller. Dropping the
//! waiting call (the HTTP client went away) aborts an async handler still running for it, as
//! a `Cancel` frame would; so does its deadline passing. (A sync handler has answered by
//! then; a queued actor call whose caller is gone is dropped when its turn comes.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::AbortHandle;
use serde::Serialize;
use tokio::sync::oneshot;

use super::connection::Reply;
use super::{Limits, LinkCtx, PeerInfo, Request, Responder};
use crate::error::RpcError;
use crate::wire::codec;
use crate::wire::{Encoding, ErrorKind, RemoteError, Trace};

/// The largest answer to a local call (no peer limits it; this bounds a runaway one).
pub(super) const MAX_ANSWER: usize = 64 << 20;

/// One in-process caller that stands for outside clients (the gateway): its requests in
/// flight, bounded like one client link's.
pub(crate) struct Lane {
    /// Who handlers see as the caller.
    pub(crate) peer: PeerInfo,
    inbound: AtomicUsize,
}

impl Lane {
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // the gateway's lane
    pub(crate) fn new(peer: PeerInfo) -> Arc<Lane> {
        Arc::new(Lane {
            peer,
            inbound: AtomicUsize::new(0),
        })
    }
}

/// The responder's end of a local request: where the answer goes, and what it counts in.
pub(super) struct Local {
    pub(super) limits: Arc<Limits>,
    pub(super) lane: Option<Arc<Lane>>,
    /// Whether this request counts in the node's bound (a held answer's does not: the
    /// request it holds for counts already).
    counts: bool,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
    /// The running handler's abort handle, for the waiting caller to abort.
    pub(super) running: Arc<Mutex<Option<AbortHandle>>>,
}

impl Local {
    /// Counts the request in: against the node, and for a lane against the clients' share
    /// and the lane's own bound.
    fn new(limits: Arc<Limits>, lane: Option<Arc<Lane>>, reply: oneshot::Sender<Reply>) -> Self {
        limits.node_inbound.fetch_add(1, Ordering::Relaxed);
        if let Some(lane) = &lane {
            limits.client_inbound.fetch_add(1, Ordering::Relaxed);
            lane.inbound.fetch_add(1, Ordering::Relaxed);
        }
        Local {
            limits,
            lane,
            counts: true,
            reply: Mutex::new(Some(reply)),
            running: Arc::default(),
        }
    }

    /// The responder's end of a held answer: counted by the request it holds for.
    fn held(limits: Arc<Limits>, reply: oneshot::Sender<Reply>) -> Self {
        Local {
            limits,
            lane: None,
            counts: false,
            reply: Mutex::new(Some(reply)),
            running: Arc::default(),
        }
    }

    /// Counts the request out (answered, or never to be).
    pub(super) fn release(&self) {
        if !self.counts {
            return;
        }
        self.limits.node_inbound.fetch_sub(1, Ordering::Relaxed);
        if let Some(lane) = &self.lane {
            self.limits.client_inbound.fetch_sub(1, Ordering::Relaxed);
            lane.inbound.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The lane's requests in flight, for the per-link bound.
    pub(super) fn lane_inbound(&self) -> Option<usize> {
        (self.lane.as_ref()).map(|lane| lane.inbound.load(Ordering::Relaxed))
    }

    /// The caller stopped waiting.
    pub(super) fn is_gone(&self) -> bool {
        let reply = self.reply.lock().unwrap_or_else(|e| e.into_inner());
        reply.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    /// Hands the answer to the waiting caller; false if it stopped waiting.
    pub(super) fn send(&self, reply: Reply) -> bool {
        let waiting = self.reply.lock().unwrap_or_else(|e| e.into_inner()).take();
        waiting.is_some_and(|tx| tx.send(reply).is_ok())
    }

    /// Sends `value` encoded as `encoding`: the body alone, no frame around it.
    pub(super) fn send_value<R: Serialize + ?Sized>(
        &self,
        encoding: Encoding,
        value: &R,
    ) -> Result<bool, RemoteError> {
        let mut body = BytesMut::new();
        codec::encode_body(encoding, value, &mut body).map_err(|e| {
            RemoteError::new(
                ErrorKind::Protocol,
                format!("cannot encode the result: {e}"),
            )
        })?;
        if body.len() > MAX_ANSWER {
            return Err(RemoteError::new(
                ErrorKind::FrameTooLarge,
                format!(
                    "the result takes {} bytes, over the {MAX_ANSWER}-byte limit of a local answer",
                    body.len()
                ),
            ));
        }
        Ok(self.send(Ok((encoding, body.freeze()))))
    }
}

/// Holds `responder`'s answer: swaps in a responder whose answer comes back through the
/// returned channel, and hands back the original, to answer with later (`reply_raw`) — a
/// durable actor answers only once its state is written. Only the original counts in the
/// node's in-flight bound.
pub(crate) fn hold(responder: &mut Responder) -> (Responder, oneshot::Receiver<Reply>) {
    let (tx, rx) = oneshot::channel();
    let encoding = responder.encoding();
    let local = Local::held(responder.limits(), tx);
    let original = std::mem::replace(responder, Responder::local(local, encoding));
    (original, rx)
}

/// A call on the road to self.
pub(crate) struct LocalCall<'a> {
    pub(crate) method: &'a str,
    pub(crate) encoding: Encoding,
    /// The arguments, encoded as `encoding` says.
    pub(crate) body: Bytes,
    pub(crate) timeout: Duration,
    /// Whether the caller is a node (node-only methods run) rather than a client.
    pub(crate) from_node: bool,
    pub(crate) trace: Option<Trace>,
    /// The client lane the call counts in, if it stands for outside clients.
    pub(crate) lane: Option<Arc<Lane>>,
}

/// Dispatches `call` to this node's own method table and waits for the answer: its body
/// and encoding, or the error. Bounded by `call.timeout`; the handler is aborted when the
/// wait ends without an answer (deadline, or this future dropped).
pub(crate) async fn call(
    ctx: &LinkCtx,
    call: LocalCall<'_>,
) -> Result<(Encoding, Bytes), RpcError> {
    let LocalCall {
        method,
        encoding,
        body,
        timeout,
        from_node,
        trace,
        lane,
    } = call;
    let (tx, rx) = oneshot::channel();
    let local = Local::new(ctx.limits.clone(), lane, tx);
    let abort_on_drop = AbortOnDrop(local.running.clone());
    ctx.dispatch.dispatch(Request {
        method,
        encoding,
        timeout_ms: Some(timeout.as_millis().min(u128::from(u64::MAX)) as u64),
        retry: false,
        from_node,
        signature: None,
        trace,
        body,
        responder: Responder::local(local, encoding),
        stream: None,
    });
    let answer = tokio::time::timeout(timeout, rx).await;
    drop(abort_on_drop);
    match answer {
        Err(_) => Err(RpcError::Timeout {
            method: method.to_owned(),
            after: timeout,
        }),
        // A responder always answers (dropped unanswered, it says `shutdown`); this is for
        // completeness.
        Ok(Err(_)) => Err(RpcError::Shutdown(format!("`{method}` was stopped"))),
        Ok(Ok(Err(remote))) => Err(RpcError::from_remote(method, remote, timeout)),
        Ok(Ok(Ok(reply))) => Ok(reply),
    }
}

/// Aborts the handler of a local call nobody waits for any more (after an answer, the
/// handler has ended and the handle is gone).
struct AbortOnDrop(Arc<Mutex<Option<AbortHandle>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let running = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(abort) = running {
            abort.abort();
        }
    }
}
