//! The bytes of membership: the UDP datagrams nodes exchange for SWIM (run by `foca`), and
//! the identity every member is known by. No IO, no crypto: sealing a datagram under the
//! cookie is the cluster layer's business.
//!
//! A datagram is `MAGIC_SWIM`, its format version ([`DATAGRAM_VERSION`], u16 BE), a kind
//! byte and a body, then, with a cookie, a 32-byte HMAC over everything before it:
//!
//! | kind | body |
//! |---|---|
//! | 0 `Swim` | a foca message: header, then cluster updates (bincode, see [`SwimCodec`]) |
//! | 1 `Goodbye` | bincode [`SwimId`]: the sender leaves the cluster now |
//! | 2 `Refused` | bincode `String`: the receiver will not have the sender (a name conflict) |

use std::fmt;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::NodeId;

/// The format of membership datagrams and multicast beacons: unchanged since protocol
/// version 3, so the releases that speak 3 and 4 share one membership.
pub const DATAGRAM_VERSION: u16 = 3;

/// The four bytes every membership datagram starts with.
pub const MAGIC_SWIM: [u8; 4] = *b"MRPS";

/// Largest datagram sent or accepted, everything included.
pub const MAX_DATAGRAM: usize = 1400;

/// Room left for the foca message inside a datagram: the head (7 bytes) and a MAC (32).
pub const MAX_SWIM_PAYLOAD: usize = MAX_DATAGRAM - 7 - 32;

/// Who a member is, as every membership message names it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SwimId {
    /// Where it listens: TCP for links, UDP for membership, the same port.
    pub addr: SocketAddr,
    /// Its id for this run.
    pub id: NodeId,
    /// Its name, unique among live members.
    pub name: String,
    /// When this run started (ms since the Unix epoch).
    pub incarnation: u64,
    /// Bumped when the cluster declared this run down while it was alive, so it rejoins
    /// under an identity that wins over the old one.
    pub bump: u32,
}

impl fmt::Debug for SwimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.bump)
    }
}

impl SwimId {
    /// A stand-in for a member known only by its address (a seed, a beacon): membership
    /// messages to it reach the address, and the answer names the real member.
    pub fn at(addr: SocketAddr) -> Self {
        SwimId {
            addr,
            id: NodeId(0),
            name: String::new(),
            incarnation: 0,
            bump: 0,
        }
    }

    /// Which of two identities at one address is the newer run.
    fn newer_than(&self, other: &Self) -> bool {
        (self.incarnation, self.bump) > (other.incarnation, other.bump)
    }
}

impl foca::Identity for SwimId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(SwimId {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.newer_than(adversary)
    }
}

/// What a membership datagram carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A foca message, to hand to foca as it is.
    Swim(&'a [u8]),
    /// The sender leaves the cluster.
    Goodbye(SwimId),
    /// The receiver refuses the sender, for this reason.
    Refused(String),
}

/// Why a datagram was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Not a meshrpc membership datagram.
    #[error("not a membership datagram")]
    BadMagic,
    /// Another protocol version.
    #[error("membership datagram of version {0}")]
    Version(u16),
    /// Malformed.
    #[error("malformed membership datagram: {0}")]
    Malformed(String),
}

/// The unsealed bytes of `datagram`: head, kind and body.
///
/// # Errors
/// If the body cannot be encoded.
pub fn encode_datagram(datagram: &Datagram<'_>) -> Result<BytesMut, CodecError> {
    let mut buf = BytesMut::with_capacity(MAX_DATAGRAM);
    buf.put_slice(&MAGIC_SWIM);
    buf.put_u16(DATAGRAM_VERSION);
    match datagram {
        Datagram::Swim(payload) => {
            buf.put_u8(0);
            buf.put_slice(payload);
        }
        Datagram::Goodbye(id) => {
            buf.put_u8(1);
            codec::encode_into(id, &mut buf)?;
        }
        Datagram::Refused(reason) => {
            buf.put_u8(2);
            codec::encode_into(reason, &mut buf)?;
        }
    }
    Ok(buf)
}

