//! [`Links`]: a node's links to other nodes and to plain clients — finding the link for a
//! [`Target`] (dialing when needed), the acceptor's side of new sockets, and the registry
//! they land in ([`super::peers`]). The handshake's bytes are in [`crate::link::transport`].
//!
//! Links report every registered link that comes up or closes as a [`LinkEvent`] (membership
//! listens). The accept loop stops with the intake token, at the start of shutdown; the links
//! themselves with the root token, or with [`Links::close_all`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::peers::{DialStart, Peers};
use super::target::{resolve, Target};
use super::ShowAddr;
use crate::link::tls::Tls;
use crate::link::transport::{self, HandshakeFailure, Introduced, Local, Socket};
use crate::link::{Closed, Connection, LinkCtx, LogLimit, Parts, PeerInfo};
use crate::wire::{Identity, NodeId, Verdict};
use crate::{NodeConfig, RpcError};

/// A registered link to a node came up or closed.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A link came up: who, and the connection id it is registered under.
    Up(PeerInfo, u64),
    /// The registered link to this peer closed, for this reason.
    Down(PeerInfo, Closed),
}

/// Handle to a node's links; cheap to clone.
#[derive(Clone)]
pub(crate) struct Links {
    inner: Arc<Inner>,
}

/// A handle that does not keep the links alive (for methods registered on the node).
#[derive(Clone)]
pub(crate) struct WeakLinks(Weak<Inner>);

impl WeakLinks {
    pub(crate) fn upgrade(&self) -> Option<Links> {
        self.0.upgrade().map(|inner| Links { inner })
    }
}

struct Inner {
    /// What this node says about itself in every handshake.
    identity: Identity,
    config: NodeConfig,
    tls: Option<Tls>,
    /// What every link's reader needs: the dispatcher, the bounds, the tracker.
    ctx: LinkCtx,
    peers: Peers,
    /// Links from plain clients, by connection id; closed on shutdown.
    clients: DashMap<u64, Connection>,
    /// One dial at a time per address, so concurrent callers share one link.
    dial_locks: DashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>,
    next_conn: AtomicU64,
    /// Parent of every link's token: cancelled at the end of shutdown.
    root: CancellationToken,
    /// Cancelled at the start of shutdown: no more accepting or background dialing.
    intake: CancellationToken,
    /// Where link changes are reported. Unbounded: one message per link admitted or closed.
    events: mpsc::UnboundedSender<LinkEvent>,
    /// Failed handshakes are logged at most once a second: thousands of silent or hostile
    /// sockets must not flood the log.
    failures: LogLimit,
}

