//! Who is in the cluster, as this node sees it: a pure [`View`] (name → member with status)
//! and the actor that owns it.
//!
//! The actor hears from the link layer (a link to a node came up or went down), from peers'
//! gossip (`system.gossip` casts listing the members they see up) and from its own clock
//! (suspect members become down). It dials members it learns about, redials lost ones with
//! capped, jittered exponential backoff, publishes [`MemberEvent`]s on a broadcast channel,
//! and stops with the node. Status rules are in docs/MEMBERSHIP.md.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::links::{LinkEvent, Links};
use super::ShowAddr;
use crate::wire::{Encoding, NodeId};
use view::View;

mod view;

/// A member's status in this node's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A live link to it exists.
    Up,
    /// Its link dropped (or went silent) and has not come back yet.
    Suspect,
    /// Suspect for longer than `down_after`; still redialed, less often.
    Down,
    /// It announced that it was leaving (a graceful shutdown).
    Left,
}

impl Status {
    /// `up`, `suspect`, `down` or `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Suspect => "suspect",
            Status::Down => "down",
            Status::Left => "left",
        }
    }
}

/// One member of the cluster as this node sees it (itself included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its name: unique among live members.
    pub name: String,
    /// The id of the run this entry is about.
    pub id: NodeId,
    /// When that run started (ms since the Unix epoch); a larger one replaces a smaller one.
    pub incarnation: u64,
    /// Where it listens.
    pub addr: Option<SocketAddr>,
    /// Its status.
    pub status: Status,
}

/// A change in membership, as published by [`crate::Node::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A node is up: newly joined, back after being lost, or restarted (a new id).
    NodeUp(Member),
    /// A node was lost for longer than `down_after`.
    NodeDown(Member),
    /// A node left gracefully.
    NodeLeft(Member),
}

/// What gossip says about one member: enough to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rumor {
    pub(crate) name: String,
    pub(crate) id: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) addr: SocketAddr,
}

/// At most this many rumors are taken from one gossip message.
const MAX_RUMORS: usize = 1024;

/// At most this many dials to members heard of by gossip or beacons run at once.
const MAX_GOSSIP_DIALS: usize = 16;

/// A request for the current view.
type Snapshot = oneshot::Sender<Vec<Member>>;

/// Handle to the membership actor; cheap to clone.
#[derive(Clone)]
pub(crate) struct Membership {
    /// Snapshot requests. Unbounded: bounded by the callers awaiting them.
    tx: mpsc::UnboundedSender<Snapshot>,
    /// Gossip from peers: bounded, and dropped when full (it is repeated every heartbeat).
    gossip: mpsc::Sender<Vec<Rumor>>,
    events: broadcast::Sender<MemberEvent>,
}

impl Membership {
    /// Starts the actor on `tasks`: it follows `links` through their events and stops when
    /// `stop` is cancelled.
    pub(crate) fn start(
        me: Member,
        links: Links,
        link_events: mpsc::UnboundedReceiver<LinkEvent>,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> Membership {
        let (tx, rx) = mpsc::unbounded_channel();
        let (gossip, gossip_rx) = mpsc::channel(64);
        let (events, _) = broadcast::channel(256);
        let config = links.config();
        let actor = Actor {
            view: View::new(me, config.down_after),
            heartbeat: config.heartbeat,
            reconnect_max: config.reconnect_max,
            links,
            tasks: tasks.clone(),
            events: events.clone(),
            redials: HashMap::new(),
            dialing: HashSet::new(),
            stop: stop.clone(),
        };
        tasks.spawn(actor.run(rx, link_events, gossip_rx));
        Membership { tx, gossip, events }
    }

    pub(crate) fn heard(&self, mut rumors: Vec<Rumor>) {
        rumors.truncate(MAX_RUMORS);
        let _ = self.gossip.try_send(rumors); // full: the next round carries the same news
    }

    /// The current view; empty once the node has stopped.
    pub(crate) async fn members(&self) -> Vec<Member> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(reply).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }
}

struct Actor {
    view: View,
    links: Links,
    /// Dials and redials run here.
    tasks: TaskTracker,
    events: broadcast::Sender<MemberEvent>,
    /// Redial loops of lost members, by name; cancelled when the member is back or has left.
    redials: HashMap<String, CancellationToken>,
    /// Addresses being dialed because of gossip, so a rumor repeated every round is dialed once.
    dialing: HashSet<SocketAddr>,
    heartbeat: Duration,
    reconnect_max: Duration,
    stop: CancellationToken,
}

/// Results of gossip dials come back as this, so the actor can forget the address.
type DialDone = SocketAddr;

