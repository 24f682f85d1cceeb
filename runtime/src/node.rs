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
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::actor::ActorBuilder;
use crate::client::{CallOptions, Peer, PeerInfo, Target};
use crate::connection::{Connection, Parts};
use crate::methods::{AsyncFn, Method, Methods, Registered, SyncFn};
use crate::peers::Peers;
use crate::serve::ServeCtx;
use crate::transport::{self, Dialed, Socket};
use crate::wire::{Hello, NodeId, Verdict};
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

struct Core {
    config: NodeConfig,
    hello: Hello,
    addr: SocketAddr,
    peers: Peers,
    /// Links from plain clients, by connection id; closed on shutdown.
    clients: DashMap<u64, Connection>,
    serve: ServeCtx,
    /// Cancels every link, at the end of shutdown.
    root: CancellationToken,
    /// Cancels the listener and the seed loops, at the start of shutdown; child of `root`.
    intake: CancellationToken,
    next_conn: AtomicU64,
    /// One dial at a time per address, so concurrent callers share one link.
    dial_locks: DashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>,
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
        let hello = Hello {
            id,
            name: config.name.clone(),
            listen: Some(addr.to_string()),
            max_frame: config.max_frame as u32,
        };
        let root = CancellationToken::new();
        let serve = ServeCtx {
            methods: Methods::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            closing: Arc::new(AtomicBool::new(false)),
            max_in_flight: config.max_in_flight,
        };
        let core = Arc::new(Core {
            hello,
            addr,
            peers: Peers::new(id),
            clients: DashMap::new(),
            serve,
            intake: root.child_token(),
            root,
            next_conn: AtomicU64::new(1),
            dial_locks: DashMap::new(),
            config,
        });
        let node = Node { core };
        crate::builtins::register(&node);
        info!(name = %node.name(), id = %id, %addr, "node listening");
        node.core
            .serve
            .tasks
            .spawn(accept_loop(node.core.clone(), listener));
        for seed in node.core.config.seeds.clone() {
            node.core
                .serve
                .tasks
                .spawn(seed_loop(node.downgrade(), seed));
        }
        Ok(node)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.core.config.name
    }

    /// This node's id for this run.
    pub fn id(&self) -> NodeId {
        self.core.hello.id
    }

    /// The address peers dial (the advertised address).
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
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
        self.peer(to).await?.call_with(method, args, options).await
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
    /// `shutdown_grace` to finish, every link is closed with a goodbye, and every task ends
    /// before this returns.
    pub async fn shutdown(&self) {
        let core = &self.core;
        if core.serve.closing.swap(true, Ordering::SeqCst) {
            core.serve.tasks.wait().await;
            return;
        }
        info!(name = %self.name(), "shutting down");
        core.intake.cancel();
        let idle = async {
            while core.busy() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(core.config.shutdown_grace, idle)
            .await
            .is_err()
        {
            warn!(grace = ?core.config.shutdown_grace, "requests still running after the grace period; stopping them");
        }
        core.serve.stop.cancel();
        core.peers.close_all("node shutting down");
        for client in core.clients.iter() {
            client.close("node shutting down");
        }
        core.root.cancel();
        core.serve.tasks.close();
        core.serve.tasks.wait().await;
        info!(name = %self.name(), "stopped");
    }
}

/// The address to advertise for a bound socket: never an unspecified IP.
fn advertised(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    }
}

impl Core {
    /// True while any link has requests running here.
    fn busy(&self) -> bool {
        let running = |c: &Connection| c.shared.inbound.load(Ordering::Relaxed) > 0;
        self.peers.list().iter().any(running) || self.clients.iter().any(|c| running(&c))
    }

    fn closing(&self) -> bool {
        self.serve.closing.load(Ordering::Relaxed)
    }

