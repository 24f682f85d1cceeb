//! Streams on one link. A stream is a request (`StreamOpen`) whose callee sends items
//! (`StreamItem`) before its one `Response`, which ends it; the caller may upload items of
//! its own and ends its upload with `StreamEnd`. Each direction has its own credit
//! ([`super::flow`]), so a stream whose consumer stalls stops only itself.
//!
//! The caller holds a [`Downstream`] (the callee's items and the final reply) and an
//! [`Upstream`] (its upload); the callee's handler holds a [`StreamPort`]. Everything else
//! a request has — the pending entry and its deadline, `Cancel`, the responder's bounds —
//! a stream has too. Dropping the `Downstream` cancels the stream; dropping the `Upstream`
//! ends the upload; a link that closes ends every stream on it with `disconnected`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::{Connection, Reply, Shared};
use super::flow::{Credit, Ending, Inbox, Overrun};
use crate::wire::{self, Encoding, FrameError, Header};
use crate::RpcError;

/// The two ends' flow state of one stream, as seen from this side.
pub(crate) struct Ends {
    /// Items from the other side.
    pub(crate) inbox: Inbox,
    /// Credit for sending items to the other side.
    pub(crate) credit: Credit,
}

type Table = Mutex<HashMap<u64, Arc<Ends>>>;

/// The streams of one link: those this side opened, and those the peer opened, by the
/// opener's request id.
#[derive(Default)]
pub(crate) struct Streams {
    opened: Table,
    served: Table,
    /// How many this side opened and has not finished: responses look the table up only
    /// while some are (a unary reply then costs no lock).
    opened_count: AtomicUsize,
}

/// Items a caller may upload ahead of the callee's handler.
pub(crate) const UPLOAD_WINDOW: u32 = 64;

fn lock(table: &Table) -> MutexGuard<'_, HashMap<u64, Arc<Ends>>> {
    // Single operations on a map: consistent after a panic elsewhere.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

impl Streams {
    fn table(&self, from_caller: bool) -> &Table {
        // A frame from the caller concerns a stream the peer opened, and the reverse.
        if from_caller {
            &self.served
        } else {
            &self.opened
        }
    }

    fn get(&self, id: u64, from_caller: bool) -> Option<Arc<Ends>> {
        lock(self.table(from_caller)).get(&id).cloned()
    }

    /// An item from the peer; items for a stream that is over are dropped.
    pub(super) fn item(&self, id: u64, from_caller: bool, item: Bytes) -> Result<(), Overrun> {
        match self.get(id, from_caller) {
            Some(ends) => ends.inbox.push(item),
            None => Ok(()),
        }
    }

    pub(super) fn credit(&self, id: u64, from_caller: bool, n: u32) {
        if let Some(ends) = self.get(id, from_caller) {
            ends.credit.grant(n);
        }
    }

    /// The caller's upload is complete.
    pub(super) fn end_upload(&self, id: u64) {
        if let Some(ends) = self.get(id, true) {
            ends.inbox.end(Ending::Complete);
        }
    }

    /// The callee answered (or the caller cancelled): nothing more flows either way.
    pub(super) fn finish(&self, id: u64, from_caller: bool, why: Ending) {
        if !from_caller && self.opened_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let removed = lock(self.table(from_caller)).remove(&id);
        if let Some(ends) = removed {
            if !from_caller {
                self.opened_count.fetch_sub(1, Ordering::AcqRel);
            }
            ends.inbox.end(why);
            ends.credit.close();
        }
    }

    fn open(&self, id: u64, ends: Arc<Ends>) {
        // Counted first: a response racing with this sees the count and looks.
        self.opened_count.fetch_add(1, Ordering::AcqRel);
        lock(&self.opened).insert(id, ends);
    }

    /// The link closed: every stream on it ends.
    pub(super) fn clear(&self, peer: &str) {
        for table in [&self.opened, &self.served] {
            let all = std::mem::take(&mut *lock(table));
            if std::ptr::eq(table, &self.opened) {
                self.opened_count.fetch_sub(all.len(), Ordering::AcqRel);
            }
            for ends in all.into_values() {
                ends.inbox
                    .end(Ending::Broken(format!("the link to {peer} closed")));
                ends.credit.close();
            }
        }
    }

