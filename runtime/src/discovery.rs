//! Zero-configuration discovery on one LAN or one machine: every node sends a small UDP
//! beacon to a multicast group each heartbeat and listens on that group; a beacon from the
//! same cluster name becomes a rumor for the membership actor, which dials the sender.
//! Beacons from other clusters, from this node, or that do not decode are ignored. The task
//! stops with the node's intake (at the start of shutdown).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Weak;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::membership::Rumor;
use crate::node::Core;
use crate::wire::{self, NodeId};

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

/// One beacon: who sends it and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Beacon {
    cluster: String,
    name: String,
    id: NodeId,
    incarnation: u64,
    addr: SocketAddr,
}

/// Largest beacon accepted; a real one is well under 200 bytes.
const MAX_BEACON: usize = 1024;

/// Opens the multicast socket. Several nodes on one machine share the port (SO_REUSEPORT).
pub(crate) fn open(config: &MulticastConfig) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.group.port())).into())?;
    socket.join_multicast_v4(config.group.ip(), &config.interface)?;
    socket.set_multicast_if_v4(&config.interface)?;
    socket.set_multicast_ttl_v4(config.ttl)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Sends beacons every `interval` and turns the ones heard into rumors.
pub(crate) async fn run(
    core: Weak<Core>,
    socket: UdpSocket,
    config: MulticastConfig,
    interval: Duration,
) {
    let Some(node) = core.upgrade() else { return };
    let intake = node.intake.clone();
    let me = Beacon {
        cluster: config.cluster.clone(),
        name: node.identity.name.clone(),
        id: node.identity.id,
        incarnation: node.identity.incarnation,
        addr: node.addr,
    };
    drop(node);
    let Ok(beacon) = wire::encode_handshake(&me) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    let mut buf = vec![0u8; MAX_BEACON];
    let mut warned = false;
    loop {
        tokio::select! {
            _ = intake.cancelled() => return,
            _ = tick.tick() => {
                if let Err(error) = socket.send_to(&beacon, config.group).await {
                    if !warned {
                        warn!(group = %config.group, %error, "cannot send discovery beacons");
                        warned = true;
                    }
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                let Some(heard) = decode(&buf[..n]) else {
                    debug!(%from, "ignored an undecodable beacon");
                    continue;
                };
                if heard.cluster != me.cluster || heard.id == me.id {
                    continue;
                }
                let Some(node) = core.upgrade() else { return };
                node.membership.heard(vec![Rumor {
                    name: heard.name,
                    id: heard.id,
                    incarnation: heard.incarnation,
                    addr: heard.addr,
                }]);
            }
        }
    }
}

fn decode(datagram: &[u8]) -> Option<Beacon> {
    let payload = datagram.get(4..)?;
    wire::decode_handshake(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacons_round_trip_and_garbage_is_ignored() {
        let beacon = Beacon {
            cluster: "c".into(),
            name: "n".into(),
            id: NodeId(5),
            incarnation: 6,
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let bytes = wire::encode_handshake(&beacon).unwrap();
        assert_eq!(decode(&bytes), Some(beacon));
        assert_eq!(decode(&[0, 0]), None);
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }
}
