//! The membership view: a pure function from what foca knows (each identity and its SWIM
//! state) and the goodbyes heard to member statuses, and from foca's notifications to
//! [`MemberEvent`]s, each published once. No IO and no clock of its own: the actor feeds it,
//! the tests drive it directly.

use std::collections::HashMap;
use std::time::Duration;

use foca::{OwnedNotification, State};
use tokio::time::Instant;

use super::{Member, MemberEvent, MemberStatus};
use crate::wire::swim::SwimId;
use crate::wire::NodeId;

/// See the module doc.
pub(crate) struct View {
    me: Member,
    /// Runs that said goodbye, and when: their down is `left`. Forgotten after `forget`.
    left: HashMap<NodeId, Instant>,
    /// The last status published for each run, so an event is not published twice.
    published: HashMap<NodeId, MemberStatus>,
    forget: Duration,
}

impl View {
    pub(crate) fn new(me: Member, forget: Duration) -> Self {
        View {
            me,
            left: HashMap::new(),
            published: HashMap::new(),
            forget,
        }
    }

    fn member(id: &SwimId, status: MemberStatus) -> Member {
        Member {
            name: id.name.clone(),
            id: id.id,
            incarnation: id.incarnation,
            addr: Some(id.addr),
            status,
        }
    }

    fn status(&self, id: &SwimId, state: State) -> MemberStatus {
        if self.left.contains_key(&id.id) {
            return MemberStatus::Left;
        }
        match state {
            State::Alive => MemberStatus::Up,
            State::Suspect => MemberStatus::Suspect,
            State::Down => MemberStatus::Down,
        }
    }

    /// Every member, itself included, one entry per name: the run that matters (live before
    /// gone, newer before older), sorted by name.
    pub(crate) fn members<'a>(
        &self,
        states: impl Iterator<Item = &'a foca::Member<SwimId>>,
    ) -> Vec<Member> {
        // A stand-in for an address (no name) is never a member.
        let mut runs: Vec<(&SwimId, MemberStatus)> = states
            .filter(|m| !m.id().name.is_empty())
            .map(|m| (m.id(), self.status(m.id(), m.state())))
            .collect();
        // By name, the run that matters first; then one per name.
        runs.sort_unstable_by(|(a, a_status), (b, b_status)| {
            (a.name.cmp(&b.name))
                .then_with(|| key(a, *a_status).cmp(&key(b, *b_status)))
                .then_with(|| a.id.cmp(&b.id))
        });
        runs.dedup_by(|later, first| later.0.name == first.0.name);
        let mut all: Vec<Member> = Vec::with_capacity(runs.len() + 1);
        all.extend(
            runs.into_iter()
                .filter(|(id, _)| id.name != self.me.name)
                .map(|(id, status)| Self::member(id, status)),
        );
        let at = all.partition_point(|m| m.name < self.me.name);
        all.insert(at, self.me.clone());
        all
    }

    /// The event a foca notification makes, if it is news.
    pub(crate) fn notified(
        &mut self,
        notification: OwnedNotification<SwimId>,
    ) -> Option<MemberEvent> {
        match notification {
            OwnedNotification::MemberUp(id) => self.publish(&id, MemberStatus::Up),
            // The same address, a newer identity: a restart, or a rejoin after being
            // declared down. The old run is gone without a word.
            OwnedNotification::Rename(old, new) => {
                if old.id != new.id {
                    self.published.remove(&old.id);
                }
                self.publish(&new, MemberStatus::Up)
            }
            OwnedNotification::MemberDown(id) => {
                let status = self.status(&id, State::Down);
                self.publish(&id, status)
            }
            _ => None,
        }
    }

    /// A member said goodbye: it is `left` from now on.
    pub(crate) fn goodbye(&mut self, id: &SwimId, now: Instant) -> Option<MemberEvent> {
        self.left.insert(id.id, now);
        self.publish(id, MemberStatus::Left)
    }

    fn publish(&mut self, id: &SwimId, status: MemberStatus) -> Option<MemberEvent> {
        if id.name.is_empty() || id.id == self.me.id {
            return None;
        }
        // A goodbye is final for the run: foca's later `down` for it is the same news.
        let status = if self.left.contains_key(&id.id) {
            MemberStatus::Left
        } else {
            status
        };
        if self.published.insert(id.id, status) == Some(status) {
            return None;
        }
        let member = Self::member(id, status);
        match status {
            MemberStatus::Up => Some(MemberEvent::NodeUp(member)),
            MemberStatus::Down => Some(MemberEvent::NodeDown(member)),
            MemberStatus::Left => Some(MemberEvent::NodeLeft(member)),
            MemberStatus::Suspect => None,
        }
    }

    /// Whether run `id` said goodbye (and it is not forgotten yet).
    pub(crate) fn has_left(&self, id: NodeId) -> bool {
        self.left.contains_key(&id)
    }

    /// How many goodbyes the view remembers.
    pub(crate) fn goodbyes(&self) -> usize {
        self.left.len()
    }

    /// Forgets goodbyes older than the time foca keeps down members.
    /// How long gone members are remembered.
    pub(crate) fn forget_after(&self) -> Duration {
        self.forget
    }

    pub(crate) fn forget(&mut self, now: Instant) {
        let forget = self.forget;
        let gone: Vec<NodeId> = self
            .left
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= forget)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.left.remove(&id);
            self.published.remove(&id);
        }
    }
}

