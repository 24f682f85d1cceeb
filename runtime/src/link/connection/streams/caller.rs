//! The caller's side of a stream: [`Connection::open_stream`] registers it and sends
//! `StreamOpen`; the [`Downstream`] reads the callee's items and then its reply (which
//! ends the stream), the [`Upstream`] sends the caller's items under the callee's credit.
//! Dropping the `Downstream` cancels the stream (the callee's task is aborted); dropping
//! the `Upstream` ends the upload cleanly.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::super::{Connection, Reply, Shared};
use super::{push_item, Ends, SendError};
use crate::error::RpcError;
use crate::link::flow::{Credit, Ending, Inbox};
use crate::wire::{Encoding, Header};

/// What the caller says when it opens a stream.
pub(crate) struct Open<'a> {
    pub(crate) method: &'a str,
    pub(crate) encoding: Encoding,
    /// For the whole stream; `None`: no deadline.
    pub(crate) timeout: Option<Duration>,
    pub(crate) signature: Option<u64>,
    /// Items the callee may send ahead of the consumer.
    pub(crate) window: u32,
    /// Whether the caller uploads items; if not, its upload ends at once.
    pub(crate) upload: bool,
}

/// The caller's state of one stream, shared by its two halves.
struct Opened {
    shared: Arc<Shared>,
    id: u64,
    ends: Arc<Ends>,
    encoding: Encoding,
    method: String,
    upload_ended: AtomicBool,
}

impl Opened {
    fn end_upload(&self) {
        if !self.upload_ended.swap(true, Ordering::SeqCst) && !self.ends.credit.is_closed() {
            self.shared.send_control(&Header::StreamEnd { id: self.id });
        }
    }
}

impl Connection {
    /// Opens a stream: registers it, queues `StreamOpen` (and `StreamEnd` when nothing is
    /// uploaded) and returns its halves at once; every failure, from here on, arrives as
    /// the `Downstream`'s end.
    pub(crate) fn open_stream<A: Serialize + ?Sized>(
        &self,
        open: Open<'_>,
        args: &A,
    ) -> Result<(Downstream, Upstream), RpcError> {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = open
            .timeout
            .map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64);
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let far = now + Duration::from_secs(100 * 365 * 86_400);
        let deadline = open.timeout.and_then(|t| now.checked_add(t)).unwrap_or(far);
        let ends = Arc::new(Ends {
            inbox: Inbox::new(open.window),
            credit: Credit::new(0),
        });
        // The open's `credit` is this first window.
        let credit = ends.inbox.open();
        shared.streams.open(id, ends.clone());
        shared.pending.insert(id, tx, deadline);
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let opened = Arc::new(Opened {
            shared: shared.clone(),
            id,
            ends,
            encoding: open.encoding,
            method: open.method.to_owned(),
            upload_ended: AtomicBool::new(false),
        });
        let down = Downstream {
            opened: opened.clone(),
            reply: rx,
            outcome: None,
            done: false,
            timeout: open.timeout.unwrap_or(Duration::MAX),
        };
        let header = Header::StreamOpen {
            id,
            method: open.method.into(),
            timeout_ms,
            encoding: open.encoding,
            signature: open.signature,
            credit,
            trace: crate::link::trace::current_trace(),
        };
        // Closed meanwhile: the link's table was cleared before our entry went in.
        if self.is_closed() {
            shared.pending.remove(id);
            return Err(down.opened.disconnected());
        }
        if let Err(e) = push_item(shared, &header, open.encoding, args, open.method) {
            // Nothing was sent: `down` forgets the stream without telling the callee.
            shared.pending.remove(id);
            return Err(match e {
                SendError::Item(e) => e,
                SendError::Closed => down.opened.disconnected(),
            });
        }
        let up = Upstream { opened };
        if !open.upload {
            up.opened.end_upload();
        }
        Ok((down, up))
    }
}

/// What the caller reads next from a stream.
#[derive(Debug)]
pub(crate) enum Next {
    /// One item, in the stream's encoding.
    Item(Bytes),
    /// The stream is over: the callee's reply (its result, in its encoding), or why not.
    End(Result<(Encoding, Bytes), RpcError>),
}

