//! [`Node`]: starts the listener, registers methods, dials peers, and shuts everything down.
//!
//! A node owns a root cancellation token and a task tracker; the accept loop, seed loops,
//! every link's reader and writer, handler tasks and actors are spawned through them. Links
//! live in [`crate::peers`] (nodes) or in the client table (plain callers). [`Node::shutdown`]
//! refuses new calls, lets running requests finish within the grace period, says goodbye to
//! every link, and waits for every task.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::actor::ActorBuilder;
use crate::client::{CallOptions, Peer, PeerInfo, Target};
use crate::connection::Connection;
use crate::membership::{self, Member, MemberEvent, Membership, Status};
use crate::methods::{AsyncFn, Method, Methods, Registered, SyncFn};
use crate::peers::Peers;
use crate::serve::ServeCtx;
use crate::tls::Tls;
use crate::wire::{Encoding, Identity, NodeId};
use crate::{discovery, gateway, links};
use crate::{NodeConfig, RpcError, StartError};

/// Builds a [`Node`] from a [`NodeConfig`].
#[derive(Debug, Clone, Default)]
pub struct NodeBuilder {
    config: NodeConfig,
}

impl NodeBuilder {
    /// A builder for a node called `name`, with default settings.
    pub fn new(name: &str) -> Self {
        NodeBuilder {
            config: NodeConfig {
                name: name.to_owned(),
                ..NodeConfig::default()
            },
        }
    }

    /// Replaces every setting with `config`.
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// Where to listen (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// The address to tell peers, when it differs from the listen address.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.config.advertise = Some(addr);
        self
    }

    /// Adds a peer (`host:port`) to connect to at start.
    pub fn seed(mut self, addr: impl Into<String>) -> Self {
        self.config.seeds.push(addr.into());
        self
    }

    /// Deadline of calls made without an explicit timeout.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default_timeout = timeout;
        self
    }

    /// Largest frame accepted or sent.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.config.max_frame = bytes;
        self
    }

    /// Default actor mailbox capacity.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.config.mailbox = capacity;
        self
    }

    /// Requests one connection may have running here at once.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// Binds the listener and starts the node; seeds are dialed in the background.
    ///
    /// # Errors
    /// [`StartError`] if the configuration is invalid or the address cannot be bound.
    pub async fn start(self) -> Result<Node, StartError> {
        Node::start(self.config).await
    }
}

/// A running node; cheap to clone. It runs until [`Node::shutdown`].
#[derive(Clone)]
pub struct Node {
    core: Arc<Core>,
}

/// A handle that does not keep the node alive; for handlers that call other peers.
#[derive(Clone)]
pub struct WeakNode(Weak<Core>);

impl WeakNode {
    /// The node, unless it is gone.
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|core| Node { core })
    }
}

/// The state behind a [`Node`] handle; its link-level half lives in `links.rs`.
pub(crate) struct Core {
    pub(crate) config: NodeConfig,
    /// What this node says about itself in every handshake.
    pub(crate) identity: Identity,
    pub(crate) addr: SocketAddr,
    /// Where the listener is bound (differs from `addr` with `advertise`, or port 0).
    bound: SocketAddr,
    /// Where the HTTP gateway listens, if the node has one.
    http_addr: Option<SocketAddr>,
    pub(crate) peers: Peers,
    /// The membership actor: who is in the cluster and in what state.
    pub(crate) membership: Membership,
    /// Links from plain clients, by connection id; closed on shutdown.
    pub(crate) clients: DashMap<u64, Connection>,
    pub(crate) serve: ServeCtx,
    /// Cancels every link, at the end of shutdown.
    pub(crate) root: CancellationToken,
    /// Cancels the listener and the seed loops, at the start of shutdown; child of `root`.
    pub(crate) intake: CancellationToken,
    /// Cancelled when shutdown has finished.
    stopped: CancellationToken,
    pub(crate) next_conn: AtomicU64,
    /// One dial at a time per address, so concurrent callers share one link.
    pub(crate) dial_locks: DashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>,
    /// TLS for every link, when configured.
    pub(crate) tls: Option<Tls>,
}

