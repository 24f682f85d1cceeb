//! Runs that went down or left, remembered long after foca forgets them. A node's id is
//! new at every start, so a run that is gone never speaks again: a datagram from it, or one
//! that says it is alive, is a replay (a recorded datagram sent again, which the cookie's
//! MAC cannot tell from the original) — or comes from a run the cluster declared down while
//! it lived, cut off for longer than foca remembers down members. The first is dropped; the
//! second is told it is down (foca's `TurnUndead`), so it renews its identity (a higher
//! `bump`) and joins again as a run the graveyard does not hold.
//!
//! While foca still knows a run as down it handles that run's datagrams itself (the same
//! way); the graveyard covers what comes after. Bounded: [`MAX_RUNS`] runs, each kept
//! [`KEEP`]; at most one `TurnUndead` per address a second.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use foca::{Codec, State};
use tokio::time::Instant;
use tracing::debug;

use super::Actor;
use crate::wire::swim::{Datagram, SwimCodec, SwimId};
use crate::wire::NodeId;

/// Runs remembered at once; the oldest go first.
const MAX_RUNS: usize = 65_536;

/// How long a gone run is remembered.
const KEEP: Duration = Duration::from_secs(24 * 3600);

/// Gone runs: each id with the highest `bump` it was gone under, and when it was last
/// buried.
#[derive(Default)]
pub(super) struct Graveyard {
    runs: HashMap<NodeId, (u32, Instant)>,
    /// Burial order, for pruning.
    order: VecDeque<(NodeId, Instant)>,
    /// When each address was last told it is down.
    told: HashMap<SocketAddr, Instant>,
}

impl Graveyard {
    /// Remembers that run `id` (at its bump) went down or left.
    pub(super) fn bury(&mut self, id: &SwimId, now: Instant) {
        let run = self.runs.entry(id.id).or_insert((id.bump, now));
        *run = (run.0.max(id.bump), now);
        self.order.push_back((id.id, now));
        while self.order.len() > MAX_RUNS
            || self
                .order
                .front()
                .is_some_and(|(_, at)| now.duration_since(*at) >= KEEP)
        {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            // A run buried again later stays until that burial is pruned.
            if self.runs.get(&old).is_some_and(|(_, last)| *last == at) {
                self.runs.remove(&old);
            }
        }
    }

    /// Whether `id` is a gone run (at its bump or before).
    pub(super) fn holds(&self, id: &SwimId) -> bool {
        self.runs
            .get(&id.id)
            .is_some_and(|(bump, _)| id.bump <= *bump)
    }

    fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

impl Actor {
    /// Whether a foca message must not reach foca because it speaks for a gone run that
    /// foca no longer knows: from it (then the run is told it is down), or saying it is
    /// alive.
    pub(super) async fn haunted(&mut self, payload: &[u8], src: &SwimId) -> bool {
        if self.graveyard.is_empty() {
            return false;
        }
        let mut codec = SwimCodec;
        let mut rest = payload;
        let Ok(header) = <SwimCodec as Codec<SwimId>>::decode_header(&mut codec, &mut rest) else {
            return false; // foca will say why
        };
        // How a run learns the cluster holds it down, whoever says it: two runs cut off
        // from each other for long each hold the other gone, and each must hear it.
        if header.message == foca::Message::TurnUndead {
            return false;
        }
        if self.graveyard.holds(src) && !self.foca_knows(src) {
            self.tell_down(src).await;
            return true;
        }
        if rest.len() < 2 {
            return false;
        }
        let count = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        for _ in 0..count {
            let Ok(member) = <SwimCodec as Codec<SwimId>>::decode_member(&mut codec, &mut rest)
            else {
                return false;
            };
            let alive = member.state() != State::Down;
            if alive && self.graveyard.holds(member.id()) && !self.foca_knows(member.id()) {
                if let Some(more) = self.dropped.admit() {
                    debug!(ghost = %member.id().name, more, "dropped a datagram saying a gone run is alive (a replay)");
                }
                return true;
            }
        }
        false
    }

    fn foca_knows(&self, id: &SwimId) -> bool {
        self.foca.iter_membership_state().any(|m| m.id() == id)
    }

    /// Tells the run `to` that the cluster holds it down, at most once a second per address.
    async fn tell_down(&mut self, to: &SwimId) {
        let now = Instant::now();
        let told = &mut self.graveyard.told;
        if told
            .get(&to.addr)
            .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(1))
        {
            return;
        }
        if told.len() >= MAX_RUNS {
            told.retain(|_, at| now.duration_since(*at) < Duration::from_secs(1));
        }
        told.insert(to.addr, now);
        let header = foca::Header {
            src: self.foca.identity().clone(),
            src_incarnation: 0,
            dst: to.clone(),
            message: foca::Message::TurnUndead,
        };
        let mut payload = Vec::new();
        if SwimCodec.encode_header(&header, &mut payload).is_ok() {
            debug!(run = %to.name, addr = %to.addr, "a gone run spoke: told it it is down");
            self.send(to.addr, &Datagram::Swim(&payload)).await;
        }
    }
}

impl Actor {
    /// Buries the runs a foca notification says are gone: down (or left), or replaced at
    /// their address by a newer identity.
    pub(super) fn bury_gone(&mut self, notification: &foca::OwnedNotification<SwimId>) {
        let now = Instant::now();
        match notification {
            foca::OwnedNotification::MemberDown(id) => self.graveyard.bury(id, now),
            foca::OwnedNotification::Rename(old, _) => self.graveyard.bury(old, now),
            _ => {}
        }
    }
}
