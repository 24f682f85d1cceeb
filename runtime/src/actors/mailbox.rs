//! An activation's mailbox: a bounded queue with one reader, made small because a node may
//! hold a million idle activations (an empty mailbox is one allocation of about a hundred
//! bytes; tokio's channel costs about a kilobyte each). Closing it hands back what is
//! queued. It also records when its activation last ran a call, for the idle sweeper.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Why a message was not queued; it is handed back.
pub(crate) enum Refused<T> {
    Full(T),
    Closed(T),
}

pub(crate) struct Mailbox<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    capacity: usize,
    /// Milliseconds (on the type's clock) when the activation last ran a call.
    touched: AtomicU64,
}

struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
}

impl<T> Mailbox<T> {
    pub(crate) fn new(capacity: usize, now_ms: u64) -> Self {
        Mailbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
            touched: AtomicU64::new(now_ms),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg` unless the mailbox is full or closed.
    pub(crate) fn try_send(&self, msg: T) -> Result<(), Refused<T>> {
        self.push(msg, false)
    }

    /// Queues `msg` even when full (control messages); refused only when closed.
    pub(crate) fn send_anyway(&self, msg: T) -> Result<(), Refused<T>> {
        self.push(msg, true)
    }

    fn push(&self, msg: T, anyway: bool) -> Result<(), Refused<T>> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed(msg));
        }
        if !anyway && state.queue.len() >= self.capacity {
            return Err(Refused::Full(msg));
        }
        state.queue.push_back(msg);
        drop(state);
        // One reader: a permit is kept if it is not waiting yet, so no wake-up is lost.
        self.ready.notify_one();
        Ok(())
    }

    /// The next message; `None` once closed and empty. One reader only.
    pub(crate) async fn recv(&self) -> Option<T> {
        loop {
            {
                let mut state = self.lock();
                if let Some(msg) = state.queue.pop_front() {
                    return Some(msg);
                }
                if state.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Refuses every later message and hands back those queued.
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.queue)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.touched.store(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn touched(&self) -> u64 {
        self.touched.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closed_with_what_is_queued() {
        let mailbox = Mailbox::new(2, 0);
        assert!(mailbox.try_send(1).is_ok());
        assert!(mailbox.try_send(2).is_ok());
        assert!(matches!(mailbox.try_send(3), Err(Refused::Full(3))));
        assert!(
            mailbox.send_anyway(4).is_ok(),
            "control messages pass a full box"
        );
        assert_eq!(mailbox.recv().await, Some(1));
        let rest: Vec<i32> = mailbox.close().into_iter().collect();
        assert_eq!(rest, [2, 4]);
        assert!(matches!(mailbox.try_send(5), Err(Refused::Closed(5))));
        assert_eq!(mailbox.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken() {
        let mailbox = std::sync::Arc::new(Mailbox::new(4, 0));
        let reader = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.recv().await }
        });
        tokio::task::yield_now().await;
        assert!(mailbox.try_send(7).is_ok());
        assert_eq!(reader.await.unwrap(), Some(7));
    }
}