    /// A stream the peer opens: registered before its handler runs.
    pub(super) fn serve(&self, id: u64, credit: u32, window: u32) -> Arc<Ends> {
        let ends = Arc::new(Ends {
            inbox: Inbox::new(window),
            credit: Credit::new(credit),
        });
        lock(&self.served).insert(id, ends.clone());
        ends
    }
}

/// What one item send can end with, besides success.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The stream is over (answered, cancelled, link closed): stop producing.
    Closed,
    /// This item could not be sent; the stream goes on.
    Item(RpcError),
}

/// Encodes one item frame into the outbox.
fn push_item<T: Serialize + ?Sized>(
    shared: &Shared,
    header: &Header<'_>,
    encoding: Encoding,
    item: &T,
    method: &str,
) -> Result<(), SendError> {
    let max = shared.max_frame;
    let pushed = shared.outbox.push(false, |buf| {
        wire::append_frame(buf, header, encoding, item, max)
    });
    match pushed {
        Ok(true) => Ok(()),
        Ok(false) => Err(SendError::Closed),
        Err(FrameError::Encode(e)) => Err(SendError::Item(RpcError::BadArguments {
            method: method.to_owned(),
            detail: format!("an item of `{method}` cannot be encoded: {e}"),
        })),
        Err(FrameError::TooLarge(size)) => Err(SendError::Item(RpcError::FrameTooLarge {
            message: format!("an item of {size} bytes exceeds the limit of {max} bytes"),
        })),
    }
}

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
            credit: open.window.max(1),
        };
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
    fn disconnected(&self) -> RpcError {
        RpcError::Disconnected {
            peer: self.shared.peer.name.clone(),
            method: self.method.clone(),
        }
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

/// The callee's side of one stream: sends items under the caller's credit, reads the
/// caller's upload. Dropping it forgets the stream (its handler is done).
pub(crate) struct StreamPort {
    shared: Arc<Shared>,
    id: u64,
    ends: Arc<Ends>,
    encoding: Encoding,
    /// Items the caller may upload ahead of the handler.
    window: u32,
    upload_open: AtomicBool,
}

impl StreamPort {
    pub(super) fn new(
        shared: Arc<Shared>,
        id: u64,
        ends: Arc<Ends>,
        encoding: Encoding,
        window: u32,
    ) -> Self {
        StreamPort {
            shared,
            id,
            ends,
            encoding,
            window,
            upload_open: AtomicBool::new(false),
        }
    }

    /// The items' encoding (the request's).
    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Waits for the caller's credit for one item and uses it; `Closed`: the caller went
    /// away. Then [`StreamPort::push`] the item.
    pub(crate) async fn credit(&self) -> Result<(), SendError> {
        self.ends.credit.take().await.map_err(|_| SendError::Closed)
    }

    /// Queues one item the caller has credit for (see [`StreamPort::credit`]).
    pub(crate) fn push<T: Serialize + ?Sized>(
        &self,
        item: &T,
        method: &str,
    ) -> Result<(), SendError> {
        let header = Header::StreamItem {
            id: self.id,
            from_caller: false,
        };
        push_item(&self.shared, &header, self.encoding, item, method)
    }

    /// Lets the caller start uploading (grants its first window); once.
    pub(crate) fn accept_upload(&self) {
        if !self.upload_open.swap(true, Ordering::SeqCst) {
            self.grant(self.window);
        }
    }

    fn grant(&self, n: u32) {
        if n > 0 {
            let header = Header::StreamCredit {
                id: self.id,
                from_caller: false,
                n,
            };
            self.shared.send_control(&header);
        }
    }

    /// The caller's next uploaded item, or how its upload ended.
    pub(crate) fn poll_upload(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, Ending>> {
        self.accept_upload();
        match self.ends.inbox.poll_next(cx) {
            Poll::Ready(Ok((item, grant))) => {
                self.grant(grant);
                Poll::Ready(Ok(item))
            }
            Poll::Ready(Err(ending)) => Poll::Ready(Err(ending)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for StreamPort {
    fn drop(&mut self) {
        self.shared
            .streams
            .finish(self.id, true, Ending::Broken("the handler ended".into()));
    }
}