/// What `system.whoami` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WhoAmI {
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
    /// [`StartError`] if the configuration is invalid or the address cannot be bound.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        config.validate().map_err(StartError::Config)?;
        let tls = match &config.tls {
            Some(files) => Some(Tls::load(files).map_err(StartError::Tls)?),
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = config.advertise.unwrap_or_else(|| advertised(bound));
        let id = NodeId::random();
        let identity = Identity {
            id,
            name: config.name.clone(),
            listen: Some(addr.to_string()),
            max_frame: config.max_frame as u32,
            incarnation: incarnation(),
        };
        let beacons = match &config.multicast {
            Some(multicast) => {
                Some(
                    discovery::open(multicast).map_err(|source| StartError::Discovery {
                        group: multicast.group,
                        source,
                    })?,
                )
            }
            None => None,
        };
        let http = match config.http {
            Some(at) => Some(
                gateway::bind(at)
                    .await
                    .map_err(|source| StartError::Bind { addr: at, source })?,
            ),
            None => None,
        };
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let root = CancellationToken::new();
        let serve = ServeCtx {
            methods: Methods::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            closing: Arc::new(AtomicBool::new(false)),
            max_in_flight: config.max_in_flight,
            max_in_flight_node: config.max_in_flight_node,
            node_inbound: Default::default(),
            metered: http.is_some() && gateway::enable_metrics(),
            mailboxes: Default::default(),
        };
        let me = Member {
            name: config.name.clone(),
            id,
            incarnation: identity.incarnation,
            addr: Some(addr),
            status: Status::Up,
        };
        let core = Arc::new_cyclic(|weak| {
            let membership =
                Membership::start(me, weak.clone(), &config, root.clone(), &serve.tasks);
            Core {
                identity,
                addr,
                bound,
                http_addr,
                peers: Peers::new(id),
                membership,
                clients: DashMap::new(),
                serve,
                intake: root.child_token(),
                root,
                stopped: CancellationToken::new(),
                next_conn: AtomicU64::new(1),
                dial_locks: DashMap::new(),
                tls,
                config,
            }
        });
        let node = Node { core };
        crate::builtins::register(&node);
        membership::register(&node, &node.core.membership);
        info!(name = %node.name(), id = %id, %addr, "node listening");
        if node.core.config.cookie.is_none() {
            info!("no cluster cookie: any process that can reach {addr} may join and call methods");
        }
        node.core
            .serve
            .tasks
            .spawn(links::accept_loop(node.core.clone(), listener));
        if let Some(listener) = http {
            info!(addr = ?http_addr, "http gateway (XML-RPC, JSON-RPC, /metrics, /health)");
            let max_body = node.core.config.http_max_body;
            node.core.serve.tasks.spawn(gateway::serve(
                Arc::downgrade(&node.core),
                listener,
                max_body,
            ));
        }
        if let (Some(socket), Some(multicast)) = (beacons, node.core.config.multicast.clone()) {
            let interval = node.core.config.heartbeat;
            node.core.serve.tasks.spawn(discovery::run(
                Arc::downgrade(&node.core),
                socket,
                multicast,
                interval,
            ));
        }
        for seed in node.core.config.seeds.clone() {
            node.core
                .serve
                .tasks
                .spawn(links::seed_loop(Arc::downgrade(&node.core), seed));
        }
        Ok(node)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.core.config.name
    }

    /// This node's id for this run.
    pub fn id(&self) -> NodeId {
        self.core.identity.id
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

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.core.config
    }

    /// A handle that does not keep the node alive.
    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.core))
    }

    /// Registers a synchronous function. It runs on the connection's reader, so it must be
    /// quick; use [`Node::register`] for anything that waits.
    pub fn register_fn<A, R, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        self.register_try_fn(name, move |args: A| {
            Ok::<R, std::convert::Infallible>(f(args))
        })
    }

    /// Registers a synchronous function that can fail; its error becomes an `Application`
    /// error for the caller. Runs on the connection's reader, like [`Node::register_fn`].
    pub fn register_try_fn<A, R, E, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: std::fmt::Display + 'static,
    {
        self.insert(
            name,
            Arc::new(SyncFn {
                f,
                _types: std::marker::PhantomData,
            }),
        )
    }

    /// Registers an async function; each call runs as its own task. Its error becomes an
    /// `Application` error for the caller.
    pub fn register<A, R, E, F, Fut>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.insert(
            name,
            Arc::new(AsyncFn {
                f,
                _types: std::marker::PhantomData,
            }),
        )
    }

    /// [`Node::register_fn`] for a typed method descriptor.
    pub fn serve_fn<A, R, F>(&self, method: Method<A, R>, f: F) -> Registered<'_>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        self.register_fn(method.name(), f)
    }

    /// [`Node::register`] for a typed method descriptor.
    pub fn serve<A, R, E, F, Fut>(&self, method: Method<A, R>, f: F) -> Registered<'_>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.register(method.name(), f)
    }

    /// Declares an actor called `name` whose state is built by `factory` (again after a panic).
    pub fn actor<S: Send + 'static>(
        &self,
        name: &str,
        factory: impl Fn() -> S + Send + Sync + 'static,
    ) -> ActorBuilder<S> {
        ActorBuilder::new(
            self.core.serve.clone(),
            name,
            self.core.config.mailbox,
            Arc::new(factory),
        )
    }

    fn insert(&self, name: &str, handler: Arc<dyn crate::methods::Handler>) -> Registered<'_> {
        self.core.serve.methods.insert(name, handler);
        Registered {
            methods: &self.core.serve.methods,
            name: name.to_owned(),
        }
    }

    pub(crate) fn methods(&self) -> &Methods {
        &self.core.serve.methods
    }

    /// This node's view of the cluster, itself included, sorted by name.
    pub async fn members(&self) -> Vec<Member> {
        self.core.membership.members().await
    }

    /// Membership changes from now on. A receiver that falls more than 256 events behind
    /// loses the oldest ones (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<MemberEvent> {
        self.core.membership.subscribe()
    }

    /// The peers this node has a live link to, by name.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.core
            .peers
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
        let conn = self.core.link(to.into()).await?;
        Ok(Peer {
            conn,
            default_timeout: self.core.config.default_timeout,
            closing: self.core.serve.closing.clone(),
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
        self.peer(to).await?.call(method, args).await
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
                self.peer(to)
                    .await?
                    .attempt(method, Encoding::Bincode, args, options, retry)
                    .await
            }
        })
        .await?;
        crate::client::decode_typed(method, encoding, &body)
    }

    /// Calls a typed method on a peer.
    ///
    /// # Errors
    /// Any [`RpcError`].
    pub async fn invoke<A: Serialize, R: DeserializeOwned>(
        &self,
        to: impl Into<Target>,
        method: Method<A, R>,
        args: A,
    ) -> Result<R, RpcError> {
        self.peer(to).await?.invoke(method, args).await
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
        self.peer(to).await?.cast(method, args)
    }

    /// Stops the node: new calls are refused with `Shutdown`, running requests get up to
    /// `shutdown_grace` to finish, every link is closed with a goodbye that says the node is
    /// leaving, and every task ends before this returns.
    ///
    /// # Cancel safety
    /// The shutdown runs in a task of its own: dropping this future does not interrupt it,
    /// and calling `shutdown` again waits for the same completion.
    pub async fn shutdown(&self) {
        if !self.core.serve.closing.swap(true, Ordering::SeqCst) {
            let core = self.core.clone();
            tokio::spawn(async move {
                core.shutdown_sequence().await;
                core.stopped.cancel();
            });
        }
        self.core.stopped.cancelled().await;
    }
}

