//! Opening links: TCP connect and accept, and the three-frame handshake that comes first on
//! every link (docs/PROTOCOL.md):
//!
//! 1. acceptor → `Greeting` (its identity and a nonce), as soon as it accepts;
//! 2. dialer → `Hello` (its identity, a nonce, its cookie proof);
//! 3. acceptor → `Welcome` (the verdict, its cookie proof).
//!
//! The dialer knows whom it reached after step 1, so it can back off before anything is
//! registered when it already has a link to that node. Every step is bounded by the
//! handshake timeout. What this module returns is a socket ready for
//! [`super::Connection::start`]; admission is the node's business.
//!
//! Versions are negotiated on the way: the greeting goes out in the format of the version
//! before this side's newest, its nonce marked with the newest ([`wire::mark_nonce`]); the
//! dialer answers in the newest version both speak, and the link speaks that from then on
//! ([`Socket::version`]). A release two versions apart is refused by name.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::auth::{self, CookieFailure, Role, Transcript};
use super::sniff;
use super::tls::{self, Tls};
use super::PeerInfo;
use crate::error::RpcError;
use crate::wire::{self, Greeting, Hello, Identity, Verdict, Welcome};

/// Handshake frames are small; a larger one is refused before it is read.
const MAX_HANDSHAKE_FRAME: usize = 16 << 10;

/// The read half of a link: a TCP half, or one half of a TLS session.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a link.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) type Reader = FramedRead<ReadHalf, LengthDelimitedCodec>;

/// A connected socket (TLS established when configured), split, with the reader framing
/// already in place.
pub(crate) struct Socket {
    pub(crate) reader: Reader,
    pub(crate) writer: WriteHalf,
    pub(crate) remote: SocketAddr,
    /// The protocol version the link speaks, once the handshake has chosen it.
    pub(crate) version: u16,
    /// Under TLS, the certificate the other side presented (its first), which must name
    /// the node it announces ([`tls::names`]).
    pub(crate) peer_cert: Option<tls::PeerCert>,
}

/// Which end of a TLS session this side is.
enum Side {
    Dialer,
    Acceptor,
}

/// What this end brings to a handshake.
#[derive(Clone, Copy)]
pub(crate) struct Local<'a> {
    pub(crate) identity: &'a Identity,
    pub(crate) cookie: Option<&'a str>,
    /// The client credential: an acceptor lets plain clients (no listen address) prove it
    /// instead of the cookie; a client without the cookie proves it. Never makes a node.
    pub(crate) client_secret: Option<&'a str>,
    pub(crate) timeout: Duration,
    pub(crate) tls: Option<&'a Tls>,
    /// A plain client speaks first when the other side stays silent, to tell what it is
    /// ([`super::sniff`]). Nodes never do: a slow peer must not get garbage.
    pub(crate) probe: bool,
    /// The protocol versions this side speaks, oldest and newest.
    pub(crate) versions: (u16, u16),
    /// Where this node's HTTP gateway listens and whether it speaks HTTPS, named to an HTTP
    /// client that reached its binary port ([`wrong_port`]); `None` without one (and for
    /// dialers).
    pub(crate) gateway: Option<(SocketAddr, bool)>,
}

impl Socket {
    /// Both ends of an in-memory link from this node to itself (streams to virtual actors it
    /// owns, and forwarded calls, take the same path as any other), with no handshake: each
    /// end is this node.
    pub(crate) fn loopback(addr: SocketAddr) -> (Socket, Socket) {
        let (a, b) = tokio::io::duplex(256 << 10);
        let end = |stream: tokio::io::DuplexStream| {
            let (read, write) = tokio::io::split(stream);
            let reader = LengthDelimitedCodec::builder()
                .length_field_length(4)
                .big_endian()
                .max_frame_length(MAX_HANDSHAKE_FRAME)
                .new_read(Box::new(read) as ReadHalf);
            Socket {
                reader,
                writer: Box::new(write),
                remote: addr,
                version: wire::PROTOCOL_VERSION,
                peer_cert: None,
            }
        };
        (end(a), end(b))
    }

