//! How the membership actor tells the node what changed: the directory snapshot and the
//! events (published together, at most every `flush_delay`), and this node's hosting entry,
//! spread again when members come up.

use foca::State;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{flush_delay, Actor, REBROADCAST_EVERY};
use crate::cluster::membership::transmissions;
use crate::cluster::membership::{Member, MemberEvent, Snapshot};

impl Actor {
    pub(super) fn emit(&self, event: MemberEvent) {
        match &event {
            MemberEvent::NodeUp(m) => {
                info!(member = %m.name, id = %m.id, addr = %show(m), "member up")
            }
            MemberEvent::NodeDown(m) => {
                warn!(member = %m.name, id = %m.id, addr = %show(m), "member down")
            }
            MemberEvent::NodeLeft(m) => {
                info!(member = %m.name, id = %m.id, addr = %show(m), "member left")
            }
        }
        let _ = self.events.send(event); // no subscriber
    }

    /// Something changed: publish it (with `events`) at the next flush.
    pub(super) fn changed(&mut self, events: Vec<MemberEvent>) {
        self.unpublished.extend(events);
        if self.flush_at.is_none() {
            let delay = flush_delay(self.foca.num_members());
            self.flush_at = Some(Instant::now() + delay);
        }
    }

    /// Publishes the view, then the events that led to it: a subscriber told of a change
    /// finds it in the directory.
    pub(super) fn flush(&mut self) {
        self.flush_at = None;
        let joined = self
            .unpublished
            .iter()
            .any(|e| matches!(e, MemberEvent::NodeUp(_)));
        if joined {
            self.rebroadcast();
        }
        self.publish();
        for event in std::mem::take(&mut self.unpublished) {
            self.emit(event);
        }
    }

    /// Spreads this node's hosting entry again when members come up (at most every
    /// [`REBROADCAST_EVERY`]): a newcomer may have missed it, and the first copies may have
    /// been spent before this node knew anyone.
    fn rebroadcast(&mut self) {
        let due = self
            .rebroadcast_at
            .is_none_or(|at| at.elapsed() >= REBROADCAST_EVERY);
        if self.mine.version == 0 || !due {
            return;
        }
        self.rebroadcast_at = Some(Instant::now());
        if let Ok(bytes) = self.mine.encode() {
            if let Err(error) = self.foca.add_broadcast(&bytes) {
                debug!(%error, "spreading what this node hosts");
            }
        }
    }

    /// Publishes the view (and what each member hosts) to the directory, and the count of
    /// live members.
    pub(super) fn publish(&mut self) {
        self.scale_transmissions();
        let members = self.view.members(self.foca.iter_membership_state());
        let live = members
            .iter()
            .filter(|m| m.status.is_live())
            .count()
            .saturating_sub(1);
        let mut snapshot = Snapshot::new(members);
        let forget = self.view.forget_after();
        let (mut hosting, _) =
            self.hosting
                .take_changed(|id| snapshot.by_id(id).is_some(), Instant::now(), forget);
        hosting.push((self.mine.node, self.mine.clone()));
        self.publishes += 1;
        snapshot.add_hosting(&mut hosting, self.publishes);
        self.directory.publish(snapshot);
        self.active
            .send_if_modified(|n| std::mem::replace(n, live) != live);
        self.published = self.digest();
    }

    /// Sends updates more times as the cluster grows (see [`transmissions`]).
    fn scale_transmissions(&mut self) {
        let want = transmissions(self.foca.num_members());
        if want == self.config.max_transmissions {
            return;
        }
        let mut config = self.config.clone();
        config.max_transmissions = want;
        match self.foca.set_config(config.clone()) {
            Ok(()) => {
                debug!(
                    transmissions = want.get(),
                    "updates spread more (or fewer) times"
                );
                self.config = config;
            }
            Err(error) => debug!(%error, "cannot change how often updates spread"),
        }
    }

    /// A digest of every member's identity and state, and of the goodbyes heard; the same
    /// whatever order foca keeps its members in.
    pub(super) fn digest(&self) -> u64 {
        let mix = |h: u64, x: u64| (h ^ x).wrapping_mul(0x0100_0000_01b3);
        let states = self
            .foca
            .iter_membership_state()
            .map(|m| {
                let state = match m.state() {
                    State::Alive => 0,
                    State::Suspect => 1,
                    State::Down => 2,
                };
                let id = m.id();
                mix(
                    mix(mix(0xcbf2_9ce4_8422_2325, id.id.0), u64::from(id.bump)),
                    state,
                )
            })
            .fold(0u64, u64::wrapping_add);
        mix(states, self.view.goodbyes() as u64)
    }
}

fn show(m: &Member) -> String {
    m.addr.map_or_else(|| "none".to_owned(), |a| a.to_string())
}
