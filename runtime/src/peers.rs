//! The registry of live links to other nodes: at most one per peer, found by id, address or
//! name. Written by the handshake code (admission) and by links as they close; read by every
//! call that names a peer.
//!
//! Two nodes may dial each other at the same moment. One rule decides which link survives,
//! applied the same way on both sides (as Erlang's distribution does): of two links between
//! the same pair, keep the one dialed by the node with the lower id; of two dialed by the same
//! node, keep the newer (the dialer only dials when it has lost the older one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::connection::Connection;
use crate::wire::{NodeId, Verdict};
use crate::PeerInfo;

/// See the module doc.
pub(crate) struct Peers {
    me: NodeId,
    by_id: DashMap<NodeId, Connection>,
    by_addr: DashMap<SocketAddr, NodeId>,
    /// Addresses this node is dialing right now (with how many dials), for the tie-break.
    dialing: Mutex<HashMap<SocketAddr, usize>>,
    /// Admission decisions (check, then insert) happen under this lock, so two handshakes for
    /// one peer cannot both win. Held only for synchronous work.
    decide: Mutex<()>,
    /// Woken on every insertion, for dialers told to use the other link.
    changed: Notify,
}

impl Peers {
    pub(crate) fn new(me: NodeId) -> Self {
        Peers {
            me,
            by_id: DashMap::new(),
            by_addr: DashMap::new(),
            dialing: Mutex::new(HashMap::new()),
            decide: Mutex::new(()),
            changed: Notify::new(),
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
            old.close("replaced by a newer link");
        }
        if let Some(addr) = peer.addr {
            self.by_addr.insert(addr, peer.id);
        }
        self.changed.notify_waiters();
    }

    /// Forgets `conn` if it is still the registered link to its peer.
    pub(crate) fn remove(&self, conn: &Connection) {
        let _decide = self.decide.lock().unwrap_or_else(|e| e.into_inner());
        let peer = conn.peer();
        let removed = self
            .by_id
            .remove_if(&peer.id, |_, c| c.shared.conn_id == conn.shared.conn_id);
        if removed.is_some() {
            if let Some(addr) = peer.addr {
                self.by_addr.remove_if(&addr, |_, id| *id == peer.id);
            }
        }
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

    fn is_dialing(&self, addr: SocketAddr) -> bool {
        self.dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&addr)
    }

    /// Marks `addr` as being dialed until the guard drops.
    pub(crate) fn dialing(&self, addr: SocketAddr) -> DialingGuard<'_> {
        *self
            .dialing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default() += 1;
        DialingGuard { peers: self, addr }
    }

    /// Closes every link (node shutdown).
    pub(crate) fn close_all(&self, reason: &str) {
        for conn in self.list() {
            conn.close(reason);
        }
    }
}

/// Holds the admission lock; see the module doc for the rule it applies.
pub(crate) struct Admission<'a> {
    peers: &'a Peers,
    _decide: MutexGuard<'a, ()>,
}

impl Admission<'_> {
    /// The verdict on a link `peer` dialed; on `Accept` the caller starts it and [`Self::insert`]s it.
    pub(crate) fn inbound_verdict(&self, peer: &PeerInfo) -> Verdict {
        let peers = self.peers;
        let keep_existing = match peers.get(peer.id) {
            // Same dialer twice: it lost the older link.
            Some(existing) if !existing.shared.outbound => false,
            // Both dialed: the lower id's link wins.
            Some(_) => peers.me < peer.id,
            None => {
                let dialing_them = peer.addr.is_some_and(|addr| peers.is_dialing(addr));
                dialing_them && peers.me < peer.id
            }
        };
        if keep_existing {
            Verdict::Duplicate
        } else {
            Verdict::Accept
        }
    }

    /// Registers `conn`, closing the link it replaces.
    pub(crate) fn insert(&self, conn: Connection) {
        self.peers.insert(conn);
    }

    /// Registers a link this node dialed and the peer accepted; returns the link to use, which
    /// is the existing one when that wins the tie-break (the new one is then closed).
    pub(crate) fn outbound(&self, conn: Connection) -> Connection {
        if let Some(existing) = self.peers.get(conn.peer().id) {
            if !existing.shared.outbound && conn.peer().id < self.peers.me {
                conn.close("duplicate link: keeping the one the peer dialed");
                return existing;
            }
        }
        self.peers.insert(conn.clone());
        conn
    }
}

/// See [`Peers::dialing`].
pub(crate) struct DialingGuard<'a> {
    peers: &'a Peers,
    addr: SocketAddr,
}

impl Drop for DialingGuard<'_> {
    fn drop(&mut self) {
        let mut dialing = self.peers.dialing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = dialing.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                dialing.remove(&self.addr);
            }
        }
    }
}