impl Links {
    pub(crate) fn new(
        identity: Identity,
        config: NodeConfig,
        tls: Option<Tls>,
        ctx: LinkCtx,
        root: CancellationToken,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> Links {
        let inner = Inner {
            peers: Peers::new(identity.id),
            identity,
            config,
            tls,
            ctx,
            clients: DashMap::new(),
            dial_locks: DashMap::new(),
            next_conn: AtomicU64::new(1),
            intake: root.child_token(),
            root,
            events,
            failures: LogLimit::default(),
        };
        Links {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakLinks {
        WeakLinks(Arc::downgrade(&self.inner))
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub(crate) fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// How many plain clients are connected.
    pub(crate) fn clients(&self) -> usize {
        self.inner.clients.len()
    }

    /// Cancelled when the node stops taking new work.
    pub(crate) fn intake(&self) -> &CancellationToken {
        &self.inner.intake
    }

    fn closing(&self) -> bool {
        self.inner.ctx.limits.closing.load(Ordering::Relaxed)
    }

    fn local(&self) -> Local<'_> {
        let inner = &self.inner;
        Local {
            identity: &inner.identity,
            cookie: inner.config.cookie.as_deref(),
            timeout: inner.config.handshake_timeout,
            tls: inner.tls.as_ref(),
            probe: false,
        }
    }

    /// Finds or opens the link to `to`.
    pub(crate) async fn link(&self, to: Target) -> Result<Connection, RpcError> {
        if self.closing() {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        let unknown = |reason: &str| RpcError::PeerUnavailable {
            peer: to.to_string(),
            reason: reason.to_owned(),
        };
        match &to {
            Target::Id(id) => self
                .peers()
                .get(*id)
                .ok_or_else(|| unknown("no live link to that id")),
            Target::Addr(addr) => self.dial(*addr).await,
            Target::Name(name) => {
                if let Some(conn) = self.peers().by_name(name) {
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

    /// [`Links::dial`], abandoned when the node starts shutting down: for dials nobody waits
    /// on (gossip, redials), so they cannot hold up a shutdown.
    pub(crate) async fn dial_unless_stopping(
        &self,
        addr: SocketAddr,
    ) -> Result<Connection, RpcError> {
        tokio::select! {
            _ = self.inner.intake.cancelled() => Err(RpcError::Shutdown("this node is shutting down".to_owned())),
            result = self.dial(addr) => result,
        }
    }

    /// Returns the link to the node listening at `addr`, dialing it if there is none.
    pub(crate) async fn dial(&self, addr: SocketAddr) -> Result<Connection, RpcError> {
        if let Some(conn) = self.peers().by_addr(addr) {
            return Ok(conn);
        }
        let locks = &self.inner.dial_locks;
        let lock = locks.entry(addr).or_default().clone();
        let result = {
            let _one_dial_per_address = lock.lock().await;
            self.dial_locked(addr).await
        };
        drop(lock);
        // Forget the lock unless another dial to the same address holds it.
        locks.remove_if(&addr, |_, lock| Arc::strong_count(lock) == 1);
        result
    }

    async fn dial_locked(&self, addr: SocketAddr) -> Result<Connection, RpcError> {
        if let Some(conn) = self.peers().by_addr(addr) {
            return Ok(conn);
        }
        if self.closing() {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        let timeout = self.inner.config.connect_timeout;
        let mut socket = transport::connect(addr, timeout, self.local()).await?;
        let greeting = transport::read_greeting(&mut socket, self.local()).await?;
        let them = &greeting.identity;
        let unavailable = |reason: String| RpcError::PeerUnavailable {
            peer: addr.to_string(),
            reason,
        };
        if them.id == self.inner.identity.id {
            return Err(unavailable("that is this node's own address".to_owned()));
        }
        // Checked and marked under the admission lock, so a link the peer is opening to us
        // at the same moment is either seen here or sees our dial (and the tie-break).
        let start = self.peers().admission().begin_dial(them);
        let _dialing = match start {
            DialStart::Linked(conn) => {
                // Already linked (this address is another name for it): hang up before
                // saying anything, so the peer registers nothing.
                self.peers().alias(addr, them.id);
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
        let admission = self.peers().admission();
        let conn = admission.outbound(conn).ok_or_else(|| {
            unavailable("the link closed during the handshake, or this node is stopping".to_owned())
        })?;
        self.report_up(&conn);
        drop(admission);
        self.peers().alias(addr, them.id);
        Ok(conn)
    }

    /// Reports `conn` as up (again): membership checks that it is still the registered link.
    pub(crate) fn report_up(&self, conn: &Connection) {
        let event = LinkEvent::Up(conn.peer().clone(), conn.shared.conn_id);
        let _ = self.inner.events.send(event); // membership is gone: the node is stopping
    }

    /// The peer keeps (or is completing) another link to us: wait for it to register.
    async fn wait_for_link(
        &self,
        addr: SocketAddr,
        them: &Identity,
    ) -> Result<Connection, RpcError> {
        let conn = self
            .peers()
            .wait_for(them.id, self.inner.config.handshake_timeout)
            .await
            .ok_or_else(|| RpcError::PeerUnavailable {
                peer: addr.to_string(),
                reason: format!(
                    "{} kept another link to this node, which never completed",
                    them.name
                ),
            })?;
        self.peers().alias(addr, them.id);
        Ok(conn)
    }

    fn start_link(
        &self,
        socket: Socket,
        them: &Identity,
        outbound: bool,
        first: Option<Bytes>,
    ) -> Connection {
        let inner = &self.inner;
        let peer = transport::peer_info(them, socket.remote);
        let is_client = peer.addr.is_none();
        let cfg = &inner.config;
        let parts = Parts {
            socket,
            peer,
            conn_id: inner.next_conn.fetch_add(1, Ordering::Relaxed),
            outbound,
            max_frame: cfg.max_frame.min(them.max_frame as usize),
            max_frame_in: cfg.max_frame,
            heartbeat: cfg.heartbeat,
            silence: cfg.down_after,
        };
        let weak = self.downgrade();
        let token = inner.root.child_token();
        let ctx = inner.ctx.clone();
        let conn = Connection::start(parts, first, ctx, token, move |conn, why| {
            if let Some(links) = weak.upgrade() {
                links.closed(conn, why);
            }
        });
        if is_client {
            inner.clients.insert(conn.shared.conn_id, conn.clone());
        } else {
            let peer = conn.peer();
            info!(peer = %peer.name, id = %peer.id, addr = %ShowAddr(peer.addr), outbound, "link up");
        }
        conn
    }

    fn closed(&self, conn: &Connection, why: &Closed) {
        self.inner.clients.remove(&conn.shared.conn_id);
        // Only the registered link's end is news: a link replaced by the tie-break is not.
        if self.peers().remove(conn) {
            info!(peer = %conn.peer().name, reason = %why, "link down");
            let _ = self
                .inner
                .events
                .send(LinkEvent::Down(conn.peer().clone(), why.clone())); // as in report_up
        }
    }

    /// Closes every link and admits none after (node shutdown); `leaving` tells peers the
    /// node leaves the cluster.
    pub(crate) fn close_all(&self, reason: &str, leaving: bool) {
        self.peers().close_all(reason, leaving);
        for client in self.inner.clients.iter() {
            client.close(reason, leaving);
        }
    }

    /// Accepts sockets on `listener` until the intake token is cancelled. At most
    /// `max_handshakes` sockets may be in their handshake at once (each is bounded by the
    /// handshake timeout); beyond that new ones are closed at once, so silent sockets cost a
    /// bounded number of descriptors.
    pub(crate) async fn accept_loop(self, listener: TcpListener) {
        let max = self.inner.config.max_handshakes;
        let slots = Arc::new(tokio::sync::Semaphore::new(max));
        let refusals = LogLimit::default();
        loop {
            let accepted = tokio::select! {
                _ = self.inner.intake.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        if let Some(more) = refusals.admit() {
                            warn!(
                                limit = max,
                                more, "too many connections in their handshake; closing new ones"
                            );
                        }
                        continue;
                    };
                    let admit = self.clone().admit(stream);
                    self.inner.ctx.tasks.spawn(async move {
                        admit.await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Runs the acceptor's side of the handshake on a new socket.
    async fn admit(self, stream: TcpStream) {
        let remote = stream
            .peer_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let mut introduced = match transport::accept(stream, self.local()).await {
            Ok(introduced) => introduced,
            Err(HandshakeFailure::Closed) => {
                return debug!("a dialer hung up during the handshake")
            }
            Err(HandshakeFailure::Unauthenticated(reason)) => {
                if let Some(more) = self.inner.failures.admit() {
                    warn!(%remote, %reason, more, "refused an unauthenticated link");
                }
                return;
            }
            Err(HandshakeFailure::Failed(reason)) => {
                if let Some(more) = self.inner.failures.admit() {
                    warn!(%remote, %reason, more, "handshake failed");
                }
                return;
            }
        };
        let them = introduced.hello.identity.clone();
        if let Some(refusal) = self.refusal(&them) {
            warn!(peer = %them.name, %remote, reason = %refusal.ours, "refused a link");
            let verdict = Verdict::Refuse(refusal.theirs);
            let _ = transport::refuse(&mut introduced, self.local(), verdict).await; // best effort
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
            let admission = self.peers().admission();
            let verdict = admission.inbound_verdict(&peer);
            if verdict == Verdict::Accept {
                let conn = self.start_link(socket, &them, false, Some(accept));
                if admission.insert(conn.clone()) {
                    self.report_up(&conn);
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
    fn refusal(&self, them: &Identity) -> Option<Refusal> {
        let me = &self.inner.identity;
        let name = &them.name;
        if self.closing() {
            return Some(Refusal::same("it is shutting down"));
        }
        if them.id == me.id {
            return Some(Refusal::same("the dialer has this node's own id"));
        }
        if them.listen.is_some() && *name == me.name {
            return Some(Refusal {
                theirs: format!("it is itself named `{name}`: choose another --name for this node"),
                ours: format!("the dialer is named `{name}` like this node"),
            });
        }
        let holder = self
            .peers()
            .by_name(name)
            .filter(|other| other.peer().id != them.id)?
            .peer()
            .id;
        them.listen.is_some().then(|| Refusal {
            theirs: format!(
                "{}: choose another --name for this node",
                name_conflict(name, holder)
            ),
            ours: name_conflict(name, holder),
        })
    }
}

/// A refusal in the dialer's words (it is sent) and in ours (it is logged).
struct Refusal {
    theirs: String,
    ours: String,
}

impl Refusal {
    fn same(reason: &str) -> Self {
        Refusal {
            theirs: reason.to_owned(),
            ours: reason.to_owned(),
        }
    }
}

fn name_conflict(name: &str, holder: NodeId) -> String {
    format!("name `{name}` is already used by live node {holder}")
}
