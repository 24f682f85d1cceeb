//! How a link ends: the goodbye this node sends (closing for good, or for being idle), the
//! promise a version-4 goodbye carries — which of the peer's requests were never
//! dispatched, so they did not run — and what this node does with the peer's promise: its
//! calls above the promised id fail as not run (`peer_unavailable`, which callers may send
//! elsewhere), the rest as `disconnected` (they may have run).

use std::sync::atomic::Ordering;

use super::{Connection, Shared};
use crate::error::RpcError;
use crate::wire::{self, Header};

/// Set in `Shared::dispatched` once this node has said goodbye.
pub(super) const NO_MORE: u64 = 1 << 63;

impl Shared {
    /// Whether the reader may dispatch the peer's request `id`, recording it: false once
    /// this node has said goodbye (the peer learns it did not run).
    pub(super) fn may_dispatch(&self, id: u64) -> bool {
        let before = self.dispatched.fetch_max(id & !NO_MORE, Ordering::AcqRel);
        before & NO_MORE == 0
    }

    /// The goodbye for this link, in its version: from version 4 on it says which of the
    /// peer's requests were never dispatched. Nothing is dispatched after it.
    pub(super) fn goodbye<'a>(&self, reason: &'a str, leaving: bool) -> Header<'a> {
        let last = self.dispatched.fetch_or(NO_MORE, Ordering::AcqRel) & !NO_MORE;
        if self.peer.protocol >= 4 {
            Header::GoodbyeAfter {
                reason: reason.into(),
                leaving,
                last,
            }
        } else {
            Header::Goodbye {
                reason: reason.into(),
                leaving,
            }
        }
    }
}

impl Connection {
    /// Closes the link if no call is in flight either way, saying goodbye (not leaving);
    /// true if it did. A call that races with it finds the link closed before its request
    /// is sent (see [`Connection::may_resend`]).
    pub(crate) fn close_if_idle(&self) -> bool {
        let shared = &self.shared;
        let max = shared.max_frame;
        let sealed = shared.outbox.seal_if(
            || shared.in_flight.load(Ordering::Relaxed) == 0,
            |buf| wire::append_header(buf, &shared.goodbye("idle", false), max),
        );
        if sealed {
            shared.idle_closed.store(true, Ordering::SeqCst);
            self.shutdown();
        }
        sealed
    }

    /// Whether a call on this link that failed with `e` may be sent again on a new link to
    /// the same peer: it never ran, and the link closed for a reason that says nothing
    /// about the peer — this node closed it for being idle before the request left
    /// (`disconnected`), or the peer closed it, not leaving (idle on its side, or replaced
    /// by a link the two nodes dialed at once), before reading the request.
    pub(crate) fn may_resend(&self, e: &RpcError) -> bool {
        let shared = &self.shared;
        match e {
            RpcError::Disconnected { .. } => shared.idle_closed.load(Ordering::SeqCst),
            RpcError::PeerUnavailable { .. } => {
                self.is_closed() && shared.peer_stays.load(Ordering::SeqCst)
            }
            _ => false,
        }
    }

    /// Sends `Goodbye` and closes the link; pending calls fail with `Disconnected`.
    pub(crate) fn close(&self, reason: &str, leaving: bool) {
        let goodbye = self.shared.goodbye(reason, leaving);
        self.shared.send_control(&goodbye);
        self.shutdown();
    }
}

/// The peer said goodbye promising it dispatched none of our requests above `last`: the
/// calls still waiting for those did not run, and fail so ([`Shared::lost`]); when the
/// peer is not leaving, they may go again on a new link ([`Connection::may_resend`]).
pub(super) fn not_run_above(shared: &Shared, last: u64, leaving: bool) {
    shared.peer_stays.store(!leaving, Ordering::SeqCst);
    shared.unread_above.store(last, Ordering::SeqCst);
}

