//! Starting a node: [`NodeBuilder`] collects the settings, and [`start`] binds the sockets and
//! wires the layers together, handing each subsystem only the handles it needs — the links
//! get the dispatcher and the bounds, membership the links, discovery the membership handle,
//! the gateway an address to call and the stats to report.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{Core, Node, WhoAmI};
use crate::actors::Actors;
use crate::cluster;
use crate::cluster::discovery::{self, Discovery};
use crate::cluster::links::Links;
use crate::cluster::membership::{self, Rumor, SwimStart};
use crate::cluster::seeds::{self, Seeds};
use crate::cluster::sync::Sync;
use crate::cluster::Joined;
use crate::config::NodeConfig;
use crate::error::StartError;
use crate::handlers::{introspection, Handlers};
#[cfg(feature = "gateway")]
use crate::http::{
    access::Access,
    gateway::{self, GatewayCtx},
    metrics::Stats,
    server::ServerCtx,
};
use crate::link::tls::Tls;
use crate::link::{Limits, LinkCtx};
use crate::wire::swim::SwimId;
use crate::wire::{Identity, NodeId};

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

    /// Where to listen: a `SocketAddr` or `"HOST:PORT"`, a name resolved at start
    /// (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: impl ToString) -> Self {
        self.config.listen = addr.to_string();
        self
    }

    /// The address to tell peers, when it differs from the listen address.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.config.advertise = Some(addr);
        self
    }

    /// Adds a node to join through: a `SocketAddr` or `"HOST:PORT"` (a name is resolved, and
    /// every address it returns dialed). Retried until reached; [`Node::joined`] waits for it.
    pub fn seed(mut self, addr: impl ToString) -> Self {
        self.config.seeds.push(addr.to_string());
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

    /// The cluster cookie every peer and client must prove it knows.
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.config.cookie = Some(cookie.into());
        self
    }

    /// Serves the HTTP gateway (XML-RPC, JSON-RPC, `/metrics`, `/health`) at `addr`.
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.config.http = Some(addr);
        self
    }

    /// The token HTTP callers must present (Basic password or Bearer token).
    pub fn http_token(mut self, token: impl Into<String>) -> Self {
        self.config.http_token = Some(token.into());
        self
    }

    /// Where virtual actors that persist keep their state: `sqlite:PATH` or
    /// `postgres://…` (the `--state` flag's URL). Without it they run volatile.
    pub fn state(mut self, url: impl Into<String>) -> Self {
        self.config.state = Some(url.into());
        self
    }

    /// Binds the listener and starts the node; seeds are dialed in the background.
    ///
    /// # Errors
    /// [`StartError`] if the configuration is invalid or the address cannot be bound.
    pub async fn start(self) -> Result<Node, StartError> {
        start(self.config).await
    }
}

