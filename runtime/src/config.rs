//! [`NodeConfig`]: every limit and timeout a node uses, with its default.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one node. Every bound in the runtime comes from here.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name, shown to peers and in logs. Default: `node`.
    pub name: String,
    /// Where to listen. Default: `127.0.0.1:0` (a free loopback port).
    pub listen: SocketAddr,
    /// The address peers are told to dial; default: the bound address, with an unspecified
    /// IP (0.0.0.0) replaced by loopback so a node never advertises an address nobody can dial.
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
    /// Default mailbox capacity of an actor; a full mailbox answers `Overloaded`. Default 1024.
    pub mailbox: usize,
    /// On shutdown, how long running requests may take to finish. Default 5 s.
    pub shutdown_grace: Duration,
    /// Longest wait between two attempts to reach a seed. Default 2 s.
    pub reconnect_max: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "node".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            seeds: Vec::new(),
            max_frame: 16 << 20,
            default_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            max_in_flight: 4096,
            mailbox: 1024,
            shutdown_grace: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(2),
        }
    }
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
        if self.max_in_flight == 0 || self.mailbox == 0 {
            return Err("max_in_flight and mailbox must be at least 1".to_owned());
        }
        if self.name.is_empty() {
            return Err("the node name must not be empty".to_owned());
        }
        Ok(())
    }
}
