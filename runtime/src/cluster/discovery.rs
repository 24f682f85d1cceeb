//! Zero-configuration discovery on one LAN or one machine: every node sends a small UDP
//! beacon to a multicast group each heartbeat and listens on that group; a beacon from an
//! unknown member of the same cluster name makes membership announce itself to the sender.
//! Beacons from other clusters, from this node, or that do not decode are ignored. With a
//! cluster cookie, beacons carry a MAC under it and unsigned or mis-signed ones are ignored,
//! so a stranger on the network cannot make nodes dial it. The task stops with the node's
//! intake (at the start of shutdown).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::membership::{Membership, Rumor};
use crate::config::MulticastConfig;
use crate::link::auth::{self, Sealed as Mac};
use crate::wire::swim::DATAGRAM_VERSION;
use crate::wire::{self, NodeId, Proof};

/// One beacon: who sends it and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Beacon {
    cluster: String,
    name: String,
    id: NodeId,
    incarnation: u64,
    addr: SocketAddr,
}

/// A beacon and, with a cookie, its MAC over the beacon's bincode bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sealed {
    beacon: Beacon,
    proof: Option<Proof>,
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

/// A node's beacon, ready to run.
pub(crate) struct Discovery {
    pub(crate) socket: UdpSocket,
    pub(crate) config: MulticastConfig,
    /// This node, as its beacon describes it.
    pub(crate) me: Rumor,
    pub(crate) cookie: Option<String>,
    /// How often a beacon goes out.
    pub(crate) interval: Duration,
}

/// Sends beacons every `interval` and tells `membership` about the ones heard, until
/// `intake` is cancelled.
pub(crate) async fn run(discovery: Discovery, membership: Membership, intake: CancellationToken) {
    let Discovery {
        socket,
        config,
        me,
        cookie,
        interval,
    } = discovery;
    let me = Beacon {
        cluster: config.cluster.clone(),
        name: me.name,
        id: me.id,
        incarnation: me.incarnation,
        addr: me.addr,
    };
    let Some(beacon) = encode(&me, cookie.as_deref()) else {
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
                let Some(heard) = decode(&buf[..n], cookie.as_deref()) else {
                    debug!(%from, "ignored an undecodable or unsigned beacon");
                    continue;
                };
                if heard.cluster != me.cluster || heard.id == me.id {
                    continue;
                }
                // Members are found once: a beacon from one already known is no news.
                let known = membership
                    .directory()
                    .snapshot()
                    .by_id(heard.id)
                    .is_some_and(|m| m.status.is_live());
                if !known {
                    membership.announce(vec![heard.addr]);
                }
            }
        }
    }
}

fn encode(beacon: &Beacon, cookie: Option<&str>) -> Option<bytes::Bytes> {
    let proof = match cookie {
        Some(cookie) => Some(auth::seal(cookie, Mac::Beacon, &body_bytes(beacon)?)),
        None => None,
    };
    let sealed = Sealed {
        beacon: beacon.clone(),
        proof,
    };
    wire::encode_handshake_at(&sealed, DATAGRAM_VERSION).ok()
}

fn decode(datagram: &[u8], cookie: Option<&str>) -> Option<Beacon> {
    let (_, sealed): (_, Sealed) =
        wire::decode_handshake_versioned(datagram.get(4..)?, DATAGRAM_VERSION, DATAGRAM_VERSION)
            .ok()?;
    match (cookie, &sealed.proof) {
        (None, _) => Some(sealed.beacon),
        (Some(cookie), Some(proof))
            if auth::verify_seal(cookie, Mac::Beacon, &body_bytes(&sealed.beacon)?, proof) =>
        {
            Some(sealed.beacon)
        }
        (Some(_), _) => None,
    }
}

fn body_bytes(beacon: &Beacon) -> Option<Vec<u8>> {
    let mut buf = bytes::BytesMut::new();
    wire::codec::encode_into(beacon, &mut buf).ok()?;
    Some(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon() -> Beacon {
        Beacon {
            cluster: "c".into(),
            name: "n".into(),
            id: NodeId(5),
            incarnation: 6,
            addr: "127.0.0.1:9".parse().unwrap(),
        }
    }

    #[test]
    fn beacons_round_trip_and_garbage_is_ignored() {
        let bytes = encode(&beacon(), None).unwrap();
        assert_eq!(decode(&bytes, None), Some(beacon()));
        assert_eq!(decode(&[0, 0], None), None);
        assert_eq!(decode(&bytes[..bytes.len() - 1], None), None);
    }

    #[test]
    fn with_a_cookie_only_beacons_sealed_with_it_count() {
        let sealed = encode(&beacon(), Some("k")).unwrap();
        assert_eq!(decode(&sealed, Some("k")), Some(beacon()));
        assert_eq!(decode(&sealed, Some("other")), None);
        assert_eq!(
            decode(&encode(&beacon(), None).unwrap(), Some("k")),
            None,
            "unsigned"
        );
        // A forged address under a copied proof does not verify.
        let mut forged: Sealed = wire::decode_handshake(&sealed[4..]).unwrap();
        forged.beacon.addr = "127.0.0.1:666".parse().unwrap();
        let forged = wire::encode_handshake_at(&forged, DATAGRAM_VERSION).unwrap();
        assert_eq!(decode(&forged, Some("k")), None);
    }
}