    /// Sets the socket up, running the TLS handshake first when `tls` is set (bounded by
    /// `timeout`); the error says what failed.
    async fn open(
        stream: TcpStream,
        tls: Option<&Tls>,
        side: Side,
        timeout: Duration,
    ) -> Result<Self, HandshakeFailure> {
        let failed = |e: std::io::Error| HandshakeFailure::Failed(e.to_string());
        // Frames are written whole by a writer that batches them itself.
        stream.set_nodelay(true).map_err(failed)?;
        let remote = stream.peer_addr().map_err(failed)?;
        let (read, writer, peer_cert): (ReadHalf, WriteHalf, _) = match tls {
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write), None)
            }
            Some(tls) => {
                let dialer = matches!(side, Side::Dialer);
                let handshake = tls::session(tls, dialer, stream, remote);
                match tokio::time::timeout(timeout, handshake).await {
                    Err(_) => {
                        let reason = format!("no TLS handshake with {remote} within {timeout:?}");
                        return Err(HandshakeFailure::Failed(reason));
                    }
                    Ok(Err(e)) => return Err(HandshakeFailure::tls(&e)),
                    Ok(Ok(session)) => session,
                }
            }
        };
        let reader = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(MAX_HANDSHAKE_FRAME)
            .new_read(read);
        Ok(Socket {
            reader,
            writer,
            remote,
            version: wire::PROTOCOL_VERSION,
            peer_cert,
        })
    }

    /// Under TLS, checks the other side's certificate names `them`, the node it announced.
    fn check_names(&self, them: &Identity) -> Result<(), String> {
        match &self.peer_cert {
            Some(cert) if them.listen.is_some() => tls::names(cert, &them.name),
            _ => Ok(()), // no TLS, or a plain client, which claims no node's name
        }
    }

    /// The next handshake frame, in a version from `lowest` to `highest`, and its version.
    async fn read<T: DeserializeOwned>(
        &mut self,
        (lowest, highest): (u16, u16),
    ) -> Result<(u16, T), HandshakeFailure> {
        match self.reader.next().await {
            None => Err(HandshakeFailure::Closed),
            // Under TLS 1.3 the acceptor checks our certificate after we think the TLS
            // handshake is done: its refusal arrives as an alert on the first read.
            Some(Err(e)) if is_tls_error(&e) => Err(HandshakeFailure::tls(&e)),
            // The connection broke (a reset, a node exiting): nothing was said.
            Some(Err(e)) if is_broken(&e) => Err(HandshakeFailure::Closed),
            Some(Err(e)) => Err(HandshakeFailure::Failed(format!(
                "handshake read failed: {e}"
            ))),
            Some(Ok(payload)) => wire::decode_handshake_versioned(&payload, lowest, highest)
                .map_err(|e| HandshakeFailure::Failed(e.to_string())),
        }
    }

    /// Writes a handshake frame in `version`.
    async fn write<T: Serialize>(&mut self, msg: &T, version: u16) -> Result<(), HandshakeFailure> {
        let frame = wire::encode_handshake_at(msg, version)
            .map_err(|e| HandshakeFailure::Failed(e.to_string()))?;
        self.write_raw(&frame).await
    }

    async fn write_raw(&mut self, frame: &Bytes) -> Result<(), HandshakeFailure> {
        self.writer
            .write_all(frame)
            .await
            .map_err(|e| HandshakeFailure::Failed(format!("handshake write failed: {e}")))
    }
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub(crate) enum HandshakeFailure {
    /// The other side closed the connection: often on purpose (a dialer that found it already
    /// has a link to us), so it is not worth a warning.
    Closed,
    /// A cookie or certificate was missing or wrong; the reason says which side refused.
    Unauthenticated(String),
    /// Anything else, with a reason fit for a log line.
    Failed(String),
}

impl HandshakeFailure {
    fn tls(error: &std::io::Error) -> Self {
        let failure = tls::explain(error);
        if failure.auth {
            HandshakeFailure::Unauthenticated(failure.reason)
        } else {
            HandshakeFailure::Failed(failure.reason)
        }
    }

