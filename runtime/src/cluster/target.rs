//! [`Target`]: how a caller names a peer (an address, a name, an id), and resolving
//! `host:port` names to addresses.

use std::fmt;
use std::net::SocketAddr;

use crate::wire::NodeId;

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

/// Every address `host:port` resolves to.
pub(crate) async fn resolve(host_port: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs = tokio::net::lookup_host(host_port)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?;
    Ok(addrs.collect())
}
