//! The membership view: a pure state machine from (link up, link down, clock, rumor) to
//! member statuses and events. No IO and no clock of its own: the actor in
//! [`super`] feeds it and acts on what it returns, and the tests drive it directly.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{Member, MemberEvent, Rumor, Status};
use crate::link::{Closed, PeerInfo};

/// Members down or left for this many `down_after` periods are forgotten (5 minutes with
/// the defaults).
const FORGET_AFTER: u32 = 60;

/// The membership view: a pure state machine, driven by the actor.
pub(crate) struct View {
    me: Member,
    others: HashMap<String, (Member, Instant)>,
    down_after: Duration,
}

impl View {
    pub(crate) fn new(me: Member, down_after: Duration) -> Self {
        View {
            me,
            others: HashMap::new(),
            down_after,
        }
    }

    /// A link to `peer` is up.
    pub(crate) fn linked(&mut self, peer: &PeerInfo, now: Instant) -> Option<MemberEvent> {
        let member = Member {
            name: peer.name.clone(),
            id: peer.id,
            incarnation: peer.incarnation,
            addr: peer.addr,
            status: Status::Up,
        };
        match self.others.get(&peer.name) {
            Some((known, _)) if known.id == peer.id && known.status == Status::Up => return None,
            // An older run while a newer one is up: stale. (A live link from an older run is
            // still taken when the newer entry is not up: clocks can step back.)
            Some((known, _))
                if known.incarnation > peer.incarnation && known.status == Status::Up =>
            {
                return None
            }
            _ => {}
        }
        self.others.insert(peer.name.clone(), (member.clone(), now));
        Some(MemberEvent::NodeUp(member))
    }

    /// The link to `peer` closed for `why`; returns the event and whether to redial it.
    pub(crate) fn unlinked(
        &mut self,
        peer: &PeerInfo,
        why: &Closed,
        now: Instant,
    ) -> (Option<MemberEvent>, bool) {
        let Some((known, since)) = self.others.get_mut(&peer.name) else {
            return (None, false);
        };
        if known.id != peer.id || matches!(known.status, Status::Left) {
            return (None, false); // news about another run, or it already left
        }
        match why {
            Closed::Goodbye { leaving: true, .. } => {
                known.status = Status::Left;
                *since = now;
                (Some(MemberEvent::NodeLeft(known.clone())), false)
            }
            // This node is closing the link itself (shutting down): nothing to learn.
            Closed::Locally => (None, false),
            _ => {
                if known.status == Status::Up {
                    known.status = Status::Suspect;
                    // A silent link was already quiet this long before it was closed.
                    *since = match why {
                        Closed::Silent(quiet) => now.checked_sub(*quiet).unwrap_or(now),
                        _ => now,
                    };
                }
                (None, true)
            }
        }
    }