/// Binds the listener (and the gateway's, and the beacon socket), starts every subsystem and
/// returns the node; seeds are dialed in the background.
pub(super) async fn start(config: NodeConfig) -> Result<Node, StartError> {
    config.validate().map_err(StartError::Config)?;
    // The store first: a node that cannot keep its persistent state takes no part in the
    // cluster at all.
    let store = match &config.state {
        Some(url) => {
            let store = crate::state::open(url)
                .await
                .map_err(|e| StartError::State(e.to_string()))?;
            info!(store = %store.describe(), "virtual actors that persist keep their state here");
            let switch = crate::state::test_unsafe();
            if switch != crate::state::TestUnsafe::Off {
                warn!(?switch, "MESHRPC_TEST_UNSAFE is set: persistent state is NOT protected (a test build's switch)");
            }
            Some(store)
        }
        None => {
            info!("no state store (--state): every virtual actor's state lives only in its activation");
            None
        }
    };
    // TLS covers links, not membership's UDP datagrams, which only the cookie seals: without
    // one, a process with no certificate could join membership and rewrite it.
    if config.tls.is_some() && config.cookie.is_none() {
        return Err(StartError::Config(
            "a node with TLS needs a cluster cookie too (--cookie or MESHRPC_COOKIE): TLS \
             protects links, the cookie seals membership datagrams, which TLS does not cover"
                .to_owned(),
        ));
    }
    if config.client_secret.is_some() && config.cookie.is_none() {
        return Err(StartError::Config(
            "a client secret keeps callers from being nodes, which means nothing without a \
             cluster cookie (anyone could join as a node): give the node --cookie too"
                .to_owned(),
        ));
    }
    let tls = match &config.tls {
        Some(files) => Some(Tls::load(files).map_err(StartError::Tls)?),
        None => None,
    };
    #[cfg(not(feature = "gateway"))]
    if config.http.is_some() {
        return Err(StartError::Config(
            "this build of meshrpc has no HTTP gateway: build it with the `gateway` feature \
             (on by default)"
                .to_owned(),
        ));
    }
    #[cfg(feature = "gateway")]
    let https = match (&config.tls, config.http_tls) {
        (Some(files), true) => {
            Some(crate::link::tls::https_acceptor(files).map_err(StartError::Tls)?)
        }
        _ => None,
    };
    let bind_error = |addr: String| move |source| StartError::Bind { addr, source };
    let (listener, udp) = bind_port(&config.listen)
        .await
        .map_err(bind_error(config.listen.clone()))?;
    let bound = listener
        .local_addr()
        .map_err(bind_error(config.listen.clone()))?;
    let addr = config.advertise.unwrap_or_else(|| advertised(bound));
    let identity = Identity {
        id: NodeId::random(),
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
            TcpListener::bind(at)
                .await
                .map_err(bind_error(at.to_string()))?,
        ),
        None => None,
    };
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());

    let root = CancellationToken::new();
    let tasks = TaskTracker::new();
    let closing = Arc::new(AtomicBool::new(false));
    // Per-call metrics are recorded for a node that serves them (`/metrics`, the dashboard).
    let metered = http.is_some();
    let limits = Arc::new(Limits::new(closing.clone(), &config, metered));
    let handlers_stop = CancellationToken::new();
    let handlers = Handlers::new(tasks.clone(), handlers_stop.clone(), config.mailbox);
    let ctx = LinkCtx {
        dispatch: Arc::new(handlers.clone()),
        limits: limits.clone(),
        tasks: tasks.clone(),
    };
    let me = SwimId {
        addr,
        id: identity.id,
        name: identity.name.clone(),
        incarnation: identity.incarnation,
        bump: 0,
    };
    let swim = SwimStart {
        me,
        socket: udp,
        config: membership::swim_config(config.heartbeat, config.down_after),
        cookie: config.cookie.clone(),
    };
    let membership = membership::start(swim, root.clone(), &tasks);
    // Links name the gateway's bound address to an HTTP client on the binary port.
    let links_config = NodeConfig {
        http: http_addr.or(config.http),
        ..config.clone()
    };
    let links = Links::new(
        identity,
        links_config,
        tls,
        ctx,
        root.clone(),
        handlers_stop,
        membership.directory().clone(),
    );

    introspection::register(&handlers);
    cluster::register_methods(&handlers, links.downgrade(), &membership);
    register_whoami(&handlers, links.identity());
    let actors = Actors::new(
        handlers.clone(),
        links.clone(),
        membership.clone(),
        closing.clone(),
        (config.down_after, config.default_timeout),
        config.max_activations,
        store,
    );

    let id = links.identity().id;
    info!(name = %config.name, %id, %addr, "node listening");
    if config.cookie.is_none() {
        info!("no cluster cookie: any process that can reach {addr} may join and call methods, and membership datagrams are not authenticated");
    }
    let intake = links.intake().clone();
    tasks.spawn(actors.clone().run(root.clone()));
    tasks.spawn(links.clone().accept_loop(listener));
    if !config.link_idle.is_zero() {
        tasks.spawn(links.clone().reap_idle(config.link_idle));
    }
    // Ready (`/ready`) once joined through the seeds; at once without seeds.
    let joined = Joined::new(config.seeds.is_empty());
    #[cfg(feature = "gateway")]
    if let Some(listener) = http {
        let http_shown = http_addr.map_or_else(String::new, |a| a.to_string());
        let scheme = if config.http_tls { "https" } else { "http" };
        let access = if config.http_token.is_some() {
            "token required"
        } else {
            "open to anyone who can reach it"
        };
        info!(addr = %http_shown, %scheme, %access, "gateway (XML-RPC, JSON-RPC, /metrics, /health)");
        let gateway = GatewayCtx {
            links: links.downgrade(),
            client: NodeConfig {
                name: format!("{}-http", config.name),
                default_timeout: config.default_timeout,
                max_frame: config.max_frame,
                ..NodeConfig::default()
            },
            max_body: config.http_max_body,
            closing: closing.clone(),
            joined: joined.clone(),
            access: Access::new(config.http_token.as_deref(), &config.http_methods),
            stats: Stats {
                name: config.name.clone(),
                id,
                addr,
                calls: limits.calls.clone(),
                links: links.downgrade(),
                membership: membership.clone(),
                mailboxes: handlers.mailboxes.clone(),
                activations: {
                    let actors = actors.clone();
                    Arc::new(move || actors.counts())
                },
            },
            server: ServerCtx {
                tls: https,
                header_timeout: config.http_header_timeout,
                max_connections: config.http_max_connections,
                // Until the very end, so probes see the shutdown (`/ready` 503) while
                // running calls finish; calls through it are refused with `shutdown`.
                intake: root.clone(),
                tasks: tasks.clone(),
            },
        };
        tasks.spawn(gateway::serve(gateway, listener));
    }
    if let (Some(socket), Some(multicast)) = (beacons, config.multicast.clone()) {
        let identity = links.identity();
        let discovery = Discovery {
            socket,
            config: multicast,
            me: Rumor {
                name: identity.name.clone(),
                id: identity.id,
                incarnation: identity.incarnation,
                addr,
            },
            cookie: config.cookie.clone(),
            interval: config.heartbeat,
        };
        tasks.spawn(discovery::run(
            discovery,
            membership.clone(),
            intake.clone(),
        ));
    }
    let (met, met_rx) = tokio::sync::mpsc::channel(16);
    let sync = Sync {
        links: links.clone(),
        membership: membership.clone(),
        every: config.heartbeat * 30,
        soon: config.heartbeat * 5,
        // Background work, and a thousand members take time to encode and apply on a
        // busy machine: not bounded by the failure detector's `down_after`.
        timeout: config.down_after.max(Duration::from_secs(10)),
        met: met_rx,
    };
    tasks.spawn(cluster::sync::run(sync, intake.clone()));
    if !config.seeds.is_empty() {
        let seeds = Seeds {
            seeds: config.seeds.clone(),
            membership: membership.clone(),
            answer_within: config
                .down_after
                .mul_f64(0.55)
                .max(Duration::from_millis(200)),
            reconnect_max: config.reconnect_max,
            rendezvous_max: (config.heartbeat * 10).max(config.reconnect_max),
            recheck: config.heartbeat * 30,
            me: vec![addr, bound],
            joined: joined.clone(),
            met,
        };
        tasks.spawn(seeds::run(seeds, intake.clone()));
    }
    let core = Core {
        config,
        addr,
        bound,
        http_addr,
        links,
        membership,
        handlers,
        actors,
        limits,
        tasks,
        root,
        stopped: CancellationToken::new(),
        joined,
    };
    Ok(Node {
        core: Arc::new(core),
    })
}

