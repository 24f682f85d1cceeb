//! Who is in the cluster, as this node sees it: SWIM (the `foca` crate) over UDP on the
//! node's port, run by one actor ([`swim`]); a pure [`view`] that turns foca's member states
//! into statuses and events; and the [`Directory`], the latest view, which links and callers
//! read without asking the actor.
//!
//! The actor hears datagrams from other members, its timers, and requests to announce to an
//! address (seeds, beacons) or to leave. It publishes [`MemberEvent`]s on a broadcast channel
//! and stops with the node (or after leaving). Status rules are in docs/MEMBERSHIP.md.

mod health;
pub(crate) mod hosting;
mod swim;
mod timing;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::wire::NodeId;

pub(crate) use hosting::Hosting;

pub(crate) use swim::{start, SwimStart};
pub use timing::{swim_config, transmissions};

/// A member's status in this node's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// It answers membership probes (directly, or through other members).
    Up,
    /// A probe went unanswered: it stays suspect for `down_after` unless it proves it is
    /// alive (members keep its keys and route to it meanwhile).
    Suspect,
    /// Suspect for longer than `down_after`: the cluster considers it failed.
    Down,
    /// It announced that it was leaving (a graceful shutdown).
    Left,
}

impl MemberStatus {
    /// `up`, `suspect`, `down` or `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Up => "up",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Down => "down",
            MemberStatus::Left => "left",
        }
    }

    /// Up or suspect: still a member calls may go to.
    pub fn is_live(self) -> bool {
        matches!(self, MemberStatus::Up | MemberStatus::Suspect)
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
    /// Where it listens (TCP for calls, UDP for membership, one port).
    pub addr: Option<SocketAddr>,
    /// Its status.
    pub status: MemberStatus,
}

/// A change in membership, as published by [`crate::node::Node::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A node is up: newly joined, back after being lost, or restarted (a new id).
    NodeUp(Member),
    /// A node was lost for longer than `down_after`.
    NodeDown(Member),
    /// A node left gracefully.
    NodeLeft(Member),
}

/// One line of `system.members` and `meshrpc members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberSummary {
    /// The member's name.
    pub name: String,
    /// Where it listens (`host:port`).
    pub addr: String,
    /// `up`, `suspect`, `down` or `left`.
    pub status: MemberStatus,
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

/// The latest view of the cluster, readable anywhere without a round trip to the actor;
/// cheap to clone. Written only by the membership actor.
#[derive(Clone)]
pub(crate) struct Directory {
    current: Arc<RwLock<Arc<Snapshot>>>,
    /// The version of the latest snapshot, for whoever waits for a change.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            current: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

/// One view: every member (one entry per name, the run that matters), sorted by name, and
/// what each live member hosts.
///
/// A big cluster's join storm publishes a view every second or so on every node, so it is
/// built without hashing or copying names: lookups by name search `members`, lookups by id
/// search `by_id`, both sorted.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) members: Vec<Member>,
    /// (id, index in `members`), sorted by id.
    by_id: Vec<(NodeId, u32)>,
    /// Virtual-actor type → the live (`up` or `suspect`) members hosting it, by id.
    types: HashMap<String, Arc<[Host]>>,
    /// Group → its live members.
    groups: HashMap<String, Arc<[GroupMember]>>,
    /// Counts publishes: a cache keyed by it is stale once it changes.
    pub(crate) version: u64,
}

/// A live member that hosts a virtual-actor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Host {
    pub(crate) id: NodeId,
    pub(crate) addr: SocketAddr,
}

/// A live member of a process group: a node, or an actor on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMember {
    pub(crate) node: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) actor: Option<String>,
}