impl Actor {
    async fn run(
        mut self,
        mut snapshots: mpsc::UnboundedReceiver<Snapshot>,
        mut link_events: mpsc::UnboundedReceiver<LinkEvent>,
        mut gossip: mpsc::Receiver<Vec<Rumor>>,
    ) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<DialDone>();
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                event = link_events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                Some(reply) = snapshots.recv() => {
                    let _ = reply.send(self.view.members()); // the asker gave up
                }
                Some(addr) = done_rx.recv() => { self.dialing.remove(&addr); }
                Some(rumors) = gossip.recv() => self.hear(rumors, &done_tx),
                _ = tick.tick() => {
                    let now = Instant::now();
                    for event in self.view.tick(now) {
                        self.publish(event);
                    }
                    for name in self.view.forget(now) {
                        debug!(member = %name, "forgot a member gone for long");
                        if let Some(token) = self.redials.remove(&name) {
                            token.cancel();
                        }
                    }
                    self.gossip_to_one();
                }
            }
        }
        for token in self.redials.values() {
            token.cancel();
        }
    }

    fn handle(&mut self, event: LinkEvent) {
        let now = Instant::now();
        match event {
            LinkEvent::Up(peer, conn_id) => {
                // The link may have closed again before this message arrived: only a link
                // that is still registered makes a member up.
                let registered = self.links.peers().get(peer.id);
                if registered.is_none_or(|conn| conn.shared.conn_id != conn_id) {
                    return;
                }
                if let Some(token) = self.redials.remove(&peer.name) {
                    token.cancel();
                }
                if let Some(event) = self.view.linked(&peer, now) {
                    self.publish(event);
                }
                // Tell the new peer whom we know; it does the same, so both learn.
                self.gossip_to(peer.id);
            }
            LinkEvent::Down(peer, why) => {
                // A new link may have replaced the closed one before this message arrived.
                let relinked = self.links.peers().get(peer.id).is_some();
                if relinked {
                    return;
                }
                let (event, redial) = self.view.unlinked(&peer, &why, now);
                if let Some(event) = event {
                    self.publish(event);
                }
                if let Some(Member {
                    status: Status::Left,
                    ..
                }) = self.view.get(&peer.name)
                {
                    if let Some(token) = self.redials.remove(&peer.name) {
                        token.cancel();
                    }
                }
                if redial {
                    if let Some(addr) = peer.addr {
                        info!(peer = %peer.name, reason = %why, "member suspect");
                        self.redial(peer.name, addr);
                    }
                }
            }
        }
    }

    fn publish(&self, event: MemberEvent) {
        match &event {
            MemberEvent::NodeUp(m) => {
                info!(member = %m.name, id = %m.id, addr = %ShowAddr(m.addr), "member up")
            }
            MemberEvent::NodeDown(m) => {
                warn!(member = %m.name, id = %m.id, addr = %ShowAddr(m.addr), "member down")
            }
            MemberEvent::NodeLeft(m) => {
                info!(member = %m.name, id = %m.id, addr = %ShowAddr(m.addr), "member left")
            }
        }
        let _ = self.events.send(event); // no subscriber
    }

    /// Dials members we heard of and have no link to.
    fn hear(&mut self, rumors: Vec<Rumor>, done: &mpsc::UnboundedSender<DialDone>) {
        for rumor in rumors {
            // At most MAX_GOSSIP_DIALS at once: a flood of made-up rumors costs dropped
            // rumors, not sockets; the real ones come back next round.
            if self.dialing.len() >= MAX_GOSSIP_DIALS
                || !self.view.is_news(&rumor)
                || self.links.peers().get(rumor.id).is_some()
                || !self.dialing.insert(rumor.addr)
            {
                continue;
            }
            debug!(member = %rumor.name, addr = %rumor.addr, "heard of a member; dialing it");
            let (links, done) = (self.links.clone(), done.clone());
            self.tasks.spawn(async move {
                if let Err(error) = links.dial_unless_stopping(rumor.addr).await {
                    debug!(member = %rumor.name, %error, "could not reach a member we heard of");
                }
                let _ = done.send(rumor.addr); // the actor stopped
            });
        }
    }

    /// Redials a lost member with capped, jittered exponential backoff until it is linked
    /// again (cancelled then), it leaves, or the node stops.
    fn redial(&mut self, name: String, addr: SocketAddr) {
        if self.redials.get(&name).is_some_and(|t| !t.is_cancelled()) {
            return;
        }
        let token = self.stop.child_token();
        self.redials.insert(name.clone(), token.clone());
        let (links, max) = (self.links.clone(), self.reconnect_max);
        self.tasks.spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff + jitter) => {}
                }
                match links.dial_unless_stopping(addr).await {
                    // `dial` reports new links itself; this covers a link that came back
                    // another way (the peer dialed us) while we were waiting.
                    Ok(conn) => return links.report_up(&conn),
                    Err(error) => debug!(member = %name, %error, "redial failed"),
                }
                backoff = (backoff * 2).min(max);
            }
        });
    }

    /// Sends our rumors to one random peer: news spreads even when links are stable.
    fn gossip_to_one(&self) {
        let links = self.links.peers().list();
        if links.is_empty() {
            return;
        }
        let pick = rand::random::<u64>() as usize % links.len();
        self.gossip_to(links[pick].peer().id);
    }

    fn gossip_to(&self, id: NodeId) {
        if let Some(conn) = self.links.peers().get(id) {
            let _ = conn.cast("system.gossip", Encoding::Bincode, &self.view.rumors());
            // link closing
        }
    }
}

/// One line of `system.members` and `meshrpc members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    /// The member's name.
    pub name: String,
    /// Where it listens (`host:port`).
    pub addr: String,
    /// `up`, `suspect`, `down` or `left`.
    pub status: Status,
    /// The id of its current run, in hex.
    pub id: String,
}

impl From<&Member> for MemberSummary {
    fn from(m: &Member) -> Self {
        MemberSummary {
            name: m.name.clone(),
            addr: m.addr.map(|a| a.to_string()).unwrap_or_default(),
            status: m.status,
            id: m.id.to_string(),
        }
    }
}