impl Shared {
    /// The error of call (or stream) `id` to `method`, which was waiting when the link
    /// closed: not run (`peer_unavailable`), if the peer's goodbye promised so, else
    /// `disconnected` (it may have run).
    pub(super) fn lost(&self, method: &str, id: u64) -> RpcError {
        let peer = self.peer.name.clone();
        if id > self.unread_above.load(Ordering::SeqCst) {
            let reason =
                format!("it said goodbye before reading the request: `{method}` did not run");
            return RpcError::PeerUnavailable { peer, reason };
        }
        RpcError::Disconnected {
            peer,
            method: method.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::link::memory::{memory_link, Keep};
    use crate::link::transport::Socket;
    use crate::wire::Encoding;
    use crate::wire::ErrorKind;

    fn link(keep: Arc<Keep>, tasks: &TaskTracker) -> (Connection, Socket) {
        memory_link(
            keep,
            tasks,
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
    }

    fn request(id: u64, method: &str) -> bytes::Bytes {
        let header = Header::Request {
            id,
            method: method.into(),
            timeout_ms: None,
            encoding: Encoding::Bincode,
            signature: None,
            trace: None,
        };
        wire::frame_bytes(&header).unwrap()
    }

    /// The headers of the frames `socket` reads until the other side closes.
    async fn headers(socket: &mut Socket) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(Ok(payload)) = socket.reader.next().await {
            let payload = payload.freeze();
            let (header, _) = wire::decode_frame(&payload).unwrap();
            seen.push(format!("{header:?}"));
        }
        seen
    }

    #[tokio::test]
    async fn a_goodbye_names_the_last_request_dispatched_and_nothing_runs_after_it() {
        let keep = Arc::new(Keep::default());
        let tasks = TaskTracker::new();
        let (conn, mut raw) = link(keep.clone(), &tasks);
        raw.writer.write_all(&request(7, "first")).await.unwrap();
        keep.arrived.notified().await;
        conn.close("stopping", true);
        // Sent after the goodbye, and read by a reader that is draining: never dispatched.
        let _ = raw.writer.write_all(&request(8, "second")).await;
        let _ = raw.writer.shutdown().await;
        let seen = headers(&mut raw).await;
        assert!(
            seen.iter()
                .any(|h| h.contains("GoodbyeAfter") && h.contains("last: 7")),
            "{seen:?}"
        );
        tasks.close();
        tasks.wait().await;
        let methods: Vec<String> = keep
            .methods
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| m.clone())
            .collect();
        assert_eq!(methods, ["first"]);
    }

    /// Three calls; the peer says goodbye promising it read the first two. Returns each
    /// call's error and whether it may go again on a new link.
    async fn three_calls_then_goodbye(leaving: bool) -> Vec<(bool, ErrorKind, bool)> {
        let tasks = TaskTracker::new();
        let (conn, mut raw) = link(Arc::default(), &tasks);
        let calls: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|method| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let timeout = Duration::from_secs(60);
                    let result = conn.request(method, Encoding::Bincode, &(), timeout, false, None);
                    (method, result.await)
                })
            })
            .collect();
        // The three requests, with the ids the caller chose.
        let mut ids = Vec::new();
        while ids.len() < 3 {
            let payload = raw.reader.next().await.unwrap().unwrap().freeze();
            if let (Header::Request { id, method, .. }, _) = wire::decode_frame(&payload).unwrap() {
                ids.push((id, method.into_owned()));
            }
        }
        ids.sort();
        let last = ids[1].0;
        let goodbye = Header::GoodbyeAfter {
            reason: "replaced by a newer link".into(),
            leaving,
            last,
        };
        raw.writer
            .write_all(&wire::frame_bytes(&goodbye).unwrap())
            .await
            .unwrap();
        drop(raw);
        let mut seen = Vec::new();
        for call in calls {
            let (method, result) = call.await.unwrap();
            let err = result.unwrap_err();
            seen.push((method == ids[2].1, err.kind(), conn.may_resend(&err)));
        }
        seen
    }

    #[tokio::test]
    async fn calls_above_the_promise_fail_as_not_run_the_others_as_disconnected() {
        for (not_read, kind, _) in three_calls_then_goodbye(true).await {
            let expected = if not_read {
                ErrorKind::PeerUnavailable
            } else {
                ErrorKind::Disconnected
            };
            assert_eq!(kind, expected);
        }
    }

    /// Two nodes that dial each other at once keep one link and close the other (not
    /// leaving): a call that was waiting on the closed one and never read goes again on
    /// the link that stays; one that may have run does not, and none does when the peer
    /// is leaving.
    #[tokio::test]
    async fn what_a_peer_that_stays_did_not_read_may_go_again_on_a_new_link() {
        for (not_read, _, resend) in three_calls_then_goodbye(false).await {
            assert_eq!(resend, not_read);
        }
        for (_, _, resend) in three_calls_then_goodbye(true).await {
            assert!(!resend);
        }
    }
}