    /// Finds or opens the link to `to`.
    async fn link(self: &Arc<Self>, to: Target) -> Result<Connection, RpcError> {
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
                let addrs = tokio::net::lookup_host(name.as_str())
                    .await
                    .map_err(|e| unknown(&format!("cannot resolve: {e}")))?;
                let mut last = unknown("the name resolved to no address");
                for addr in addrs {
                    match self.dial(addr).await {
                        Ok(conn) => return Ok(conn),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// Returns the link to the node listening at `addr`, dialing it if there is none.
    async fn dial(self: &Arc<Self>, addr: SocketAddr) -> Result<Connection, RpcError> {
        if let Some(conn) = self.peers.by_addr(addr) {
            return Ok(conn);
        }
        if addr == self.addr {
            return Err(RpcError::PeerUnavailable {
                peer: addr.to_string(),
                reason: "that is this node's own address".to_owned(),
            });
        }
        let lock = self.dial_locks.entry(addr).or_default().clone();
        let _one_dial = lock.lock().await;
        if let Some(conn) = self.peers.by_addr(addr) {
            return Ok(conn);
        }
        let _dialing = self.peers.dialing(addr);
        let cfg = &self.config;
        match transport::dial(
            addr,
            &self.hello,
            cfg.connect_timeout,
            cfg.handshake_timeout,
        )
        .await?
        {
            Dialed::Accepted(socket, theirs) => {
                let conn = self.start_link(*socket, &theirs, true, None);
                Ok(self.peers.admission().outbound(conn))
            }
            Dialed::Duplicate(id) => self
                .peers
                .wait_for(id, cfg.handshake_timeout)
                .await
                .ok_or_else(|| RpcError::PeerUnavailable {
                    peer: addr.to_string(),
                    reason: "the peer kept another link that never completed".to_owned(),
                }),
        }
    }

    fn start_link(
        self: &Arc<Self>,
        socket: Socket,
        theirs: &Hello,
        outbound: bool,
        first: Option<bytes::Bytes>,
    ) -> Connection {
        let peer = transport::peer_info(theirs, socket.remote);
        let is_client = peer.addr.is_none();
        let parts = Parts {
            socket,
            peer,
            conn_id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            outbound,
            max_frame: self.config.max_frame.min(theirs.max_frame as usize),
            max_frame_in: self.config.max_frame,
        };
        let weak = Arc::downgrade(self);
        let conn = Connection::start(
            parts,
            first,
            self.serve.clone(),
            self.root.child_token(),
            move |conn| {
                if let Some(core) = weak.upgrade() {
                    core.peers.remove(conn);
                    core.clients.remove(&conn.shared.conn_id);
                }
            },
        );
        if is_client {
            self.clients.insert(conn.shared.conn_id, conn.clone());
        } else {
            info!(peer = %conn.peer().name, id = %conn.peer().id, addr = ?conn.peer().addr, outbound, "link up");
        }
        conn
    }

    /// Runs the acceptor's side of the handshake on a new socket.
    async fn admit(self: Arc<Self>, stream: TcpStream) {
        let (mut socket, theirs) =
            match transport::accept(stream, &self.hello, self.config.handshake_timeout).await {
                Ok(accepted) => accepted,
                Err(reason) => return warn!(%reason, "handshake failed"),
            };
        let refusal = if self.closing() {
            Some(Verdict::Refuse("the node is shutting down".to_owned()))
        } else if theirs.id == self.hello.id {
            Some(Verdict::Refuse(
                "the dialer has this node's own id".to_owned(),
            ))
        } else {
            None
        };
        if let Some(verdict) = refusal {
            let _ = transport::refuse(&mut socket, &self.hello, verdict).await; // best effort
            return;
        }
        let accept = match transport::reply_frame(&self.hello, Verdict::Accept) {
            Ok(frame) => frame,
            Err(reason) => return warn!(%reason, "cannot encode the handshake reply"),
        };
        if theirs.listen.is_none() {
            self.start_link(socket, &theirs, false, Some(accept));
            return;
        }
        let peer = transport::peer_info(&theirs, socket.remote);
        let verdict = {
            let admission = self.peers.admission();
            let verdict = admission.inbound_verdict(&peer);
            if verdict == Verdict::Accept {
                admission.insert(self.start_link(socket, &theirs, false, Some(accept)));
                return;
            }
            verdict
        };
        debug!(peer = %peer.name, "simultaneous dial: keeping the other link");
        let _ = transport::refuse(&mut socket, &self.hello, verdict).await; // best effort
    }
}

async fn accept_loop(core: Arc<Core>, listener: TcpListener) {
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

/// Keeps a link to one seed: dials with backoff until it succeeds, waits for the link to
/// close, and starts over, until the node stops.
async fn seed_loop(node: WeakNode, seed: String) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(node) = node.upgrade() else { return };
        if node.core.closing() {
            return;
        }
        let root = node.core.intake.clone();
        let max = node.core.config.reconnect_max;
        match node.core.link(Target::Name(seed.clone())).await {
            Ok(conn) => {
                backoff = Duration::from_millis(50);
                drop(node);
                tokio::select! {
                    _ = root.cancelled() => return,
                    _ = conn.closed() => {}
                }
            }
            Err(error) => {
                debug!(%seed, %error, "seed not reachable yet");
                drop(node);
                let jitter = Duration::from_millis(rand::random::<u64>() % 50);
                tokio::select! {
                    _ = root.cancelled() => return,
                    _ = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(max);
            }
        }
    }
}
