//! The registry of live links to other nodes: at most one per peer, found by id, address or
//! name. Written by the handshake code (admission) and by links as they close; read by every
//! call that names a peer.
//!
//! Two nodes may dial each other at the same moment. One rule decides which link survives,
//! applied the same way on both sides (as Erlang's distribution does): of two links between
//! the same pair, keep the one dialed by the node with the lower id; of two dialed by the same
//! node, keep the newer (the dialer only dials when it has lost the older one).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::link::{Connection, PeerInfo};
use crate::wire::{Identity, NodeId, Verdict};

/// See the module doc.
pub(crate) struct Peers {
    me: NodeId,
    by_id: DashMap<NodeId, Connection>,
    /// Every address a peer is known by: the one it advertises and the ones we dialed it at.
    by_addr: DashMap<SocketAddr, NodeId>,
    /// Peers this node is completing a handshake with as the dialer, for the tie-break.
    dialing: Mutex<HashSet<NodeId>>,
    /// Admission decisions (check, then insert) happen under this lock, so two handshakes for
    /// one peer cannot both win. Held only for synchronous work.
    decide: Mutex<()>,
    /// Woken on every insertion, for dialers told to use the other link.
    changed: Notify,
    /// Set (under the admission lock) when the node closes every link: nothing is admitted
    /// after that, so no link escapes the goodbye.
    closed: AtomicBool,
}