/// The caller's reading half: the callee's items, then its reply.
pub(crate) struct Downstream {
    opened: Arc<Opened>,
    reply: oneshot::Receiver<Reply>,
    /// The reply, once it came, while items that arrived before it are still being read.
    outcome: Option<Result<(Encoding, Bytes), RpcError>>,
    done: bool,
    timeout: Duration,
}

impl Downstream {
    /// The items' encoding.
    pub(crate) fn encoding(&self) -> Encoding {
        self.opened.encoding
    }

    /// The method streamed.
    pub(crate) fn method(&self) -> &str {
        &self.opened.method
    }

    fn grant(&self, n: u32) {
        if n > 0 {
            let header = Header::StreamCredit {
                id: self.opened.id,
                from_caller: true,
                n,
            };
            self.opened.shared.send_control(&header);
        }
    }

    /// The next item or the end; after the end, `Pending` forever (wrappers fuse).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if self.done {
            return Poll::Pending;
        }
        let inbox = &self.opened.ends.inbox;
        if self.outcome.is_none() {
            match inbox.poll_next(cx) {
                Poll::Ready(Ok((item, grant))) => {
                    self.grant(grant);
                    return Poll::Ready(Next::Item(item));
                }
                // Ended: the reply (or the link's end) is here or about to be.
                Poll::Ready(Err(_)) | Poll::Pending => {}
            }
            let reply = match Pin::new(&mut self.reply).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(reply) => reply,
            };
            let method = &self.opened.method;
            self.outcome = Some(match reply {
                Err(_) => Err(self.opened.disconnected()),
                Ok(Err(remote)) => Err(RpcError::from_remote(method, remote, self.timeout)),
                Ok(Ok(reply)) => Ok(reply),
            });
            // Nothing more will come: the reader queued every item before the reply.
            self.opened
                .shared
                .streams
                .finish(self.opened.id, false, Ending::Complete);
        }
        // Items that came before the reply are still the stream's.
        if let Some((item, _)) = inbox.try_next() {
            return Poll::Ready(Next::Item(item));
        }
        self.done = true;
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Err(RpcError::Protocol(
                "the stream ended without a reply".into(),
            ))
        });
        Poll::Ready(Next::End(outcome))
    }
}

impl Opened {
    /// The stream's error when the link closed before its reply (see `Shared::lost`).
    fn disconnected(&self) -> RpcError {
        self.shared.lost(&self.method, self.id)
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        let Opened { shared, id, .. } = &*self.opened;
        shared
            .streams
            .finish(*id, false, Ending::Broken("cancelled by the caller".into()));
        // Still waiting: the caller gave up. Tell the callee to stop producing.
        if shared.pending.remove(*id) {
            shared.send_cancel(*id);
        }
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The caller's uploading half; dropping it ends the upload (as [`Upstream::finish`]).
pub(crate) struct Upstream {
    opened: Arc<Opened>,
}

impl Upstream {
    /// Sends one item once the callee has credit for it.
    pub(crate) async fn send<T: Serialize + ?Sized>(&self, item: &T) -> Result<(), SendError> {
        let opened = &self.opened;
        if opened.upload_ended.load(Ordering::SeqCst) {
            return Err(SendError::Closed);
        }
        opened
            .ends
            .credit
            .take()
            .await
            .map_err(|_| SendError::Closed)?;
        opened.shared.outbox.room_for_items().await;
        let header = Header::StreamItem {
            id: opened.id,
            from_caller: true,
        };
        push_item(
            &opened.shared,
            &header,
            opened.encoding,
            item,
            &opened.method,
        )
    }

    /// Waits until the callee has credit for an item, without using it.
    pub(crate) async fn ready(&self) -> Result<(), SendError> {
        self.opened
            .ends
            .credit
            .ready()
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Ends the upload: the callee's reading half sees a clean end.
    pub(crate) fn finish(&self) {
        self.opened.end_upload();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.opened.end_upload();
    }
}
