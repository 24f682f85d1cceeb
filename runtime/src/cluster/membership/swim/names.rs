//! Names are unique among live members: a newcomer whose name a live member holds is
//! refused before foca hears of it, and told why; a newcomer refused so before it joined
//! anything hears it, says it, and lets its node know (`meshrpc node` exits 1).

use std::net::SocketAddr;

use tracing::warn;

use super::Actor;
use crate::cluster::membership::MemberStatus;
use crate::wire::swim::SwimId;

impl Actor {
    /// Why `src` may not join, if it may not: its name is held by a live member.
    pub(super) fn conflict(&self, src: &SwimId) -> Option<Refusal> {
        let me = self.foca.identity();
        let name = &src.name;
        if *name == me.name && src.id != me.id {
            return Some(Refusal {
                theirs: format!("it is itself named `{name}`: choose another --name for this node"),
                ours: format!("the sender is named `{name}` like this node"),
            });
        }
        let snapshot = self.directory.snapshot();
        let holder = snapshot.by_name(name)?;
        let taken = holder.status == MemberStatus::Up
            && holder.id != src.id
            && holder.addr != Some(src.addr);
        taken.then(|| {
            let ours = format!("name `{name}` is already used by live node {}", holder.id);
            Refusal {
                theirs: format!("{ours}: choose another --name for this node"),
                ours,
            }
        })
    }

    /// A member refused this node, for `reason`.
    pub(super) fn refused_by(&mut self, from: SocketAddr, reason: &str) {
        if let Some(more) = self.refusals.admit() {
            warn!(%from, %reason, more, "a member refused this node");
        }
        // A newcomer's name is taken: worth stopping for. (A member refused by a cluster it
        // already belongs to is a conflict among members; it stays.)
        if *self.active.borrow() == 0 {
            self.refused.send_if_modified(|r| {
                let first = r.is_none();
                if first {
                    *r = Some(format!("{from} refused this node: {reason}"));
                }
                first
            });
        }
    }
}

/// A refusal in the sender's words (it is sent) and in ours (it is logged).
pub(super) struct Refusal {
    pub(super) theirs: String,
    pub(super) ours: String,
}
