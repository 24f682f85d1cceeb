//! How a node leaves (a goodbye to every member it knows, then silence) and how it hears
//! that another one leaves (`left` at once, and down in foca so it is no longer probed).
//!
//! A node that leaves right after joining does not know yet everyone who heard of it, so a
//! goodbye that is news is relayed to a few random members ([`RELAY_TO`]), which relay it
//! in turn; and a goodbye from a run not heard of yet is kept (down in foca, `left` in the
//! view), so the news of its join, arriving later, does not bring it back `up`.
//!
//! Without a cookie anyone can forge a goodbye (a member's id is public): then only one
//! that comes from the member's own address counts, and none is relayed.

use std::net::SocketAddr;

use foca::State;
use rand::seq::IteratorRandom;
use tokio::time::Instant;
use tracing::{debug, info};

use super::Actor;
use crate::wire::swim::{Datagram, SwimId};

/// How many random members a node passes a goodbye on to, the first time it hears it.
/// Each does the same, so all but about e^-4 (2 %) of the members the leaver did not know
/// hear it (the rest see it `down` a few seconds later).
const RELAY_TO: usize = 4;

impl Actor {
    /// A member leaves (its goodbye came from `from`): `left` at once, and down in foca so
    /// it is no longer probed.
    pub(super) async fn goodbye(&mut self, id: &SwimId, from: SocketAddr) {
        if id.name.is_empty() || id.id == self.foca.identity().id {
            return;
        }
        let sealed = self.cookie.is_some();
        if !sealed && from != id.addr {
            if let Some(more) = self.dropped.admit() {
                debug!(%from, member = %id.name, more, "ignored a goodbye not from the member's own address (no cookie to vouch for it)");
            }
            return;
        }
        let news = !self.view.has_left(id.id);
        // The run, under whichever identity this node last heard of it; one not heard of
        // yet is kept down, so its join, if that news comes later, is already stale.
        let known = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == id.id)
            .max_by_key(|m| m.id().bump)
            .map(|m| (m.id().clone(), m.incarnation()));
        let (known, incarnation) = known.unwrap_or_else(|| (id.clone(), 0));
        if let Some(event) = self.view.goodbye(&known, Instant::now()) {
            self.emit(event);
        }
        let down = foca::Member::new(known, incarnation, State::Down);
        if let Err(error) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            debug!(%error, "applying a goodbye");
        }
        self.publish();
        if news && sealed {
            let others = (self.foca.iter_members())
                .map(|m| m.id().addr)
                .filter(|addr| *addr != from && *addr != id.addr);
            let relay = others.choose_multiple(&mut rand::rng(), RELAY_TO);
            for addr in relay {
                self.send(addr, &Datagram::Goodbye(id.clone())).await;
            }
        }
    }

    /// Tells every live member this node leaves, then stops answering.
    pub(super) async fn leave(&mut self) {
        if self.left {
            return;
        }
        let me = self.foca.identity().clone();
        let mut live: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        live.extend(self.announced.iter().copied());
        live.sort_unstable();
        live.dedup();
        for addr in &live {
            self.send(*addr, &Datagram::Goodbye(me.clone())).await;
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            debug!(%error, "leaving the cluster");
        }
        self.drain().await;
        self.flush();
        self.left = true;
        info!(told = live.len(), "left the cluster");
    }
}