/// Binds the TCP listener and, on the same address and port number, the UDP socket of
/// membership. For port 0 the pair is retried until both are free.
async fn bind_port(listen: &str) -> std::io::Result<(TcpListener, UdpSocket)> {
    let mut last = None;
    for _ in 0..16 {
        // `TcpListener::bind` resolves a name and tries each address it returns.
        let tcp = TcpListener::bind(listen).await?;
        let at = tcp.local_addr()?;
        match UdpSocket::bind(at).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(error) => {
                let asked_for_any = listen.ends_with(":0");
                if !asked_for_any {
                    return Err(std::io::Error::new(
                        error.kind(),
                        format!("UDP port {} (membership) is taken: {error}", at.port()),
                    ));
                }
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free TCP and UDP port pair")))
}

/// Registers `system.whoami`.
fn register_whoami(handlers: &Handlers, identity: &Identity) {
    let me = WhoAmI {
        name: identity.name.clone(),
        id: identity.id.to_string(),
        addr: identity.listen.clone().unwrap_or_default(),
    };
    handlers
        .register_fn("system.whoami", move |(): ()| me.clone())
        .help("system.whoami() -> {name, id, addr}: this node's identity");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without a feature says so when asked for what the feature brings, rather
    /// than starting without it.
    #[tokio::test]
    async fn what_this_build_lacks_is_a_clear_start_error() {
        let http = NodeConfig {
            http: Some("127.0.0.1:0".parse().unwrap()),
            ..NodeConfig::default()
        };
        let started = start(http).await;
        #[cfg(not(feature = "gateway"))]
        assert!(
            matches!(&started, Err(StartError::Config(why)) if why.contains("`gateway` feature")),
            "{:?}",
            started.err()
        );
        #[cfg(feature = "gateway")]
        started.expect("a gateway").shutdown().await;
        let tls = NodeConfig {
            cookie: Some("c".into()),
            tls: Some(crate::config::TlsConfig {
                cert: "missing.pem".into(),
                key: "missing-key.pem".into(),
                ca: "missing-ca.pem".into(),
            }),
            ..NodeConfig::default()
        };
        let refused = start(tls).await.err().map(|e| e.to_string());
        #[cfg(not(feature = "tls"))]
        assert!(refused.unwrap().contains("`tls` feature"));
        #[cfg(feature = "tls")]
        assert!(refused.unwrap().contains("missing.pem"));
    }
}