/// Which run of a name matters most (smallest first): live runs before gone ones (up, then
/// suspect), and among equals the newer.
fn key(id: &SwimId, status: MemberStatus) -> (u8, std::cmp::Reverse<(u64, u32)>) {
    let rank = match status {
        MemberStatus::Up => 0,
        MemberStatus::Suspect => 1,
        MemberStatus::Down | MemberStatus::Left => 2,
    };
    (rank, std::cmp::Reverse((id.incarnation, id.bump)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, node: u64, port: u16, incarnation: u64) -> SwimId {
        SwimId {
            addr: ([127, 0, 0, 1], port).into(),
            id: NodeId(node),
            name: name.into(),
            incarnation,
            bump: 0,
        }
    }

    fn me() -> Member {
        View::member(&id("me", 1, 1000, 1), MemberStatus::Up)
    }

    fn state(id: &SwimId, state: State) -> foca::Member<SwimId> {
        foca::Member::new(id.clone(), 0, state)
    }

    const FORGET: Duration = Duration::from_secs(300);

    #[test]
    fn statuses_follow_foca_and_goodbyes_make_left() {
        let mut view = View::new(me(), FORGET);
        let (b, c) = (id("b", 2, 1001, 1), id("c", 3, 1002, 1));
        let states = [state(&b, State::Suspect), state(&c, State::Down)];
        let members = view.members(states.iter());
        let statuses: Vec<(&str, MemberStatus)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("b", MemberStatus::Suspect),
                ("c", MemberStatus::Down),
                ("me", MemberStatus::Up)
            ]
        );
        assert!(matches!(
            view.goodbye(&b, Instant::now()),
            Some(MemberEvent::NodeLeft(_))
        ));
        assert_eq!(view.members(states.iter())[0].status, MemberStatus::Left);
        assert_eq!(
            view.notified(OwnedNotification::MemberDown(b.clone())),
            None,
            "foca's down after a goodbye is the same news"
        );
    }

    #[test]
    fn every_event_is_published_once() {
        let mut view = View::new(me(), FORGET);
        let b = id("b", 2, 1001, 1);
        assert!(matches!(
            view.notified(OwnedNotification::MemberUp(b.clone())),
            Some(MemberEvent::NodeUp(_))
        ));
        assert_eq!(view.notified(OwnedNotification::MemberUp(b.clone())), None);
        assert!(matches!(
            view.notified(OwnedNotification::MemberDown(b.clone())),
            Some(MemberEvent::NodeDown(_))
        ));
        // A restart at the same address is a new run, up.
        let b2 = id("b", 9, 1001, 2);
        let event = view.notified(OwnedNotification::Rename(b, b2.clone()));
        assert!(matches!(event, Some(MemberEvent::NodeUp(m)) if m.id == NodeId(9)));
    }

    #[test]
    fn the_live_newer_run_of_a_name_is_the_one_shown() {
        let view = View::new(me(), FORGET);
        let old = id("b", 2, 1001, 1);
        let new = id("b", 3, 1005, 2);
        let states = [state(&old, State::Down), state(&new, State::Alive)];
        let members = view.members(states.iter());
        assert_eq!(members.len(), 2);
        assert_eq!(
            (members[0].id, members[0].status),
            (NodeId(3), MemberStatus::Up)
        );
        // And when both are gone, the newer.
        let states = [state(&new, State::Down), state(&old, State::Down)];
        assert_eq!(view.members(states.iter())[0].id, NodeId(3));
    }

    #[test]
    fn goodbyes_are_forgotten_with_the_members() {
        let mut view = View::new(me(), FORGET);
        let b = id("b", 2, 1001, 1);
        let t0 = Instant::now();
        view.goodbye(&b, t0);
        view.forget(t0 + FORGET / 2);
        assert_eq!(view.left.len(), 1);
        view.forget(t0 + FORGET);
        assert!(view.left.is_empty());
    }
}
