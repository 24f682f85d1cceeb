//! [`Node`]: the handle users hold. It registers methods, finds or dials peers and calls
//! them, reports membership, and shuts everything down.
//!
//! A node is wired together in [`start`]: the method table ([`crate::handlers`]), the links
//! ([`crate::cluster::links`]), the membership actor, discovery, seeds and the HTTP gateway,
//! each given only the handles it needs. Every task is spawned through one tracker and
//! stopped through the node's tokens; [`Node::shutdown`] runs the sequence in [`shutdown`].

mod actors;
mod register;
mod shutdown;
mod start;
mod streams;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actors::Actors;
use crate::client::{Call, CallOptions, Peer};
use crate::cluster::links::Links;
use crate::cluster::membership::Membership;
use crate::cluster::{Member, MemberEvent, Target};
use crate::config::NodeConfig;
use crate::error::RpcError;
use crate::handlers::{ActorBuilder, Handlers, Registered, Registry, Service};
use crate::link::{Limits, PeerInfo};
use crate::wire::NodeId;

pub use register::{IntoHandler, IntoStreamHandler, RequestContext};
pub use start::NodeBuilder;

/// A running node; cheap to clone. It runs until [`Node::shutdown`].
#[derive(Clone)]
pub struct Node {
    core: Arc<Core>,
}

/// A handle that does not keep the node alive (a handler's [`RequestContext`] holds one).
#[derive(Clone)]
pub(crate) struct WeakNode(Weak<Core>);

impl WeakNode {
    /// The node, unless it is gone.
    pub(crate) fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|core| Node { core })
    }
}

/// The state behind a [`Node`] handle: the subsystems' handles and the tokens that stop
/// them. Only this module (and its children) sees it; each subsystem got the narrow handles
/// it needs when the node started ([`start`]).
pub(crate) struct Core {
    config: NodeConfig,
    /// The address peers dial.
    addr: SocketAddr,
    /// Where the listener is bound (differs from `addr` with `advertise`, or port 0).
    bound: SocketAddr,
    /// Where the HTTP gateway listens, if the node has one.
    http_addr: Option<SocketAddr>,
    /// The node's links to peers and clients, and its identity.
    links: Links,
    /// The membership actor: who is in the cluster and in what state.
    membership: Membership,
    /// The method table and what handlers run on.
    handlers: Handlers,
    /// Virtual actors, singletons, groups.
    actors: Actors,
    /// The bounds requests are admitted under; `closing` is set when shutdown starts.
    limits: Arc<Limits>,
    /// Every task of the node.
    tasks: TaskTracker,
    /// Cancels every link and actor, at the end of shutdown.
    root: CancellationToken,
    /// Cancelled when shutdown has finished.
    stopped: CancellationToken,
    /// Set once the node has joined its cluster.
    joined: crate::cluster::Joined,
}

/// What `system.whoami` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct WhoAmI {
    /// The node's name.
    pub name: String,
    /// The node's id for this run, in hex.
    pub id: String,
    /// The address peers dial.
    pub addr: String,
}

impl Node {
    /// A builder for a node called `name`.
    pub fn builder(name: &str) -> NodeBuilder {
        NodeBuilder::new(name)
    }

    /// Starts a node with `config`. See [`NodeBuilder::start`].
    ///
    /// # Errors
    /// [`crate::error::StartError`] if the configuration is invalid or the address cannot be bound.
    pub async fn start(config: NodeConfig) -> Result<Node, crate::error::StartError> {
        start::start(config).await
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.core.config.name
    }

    /// This node's id for this run.
    pub fn id(&self) -> NodeId {
        self.core.links.identity().id
    }

    /// The address peers dial (the advertised address).
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// Where the node's listener is bound: the real port when asked for port 0. Peers are
    /// told [`Node::addr`], which differs when an address to advertise was given.
    pub fn listen_addr(&self) -> SocketAddr {
        self.core.bound
    }

