//! Streams on one link. A stream is a request (`StreamOpen`) whose callee sends items
//! (`StreamItem`) before its one `Response`, which ends it; the caller may upload items of
//! its own and ends its upload with `StreamEnd`. Each direction has its own credit
//! ([`super::flow`]), so a stream whose consumer stalls stops only itself.
//!
//! The caller holds a [`Downstream`] (the callee's items and the final reply) and an
//! [`Upstream`] (its upload), both in [`caller`]; the callee's handler holds a [`StreamPort`]. Everything else
//! a request has — the pending entry and its deadline, `Cancel`, the responder's bounds —
//! a stream has too. Dropping the `Downstream` cancels the stream; dropping the `Upstream`
//! ends the upload; a link that closes ends every stream on it with `disconnected`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;

mod caller;

pub(crate) use caller::{Downstream, Next, Open, Upstream};

use super::Shared;
use crate::error::RpcError;
use crate::link::flow::{Credit, Ending, Inbox, Overrun};
use crate::wire::{self, Encoding, FrameError, Header};

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

/// The callee's side of one stream: sends items under the caller's credit, reads the
/// caller's upload. Dropping it forgets the stream (its handler is done).
pub(crate) struct StreamPort {
    shared: Arc<Shared>,
    id: u64,
    ends: Arc<Ends>,
    encoding: Encoding,
}

impl StreamPort {
    /// The callee's side of stream `id`, whose upload window is its inbox's.
    pub(super) fn new(shared: Arc<Shared>, id: u64, ends: Arc<Ends>, encoding: Encoding) -> Self {
        StreamPort {
            shared,
            id,
            ends,
            encoding,
        }
    }

    /// The items' encoding (the request's).
    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Waits for the caller's credit for one item and uses it; `Closed`: the caller went
    /// away. Then [`StreamPort::push`] the item.
    pub(crate) async fn credit(&self) -> Result<(), SendError> {
        self.ends
            .credit
            .take()
            .await
            .map_err(|_| SendError::Closed)?;
        self.shared.outbox.room_for_items().await;
        Ok(())
    }

    /// Resolves once the caller is gone (it cancelled, or the link closed): a producer
    /// waiting for anything else should stop then.
    pub(crate) async fn gone(&self) {
        self.ends.credit.closed().await
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

    /// Lets the caller start uploading (grants its first window); once. Until then an
    /// uploaded item is a protocol violation: a method that reads no upload buffers none.
    pub(crate) fn accept_upload(&self) {
        self.grant(self.ends.inbox.open());
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
