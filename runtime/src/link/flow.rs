//! Flow control of one stream at one end: the items that arrived and wait for the consumer
//! ([`Inbox`], at most the credit this end granted), and the credit the other end granted
//! for sending ([`Credit`]). The reader fills the inbox and adds credit and never waits on
//! either; a consumer that stops taking items stops granting credit, so only its own
//! stream stops: the link, and every other call on it, keeps flowing.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Semaphore;

/// Credit past this is not added: no window needs more, and it keeps the sum in range.
const MAX_CREDIT: usize = 1 << 20;

/// How the items of an inbox ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The sender said it sent everything.
    Complete,
    /// The link went away first; the reason names the peer.
    Broken(String),
}

/// The items that arrived for one direction of a stream; see the module doc.
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    /// Items the sender may run ahead of the consumer.
    window: u32,
    /// Credit granted when the consumer has taken this many items since the last grant.
    refill: u32,
}

struct InboxState {
    items: VecDeque<Bytes>,
    /// Items the sender may still send before it gets more credit.
    allowed: u32,
    /// Items taken since the last grant.
    taken: u32,
    /// The first window was granted.
    opened: bool,
    ending: Option<Ending>,
    waker: Option<Waker>,
}

/// The sender sent an item it had no credit for.
#[derive(Debug)]
pub(crate) struct Overrun;

impl Inbox {
    /// An inbox that will let the sender run `window` items ahead (at least one), once
    /// [`Inbox::open`] grants them: until then any item is an overrun.
    pub(crate) fn new(window: u32) -> Self {
        let window = window.max(1);
        Inbox {
            state: Mutex::new(InboxState {
                items: VecDeque::new(),
                allowed: 0,
                taken: 0,
                opened: false,
                ending: None,
                waker: None,
            }),
            window,
            refill: window.div_ceil(2),
        }
    }