    /// Where the HTTP gateway listens (`NodeConfig::http`), if the node has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.core.http_addr
    }

    /// A handle that does not keep the node alive.
    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.core))
    }

    /// Registers the method `name`; the closure's shape decides how it runs (see
    /// [`IntoHandler`]): `|args| value` answers at once on the connection's reader (keep it
    /// quick), `|args| async move { value }` runs as a task per call, and either may take a
    /// [`RequestContext`] first. A closure returning `Result<T, E>` is fallible: its `Err`
    /// is the caller's `application` error. Registering a name again replaces it.
    ///
    /// ```no_run
    /// # fn demo(node: meshrpc::Node) {
    /// node.register("add", |(a, b): (i64, i64)| a + b);
    /// node.register("sqrt", |x: f64| if x < 0.0 { Err("negative") } else { Ok(x.sqrt()) });
    /// node.register("forward", |cx: meshrpc::RequestContext, x: i64| async move {
    ///     cx.node()?.call::<i64>("b", "square", x).await
    /// });
    /// # }
    /// ```
    pub fn register<M>(&self, name: &str, f: impl IntoHandler<M>) -> Registered<'_> {
        f.register(self, name)
    }

    /// Registers every method of a service declared with [`crate::service!`]:
    /// `node.serve(CalcServer::new(CalcImpl))`.
    pub fn serve(&self, service: impl Service) {
        service.register(&Registry {
            handlers: &self.core.handlers,
        });
    }

    /// Declares an actor called `name` whose state is built by `factory` (again after a panic).
    pub fn actor<S: Send + 'static>(
        &self,
        name: &str,
        factory: impl Fn() -> S + Send + Sync + 'static,
    ) -> ActorBuilder<S> {
        self.core.handlers.actor(name, factory)
    }

    /// Waits until this node has joined its cluster: at once for a node without seeds;
    /// otherwise until a seed (or a member that reached this node first) has answered and
    /// this node's view holds another live member, so a call by member name finds it.
    /// `Node::start` returns before that, as soon as the node listens. To bound the wait,
    /// wrap it in `tokio::time::timeout`: a seed that is not up yet is retried for ever.
    ///
    /// # Errors
    /// `Refused` if the cluster refuses this node first (its name is held by a live member).
    /// The node keeps running alone and keeps trying, in case the holder goes; `meshrpc
    /// node` exits 1 instead.
    pub async fn joined(&self) -> Result<(), RpcError> {
        let joined = async {
            self.core.joined.wait().await;
            if !self.core.config.seeds.is_empty() {
                let mut active = self.core.membership.active();
                // The membership actor outlives the node's handle: this ends when it has a
                // member.
                let _ = active.wait_for(|live| *live > 0).await;
            }
        };
        tokio::select! {
            () = joined => Ok(()),
            reason = self.core.membership.refused() => Err(RpcError::Refused {
                peer: "the cluster".to_owned(),
                reason,
            }),
        }
    }

    /// This node's view of the cluster, itself included, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.core.membership.members()
    }

    /// Membership changes from now on. A receiver that falls more than 256 events behind
    /// loses the oldest ones (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MemberEvent> {
        self.core.membership.subscribe()
    }

    /// The peers this node has a live link to, by name.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.core
            .links
            .peers()
            .list()
            .iter()
            .map(|c| c.peer().clone())
            .collect()
    }

    /// A handle to a peer, dialing it if needed.
    ///
    /// # Errors
    /// `PeerUnavailable` if it cannot be found or reached, `Shutdown` if this node is stopping.
    pub async fn peer(&self, to: impl Into<Target>) -> Result<Peer, RpcError> {
        let conn = self.core.links.link(to.into()).await?;
        Ok(Peer {
            conn,
            default_timeout: self.core.config.default_timeout,
            closing: self.core.limits.closing.clone(),
        })
    }

    /// Calls `method` on a peer; see [`Peer::call`].
    ///
    /// # Errors
    /// Any [`RpcError`].
    pub async fn call<R: DeserializeOwned>(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: impl Serialize,
    ) -> Result<R, RpcError> {
        let (to, args) = (to.into(), &args);
        self.on_link(&to, |peer| async move { peer.call(method, args).await })
            .await
    }

    /// Calls `method` on a peer with options; see [`Peer::call_with`].
    ///
    /// # Errors
    /// Any [`RpcError`].
    pub async fn call_with<R: DeserializeOwned>(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: impl Serialize,
        options: CallOptions,
    ) -> Result<R, RpcError> {
        let to = to.into();
        let args = &args;
        // Each attempt finds (or redials) the peer: a retry can use a link the last one lost.
        let (encoding, body) = crate::client::retrying(options, |retry| {
            let to = to.clone();
            async move {
                self.on_link(&to, |peer| async move {
                    peer.attempt(Call::bincode(method), args, options, retry)
                        .await
                })
                .await
            }
        })
        .await?;
        crate::client::decode_typed(method, encoding, &body)
    }

    /// Calls `method` on a peer with JSON arguments; see [`Peer::call_json`]. Like
    /// [`Node::call`], a call the link dropped without running it goes once more on a new
    /// link.
    ///
    /// # Errors
    /// Any [`RpcError`].
    pub async fn call_json<A: Serialize + ?Sized>(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: &A,
        options: CallOptions,
    ) -> Result<serde_json::Value, RpcError> {
        let to = to.into();
        self.on_link(&to, |peer| async move {
            peer.call_json(method, args, options).await
        })
        .await
    }

    /// Sends a one-way message to a peer.
    ///
    /// # Errors
    /// `PeerUnavailable`, `Disconnected`, `FrameTooLarge` or `Shutdown`.
    pub async fn cast(
        &self,
        to: impl Into<Target>,
        method: &str,
        args: impl Serialize,
    ) -> Result<(), RpcError> {
        let (to, args) = (to.into(), &args);
        self.on_link(&to, |peer| async move { peer.cast(method, args) })
            .await
    }

    /// Runs `call` on the link to `to`, and once more on a new link if the first closed
    /// under it without running it for a reason that is not the peer's (idle on either side,
    /// or replaced by a link both nodes dialed at once: [`Connection::may_resend`]): links
    /// open on demand and close when idle, and callers need not know.
    async fn on_link<T, F, Fut>(&self, to: &Target, call: F) -> Result<T, RpcError>
    where
        F: Fn(Peer) -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        let peer = self.peer(to.clone()).await?;
        let conn = peer.conn.clone();
        match call(peer).await {
            Err(e) if conn.may_resend(&e) => call(self.peer(to.clone()).await?).await,
            other => other,
        }
    }

    /// Stops the node: new calls are refused with `Shutdown`, running requests get up to
    /// `shutdown_grace` to finish, every link is closed with a goodbye that says the node is
    /// leaving, and every task ends before this returns.
    ///
    /// # Cancel safety
    /// The shutdown runs in a task of its own: dropping this future does not interrupt it,
    /// and calling `shutdown` again waits for the same completion.
    pub async fn shutdown(&self) {
        if !self.core.limits.closing.swap(true, Ordering::SeqCst) {
            let core = self.core.clone();
            tokio::spawn(async move {
                core.shutdown_sequence().await;
                core.stopped.cancel();
            });
        }
        self.core.stopped.cancelled().await;
    }
}