impl Snapshot {
    /// Adds what each member hosts (entries of members not live are left out) and the
    /// publish count.
    ///
    /// Many members host the same few types and groups: names are compared, not hashed, and
    /// copied once per name, not once per member; taken in id order, the entries come out
    /// sorted without sorting each list.
    pub(crate) fn add_hosting(&mut self, hosting: &mut [(NodeId, Arc<Hosting>)], version: u64) {
        self.version = version;
        hosting.sort_unstable_by_key(|(id, _)| *id);
        let mut types: BTreeMap<&str, Vec<Host>> = BTreeMap::new();
        let mut groups: BTreeMap<&str, Vec<GroupMember>> = BTreeMap::new();
        for (id, entry) in hosting.iter() {
            let Some(member) = self.by_id(*id) else {
                continue;
            };
            let (true, Some(addr)) = (member.status.is_live(), member.addr) else {
                continue;
            };
            for t in &entry.types {
                let host = Host { id: *id, addr };
                types.entry(t.as_str()).or_default().push(host);
            }
            // A node sorts its entry's groups by (group, actor), so each group's members
            // come out sorted by (node, actor) (checked below: entries come off the wire).
            for (g, actor) in &entry.groups {
                let member = GroupMember {
                    node: *id,
                    addr,
                    actor: actor.clone(),
                };
                groups.entry(g.as_str()).or_default().push(member);
            }
        }
        self.types = (types.into_iter())
            .map(|(t, hosts)| (t.to_owned(), hosts.into()))
            .collect();
        self.groups = (groups.into_iter())
            .map(|(g, mut members)| {
                let order =
                    |a: &GroupMember, b: &GroupMember| (a.node, &a.actor).cmp(&(b.node, &b.actor));
                if !members.is_sorted_by(|a, b| order(a, b).is_le()) {
                    members.sort_by(order);
                }
                (g.to_owned(), members.into())
            })
            .collect();
    }

    /// The live members hosting virtual-actor type `name`, sorted by id.
    pub(crate) fn hosts(&self, name: &str) -> Arc<[Host]> {
        self.types
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new([]))
    }

    /// The live members of group `name`.
    pub(crate) fn group(&self, name: &str) -> Arc<[GroupMember]> {
        self.groups
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new([]))
    }

    pub(crate) fn new(mut members: Vec<Member>) -> Self {
        if !members.is_sorted_by(|a, b| a.name <= b.name) {
            members.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut by_id: Vec<(NodeId, u32)> = (members.iter().map(|m| m.id)).zip(0..).collect();
        by_id.sort_unstable();
        Snapshot {
            members,
            by_id,
            ..Snapshot::default()
        }
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Member> {
        let i = self
            .members
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()?;
        self.members.get(i)
    }

    pub(crate) fn by_id(&self, id: NodeId) -> Option<&Member> {
        let i = self.by_id.binary_search_by_key(&id, |(id, _)| *id).ok()?;
        self.members.get(self.by_id[i].1 as usize)
    }
}

impl Directory {
    /// `f` of the live hosts of type `kind`, read in place under the view's lock, with no
    /// count taken on the view (placing a key is the hot path of every virtual-actor call,
    /// on both sides). `f` must not wait.
    pub(crate) fn with_hosts<R>(&self, kind: &str, f: impl FnOnce(&[Host]) -> R) -> R {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        f(current.types.get(kind).map_or(&[], |hosts| hosts))
    }

    /// The current view.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current view's version: it changes with every view published.
    pub(crate) fn version(&self) -> u64 {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version
    }

    /// Changes each time a new snapshot is published.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn publish(&self, snapshot: Snapshot) {
        let version = snapshot.version;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        self.changes.send_replace(version);
    }
}

/// What the actor is asked to do.
enum Cmd {
    /// Say hello to whoever listens at these addresses (seeds, beacons).
    Announce(Vec<SocketAddr>),
    /// Tell every member this node leaves, then stop answering; the reply comes when the
    /// goodbyes are out.
    Leave(oneshot::Sender<()>),
    /// Every member foca knows, with its state, and what each hosts (for a state sync).
    State(oneshot::Sender<SyncState>),
    /// What another node knows (a state sync): foca and the hosting table take what is news;
    /// the reply says how many members were new to this node.
    Apply(SyncState, oneshot::Sender<usize>),
    /// This node now hosts these types and belongs to these groups: spread it.
    Host {
        types: Vec<String>,
        groups: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A member as SWIM knows it: its identity, SWIM incarnation and state.
pub(crate) type SwimMember = foca::Member<crate::wire::swim::SwimId>;

/// What two nodes swap in a state sync.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SyncState {
    pub(crate) members: Vec<SwimMember>,
    pub(crate) hosting: Vec<Hosting>,
}

/// Handle to the membership actor; cheap to clone.
#[derive(Clone)]
pub(crate) struct Membership {
    /// Bounded: announces are repeated by their senders, and a leave is sent once.
    tx: mpsc::Sender<Cmd>,
    events: broadcast::Sender<MemberEvent>,
    directory: Directory,
    /// How many other members are up or suspect.
    active: watch::Receiver<usize>,
    /// How many times the failure detector's timers are stretched (1: not at all; see
    /// `health`), as of the last probe period.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
    stretch: Arc<AtomicU32>,
    /// Why a member refused this node before it joined, once one did.
    refused: watch::Receiver<Option<String>>,
}

impl Membership {
    /// The current view, itself included, sorted by name.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.directory.snapshot().members.clone()
    }

