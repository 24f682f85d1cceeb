//! [`NodeConfig`]: every limit and timeout a node uses, with its default; and the settings
//! of its optional parts, [`TlsConfig`] and [`MulticastConfig`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one node. Every bound in the runtime comes from here.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node's name, shown to peers and in logs. Default: `node`.
    pub name: String,
    /// Where to listen, `HOST:PORT` (a name is resolved at start; port 0 picks a free port).
    /// Default: `127.0.0.1:0`.
    pub listen: String,
    /// The address peers are told to dial; default: the bound address, with an unspecified
    /// IP (0.0.0.0) replaced by 127.0.0.1. Set it when peers on other hosts (or behind a
    /// proxy) must dial another address.
    pub advertise: Option<SocketAddr>,
    /// Peers to connect to at start (`HOST:PORT`), retried with backoff until reached.
    pub seeds: Vec<String>,
    /// Largest frame accepted or sent, in bytes. Default 16 MiB; at most 64 MiB.
    pub max_frame: usize,
    /// Deadline of a call made without an explicit timeout. Default 30 s.
    pub default_timeout: Duration,
    /// Time allowed to open a TCP connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for the handshake once connected. Default 5 s.
    pub handshake_timeout: Duration,
    /// Requests a connection may have running on this node at once; more get `Overloaded`.
    /// Default 4096.
    pub max_in_flight: usize,
    /// Requests all links together may have running on this node at once; more get
    /// `Overloaded`. Default 65 536.
    pub max_in_flight_node: usize,
    /// Default mailbox capacity of an actor; a full mailbox answers `Overloaded`. Default 1024.
    pub mailbox: usize,
    /// How many virtual-actor activations this node may hold: past nine tenths of it the
    /// least recently called are deactivated (hooks run), and a new one that finds it full
    /// is refused `overloaded`. Default 1 000 000 (under a gigabyte at the demo counter's
    /// size).
    pub max_activations: usize,
    /// Where virtual actors that persist keep their state: `sqlite:PATH` (one file, which
    /// several nodes on one machine may share) or `postgres://USER@HOST:PORT/DB`. `None`:
    /// every virtual actor's state lives only in its activation (the node says so once).
    pub state: Option<String>,
    /// The longest a request may run on this node, whatever deadline its caller gave (or
    /// none): a caller that never gives up cannot hold a slot forever. Streams are not
    /// bounded by it. Default 5 minutes; zero: no bound.
    pub max_call: Duration,
    /// On shutdown, how long running requests may take to finish. Default 5 s.
    pub shutdown_grace: Duration,
    /// Longest wait between two attempts to reach a seed or a lost peer. Default 2 s.
    pub reconnect_max: Duration,
    /// Idle time after which a link carries a heartbeat, and the longest membership news
    /// waits before it is pushed to a few members (at most 200 ms). Default 500 ms.
    pub heartbeat: Duration,
    /// Silence after which a link is dropped; and for membership, about twice the longest
    /// wait for a probe's answer and how long a member stays `suspect` before it is `down`
    /// (docs/MEMBERSHIP.md has the mapping). Default 2 s; must exceed twice the heartbeat.
    pub down_after: Duration,
    /// A link on which no call went either way for this long is closed (links open again on
    /// the next call). Default 60 s; zero keeps links open.
    pub link_idle: Duration,
    /// The cluster cookie: when set, both ends of every link must prove they know it (an
    /// HMAC challenge-response; the secret never crosses the wire). Default: none, anyone
    /// may connect.
    pub cookie: Option<String>,
    /// The client credential (needs `cookie`): plain clients may prove it instead of the
    /// cookie, which lets them call methods but never be a node — no link that announces a
    /// listen address, no node-only method. Give nodes the cookie and callers this
    /// (docs/SECURITY.md). On a client's configuration: what it proves when it has no
    /// cookie. Default: none.
    pub client_secret: Option<String>,
    /// Multicast discovery: beacons on a group find the other nodes of the same cluster with
    /// no seeds. Default: off.
    pub multicast: Option<MulticastConfig>,
    /// Serve XML-RPC, JSON-RPC 2.0, `/metrics` and `/health` over HTTP here. Default: off.
    pub http: Option<SocketAddr>,
    /// Largest HTTP request body the gateway reads; larger ones get 413. Default 1 MiB.
    pub http_max_body: usize,
    /// The gateway's credential: callers present it as the password of HTTP Basic
    /// authentication (any user name) or as `Authorization: Bearer TOKEN`; others get 401.
    /// `/health` and `/ready` need none. Default: none.
    pub http_token: Option<String>,
    /// Serve the gateway without a token although the node has a cookie or TLS: the
    /// explicit choice of a public gateway. Default: false (such a node refuses to start).
    pub http_open: bool,
    /// Serve the gateway over HTTPS with the node's certificate (needs `tls`). Default: off.
    pub http_tls: bool,
    /// The methods the gateway serves, as patterns where `*` matches any run of characters
    /// (`add`, `counter.*`). Default: empty, meaning every method; node-only methods are
    /// refused whatever the list says.
    pub http_methods: Vec<String>,
    /// Time a client has to send a request's headers (and, once a request is done, to start
    /// the next one: it also closes idle keep-alive connections), and then its body.
    /// Default 10 s.
    pub http_header_timeout: Duration,
    /// HTTP connections open at once; beyond it new ones are closed at once. Default 10 000.
    pub http_max_connections: usize,
    /// Bytes of large frames (over 1 MiB) in progress this node may hold across all its
    /// links; a link whose frame would pass it is closed, saying why. Within one link a frame
    /// is bounded by `max_frame`. Default 256 MiB.
    pub frame_budget: usize,
    /// Links (to nodes and clients) this node holds at once; a dialer beyond it is refused
    /// after its handshake, saying why, before file descriptors run out. Default 10 000.
    pub max_connections: usize,
    /// Connections to the binary port still in their handshake; beyond it new ones are
    /// closed at once. Default 10 000.
    pub max_handshakes: usize,
    /// Mutual TLS on every link (certificate, key, cluster CA). Default: off (plain TCP).
    pub tls: Option<TlsConfig>,
    /// The newest protocol version this node speaks on links: this release's
    /// ([`crate::wire::PROTOCOL_VERSION`]) by default, or the one before
    /// ([`crate::wire::PREVIOUS_VERSION`]) to speak exactly as the previous release does.
    /// Either way links use the newest version both ends speak (docs/DEPLOY.md, upgrades).
    pub max_protocol: u16,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "node".to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            advertise: None,
            seeds: Vec::new(),
            max_frame: 16 << 20,
            default_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            max_in_flight: 4096,
            max_in_flight_node: 65_536,
            mailbox: 1024,
            max_call: Duration::from_secs(300),
            max_activations: 1_000_000,
            state: None,
            shutdown_grace: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(2),
            heartbeat: Duration::from_millis(500),
            down_after: Duration::from_secs(2),
            link_idle: Duration::from_secs(60),
            cookie: None,
            client_secret: None,
            multicast: None,
            http: None,
            http_max_body: 1 << 20,
            http_token: None,
            http_open: false,
            http_tls: false,
            http_methods: Vec::new(),
            http_header_timeout: Duration::from_secs(10),
            http_max_connections: 10_000,
            max_handshakes: 10_000,
            max_connections: 10_000,
            frame_budget: 256 << 20,
            tls: None,
            max_protocol: crate::wire::PROTOCOL_VERSION,
        }
    }
}