    /// The dialer's error for this failure at `peer`.
    fn into_rpc(self, peer: String) -> RpcError {
        match self {
            HandshakeFailure::Unauthenticated(reason) => RpcError::Unauthenticated { peer, reason },
            other => RpcError::PeerUnavailable {
                peer,
                reason: other.to_string(),
            },
        }
    }
}

/// A connection reset or aborted by the other side.
fn is_broken(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

fn is_tls_error(e: &std::io::Error) -> bool {
    tls::is_tls_error(e)
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Closed => {
                f.write_str("the peer closed the connection during the handshake")
            }
            HandshakeFailure::Unauthenticated(reason) | HandshakeFailure::Failed(reason) => {
                f.write_str(reason)
            }
        }
    }
}

/// Who the other end of a link is, from its identity, and the version the link speaks.
pub(crate) fn peer_info(identity: &Identity, socket: &Socket) -> PeerInfo {
    PeerInfo {
        id: identity.id,
        name: identity.name.clone(),
        addr: identity.listen.as_deref().and_then(|a| a.parse().ok()),
        remote: socket.remote,
        incarnation: identity.incarnation,
        protocol: socket.version,
    }
}

async fn bounded<T>(
    timeout: Duration,
    step: impl std::future::Future<Output = Result<T, HandshakeFailure>>,
) -> Result<T, HandshakeFailure> {
    tokio::time::timeout(timeout, step)
        .await
        .unwrap_or_else(|_| {
            Err(HandshakeFailure::Failed(format!(
                "no handshake within {timeout:?}"
            )))
        })
}

// ---- the dialer's side ----