impl Peers {
    pub(crate) fn new(me: NodeId) -> Self {
        Peers {
            me,
            by_id: DashMap::new(),
            by_addr: DashMap::new(),
            dialing: Mutex::new(HashSet::new()),
            decide: Mutex::new(()),
            changed: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<Connection> {
        self.by_id
            .get(&id)
            .map(|c| c.clone())
            .filter(|c| !c.is_closed())
    }

    pub(crate) fn by_addr(&self, addr: SocketAddr) -> Option<Connection> {
        let id = *self.by_addr.get(&addr)?;
        self.get(id)
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<Connection> {
        self.by_id
            .iter()
            .find(|c| c.peer().name == name && !c.is_closed())
            .map(|c| c.clone())
    }

    /// Every live link, sorted by peer name.
    /// How many links to nodes are registered (closed ones included until removed).
    pub(crate) fn count(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn list(&self) -> Vec<Connection> {
        let mut all: Vec<Connection> = self
            .by_id
            .iter()
            .filter(|c| !c.is_closed())
            .map(|c| c.clone())
            .collect();
        all.sort_by(|a, b| a.peer().name.cmp(&b.peer().name));
        all
    }

    /// Takes the admission lock: decisions about new links are made one at a time.
    pub(crate) fn admission(&self) -> Admission<'_> {
        Admission {
            peers: self,
            _decide: self.decide.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn insert(&self, conn: Connection) {
        let peer = conn.peer().clone();
        if let Some(old) = self.by_id.insert(peer.id, conn) {
            old.close("replaced by a newer link", false);
        }
        if let Some(addr) = peer.addr {
            self.by_addr.insert(addr, peer.id);
        }
        self.changed.notify_waiters();
    }

    /// Forgets `conn` if it is still the registered link to its peer; true if it was.
    pub(crate) fn remove(&self, conn: &Connection) -> bool {
        let _decide = self.decide.lock().unwrap_or_else(|e| e.into_inner());
        let peer = conn.peer();
        let removed = self.by_id.remove_if(&peer.id, |_, c| c.id() == conn.id());
        if removed.is_some() {
            self.by_addr.retain(|_, id| *id != peer.id);
        }
        removed.is_some()
    }

    /// Waits until a live link to `id` is registered, at most `timeout`.
    pub(crate) async fn wait_for(&self, id: NodeId, timeout: Duration) -> Option<Connection> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(conn) = self.get(id) {
                return Some(conn);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Remembers that `addr` (an address we dialed) reaches `id`, so later calls to that
    /// address use the link instead of dialing again.
    pub(crate) fn alias(&self, addr: SocketAddr, id: NodeId) {
        if self.get(id).is_some() {
            self.by_addr.insert(addr, id);
        }
    }

    fn is_dialing(&self, id: NodeId) -> bool {
        self.dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// Marks `id` as being dialed until the guard drops; `None` if a dial to it is already
    /// under way (the caller should wait for that one).
    pub(crate) fn dialing(&self, id: NodeId) -> Option<DialingGuard<'_>> {
        let fresh = self
            .dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        fresh.then_some(DialingGuard { peers: self, id })
    }

    /// Closes every link and admits none after (node shutdown); `leaving` tells peers the
    /// node leaves the cluster.
    pub(crate) fn close_all(&self, reason: &str, leaving: bool) {
        let _decide = self.decide.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::SeqCst);
        for conn in self.list() {
            conn.close(reason, leaving);
        }
    }
}

/// Holds the admission lock; see the module doc for the rule it applies.
pub(crate) struct Admission<'a> {
    peers: &'a Peers,
    _decide: MutexGuard<'a, ()>,
}

impl<'a> Admission<'a> {
    /// The verdict on a link `peer` dialed; on `Accept` the caller starts it and [`Self::insert`]s it.
    pub(crate) fn inbound_verdict(&self, peer: &PeerInfo) -> Verdict {
        let peers = self.peers;
        let keep_existing = match peers.get(peer.id) {
            // Same dialer twice: it lost the older link.
            Some(existing) if !existing.dialed() => false,
            // Both dialed: the lower id's link wins.
            Some(_) => peers.me < peer.id,
            None => {
                // We reached them too and are completing that handshake.
                peers.is_dialing(peer.id) && peers.me < peer.id
            }
        };
        if keep_existing {
            Verdict::Duplicate
        } else {
            Verdict::Accept
        }
    }

    /// Decides whether to go on with a dial that reached `them`: not if a link to it exists
    /// (use that), another dial to it is under way (wait for that), or a live link to
    /// another node holds its name.
    pub(crate) fn begin_dial(&self, them: &Identity) -> DialStart<'a> {
        let peers = self.peers;
        if let Some(conn) = peers.get(them.id) {
            return DialStart::Linked(conn);
        }
        if let Some(other) = peers.by_name(&them.name) {
            return DialStart::NameTaken(other.peer().id);
        }
        match peers.dialing(them.id) {
            Some(guard) => DialStart::Go(guard),
            None => DialStart::InProgress,
        }
    }

    /// Registers `conn`, closing the link it replaces; false (and `conn` closed) once the
    /// node has closed its links.
    pub(crate) fn insert(&self, conn: Connection) -> bool {
        if self.peers.closed.load(Ordering::SeqCst) {
            conn.close("the node is shutting down", true);
            return false;
        }
        self.peers.insert(conn);
        true
    }

    /// Registers a link this node dialed and the peer accepted; returns the link to use, which
    /// is the existing one when that wins the tie-break (the new one is then closed). A link
    /// that closed before it could be registered is never registered: `None` then, unless
    /// another link exists.
    pub(crate) fn outbound(&self, conn: Connection) -> Option<Connection> {
        let existing = self.peers.get(conn.peer().id);
        if let Some(existing) = &existing {
            if !existing.dialed() && conn.peer().id < self.peers.me {
                conn.close("duplicate link: keeping the one the peer dialed", false);
                return Some(existing.clone());
            }
        }
        if conn.is_closed() {
            return existing;
        }
        self.insert(conn.clone()).then_some(conn)
    }
}

/// What [`Admission::begin_dial`] decided.
pub(crate) enum DialStart<'a> {
    Linked(Connection),
    NameTaken(NodeId),
    InProgress,
    Go(DialingGuard<'a>),
}

/// See [`Peers::dialing`].
pub(crate) struct DialingGuard<'a> {
    peers: &'a Peers,
    id: NodeId,
}

impl Drop for DialingGuard<'_> {
    fn drop(&mut self) {
        self.peers
            .dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}