/// The shortest HTTP token a node accepts.
pub(crate) const MIN_TOKEN: usize = 16;

impl NodeConfig {
    /// The oldest and newest protocol versions this configuration speaks.
    pub(crate) fn protocol_versions(&self) -> (u16, u16) {
        (crate::wire::PREVIOUS_VERSION, self.max_protocol)
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("max_frame", &self.max_frame)
            .field("default_timeout", &self.default_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_node", &self.max_in_flight_node)
            .field("mailbox", &self.mailbox)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("reconnect_max", &self.reconnect_max)
            .field("heartbeat", &self.heartbeat)
            .field("down_after", &self.down_after)
            .field("link_idle", &self.link_idle)
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("multicast", &self.multicast)
            .field("http", &self.http)
            .field("http_max_body", &self.http_max_body)
            .field(
                "http_token",
                &self.http_token.as_ref().map(|_| "<redacted>"),
            )
            .field("http_open", &self.http_open)
            .field("http_tls", &self.http_tls)
            .field("http_methods", &self.http_methods)
            .field("http_header_timeout", &self.http_header_timeout)
            .field("http_max_connections", &self.http_max_connections)
            .field("max_handshakes", &self.max_handshakes)
            .field("max_connections", &self.max_connections)
            .field("frame_budget", &self.frame_budget)
            .field("tls", &self.tls)
            .field("max_protocol", &self.max_protocol)
            .field("max_call", &self.max_call)
            .field("max_activations", &self.max_activations)
            .field("state", &self.state.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// Checks that `value` reads as `HOST:PORT` (a name, an IPv4 address or `[IPv6]`, then a
/// port number): a seed without a port would be retried forever.
pub(crate) fn host_port(what: &str, value: &str) -> Result<(), String> {
    let hint = |why: &str| {
        format!(
            "{what} `{value}` {why}: give HOST:PORT, such as 127.0.0.1:4000 or node-a.local:4000"
        )
    };
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(hint("has no port"));
    };
    if host.is_empty() {
        return Err(hint("has no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(hint(
            "has no port (an IPv6 address goes in brackets: [::1]:4000)",
        ));
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| hint("has no valid port"))
}

impl NodeConfig {
    /// Checks the values that would make the node misbehave.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_frame < 1024 || self.max_frame > crate::wire::DECODE_LIMIT {
            return Err(format!(
                "max_frame must be between 1 KiB and {} bytes, got {}",
                crate::wire::DECODE_LIMIT,
                self.max_frame
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight_node == 0 || self.mailbox == 0 {
            return Err(
                "max_in_flight, max_in_flight_node and mailbox must be at least 1".to_owned(),
            );
        }
        if self.heartbeat < Duration::from_millis(10) || self.down_after <= self.heartbeat * 2 {
            return Err(format!(
                "heartbeat must be at least 10 ms and down_after more than twice it, got {:?} and {:?}",
                self.heartbeat, self.down_after
            ));
        }
        if self.cookie.as_deref() == Some("") {
            return Err("the cookie must not be empty".to_owned());
        }
        if let Some(secret) = &self.client_secret {
            if secret.chars().count() < MIN_TOKEN {
                return Err(format!(
                    "the client secret has {} characters: give it at least {MIN_TOKEN} (say, `openssl rand -hex 16`)",
                    secret.chars().count()
                ));
            }
            if self.cookie.as_ref() == Some(secret) {
                return Err(
                    "the client secret must differ from the cookie: whoever holds the cookie \
                     may be a node"
                        .to_owned(),
                );
            }
        }
        let (oldest, newest) = (crate::wire::PREVIOUS_VERSION, crate::wire::PROTOCOL_VERSION);
        if !(oldest..=newest).contains(&self.max_protocol) {
            return Err(format!(
                "max_protocol must be {oldest} or {newest} (the versions this release speaks), got {}",
                self.max_protocol
            ));
        }
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(format!(
                "the node name must have 1 to 64 bytes, got {}",
                self.name.len()
            ));
        }
        if !self.link_idle.is_zero() && self.link_idle < Duration::from_millis(10) {
            return Err("link_idle must be 0 (never) or at least 10 ms".to_owned());
        }
        host_port("listen", &self.listen)?;
        for seed in &self.seeds {
            host_port("seed", seed)?;
        }
        if let Some(token) = &self.http_token {
            if token.chars().count() < MIN_TOKEN {
                return Err(format!(
                    "the HTTP token has {} characters: give it at least {MIN_TOKEN} (say, `openssl rand -hex 16`), or it can be guessed",
                    token.chars().count()
                ));
            }
        }
        if self.frame_budget < self.max_frame {
            return Err(format!(
                "frame_budget ({} bytes) must hold at least one frame of max_frame ({} bytes)",
                self.frame_budget, self.max_frame
            ));
        }
        if self.http_max_connections == 0 || self.max_handshakes == 0 || self.max_connections == 0 {
            return Err(
                "http_max_connections, max_handshakes and max_connections must be at least 1"
                    .to_owned(),
            );
        }
        if self.http_tls && self.tls.is_none() {
            return Err(
                "--http-tls serves the gateway with the node's certificate: give the node \
                 --tls-cert, --tls-key and --tls-ca"
                    .to_owned(),
            );
        }
        let protected = self.cookie.is_some() || self.tls.is_some();
        if self.http.is_some() && protected && self.http_token.is_none() && !self.http_open {
            return Err(
                "this node keeps strangers out of its binary port (cookie or TLS), but its HTTP \
                 gateway would let anyone call every method: give the gateway a token with \
                 --http-token (or MESHRPC_HTTP_TOKEN), or make it public on purpose with \
                 --http-open"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// This side's certificate chain, signed by the CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster CA: peers' certificates must be signed by it.
    pub ca: PathBuf,
}

/// Where and how beacons are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastConfig {
    /// The group and port. Default `239.255.77.77:47777` (organization-local scope).
    pub group: SocketAddrV4,
    /// The interface to send and listen on; `0.0.0.0` lets the OS choose by its routes,
    /// `127.0.0.1` keeps beacons on this machine. Default `0.0.0.0`.
    pub interface: Ipv4Addr,
    /// Only nodes with the same cluster name connect. Default `meshrpc`.
    pub cluster: String,
    /// Hops a beacon may take; 1 keeps it on the local network. Default 1.
    pub ttl: u32,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig {
            group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 77), 47777),
            interface: Ipv4Addr::UNSPECIFIED,
            cluster: "meshrpc".to_owned(),
            ttl: 1,
        }
    }
}
