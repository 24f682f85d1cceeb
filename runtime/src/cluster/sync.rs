//! State sync (memberlist's push-pull): SWIM spreads news by gossip, and a node that joins
//! a big cluster hears of the members that joined long before it only slowly. So right
//! after joining (and after being alone, as after a partition), and then every
//! [`Sync::every`] (longer in big clusters: see [`interval`]), a node swaps its whole
//! member list with one random live member over a link (`system.members.sync`,
//! node-only); each side's SWIM keeps what is news. A link opened only for it is closed
//! after it. The loop stops with the intake token.
//!
//! Members that join at about the same time are the ones most likely to miss each other:
//! the first copies of one's news go to the members known at that moment, before the other
//! is among them, and the first sync may be with a member that does not know the other yet.
//! So after joining, a node syncs again [`Sync::soon`] later, then at doubling intervals
//! until they reach the regular one; a sync that brought members this node did not know
//! starts the doubling over (anti-entropy runs fast while there is entropy, and slows down
//! once syncs bring nothing new: after a join storm, or a merge).
//!
//! The seed loop hands it the seeds a node meets after it has joined ([`Sync::met`]): each
//! may bring a cluster of its own, and a sync with it at once merges the two.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::links::Links;
use super::membership::{Membership, SyncState};
use super::Target;
use crate::error::RpcError;
use crate::wire::codec::decode_result;
use crate::wire::Encoding;

/// The method nodes swap member lists with.
pub(crate) const METHOD: &str = "system.members.sync";

/// What the loop needs.
pub(crate) struct Sync {
    pub(crate) links: Links,
    pub(crate) membership: Membership,
    /// Between two syncs, once joined.
    pub(crate) every: Duration,
    /// The first wait after joining, doubled after each sync until it reaches `every`.
    pub(crate) soon: Duration,
    /// Deadline of one sync call.
    pub(crate) timeout: Duration,
    /// Seeds met after joining, to sync with at once.
    pub(crate) met: mpsc::Receiver<SocketAddr>,
}

/// Runs until `intake` is cancelled; see the module doc.
pub(crate) async fn run(mut sync: Sync, intake: CancellationToken) {
    let mut active = sync.membership.active();
    let mut settling = sync.soon;
    loop {
        // A node alone has no one to sync with; one that just joined syncs at once.
        let joined = active.wait_for(|n| *n > 0);
        tokio::select! {
            _ = intake.cancelled() => return,
            joined = joined => if joined.is_err() { return },
        }
        let news = match random_live(&sync) {
            Some(addr) => once(&sync, addr).await,
            None => 0,
        };
        if news > 0 {
            settling = sync.soon;
        }
        let every = interval(sync.every, *active.borrow() + 1);
        let wait = settling.min(every);
        settling = settling.saturating_mul(2);
        let jitter = wait.mul_f64(rand::random::<f64>() * 0.2);
        let until = tokio::time::Instant::now() + wait + jitter;
        // Again after a while, or as soon as this node finds itself alone (and then, once
        // it is not any more, settles again); meanwhile, with every seed it meets.
        loop {
            // (A bool, not the guard `wait_for` returns: the guard may not live across the
            // sync below.)
            let alone = async { active.wait_for(|n| *n == 0).await.is_ok() };
            tokio::select! {
                _ = intake.cancelled() => return,
                _ = tokio::time::sleep_until(until) => break,
                alone = alone => {
                    if !alone { return }
                    settling = sync.soon;
                    break;
                }
                Some(addr) = sync.met.recv() => {
                    if once(&sync, addr).await > 0 {
                        settling = sync.soon;
                    }
                }
            }
        }
    }
}

/// Between two syncs in a cluster of `members`: `base` up to 32 members, then `base` more
/// for each doubling beyond (memberlist's push-pull scale), so the cluster's total sync
/// traffic grows like N log N rather than N².
fn interval(base: Duration, members: usize) -> Duration {
    let doublings = (members.max(1) as f64 / 32.0).log2().ceil().max(0.0) as u32;
    base.saturating_mul(1 + doublings)
}

/// The address of one random live member other than this node.
fn random_live(sync: &Sync) -> Option<SocketAddr> {
    let me = sync.links.identity().id;
    let snapshot = sync.membership.directory().snapshot();
    let live: Vec<_> = snapshot
        .members
        .iter()
        .filter(|m| m.status.is_live() && m.id != me)
        .filter_map(|m| m.addr)
        .collect();
    if live.is_empty() {
        return None;
    }
    Some(live[rand::random::<u64>() as usize % live.len()])
}

/// Swaps member lists with the member at `addr`; returns how many members it told this
/// node of that it did not know.
async fn once(sync: &Sync, addr: SocketAddr) -> usize {
    let ours = sync.membership.state().await;
    // A link opened only for the sync is closed after it: an idle link costs heartbeats.
    let linked_before = sync.links.peers().by_addr(addr).is_some();
    // The reply, or the error and whether the link closed under the call.
    let attempt = || async {
        let conn = sync
            .links
            .link(Target::Addr(addr))
            .await
            .map_err(|e| (e, false))?;
        let reply = conn
            .request(METHOD, Encoding::Bincode, &ours, sync.timeout, false, None)
            .await;
        if !linked_before {
            conn.close_if_idle();
        }
        reply.map_err(|e| {
            let closed = conn.may_resend(&e) || matches!(e, RpcError::Disconnected { .. });
            (e, closed)
        })
    };
    let theirs = async {
        // Two nodes that sync with each other at once each dial the other; the tie-break
        // keeps one link and closes the other under one of the calls. A sync is safe to
        // repeat, so it is tried once more.
        let reply = match attempt().await {
            Err((_, true)) => attempt().await,
            other => other,
        };
        let (encoding, body) = reply.map_err(|(e, _)| e.to_string())?;
        decode_result::<SyncState>(encoding, &body).map_err(|e| e.to_string())
    };
    match theirs.await {
        Ok(state) => {
            let members = state.members.len();
            let news = sync.membership.apply(state).await;
            debug!(%addr, members, news, "state sync");
            news
        }
        Err(error) => {
            debug!(%addr, %error, "state sync failed");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_grow_rarer_with_each_doubling_past_32_members() {
        let base = Duration::from_secs(30);
        assert_eq!(interval(base, 1), base);
        assert_eq!(interval(base, 32), base);
        assert_eq!(interval(base, 33), base * 2);
        assert_eq!(interval(base, 300), base * 5);
        assert_eq!(interval(base, 1000), base * 6);
    }
}
