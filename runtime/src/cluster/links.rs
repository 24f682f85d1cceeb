//! [`Links`]: a node's links to other nodes and to plain clients — finding the link for a
//! [`Target`] (dialing on demand: a member's address comes from the membership
//! [`Directory`]), the acceptor's side of new sockets, the registry they land in
//! ([`super::peers`]), and closing links that stay idle. The handshake's bytes are in
//! [`crate::link::transport`].
//!
//! The accept loop and the idle reaper stop with the intake token, at the start of shutdown;
//! the links themselves with the root token, or with [`Links::close_all`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tracing::debug;

mod accept;
pub(crate) mod confirm;
mod idle;

use super::membership::{Directory, Member};
use super::peers::{DialStart, Peers};
use super::target::{resolve, Target};
use super::ShowAddr;
use crate::config::NodeConfig;
use crate::error::RpcError;
use crate::link::tls::Tls;
use crate::link::transport::{self, Local, Socket};
use crate::link::{Closed, Connection, LinkCtx, LogLimit, Parts};
use crate::wire::{Identity, NodeId};

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
    /// Cancelled when running requests are stopped (after the shutdown grace): until then
    /// they may still dial, to finish what they started (a forwarded call, a hand-over).
    handlers_stop: CancellationToken,
    /// Where members' addresses are found, for calls by name or id.
    directory: Directory,
    /// Failed handshakes are logged at most once a second: thousands of silent or hostile
    /// sockets must not flood the log.
    failures: LogLimit,
    /// The in-memory link to this node itself, made on first use.
    myself: std::sync::OnceLock<Connection>,
    /// Greetings our dials in progress received: what this node vouches for when an
    /// acceptor checks that the dialer claiming to be this node is this node.
    greeted: Arc<confirm::Greeted>,
}

