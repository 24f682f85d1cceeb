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

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::auth::{self, Role, Transcript};
use super::tls::{self, Tls};
use super::PeerInfo;
use crate::wire::{self, Greeting, Hello, Identity, Verdict, Welcome};
use crate::RpcError;

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
    pub(crate) timeout: Duration,
    pub(crate) tls: Option<&'a Tls>,
}

impl Socket {
    /// Sets the socket up, running the TLS handshake first when `tls` is set (bounded by
    /// `timeout`); the error says what failed.
    async fn open(
        stream: TcpStream,
        tls: Option<&Tls>,
        side: Side,
        timeout: Duration,
    ) -> Result<Self, String> {
        // Frames are written whole by a writer that batches them itself.
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let remote = stream.peer_addr().map_err(|e| e.to_string())?;
        let (read, writer): (ReadHalf, WriteHalf) = match tls {
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Some(tls) => {
                let handshake = async {
                    match side {
                        Side::Dialer => {
                            let session = tls
                                .connector
                                .connect(tls::server_name(remote), stream)
                                .await?;
                            let (read, write) = tokio::io::split(session);
                            Ok::<(ReadHalf, WriteHalf), std::io::Error>((
                                Box::new(read),
                                Box::new(write),
                            ))
                        }
                        Side::Acceptor => {
                            let session = tls.acceptor.accept(stream).await?;
                            let (read, write) = tokio::io::split(session);
                            Ok::<(ReadHalf, WriteHalf), std::io::Error>((
                                Box::new(read),
                                Box::new(write),
                            ))
                        }
                    }
                };
                match tokio::time::timeout(timeout, handshake).await {
                    Err(_) => return Err(format!("no TLS handshake within {timeout:?}")),
                    Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
                    Ok(Ok(halves)) => halves,
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
        })
    }

    async fn read<T: DeserializeOwned>(&mut self) -> Result<T, HandshakeFailure> {
        match self.reader.next().await {
            None => Err(HandshakeFailure::Closed),
            Some(Err(e)) => Err(HandshakeFailure::Failed(format!(
                "handshake read failed: {e}"
            ))),
            Some(Ok(payload)) => wire::decode_handshake(&payload)
                .map_err(|e| HandshakeFailure::Failed(e.to_string())),
        }
    }

    async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), HandshakeFailure> {
        let frame =
            wire::encode_handshake(msg).map_err(|e| HandshakeFailure::Failed(e.to_string()))?;
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
    /// Anything else, with a reason fit for a log line.
    Failed(String),
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Closed => {
                f.write_str("the peer closed the connection during the handshake")
            }
            HandshakeFailure::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Who the other end of a link is, from its identity.
pub(crate) fn peer_info(identity: &Identity, remote: SocketAddr) -> PeerInfo {
    PeerInfo {
        id: identity.id,
        name: identity.name.clone(),
        addr: identity.listen.as_deref().and_then(|a| a.parse().ok()),
        remote,
        incarnation: identity.incarnation,
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
        .map_err(unavailable)
}

/// Reads the acceptor's greeting. On a version mismatch our own hello is still sent, so the
/// acceptor can log the mismatch too.
pub(crate) async fn read_greeting(
    socket: &mut Socket,
    local: Local<'_>,
) -> Result<Greeting, RpcError> {
    let failure = match bounded(local.timeout, socket.read::<Greeting>()).await {
        Ok(greeting) => return Ok(greeting),
        Err(failure) => failure,
    };
    let mut reason = failure.to_string();
    // A TLS node says nothing to a plain dialer: it waits for a TLS hello, then gives up.
    if local.tls.is_none() && !reason.contains("version mismatch") {
        reason.push_str(" (if the node uses TLS, give this side a certificate and the CA)");
    }
    if reason.contains("version mismatch") {
        let hello = Hello {
            identity: local.identity.clone(),
            nonce: [0; 16],
            proof: None,
        };
        if let Ok(frame) = wire::encode_handshake(&hello) {
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
    let proof = local
        .cookie
        .map(|cookie| transcript.prove(cookie, Role::Dialer));
    let hello = Hello {
        identity: local.identity.clone(),
        nonce: transcript.dialer_nonce,
        proof,
    };
    let exchange = async {
        socket.write(&hello).await?;
        socket.read::<Welcome>().await
    };
    let peer = greeting.identity.name.clone();
    let welcome = bounded(local.timeout, exchange)
        .await
        .map_err(|failure| RpcError::Protocol(format!("{peer} at {}: {failure}", socket.remote)))?;
    let refused = |reason: String| RpcError::Refused {
        peer: peer.clone(),
        reason,
    };
    match welcome.verdict {
        Verdict::Refuse(reason) => return Err(refused(reason)),
        Verdict::Duplicate => return Ok(false),
        Verdict::Accept => {}
    }
    if let Err(reason) = auth::check(
        local.cookie,
        &transcript,
        Role::Acceptor,
        welcome.proof.as_ref(),
    ) {
        return Err(refused(format!("{peer} failed the cookie check: {reason}")));
    }
    Ok(true)
}

// ---- the acceptor's side ----

/// A dialer's hello that passed the version and cookie checks.
pub(crate) struct Introduced {
    pub(crate) socket: Socket,
    pub(crate) hello: Hello,
    pub(crate) transcript: Transcript,
}

/// Greets a new socket and reads the dialer's hello. A dialer that fails the cookie check is
/// refused here, with the reason, and never reaches admission.
pub(crate) async fn accept(
    stream: TcpStream,
    local: Local<'_>,
) -> Result<Introduced, HandshakeFailure> {
    let mut socket = Socket::open(stream, local.tls, Side::Acceptor, local.timeout)
        .await
        .map_err(HandshakeFailure::Failed)?;
    let greeting = Greeting {
        identity: local.identity.clone(),
        nonce: auth::nonce(),
    };
    let exchange = async {
        socket.write(&greeting).await?;
        socket.read::<Hello>().await
    };
    let hello = bounded(local.timeout, exchange).await?;
    let transcript = Transcript {
        acceptor_nonce: greeting.nonce,
        dialer_nonce: hello.nonce,
        acceptor: local.identity.id,
        dialer: hello.identity.id,
    };
    let mut introduced = Introduced {
        socket,
        hello,
        transcript,
    };
    let proof = introduced.hello.proof;
    if let Err(reason) = auth::check(local.cookie, &transcript, Role::Dialer, proof.as_ref()) {
        let _ = refuse(&mut introduced, local, Verdict::Refuse(reason.clone())).await; // best effort
        return Err(HandshakeFailure::Failed(format!(
            "{} refused: {reason}",
            introduced.hello.identity.name
        )));
    }
    Ok(introduced)
}

/// The bytes of our `Welcome` with `verdict`, with our cookie proof.
pub(crate) fn welcome(
    local: Local<'_>,
    transcript: &Transcript,
    verdict: Verdict,
) -> Result<Bytes, String> {
    let proof = local
        .cookie
        .map(|cookie| transcript.prove(cookie, Role::Acceptor));
    wire::encode_handshake(&Welcome { verdict, proof }).map_err(|e| e.to_string())
}

/// Answers with a verdict other than `Accept` and closes the socket.
pub(crate) async fn refuse(
    introduced: &mut Introduced,
    local: Local<'_>,
    verdict: Verdict,
) -> Result<(), String> {
    let frame = welcome(local, &introduced.transcript, verdict)?;
    let socket = &mut introduced.socket;
    socket.write_raw(&frame).await.map_err(|e| e.to_string())?;
    let _ = socket.writer.shutdown().await; // the peer may already be gone
    Ok(())
}