    pub(crate) fn directory(&self) -> &Directory {
        &self.directory
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    /// How many other members are live, as it changes.
    pub(crate) fn active(&self) -> watch::Receiver<usize> {
        self.active.clone()
    }

    /// How many times this node's failure detector is stretched because it runs late (1: it
    /// keeps time).
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
    pub(crate) fn stretch(&self) -> u32 {
        self.stretch.load(Ordering::Relaxed)
    }

    /// Resolves with the reason once a member refuses this node before it has joined.
    pub(crate) async fn refused(&self) -> String {
        let mut refused = self.refused.clone();
        let reason = match refused.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None, // the actor stopped
        };
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Announces this node to `addrs`; dropped when the actor is busy (the caller repeats).
    pub(crate) fn announce(&self, addrs: Vec<SocketAddr>) {
        let _ = self.tx.try_send(Cmd::Announce(addrs)); // full or stopped: next round
    }

    /// Every member SWIM knows, with its state, and what each hosts; empty once the actor
    /// has stopped.
    pub(crate) async fn state(&self) -> SyncState {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::State(reply)).await.is_err() {
            return SyncState::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Hands what another node knows to SWIM and the hosting table, which keep what is news;
    /// returns how many members were new to this node (0 once the actor has stopped).
    pub(crate) async fn apply(&self, state: SyncState) -> usize {
        let (reply, news) = oneshot::channel();
        if self.tx.send(Cmd::Apply(state, reply)).await.is_err() {
            return 0; // stopped: nothing to learn
        }
        news.await.unwrap_or(0)
    }

    /// Tells the cluster which virtual-actor types this node hosts and which groups it
    /// belongs to (replacing what it said before).
    ///
    /// # Errors
    /// If it is too much to spread in one datagram, or membership has stopped.
    pub(crate) async fn host(
        &self,
        types: Vec<String>,
        groups: Vec<(String, Option<String>)>,
    ) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Host {
            types,
            groups,
            reply,
        };
        if self.tx.send(cmd).await.is_err() {
            return Err("membership has stopped".to_owned());
        }
        rx.await
            .unwrap_or_else(|_| Err("membership has stopped".to_owned()))
    }

    /// Tells the cluster this node leaves; returns when the goodbyes are sent (or the actor
    /// is gone).
    pub(crate) async fn leave(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Cmd::Leave(reply)).await.is_ok() {
            let _ = done.await; // the actor stopped first
        }
    }
}

/// A membership handle with no actor behind it, for tests of what uses one: the test sets
/// the view and sees what the handle was asked to announce.
#[cfg(test)]
pub(crate) struct Fake {
    cmds: mpsc::Receiver<Cmd>,
    active: watch::Sender<usize>,
    directory: Directory,
    publishes: u64,
}

#[cfg(test)]
impl Membership {
    pub(crate) fn fake() -> (Membership, Fake) {
        let (tx, cmds) = mpsc::channel(64);
        let (active_tx, active) = watch::channel(0);
        let directory = Directory::default();
        let handle = Membership {
            tx,
            events: broadcast::channel(16).0,
            directory: directory.clone(),
            active,
            stretch: Arc::new(AtomicU32::new(1)),
            refused: watch::channel(None).1,
        };
        let fake = Fake {
            cmds,
            active: active_tx,
            directory,
            publishes: 0,
        };
        (handle, fake)
    }
}

#[cfg(test)]
impl Fake {
    /// Publishes `members` as the view (this node among them) with `live` other live members.
    pub(crate) fn set_view(&mut self, members: Vec<Member>, live: usize) {
        self.publishes += 1;
        let mut snapshot = Snapshot::new(members);
        snapshot.add_hosting(&mut [], self.publishes);
        self.directory.publish(snapshot);
        self.active.send_replace(live);
    }

    /// The addresses of the next announce asked for, if one was.
    pub(crate) fn announced(&mut self) -> Option<Vec<SocketAddr>> {
        while let Ok(cmd) = self.cmds.try_recv() {
            if let Cmd::Announce(addrs) = cmd {
                return Some(addrs);
            }
        }
        None
    }
}

/// What `system.gossip` carried in earlier versions; kept so old casts decode (and are
/// refused: the method is node-only and does nothing now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rumor {
    pub(crate) name: String,
    pub(crate) id: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) addr: SocketAddr,
}