impl Links {
    pub(crate) fn new(
        identity: Identity,
        config: NodeConfig,
        tls: Option<Tls>,
        ctx: LinkCtx,
        root: CancellationToken,
        handlers_stop: CancellationToken,
        directory: Directory,
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
            handlers_stop,
            directory,
            failures: LogLimit::default(),
            myself: std::sync::OnceLock::new(),
            greeted: Arc::default(),
        };
        Links {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn downgrade(&self) -> WeakLinks {
        WeakLinks(Arc::downgrade(&self.inner))
    }

    /// What every link of this node shares: its dispatcher and bounds.
    pub(crate) fn link_ctx(&self) -> &LinkCtx {
        &self.inner.ctx
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub(crate) fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// Whether one of this node's dials in progress was greeted with `nonce`
    /// ([`confirm::METHOD`]).
    pub(crate) fn greeted(&self, nonce: &crate::wire::Nonce) -> bool {
        self.inner.greeted.contains(nonce)
    }

    /// How many plain clients are connected.
    pub(crate) fn clients(&self) -> usize {
        self.inner.clients.len()
    }

    /// Cancelled when the node stops taking new work.
    pub(crate) fn intake(&self) -> &CancellationToken {
        &self.inner.intake
    }

    /// The link from this node to itself: in memory, no handshake, not registered as a
    /// peer; calls on it are dispatched like any other. Closed with the node.
    pub(crate) fn to_self(&self) -> Connection {
        let inner = &self.inner;
        inner
            .myself
            .get_or_init(|| {
                let me = &inner.identity;
                let (ours, theirs) = Socket::loopback(self.own_addr());
                let end = |socket: Socket, outbound: bool| {
                    let parts = Parts {
                        peer: transport::peer_info(me, &socket),
                        socket,
                        conn_id: inner.next_conn.fetch_add(1, Ordering::Relaxed),
                        outbound,
                        max_frame: inner.config.max_frame,
                        max_frame_in: inner.config.max_frame,
                        heartbeat: inner.config.heartbeat,
                        silence: inner.config.down_after,
                    };
                    let token = inner.root.child_token();
                    Connection::start(parts, None, inner.ctx.clone(), token, |_, _| {})
                };
                // The far end lives on in its own reader and writer tasks.
                end(theirs, false);
                end(ours, true)
            })
            .clone()
    }

    /// The address this node tells peers, for the far end of its in-memory links.
    fn own_addr(&self) -> SocketAddr {
        let listen = self.inner.identity.listen.as_deref();
        listen
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn closing(&self) -> bool {
        self.inner.ctx.limits.closing.load(Ordering::Relaxed)
    }

    /// Past the shutdown grace: nothing may dial any more.
    fn stopped(&self) -> bool {
        self.inner.handlers_stop.is_cancelled() || self.inner.root.is_cancelled()
    }

    fn local(&self) -> Local<'_> {
        let inner = &self.inner;
        Local {
            identity: &inner.identity,
            cookie: inner.config.cookie.as_deref(),
            client_secret: inner.config.client_secret.as_deref(),
            timeout: inner.config.handshake_timeout,
            tls: inner.tls.as_ref(),
            probe: false,
            versions: inner.config.protocol_versions(),
            gateway: inner.config.http.map(|addr| (addr, inner.config.http_tls)),
        }
    }

    /// Finds or opens the link to `to`: a member named by name or id is dialed at the address
    /// membership knows for it.
    pub(crate) async fn link(&self, to: Target) -> Result<Connection, RpcError> {
        if self.stopped() {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        let unknown = |reason: String| RpcError::PeerUnavailable {
            peer: to.to_string(),
            reason,
        };
        match &to {
            Target::Id(id) => {
                if let Some(conn) = self.peers().get(*id) {
                    return Ok(conn);
                }
                let member = self.inner.directory.snapshot().by_id(*id).cloned();
                match member {
                    Some(m) => self.dial_member(&m).await.map_err(unknown),
                    None => Err(unknown(
                        "no live link to that id, and no member has it".into(),
                    )),
                }
            }
            Target::Addr(addr) => self.dial(*addr).await,
            Target::Name(name) => {
                if let Some(conn) = self.peers().by_name(name) {
                    return Ok(conn);
                }
                let member = self.inner.directory.snapshot().by_name(name).cloned();
                if let Some(m) = member {
                    return self.dial_member(&m).await.map_err(unknown);
                }
                if !name.contains(':') {
                    return Err(unknown(
                        "no connected peer has that name, and no member either".into(),
                    ));
                }
                let mut last = unknown("the name resolved to no address".into());
                for addr in resolve(name).await.map_err(unknown)? {
                    match self.dial(addr).await {
                        Ok(conn) => return Ok(conn),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// Dials a member, unless it is known to be gone; the error is the reason.
    async fn dial_member(&self, member: &Member) -> Result<Connection, String> {
        let (name, status) = (&member.name, member.status);
        let addr = match (status.is_live(), member.addr) {
            (true, Some(addr)) => addr,
            _ => {
                return Err(format!(
                    "no connected peer has that name: member `{name}` is {}",
                    status.as_str()
                ))
            }
        };
        self.dial(addr).await.map_err(|e| e.to_string())
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
        if self.stopped() {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        let timeout = self.inner.config.connect_timeout;
        let mut socket = transport::connect(addr, timeout, self.local()).await?;
        let greeting = transport::read_greeting(&mut socket, self.local()).await?;
        // Until the verdict, this node vouches for this handshake if the acceptor asks.
        let _vouch = self.inner.greeted.hold(greeting.nonce);
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
        drop(admission);
        self.peers().alias(addr, them.id);
        Ok(conn)
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
        let peer = transport::peer_info(them, &socket);
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
            inner.clients.insert(conn.id(), conn.clone());
        } else {
            let peer = conn.peer();
            // Links open and close on demand (a state sync opens one and closes it at once):
            // routine, so `debug`. Membership changes are what `info` shows; a link that
            // fails or goes silent is a warning where it ends (`link/reader.rs`).
            debug!(peer = %peer.name, id = %peer.id, addr = %ShowAddr(peer.addr), outbound, protocol = peer.protocol, "link up");
        }
        conn
    }

    fn closed(&self, conn: &Connection, why: &Closed) {
        self.inner.clients.remove(&conn.id());
        // Only the registered link's end is news: a link replaced by the tie-break is not.
        if self.peers().remove(conn) {
            debug!(peer = %conn.peer().name, reason = %why, "link down");
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
}

fn name_conflict(name: &str, holder: NodeId) -> String {
    format!("name `{name}` is already used by live node {holder}")
}
