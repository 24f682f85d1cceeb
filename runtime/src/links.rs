//! Finding, opening and accepting a node's links: [`Core::link`] resolves a [`Target`] to a
//! live link (dialing when needed), [`accept_loop`] and `admit` run the acceptor's side, and
//! [`seed_loop`] keeps the node linked to its seeds. Admission decisions are in
//! [`crate::peers`]; the handshake's bytes in [`crate::transport`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::client::Target;
use crate::connection::{Closed, Connection, Parts};
use crate::node::Core;
use crate::peers::DialStart;
use crate::transport::{self, HandshakeFailure, Introduced, Local, Socket};
use crate::wire::{Identity, Verdict};
use crate::RpcError;

impl Core {
    pub(crate) fn local(&self) -> Local<'_> {
        Local {
            identity: &self.identity,
            cookie: self.config.cookie.as_deref(),
            timeout: self.config.handshake_timeout,
            tls: self.tls.as_ref(),
        }
    }

    /// Finds or opens the link to `to`.
    pub(crate) async fn link(self: &Arc<Self>, to: Target) -> Result<Connection, RpcError> {
        if self.closing() {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        let unknown = |reason: &str| RpcError::PeerUnavailable {
            peer: to.to_string(),
            reason: reason.to_owned(),
        };
        match &to {
            Target::Id(id) => self
                .peers
                .get(*id)
                .ok_or_else(|| unknown("no live link to that id")),
            Target::Addr(addr) => self.dial(*addr).await,
            Target::Name(name) => {
                if let Some(conn) = self.peers.by_name(name) {
                    return Ok(conn);
                }
                if !name.contains(':') {
                    return Err(unknown("no connected peer has that name"));
                }
                let mut last = unknown("the name resolved to no address");
                for addr in resolve(name).await.map_err(|e| unknown(&e))? {
                    match self.dial(addr).await {
                        Ok(conn) => return Ok(conn),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// [`Core::dial`], abandoned when the node starts shutting down: for dials nobody waits
    /// on (gossip, redials), so they cannot hold up a shutdown.
    pub(crate) async fn dial_unless_stopping(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<Connection, RpcError> {
        tokio::select! {
            _ = self.intake.cancelled() => Err(RpcError::Shutdown("this node is shutting down".to_owned())),
            result = self.dial(addr) => result,
        }
    }

    /// Returns the link to the node listening at `addr`, dialing it if there is none.
    pub(crate) async fn dial(self: &Arc<Self>, addr: SocketAddr) -> Result<Connection, RpcError> {
        if let Some(conn) = self.peers.by_addr(addr) {
            return Ok(conn);
        }
        let lock = self.dial_locks.entry(addr).or_default().clone();
        let result = {
            let _one_dial_per_address = lock.lock().await;
            self.dial_locked(addr).await
        };
        drop(lock);
        // Forget the lock unless another dial to the same address holds it.
        self.dial_locks
            .remove_if(&addr, |_, lock| Arc::strong_count(lock) == 1);
        result
    }

    async fn dial_locked(self: &Arc<Self>, addr: SocketAddr) -> Result<Connection, RpcError> {
        if let Some(conn) = self.peers.by_addr(addr) {
            return Ok(conn);
        }
        if self.closing() {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        let cfg = &self.config;
        let mut socket = transport::connect(addr, cfg.connect_timeout, self.local()).await?;
        let greeting = transport::read_greeting(&mut socket, self.local()).await?;
        let them = &greeting.identity;
        let unavailable = |reason: String| RpcError::PeerUnavailable {
            peer: addr.to_string(),
            reason,
        };
        if them.id == self.identity.id {
            return Err(unavailable("that is this node's own address".to_owned()));
        }
        // Checked and marked under the admission lock, so a link the peer is opening to us
        // at the same moment is either seen here or sees our dial (and the tie-break).
        let start = self.peers.admission().begin_dial(them);
        let _dialing = match start {
            DialStart::Linked(conn) => {
                // Already linked (this address is another name for it): hang up before
                // saying anything, so the peer registers nothing.
                self.peers.alias(addr, them.id);
                return Ok(conn);
            }
            DialStart::NameTaken(holder) => {
                return Err(unavailable(name_conflict(&them.name, holder)))
            }
            DialStart::InProgress => return self.wait_for_link(addr, them).await,
            DialStart::Go(guard) => guard,
        };
        if !transport::introduce(&mut socket, self.local(), &greeting).await? {
            return self.wait_for_link(addr, them).await;
        }
        let conn = self.start_link(socket, them, true, None);
        let admission = self.peers.admission();
        let conn = admission.outbound(conn).ok_or_else(|| {
            unavailable("the link closed during the handshake, or this node is stopping".to_owned())
        })?;
        self.membership.linked(&conn);
        drop(admission);
        self.peers.alias(addr, them.id);
        Ok(conn)
    }

    /// The peer keeps (or is completing) another link to us: wait for it to register.
    async fn wait_for_link(
        &self,
        addr: SocketAddr,
        them: &Identity,
    ) -> Result<Connection, RpcError> {
        let conn = self
            .peers
            .wait_for(them.id, self.config.handshake_timeout)
            .await
            .ok_or_else(|| RpcError::PeerUnavailable {
                peer: addr.to_string(),
                reason: format!(
                    "{} kept another link to this node, which never completed",
                    them.name
                ),
            })?;
        self.peers.alias(addr, them.id);
        Ok(conn)
    }

    fn start_link(
        self: &Arc<Self>,
        socket: Socket,
        them: &Identity,
        outbound: bool,
        first: Option<Bytes>,
    ) -> Connection {
        let peer = transport::peer_info(them, socket.remote);
        let is_client = peer.addr.is_none();
        let cfg = &self.config;
        let parts = Parts {
            socket,
            peer,
            conn_id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            outbound,
            max_frame: cfg.max_frame.min(them.max_frame as usize),
            max_frame_in: cfg.max_frame,
            heartbeat: cfg.heartbeat,
            silence: cfg.down_after,
        };
        let weak = Arc::downgrade(self);
        let token = self.root.child_token();
        let conn = Connection::start(parts, first, self.serve.clone(), token, move |conn, why| {
            if let Some(core) = weak.upgrade() {
                core.link_closed(conn, why);
            }
        });
        if is_client {
            self.clients.insert(conn.shared.conn_id, conn.clone());
        } else {
            let peer = conn.peer();
            info!(peer = %peer.name, id = %peer.id, addr = ?peer.addr, outbound, "link up");
        }
        conn
    }

    fn link_closed(&self, conn: &Connection, why: &Closed) {
        self.clients.remove(&conn.shared.conn_id);
        // Only the registered link's end is news: a link replaced by the tie-break is not.
        if self.peers.remove(conn) {
            info!(peer = %conn.peer().name, reason = %why, "link down");
            self.membership.unlinked(conn.peer(), why);
        }
    }

    /// Runs the acceptor's side of the handshake on a new socket.
    async fn admit(self: Arc<Self>, stream: TcpStream) {
        let mut introduced = match transport::accept(stream, self.local()).await {
            Ok(introduced) => introduced,
            Err(HandshakeFailure::Closed) => {
                return debug!("a dialer hung up during the handshake")
            }
            Err(HandshakeFailure::Failed(reason)) => return warn!(%reason, "handshake failed"),
        };
        let them = introduced.hello.identity.clone();
        if let Some(reason) = self.refusal(&them) {
            warn!(peer = %them.name, %reason, "refused a link");
            let _ = transport::refuse(&mut introduced, self.local(), Verdict::Refuse(reason)).await; // best effort
            return;
        }
        let accept = match transport::welcome(self.local(), &introduced.transcript, Verdict::Accept)
        {
            Ok(frame) => frame,
            Err(reason) => return warn!(%reason, "cannot encode the handshake reply"),
        };
        let Introduced { socket, .. } = introduced;
        if them.listen.is_none() {
            self.start_link(socket, &them, false, Some(accept));
            return;
        }
        let peer = transport::peer_info(&them, socket.remote);
        let verdict = {
            let admission = self.peers.admission();
            let verdict = admission.inbound_verdict(&peer);
            if verdict == Verdict::Accept {
                let conn = self.start_link(socket, &them, false, Some(accept));
                if admission.insert(conn.clone()) {
                    self.membership.linked(&conn);
                }
                return;
            }
            verdict
        };
        debug!(peer = %peer.name, "simultaneous dial: keeping the other link");
        let mut introduced = Introduced {
            socket,
            hello: introduced.hello,
            transcript: introduced.transcript,
        };
        let _ = transport::refuse(&mut introduced, self.local(), verdict).await;
        // best effort
    }

    /// Why a dialer must be turned away, if it must.
    fn refusal(&self, them: &Identity) -> Option<String> {
        if self.closing() {
            return Some("the node is shutting down".to_owned());
        }
        if them.id == self.identity.id {
            return Some("the dialer has this node's own id".to_owned());
        }
        if them.listen.is_some() && them.name == self.identity.name {
            return Some(format!("name `{}` is this node's own name", them.name));
        }
        let other = self
            .peers
            .by_name(&them.name)
            .filter(|other| other.peer().id != them.id)?;
        (them.listen.is_some()).then(|| name_conflict(&them.name, other.peer().id))
    }
}

fn name_conflict(name: &str, holder: crate::NodeId) -> String {
    format!("name `{name}` is already used by live node {holder}")
}

async fn resolve(host_port: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs = tokio::net::lookup_host(host_port)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?;
    Ok(addrs.collect())
}

pub(crate) async fn accept_loop(core: Arc<Core>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = core.intake.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                core.serve.tasks.spawn(core.clone().admit(stream));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Keeps links to every address a seed resolves to (a DNS name may stand for many nodes):
/// dials with exponential backoff and jitter, capped at `reconnect_max`, waits while linked,
/// and starts over when a link drops, until the node stops.
pub(crate) async fn seed_loop(core: Weak<Core>, seed: String) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(node) = core.upgrade() else { return };
        if node.closing() {
            return;
        }
        let intake = node.intake.clone();
        let max = node.config.reconnect_max;
        let linked = link_all(&node, &seed).await;
        drop(node);
        if linked.is_empty() {
            let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
            tokio::select! {
                _ = intake.cancelled() => return,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(max);
        } else {
            backoff = Duration::from_millis(50);
            let any_closed =
                futures_util::future::select_all(linked.iter().map(|c| Box::pin(c.closed())));
            tokio::select! {
                _ = intake.cancelled() => return,
                _ = any_closed => {}
            }
        }
    }
}

/// Dials every address `seed` resolves to; returns the links it has.
async fn link_all(core: &Arc<Core>, seed: &str) -> Vec<Connection> {
    let addrs = match resolve(seed).await {
        Ok(addrs) => addrs,
        Err(error) => {
            debug!(%seed, %error, "seed not resolvable yet");
            return Vec::new();
        }
    };
    let dials = addrs.into_iter().map(|addr| core.dial(addr));
    let mut linked = Vec::new();
    for result in futures_util::future::join_all(dials).await {
        match result {
            Ok(conn) => linked.push(conn),
            // A refusal will not go away by itself: say it where an operator looks.
            Err(error @ RpcError::Refused { .. }) => warn!(%seed, %error, "seed refused this node"),
            Err(error) => debug!(%seed, %error, "seed not reachable yet"),
        }
    }
    linked
}
