//! The caller's side: [`Peer`] (a handle to one link, with typed and dynamic calls),
//! [`Target`] (how a peer is named), [`CallOptions`], and [`Client`], a connection for
//! programs that only call and are not nodes (the CLI is one).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{Connection, Parts};
use crate::methods::{Method, Methods};
use crate::serve::{decode_result, ServeCtx};
use crate::tls::Tls;
use crate::transport::{self, Local};
use crate::wire::{Encoding, Identity, NodeId};
use crate::{NodeConfig, RpcError};

/// Who is at the other end of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PeerInfo {
    /// The peer's id for this run.
    pub id: NodeId,
    /// The peer's name.
    pub name: String,
    /// The address the peer listens on; `None` for a plain client.
    pub addr: Option<SocketAddr>,
    /// The socket address the link comes from.
    pub remote: SocketAddr,
    /// When the peer's current run started (ms since the Unix epoch); larger is newer.
    pub incarnation: u64,
}

/// How to reach a peer: by address, by name (of a connected peer, or `host:port` to resolve),
/// or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A listen address; dialed if not connected yet.
    Addr(SocketAddr),
    /// A connected peer's name, or a `host:port` to resolve and dial.
    Name(String),
    /// A connected peer's id.
    Id(NodeId),
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::Addr(addr)
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Self {
        match s.parse() {
            Ok(addr) => Target::Addr(addr),
            Err(_) => Target::Name(s.to_owned()),
        }
    }
}

impl From<String> for Target {
    fn from(s: String) -> Self {
        Target::from(s.as_str())
    }
}

impl From<&String> for Target {
    fn from(s: &String) -> Self {
        Target::from(s.as_str())
    }
}

impl From<NodeId> for Target {
    fn from(id: NodeId) -> Self {
        Target::Id(id)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name(name) => f.write_str(name),
            Target::Id(id) => write!(f, "{id}"),
        }
    }
}

/// Per-call settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// How long to wait for the reply; default: the node's (or client's) default timeout.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Options with this timeout.
    pub fn timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout: Some(timeout),
        }
    }
}

/// A handle to one peer's link; cheap to clone. Calls fail with `Disconnected` once the link
/// closes: ask the node for the peer again to reconnect.
#[derive(Clone)]
pub struct Peer {
    pub(crate) conn: Connection,
    pub(crate) default_timeout: Duration,
    /// Set when the local node shuts down: new calls fail with `Shutdown`.
    pub(crate) closing: Arc<AtomicBool>,
}

impl Peer {
    /// Who this peer is.
    pub fn info(&self) -> &PeerInfo {
        self.conn.peer()
    }

    /// False once the link has closed.
    pub fn is_connected(&self) -> bool {
        !self.conn.is_closed()
    }

    /// Calls `method` with `args` (bincode) and decodes the result as `R`.
    ///
    /// # Errors
    /// Any [`RpcError`]: the callee's (method not found, bad arguments, application error,
    /// panic, overload) or the link's (timeout, disconnected, frame too large).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call; its late reply is discarded.
    pub async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<R, RpcError> {
        self.call_with(method, args, CallOptions::default()).await
    }

    /// [`Peer::call`] with options.
    pub async fn call_with<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        options: CallOptions,
    ) -> Result<R, RpcError> {
        self.check_open()?;
        let timeout = options.timeout.unwrap_or(self.default_timeout);
        let (encoding, body) = self
            .conn
            .request(method, Encoding::Bincode, &args, timeout)
            .await?;
        decode_result(encoding, &body).map_err(|e| {
            RpcError::Protocol(format!(
                "cannot decode the result of `{method}` as {}: {e}",
                std::any::type_name::<R>()
            ))
        })
    }

    /// Calls a typed method: the argument and result types come from `method`.
    pub async fn invoke<A: Serialize, R: DeserializeOwned>(
        &self,
        method: Method<A, R>,
        args: A,
    ) -> Result<R, RpcError> {
        self.call(method.name(), args).await
    }

    /// Calls `method` with `args` (bincode) and returns the result's bytes undecoded (bincode):
    /// for proxies, and for load generators that must not pay for decoding.
    ///
    /// # Errors
    /// As [`Peer::call`].
    pub async fn call_raw(
        &self,
        method: &str,
        args: impl Serialize,
        options: CallOptions,
    ) -> Result<bytes::Bytes, RpcError> {
        self.check_open()?;
        let timeout = options.timeout.unwrap_or(self.default_timeout);
        let (_, body) = self
            .conn
            .request(method, Encoding::Bincode, &args, timeout)
            .await?;
        Ok(body)
    }

    /// Calls `method` with JSON arguments (a positional array) and returns the JSON result:
    /// the path of dynamic callers such as the CLI.
    pub async fn call_json(
        &self,
        method: &str,
        args: &serde_json::Value,
        options: CallOptions,
    ) -> Result<serde_json::Value, RpcError> {
        self.check_open()?;
        let timeout = options.timeout.unwrap_or(self.default_timeout);
        let (encoding, body) = self
            .conn
            .request(method, Encoding::Json, args, timeout)
            .await?;
        decode_result(encoding, &body)
            .map_err(|e| RpcError::Protocol(format!("cannot decode the result of `{method}`: {e}")))
    }

    /// Sends a one-way message: no reply, and the callee's errors are only logged there.
    ///
    /// # Errors
    /// `Disconnected` if the link is closed, `FrameTooLarge`, or `BadArguments` if `args`
    /// cannot be encoded.
    pub fn cast(&self, method: &str, args: impl Serialize) -> Result<(), RpcError> {
        self.check_open()?;
        self.conn.cast(method, Encoding::Bincode, &args)
    }

    fn check_open(&self) -> Result<(), RpcError> {
        if self.closing.load(Ordering::Relaxed) {
            return Err(RpcError::Shutdown("this node is shutting down".to_owned()));
        }
        Ok(())
    }
}