impl Core {
    pub(crate) fn closing(&self) -> bool {
        self.serve.closing.load(Ordering::Relaxed)
    }

    /// Sets the gauges `/metrics` reports: links, members by status, mailbox depths.
    pub(crate) async fn record_gauges(&self) {
        let node = metrics::SharedString::from(self.config.name.clone());
        metrics::gauge!("meshrpc_links", "node" => node.clone())
            .set(self.peers.list().len() as f64);
        metrics::gauge!("meshrpc_client_connections", "node" => node.clone())
            .set(self.clients.len() as f64);
        let members = self.membership.members().await;
        for status in [Status::Up, Status::Suspect, Status::Down, Status::Left] {
            let n = members.iter().filter(|m| m.status == status).count();
            metrics::gauge!("meshrpc_members", "node" => node.clone(), "status" => status.as_str())
                .set(n as f64);
        }
        let mailboxes = self
            .serve
            .mailboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (actor, depth) in mailboxes.iter() {
            metrics::gauge!("meshrpc_mailbox_depth", "node" => node.clone(), "actor" => actor.clone()).set(depth() as f64);
        }
    }

    /// True while any link has requests running here.
    fn busy(&self) -> bool {
        let running = |c: &Connection| c.shared.inbound.load(Ordering::Relaxed) > 0;
        self.peers.list().iter().any(running) || self.clients.iter().any(|c| running(&c))
    }

    async fn shutdown_sequence(&self) {
        info!(name = %self.config.name, "shutting down");
        self.intake.cancel();
        let idle = async {
            while self.busy() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(self.config.shutdown_grace, idle)
            .await
            .is_err()
        {
            warn!(grace = ?self.config.shutdown_grace, "requests still running after the grace period; stopping them");
        }
        self.serve.stop.cancel();
        self.peers.close_all("node shutting down", true);
        for client in self.clients.iter() {
            client.close("node shutting down", true);
        }
        self.root.cancel();
        self.serve.tasks.close();
        self.serve.tasks.wait().await;
        info!(name = %self.config.name, "stopped");
    }
}

/// Milliseconds since the Unix epoch: a restarted node gets a larger incarnation.
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The address to advertise for a bound socket: never an unspecified IP.
fn advertised(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    }
}