    /// Grants the sender the first window; returns it, the credit to send (once: later
    /// calls grant nothing and return 0).
    pub(crate) fn open(&self) -> u32 {
        let mut state = self.lock();
        if state.opened {
            return 0;
        }
        state.opened = true;
        state.allowed += self.window;
        self.window
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // Single operations on plain data: consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An item from the reader. Items after the end are dropped (the stream is over).
    pub(crate) fn push(&self, item: Bytes) -> Result<(), Overrun> {
        let mut state = self.lock();
        if state.ending.is_some() {
            return Ok(());
        }
        if state.allowed == 0 {
            return Err(Overrun);
        }
        state.allowed -= 1;
        state.items.push_back(item);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// No more items will come; the first ending counts.
    pub(crate) fn end(&self, ending: Ending) {
        let mut state = self.lock();
        if state.ending.is_none() {
            state.ending = Some(ending);
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The next item, or how the items ended once all are taken. `Ready(Ok((item, grant)))`
    /// carries the credit to send back now (0: none yet).
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<(Bytes, u32), Ending>> {
        let mut state = self.lock();
        if let Some(item) = state.items.pop_front() {
            state.taken += 1;
            let grant = if state.taken >= self.refill && state.ending.is_none() {
                let n = std::mem::take(&mut state.taken);
                state.allowed += n;
                n
            } else {
                0
            };
            return Poll::Ready(Ok((item, grant)));
        }
        if let Some(ending) = &state.ending {
            return Poll::Ready(Err(ending.clone()));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The next item if one is here, without waiting (same grant rule as `poll_next`).
    pub(crate) fn try_next(&self) -> Option<(Bytes, u32)> {
        let waker = futures_util::task::noop_waker();
        match self.poll_next(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(next)) => Some(next),
            _ => None,
        }
    }

    /// Items waiting for the consumer.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

/// The credit the other end granted for sending on one stream.
pub(crate) struct Credit {
    permits: Semaphore,
    /// Cancelled when the stream ends (see [`Credit::close`]).
    closed: tokio_util::sync::CancellationToken,
}

/// The stream ended: nothing more may be sent.
#[derive(Debug)]
pub(crate) struct StreamClosed;

impl Credit {
    pub(crate) fn new(initial: u32) -> Self {
        Credit {
            permits: Semaphore::new((initial as usize).min(MAX_CREDIT)),
            closed: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// More credit from the other end (capped, so a peer cannot overflow it).
    pub(crate) fn grant(&self, n: u32) {
        let room = MAX_CREDIT.saturating_sub(self.permits.available_permits());
        self.permits.add_permits((n as usize).min(room));
    }

    /// Waits for credit for one item and uses it.
    pub(crate) async fn take(&self) -> Result<(), StreamClosed> {
        let permit = self.permits.acquire().await.map_err(|_| StreamClosed)?;
        permit.forget();
        Ok(())
    }

    /// Waits until there is credit, leaving it there.
    pub(crate) async fn ready(&self) -> Result<(), StreamClosed> {
        self.permits
            .acquire()
            .await
            .map(drop)
            .map_err(|_| StreamClosed)
    }

    /// Nothing more may be sent; waiting senders wake with [`StreamClosed`].
    pub(crate) fn close(&self) {
        self.permits.close();
        self.closed.cancel();
    }

    /// Resolves once the stream has ended (cancelled by the caller, answered, link closed).
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(inbox: &Inbox) -> Poll<Result<(Bytes, u32), Ending>> {
        let waker = futures_util::task::noop_waker();
        inbox.poll_next(&mut Context::from_waker(&waker))
    }

    #[test]
    fn the_sender_runs_at_most_a_window_ahead_and_credit_comes_back_as_items_are_taken() {
        let inbox = Inbox::new(4);
        assert!(
            inbox.push(Bytes::from_static(b"early")).is_err(),
            "nothing granted yet"
        );
        assert_eq!((inbox.open(), inbox.open()), (4, 0), "the window, once");
        for i in 0..4u8 {
            inbox.push(Bytes::from(vec![i])).expect("within the window");
        }
        assert!(
            inbox.push(Bytes::from_static(b"x")).is_err(),
            "a fifth overruns"
        );
        assert_eq!(inbox.len(), 4);
        // Half the window taken: that much credit goes back.
        assert!(matches!(next(&inbox), Poll::Ready(Ok((_, 0)))));
        assert!(matches!(next(&inbox), Poll::Ready(Ok((_, 2)))));
        inbox.push(Bytes::from_static(b"4")).expect("granted");
        inbox.push(Bytes::from_static(b"5")).expect("granted");
        assert!(inbox.push(Bytes::from_static(b"6")).is_err());
        inbox.end(Ending::Complete);
        for expected in [2u8, 3, b'4', b'5'] {
            match next(&inbox) {
                Poll::Ready(Ok((item, _))) => assert_eq!(item[0], expected),
                other => panic!("expected an item, got {other:?}"),
            }
        }
        assert_eq!(next(&inbox), Poll::Ready(Err(Ending::Complete)));
    }

    #[test]
    fn the_first_ending_counts_and_later_items_are_dropped() {
        let inbox = Inbox::new(2);
        inbox.open();
        assert!(next(&inbox).is_pending());
        inbox.end(Ending::Broken("gone".into()));
        inbox.end(Ending::Complete);
        inbox
            .push(Bytes::from_static(b"late"))
            .expect("dropped, not an overrun");
        assert_eq!(
            next(&inbox),
            Poll::Ready(Err(Ending::Broken("gone".into())))
        );
    }

    #[tokio::test]
    async fn credit_is_used_one_item_at_a_time_and_closing_wakes_the_sender() {
        let credit = std::sync::Arc::new(Credit::new(1));
        credit.take().await.expect("one granted");
        let waiting = tokio::spawn({
            let credit = credit.clone();
            async move { credit.take().await }
        });
        credit.grant(u32::MAX); // capped, not a panic
        waiting.await.expect("task").expect("granted");
        credit.close();
        assert!(credit.take().await.is_err());
    }
}
