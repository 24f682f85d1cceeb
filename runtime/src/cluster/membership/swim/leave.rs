//! How a node leaves (a goodbye to every member it knows, then silence) and how it hears
//! that another one leaves (`left` at once, and down in foca so it is no longer probed).

use std::net::SocketAddr;

use foca::State;
use tokio::time::Instant;
use tracing::{debug, info};

use super::Actor;
use crate::wire::swim::{Datagram, SwimId};

impl Actor {
    /// A member leaves: `left` at once, and down in foca so it is no longer probed.
    pub(super) fn goodbye(&mut self, id: &SwimId) {
        // The run, under whichever identity this node last heard of it.
        let known = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == id.id)
            .max_by_key(|m| m.id().bump)
            .map(|m| (m.id().clone(), m.incarnation()));
        let Some((known, incarnation)) = known else {
            return; // not a member we know: nothing to forget
        };
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