/// A connection to a node from a program that only calls (it serves no methods).
/// Dereferences to [`Peer`] for the calls. Dropping it closes the connection.
pub struct Client {
    peer: Peer,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Client {
    /// Connects to the node at `addr` (`host:port`) with default settings.
    ///
    /// # Errors
    /// `PeerUnavailable` if it cannot be reached, `Protocol` if the handshake fails.
    pub async fn connect(addr: &str) -> Result<Client, RpcError> {
        Client::connect_with(
            addr,
            &NodeConfig {
                name: "client".to_owned(),
                ..NodeConfig::default()
            },
        )
        .await
    }

    /// Connects with the name, cookie, timeouts and limits of `config` (its listen address,
    /// seeds and mailbox are unused).
    ///
    /// # Errors
    /// `PeerUnavailable` if the node cannot be reached or refuses us (a cookie mismatch, for
    /// one), `Protocol` if the handshake fails, `Shutdown`-free otherwise.
    pub async fn connect_with(addr: &str, config: &NodeConfig) -> Result<Client, RpcError> {
        let unavailable = |reason: String| RpcError::PeerUnavailable {
            peer: addr.to_owned(),
            reason,
        };
        config
            .validate()
            .map_err(|e| unavailable(format!("invalid client configuration: {e}")))?;
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| unavailable(format!("cannot resolve: {e}")))?
            .collect();
        let identity = Identity {
            id: NodeId::random(),
            name: config.name.clone(),
            listen: None,
            max_frame: config.max_frame as u32,
            incarnation: 0,
        };
        let tls = match &config.tls {
            Some(files) => {
                Some(Tls::load(files).map_err(|e| unavailable(format!("TLS configuration: {e}")))?)
            }
            None => None,
        };
        let local = Local {
            identity: &identity,
            cookie: config.cookie.as_deref(),
            timeout: config.handshake_timeout,
            tls: tls.as_ref(),
        };
        let mut last = unavailable("the name resolved to no address".to_owned());
        for target in resolved {
            match Client::handshake(target, local, config).await {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn handshake(
        target: SocketAddr,
        local: Local<'_>,
        config: &NodeConfig,
    ) -> Result<Client, RpcError> {
        let mut socket = transport::connect(target, config.connect_timeout, local).await?;
        let greeting = transport::read_greeting(&mut socket, local).await?;
        if !transport::introduce(&mut socket, local, &greeting).await? {
            return Err(RpcError::Protocol(format!(
                "{target} answered a client's hello with `Duplicate`"
            )));
        }
        Ok(Client::start(socket, &greeting.identity, config))
    }

    fn start(socket: transport::Socket, theirs: &Identity, config: &NodeConfig) -> Client {
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ctx = ServeCtx {
            methods: Methods::default(),
            tasks: tasks.clone(),
            stop: token.clone(),
            closing: Arc::new(AtomicBool::new(false)),
            max_in_flight: config.max_in_flight,
            max_in_flight_node: config.max_in_flight_node,
            node_inbound: Default::default(),
            metered: false,
            mailboxes: Default::default(),
        };
        let peer = transport::peer_info(theirs, socket.remote);
        let parts = Parts {
            socket,
            peer,
            conn_id: 0,
            outbound: true,
            max_frame: config.max_frame.min(theirs.max_frame as usize),
            max_frame_in: config.max_frame,
            heartbeat: config.heartbeat,
            silence: config.down_after,
        };
        let conn = Connection::start(parts, None, ctx, token.child_token(), |_, _| {});
        let peer = Peer {
            conn,
            default_timeout: config.default_timeout,
            closing: Arc::new(AtomicBool::new(false)),
        };
        Client { peer, token, tasks }
    }

    /// Closes the connection and waits for its tasks to end.
    pub async fn close(self) {
        self.peer.conn.close("client closed", false);
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl std::ops::Deref for Client {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