    /// Suspects lost for longer than `down_after` become down.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        for (member, since) in self.others.values_mut() {
            if member.status == Status::Suspect && now.duration_since(*since) >= self.down_after {
                member.status = Status::Down;
                *since = now;
                events.push(MemberEvent::NodeDown(member.clone()));
            }
        }
        events
    }

    /// Forgets members down or left for longer than `FORGET_AFTER` × `down_after`, so a
    /// cluster whose names churn does not keep them (and their redials) forever; returns
    /// their names.
    pub(crate) fn forget(&mut self, now: Instant) -> Vec<String> {
        let ttl = self.down_after * FORGET_AFTER;
        let gone: Vec<String> = self
            .others
            .iter()
            .filter(|(_, (m, since))| {
                matches!(m.status, Status::Down | Status::Left) && now.duration_since(*since) >= ttl
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            self.others.remove(name);
        }
        gone
    }

    /// Whether a rumor is news worth dialing: a member we do not know, or a newer run of one
    /// we know that we have no live link to.
    pub(crate) fn is_news(&self, rumor: &Rumor) -> bool {
        if rumor.name == self.me.name {
            return false;
        }
        match self.others.get(&rumor.name) {
            None => true,
            Some((known, _)) => {
                rumor.incarnation > known.incarnation
                    || (rumor.id == known.id && known.status != Status::Up)
            }
        }
    }

    /// The rumors this node spreads: itself and every member it has a live link to.
    pub(crate) fn rumors(&self) -> Vec<Rumor> {
        std::iter::once(&self.me)
            .chain(
                self.others
                    .values()
                    .map(|(m, _)| m)
                    .filter(|m| m.status == Status::Up),
            )
            .filter_map(|m| {
                Some(Rumor {
                    name: m.name.clone(),
                    id: m.id,
                    incarnation: m.incarnation,
                    addr: m.addr?,
                })
            })
            .collect()
    }

    /// Every member, itself included, sorted by name.
    pub(crate) fn members(&self) -> Vec<Member> {
        let mut all: Vec<Member> = std::iter::once(self.me.clone())
            .chain(self.others.values().map(|(m, _)| m.clone()))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Member> {
        self.others.get(name).map(|(m, _)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeId;
    use std::collections::HashSet;
    use std::net::SocketAddr;

    fn member(name: &str, id: u64, incarnation: u64) -> Member {
        let addr = Some(SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16)));
        Member {
            name: name.into(),
            id: NodeId(id),
            incarnation,
            addr,
            status: Status::Up,
        }
    }

    fn peer(m: &Member) -> PeerInfo {
        PeerInfo {
            id: m.id,
            name: m.name.clone(),
            addr: m.addr,
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
            incarnation: m.incarnation,
        }
    }

    fn status(view: &View, name: &str) -> Option<Status> {
        view.get(name).map(|m| m.status)
    }

    const DOWN_AFTER: Duration = Duration::from_secs(5);

    #[test]
    fn a_lost_member_is_suspect_then_down_then_up_again() {
        let t0 = Instant::now();
        let mut view = View::new(member("me", 1, 1), DOWN_AFTER);
        let b = member("b", 2, 1);
        assert!(matches!(
            view.linked(&peer(&b), t0),
            Some(MemberEvent::NodeUp(_))
        ));
        assert_eq!(view.linked(&peer(&b), t0), None, "a second link is no news");
        let (event, redial) = view.unlinked(&peer(&b), &Closed::ByPeer, t0);
        assert_eq!((event, redial), (None, true));
        assert_eq!(status(&view, "b"), Some(Status::Suspect));
        assert!(view.tick(t0 + DOWN_AFTER / 2).is_empty());
        let events = view.tick(t0 + DOWN_AFTER);
        assert!(matches!(&events[..], [MemberEvent::NodeDown(m)] if m.name == "b"));
        assert!(view.tick(t0 + DOWN_AFTER * 2).is_empty(), "down once");
        assert!(matches!(
            view.linked(&peer(&b), t0 + DOWN_AFTER * 3),
            Some(MemberEvent::NodeUp(_))
        ));
        // Lost for good: forgotten after FORGET_AFTER periods, not before.
        view.unlinked(&peer(&b), &Closed::ByPeer, t0);
        view.tick(t0 + DOWN_AFTER);
        assert!(view.forget(t0 + DOWN_AFTER * 2).is_empty());
        assert_eq!(
            view.forget(t0 + DOWN_AFTER * (FORGET_AFTER + 1)),
            vec!["b".to_owned()]
        );
        assert_eq!(status(&view, "b"), None);
    }

    #[test]
    fn silence_counts_toward_down() {
        let t0 = Instant::now();
        let mut view = View::new(member("me", 1, 1), DOWN_AFTER);
        let b = member("b", 2, 1);
        view.linked(&peer(&b), t0);
        view.unlinked(&peer(&b), &Closed::Silent(DOWN_AFTER), t0 + DOWN_AFTER);
        assert_eq!(
            view.tick(t0 + DOWN_AFTER).len(),
            1,
            "down as soon as the silent link closes"
        );
    }

    #[test]
    fn a_goodbye_that_says_leaving_is_left_and_not_redialed() {
        let t0 = Instant::now();
        let mut view = View::new(member("me", 1, 1), DOWN_AFTER);
        let b = member("b", 2, 1);
        view.linked(&peer(&b), t0);
        let why = Closed::Goodbye {
            reason: "bye".into(),
            leaving: true,
        };
        let (event, redial) = view.unlinked(&peer(&b), &why, t0);
        assert!(matches!(event, Some(MemberEvent::NodeLeft(_))));
        assert!(!redial);
        assert!(view.tick(t0 + DOWN_AFTER * 2).is_empty(), "left stays left");
    }

    #[test]
    fn a_newer_incarnation_replaces_and_stale_news_is_ignored() {
        let t0 = Instant::now();
        let mut view = View::new(member("me", 1, 1), DOWN_AFTER);
        let old = member("b", 2, 100);
        let new = member("b", 3, 200);
        view.linked(&peer(&old), t0);
        assert!(
            matches!(view.linked(&peer(&new), t0), Some(MemberEvent::NodeUp(m)) if m.id == NodeId(3))
        );
        // The old run's link closing says nothing about the new run.
        assert_eq!(
            view.unlinked(&peer(&old), &Closed::ByPeer, t0),
            (None, false)
        );
        assert_eq!(status(&view, "b"), Some(Status::Up));
        // Nor does a late link from the old run.
        assert_eq!(view.linked(&peer(&old), t0), None);
        assert_eq!(view.get("b").map(|m| m.id), Some(NodeId(3)));
    }

    #[test]
    fn rumors_spread_up_members_and_news_is_what_we_cannot_reach() {
        let t0 = Instant::now();
        let mut view = View::new(member("me", 1, 1), DOWN_AFTER);
        let b = member("b", 2, 1);
        let c = member("c", 3, 1);
        view.linked(&peer(&b), t0);
        view.linked(&peer(&c), t0);
        view.unlinked(&peer(&c), &Closed::ByPeer, t0);
        let names: HashSet<String> = view.rumors().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["me", "b"].into_iter().map(String::from).collect());
        let rumor = |m: &Member| Rumor {
            name: m.name.clone(),
            id: m.id,
            incarnation: m.incarnation,
            addr: m.addr.unwrap(),
        };
        assert!(!view.is_news(&rumor(&b)), "already up");
        assert!(view.is_news(&rumor(&c)), "known but lost: worth dialing");
        assert!(view.is_news(&rumor(&member("d", 4, 1))), "unknown");
        assert!(
            !view.is_news(&rumor(&member("me", 9, 9))),
            "never ourselves"
        );
    }
}