/// Reads an unsealed datagram (its MAC, if any, already checked and cut off).
///
/// # Errors
/// See [`DatagramError`].
pub fn decode_datagram(bytes: &[u8]) -> Result<Datagram<'_>, DatagramError> {
    if bytes.len() < 7 {
        return Err(DatagramError::Malformed(format!("{} bytes", bytes.len())));
    }
    if bytes[..4] != MAGIC_SWIM {
        return Err(DatagramError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != DATAGRAM_VERSION {
        return Err(DatagramError::Version(version));
    }
    let body = &bytes[7..];
    let malformed = |e: CodecError| DatagramError::Malformed(e.0);
    match bytes[6] {
        0 => Ok(Datagram::Swim(body)),
        1 => codec::decode_exact(body)
            .map(Datagram::Goodbye)
            .map_err(malformed),
        2 => codec::decode_exact(body)
            .map(Datagram::Refused)
            .map_err(malformed),
        kind => Err(DatagramError::Malformed(format!("unknown kind {kind}"))),
    }
}

/// foca's messages in the node's own encoding (bincode, bounded like every decode), for any
/// serde identity (the node's [`SwimId`], or the simulation's).
#[derive(Debug, Clone, Copy, Default)]
pub struct SwimCodec;

impl<T: Serialize + serde::de::DeserializeOwned> foca::Codec<T> for SwimCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &foca::Header<T>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        encode(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<foca::Header<T>, CodecError> {
        decode(buf)
    }

    fn encode_member(
        &mut self,
        member: &foca::Member<T>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        encode(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<foca::Member<T>, CodecError> {
        decode(buf)
    }
}

fn encode<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    let mut bytes = BytesMut::new();
    codec::encode_into(value, &mut bytes)?;
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError("no room left in the datagram".to_owned()));
    }
    buf.put_slice(&bytes);
    Ok(())
}

/// foca hands over contiguous slices (`&[u8]`), so the first chunk is all there is.
fn decode<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    let (value, used) = codec::decode_prefix(buf.chunk())?;
    buf.advance(used);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec;

    fn id(name: &str, bump: u32) -> SwimId {
        SwimId {
            addr: "127.0.0.1:4000".parse().unwrap(),
            id: NodeId(7),
            name: name.into(),
            incarnation: 99,
            bump,
        }
    }

    #[test]
    fn datagrams_round_trip_and_strangers_are_refused() {
        for datagram in [
            Datagram::Swim(b"payload"),
            Datagram::Goodbye(id("a", 1)),
            Datagram::Refused("name taken".into()),
        ] {
            let bytes = encode_datagram(&datagram).unwrap();
            assert_eq!(decode_datagram(&bytes).unwrap(), datagram);
        }
        assert_eq!(
            decode_datagram(b"GET / HTTP/1.0"),
            Err(DatagramError::BadMagic)
        );
        let mut other = encode_datagram(&Datagram::Swim(b"x")).unwrap();
        other[5] ^= 0xff;
        assert!(matches!(
            decode_datagram(&other),
            Err(DatagramError::Version(_))
        ));
        assert!(decode_datagram(&[0; 3]).is_err());
    }

    #[test]
    fn a_renewed_identity_wins_its_address() {
        use foca::Identity;
        let first = id("a", 0);
        let renewed = first.renew().unwrap();
        assert!(renewed.win_addr_conflict(&first));
        assert!(!first.win_addr_conflict(&renewed));
    }

    #[test]
    fn members_round_trip_through_the_codec() {
        let member = foca::Member::new(id("a", 3), 2, foca::State::Suspect);
        let mut buf = BytesMut::new();
        SwimCodec.encode_member(&member, &mut buf).unwrap();
        let back = SwimCodec.decode_member(&buf[..]).unwrap();
        assert_eq!(back, member);
    }
}