/// Opens a TCP connection to `addr` (and a TLS session over it when configured).
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    local: Local<'_>,
) -> Result<Socket, RpcError> {
    let unavailable = |reason: String| RpcError::PeerUnavailable {
        peer: addr.to_string(),
        reason,
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(unavailable(format!("no connection within {timeout:?}"))),
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    Socket::open(stream, local.tls, Side::Dialer, local.timeout)
        .await
        .map_err(|failure| failure.into_rpc(addr.to_string()))
}

/// Reads the acceptor's greeting and chooses the version the link speaks: the newest both
/// sides speak ([`Socket::version`]). On a version mismatch our own hello is still sent, so
/// the acceptor can log the mismatch too.
pub(crate) async fn read_greeting(
    socket: &mut Socket,
    local: Local<'_>,
) -> Result<Greeting, RpcError> {
    let probe = local.probe && local.tls.is_none();
    let versions = local.versions;
    let read = async {
        if !probe {
            return socket.read::<Greeting>(versions).await;
        }
        // Reading a frame is cancel-safe: bytes already read stay in the buffer.
        match tokio::time::timeout(sniff::PROBE_AFTER, socket.read::<Greeting>(versions)).await {
            Ok(read) => read,
            Err(_) => {
                let _ = socket.writer.write_all(sniff::PROBE).await; // it may be gone
                socket.read::<Greeting>(versions).await
            }
        }
    };
    let failure = match bounded(local.timeout, read).await {
        Ok((version, greeting)) => {
            // The greeting's own format is its sender's previous version; the mark (when
            // there is one) says its newest.
            let theirs = wire::marked_version(&greeting.nonce).unwrap_or(version);
            let (lowest, highest) = versions;
            let chosen = theirs.min(highest);
            if chosen < lowest {
                return Err(RpcError::Protocol(format!(
                    "{}: protocol version mismatch: peer speaks up to {theirs}, this node speaks {}",
                    socket.remote,
                    wire::Speaks(lowest, highest)
                )));
            }
            socket.version = chosen;
            if let Err(reason) = socket.check_names(&greeting.identity) {
                let at = format!("{} at {}", greeting.identity.name, socket.remote);
                return Err(RpcError::Unauthenticated { peer: at, reason });
            }
            return Ok(greeting);
        }
        Err(failure @ HandshakeFailure::Unauthenticated(_)) => {
            return Err(failure.into_rpc(socket.remote.to_string()))
        }
        Err(failure) => failure,
    };
    if let Some(what) = sniff::describe(socket.reader.read_buffer()) {
        return Err(RpcError::Protocol(format!("{} {what}", socket.remote)));
    }
    if probe && matches!(failure, HandshakeFailure::Closed) {
        return Err(RpcError::Protocol(format!(
            "{} closed the connection when spoken to: it is not a meshrpc port, or a node that uses TLS (give this side --tls-cert, --tls-key and --tls-ca)",
            socket.remote
        )));
    }
    let mut reason = failure.to_string();
    // A TLS node says nothing to a plain dialer: it waits for a TLS hello, then gives up.
    if local.tls.is_none() && !reason.contains("version mismatch") {
        reason.push_str(" (if the node uses TLS, give this side a certificate and the CA)");
    }
    // A node that closes without a word is going away (or just went), or wants TLS: nothing
    // ran there, and a caller may try elsewhere.
    if matches!(failure, HandshakeFailure::Closed) {
        return Err(RpcError::PeerUnavailable {
            peer: socket.remote.to_string(),
            reason,
        });
    }
    if reason.contains("version mismatch") {
        let hello = Hello {
            identity: local.identity.clone(),
            nonce: [0; 16],
            proof: None,
        };
        if let Ok(frame) = wire::encode_handshake_at(&hello, local.versions.1) {
            // Best effort, we are leaving.
            let _ =
                tokio::time::timeout(Duration::from_millis(200), socket.writer.write_all(&frame))
                    .await;
        }
    }
    Err(RpcError::Protocol(format!("{}: {reason}", socket.remote)))
}

/// Sends our hello and reads the verdict; checks the acceptor's cookie proof.
/// Returns true for `Accept`, false for `Duplicate`.
pub(crate) async fn introduce(
    socket: &mut Socket,
    local: Local<'_>,
    greeting: &Greeting,
) -> Result<bool, RpcError> {
    let transcript = Transcript {
        acceptor_nonce: greeting.nonce,
        dialer_nonce: auth::nonce(),
        acceptor: greeting.identity.id,
        dialer: local.identity.id,
    };
    // A node proves the cookie; a plain client proves the cookie if it has it, else the
    // client secret, and expects the acceptor to answer under the same.
    let (secret, ours, theirs) = match (local.cookie, local.client_secret) {
        (None, Some(secret)) if local.identity.listen.is_none() => {
            (Some(secret), Role::Client, Role::ClientAcceptor)
        }
        (cookie, _) => (cookie, Role::Dialer, Role::Acceptor),
    };
    let proof = secret.map(|secret| transcript.prove(secret, ours));
    let hello = Hello {
        identity: local.identity.clone(),
        nonce: transcript.dialer_nonce,
        proof,
    };
    let peer = greeting.identity.name.clone();
    let at = format!("{peer} at {}", socket.remote);
    let version = socket.version;
    let exchange = async {
        socket.write(&hello, version).await?;
        socket.read::<Welcome>((version, version)).await
    };
    let welcome = match bounded(local.timeout, exchange).await {
        Ok((_, welcome)) => welcome,
        Err(failure @ (HandshakeFailure::Unauthenticated(_) | HandshakeFailure::Closed)) => {
            return Err(failure.into_rpc(at))
        }
        Err(failure) => return Err(RpcError::Protocol(format!("{at}: {failure}"))),
    };
    match welcome.verdict {
        Verdict::Refuse(reason) => return Err(RpcError::Refused { peer, reason }),
        Verdict::Unauthenticated(reason) => {
            return Err(RpcError::Unauthenticated { peer: at, reason })
        }
        Verdict::Duplicate => return Ok(false),
        Verdict::Accept => {}
    }
    let proof = welcome.proof.as_ref();
    if let Err(failure) = auth::check(secret, &transcript, theirs, proof) {
        let reason = match failure {
            CookieFailure::Missing => {
                "this side refused it: it has no cluster cookie and this side requires one"
            }
            CookieFailure::Mismatch if matches!(ours, Role::Client) => {
                "this side refused it: it does not know this side's client secret"
            }
            CookieFailure::Mismatch => {
                "this side refused it: it proved another cookie than this side's"
            }
        };
        return Err(RpcError::Unauthenticated {
            peer: at,
            reason: reason.to_owned(),
        });
    }
    Ok(true)
}

mod acceptor;
mod wrong_port;
pub(crate) use acceptor::{accept, refuse, welcome, Introduced};
